"""What MqttConnection needs to know, checked at construction: the broker's URL, the
session, TLS files, credentials, the last will, the backoff. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    tls: bool


def parse_url(url: str) -> Endpoint:
    """mqtt://host[:port] or mqtts://host[:port]; raises ValueError saying what is wrong."""
    parts = urlsplit(url)
    if parts.scheme not in DEFAULT_PORTS:
        raise ValueError(f"expected an mqtt:// or mqtts:// URL, found {url!r}")
    if parts.username is not None or parts.password is not None:
        # the URL is logged: credentials belong in username and password
        raise ValueError("the URL must not carry credentials: set username and password instead")
    if not parts.hostname:
        raise ValueError(f"the URL names no host: {url!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"expected no path, query or fragment in the URL, found {url!r}")
    port = parts.port  # raises ValueError itself when out of range
    return Endpoint(parts.hostname, port or DEFAULT_PORTS[parts.scheme], parts.scheme == "mqtts")


@dataclass(frozen=True)
class Will:
    """Published by the broker, QoS 1, when the connection ends without a DISCONNECT."""

    topic: str
    payload: bytes
    retain: bool = True


@dataclass(frozen=True)
class MqttSettings:
    """Where the broker is and how to talk to it; durations in seconds. The password is
    already resolved by the caller (environment, TPM-sealed secret) and never shown, not
    even by repr."""

    url: str  # mqtt://host[:1883] or mqtts://host[:8883]
    client_id: str
    protocol: Literal["3.1.1", "5"] = "5"
    keepalive: int = 30  # whole seconds on the wire; a silent link is noticed within 2 x keepalive + 2 s
    connect_timeout: float = 10.0  # TCP, TLS and CONNACK together
    clean_start: bool = False  # False: a persistent session
    ca_file: str | None = None  # mqtts:// checks the broker against the system CAs when None
    cert_file: str | None = None  # mutual TLS (the key may be in the same file)
    key_file: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    will: Will | None = None
    reconnect_delay: float = 1.0
    reconnect_delay_max: float = 60.0

    def __post_init__(self) -> None:
        problems = list(self._problems())
        if problems:
            raise ValueError("; ".join(problems))

    def _problems(self) -> Iterator[str]:
        try:
            tls = parse_url(self.url).tls
        except ValueError as error:
            tls = True  # no second complaint about the TLS files
            yield str(error)
        if self.protocol not in ("3.1.1", "5"):
            yield f"protocol must be '3.1.1' or '5', not {self.protocol!r}"
        if not self.client_id:
            yield "client_id must not be empty: the broker keeps the session under it"
        if not 1 <= self.keepalive <= 65535:
            # 0 would switch off the pings that bound how long a dead link goes unnoticed
            yield f"keepalive must be 1 to 65535 s, not {self.keepalive}"
        if self.connect_timeout <= 0:
            yield "connect_timeout must be positive"
        if not tls and (self.ca_file or self.cert_file or self.key_file):
            yield "ca_file, cert_file and key_file need an mqtts:// URL"
        if self.key_file and not self.cert_file:
            yield "key_file needs cert_file"
        if self.password is not None and self.username is None:
            yield "password needs username"
        if not 0 < self.reconnect_delay <= self.reconnect_delay_max:
            yield "reconnect_delay must be positive and at most reconnect_delay_max"

    @property
    def endpoint(self) -> Endpoint:
        return parse_url(self.url)
