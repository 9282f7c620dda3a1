"""The TPM objects edgeseal creates, as public templates, and what a key must look like.

The device key follows the IDevID key of the TCG "TPM 2.0 Keys for Device Identity and
Attestation" profile: an ECC P-256 ECDSA-SHA256 signing key, unrestricted (it signs our
digests, not only TPM-made data), fixedTPM and fixedParent (never duplicated out of this
TPM), sensitiveDataOrigin (the TPM made the private part), userWithAuth, no decrypt.
It is a primary key of the endorsement hierarchy: an owner clear on site (TPM2_Clear)
changes the storage seed and evicts persistent objects, but not the endorsement seed, so
the same template recreates the same key and the factory certificate stays valid.

The template's `unique` field is derived from the device id, so keygen is repeatable:
running it again on the same TPM with the same id yields the same key.
"""

from __future__ import annotations

import hashlib

from tpm2_pytss import TPM2_ALG, TPM2_ECC, TPM2B_PUBLIC, TPMA_OBJECT, TPMT_PUBLIC

A = TPMA_OBJECT
IDENTITY_ATTRIBUTES = A.FIXEDTPM | A.FIXEDPARENT | A.SENSITIVEDATAORIGIN | A.USERWITHAUTH | A.SIGN_ENCRYPT
# The attestation key signs only TPM-made structures (restricted): its Certify of the
# device key is the TPM's own statement, which the manufacturer CA checks.
ATTESTATION_ATTRIBUTES = IDENTITY_ATTRIBUTES | A.RESTRICTED
# Attributes a device key must have, and ones it must not, for a certificate to be issued.
REQUIRED_ATTRIBUTES = IDENTITY_ATTRIBUTES
FORBIDDEN_ATTRIBUTES = A.DECRYPT | A.RESTRICTED | A.ENCRYPTEDDUPLICATION


def identity_template(device_id: str) -> TPM2B_PUBLIC:
    return _ecc_signer(IDENTITY_ATTRIBUTES, b"edgeseal device identity v1\0" + device_id.encode())


def attestation_template() -> TPM2B_PUBLIC:
    """Deterministic, so the factory can recreate the same attestation key between
    `tpm attest` and `tpm activate` without persisting it."""
    return _ecc_signer(ATTESTATION_ATTRIBUTES, b"edgeseal attestation key v1\0")


def storage_template() -> TPM2B_PUBLIC:
    """The owner hierarchy's storage key (the usual SRK template), parent of sealed secrets.
    Owner-side on purpose: an owner clear destroys site secrets, as it should."""
    public = TPMT_PUBLIC.parse(
        "ecc256:aes128cfb",
        A.RESTRICTED | A.DECRYPT | A.FIXEDTPM | A.FIXEDPARENT | A.SENSITIVEDATAORIGIN | A.USERWITHAUTH | A.NODA,
    )
    return TPM2B_PUBLIC(publicArea=public)


def sealed_data_template() -> TPM2B_PUBLIC:
    public = TPMT_PUBLIC(
        type=TPM2_ALG.KEYEDHASH,
        nameAlg=TPM2_ALG.SHA256,
        objectAttributes=A.FIXEDTPM | A.FIXEDPARENT | A.USERWITHAUTH | A.NODA,
    )
    public.parameters.keyedHashDetail.scheme.scheme = TPM2_ALG.NULL
    return TPM2B_PUBLIC(publicArea=public)


def _ecc_signer(attributes: TPMA_OBJECT, label: bytes) -> TPM2B_PUBLIC:
    public = TPMT_PUBLIC(type=TPM2_ALG.ECC, nameAlg=TPM2_ALG.SHA256, objectAttributes=attributes)
    detail = public.parameters.eccDetail
    # NULL symmetric: a signing key has no use for one, and a restricted signer with one
    # fails to create (TPM_RC_SYMMETRIC).
    detail.symmetric.algorithm = TPM2_ALG.NULL
    detail.scheme.scheme = TPM2_ALG.ECDSA
    detail.scheme.details.ecdsa.hashAlg = TPM2_ALG.SHA256
    detail.curveID = TPM2_ECC.NIST_P256
    detail.kdf.scheme = TPM2_ALG.NULL
    public.unique.ecc.x = hashlib.sha256(label).digest()
    return TPM2B_PUBLIC(publicArea=public)


def key_problems(public: TPMT_PUBLIC, *, restricted: bool = False) -> list[str]:
    """Why `public` is not an edgeseal device key (or, restricted, an attestation key)."""
    problems = []
    if public.type != TPM2_ALG.ECC or public.parameters.eccDetail.curveID != TPM2_ECC.NIST_P256:
        problems.append("not an ECC P-256 key")
    elif public.parameters.eccDetail.scheme.scheme != TPM2_ALG.ECDSA:
        problems.append("its scheme is not ECDSA")
    attributes = public.objectAttributes
    required = ATTESTATION_ATTRIBUTES if restricted else REQUIRED_ATTRIBUTES
    missing = required & ~attributes
    if missing:
        problems.append(f"attributes lack {A(missing)}")
    forbidden = (FORBIDDEN_ATTRIBUTES & ~A.RESTRICTED) if restricted else FORBIDDEN_ATTRIBUTES
    present = attributes & forbidden
    if present:
        problems.append(f"attributes include {A(present)}")
    return problems
