"""The CA's issuance log, CA_DIR/issued.jsonl: one JSON object per issued certificate.

Written (and fsync'd) before the certificate is handed out, so every certificate that
left the CA is in it; a line whose certificate was then never written is harmless.
Keys are sorted, so lines diff and grep well:

    {"device_id": "GW-0001", "evidence": "tpm", "ek_certificate": {"issuer": ..., "serial": ...,
     "subject": ...}, "ak_name": hex, "key_name": hex, "kid": hex, "serial": hex,
     "sha256": hex, "subject": ..., "time": "2026-01-01T12:00:00Z"}

A development CA's certificate without TPM evidence says "evidence": "none (development CA)".
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from agent.trust.certs import device_id_of, key_id
from provisioning.attestation import VerifiedEvidence
from provisioning.chain import rfc4514
from provisioning.files import append_synced

LOG = "issued.jsonl"
NO_EVIDENCE = "none (development CA)"


def record(certificate: x509.Certificate, evidence: VerifiedEvidence | None, at: datetime | None = None) -> dict:
    public_key = certificate.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)  # the CA issues only for P-256 keys
    entry: dict[str, Any] = {
        "time": (at or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "device_id": device_id_of(certificate),
        "serial": f"{certificate.serial_number:x}",
        "kid": key_id(public_key).hex(),
        "subject": rfc4514(certificate.subject),
        "sha256": certificate.fingerprint(hashes.SHA256()).hex(),
        "evidence": NO_EVIDENCE,
    }
    if evidence is not None:
        ek = evidence.ek_certificate
        entry["evidence"] = "tpm"
        entry["ek_certificate"] = {
            "subject": rfc4514(ek.subject),
            "issuer": rfc4514(ek.issuer),
            "serial": f"{ek.serial_number:x}",
        }
        entry["ak_name"] = evidence.ak_name.hex()
        entry["key_name"] = evidence.key_name.hex()
    return entry


def append(directory: Path, entry: dict) -> None:
    append_synced(directory / LOG, json.dumps(entry, sort_keys=True, separators=(",", ":")).encode() + b"\n")
