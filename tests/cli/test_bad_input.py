"""Bad input to `edgeseal` never gives a traceback: one clear message that names the file
or option at fault, and the exit code of DESIGN 4 (2 bad usage or unusable input,
1 a finding)."""

from __future__ import annotations

import json
import os
import random
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

import cbor2
import pytest
from fixtures import SealedState, export, make_sealed_state

from agent.buffer.store import Buffer
from agent.cli import main


@dataclass(frozen=True)
class Result:
    code: int | str | None
    out: str
    err: str

    @property
    def output(self) -> str:
        return self.out + self.err


@pytest.fixture
def edgeseal(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Run `edgeseal` in-process from an empty directory. An exception escaping main()
    is what a user would see as a traceback, so it is returned as one."""
    monkeypatch.chdir(tmp_path)

    def run(*argv: str | Path) -> Result:
        capsys.readouterr()
        try:
            code: int | str | None = main([str(a) for a in argv])
        except SystemExit as exc:
            code = exc.code
        except Exception:  # what a user would see as a traceback
            code = "uncaught exception"
            print(traceback.format_exc(), file=sys.stderr)
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


def assert_refused(result: Result, code: int, *names: str) -> None:
    """Exit `code`, no traceback, and a message naming each of `names`."""
    assert "Traceback" not in result.output, result.output
    assert result.code == code, f"exit {result.code!r}, expected {code}:\n{result.output}"
    for name in names:
        assert name in result.err, f"{name!r} not named in: {result.err!r}"


@pytest.fixture(scope="module")
def device(tmp_path_factory: pytest.TempPathFactory) -> SealedState:
    return make_sealed_state(tmp_path_factory.mktemp("device"), batches_per_checkpoint=1, checkpoints_per_boot=2)


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_sealed_state(tmp_path_factory.mktemp("other"), batches_per_checkpoint=1, checkpoints_per_boot=1).ca_path


@pytest.fixture(scope="module")
def bundle(device: SealedState) -> bytes:
    return export(device)


# -- verify -------------------------------------------------------------------------


def verify(edgeseal, file: str | Path, ca: str | Path) -> Result:
    return edgeseal("verify", file, "--ca", ca, "--jobs", "1")


def test_verify_missing_file(edgeseal, device: SealedState) -> None:
    assert_refused(verify(edgeseal, "missing.cbor", device.ca_path), 2, "missing.cbor", "cannot read")


def test_verify_directory_instead_of_file(edgeseal, device: SealedState) -> None:
    Path("bundles").mkdir()
    assert_refused(verify(edgeseal, "bundles", device.ca_path), 2, "bundles")


def garbage() -> dict[str, bytes]:
    rng = random.Random(7)
    return {
        "empty": b"",
        "one zero byte": b"\x00",
        "break byte": b"\xff",
        "random bytes": rng.randbytes(300),
        "more random bytes": rng.randbytes(3000),
        "text": b"this is not a bundle\n",
        "json": json.dumps({"v": 1, "certs": [], "batches": []}).encode(),
        "cbor map without v": cbor2.dumps({"certs": [], "batches": []}),
        "cbor map of version 2": cbor2.dumps({"v": 2}),
        "cbor array": cbor2.dumps([1, 2, 3]),
        "cbor text": cbor2.dumps("v"),
        "cbor indefinite map": b"\xbf\x61v\x01\xff",
    }


@pytest.mark.parametrize("name", garbage())
def test_verify_input_that_is_not_a_bundle(edgeseal, device: SealedState, name: str) -> None:
    Path("input.cbor").write_bytes(garbage()[name])
    assert_refused(verify(edgeseal, "input.cbor", device.ca_path), 2, "input.cbor", "unusable input")


@pytest.mark.parametrize("keep", [1, 2, 9, 100, 0.5, -100, -1])
def test_verify_truncated_bundle(edgeseal, device: SealedState, bundle: bytes, keep: float) -> None:
    length = int(len(bundle) * keep) if isinstance(keep, float) else keep % len(bundle)
    Path("truncated.cbor").write_bytes(bundle[:length])
    assert_refused(verify(edgeseal, "truncated.cbor", device.ca_path), 2, "truncated.cbor", "unusable input")


def test_verify_bundle_with_trailing_bytes(edgeseal, device: SealedState, bundle: bytes) -> None:
    Path("long.cbor").write_bytes(bundle + b"\x00")
    assert_refused(verify(edgeseal, "long.cbor", device.ca_path), 2, "long.cbor", "unusable input")


def test_verify_missing_ca_file(edgeseal, bundle: bytes) -> None:
    Path("bundle.cbor").write_bytes(bundle)
    assert_refused(verify(edgeseal, "bundle.cbor", "no-such-ca.pem"), 2, "no-such-ca.pem", "cannot read")


CA_FILES = {
    "empty": "",
    "text": "trust me\n",
    "bad base64": "-----BEGIN CERTIFICATE-----\nAAAA!!!!\n-----END CERTIFICATE-----\n",
    "truncated PEM": "-----BEGIN CERTIFICATE-----\nMIIB\n",
}


@pytest.mark.parametrize("name", CA_FILES)
def test_verify_garbage_ca_file(edgeseal, bundle: bytes, name: str) -> None:
    Path("bundle.cbor").write_bytes(bundle)
    Path("ca.pem").write_text(CA_FILES[name])
    assert_refused(verify(edgeseal, "bundle.cbor", "ca.pem"), 2, "ca.pem", "not a PEM certificate file")


def test_verify_private_key_given_as_ca(edgeseal, device: SealedState, bundle: bytes) -> None:
    Path("bundle.cbor").write_bytes(bundle)
    assert_refused(
        verify(edgeseal, "bundle.cbor", device.key_path), 2, str(device.key_path), "not a PEM certificate file"
    )


def test_verify_ca_directory(edgeseal, bundle: bytes) -> None:
    Path("bundle.cbor").write_bytes(bundle)
    Path("roots").mkdir()
    assert_refused(verify(edgeseal, "bundle.cbor", "roots"), 2, "roots", "cannot read")


def test_verify_with_the_right_ca_passes(edgeseal, device: SealedState, bundle: bytes) -> None:
    """The baseline for the cases around it: this bundle and CA do verify."""
    Path("bundle.cbor").write_bytes(bundle)
    result = verify(edgeseal, "bundle.cbor", device.ca_path)
    assert result.code == 0 and "bundle.cbor: VALID" in result.out, result.output


def test_verify_with_the_wrong_ca(edgeseal, bundle: bytes, other_ca: Path) -> None:
    Path("bundle.cbor").write_bytes(bundle)
    result = verify(edgeseal, "bundle.cbor", other_ca)
    assert "Traceback" not in result.output
    assert result.code == 1, result.output
    assert "bundle.cbor: INVALID" in result.out and "FINDING     certs: no trusted root issued" in result.out, (
        result.out
    )


def test_verify_with_the_wrong_ca_as_json(edgeseal, bundle: bytes, other_ca: Path) -> None:
    Path("bundle.cbor").write_bytes(bundle)
    result = edgeseal("verify", "bundle.cbor", "--ca", other_ca, "--json", "--jobs", "1")
    assert result.code == 1, result.output
    report = json.loads(result.out)
    assert report["valid"] is False and [f["where"] for f in report["findings"]] == ["certs"]


def test_verify_with_the_device_chain_as_ca(edgeseal, device: SealedState, bundle: bytes) -> None:
    """The device certificate and its issuing CA are not the root: nothing chains to them."""
    Path("bundle.cbor").write_bytes(bundle)
    result = verify(edgeseal, "bundle.cbor", device.chain_path)
    assert result.code == 1 and "FINDING     certs:" in result.out, result.output


# -- export ---------------------------------------------------------------------------


def test_export_nonexistent_state_dir(edgeseal) -> None:
    result = edgeseal("export", "--state-dir", "no-state", "-o", "out.cbor")
    assert_refused(result, 2, "no-state", "no edgeseal state")
    assert not Path("out.cbor").exists()


def test_export_state_dir_that_is_a_file(edgeseal) -> None:
    Path("state").write_text("not a directory")
    assert_refused(edgeseal("export", "--state-dir", "state", "-o", "out.cbor"), 2, "state")


def test_export_state_dir_with_a_corrupt_database(edgeseal) -> None:
    Path("state").mkdir()
    Path("state", "buffer.db").write_bytes(b"this is not SQLite " * 100)
    assert_refused(edgeseal("export", "--state-dir", "state", "-o", "out.cbor"), 2, "buffer.db", "cannot open")


def test_export_before_any_checkpoint(edgeseal, tmp_path: Path) -> None:
    state = make_sealed_state(tmp_path / "young", checkpointed=False)
    result = edgeseal("export", "--state-dir", state.state_dir, "-o", "out.cbor")
    assert_refused(result, 1, "no checkpoint yet")
    assert not Path("out.cbor").exists()


def test_export_of_an_empty_state_dir(edgeseal) -> None:
    Buffer.open("state").close()
    assert_refused(edgeseal("export", "--state-dir", "state", "-o", "out.cbor"), 1, "no checkpoint yet")


def test_export_tag_that_matches_nothing(edgeseal, device: SealedState) -> None:
    result = edgeseal("export", "--state-dir", device.state_dir, "-o", "out.cbor", "--tag", "no.such.tag")
    assert_refused(result, 1, "no sealed reading matches")


BAD_TIMES = ["yesterday", "", "1e9", "-5", "12:00", "2024-13-01T00:00:00Z", "2024-01-01T00:00:00+25:00", "²"]


@pytest.mark.parametrize("option", ["--since", "--until"])
@pytest.mark.parametrize("value", BAD_TIMES)
def test_export_bad_time(edgeseal, device: SealedState, option: str, value: str) -> None:
    result = edgeseal("export", "--state-dir", device.state_dir, "-o", "out.cbor", f"{option}={value}")
    assert_refused(result, 2, option)
    assert not Path("out.cbor").exists()


@pytest.mark.parametrize("option", ["--since", "--until"])
def test_export_time_without_time_zone(edgeseal, device: SealedState, option: str) -> None:
    result = edgeseal("export", "--state-dir", device.state_dir, "-o", "out.cbor", option, "2024-01-01T00:00:00")
    assert_refused(result, 2, option, "time zone")


def test_export_output_in_a_missing_directory(edgeseal, device: SealedState) -> None:
    result = edgeseal("export", "--state-dir", device.state_dir, "-o", Path("nowhere", "out.cbor"))
    assert_refused(result, 2, str(Path("nowhere", "out.cbor")), "cannot write")


@pytest.mark.parametrize("output", ["existing-dir", "."])
def test_export_output_that_is_a_directory(edgeseal, device: SealedState, output: str) -> None:
    Path("existing-dir").mkdir()
    before = sorted(os.listdir())
    result = edgeseal("export", "--state-dir", device.state_dir, "-o", output)
    assert_refused(result, 2, output)
    assert sorted(os.listdir()) == before, "a refused export left a file behind"


# -- check-config ---------------------------------------------------------------------


def test_check_config_nonexistent_file(edgeseal) -> None:
    assert_refused(edgeseal("check-config", "edgeseal.yaml"), 2, "edgeseal.yaml:1:1: ", "no file")


def test_check_config_directory(edgeseal) -> None:
    Path("conf.d").mkdir()
    assert_refused(edgeseal("check-config", "conf.d"), 2, "conf.d:1:1: ")


MALFORMED_YAML = {
    "unclosed flow list": ("device:\n  id: [gw-1, gw-2\nidentity: {}\n", "3:9"),
    "tab indentation": ("device:\n\tid: gw-1\n", "2:1"),
    "unclosed quote": ('device:\n  id: "gw-1\n', "3:1"),
    "bad indentation": ("device:\n  id: gw-1\n model: x\n", "3:2"),
}


@pytest.mark.parametrize("case", MALFORMED_YAML)
def test_check_config_malformed_yaml(edgeseal, case: str) -> None:
    text, position = MALFORMED_YAML[case]
    Path("edgeseal.yaml").write_text(text)
    result = edgeseal("check-config", "edgeseal.yaml")
    assert_refused(result, 2, f"edgeseal.yaml:{position}: ")


def test_check_config_not_utf8(edgeseal) -> None:
    Path("edgeseal.yaml").write_bytes(b"device:\n  id: \xff\xfe\n")
    assert_refused(edgeseal("check-config", "edgeseal.yaml"), 2, "edgeseal.yaml:", "UTF-8")


# -- usage errors (argparse) ----------------------------------------------------------


USAGE_ERRORS = {
    "no command": ([], "COMMAND"),
    "unknown command": (["frobnicate"], "frobnicate"),
    "unknown option": (["verify", "b.cbor", "--ca", "ca.pem", "--frobnicate"], "--frobnicate"),
    "verify without --ca": (["verify", "b.cbor"], "--ca"),
    "verify without a file": (["verify", "--ca", "ca.pem"], "file"),
    "verify --jobs not a number": (["verify", "b.cbor", "--ca", "ca.pem", "--jobs", "many"], "--jobs"),
    "export without --state-dir": (["export", "-o", "out.cbor"], "--state-dir"),
    "export without -o": (["export", "--state-dir", "state"], "-o/--output"),
    "run without --config": (["run"], "--config"),
    "check-config without a path": (["check-config"], "path"),
    "demo --seconds not a number": (["demo", "--seconds", "soon"], "--seconds"),
}


@pytest.mark.parametrize("case", USAGE_ERRORS)
def test_usage_error(edgeseal, case: str) -> None:
    argv, named = USAGE_ERRORS[case]
    result = edgeseal(*argv)
    assert_refused(result, 2, "usage: edgeseal", named)
    assert not os.listdir(), "a usage error created files"


def test_special_files_are_refused_not_read_or_replaced(edgeseal, device: SealedState, tmp_path: Path) -> None:
    assert_refused(verify(edgeseal, "/dev/zero", device.ca_path), 2, "/dev/zero", "not a regular file")
    result = edgeseal("export", "--state-dir", str(device.state_dir), "-o", "/dev/null")
    assert result.code == 2 and "not a regular file" in result.err and Path("/dev/null").is_char_device()
    inside = device.state_dir / "bundle.cbor"
    result = edgeseal("export", "--state-dir", str(device.state_dir), "-o", str(inside))
    assert result.code == 2 and "outside the state directory" in result.err and not inside.exists()


def test_demo_refuses_nonsense_durations_and_directories(edgeseal, tmp_path: Path) -> None:
    for seconds in ("nan", "-1", "0", "inf"):
        assert edgeseal("demo", "--seconds", seconds).code == 2
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert_refused(edgeseal("demo", "--seconds", "1", "--dir", str(blocker)), 2, "a-file", "demo directory")
