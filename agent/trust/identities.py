"""The device identities that a stream's messages may be signed by.

Certificate chains arrive while a stream runs (the retained certificate message, a seal's
x5chain); each is verified once, against the trusted roots, by the bundle verifier's rules
(agent.trust.certs), and kept by its device key's id. Validity is checked per message, at
the time it was signed, as the verifier checks it at the times of a bundle's seals. A
renewed certificate for the same key joins the one before: old seals still verify.
"""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from agent.trust import cose
from agent.trust.certs import ChainError, DeviceIdentity, check_valid_at, key_id, parse_der_chain, verify_chain
from agent.trust.stream_events import CertificateAccepted, Event, Finding


class Identities:
    def __init__(self, roots: list[x509.Certificate]) -> None:
        self._roots = roots
        self._accepted: dict[bytes, list[DeviceIdentity]] = {}  # by kid
        self._refused: dict[bytes, str] = {}  # kid -> why its chain was refused
        self._judged: set[tuple[bytes, ...]] = set()  # the same chain comes at every reconnect

    @property
    def any_judged(self) -> bool:
        """Whether some chain named a key: from then on an unknown kid is a finding."""
        return bool(self._accepted or self._refused)

    def knows(self, kid: bytes) -> bool:
        return kid in self._accepted or kid in self._refused

    def add(self, ders: list[bytes], source: str) -> list[Event]:
        """Judges a chain (device certificate first) the first time it comes."""
        if tuple(ders) in self._judged:
            return []
        self._judged.add(tuple(ders))
        try:
            chain = parse_der_chain(ders)
            # no times here: each message is checked at its own (check_valid_at in `problem`)
            identity = verify_chain(chain, self._roots, [])
        except ChainError as exc:
            self._refuse(ders, str(exc))
            return [Finding(source, f"certificate chain refused: {exc}")]
        kid = key_id(identity.public_key)
        self._accepted.setdefault(kid, []).append(identity)
        self._refused.pop(kid, None)
        return [CertificateAccepted(identity.device_id, identity.subject, identity.root_subject, kid.hex(), source)]

    def _refuse(self, ders: list[bytes], why: str) -> None:
        """Remembers why, for the messages its key signed, when the device certificate
        can be read at all and its key has no accepted chain."""
        try:
            device = parse_der_chain(ders[:1])
        except ChainError:
            return
        key = device[0].public_key() if device else None
        if isinstance(key, ec.EllipticCurvePublicKey) and key_id(key) not in self._accepted:
            self._refused[key_id(key)] = why

    def problem(self, msg: cose.Sign1, dev: str, t: int) -> str | None:
        """Why a seal or checkpoint by a known key does not verify (verifier steps 2 and 3
        for one message), or None."""
        identities = self._accepted.get(msg.kid)
        if not identities:
            return f"signed by a key whose certificate chain was refused: {self._refused[msg.kid]}"
        try:
            cose.verify_signature(msg, identities[0].public_key)  # one kid, one key
        except cose.CoseError as exc:
            return str(exc)
        named = [identity for identity in identities if identity.device_id == dev]
        if not named:
            return f"signed as device {dev!r}, but the certificate is for {identities[-1].device_id!r}"
        at = dt.datetime.fromtimestamp(t / 1e9, dt.UTC)
        why = ""
        for identity in named:
            try:
                check_valid_at(identity.path, [at])
                return None
            except ChainError as exc:
                why = str(exc)
        return why
