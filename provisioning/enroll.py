"""`enroll`: one box, end to end, on a station that holds both the CA and the device's TPM.

The same steps as the separate commands, in order, over one TPM context: keygen (kept
when already there), csr, attest, challenge, activate, issue, install. Each step's file
is written to the work directory, as the separate commands would write it, so a failed
enrollment can be examined and resumed by hand. A box whose installed chain already
certifies its TPM key under this CA is left alone (rerunning a station is harmless); one
holding another chain is refused before anything is issued, unless forced.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from tpm2_pytss import ESAPI

from agent.errors import KeyError_
from agent.keys.software import load_certificate_chain
from agent.keys.tpm.esys import connected
from agent.keys.tpm.tcti import Tcti
from agent.trust.certs import device_id_of, key_id
from provisioning import ca_store, evidence, issuance, issuance_log
from provisioning.chain import chain_problems
from provisioning.files import AlreadyExists, write_private, write_public
from provisioning.install import CHAIN_FILE, check_chain, install_chain
from provisioning.tpm_identity import activate, device_public_key, gather_evidence, keygen, make_csr


@dataclass(frozen=True)
class Enrollment:
    device_id: str
    model: str | None
    ca_dir: Path
    passphrase: bytes
    trusted: Sequence[x509.Certificate]  # TPM vendor CA certificates
    dest: Path  # where device-chain.pem goes
    work_dir: Path  # device.csr, .attest, .challenge, .response, .pem
    tcti: Tcti
    handle: int
    force: bool  # issue and install a new certificate even when one is installed


def enroll(job: Enrollment, say: Callable[[str], None]) -> Path:
    """Run every step, saying one line for each; the installed chain's path."""
    root = ca_store.load_root_cert(job.ca_dir)
    with connected(job.tcti) as esapi:
        public, created = keygen(esapi, job.handle, job.device_id, force=False)
        tpm_key = device_public_key(public)
        state = "created" if created else "kept the existing"
        say(f"keygen     TPM handle 0x{job.handle:08x}: {state} device key, kid {key_id(tpm_key).hex()}")
        installed = job.dest / CHAIN_FILE
        if installed.exists() and not job.force:
            if not _certifies(installed, job.device_id, tpm_key, root):
                # refused before issuing: a certificate that could not be installed is waste
                raise AlreadyExists(f"{installed}: holds a chain for another key or CA; use --force to replace it")
            say(f"install    {installed} already certifies this key under this CA: nothing to do")
            return installed
        issued = _certify(esapi, job, say)
    chain = [issued.certificate, issued.issuing_cert]
    check_chain(chain, tpm_key, job.handle, root)
    path, changed = install_chain(job.dest, chain, force=job.force)
    say(f"install    {path}" + ("" if changed else " (unchanged)"))
    return path


def _certify(esapi: ESAPI, job: Enrollment, say: Callable[[str], None]) -> issuance.Issued:
    work = job.work_dir
    try:
        work.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise KeyError_(f"{work}: cannot create the work directory: {exc.strerror}") from None
    csr = make_csr(esapi, job.handle, job.device_id, job.model)
    write_public(work / "device.csr", csr.public_bytes(Encoding.PEM))
    say(f"csr        {job.device_id}, signed in the TPM by the device key")
    found = gather_evidence(esapi, job.handle, csr)
    write_public(work / "device.attest", evidence.encode(found))
    say("attest     the TPM certified the key (TPM2_Certify) and gave its EK certificate")
    challenge = issuance.challenge(job.ca_dir, job.passphrase, csr, found, job.trusted)
    write_public(work / "device.challenge", evidence.encode(challenge))
    say("challenge  the CA verified the evidence and encrypted a secret to this TPM's EK and AK")
    response = activate(esapi, found, challenge)
    write_private(work / "device.response", response, overwrite=True)
    say("activate   the TPM recovered the secret")
    issued = issuance.issue(job.ca_dir, job.passphrase, csr, issuance.TpmProof(found, response, job.trusted))
    write_public(work / "device.pem", issued.certificate.public_bytes(Encoding.PEM))
    serial = f"{issued.certificate.serial_number:x}"
    say(f"issue      serial {serial}, logged in {job.ca_dir / issuance_log.LOG}")
    return issued


def _certifies(path: Path, device_id: str, tpm_key: ec.EllipticCurvePublicKey, root: x509.Certificate) -> bool:
    chain = load_certificate_chain(path)
    return (
        bool(chain)
        and chain[0].public_key() == tpm_key
        and device_id_of(chain[0]) == device_id
        and not chain_problems(chain, root)
    )
