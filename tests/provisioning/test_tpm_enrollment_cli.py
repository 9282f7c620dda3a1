"""The factory's TPM flow through edgeseal-provision, in-process, against a real software
TPM (no mocks): every step, the one-command `enroll`, and each way it must refuse."""

from __future__ import annotations

import asyncio
import json
import stat
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.config.model import DEFAULT_HANDLE
from agent.keys.tpm.signer import TpmSigner
from agent.keys.tpm.tcti import parse_tcti
from provisioning import evidence
from provisioning.swtpm import SoftwareTpm, clone

DEVICE = "GW-0001"


@dataclass
class Station:
    """A factory station: a production CA, the device's TPM, and the files of one enrollment."""

    run: object
    tcti: str
    dir: Path
    vendor: Path

    @property
    def ca(self) -> Path:
        return self.dir / "ca"

    def file(self, name: str) -> Path:
        return self.dir / name

    def tpm(self, *argv: object):
        return self.run(*argv, "--tcti", self.tcti)

    def keygen(self, device_id: str = DEVICE, *more: str):
        return self.tpm("tpm", "keygen", "--device-id", device_id, *more)

    def csr(self, name: str = "device.csr", model: str = "EG-200"):
        return self.tpm("csr", "--tpm", "--device-id", DEVICE, "--model", model, "-o", self.file(name))

    def attest(self, csr: str = "device.csr", output: str = "device.attest"):
        return self.tpm("tpm", "attest", "--csr", self.file(csr), "-o", self.file(output))

    def challenge(self, csr: str = "device.csr", attest: str = "device.attest", vendor: Path | None = None):
        return self.run(
            "ca", "challenge", "--dir", self.ca, "--csr", self.file(csr), "--attest", self.file(attest),
            "--tpm-ca", vendor or self.vendor, "-o", self.file("device.challenge"),
        )  # fmt: skip

    def activate(self, attest: str = "device.attest", tcti: str | None = None):
        return self.run(
            "tpm", "activate", "--attest", self.file(attest), "--challenge", self.file("device.challenge"),
            "-o", self.file("device.response"), "--tcti", tcti or self.tcti,
        )  # fmt: skip

    def issue(self, csr: str = "device.csr", attest: str = "device.attest", response: str = "device.response"):
        return self.run(
            "ca", "issue", "--dir", self.ca, "--csr", self.file(csr), "--attest", self.file(attest),
            "--response", self.file(response), "--tpm-ca", self.vendor,
            "-o", self.file("device.pem"), "--chain-out", self.file("chain.pem"),
        )  # fmt: skip

    def install(self, chain: str = "chain.pem", *more: object):
        return self.tpm("install", "--chain", self.file(chain), "--dest", self.file("dest"), *more)

    def log(self) -> list[dict]:
        path = self.ca / "issued.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def station(swtpm: SoftwareTpm, run, tmp_path: Path, vendor_bundle: Path) -> Station:
    s = Station(run, swtpm.tcti, tmp_path, vendor_bundle)
    assert run("ca", "init", "--dir", s.ca, "--org", "Test Factory").code == 0
    return s


def _ok(result):
    assert result.code == 0, result.err
    return result


def _through_activate(s: Station) -> None:
    for step in (s.keygen, s.csr, s.attest, s.challenge, s.activate):
        _ok(step())


def test_factory_flow_step_by_step(station: Station) -> None:
    s = station
    started = time.monotonic()
    kid = _ok(s.keygen()).out.split("kid:")[1].split()[0]
    _through_activate(s)
    _ok(s.issue())
    installed = _ok(s.install("chain.pem", "--ca", s.ca / "root.pem"))
    report = json.loads(_ok(s.run("inspect", s.file("dest/device-chain.pem"), "--ca", s.ca / "root.pem", "--json")).out)
    elapsed = time.monotonic() - started

    assert [c["device_id"] for c in report["certificates"]] == [DEVICE, None]
    assert report["certificates"][0]["kid"] == kid and report["chain_valid"] is True
    assert "signer: tpm" in installed.out and f"handle: 0x{DEFAULT_HANDLE:08x}" in installed.out
    assert f'tcti: "{s.tcti}"' in installed.out
    assert stat.S_IMODE(s.file("device.response").stat().st_mode) == 0o600
    assert stat.S_IMODE(s.file("dest/device-chain.pem").stat().st_mode) == 0o644
    (entry,) = s.log()
    assert entry["device_id"] == DEVICE and entry["kid"] == kid and entry["evidence"] == "tpm"
    assert entry["ek_certificate"]["issuer"] == "CN=swtpm-localca" and len(entry["ak_name"]) == 68
    assert elapsed < 10, f"the CLI flow took {elapsed:.1f} s on swtpm"


def test_installed_chain_is_what_the_agent_signs_with(station: Station) -> None:
    _through_activate(station)
    _ok(station.issue())
    _ok(station.install())

    async def open_and_close() -> None:
        signer = await TpmSigner.open(parse_tcti(station.tcti), DEFAULT_HANDLE, station.file("dest/device-chain.pem"))
        await signer.close()  # open() ran the self-test: the TPM's signature verifies with the chain

    asyncio.run(open_and_close())


def test_enroll_provisions_a_box_in_one_command(station: Station) -> None:
    s = station
    argv = ["enroll", "--device-id", DEVICE, "--model", "EG-200", "--ca-dir", s.ca, "--tpm-ca", s.vendor]
    argv += ["--dest", s.file("dest"), "--work-dir", s.file("work")]
    result = _ok(s.tpm(*argv))
    steps = [line.split()[0] for line in result.out.splitlines()[:7]]
    assert steps == ["keygen", "csr", "attest", "challenge", "activate", "issue", "install"]
    assert "signer: tpm" in result.out
    assert {p.name for p in s.file("work").iterdir()} >= {"device.csr", "device.attest", "device.response"}
    chain = s.file("dest/device-chain.pem").read_bytes()
    _ok(s.run("inspect", s.file("dest/device-chain.pem"), "--ca", s.ca / "root.pem"))

    again = _ok(s.tpm(*argv))
    assert "nothing to do" in again.out and "kept the existing device key" in again.out
    assert len(s.log()) == 1 and s.file("dest/device-chain.pem").read_bytes() == chain

    _ok(s.tpm(*argv, "--force"))
    assert len(s.log()) == 2 and s.file("dest/device-chain.pem").read_bytes() != chain


def test_keygen_is_idempotent(station: Station) -> None:
    first, second = _ok(station.keygen()), _ok(station.keygen())
    assert "key:    created" in first.out and "already there" in second.out
    assert first.out.split("kid:")[1].split()[0] == second.out.split("kid:")[1].split()[0]


def test_keygen_refuses_to_replace_another_key_without_force(station: Station) -> None:
    first = _ok(station.keygen())
    refused = station.keygen("GW-0002")
    assert refused.code == 1 and "already holds another key" in refused.err and "--force" in refused.err
    replaced = _ok(station.keygen("GW-0002", "--force"))
    assert "created" in replaced.out and replaced.out.split("kid:")[1] != first.out.split("kid:")[1]


def test_production_ca_refuses_a_software_key(station: Station) -> None:
    s = station
    _ok(s.run("key", "create", "--software", "-o", s.file("soft.pem")))
    _ok(s.run("csr", "--key", s.file("soft.pem"), "--device-id", DEVICE, "-o", s.file("soft.csr")))
    result = s.run("ca", "issue", "--dir", s.ca, "--csr", s.file("soft.csr"), "-o", s.file("soft-cert.pem"))
    assert result.code == 1 and "is a production CA" in result.err and "--development" in result.err
    assert not s.file("soft-cert.pem").exists() and s.log() == []


def test_development_ca_issues_for_a_software_key_and_says_so(station: Station) -> None:
    s = station
    _ok(s.run("ca", "init", "--dir", s.file("dev-ca"), "--org", "Lab", "--development"))
    _ok(s.run("key", "create", "--software", "-o", s.file("soft.pem")))
    _ok(s.run("csr", "--key", s.file("soft.pem"), "--device-id", DEVICE, "-o", s.file("soft.csr")))
    result = _ok(s.run("ca", "issue", "--dir", s.file("dev-ca"), "--csr", s.file("soft.csr"), "-o", s.file("c.pem")))
    assert "no TPM evidence (development CA)" in result.out
    log = json.loads((s.file("dev-ca") / "issued.jsonl").read_text())
    assert log["evidence"] == "none (development CA)" and "ak_name" not in log


def test_evidence_with_the_csr_of_another_key_is_refused(station: Station) -> None:
    s = station
    _through_activate(s)
    _ok(s.run("key", "create", "--software", "-o", s.file("soft.pem")))
    _ok(s.run("csr", "--key", s.file("soft.pem"), "--device-id", DEVICE, "-o", s.file("soft.csr")))
    result = s.challenge(csr="soft.csr")
    assert result.code == 1 and "the CSR is not for the TPM key in the evidence" in result.err
    attest = s.attest(csr="soft.csr", output="soft.attest")
    assert attest.code == 1 and "the CSR is not for the key at TPM handle" in attest.err


def test_tampered_attest_is_refused(station: Station) -> None:
    s = station
    for step in (s.keygen, s.csr, s.attest):
        _ok(step())
    found = evidence.decode_evidence(s.file("device.attest").read_bytes())
    altered = found.attest[:-1] + bytes([found.attest[-1] ^ 1])
    s.file("device.attest").write_bytes(evidence.encode(evidence.Evidence(**{**vars(found), "attest": altered})))
    result = s.challenge()
    assert result.code == 1 and "signature over attest does not verify" in result.err


def test_malformed_evidence_is_unusable_input(station: Station) -> None:
    station.file("device.attest").write_bytes(b"not cbor at all")
    _ok(station.keygen())
    _ok(station.csr())
    result = station.challenge()
    assert result.code == 2 and "not evidence" in result.err and "Traceback" not in result.err


def test_ek_certificate_from_an_untrusted_vendor_is_refused(station: Station, other_vendor_tpm, tmp_path) -> None:
    s = station
    for step in (s.keygen, s.csr, s.attest):
        _ok(step())
    other = tmp_path / "other-vendor.pem"
    other.write_bytes(other_vendor_tpm.vendor_root_cert.read_bytes() + other_vendor_tpm.ek_issuer_cert.read_bytes())
    result = s.challenge(vendor=other)
    assert result.code == 1
    assert "the EK certificate was not issued by a trusted TPM vendor CA (issuer 'CN=swtpm-localca')" in result.err


def test_activation_on_another_tpm_fails(station: Station, other_vendor_tpm, tmp_path) -> None:
    _ok(station.keygen())
    _ok(station.csr())
    _ok(station.attest())
    _ok(station.challenge())
    with SoftwareTpm(clone(other_vendor_tpm, tmp_path / "other")) as other:
        result = station.activate(tcti=other.tcti)
    assert result.code == 1 and "not the one in the evidence" in result.err
    assert not station.file("device.response").exists()


def test_a_response_for_another_csr_is_refused(station: Station) -> None:
    s = station
    _through_activate(s)  # device.csr -> device.response
    _ok(s.csr("other.csr", model="EG-300"))
    _ok(s.attest(csr="other.csr", output="other.attest"))
    result = s.issue(csr="other.csr", attest="other.attest")
    assert result.code == 1 and "the response does not answer this CA's challenge" in result.err
    assert s.log() == []


def test_partial_tpm_proof_is_bad_usage(station: Station) -> None:
    s = station
    result = s.run("ca", "issue", "--dir", s.ca, "--csr", s.file("x.csr"), "--attest", s.file("a"), "-o", s.file("c"))
    assert result.code == 2 and "all of --attest, --response and --tpm-ca" in result.err


def test_install_refuses_a_certificate_for_another_key(station: Station) -> None:
    s = station
    _ok(s.keygen())
    _ok(s.run("ca", "init", "--dir", s.file("dev-ca"), "--org", "Lab", "--development"))
    _ok(s.run("key", "create", "--software", "-o", s.file("soft.pem")))
    _ok(s.run("csr", "--key", s.file("soft.pem"), "--device-id", DEVICE, "-o", s.file("soft.csr")))
    issue = ("ca", "issue", "--dir", s.file("dev-ca"), "--csr", s.file("soft.csr"), "-o", s.file("c.pem"))
    _ok(s.run(*issue, "--chain-out", s.file("soft-chain.pem")))
    result = s.install("soft-chain.pem")
    assert result.code == 1 and "the certificate is for another key" in result.err
    assert not s.file("dest/device-chain.pem").exists()


def test_install_is_idempotent_and_keeps_another_chain_without_force(station: Station) -> None:
    s = station
    _through_activate(s)
    _ok(s.issue())
    _ok(s.install())
    assert "already holds this chain (unchanged)" in _ok(s.install()).out
    s.file("chain.pem").rename(s.file("first-chain.pem"))
    _ok(s.issue())  # a second certificate for the same key: another chain
    refused = s.install()
    assert refused.code == 1 and "holds another certificate chain" in refused.err
    _ok(s.install("chain.pem", "--force"))
    assert s.file("dest/device-chain.pem").read_bytes() == s.file("chain.pem").read_bytes()


def test_install_checks_the_chain_against_the_root(station: Station) -> None:
    s = station
    _through_activate(s)
    _ok(s.issue())
    _ok(s.run("ca", "init", "--dir", s.file("other-ca"), "--org", "Other"))
    result = s.install("chain.pem", "--ca", s.file("other-ca") / "root.pem")
    assert result.code == 1 and "does not lead to the root given" in result.err


def test_an_unreachable_tpm_is_a_clear_error(station: Station, swtpm: SoftwareTpm) -> None:
    swtpm.stop()
    for result in (station.keygen(), station.csr(), station.tpm("inspect", "--tpm")):
        assert result.code == 2 and "cannot reach the TPM" in result.err
        assert "Traceback" not in result.err


def test_an_empty_handle_is_a_clear_error(station: Station) -> None:
    for result in (station.csr(), station.tpm("inspect", "--tpm"), station.install("ca/root.pem")):
        assert result.code == 2
        assert f"TPM handle 0x{DEFAULT_HANDLE:08x} is empty" in result.err and "tpm keygen" in result.err


def test_inspect_tpm_shows_a_non_exportable_key(station: Station) -> None:
    kid = _ok(station.keygen()).out.split("kid:")[1].split()[0]
    report = json.loads(_ok(station.tpm("inspect", "--tpm", "--json")).out)
    assert report["handle"] == f"0x{DEFAULT_HANDLE:08x}" and report["kid"] == kid
    assert {"fixedtpm", "fixedparent", "sensitivedataorigin", "sign"} <= set(report["attributes"])
    assert "decrypt" not in report["attributes"] and report["non_exportable"] is True
    assert report["public_key"].startswith("-----BEGIN PUBLIC KEY-----") and report["problems"] == []
    text = _ok(station.tpm("inspect", "--tpm")).out
    assert f"key id:     {kid}" in text and "exportable: no" in text


def test_csr_refuses_a_key_made_for_another_device_id(station: Station) -> None:
    _ok(station.keygen("GW-0002"))
    result = station.csr()  # for GW-0001
    assert result.code == 1 and "was not made for device id GW-0001" in result.err
    assert not station.file("device.csr").exists()


def test_enroll_refuses_a_box_holding_another_chain_before_issuing(station: Station) -> None:
    s = station
    _ok(s.run("ca", "init", "--dir", s.file("other-ca"), "--org", "Other"))
    argv = ["enroll", "--device-id", DEVICE, "--tpm-ca", s.vendor, "--dest", s.file("dest")]
    _ok(s.tpm(*argv, "--ca-dir", s.file("other-ca")))
    refused = s.tpm(*argv, "--ca-dir", s.ca)
    assert refused.code == 1 and "holds a chain for another key or CA" in refused.err
    assert s.log() == []
    _ok(s.tpm(*argv, "--ca-dir", s.ca, "--force"))
    _ok(s.run("inspect", s.file("dest/device-chain.pem"), "--ca", s.ca / "root.pem"))
