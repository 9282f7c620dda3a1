"""Aliases, merge keys and includes expand in place; loading stops at MAX_VALUES values
however they are nested, so a small file cannot keep check-config busy for hours."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import load_config, yaml_loader
from agent.errors import ConfigError

HEAD = """\
device:
  id: press-line-7
identity:
  key: k.pem
  cert_chain: c.pem
"""

TOO_MANY = "values in total (aliases expand in place), found more; is this an alias bomb?"


def _problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    return [str(problem) for problem in caught.value.problems]


def test_nested_merge_keys_stop_at_the_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    levels = ["m1: &m1 {a: 1, b: 2, c: 3, d: 4, e: 5, f: 6, g: 7, h: 8, i: 9}"]
    levels += [f"m{n}: &m{n} {{<<: [{', '.join([f'*m{n - 1}'] * 9)}]}}" for n in range(2, 10)]
    (tmp_path / "config.yaml").write_text(HEAD + "\n".join(levels) + "\n", encoding="utf-8")
    monkeypatch.setattr(yaml_loader, "MAX_VALUES", 10_000)
    assert _problems(Path("config.yaml")) == [
        f"config.yaml:8:5: m4: expected at most 10000 {TOO_MANY}",
    ]


def test_nested_includes_stop_at_the_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "l0.yaml").write_text("[]\n", encoding="utf-8")
    for level in range(1, 10):
        (tmp_path / f"l{level}.yaml").write_text(f"- !include l{level - 1}.yaml\n" * 9, encoding="utf-8")
    (tmp_path / "config.yaml").write_text(HEAD + "extra: !include l9.yaml\n", encoding="utf-8")
    monkeypatch.setattr(yaml_loader, "MAX_VALUES", 10_000)
    assert _problems(Path("config.yaml")) == [
        f"l4.yaml:1:1: extra: expected at most 10000 {TOO_MANY}",
    ]


def test_a_file_included_again_is_read_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "unit.yaml").write_text("bar\n", encoding="utf-8")
    tags = "".join(f"      - {{name: press.p{n}, unit: !include unit.yaml}}\n" for n in range(3))
    text = HEAD + "sources:\n  - name: line1\n    type: simulator\n    tags:\n" + tags
    (tmp_path / "config.yaml").write_text(text, encoding="utf-8")
    compose_file = yaml_loader.compose_file
    read: list[str] = []

    def compose(file: str) -> object:
        read.append(file)
        return compose_file(file)

    monkeypatch.setattr(yaml_loader, "compose_file", compose)
    config = load_config("config.yaml", env={})
    assert [tag.unit for tag in config.sources[0].tags] == ["bar"] * 3
    assert read == ["config.yaml", "unit.yaml"]


def test_a_missing_file_is_reported_once_for_each_include(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tags.yaml").write_text("- !include missing.yaml\n", encoding="utf-8")
    tags = "      - !include tags.yaml\n" * 3
    text = HEAD + "sources:\n  - name: line1\n    type: simulator\n    tags:\n" + tags
    (tmp_path / "config.yaml").write_text(text, encoding="utf-8")
    assert _problems(Path("config.yaml")) == [
        "tags.yaml:1:3: sources[0].tags: expected a YAML file, found no file at 'missing.yaml'",
    ]


def test_an_alias_repeats_no_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.yaml").write_text(HEAD + "extra: &bad !x a\nmore: [*bad, *bad]\n", encoding="utf-8")
    assert [problem for problem in _problems(Path("config.yaml")) if "!x" in problem] == [
        "config.yaml:6:8: extra: expected a plain value or !include, found the tag !x",
    ]
