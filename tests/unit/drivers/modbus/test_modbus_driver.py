"""The driver contract's construction rule for the Modbus driver: built from (config,
sink, context) with no I/O, even outside an event loop (pymodbus clients take the
running loop when made, so the driver makes its client only when it first connects)."""

from __future__ import annotations

import logging
import socket

import pytest

from drivers.api import Driver, DriverContext
from drivers.modbus.config import SourceConfig
from drivers.modbus.driver import create


def test_construction_does_no_io_and_needs_no_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_sockets(*_args, **_kwargs):
        raise AssertionError("construction opened a socket")

    monkeypatch.setattr(socket, "socket", no_sockets)
    config = SourceConfig.model_validate(
        {
            "name": "meter",
            "type": "modbus",
            "url": "tcp://192.0.2.1",  # TEST-NET-1: nothing answers there
            "devices": [{"tags": [{"name": "power", "address": 40001, "type": "float32"}]}],
        }
    )
    driver = create(config, sink=None, context=DriverContext("meter", logging.getLogger("test")))  # type: ignore[arg-type]
    assert isinstance(driver, Driver)
