"""Configuration: YAML -> typed, validated models, with every problem reported at once
(file:line:col, field path, what was expected and what was found).

    cfg = load_config("edgeseal.yaml")     # raises agent.errors.ConfigError
    schema = config_schema()               # JSON Schema for editors
"""

from agent.config.loader import load_config
from agent.config.model import BufferConfig, Config, DeviceConfig, IdentityConfig, MqttConfig, SealConfig
from agent.config.schema import config_schema

__all__ = [
    "BufferConfig",
    "Config",
    "DeviceConfig",
    "IdentityConfig",
    "MqttConfig",
    "SealConfig",
    "config_schema",
    "load_config",
]
