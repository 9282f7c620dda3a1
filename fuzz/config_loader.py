"""Coverage-guided fuzzing (atheris, libFuzzer) of the configuration loader: the promise
of tests/promises/test_fuzz_config.py, with the coverage of PyYAML's pure-Python parser
and of our loader steering the inputs, which reaches corners of YAML's grammar (tags,
anchors, merge keys, flow and block styles) that hand-written mutations seldom do.

    pip install atheris
    python fuzz/config_loader.py -max_total_time=60 [CORPUS_DIR ...]

With no corpus directory it starts from the configurations the project ships
(examples/, every driver's sample.yaml, tests/config/cases/). A finding stops the run and
leaves the input in ./crash-<sha1>: loading raised something else than ConfigError, or a
problem lacks a line and column or spans several lines.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["agent", "drivers", "yaml"]):
    from agent.config import load_config
    from agent.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SEEDS = [*ROOT.glob("examples/*.yaml"), *ROOT.glob("drivers/*/sample.yaml"), *ROOT.glob("tests/config/cases/*/*.yaml")]
ENV = {"GATEWAY_ID": "MTR-000042", "ANCHOR_RPC_URL": "https://eth-node.example.com/v1/0123456789abcdef"}


class Target:
    def __init__(self, folder: Path) -> None:
        self.path = folder / "config.yaml"

    def __call__(self, data: bytes) -> None:
        self.path.write_bytes(data)
        try:
            load_config(self.path, env=ENV)
        except ConfigError as error:
            if not error.problems:
                raise AssertionError("a ConfigError without a problem") from None
            for problem in error.problems:
                if problem.line < 1 or problem.column < 1 or len(str(problem).splitlines()) != 1:
                    raise AssertionError(f"not one positioned line: {problem!r}") from None


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="fuzz-config-") as folder:
        target = Target(Path(folder))
        argv = list(sys.argv)
        if not any(Path(arg).is_dir() for arg in argv[1:]):
            corpus = Path(folder, "corpus")
            corpus.mkdir()
            for index, seed in enumerate(seed for seed in SEEDS if seed.parent.name != "alias-bomb"):
                shutil.copy(seed, corpus / f"{index}-{seed.name}")
            argv.append(str(corpus))
        atheris.Setup(argv, target)
        atheris.Fuzz()


if __name__ == "__main__":
    main()
