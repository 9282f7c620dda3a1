"""Device keys: the only code that holds or reaches a signing key."""

from __future__ import annotations

from typing import Any

from agent.keys.signer import Signer


def open_signer(identity: Any) -> Signer:
    """The signer an `identity` config section names (software now; TPM plugs in here)."""
    from agent.keys.software import SoftwareSigner

    return SoftwareSigner.from_files(identity.key, identity.cert_chain)
