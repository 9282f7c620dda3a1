"""A software TPM 2.0 (swtpm) manufactured like a real one, for tests, benchmarks and the demo.

`manufacture` gives a TPM state EK certificates issued by a private "TPM vendor" CA, the
way a chip leaves its maker; `SoftwareTpm` serves that state over TCP as a child process;
`clone` copies a manufactured state so each test gets a fresh TPM in milliseconds:

    files = manufacture(Path("tpm"))
    with SoftwareTpm(files) as tpm, ESAPI(tpm.tcti) as esapi:
        ...

Everything lives under one directory and needs no root, no /var/lib and no `tss` user:

    DIR/etc/        private swtpm_setup.conf, swtpm-localca.conf, swtpm-localca.options
    DIR/vendor-ca/  the local CA: root certificate, issuing certificate and their keys
    DIR/state/      the TPM's NVRAM (tpm2-00.permall)
    DIR/swtpm.log   what swtpm prints while it serves
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from agent.errors import KeyError_

DEBIAN_PACKAGES = "swtpm swtpm-tools"
"""What to install where `swtpm_available()` is false."""

RSA_EK_HANDLE = 0x81010001
RSA_EK_CERT_NV = 0x01C00002
ECC_EK_HANDLE = 0x81010016  # swtpm's ECC EK is P-384
ECC_EK_CERT_NV = 0x01C00016

_STATE_FILE = "tpm2-00.permall"
_ISSUER_CERT = "issuercert.pem"
_ROOT_CERT = "swtpm-localca-rootca-cert.pem"
_SETUP_TIMEOUT = 60.0
_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 5.0
_DEFAULT_OPTIONS = "--platform-manufacturer edgeseal\n--platform-version 2.1\n--platform-model swtpm\n"


@dataclass(frozen=True)
class SwtpmFiles:
    """A manufactured software TPM: its state and the certificates that vouch for its EKs."""

    directory: Path
    state_dir: Path
    ek_issuer_cert: Path
    """The local CA certificate that signed the EK certificates."""
    vendor_root_cert: Path
    """The root above `ek_issuer_cert`: what a factory CA trusts as the "TPM vendor CA"."""

    @classmethod
    def at(cls, directory: Path) -> SwtpmFiles:
        """Where a software TPM in `directory` keeps its files, whether it exists or not."""
        ca = directory / "vendor-ca"
        return cls(directory, directory / "state", ca / _ISSUER_CERT, ca / _ROOT_CERT)

    def manufactured(self) -> bool:
        """True when the state and both certificates are there."""
        return all(p.is_file() for p in (self.state_dir / _STATE_FILE, self.ek_issuer_cert, self.vendor_root_cert))


def swtpm_available() -> bool:
    """True when swtpm and swtpm_setup are on PATH (Debian: `apt-get install swtpm swtpm-tools`)."""
    return all(shutil.which(tool) for tool in ("swtpm", "swtpm_setup"))


def manufacture(directory: Path) -> SwtpmFiles:
    """A TPM state in `directory` with RSA 2048 and ECC P-384 EKs and their certificates.

    Idempotent: an existing state is returned as it is, so its EKs stay the same.
    """
    files = SwtpmFiles.at(directory)
    if files.manufactured():
        return files
    localca = shutil.which("swtpm_localca")
    if not swtpm_available() or localca is None:
        raise KeyError_(f"swtpm is not installed; on Debian/Ubuntu: apt-get install {DEBIAN_PACKAGES}")
    try:
        config = _write_setup_config(directory, localca)
        files.state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise KeyError_(f"{directory}: cannot prepare a software TPM: {exc.strerror}") from None
    _run_setup(config, files)
    return files


def clone(files: SwtpmFiles, directory: Path) -> SwtpmFiles:
    """A copy of a manufactured TPM in `directory`: same EKs, its own NVRAM from then on.

    The vendor CA's private keys stay behind: a clone cannot issue EK certificates.
    """
    copy = SwtpmFiles.at(directory)
    if copy.manufactured():
        raise KeyError_(f"{copy.state_dir}: already holds a TPM state; clone into a new directory")
    try:
        shutil.copytree(files.state_dir, copy.state_dir, ignore=shutil.ignore_patterns(".lock"), dirs_exist_ok=True)
        copy.ek_issuer_cert.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(files.ek_issuer_cert, copy.ek_issuer_cert)
        shutil.copyfile(files.vendor_root_cert, copy.vendor_root_cert)
    except OSError as exc:
        raise KeyError_(f"{directory}: cannot copy the software TPM {files.directory}: {exc.strerror}") from None
    return copy


class SoftwareTpm:
    """swtpm serving one TPM state on 127.0.0.1, as a child process of this one.

    Use it as a context manager, or call start() and stop(). start() after stop() or
    kill() brings the same TPM back, on the same port when that is still free.
    """

    def __init__(self, files: SwtpmFiles) -> None:
        self.files = files
        self.log_path = files.directory / "swtpm.log"
        self._port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        """The TPM command port; the control port is the next one."""
        if self._port is None:
            raise RuntimeError("the software TPM has not been started")
        return self._port

    @property
    def tcti(self) -> str:
        """The TCTI configuration for tpm2-pytss (`TCTILdr.parse`) and tpm2-tools (`-T`)."""
        return f"swtpm:host=127.0.0.1,port={self.port}"

    @property
    def pid(self) -> int:
        """The swtpm process: SIGSTOP makes a TPM that stops answering."""
        if self._process is None:
            raise RuntimeError("the software TPM has not been started")
        return self._process.pid

    @property
    def running(self) -> bool:
        """True while the swtpm child process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start serving and return once the TPM accepts connections; no-op when running."""
        if self.running:
            return
        if self._port is None or not _ports_free(self._port):
            self._port = _free_port_pair()
        log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._process = self._spawn(self._port)
        self._wait_until_serving(log_start)

    def stop(self) -> None:
        """Terminate swtpm gracefully (SIGTERM, then SIGKILL after a timeout) and reap it."""
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
        self._process = None

    def kill(self) -> None:
        """SIGKILL swtpm, as a crashed or unplugged TPM: clients' connections fail."""
        if self._process is None:
            return
        self._process.send_signal(signal.SIGKILL)
        self._process.wait()
        self._process = None

    def __enter__(self) -> SoftwareTpm:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _spawn(self, port: int) -> subprocess.Popen[bytes]:
        command = [
            "swtpm", "socket", "--tpm2",
            "--tpmstate", f"dir={self.files.state_dir}",
            "--server", f"type=tcp,port={port},bindaddr=127.0.0.1",
            "--ctrl", f"type=tcp,port={port + 1},bindaddr=127.0.0.1",
            "--flags", "not-need-init,startup-clear",
        ]  # fmt: skip
        try:
            # the child keeps its own copy of the log's descriptor
            with self.log_path.open("ab") as log:
                return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        except OSError as exc:
            raise KeyError_(f"cannot start swtpm: {exc.strerror}") from None

    def _wait_until_serving(self, log_start: int) -> None:
        assert self._process is not None
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                code, self._process = self._process.returncode, None
                output = _tail(self.log_path, log_start)
                raise KeyError_(f"swtpm exited with status {code} on port {self.port}:\n{output}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return
            time.sleep(0.01)
        self.kill()
        raise KeyError_(f"swtpm did not accept connections on port {self.port} within {_START_TIMEOUT:g} s")


def _write_setup_config(directory: Path, localca: str) -> Path:
    """Private copies of swtpm_setup's and swtpm_localca's configuration, pointing into `directory`."""
    etc, ca = directory / "etc", directory / "vendor-ca"
    etc.mkdir(parents=True, exist_ok=True)
    ca.mkdir(exist_ok=True)
    system_options = Path("/etc/swtpm-localca.options")
    options = system_options.read_text() if system_options.is_file() else _DEFAULT_OPTIONS
    (etc / "swtpm-localca.options").write_text(options)
    (etc / "swtpm-localca.conf").write_text(
        f"statedir = {ca}\n"
        f"signingkey = {ca / 'signkey.pem'}\n"
        f"issuercert = {ca / _ISSUER_CERT}\n"
        f"certserial = {ca / 'certserial'}\n"
    )
    config = etc / "swtpm_setup.conf"
    config.write_text(
        f"create_certs_tool= {localca}\n"
        f"create_certs_tool_config = {etc / 'swtpm-localca.conf'}\n"
        f"create_certs_tool_options = {etc / 'swtpm-localca.options'}\n"
        "active_pcr_banks = sha256\n"
    )
    return config


def _run_setup(config: Path, files: SwtpmFiles) -> None:
    command = [
        "swtpm_setup", "--tpm2",
        "--tpmstate", str(files.state_dir),
        "--config", str(config),
        "--create-ek-cert", "--create-platform-cert", "--lock-nvram", "--overwrite",
    ]  # fmt: skip
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=_SETUP_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        failure = f"cannot run swtpm_setup: {exc}"
    else:
        if result.returncode == 0 and files.manufactured():
            return
        failure = f"swtpm_setup failed (status {result.returncode}):\n{_last_lines(result.stderr or result.stdout)}"
    # a half-made state would pass for a manufactured one next time
    (files.state_dir / _STATE_FILE).unlink(missing_ok=True)
    raise KeyError_(f"{files.directory}: {failure}")


def _free_port_pair() -> int:
    """A free port P whose neighbour P+1 (swtpm's control port) is free as well."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
        if port < 65535 and _ports_free(port):
            return port
    raise KeyError_("no two consecutive free TCP ports on 127.0.0.1 for swtpm")


def _ports_free(port: int) -> bool:
    try:
        with socket.socket() as server, socket.socket() as ctrl:
            # as swtpm binds: with SO_REUSEADDR, so a closed connection's TIME_WAIT does not count
            for sock, p in ((server, port), (ctrl, port + 1)):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(("127.0.0.1", p))
        return True
    except OSError:
        return False


def _tail(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as f:
            f.seek(offset)
            return _last_lines(f.read().decode(errors="replace"))
    except OSError as exc:
        return f"({path}: {exc.strerror})"


def _last_lines(text: str, count: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-count:])
