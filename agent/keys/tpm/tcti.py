"""TCTI strings from the configuration: how the agent reaches its TPM.

    device:/dev/tpmrm0               the kernel's resource manager (production)
    tabrmd                           the TPM2 access broker daemon over D-Bus
    swtpm:host=127.0.0.1,port=2321   a software TPM (tests, demo)

Parsed without touching the TPM, so `check-config` can report a bad one.
"""

from __future__ import annotations

import re
from typing import NamedTuple

KNOWN = ("device", "tabrmd", "swtpm", "mssim")
TCTI_RULE = "device:PATH, tabrmd[:OPTIONS] or swtpm:host=HOST,port=PORT"
_SOCKET_OPTIONS = re.compile(r"(host=[^,]+,)?port=\d{1,5}|host=[^,]+")


class Tcti(NamedTuple):
    name: str
    conf: str

    def __str__(self) -> str:
        return f"{self.name}:{self.conf}" if self.conf else self.name


def parse_tcti(text: str) -> Tcti:
    """Raise ValueError saying what was expected when `text` is not a TCTI we can load."""
    name, _, conf = text.partition(":")
    if name not in KNOWN:
        raise ValueError(TCTI_RULE)
    if name == "device" and not conf.startswith("/"):
        raise ValueError("device:/dev/tpmrm0 (an absolute device path)")
    if name in ("swtpm", "mssim") and conf and not _SOCKET_OPTIONS.fullmatch(conf):
        raise ValueError(f"{name}:host=HOST,port=PORT")
    return Tcti(name, conf)
