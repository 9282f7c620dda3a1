"""The JSON Schema that editors use: valid 2020-12, agrees with the loader, and explains
every field."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema  # noqa: E402
import pytest
import yaml
from pydantic import BaseModel

import drivers.modbus.config as modbus
import drivers.opcua.config as opcua
import drivers.simulator.config as simulator
from agent.config import (
    BufferConfig,
    Config,
    DeviceConfig,
    IdentityConfig,
    MqttConfig,
    SealConfig,
    config_schema,
    load_config,
    reference,
)
from agent.config.anchoring import AnchorConfig, ChainKeyConfig, FeesConfig
from agent.config.model import MetricsConfig, MqttLive, MqttTls
from agent.config.yaml_loader import load_yaml
from agent.errors import ConfigError

ROOT = Path(__file__).parents[2]
CASES = Path(__file__).parent / "cases"
SAMPLES = sorted(ROOT.glob("drivers/*/sample.yaml"))


def _validator() -> Any:
    return jsonschema.Draft202012Validator(config_schema())


def _objects(schema: Any) -> Iterator[dict[str, Any]]:
    """Every object schema (one with properties) anywhere in `schema`."""
    if isinstance(schema, dict):
        if "properties" in schema:
            yield schema
        for value in schema.values():
            yield from _objects(value)
    elif isinstance(schema, list):
        for item in schema:
            yield from _objects(item)


def test_schema_is_valid_json_schema_2020_12() -> None:
    schema = config_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] == "edgeseal configuration"
    jsonschema.Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.parent.name)
def test_driver_samples_validate_against_the_schema(sample: Path) -> None:
    document = yaml.safe_load(sample.read_text(encoding="utf-8"))
    assert list(_validator().iter_errors(document)) == []


def _loads(case: Path, env: dict[str, str]) -> bool:
    try:
        load_config(case / "config.yaml", env=env)
    except ConfigError:
        return False
    return True


@pytest.mark.parametrize("case", sorted(p for p in CASES.iterdir() if p.is_dir()), ids=lambda p: p.name)
def test_schema_accepts_what_the_loader_accepts(case: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The schema is looser than the loader (it cannot express cross-field rules), but it
    must never refuse a file the loader accepts."""
    monkeypatch.chdir(case)
    env_file = case / "env.txt"
    env = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if line) if env_file.exists() else {}
    if _loads(case, env):
        assert list(_validator().iter_errors(load_yaml("config.yaml", env).data)) == []


def test_schema_refuses_unknown_keys() -> None:
    document = yaml.safe_load((ROOT / "drivers/simulator/sample.yaml").read_text(encoding="utf-8"))
    document["buffer"] = {"flsh_interval": "20ms"}
    assert not _validator().is_valid(document)


def _description(field: dict[str, Any], schema: dict[str, Any]) -> str:
    """A field's own description, else that of the definition it refers to (pydantic
    leaves out a field description that only repeats its model's)."""
    if "description" in field or "$ref" not in field:
        return str(field.get("description", ""))
    return str(schema["$defs"][field["$ref"].rsplit("/", 1)[-1]].get("description", ""))


def test_every_field_has_a_description() -> None:
    schema = config_schema()
    missing = [
        f"{owner.get('title')}.{name}"
        for owner in _objects(schema)
        for name, field in owner["properties"].items()
        if not _description(field, schema).strip()
    ]
    assert missing == []


AGENT_MODELS = [
    Config,
    DeviceConfig,
    IdentityConfig,
    SealConfig,
    BufferConfig,
    MqttConfig,
    MqttTls,
    MqttLive,
    AnchorConfig,
    ChainKeyConfig,
    FeesConfig,
    MetricsConfig,
]
SIMULATOR_MODELS = [simulator.SourceConfig, simulator.SimTag, simulator.Fault, simulator.Generate]
MODBUS_MODELS = [modbus.SourceConfig, modbus.SerialConfig, modbus.ModbusDevice, modbus.ModbusTag]
OPCUA_MODELS = [
    opcua.SourceConfig,
    opcua.SecurityConfig,
    opcua.AuthConfig,
    opcua.SubscribeGroup,
    opcua.PollGroup,
    opcua.OpcUaTag,
    opcua.Deadband,
    opcua.EventGroup,
]


@pytest.mark.parametrize(
    ("doc", "models"),
    [
        ("docs/configuration.md", AGENT_MODELS),
        ("drivers/simulator/README.md", SIMULATOR_MODELS),
        ("drivers/modbus/README.md", MODBUS_MODELS),
        ("drivers/opcua/README.md", OPCUA_MODELS),
    ],
)
def test_every_field_is_documented(doc: str, models: list[type[BaseModel]]) -> None:
    text = (ROOT / doc).read_text(encoding="utf-8")
    names = {name for model in models for name in model.model_fields}
    assert sorted(name for name in names if f"`{name}`" not in text) == []


def test_the_configuration_reference_tables_are_generated_from_the_models() -> None:
    """docs/configuration.md's field tables are what `python -m agent.config.reference`
    makes of the models: a changed field, type, default or description cannot go unnoticed."""
    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert reference.render(text) == text, "run: python -m agent.config.reference docs/configuration.md"
    assert sorted(re.findall(r"<!-- fields: ([\w.]+) -->", text)) == sorted(reference.SECTIONS)
