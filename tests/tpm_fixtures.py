"""Software TPM fixtures: one TPM manufactured per session (about a second), and for each
test a running copy of it (a few milliseconds) that the test may change, stop or kill.

Registered in tests/conftest.py; a test asks for `swtpm` and connects to `swtpm.tcti`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from provisioning.swtpm import DEBIAN_PACKAGES, SoftwareTpm, SwtpmFiles, clone, manufacture, swtpm_available


@pytest.fixture(scope="session")
def swtpm_template(tmp_path_factory: pytest.TempPathFactory) -> SwtpmFiles:
    """The session's manufactured TPM. Tests clone it rather than run it: its state stays pristine."""
    if not swtpm_available():
        # a failure, not a skip: CI installs swtpm, and a skipped TPM test proves nothing
        pytest.fail(
            f"swtpm is not installed; on Debian/Ubuntu: apt-get install {DEBIAN_PACKAGES}"
            " (bash scripts/setup.sh does it when run as root)",
            pytrace=False,
        )
    return manufacture(tmp_path_factory.mktemp("swtpm-template"))


@pytest.fixture
def swtpm(swtpm_template: SwtpmFiles, tmp_path: Path) -> Iterator[SoftwareTpm]:
    """A running software TPM of this test's own, with the template's EKs; stopped afterwards."""
    with SoftwareTpm(clone(swtpm_template, tmp_path / "swtpm")) as tpm:
        yield tpm
