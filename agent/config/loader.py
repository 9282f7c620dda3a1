"""load_config: a YAML file -> a validated Config, or a ConfigError with every problem."""

from __future__ import annotations

import os
from collections.abc import Mapping

from pydantic import ValidationError

from agent.config.diagnostics import validation_problems
from agent.config.model import Config
from agent.config.yaml_loader import load_yaml
from agent.errors import ConfigError


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Config:
    """Loads and validates the configuration at `path`. `${NAME}` references are read
    from `env` (default: the process environment). Relative paths in the file
    (identity.key, identity.cert_chain, identity.tpm.secrets_dir, buffer.dir) are resolved against the file's
    folder. Reads no key, certificate or database: checking a config does no I/O beyond it."""
    doc = load_yaml(os.fspath(path), os.environ if env is None else env)
    problems = list(doc.problems)
    config = None
    if doc.data is not None:
        try:
            config = Config.model_validate(doc.data)
        except ValidationError as error:
            problems += validation_problems(error, doc)
    if problems or config is None:
        raise ConfigError(problems)
    return _paths_from(config, os.path.dirname(os.path.abspath(path)))


def _paths_from(config: Config, folder: str) -> Config:
    """Relative paths mean relative to the config file, not to wherever the agent starts."""

    def resolve(path: str) -> str:
        return os.path.normpath(os.path.join(folder, path))

    identity = config.identity
    tpm = identity.tpm and identity.tpm.model_copy(update={"secrets_dir": resolve(identity.tpm.secrets_dir)})
    identity = identity.model_copy(
        update={
            "key": identity.key and resolve(identity.key),
            "cert_chain": resolve(identity.cert_chain),
            "tpm": tpm,
        }
    )
    buffer = config.buffer.model_copy(update={"dir": resolve(config.buffer.dir)})
    mqtt = config.mqtt
    if mqtt is not None and mqtt.tls is not None:
        files = {name: getattr(mqtt.tls, name) for name in ("ca_file", "cert_file", "key_file")}
        tls = mqtt.tls.model_copy(update={name: path and resolve(path) for name, path in files.items()})
        mqtt = mqtt.model_copy(update={"tls": tls})
    anchor = config.anchor
    if anchor is not None:
        key = anchor.key
        passphrase_file = key.passphrase_file and resolve(key.passphrase_file)
        key = key.model_copy(update={"keystore": resolve(key.keystore), "passphrase_file": passphrase_file})
        anchor = anchor.model_copy(update={"key": key})
    return config.model_copy(update={"identity": identity, "buffer": buffer, "mqtt": mqtt, "anchor": anchor})
