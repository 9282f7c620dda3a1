"""Promise (DESIGN 4, STYLE "Configuration"): whatever a configuration file holds,
loading it gives a validated configuration or a ConfigError whose every problem names
the file, a line and a column, in one line of our own words; `edgeseal check-config`
answers exit 0 or 2, never with a traceback.

How: files made from the configurations the project ships (examples/, every driver's
sample.yaml, tests/config/cases/) by mutating them as data (keys deleted, values of the
wrong type, strings, huge numbers, unicode, null, shared nodes written as anchors and
aliases) or as text (truncated, random bytes and invalid UTF-8, tabs, duplicated and
re-indented lines, YAML syntax out of place, very deep nesting), and raw random bytes.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml
from fuzz_bytes import RARELY
from fuzz_tally import FUZZ, FUZZ_SLOW, Tally, figures
from hypothesis import given
from hypothesis import strategies as st

from agent.cli import main
from agent.config import Config, load_config
from agent.errors import ConfigError

ROOT = Path(__file__).parents[2]
CASES = ROOT / "tests" / "config" / "cases"
# The alias bomb takes seconds to refuse, by design; its own case covers it.
SEEDS = sorted(
    [*ROOT.glob("examples/*.yaml"), *ROOT.glob("drivers/*/sample.yaml"), *CASES.glob("*/config.yaml")],
    key=str,
)
SEEDS = [seed for seed in SEEDS if seed.parent.name != "alias-bomb"]
# What the seeds read from the environment (the examples' and the cases' variables).
ENV = {"GATEWAY_ID": "MTR-000042", "ANCHOR_RPC_URL": "https://eth-node.example.com/v1/0123456789abcdef"}
for _env_file in CASES.glob("*/env.txt"):
    ENV.update(line.split("=", 1) for line in _env_file.read_text(encoding="utf-8").splitlines() if line)

TALLY = Tally()
print_figures = figures(TALLY)
LOADER, CLI = "config loader", "check-config CLI"

# pydantic's and PyYAML's own English, which a user must never see.
FOREIGN = ("Input should", "validation error", "For further information", "Traceback", "pydantic", "yaml.scanner")
FOREIGN += ("yaml.parser", "yaml.composer", "yaml.constructor", "yaml.reader")


# -- the inputs -----------------------------------------------------------------------

ODD_TEXTS = [
    "", " ", "0", "-1", "1s", "-1ms", "0ms", "1e400", "1e400s", "nan", ".nan", "-.inf", "yes", "no", "on",
    "null", "~", "0x10", "0o17", "1_000", "${HOME}", "${UNSET}", "${X:-5}", "$${X}", "${", "4x0001", "400001",
    "00001", "tcp://", "tcp://:0", "rtu:///dev/null", "opc.tcp://h:4840", "ns=2;s=x", "ns=70000;i=1", "\u202e",
    "\U0001f600", "a" * 1000, "é" * 70, "ABCD", "float64", "string", "utf-16-be", "idna", "undefined",
]  # fmt: skip
ODD_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**63 - 2, max_value=2**64 + 2),
    st.just(10**400),
    st.floats(),
    st.text(max_size=20),
    st.binary(max_size=8),
    st.sampled_from(ODD_TEXTS),
    st.datetimes(),
    st.dates(),
)
ODD_VALUES = st.recursive(
    ODD_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=8) | st.sampled_from(ODD_TEXTS), inner, max_size=3)
    ),
    max_leaves=8,
)
SNIPPETS = [
    "\t", "  ", ": ", "- ", "? ", "&a ", "*a", "*nothing", "<<: *a\n", "<<: [*a, 1]\n", "!include x.yaml",
    "!include config.yaml", "!include ", "!!python/object:os.system", "!!binary", "!!set", "!!omap",
    "!!timestamp 2024-13-45", "!!int x", "!!float y", "!!str", "!custom", "---\n", "...\n", "{", "}", "[", "]",
    "'", '"', "#", "%YAML 1.1\n", "%TAG ! tag:x,2000:\n", "|", ">-", "\\", "${X}", "${", "$${", "\ufeff",
    "\u2028", "\x85", "\r", "\x00", "\x07", "0x", "1e400", "~", ",", "@", "`", "%",
]  # fmt: skip


def _paths(data: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every node's path in loaded YAML data: mapping keys and list indices."""
    yield prefix
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    for key, value in items:
        yield from _paths(value, (*prefix, key))


def _parent(data: Any, path: tuple[Any, ...]) -> Any:
    for step in path[:-1]:
        data = data[step]
    return data


@st.composite
def data_mutation(draw: st.DrawFn, data: Any) -> Any:
    """`data` (a fresh copy, changed in place) with one node deleted, replaced, shared
    with another place (which PyYAML writes as an anchor and an alias), or a node added."""
    paths = [path for path in _paths(data) if path]
    if not paths:
        return draw(ODD_VALUES)
    path = draw(st.sampled_from(paths))
    parent, key = _parent(data, path), path[-1]
    action = draw(st.sampled_from(["delete", "replace", "replace", "share", "add key"]))
    if action == "delete":
        del parent[key]
    elif action == "replace":
        parent[key] = draw(ODD_VALUES)
    elif action == "share":  # any node but the replaced one's ancestors, which would make a cycle
        sources = [source for source in paths if path[: len(source)] != source]
        parent[key] = _parent(data, draw(st.sampled_from(sources)) + (None,)) if sources else None
    elif isinstance(parent, dict):
        parent[draw(st.text(max_size=12) | st.sampled_from(ODD_TEXTS))] = draw(ODD_VALUES)
    else:
        parent.insert(key, draw(ODD_VALUES))
    return data


def _dumped(draw: st.DrawFn, data: Any) -> str:
    flow = draw(st.sampled_from([None, True, False]))
    unicode = draw(st.booleans())
    return yaml.dump(data, Dumper=yaml.CSafeDumper, sort_keys=False, allow_unicode=unicode, default_flow_style=flow)


@st.composite
def text_mutation(draw: st.DrawFn, raw: bytes) -> bytes:
    """`raw` with one change of the text: a truncation, a snippet of YAML syntax or
    random bytes inserted, a line duplicated, dropped or re-indented, or deep nesting."""
    at = draw(st.integers(0, len(raw)))
    action = draw(st.sampled_from(["truncate", "snippet", "bytes", "duplicate", "drop", "indent", "nest", "block"]))
    if action == "truncate":
        return raw[:at]
    if action == "snippet":
        return raw[:at] + draw(st.sampled_from(SNIPPETS)).encode() + raw[at:]
    if action == "bytes":
        return raw[:at] + draw(st.binary(min_size=1, max_size=8)) + raw[at:]
    if action == "nest":  # flow collections nested far deeper than any configuration
        depth = draw(st.integers(1, 1200))  # PyYAML's scanner takes time quadratic in it
        return raw[:at] + b"[" * depth + b"1" + b"]" * depth + raw[at:]
    if action == "block":
        depth = draw(st.integers(1, 400))
        nested = b"".join(b"  " * i + b"k:\n" for i in range(depth)) + b"  " * depth + b"v\n"
        return raw[:at] + b"\n" + nested + raw[at:]
    lines = raw.splitlines(keepends=True) or [b""]
    index = draw(st.integers(0, len(lines) - 1))
    if action == "duplicate":  # a key written twice, a list item repeated
        lines.insert(index, lines[index])
    elif action == "drop":
        del lines[index]
    else:
        lines[index] = b" " * draw(st.integers(0, 9)) + lines[index].lstrip(b" ")
    return b"".join(lines)


@st.composite
def config_files(draw: st.DrawFn) -> tuple[Path, bytes]:
    """(seed, the bytes of a mutated configuration file)."""
    seed = draw(st.sampled_from(SEEDS))
    raw = seed.read_bytes()
    if draw(RARELY):
        return seed, draw(st.binary(max_size=600))
    data = _plain_data(raw)
    if data is not None and draw(st.booleans()):
        for _ in range(draw(st.integers(1, 3))):
            data = draw(data_mutation(data))
        raw = _dumped(draw, data).encode()
    for _ in range(draw(st.integers(0 if data is not None else 1, 3))):
        raw = draw(text_mutation(raw))
    return seed, raw


def _plain_data(raw: bytes) -> Any:
    """The seed as data (a fresh copy to mutate), when plain YAML holds it (not with
    !include or a syntax error)."""
    return copy.deepcopy(_parsed(raw))


@functools.cache
def _parsed(raw: bytes) -> Any:
    try:
        return yaml.load(raw, Loader=yaml.CSafeLoader)
    except yaml.YAMLError:
        return None


@contextlib.contextmanager
def seed_folder(seed: Path, raw: bytes) -> Iterator[Path]:
    """A copy of the seed's folder (the files it includes) with config.yaml holding `raw`."""
    with tempfile.TemporaryDirectory(prefix="fuzz-config-") as folder:
        if seed.parent.parent == CASES:
            shutil.copytree(seed.parent, folder, dirs_exist_ok=True)
        path = Path(folder, "config.yaml")
        path.write_bytes(raw)
        yield path


# -- the judgement --------------------------------------------------------------------


def assert_clear(error: ConfigError, folder: Path) -> None:
    """Every problem names a file of the configuration, a line within it and a column,
    in one line of the project's words; together they are the whole message."""
    assert error.problems, "a ConfigError without a problem says nothing"
    for problem in error.problems:
        file = Path(problem.file).resolve()
        assert file.is_relative_to(folder.resolve()), f"names {problem.file}, not a file of the configuration"
        assert problem.line >= 1 and problem.column >= 1, problem
        if file.is_file():
            lines = file.read_bytes().decode("utf-8", "replace").splitlines()
            assert problem.line <= len(lines) + 1, f"line {problem.line} of a file of {len(lines)} lines: {problem}"
        assert problem.message.strip() and "\n" not in problem.message and "\r" not in problem.message, problem
        assert not any(words in problem.message for words in FOREIGN), problem
    assert error.diagnostics().splitlines() == [str(p) for p in error.problems]


def judge_load(seed: Path, raw: bytes) -> None:
    with seed_folder(seed, raw) as path:
        TALLY.judged(LOADER)
        try:
            config = load_config(path, env=ENV)
        except ConfigError as error:
            assert_clear(error, path.parent)
            TALLY.rejected(LOADER)
        else:
            assert isinstance(config, Config)
            TALLY.accepted(LOADER)


@FUZZ
@given(config_files())
def test_loading_any_file_gives_a_config_or_problems_with_positions(case: tuple[Path, bytes]) -> None:
    judge_load(*case)


# Files that must give problems: nesting past the parser's depth and bytes that are not
# text (guards), and files that once escaped as tracebacks or broke the one line per
# problem (regressions).
REGRESSIONS = {
    "flow lists nested too deep": b"[" * 1200,
    "not UTF-8": b"device:\n  id: \xff\n",
    "a key holding a line break": b'device:\n  "id\\nx": 1\n  "\\x1e": 2\n',
    "a value holding a line break": b'device:\n  id: "gw\\n1"\n',
    "an empty explicit int": b"device:\n  id: !!int ''\n",
    "an explicit bool of no truth value": b"device:\n  id: !!bool x\n",
    "an explicit timestamp its pattern does not match": b"device:\n  id: !!timestamp '2024-01-01 1:02:03.4: 5'\n",
    "a duration no float holds": b"seal:\n  interval: " + b"9" * 400 + b"\n",
    "a size no float holds": b"buffer:\n  max_bytes: '" + b"9" * 400 + b"B'\n",
}


@pytest.mark.parametrize("case", REGRESSIONS)
def test_a_file_that_once_broke_the_loader_gives_problems(case: str) -> None:
    judge_load(CASES / "valid-minimal" / "config.yaml", REGRESSIONS[case])


# "edgeseal: " before the first; the field path may be anything a key can be, even a space
POSITION = re.compile(r"^(edgeseal: )?[^:\n]+:[0-9]+:[0-9]+: .*\S")


def check_config(path: Path) -> tuple[int, str, str]:
    """`edgeseal check-config PATH` in-process: exit code, stdout, stderr. An exception
    escaping main() is what a user would see as a traceback: it fails the test."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["check-config", str(path)])
    return code, out.getvalue(), err.getvalue()


@FUZZ_SLOW
@given(config_files())
def test_check_config_answers_ok_or_positioned_lines(case: tuple[Path, bytes]) -> None:
    seed, raw = case
    with seed_folder(seed, raw) as path, mock.patch.dict(os.environ, ENV):  # the CLI reads the real environment
        TALLY.judged(CLI)
        code, out, err = check_config(path)
    assert "Traceback" not in out + err
    if code == 0:
        assert out == f"{path}: ok\n" and not err, (out, err)
        TALLY.accepted(CLI)
        return
    assert code == 2 and not out, (code, out, err)
    lines = err.splitlines()
    assert lines and lines[0].startswith("edgeseal: "), err
    assert all(POSITION.match(line) for line in lines), err
    TALLY.rejected(CLI)
