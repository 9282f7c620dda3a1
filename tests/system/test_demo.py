"""`edgeseal demo` as a user runs it: a software TPM when swtpm is installed, a clearly
labelled software key when it is not; both end with bundles that verify."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from provisioning.swtpm import swtpm_available

RUN_CLI = "import sys; from agent.cli import main; sys.exit(main())"


def _demo(directory: Path, path: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PATH": path}
    argv = [sys.executable, "-c", RUN_CLI, "demo", "--seconds", "2", "--dir", str(directory)]
    return subprocess.run(argv, env=environment, capture_output=True, text=True, timeout=120)


def _verify(directory: Path) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-c", RUN_CLI, "verify", str(directory / "bundle.cbor"), "--ca", str(directory / "ca.pem")]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


def _swtpm_processes() -> int:
    listed = subprocess.run(["pgrep", "-f", "swtpm socket"], capture_output=True, text=True).stdout
    return len(listed.split())


def test_the_demo_signs_in_a_software_tpm_when_swtpm_is_installed(tmp_path: Path) -> None:
    assert swtpm_available(), "swtpm is not installed (bash scripts/setup.sh installs it)"
    before = _swtpm_processes()
    result = _demo(tmp_path, os.environ["PATH"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "key in a software TPM (swtpm" in result.stdout
    assert "signer: tpm" in (tmp_path / "edgeseal.yaml").read_text()
    assert not (tmp_path / "device-key.pem").exists()  # the key is in the TPM only
    assert result.stdout.count(": VALID") == 2
    assert _verify(tmp_path).returncode == 0
    assert _swtpm_processes() == before  # the demo stopped its TPM


def test_without_swtpm_the_demo_labels_its_software_key(tmp_path: Path) -> None:
    python_only = str(Path(sys.executable).parent)  # no swtpm on this PATH
    result = _demo(tmp_path, python_only)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SOFTWARE KEY (development only, not a TPM" in result.stdout
    assert (tmp_path / "device-key.pem").exists()
    assert _verify(tmp_path).returncode == 0
