"""Explicit registry of source types, imported lazily: a configuration that only uses
Modbus never imports asyncua. Each entry names a package with two modules:
`config` (a pydantic model `SourceConfig`, no protocol library) and `driver`
(`create(config, sink, context) -> Driver`, the only place protocol libraries load)."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

SOURCE_TYPES: dict[str, str] = {
    "simulator": "drivers.simulator",
    "modbus": "drivers.modbus",
    "opcua": "drivers.opcua",
}


def config_model(source_type: str) -> type[Any]:
    return importlib.import_module(f"{SOURCE_TYPES[source_type]}.config").SourceConfig


def config_models() -> list[type[Any]]:
    return [config_model(t) for t in SOURCE_TYPES]


def driver_module(source_type: str) -> ModuleType:
    return importlib.import_module(f"{SOURCE_TYPES[source_type]}.driver")
