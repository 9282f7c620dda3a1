"""Coverage-guided fuzzing (atheris, libFuzzer) of the bundle decoder and verifier: the
promise of tests/promises/test_fuzz_bundle.py, with the coverage of our own code steering
the inputs instead of hand-written mutations.

    pip install atheris
    python fuzz/bundle.py -max_total_time=60 [CORPUS_DIR ...]

With no corpus directory it starts from a genuine bundle, sealed here under a demo
identity (tests/fixtures.py). A finding stops the run and leaves the input in
./crash-<sha1>: decoding or verifying raised something else than NotABundle, a decoded
bundle does not encode to its own bytes, or bytes other than the genuine ones verify.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["agent"]):
    from agent.trust.bundle import BundleFormatError, NotABundle, decode_bundle
    from agent.trust.verify import verify_bundle

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fixtures import export, make_sealed_state  # noqa: E402  (after the instrumented imports)


class Target:
    def __init__(self, folder: Path) -> None:
        state = make_sealed_state(folder / "device", batches_per_checkpoint=2, checkpoints_per_boot=2)
        self.roots = state.roots()
        self.genuine = export(state)

    def __call__(self, data: bytes) -> None:
        try:
            bundle = decode_bundle(data)
        except BundleFormatError:
            return
        if bundle.encode() != data:
            raise AssertionError("a decoded bundle encodes to other bytes")
        try:
            report = verify_bundle(data, self.roots)
        except NotABundle:
            raise AssertionError("decoded as a bundle, refused as no bundle") from None
        if report.valid and data != self.genuine:
            raise AssertionError("bytes other than the genuine bundle verify")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="fuzz-bundle-") as folder:
        target = Target(Path(folder))
        argv = list(sys.argv)
        if not any(Path(arg).is_dir() for arg in argv[1:]):
            corpus = Path(folder, "corpus")
            corpus.mkdir()
            (corpus / "genuine.cbor").write_bytes(target.genuine)
            argv.append(str(corpus))
        atheris.Setup(argv, target)
        atheris.Fuzz()


if __name__ == "__main__":
    main()
