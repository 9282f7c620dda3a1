"""Real Mosquitto brokers for the MQTT tests: each broker is a `mosquitto` process of its own,
run from a config file written for it from a `BrokerSpec`, so that a test can SIGKILL it at
any moment (a crash: clients get no DISCONNECT, unsaved state is lost) and start it again on
the same port (the end of an outage).

Use the `mqtt_brokers` fixture, a `BrokerFarm` that kills every broker it started:

    broker = mqtt_brokers.start(BrokerSpec(persistence=True, users={"edge": "secret"}))
    broker.kill()                           # crash
    broker.start()                          # same port, database, password file, certificates
    broker.restart(allow_anonymous=False)   # orderly stop (SIGTERM), start with a changed spec

Persistence is written only at an orderly stop and at `save()`: autosave is off
(`autosave_interval 0`), so what a killed broker still holds after its restart is decided by
the test, never by a timer racing it. The farm runs no thread: it awaits mosquitto's
"running" line by polling the broker's log file.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEBIAN_PACKAGE = "mosquitto"  # the broker and mosquitto_passwd
TIMEOUT = 10.0  # mosquitto starts and saves in milliseconds; the rest is slack for a loaded CI machine
# Debian installs the broker in /usr/sbin, which is not on an ordinary user's PATH
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin"])
RUNNING = re.compile(rb"mosquitto version \S+ running")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclasses.dataclass(frozen=True)
class BrokerSpec:
    allow_anonymous: bool = True  # unlike mosquitto 2's default: most tests need no credentials
    users: Mapping[str, str] = dataclasses.field(default_factory=dict)  # name → password
    persistence: bool = False  # retained messages and sessions kept in a database across restarts
    tls: bool = False  # mqtts: server certificate for 127.0.0.1 and localhost, TLS 1.2 or later
    require_certificate: bool = False  # mutual TLS: clients must present a certificate from the CA

    def __post_init__(self) -> None:
        if self.require_certificate and not self.tls:
            raise ValueError("require_certificate=True needs tls=True")


@dataclasses.dataclass(frozen=True)
class TlsFiles:
    """PEM files, keys unencrypted. The client certificate is made for every TLS broker, so
    `restart(require_certificate=True)` needs no new files."""

    ca_file: Path
    server_cert: Path
    server_key: Path
    client_cert: Path  # CN "edgeseal-test-client"
    client_key: Path


def make_tls_files(directory: Path) -> TlsFiles:
    """A CA, and a server certificate (SAN IP 127.0.0.1 and DNS localhost) and a client
    certificate issued by it, written to `directory`. EC P-256 keys: quick to make, unlike RSA."""
    ca_key, server_key, client_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    # a CA as strict verifiers (Python 3.13's VERIFY_X509_STRICT) want it: critical basic
    # constraints and key usage, and key identifiers to chain by
    ca_usage = x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )
    ca = _certificate("edgeseal test MQTT CA", ca_key, x509.BasicConstraints(ca=True, path_length=0), ca_usage)
    names = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")])
    server_usage = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH])
    client_usage = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])
    server = _certificate("localhost", server_key, names, server_usage, issuer=(ca, ca_key))
    client = _certificate("edgeseal-test-client", client_key, client_usage, issuer=(ca, ca_key))
    files = TlsFiles(*(directory / name for name in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")))
    for path, certificate in ((files.ca_file, ca), (files.server_cert, server), (files.client_cert, client)):
        path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    for path, key in ((files.server_key, server_key), (files.client_key, client_key)):
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        path.write_bytes(pem)
    return files


def _certificate(
    common_name: str,
    key: ec.EllipticCurvePrivateKey,
    *extensions: x509.ExtensionType,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None,
) -> x509.Certificate:
    """A certificate for `key`, valid for a day, signed by `issuer` (None: self-signed)."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    issuer_name, issuer_key = (issuer[0].subject, issuer[1]) if issuer else (subject, key)
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
    )
    for extension in extensions:
        critical = isinstance(extension, x509.BasicConstraints | x509.KeyUsage)
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(issuer_key, hashes.SHA256())


class Broker:
    """One mosquitto process on a fixed port. `start` again after `kill` or `stop` reuses the
    port, the persistence database and the certificates; the config and password file are
    written afresh from `spec` at every start."""

    host = "127.0.0.1"

    def __init__(self, spec: BrokerSpec, directory: Path, mosquitto: str, mosquitto_passwd: str) -> None:
        self.spec = spec
        self.port = free_port()
        self.tls: TlsFiles | None = None  # made at the first start with spec.tls
        self._directory = directory / f"mosquitto-{self.port}"
        self._directory.mkdir()
        self._mosquitto, self._mosquitto_passwd = mosquitto, mosquitto_passwd
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.spec.tls else 'mqtt'}://{self.host}:{self.port}"

    @property
    def log(self) -> Path:
        """mosquitto's log, across its restarts: connections, refusals with their reasons, TLS errors."""
        return self._directory / "mosquitto.log"

    def start(self) -> Broker:
        assert self._process is None, "the broker is running"
        config = self._write_config()
        offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                [self._mosquitto, "-c", str(config)], stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        try:
            self._wait_for(lambda: RUNNING.search(self.log.read_bytes(), offset) is not None, "running line")
        except BaseException:
            self.kill()
            raise
        return self

    def kill(self) -> None:
        """SIGKILL, as a crash or power loss: clients see their connection drop without a
        DISCONNECT, and whatever was not saved is gone."""
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM, as an orderly shutdown: with persistence, mosquitto saves its database first.
        Clients see the same as after `kill`: mosquitto 2.0 closes their connections without
        a DISCONNECT, even to MQTT 5 clients."""
        self._end(signal.SIGTERM)

    def restart(self, **changes: Any) -> Broker:
        """Stops the broker (SIGTERM) and starts it on the same port with `changes` to its spec,
        e.g. `allow_anonymous=False`. A crash and recovery is `kill()` then `start()`."""
        self.stop()
        self.spec = dataclasses.replace(self.spec, **changes)
        return self.start()

    def save(self) -> None:
        """Has the running broker write its persistence database now (SIGUSR1), as an autosave
        would; returns once the new database is in place."""
        assert self._process is not None and self.spec.persistence, "save() needs a running broker with persistence"
        database = self._directory / "mosquitto.db"
        before = _inode(database)
        self._process.send_signal(signal.SIGUSR1)
        # mosquitto writes mosquitto.db.new and renames it over mosquitto.db: a new inode
        self._wait_for(lambda: _inode(database) not in (None, before), "new database")

    def _end(self, how: signal.Signals) -> None:
        if self._process is not None:
            self._process.send_signal(how)
            self._process.wait(timeout=TIMEOUT)
            self._process = None

    def _wait_for(self, done: Callable[[], bool], what: str) -> None:
        assert self._process is not None
        deadline = time.monotonic() + TIMEOUT
        while not done():
            if self._process.poll() is not None:
                log = self.log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"mosquitto exited with {self._process.returncode}; its log:\n{log}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no sign of mosquitto's {what} after {TIMEOUT} s; see {self.log}")
            time.sleep(0.002)

    def _write_config(self) -> Path:
        spec = self.spec
        lines = [
            f"listener {self.port} {self.host}",
            f"allow_anonymous {_flag(spec.allow_anonymous)}",
            "log_dest stderr",  # which start() sends to self.log
            "log_timestamp_format %H:%M:%S",
            f"persistence {_flag(spec.persistence)}",
        ]
        if os.geteuid() == 0:
            # as root, mosquitto would switch to the "mosquitto" user, who cannot write here
            lines.append("user root")
        if spec.persistence:
            # no autosave (the default is every 30 minutes): only an orderly stop or save()
            # writes the database, so what survives a kill does not depend on timing
            lines += [f"persistence_location {self._directory}/", "autosave_interval 0"]
        if spec.users:
            lines.append(f"password_file {self._write_passwords()}")
        if spec.tls:
            self.tls = self.tls or make_tls_files(self._directory)
            lines += [
                f"cafile {self.tls.ca_file}",
                f"certfile {self.tls.server_cert}",
                f"keyfile {self.tls.server_key}",
                "tls_version tlsv1.2",  # the minimum, stated rather than left to the installed version's default
                f"require_certificate {_flag(spec.require_certificate)}",
            ]
        config = self._directory / "mosquitto.conf"
        config.write_text("\n".join(lines) + "\n")
        return config

    def _write_passwords(self) -> Path:
        passwords = self._directory / "passwords"
        passwords.write_text("")
        passwords.chmod(0o600)  # later mosquitto versions warn about a password file others can read
        for name, password in self.spec.users.items():
            # -b takes the password whole; -U (hash a file in place) mangles one with a colon
            done = subprocess.run([self._mosquitto_passwd, "-b", str(passwords), name, password], capture_output=True)
            if done.returncode:
                raise ValueError(f"mosquitto_passwd refused user {name!r}: {done.stderr.decode().strip()}")
        return passwords


class BrokerFarm:
    """Starts brokers on demand; `close` kills every one of them."""

    def __init__(self, directory: Path, mosquitto: str, mosquitto_passwd: str) -> None:
        self._directory = directory
        self._executables = mosquitto, mosquitto_passwd
        self._brokers: list[Broker] = []

    def start(self, spec: BrokerSpec | None = None) -> Broker:
        broker = Broker(spec or BrokerSpec(), self._directory, *self._executables)
        self._brokers.append(broker)
        return broker.start()

    def close(self) -> None:
        for broker in self._brokers:
            broker.kill()


@pytest.fixture
def mqtt_brokers(tmp_path: Path) -> Iterator[BrokerFarm]:
    mosquitto = shutil.which("mosquitto", path=SEARCH_PATH)
    mosquitto_passwd = shutil.which("mosquitto_passwd", path=SEARCH_PATH)
    if mosquitto is None or mosquitto_passwd is None:
        # a failure, not a skip: a skipped broker test proves nothing about store-and-forward
        pytest.fail(
            f"mosquitto is not installed; on Debian/Ubuntu: apt-get install -y {DEBIAN_PACKAGE}"
            " (bash scripts/setup.sh does it when run as root)",
            pytrace=False,
        )
    farm = BrokerFarm(tmp_path, mosquitto, mosquitto_passwd)
    try:
        yield farm
    finally:
        farm.close()


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except FileNotFoundError:
        return None
