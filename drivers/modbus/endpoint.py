"""Where a Modbus source connects, written as a URL. Pure: parsing only.

    tcp://HOST[:PORT]         Modbus TCP (MBAP header), port 502 unless given
    rtu-over-tcp://HOST:PORT  RTU frames (with CRC) through a TCP socket: serial device servers
    rtu:///dev/ttyUSB0        RTU on a serial line (RS-485/RS-232); the path is the device file

HOST is a name, an IPv4 address, or an IPv6 address in brackets (tcp://[fd00::5]:502).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

DEFAULT_PORT = 502
URL_TEXT = "a URL like tcp://HOST[:PORT], rtu-over-tcp://HOST:PORT or rtu:///dev/ttyUSB0"

Scheme = Literal["tcp", "rtu-over-tcp", "rtu"]


@dataclass(frozen=True)
class Endpoint:
    """A parsed URL: `host` and `port` for the TCP schemes, `path` for rtu."""

    scheme: Scheme
    host: str = ""
    port: int = 0
    path: str = ""

    @property
    def is_serial(self) -> bool:
        return self.scheme == "rtu"

    @property
    def rtu_framing(self) -> bool:
        """RTU frames (address, PDU, CRC) rather than Modbus TCP's MBAP header."""
        return self.scheme != "tcp"


def parse_url(url: str) -> Endpoint:
    """Raises ValueError saying what was expected (URL_TEXT, or more precisely)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValueError(URL_TEXT) from None
    if parts.query or parts.fragment or parts.username is not None or any(c.isspace() for c in url):
        raise ValueError(URL_TEXT)
    if parts.scheme == "rtu":
        if parts.netloc or not parts.path.startswith("/") or parts.path == "/":
            raise ValueError("a serial device path after rtu://, like rtu:///dev/ttyUSB0")
        return Endpoint("rtu", path=parts.path)
    scheme: Scheme = "tcp" if parts.scheme == "tcp" else "rtu-over-tcp"
    if parts.scheme != scheme or not parts.hostname or parts.path not in ("", "/"):
        raise ValueError(URL_TEXT)
    if port is None and scheme == "rtu-over-tcp":
        raise ValueError("a port with rtu-over-tcp://, like rtu-over-tcp://10.0.0.9:4001")
    if port == 0:
        raise ValueError("a port 1..65535")
    return Endpoint(scheme, host=parts.hostname, port=port or DEFAULT_PORT)
