"""How TSS errors become edgeseal errors, and which ones are resent to the TPM."""

from __future__ import annotations

import pytest
from tpm2_pytss import TPM2_RC, TSS2_Exception

from agent.errors import TpmError, TpmUnreachable
from agent.keys.tpm import esys
from agent.keys.tpm.tcti import parse_tcti


class _Flaky:
    """Answers with the given TPM response codes, then succeeds."""

    def __init__(self, *codes: int) -> None:
        self.codes, self.calls = list(codes), 0

    def __call__(self) -> str:
        self.calls += 1
        if self.codes:
            raise TSS2_Exception(self.codes.pop(0))
        return "done"


@pytest.mark.parametrize("code", [TPM2_RC.RETRY, TPM2_RC.YIELDED, TPM2_RC.TESTING])
def test_busy_answers_are_resent(code: int) -> None:
    command = _Flaky(code, code)
    assert esys._busy_retried(command) == "done"
    assert command.calls == 3


def test_a_tpm_that_stays_busy_is_a_transient_error() -> None:
    command = _Flaky(*[TPM2_RC.RETRY] * esys.BUSY_RETRIES)
    with pytest.raises(TpmError, match="busy") as raised, esys.tss_errors("signing"):
        esys._busy_retried(command)
    assert raised.value.transient and command.calls == esys.BUSY_RETRIES


def test_other_errors_are_not_resent_and_not_transient() -> None:
    command = _Flaky(TPM2_RC.AUTH_FAIL)
    with pytest.raises(TpmError) as raised, esys.tss_errors("signing"):
        esys._busy_retried(command)
    assert command.calls == 1 and not raised.value.transient


def test_a_tcti_failure_means_unreachable() -> None:
    with pytest.raises(TpmUnreachable, match="opening TCTI swtpm:host=127.0.0.1,port=1: cannot reach the TPM"):
        esys.open_context(parse_tcti("swtpm:host=127.0.0.1,port=1"))


@pytest.mark.parametrize(
    "text", ["device:/dev/tpmrm0", "tabrmd", "tabrmd:bus_type=session", "swtpm:host=127.0.0.1,port=2321", "swtpm"]
)
def test_tcti_strings_that_load(text: str) -> None:
    assert str(parse_tcti(text)) == text


@pytest.mark.parametrize("text", ["/dev/tpmrm0", "device:tpmrm0", "swtpm:port=x", "mqtt:host=a", ""])
def test_tcti_strings_that_do_not(text: str) -> None:
    with pytest.raises(ValueError):
        parse_tcti(text)
