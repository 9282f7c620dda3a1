"""The loader's results beyond diagnostics: typed values, defaults, includes, the
environment, relative paths, and how file names are shown."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.config import Config, load_config
from agent.errors import ConfigError

CASES = Path(__file__).parent / "cases"

MINIMAL = """\
device:
  id: press-line-7
identity:
  key: keys/device.pem
  cert_chain: /etc/edgeseal/chain.pem
sources:
  - name: line1
    type: simulator
    tags:
      - name: press.temp
"""


def _write(folder: Path, text: str, name: str = "config.yaml") -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _problems(path: Path | str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, env=env or {})
    return [str(problem) for problem in caught.value.problems]


def test_defaults_fill_every_optional_section(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, MINIMAL), env={})
    assert isinstance(config, Config)
    assert config.identity.signer == "software"
    assert (config.seal.interval, config.seal.max_readings) == (1.0, 10000)
    assert (config.seal.checkpoint_every, config.seal.checkpoint_interval) == (60, 60.0)
    assert (config.buffer.dir, config.buffer.flush_interval, config.buffer.max_pending) == (
        "/var/lib/edgeseal",
        0.02,
        100000,
    )
    tag = config.sources[0].tags[0]
    assert (tag.type, tag.pattern, tag.min, tag.max, tag.period, tag.value) == (
        "float",
        "sine",
        0.0,
        100.0,
        60.0,
        None,
    )


def test_relative_paths_start_at_the_config_files_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    _write(tmp_path, MINIMAL + "buffer:\n  dir: ../state\n", "site/config.yaml")
    config = load_config("site/config.yaml", env={})
    assert config.identity.key == str(tmp_path / "site" / "keys" / "device.pem")
    assert config.identity.cert_chain == "/etc/edgeseal/chain.pem"
    assert config.buffer.dir == str(tmp_path / "state")


def test_environment_variables_are_substituted_and_typed(tmp_path: Path) -> None:
    text = MINIMAL.replace("id: press-line-7", "id: ${SITE}-${LINE:-7}").replace(
        "keys/device.pem", '"/keys/$${literal}/${KEY}"'
    )
    text += "seal:\n  max_readings: ${N}\n  interval: ${INTERVAL}\n"
    config = load_config(_write(tmp_path, text), env={"SITE": "press", "KEY": "k.pem", "N": "5", "INTERVAL": "250ms"})
    assert config.device.id == "press-7"
    assert config.identity.key == "/keys/${literal}/k.pem"
    assert config.seal.max_readings == 5
    assert config.seal.interval == 0.25


def test_the_process_environment_is_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGESEAL_TEST_DEVICE", "from-env")
    config = load_config(_write(tmp_path, MINIMAL.replace("press-line-7", "${EDGESEAL_TEST_DEVICE}")))
    assert config.device.id == "from-env"


def test_included_lists_are_spliced_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    folder = CASES / "valid-everything"
    monkeypatch.chdir(folder)
    env = {"KEY_PATH": "k.pem", "SEAL_INTERVAL": "1s", "MAX_READINGS": "10"}
    names = [tag.name for tag in load_config("config.yaml", env=env).sources[0].tags]
    assert names == ["press.temp", "press.temp2", "press.state", "press.count", "press.door"]


def test_merge_keys_copy_an_anchored_tag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(CASES / "valid-everything")
    env = {"KEY_PATH": "k.pem", "SEAL_INTERVAL": "1s", "MAX_READINGS": "10"}
    first, second = load_config("config.yaml", env=env).sources[0].tags[:2]
    assert (second.min, second.max, second.unit, second.period) == (
        first.min,
        first.max,
        first.unit,
        first.period,
    )
    assert first.fault is not None and second.fault is None


def test_problems_in_a_file_outside_the_current_folder_name_it_absolutely(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(tmp_path / "etc", MINIMAL.replace("press-line-7", "press line 7"))
    monkeypatch.chdir(tmp_path / "etc")
    assert _problems(path)[0].startswith("config.yaml:2:7: device.id:")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert _problems("../etc/config.yaml")[0].startswith(f"{path}:2:7: device.id:")


def test_a_missing_file_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.yaml"
    assert _problems(missing) == [f"{missing}:1:1: expected a YAML file, found no file at '{missing}'"]


def test_a_recursive_alias_is_a_problem(tmp_path: Path) -> None:
    text = MINIMAL + "extra: &loop [*loop]\n"
    problems = _problems(_write(tmp_path, text))
    assert any("alias to a node that contains it" in p for p in problems)


def test_config_error_lists_every_problem_in_its_message(tmp_path: Path) -> None:
    path = _write(tmp_path, "device: {id: x}\nseal: {max_readings: 0}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert caught.value.exit_code == 2
    assert str(caught.value).splitlines() == [str(p) for p in caught.value.problems]
    assert len(caught.value.problems) == 3  # identity, sources missing; max_readings too small


def test_relative_paths_are_not_touched_when_absolute(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, MINIMAL.replace("keys/device.pem", "/k.pem")), env={})
    assert config.identity.key == os.path.normpath("/k.pem")
