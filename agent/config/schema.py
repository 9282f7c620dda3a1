"""JSON Schema of the configuration, for editors: the YAML language server (VS Code's
YAML extension and others) uses it for completion, hover help and live checks."""

from __future__ import annotations

from typing import Any

from agent.config.model import Config

DIALECT = "https://json-schema.org/draft/2020-12/schema"


def config_schema() -> dict[str, Any]:
    schema = Config.model_json_schema()
    schema.pop("title", None)
    return {
        "$schema": DIALECT,
        "title": "edgeseal configuration",
        **schema,
    }
