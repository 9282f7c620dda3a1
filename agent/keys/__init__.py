"""Device keys: the only code that holds or reaches a signing key."""

from __future__ import annotations

from typing import Any

from agent.keys.signer import Signer


async def open_signer(identity: Any) -> Signer:
    """The signer an `identity` config section names, self-tested and ready to sign."""
    if identity.signer == "tpm":
        # Imported here: a gateway with a software key (development) needs no TSS library.
        from agent.keys.tpm.signer import TpmSigner
        from agent.keys.tpm.tcti import parse_tcti

        tpm = identity.tpm_settings
        return await TpmSigner.open(parse_tcti(tpm.tcti), tpm.handle, identity.cert_chain, tpm.min_sign_interval)
    from agent.keys.software import SoftwareSigner

    return SoftwareSigner.from_files(identity.key, identity.cert_chain)
