"""The service as systemd runs it: the unit verifies clean and its exposure is low
(`systemd-analyze`), the sysusers.d and tmpfiles.d files make the user and the
directories, and the agent speaks the notify protocol: READY=1 once it runs, WATCHDOG=1
only while the sealer makes progress (a TPM that stops answering stops the pings), and
STOPPING=1 on SIGTERM."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_harness import SIMULATED, write_config

from provisioning.swtpm import SoftwareTpm
from tests.tpm_identity import tpm_agent_config, tpm_identity

SYSTEMD = Path(__file__).resolve().parents[2] / "systemd"
EXPOSURE_TARGET = 2.5

needs_systemd_tools = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd tools are not installed (not a systemd system)"
)


def installed_unit(directory: Path) -> Path:
    """The unit as installed with edgeseal at this interpreter's prefix, not /usr/bin."""
    edgeseal = Path(sys.executable).parent / "edgeseal"
    unit = directory / "edgeseal.service"
    unit.write_text((SYSTEMD / "edgeseal.service").read_text().replace("/usr/bin/edgeseal", str(edgeseal)))
    return unit


@needs_systemd_tools
def test_the_unit_verifies_clean(tmp_path: Path) -> None:
    result = subprocess.run(
        ["systemd-analyze", "verify", installed_unit(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


@needs_systemd_tools
def test_the_units_exposure_is_low(tmp_path: Path) -> None:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", installed_unit(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    found = re.search(r"Overall exposure level for edgeseal\.service: ([0-9.]+)", result.stdout)
    assert found, result.stdout + result.stderr
    assert float(found[1]) <= EXPOSURE_TARGET, result.stdout


@needs_systemd_tools
def test_sysusers_and_tmpfiles_make_the_user_and_the_configuration_folders(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    for tool, conf in (("systemd-sysusers", "edgeseal.sysusers"), ("systemd-tmpfiles", "edgeseal.tmpfiles")):
        create = ["--create"] if tool == "systemd-tmpfiles" else []
        subprocess.run([tool, *create, f"--root={root}", SYSTEMD / conf], check=True, capture_output=True)
    user = next(line for line in (root / "etc/passwd").read_text().splitlines() if line.startswith("edgeseal:"))
    _, _, uid, gid, _, home, shell = user.split(":")
    assert (home, shell) == ("/var/lib/edgeseal", "/usr/sbin/nologin")
    for folder in ("etc/edgeseal", "etc/edgeseal/secrets"):
        info = (root / folder).stat()
        assert (oct(info.st_mode & 0o777), info.st_uid, str(info.st_gid)) == ("0o750", 0, gid)


class NotifySocket:
    """What systemd listens on: a datagram socket named by $NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []

    def collect(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                self.messages.append((time.monotonic(), self.sock.recv(4096).decode()))
            except TimeoutError:
                pass

    def wait_for(self, field: str, timeout: float = 20.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for at, message in self.messages:
                if field in message.splitlines():
                    return at
            self.collect(0.2)
        raise AssertionError(f"no {field} within {timeout}s; got {[m for _, m in self.messages]}")

    def pings_between(self, start: float, end: float) -> int:
        return sum(1 for at, m in self.messages if start <= at <= end and "WATCHDOG=1" in m.splitlines())


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    sock = NotifySocket(tmp_path / "notify.sock")
    yield sock
    sock.sock.close()


def start_agent(config: Path, notify: NotifySocket, watchdog_seconds: float) -> subprocess.Popen[bytes]:
    environ = os.environ | {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": str(int(watchdog_seconds * 1e6))}
    log = (config.parent / "agent.log").open("wb")
    with log:
        command = [sys.executable, "-m", "agent.cli", "run", "--config", str(config)]
        return subprocess.Popen(command, env=environ, stdout=log, stderr=subprocess.STDOUT)


def test_ready_then_watchdog_pings_then_stopping(tmp_path: Path, notify_socket: NotifySocket) -> None:
    config = write_config(tmp_path, sources=SIMULATED)
    agent = start_agent(config, notify_socket, watchdog_seconds=1.0)
    try:
        ready = notify_socket.wait_for("READY=1")
        notify_socket.collect(2.0)
        assert notify_socket.pings_between(ready, ready + 2.0) >= 3  # every 0.5 s: half the interval
        agent.send_signal(signal.SIGTERM)
        notify_socket.wait_for("STOPPING=1")
        assert agent.wait(timeout=30) == 0
    finally:
        agent.kill()
        agent.wait()


def test_a_tpm_that_stops_answering_stops_the_watchdog_pings(
    swtpm: SoftwareTpm, tmp_path: Path, notify_socket: NotifySocket
) -> None:
    tpm_identity(swtpm, tmp_path, "tpm-gateway-1")
    config = tpm_agent_config(tmp_path, swtpm, "tpm-gateway-1", SIMULATED)
    agent = start_agent(config, notify_socket, watchdog_seconds=1.0)
    try:
        ready = notify_socket.wait_for("READY=1")
        notify_socket.collect(1.5)
        assert notify_socket.pings_between(ready, time.monotonic()) >= 2
        os.kill(swtpm.pid, signal.SIGSTOP)  # signing hangs: the sealer makes no progress
        try:
            stalled = time.monotonic()
            ailing = notify_socket.wait_for("STATUS=the sealer is not progressing", timeout=15)
            assert ailing - stalled < 3.0  # about the watchdog interval, a round and a ping period
            notify_socket.collect(2.0)
            assert notify_socket.pings_between(ailing, time.monotonic()) == 0  # systemd would now restart it
        finally:
            os.kill(swtpm.pid, signal.SIGCONT)
        resumed = time.monotonic()
        notify_socket.collect(3.0)
        assert notify_socket.pings_between(resumed, time.monotonic()) >= 1  # healthy again: pings resume
    finally:
        agent.send_signal(signal.SIGTERM)
        try:
            agent.wait(timeout=30)
        finally:
            agent.kill()
            agent.wait()
