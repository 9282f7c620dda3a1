"""DESIGN 5: "Any change to any byte of a batch, seal, checkpoint or bundle is detected
by `verify`".

Two families of tampering:
- bytes: every byte of a full and of a selective bundle has one bit flipped, and a dense
  sample of bytes is replaced by another value. Verification must never pass: either
  the input is no longer a CBOR bundle (`NotABundle`, exit 2) or the report is invalid
  (exit 1). Anything else (a pass, or an exception that would reach the user as a
  traceback) fails the test, with the byte's place in the bundle.
- structure: the bundle is decoded, changed as a structure (readings, batches,
  checkpoints, signatures, certificates) and encoded again, so it stays well-formed.
  Each must give exit 1 and a finding at the place that was changed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from fixtures import SealedState, export, make_sealed_state, mutate_bundle, replace

from agent.cli import main
from agent.export import Selection
from agent.trust import cose, merkle
from agent.trust.bundle import Batch, Bundle, Disclosed, NotABundle, SelectiveBatch, decode_bundle
from agent.trust.leaf import decode_leaf, encode_leaf, leaf_hashes
from agent.trust.payloads import SEAL_CONTENT_TYPE, SealPayload, open_seal
from agent.trust.verify import verify_bundle

# Flipped bits inside certificates make cryptography warn about what it parsed.
pytestmark = pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning")

DISCLOSED_TAG = "press.pressure"
CRASH = "crash"  # verify_bundle raised something other than NotABundle
PASSED = "passed"  # the tampered bundle verified

Change = Callable[[Bundle], Bundle]
Verdict = tuple[int | str, list[tuple[str, str]]]


@pytest.fixture(scope="module")
def device(tmp_path_factory: pytest.TempPathFactory) -> SealedState:
    """Small on purpose: four batches, two checkpoints, a bundle of about 5 KB."""
    return make_sealed_state(tmp_path_factory.mktemp("device"), batches_per_checkpoint=2, checkpoints_per_boot=2)


@pytest.fixture(scope="module")
def bundles(device: SealedState) -> dict[str, bytes]:
    return {"full": export(device), "selective": export(device, Selection(frozenset({DISCLOSED_TAG})))}


# -- byte-level tampering -----------------------------------------------------------


def classify(data: bytes, roots: list) -> int | str:
    """The exit code `edgeseal verify` owes for `data`: 2 unusable, 1 invalid; or why not."""
    try:
        report = verify_bundle(data, roots)
    except NotABundle:
        return 2
    except Exception as exc:  # exactly what must not happen
        return f"{CRASH}: {type(exc).__name__}: {exc}"
    return 1 if not report.valid else PASSED


def flip(data: bytes, pos: int) -> bytes:
    """One bit of byte `pos` flipped; which bit moves with the position."""
    out = bytearray(data)
    out[pos] ^= 1 << (pos % 8)
    return bytes(out)


def overwrite(data: bytes, pos: int, value: int) -> bytes:
    out = bytearray(data)
    out[pos] = value
    return bytes(out)


def regions(data: bytes) -> list[tuple[int, int, str]]:
    """(start, end, name) of the certificates, seals and checkpoints inside `data`."""
    bundle = decode_bundle(data)
    named = [(c, f"certs[{i}]") for i, c in enumerate(bundle.certs)]
    named += [(b.seal, f"batches[{i}].seal") for i, b in enumerate(bundle.batches)]
    named += [(c, f"checkpoints[{i}]") for i, c in enumerate(bundle.checkpoints)]
    return [(data.find(part), data.find(part) + len(part), name) for part, name in named]


def locate(spans: list[tuple[int, int, str]], pos: int) -> str:
    inside = [(end - start, name, pos - start) for start, end, name in spans if start <= pos < end]
    if not inside:
        return f"byte {pos} (bundle structure, batch contents or proofs)"
    _, name, offset = min(inside)
    return f"byte {pos} ({name}, offset {offset})"


def tally(kind: str, what: str, data: bytes, outcomes: dict[int, int | str]) -> Counter[int | str]:
    counts = Counter(o if isinstance(o, int) else o.split(":")[0] for o in outcomes.values())
    print(
        f"reliability: tamper: {kind} bundle ({len(data)} bytes), {what}: {counts[1]} x exit 1,"
        f" {counts[2]} x exit 2, "
        f"{counts[PASSED]} passed, {counts[CRASH]} crashed"
    )
    return counts


def assert_all_detected(data: bytes, outcomes: dict[int, int | str], counts: Counter[int | str]) -> None:
    spans = regions(data)
    wrong = [f"{locate(spans, pos)}: {o}" for pos, o in outcomes.items() if o not in (1, 2)]
    if wrong:
        more = f"\n  ... and {len(wrong) - 20} more" if len(wrong) > 20 else ""
        shown = "\n  ".join(wrong[:20])
        pytest.fail(f"{len(wrong)} of {len(outcomes)} mutations not detected cleanly:\n  {shown}{more}")
    # Most bytes sit inside byte strings (certificates, seals, readings), so most
    # changes leave a well-formed bundle whose contents no longer verify.
    assert counts[1] > 0.9 * (counts[1] + counts[2]), counts


def test_untouched_bundles_verify(device: SealedState, bundles: dict[str, bytes]) -> None:
    full = verify_bundle(bundles["full"], device.roots())
    selective = verify_bundle(bundles["selective"], device.roots())
    assert full.valid and full.readings == device.readings and full.batches == device.batches, full.findings
    assert selective.valid and selective.tags == {DISCLOSED_TAG: device.batches}, selective.findings


@pytest.mark.parametrize("kind", ["full", "selective"])
def test_every_flipped_bit_is_detected(kind: str, device: SealedState, bundles: dict[str, bytes]) -> None:
    data, roots = bundles[kind], device.roots()
    outcomes = {pos: classify(flip(data, pos), roots) for pos in range(len(data))}
    assert_all_detected(data, outcomes, tally(kind, "one bit flipped per byte", data, outcomes))


@pytest.mark.parametrize("kind", ["full", "selective"])
def test_every_replaced_byte_is_detected(kind: str, device: SealedState, bundles: dict[str, bytes]) -> None:
    data, roots, rng = bundles[kind], device.roots(), random.Random(f"replace-{kind}")
    outcomes = {}
    for pos in range(0, len(data), 3):
        value = rng.choice([v for v in range(256) if v != data[pos]])
        outcomes[pos] = classify(overwrite(data, pos, value), roots)
    assert_all_detected(data, outcomes, tally(kind, "byte replaced, every third byte", data, outcomes))


def cli_sample(data: bytes, roots: list, size: int = 15) -> dict[int, int | str]:
    """Mutated positions for the real CLI: exit-2 cases, crashes and exit-1 cases."""
    rng = random.Random(len(data))
    outcomes = {pos: classify(flip(data, pos), roots) for pos in sorted(rng.sample(range(len(data)), 300))}
    by_kind: dict[str, list[int]] = {"2": [], CRASH: [], "1": []}
    for pos, o in outcomes.items():
        by_kind.get(str(o).split(":")[0], by_kind["1"]).append(pos)
    picked = by_kind["2"][:5] + by_kind[CRASH][:5]
    picked += by_kind["1"][: size - len(picked)]
    return {pos: outcomes[pos] for pos in sorted(picked)}


@pytest.mark.parametrize("kind", ["full", "selective"])
def test_cli_exit_codes_match_for_mutated_files(
    kind: str, device: SealedState, bundles: dict[str, bytes], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = bundles[kind]
    sample = cli_sample(data, device.roots())
    assert 2 in sample.values() and 1 in sample.values(), sample
    wrong = []
    for pos, expected in sample.items():
        path = tmp_path / f"{kind}-{pos}.cbor"
        path.write_bytes(flip(data, pos))
        code, out, err = run_verify(path, device.ca_path, capsys)
        want = 2 if expected == 2 else 1  # a broken certificate in a well-formed bundle is a finding
        if code != want or "Traceback" in out + err:
            wrong.append(f"{locate(regions(data), pos)}: exit {code}, expected {want}; {(err or out).strip()[-300:]}")
    if wrong:
        pytest.fail(f"{len(wrong)} of {len(sample)} mutated files got the wrong answer:\n" + "\n".join(wrong))


def test_certificate_signature_re_encoded_is_detected(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """DER lets a BIT STRING declare trailing unused bits when they are zero. A
    certificate whose signature ends in a 0 bit can so be re-encoded (one byte changed)
    and cryptography reads the same signature: the bundle's bytes changed, and `verify`
    must still notice. Needs a certificate whose signature's last bit is 0 (one in two),
    so new identities are made until one has it."""
    for attempt in range(16):
        state = make_sealed_state(tmp_path / f"identity-{attempt}", batches_per_checkpoint=1, checkpoints_per_boot=1)
        data = export(state)
        for index, der in enumerate(decode_bundle(data).certs):
            reencoded = with_unused_signature_bit(der)
            if reencoded is None:
                continue
            bundle = decode_bundle(data)
            tampered = replace(
                bundle, certs=[reencoded if i == index else c for i, c in enumerate(bundle.certs)]
            ).encode()
            assert len(tampered) == len(data) and sum(x != y for x, y in zip(tampered, data)) == 1
            assert_finding(verify_json(tampered, state, tmp_path, capsys), "certs", "")
            return
    pytest.skip("no certificate with a signature ending in a 0 bit in 16 identities")


def with_unused_signature_bit(der: bytes) -> bytes | None:
    """`der` with its signature BIT STRING saying "1 unused bit", if that bit is 0."""
    signature = x509.load_der_x509_certificate(der).signature
    unused_bits_at = len(der) - len(signature) - 1
    assert der.endswith(signature) and der[unused_bits_at] == 0 and der[unused_bits_at - 2] == 0x03
    if signature[-1] & 1:
        return None
    return der[:unused_bits_at] + b"\x01" + signature


def run_verify(path: Path, ca: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int | str, str, str]:
    capsys.readouterr()
    try:
        code: int | str = main(["verify", str(path), "--ca", str(ca), "--jobs", "1", *extra])
    except SystemExit as exc:
        code = f"SystemExit({exc.code})"
    except Exception as exc:  # a user would see this as a traceback
        code = f"Traceback: {type(exc).__name__}: {exc}"
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# -- structural tampering: the bundle stays well-formed -------------------------------
#
# The device for these has two boots, each sealing four batches of three readings with a
# checkpoint after every two: batches b = 1..8 at indexes 0..7, checkpoints of sizes
# 2, 4, 6, 8. Every batch holds one reading of DISCLOSED_TAG.


@pytest.fixture(scope="module")
def impostor(tmp_path_factory: pytest.TempPathFactory) -> SealedState:
    """Same device id and shape, but another key, certified by another demo CA."""
    return make_sealed_state(tmp_path_factory.mktemp("impostor"), boots=2)


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory, impostor: SealedState) -> SealedState:
    """Made after the impostor, so the impostor's certificates are already valid when
    this history is sealed: swapping them in fails on who issued them, not on time."""
    return make_sealed_state(tmp_path_factory.mktemp("history"), device_id=impostor.device_id, boots=2)


def verify_json(data: bytes, state: SealedState, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Verdict:
    """`edgeseal verify --json` on `data`: the exit code and the findings (where, message)."""
    path = tmp_path / "tampered.cbor"
    path.write_bytes(data)
    code, out, err = run_verify(path, state.ca_path, capsys, "--json")
    assert "Traceback" not in out + err and not str(code).startswith("Traceback"), f"{code}\n{err}"
    findings = [(f["where"], f["message"]) for f in json.loads(out)["findings"]] if out.strip() else []
    return code, findings


def assert_finding(verdict: Verdict, where: str, fragment: str) -> None:
    code, findings = verdict
    assert code == 1, f"exit {code}, findings {findings}"
    found = any(w == where and fragment in m for w, m in findings)
    assert found, f"expected {where}: ...{fragment}..., found {findings}"


def with_batch(bundle: Bundle, index: int, batch: Batch | SelectiveBatch) -> Bundle:
    batches = list(bundle.batches)
    batches[index] = batch
    return replace(bundle, batches=batches)


def with_readings(bundle: Bundle, index: int, readings: list[bytes]) -> Bundle:
    batch = bundle.batches[index]
    return with_batch(bundle, index, Batch(batch.seal, batch.salt_key, readings))


def with_reading(bundle: Bundle, index: int, position: int, leaf: bytes) -> Bundle:
    readings = list(bundle.batches[index].readings)
    readings[position] = leaf
    return with_readings(bundle, index, readings)


def other_value(leaf: bytes) -> bytes:
    """The same reading (seq, ts, tag, quality) with another value."""
    r = decode_leaf(leaf)
    value = (not r.value) if isinstance(r.value, bool) else r.value + 1
    return encode_leaf(r.seq, r.ts, r.tag, value, r.quality)


def moved(items: list, source: int, target: int) -> list:
    out = list(items)
    out.insert(target, out.pop(source))
    return out


def swapped(items: list, i: int, j: int) -> list:
    out = list(items)
    out[i], out[j] = out[j], out[i]
    return out


def duplicated(items: list, index: int) -> list:
    return items[: index + 1] + [items[index]] + items[index + 1 :]


def without(items: list, index: int) -> list:
    return items[:index] + items[index + 1 :]


# The changes, each to the batch at index 2 (b=3) or around it.


def reading_from_another_batch(b: Bundle) -> Bundle:
    return with_reading(b, 2, 1, b.batches[5].readings[1])


def two_readings_swapped(b: Bundle) -> Bundle:
    return with_readings(b, 2, swapped(b.batches[2].readings, 0, 1))


def reading_with_another_value(b: Bundle) -> Bundle:
    return with_reading(b, 2, 1, other_value(b.batches[2].readings[1]))


def readings_truncated(b: Bundle) -> Bundle:
    return with_readings(b, 2, b.batches[2].readings[:-1])


def middle_batch_dropped(b: Bundle) -> Bundle:
    return replace(b, batches=without(b.batches, 3), log_proofs=without(b.log_proofs, 3))


def batch_duplicated(b: Bundle) -> Bundle:
    return replace(b, batches=duplicated(b.batches, 2), log_proofs=duplicated(b.log_proofs, 2))


def batches_swapped(b: Bundle) -> Bundle:
    """Batches b=3 and b=4 change places; their log proofs stay where they were."""
    return replace(b, batches=swapped(b.batches, 2, 3))


def batches_moved_with_their_proofs(b: Bundle) -> Bundle:
    """Batch b=4 moves before b=3, and its log proof with it."""
    return replace(b, batches=moved(b.batches, 3, 2), log_proofs=moved(b.log_proofs, 3, 2))


def last_checkpoint_dropped(b: Bundle) -> Bundle:
    return replace(b, checkpoints=b.checkpoints[:-1], consistency=b.consistency[:-1])


def middle_checkpoint_dropped(b: Bundle) -> Bundle:
    return replace(b, checkpoints=without(b.checkpoints, 1))


def middle_checkpoint_dropped_with_its_proof(b: Bundle) -> Bundle:
    return replace(b, checkpoints=without(b.checkpoints, 1), consistency=without(b.consistency, 0))


FULL_CASES = [
    (reading_from_another_batch, "batches[2] (b=3)", "reading 1: seq 17, expected 8"),
    (two_readings_swapped, "batches[2] (b=3)", "reading 0: seq 8, expected 7"),
    (reading_with_another_value, "batches[2] (b=3)", "readings do not hash to the sealed root"),
    (readings_truncated, "batches[2] (b=3)", "seal counts 3 readings, batch carries 2"),
    (middle_batch_dropped, "batches[3] (b=5)", "batch(es) 4 missing"),
    (batch_duplicated, "batches[3] (b=3)", "duplicate batch number"),
    (batches_swapped, "log_proofs[2] (b=4)", "leaf index 2 is not b - 1 = 3"),
    (last_checkpoint_dropped, "log_proofs[0] (b=1)", "tree size 8 is not a checkpoint"),
    (middle_checkpoint_dropped, "consistency", "3 proofs for 2 checkpoint pairs"),
    (middle_checkpoint_dropped_with_its_proof, "consistency[0]", "proves 4->6, expected 2->6"),
]


@pytest.mark.parametrize(("change", "where", "fragment"), FULL_CASES, ids=[c[0].__name__ for c in FULL_CASES])
def test_well_formed_tampering_of_a_full_bundle(
    change: Change, where: str, fragment: str, history: SealedState, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tampered = mutate_bundle(export(history), change)
    assert_finding(verify_json(tampered, history, tmp_path, capsys), where, fragment)


def test_batches_reordered_with_their_log_proofs(
    history: SealedState, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every batch still carries its own proof, but the bundle no longer lists batches in
    ascending b as docs/formats.md specifies: the bytes changed, and verify must say so."""
    tampered = mutate_bundle(export(history), batches_moved_with_their_proofs)
    code, findings = verify_json(tampered, history, tmp_path, capsys)
    assert code == 1, f"a bundle with batches b=1,2,4,3,5.. verifies: exit {code}, findings {findings}"
    assert any(w.startswith(("batches[2]", "batches[3]")) for w, _ in findings), findings


SELECTIVE = Selection(frozenset({DISCLOSED_TAG}))


def with_disclosed(b: Bundle, index: int, disclosed: list[Disclosed]) -> Bundle:
    return with_batch(b, index, SelectiveBatch(b.batches[index].seal, disclosed))


def disclosed_from_another_batch(b: Bundle) -> Bundle:
    return with_disclosed(b, 2, [b.batches[5].disclosed[0]])


def disclosed_with_another_value(b: Bundle) -> Bundle:
    d = b.batches[2].disclosed[0]
    return with_disclosed(b, 2, [Disclosed(d.salt, other_value(d.leaf), d.proof)])


def disclosed_with_another_proof(b: Bundle) -> Bundle:
    """The proof of the same place (index 1 of 3) in the next batch's tree."""
    d = b.batches[2].disclosed[0]
    return with_disclosed(b, 2, [Disclosed(d.salt, d.leaf, b.batches[3].disclosed[0].proof)])


def disclosed_twice(b: Bundle) -> Bundle:
    return with_disclosed(b, 2, b.batches[2].disclosed * 2)


SELECTIVE_CASES = [
    (disclosed_from_another_batch, "batches[2] (b=3).disclosed[0]", "seq 17 is outside the batch (7..9)"),
    (disclosed_with_another_value, "batches[2] (b=3).disclosed[0]", "not in the sealed batch"),
    (disclosed_with_another_proof, "batches[2] (b=3).disclosed[0]", "not in the sealed batch"),
    (batches_swapped, "log_proofs[2] (b=4)", "leaf index 2 is not b - 1 = 3"),
]


@pytest.mark.parametrize(("change", "where", "fragment"), SELECTIVE_CASES, ids=[c[0].__name__ for c in SELECTIVE_CASES])
def test_well_formed_tampering_of_a_selective_bundle(
    change: Change, where: str, fragment: str, history: SealedState, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tampered = mutate_bundle(export(history, SELECTIVE), change)
    assert_finding(verify_json(tampered, history, tmp_path, capsys), where, fragment)


@pytest.mark.parametrize("change", [batch_duplicated, disclosed_twice, batches_moved_with_their_proofs])
def test_selective_bundle_cannot_repeat_or_reorder(
    change: Change, history: SealedState, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A selective bundle leaves batches out by design, but a batch or a reading shown
    twice is counted twice in the report, and batches out of ascending b (or readings
    out of seq order) are not what docs/formats.md specifies."""
    tampered = mutate_bundle(export(history, SELECTIVE), change)
    code, findings = verify_json(tampered, history, tmp_path, capsys)
    assert code == 1, f"verifies: exit {code}, findings {findings}"
    assert any(w.startswith(("batches[2]", "batches[3]")) for w, _ in findings), findings


# -- signatures and certificates from someone else ------------------------------------


def forge_seal(genuine: bytes, impostor: SealedState, **changes: object) -> bytes:
    """The genuine seal's header and payload (with `changes`), signed by the impostor's
    key: the kid still names the genuine device."""
    msg = cose.decode(genuine, SEAL_CONTENT_TYPE, x5chain_allowed=True)
    payload = dataclasses.replace(SealPayload.decode(msg.payload), **changes).encode()
    signature = asyncio.run(impostor.signer().sign_digest(cose.digest_to_sign(msg.protected_bytes, payload)))
    return cose.assemble(msg.protected_bytes, payload, signature)


def checkpoint_of_another_key(b: Bundle, other: Bundle, _: SealedState) -> Bundle:
    return replace(b, checkpoints=[b.checkpoints[0], other.checkpoints[1], *b.checkpoints[2:]])


def batch_of_another_key(b: Bundle, other: Bundle, _: SealedState) -> Bundle:
    return with_batch(b, 2, other.batches[2])


def seal_re_signed_under_the_device_kid(b: Bundle, _: Bundle, impostor: SealedState) -> Bundle:
    batch = b.batches[2]
    return with_batch(b, 2, Batch(forge_seal(batch.seal, impostor), batch.salt_key, batch.readings))


def certificates_of_another_ca(b: Bundle, other: Bundle, _: SealedState) -> Bundle:
    return replace(b, certs=other.certs)


def history_of_another_ca(_: Bundle, other: Bundle, __: SealedState) -> Bundle:
    return other


KID = "kid is not the device certificate's key id"
KEY_CASES = [
    (checkpoint_of_another_key, "checkpoints[1] (size=4)", KID),
    (batch_of_another_key, "batches[2].seal (b=3)", KID),
    (seal_re_signed_under_the_device_kid, "batches[2].seal (b=3)", "signature does not verify"),
    (certificates_of_another_ca, "certs", "no trusted root issued"),
    (history_of_another_ca, "certs", "no trusted root issued"),
]


@pytest.mark.parametrize(("change", "where", "fragment"), KEY_CASES, ids=[c[0].__name__ for c in KEY_CASES])
def test_signed_by_someone_else(
    change: Callable[[Bundle, Bundle, SealedState], Bundle],
    where: str,
    fragment: str,
    history: SealedState,
    impostor: SealedState,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    other = decode_bundle(export(impostor))
    tampered = mutate_bundle(export(history), lambda b: change(b, other, impostor))
    assert_finding(verify_json(tampered, history, tmp_path, capsys), where, fragment)


def test_forged_readings_under_a_forged_seal(
    history: SealedState, impostor: SealedState, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Readings changed and the seal's root made to match, signed by another key: the
    readings agree with the seal, the signature does not agree with the device."""
    bundle = decode_bundle(export(history))
    batch = bundle.batches[2]
    readings = [batch.readings[0], other_value(batch.readings[1]), batch.readings[2]]
    s0 = open_seal(batch.seal)[1].s0
    root = merkle.root_of(leaf_hashes(batch.salt_key, s0, readings))
    tampered = with_batch(bundle, 2, Batch(forge_seal(batch.seal, impostor, root=root), batch.salt_key, readings))
    verdict = verify_json(tampered.encode(), history, tmp_path, capsys)
    assert_finding(verdict, "batches[2].seal (b=3)", "signature does not verify")
    assert_finding(verdict, "log_proofs[2] (b=3)", "not in the device log")
