"""Every TPM command edgeseal sends, over one ESAPI context, and the one place where the
TSS's exceptions become edgeseal errors.

Each function takes the context and runs synchronously: the agent calls them from its
single TPM thread (agent.keys.tpm.worker), the factory tools from their main thread.
A TPM may hold as few as three transient objects, so every transient object and session
made here is flushed in a `finally`, whatever happens.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

# The TSS logs every TPM error it returns on stderr, including the ones handled here
# (an empty handle, a busy TPM); TSS2_LOG set by the user still wins.
os.environ.setdefault("TSS2_LOG", "all+none")

from tpm2_pytss import (  # noqa: E402
    ESAPI,
    ESYS_TR,
    TPM2_ALG,
    TPM2_CAP,
    TPM2_HC,
    TPM2_RC,
    TPM2_RH,
    TPM2_SE,
    TPM2_ST,
    TPM2B_ENCRYPTED_SECRET,
    TPM2B_ID_OBJECT,
    TPM2B_PRIVATE,
    TPM2B_PUBLIC,
    TPM2B_SENSITIVE_CREATE,
    TPM2B_SENSITIVE_DATA,
    TPMS_SENSITIVE_CREATE,
    TPMT_PUBLIC,
    TPMT_SIG_SCHEME,
    TPMT_SYM_DEF,
    TPMT_TK_HASHCHECK,
    TSS2_Exception,
)
from tpm2_pytss.utils import NVReadEK, create_ek_template  # noqa: E402

from agent.errors import TpmError, TpmUnreachable
from agent.keys.tpm import templates
from agent.keys.tpm.tcti import Tcti

P = ParamSpec("P")
R = TypeVar("R")
# TPM2_RC_* "try again" codes: the command did not run, or paused, and may simply be resent.
_BUSY = {TPM2_RC.RETRY, TPM2_RC.YIELDED, TPM2_RC.TESTING, TPM2_RC.NV_RATE}
_TCTI_LAYER = 0x000A0000
_HANDLE_ERROR = 0x18B  # TPM_RC_HANDLE on handle 1: nothing at that handle
BUSY_RETRIES = 5
# EK certificate profiles of the low range (TCG EK profile), whose policy is a plain
# PolicySecret(TPM_RH_ENDORSEMENT); the ones hardware most often carries first.
EK_TYPES = ("EK-ECC256", "EK-RSA2048")


@contextmanager
def tss_errors(action: str) -> Iterator[None]:
    """Translate TSS2 exceptions raised while doing `action` into TpmError."""
    try:
        yield
    except TSS2_Exception as exc:
        raise _translate(exc, action) from None


def _translate(exc: TSS2_Exception, action: str) -> TpmError:
    if exc.rc & 0xFFFF0000 == _TCTI_LAYER:
        return TpmUnreachable(f"{action}: cannot reach the TPM ({exc})")
    if exc.error == TPM2_RC.LOCKOUT:
        return TpmError(
            f"{action}: the TPM is in dictionary-attack lockout; it recovers after its lockout"
            " interval, or an administrator resets it (tpm2_dictionarylockout --clear-lockout)",
            transient=True,
        )
    if exc.error in _BUSY:
        return TpmError(f"{action}: the TPM is busy ({exc})", transient=True)
    return TpmError(f"{action}: {exc}")


def open_context(tcti: Tcti) -> ESAPI:
    with tss_errors(f"opening TCTI {tcti}"):
        # Given as text, the TCTI belongs to the context and closes with it.
        return ESAPI(str(tcti))


@contextmanager
def connected(tcti: Tcti) -> Iterator[ESAPI]:
    """An ESAPI context for the length of a `with` block, closed whatever happens."""
    esapi = open_context(tcti)
    try:
        yield esapi
    finally:
        esapi.close()


def _busy_retried(command: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """Resend a command the TPM answered with RETRY/YIELDED/TESTING, a few times."""
    for attempt in range(BUSY_RETRIES):
        try:
            return command(*args, **kwargs)
        except TSS2_Exception as exc:
            if exc.error not in _BUSY or attempt == BUSY_RETRIES - 1:
                raise
            time.sleep(0.01 * 2**attempt)
    raise AssertionError("unreachable")


@contextmanager
def _transient(esapi: ESAPI, handle: ESYS_TR) -> Iterator[ESYS_TR]:
    try:
        yield handle
    finally:
        esapi.flush_context(handle)


def persistent_handles(esapi: ESAPI) -> list[int]:
    handles: list[int] = []
    more, start = True, TPM2_HC.HR_PERSISTENT
    with tss_errors("listing persistent handles"):
        while more:
            more, data = esapi.get_capability(TPM2_CAP.HANDLES, start, 64)
            handles += list(data.data.handles)
            start = handles[-1] + 1 if handles else start
    return handles


def open_persistent(esapi: ESAPI, handle: int) -> tuple[ESYS_TR, TPMT_PUBLIC]:
    """The object at persistent `handle` and its public area; a clear error if empty."""
    try:
        key = esapi.tr_from_tpmpublic(handle)
        public, _, _ = esapi.read_public(key)
    except TSS2_Exception as exc:
        if exc.rc == _HANDLE_ERROR:
            raise TpmError(
                f"TPM handle 0x{handle:08x} is empty: no device key. Create it with"
                " 'edgeseal-provision tpm keygen' (after an owner clear, the same command with the"
                " same --device-id recreates the same key)"
            ) from None
        raise _translate(exc, f"reading TPM handle 0x{handle:08x}") from None
    return key, public.publicArea


def create_identity_key(esapi: ESAPI, handle: int, device_id: str, *, force: bool) -> tuple[TPMT_PUBLIC, bool]:
    """Create the device key from its template and persist it at `handle`.
    Returns (public area, whether anything changed): the same key already there is kept."""
    with tss_errors("creating the device key"):
        created, public, *_ = esapi.create_primary(None, templates.identity_template(device_id), ESYS_TR.ENDORSEMENT)
        with _transient(esapi, created):
            if handle in persistent_handles(esapi):
                existing, existing_public = open_persistent(esapi, handle)
                if existing_public.marshal() == public.publicArea.marshal():
                    return public.publicArea, False
                if not force:
                    raise TpmError(
                        f"TPM handle 0x{handle:08x} already holds another key; keep it, choose another"
                        " handle, or replace it with --force (its certificate becomes useless)"
                    )
                esapi.evict_control(ESYS_TR.OWNER, existing, handle)
            esapi.evict_control(ESYS_TR.OWNER, created, handle)  # copies; the transient is flushed
    return public.publicArea, True


def sign_digest(esapi: ESAPI, key: ESYS_TR, digest: bytes) -> bytes:
    """ECDSA-SHA256 over a 32-byte digest with the key at `key`: raw r||s."""
    scheme = TPMT_SIG_SCHEME(scheme=TPM2_ALG.ECDSA)
    scheme.details.any.hashAlg = TPM2_ALG.SHA256
    # A NULL ticket: the digest was computed outside the TPM, which an unrestricted key allows.
    validation = TPMT_TK_HASHCHECK(tag=TPM2_ST.HASHCHECK, hierarchy=TPM2_RH.NULL)
    with tss_errors("signing with the device key"):
        signature = _busy_retried(esapi.sign, key, digest, scheme, validation)
    ecdsa = signature.signature.ecdsa
    return bytes(ecdsa.signatureR).rjust(32, b"\0") + bytes(ecdsa.signatureS).rjust(32, b"\0")


def certify(esapi: ESAPI, key: ESYS_TR, qualifying_data: bytes) -> tuple[bytes, bytes, bytes]:
    """TPM2_Certify of `key` by the attestation key (recreated from its template):
    (TPMS_ATTEST bytes, TPMT_SIGNATURE bytes, attestation key TPMT_PUBLIC bytes)."""
    scheme = TPMT_SIG_SCHEME(scheme=TPM2_ALG.ECDSA)
    scheme.details.any.hashAlg = TPM2_ALG.SHA256
    with tss_errors("certifying the device key"):
        ak, ak_public, *_ = esapi.create_primary(None, templates.attestation_template(), ESYS_TR.ENDORSEMENT)
        with _transient(esapi, ak):
            attest, signature = _busy_retried(esapi.certify, key, ak, qualifying_data, scheme)
    return bytes(attest), signature.marshal(), ak_public.publicArea.marshal()


def endorsement_template(esapi: ESAPI) -> tuple[bytes, TPM2B_PUBLIC]:
    """(EK certificate DER, EK template) for the first EK profile that has a certificate.
    The TCG EK profile fixes the template, so CreatePrimary with it recreates the EK the
    certificate is for, whether or not the EK was persisted."""
    with tss_errors("reading the endorsement key certificate"):
        reader = NVReadEK(esapi)
        for ek_type in EK_TYPES:
            try:
                certificate, template = create_ek_template(ek_type, reader)
            except ValueError:
                continue
            if certificate:
                return certificate, template
    raise TpmError("this TPM has no endorsement key certificate in NV (looked for " + ", ".join(EK_TYPES) + ")")


def endorsement_certificate(esapi: ESAPI) -> tuple[bytes, bytes]:
    """(EK certificate DER, EK TPMT_PUBLIC bytes with its key, as a CA needs them)."""
    certificate, template = endorsement_template(esapi)
    with tss_errors("creating the endorsement key"):
        ek, public, *_ = esapi.create_primary(None, template, ESYS_TR.ENDORSEMENT)
        esapi.flush_context(ek)
    return certificate, public.publicArea.marshal()


def activate_credential(
    esapi: ESAPI, ek_template: TPM2B_PUBLIC, credential_blob: bytes, encrypted_secret: bytes
) -> bytes:
    """Recover the secret a CA encrypted to this TPM's EK for the attestation key's name
    (TPM2_ActivateCredential): only the TPM holding both keys can. `ek_template` comes from
    endorsement_template (a public area with its key in `unique` would make another key).
    Low-range EK templates only: their policy is PolicySecret(TPM_RH_ENDORSEMENT)."""
    blob = TPM2B_ID_OBJECT.unmarshal(credential_blob)[0]
    secret = TPM2B_ENCRYPTED_SECRET.unmarshal(encrypted_secret)[0]
    with tss_errors("activating the CA's credential"):
        ak, *_ = esapi.create_primary(None, templates.attestation_template(), ESYS_TR.ENDORSEMENT)
        with _transient(esapi, ak):
            ek, *_ = esapi.create_primary(None, ek_template, ESYS_TR.ENDORSEMENT)
            with _transient(esapi, ek):
                # The EK's policy: PolicySecret(TPM_RH_ENDORSEMENT), in a fresh session per use.
                session = esapi.start_auth_session(
                    ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.POLICY, TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL), TPM2_ALG.SHA256
                )
                with _transient(esapi, session):
                    esapi.policy_secret(ESYS_TR.ENDORSEMENT, session, b"", b"", b"", 0)
                    recovered = esapi.activate_credential(
                        ak, ek, blob, secret, session1=ESYS_TR.PASSWORD, session2=session
                    )
    return bytes(recovered)


def seal(esapi: ESAPI, data: bytes) -> tuple[bytes, bytes]:
    """Seal `data` under the owner storage key: (TPM2B_PRIVATE, TPM2B_PUBLIC) bytes,
    useless on any other TPM or after an owner clear."""
    sensitive = TPM2B_SENSITIVE_CREATE(TPMS_SENSITIVE_CREATE(data=TPM2B_SENSITIVE_DATA(data)))
    with tss_errors("sealing a secret"):
        parent, *_ = esapi.create_primary(None, templates.storage_template(), ESYS_TR.OWNER)
        with _transient(esapi, parent):
            private, public, *_ = esapi.create(parent, sensitive, templates.sealed_data_template())
    return private.marshal(), public.marshal()


def unseal(esapi: ESAPI, private: bytes, public: bytes) -> bytes:
    with tss_errors("unsealing a secret"):
        parent, *_ = esapi.create_primary(None, templates.storage_template(), ESYS_TR.OWNER)
        with _transient(esapi, parent):
            sealed = esapi.load(parent, TPM2B_PRIVATE.unmarshal(private)[0], TPM2B_PUBLIC.unmarshal(public)[0])
            with _transient(esapi, sealed):
                return bytes(esapi.unseal(sealed))
