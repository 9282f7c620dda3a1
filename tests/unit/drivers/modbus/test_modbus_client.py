"""Every pymodbus failure maps, in one place, onto the outcome that carries the driver's
decision and the quality its points read as."""

from __future__ import annotations

import pytest
from pymodbus.exceptions import ConnectionException, ModbusIOException
from pymodbus.pdu import ExceptionResponse

from drivers.api import Quality
from drivers.modbus.client import ConnectionDown, IllegalAddress, NoAnswer, Refused, classify


@pytest.mark.parametrize(
    ("code", "kind", "quality"),
    [
        (0x01, Refused, Quality.BAD_CONFIGURATION_ERROR),
        (0x02, IllegalAddress, Quality.BAD_CONFIGURATION_ERROR),
        (0x03, Refused, Quality.BAD_CONFIGURATION_ERROR),
        (0x04, Refused, Quality.BAD_DEVICE_FAILURE),
        (0x05, NoAnswer, Quality.BAD_TIMEOUT),
        (0x06, NoAnswer, Quality.BAD_TIMEOUT),
        (0x08, Refused, Quality.BAD_DEVICE_FAILURE),  # memory parity error: not a code we name
        (0x0A, Refused, Quality.BAD_COMMUNICATION_ERROR),
        (0x0B, NoAnswer, Quality.BAD_TIMEOUT),
    ],
    ids=lambda v: f"{v:#04x}" if isinstance(v, int) and v < 0x100 else None,
)
def test_exception_codes(code: int, kind: type, quality: Quality) -> None:
    error = classify(ExceptionResponse(3, code), connected=True, garbled=False)
    assert isinstance(error, kind)
    assert error.quality == quality
    assert f"{code:#04x}" in str(error)


@pytest.mark.parametrize(
    ("failure", "connected", "garbled", "kind", "quality"),
    [
        (TimeoutError(), True, False, NoAnswer, Quality.BAD_TIMEOUT),
        (TimeoutError(), True, True, ConnectionDown, Quality.BAD_COMMUNICATION_ERROR),  # junk, then silence
        (TimeoutError(), False, False, ConnectionDown, Quality.BAD_COMMUNICATION_ERROR),  # lost while waiting
        (ModbusIOException("unit mismatch"), True, False, ConnectionDown, Quality.BAD_COMMUNICATION_ERROR),
        (ConnectionException("not connected"), False, False, ConnectionDown, Quality.BAD_COMMUNICATION_ERROR),
        (ConnectionResetError(104, "reset"), False, False, ConnectionDown, Quality.BAD_COMMUNICATION_ERROR),
    ],
)
def test_exceptions(failure: BaseException, connected: bool, garbled: bool, kind: type, quality: Quality) -> None:
    error = classify(failure, connected=connected, garbled=garbled)
    assert type(error) is kind
    assert error.quality == quality
