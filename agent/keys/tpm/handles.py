"""Where the device key may live: persistent handles, and the ones reserved for others.

The TCG handle registry reserves 0x81000000-0x8100FFFF for storage root keys (the SRK at
0x81000001) and 0x81010000-0x8101FFFF for endorsement keys (the EKs at 0x81010001 and
0x81010002); from 0x81800000 persistent handles belong to the platform, not the owner.
The default sits just above both reserved ranges.
"""

from __future__ import annotations

DEFAULT_HANDLE = 0x81020001
OWNER_PERSISTENT = range(0x81000000, 0x81800000)
RESERVED_HANDLES = {0x81000001: "SRK", 0x81010001: "RSA EK", 0x81010002: "ECC EK"}
HANDLE_RULE = "an owner persistent handle 0x81000000..0x817FFFFF"


def handle_problem(handle: int) -> str | None:
    """What is wrong with `handle` for the device key, as 'expected …, found …'; None if fine."""
    if handle not in OWNER_PERSISTENT:
        return f"expected {HANDLE_RULE}, found 0x{handle:x}"
    if handle in RESERVED_HANDLES:
        return f"expected {HANDLE_RULE} other than the TCG-reserved {RESERVED_HANDLES[handle]}, found 0x{handle:08x}"
    return None
