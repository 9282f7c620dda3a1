"""Promise (DESIGN 3.6, 4, 5): whatever bytes are given as a bundle, the decoder gives a
Bundle or a BundleFormatError (NotABundle for what is no bundle at all), and the
verifier gives NotABundle or a report of findings, never another exception; a genuine
bundle changed in any way never verifies; and what decodes is exactly what was given.

How: random bytes; random CBOR items (deterministic or not, with tags, bignums, simple
values, shared references); maps shaped like bundles with random contents around the
genuine certificates; a genuine full and selective bundle (tests/fixtures.py) changed
byte by byte (bits, bytes, insertions, deletions, repeats, cuts, splices of the other
bundle) or as a structure (one of its byte strings changed, numbers of its proofs
replaced, items of a list swapped or repeated) and encoded again. tests/system/
test_tamper.py flips every single byte; this is the many-changes, whole-input layer.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from fixtures import SealedState, export, make_sealed_state
from fuzz_bytes import CBOR_INTS, CBOR_VALUES, PLAIN_VALUES, RARELY, cbor_items, mutated
from fuzz_tally import FUZZ, Tally, figures
from hypothesis import example, given
from hypothesis import strategies as st

from agent.export import Selection
from agent.trust import cbor, cose
from agent.trust.bundle import (
    Batch,
    Bundle,
    BundleFormatError,
    ConsistencyProof,
    InclusionProof,
    NotABundle,
    SelectiveBatch,
    decode_bundle,
)
from agent.trust.payloads import CHECKPOINT_CONTENT_TYPE, SEAL_CONTENT_TYPE, open_seal
from agent.trust.verify import Report, verify_bundle

# Changed bytes inside certificates make cryptography warn about what it parsed.
pytestmark = pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning")

TALLY = Tally()
print_figures = figures(TALLY)
DECODER, VERIFIER = "bundle decoder", "bundle verifier"


@pytest.fixture(scope="module")
def device(tmp_path_factory: pytest.TempPathFactory) -> SealedState:
    """Four batches of three readings, two checkpoints: a bundle of about 5 KB."""
    return make_sealed_state(tmp_path_factory.mktemp("device"), batches_per_checkpoint=2, checkpoints_per_boot=2)


class Genuine(dict[str, bytes]):
    """The genuine bundles by kind, shown by their sizes in a failing example's report."""

    def __repr__(self) -> str:
        return "Genuine(" + ", ".join(f"{kind}: {len(data)} bytes" for kind, data in self.items()) + ")"


@pytest.fixture(scope="module")
def genuine(device: SealedState) -> Genuine:
    return Genuine(full=export(device), selective=export(device, Selection(frozenset({"press.pressure"}))))


# -- the judgements -------------------------------------------------------------------


def assert_one_line(text: str) -> None:
    assert text.strip() and "\n" not in text, repr(text)


def decode(data: bytes) -> Bundle | None:
    """The decoder's answer: a Bundle that encodes to exactly `data`, or None for a
    clear error."""
    TALLY.judged(DECODER)
    try:
        bundle = decode_bundle(data)
    except BundleFormatError as error:
        assert_one_line(str(error))
        TALLY.rejected(DECODER)
        return None
    assert bundle.encode() == data, "a decoded bundle must be exactly the bytes it came from"
    TALLY.accepted(DECODER)
    return bundle


def verify(data: bytes, device: SealedState) -> Report | None:
    """The verifier's answer: a report whose findings each say where and what, or None
    for NotABundle."""
    TALLY.judged(VERIFIER)
    try:
        report = verify_bundle(data, device.roots())
    except NotABundle as error:
        assert_one_line(str(error))
        TALLY.rejected(VERIFIER)
        return None
    for finding in report.findings:
        assert_one_line(finding.where)
        assert_one_line(finding.message)
    TALLY.accepted(VERIFIER)
    return report


def assert_never_valid_unless_unchanged(data: bytes, original: bytes, device: SealedState) -> None:
    report = verify(data, device)
    if report is not None and report.valid:
        assert data == original, "a changed bundle verified"


# -- whatever bytes -------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=2000) | cbor_items())
@example(b"\xd8\x1c\x81\xd8\x1d\x00")  # a shared reference to a list holding it
@example(cbor.encode({"v": 1}))
def test_any_bytes_decode_to_a_bundle_or_a_clear_error(data: bytes) -> None:
    decode(data)


# -- maps shaped like bundles -------------------------------------------------------------


# Small numbers meet each other (b, s0, n, sizes of proofs); extreme ones test the bounds.
UINTS = st.integers(0, 12) | st.integers(0, 2**64 - 1)
COUNTS = st.integers(1, 12) | st.integers(0, 2**64 - 1)  # mostly >= 1, as b, boot, s0 and size must be
HASH = st.binary(min_size=32, max_size=32) | st.just(bytes(32))
SEAL_FIELDS = {
    "v": st.just(1),
    "boot": COUNTS,
    "b": COUNTS,
    "s0": COUNTS,
    "n": st.integers(1, 4) | UINTS,
    "root": HASH,
    "prev": HASH,
}
GAP = st.fixed_dictionaries({"from": COUNTS, "to": COUNTS, "why": st.sampled_from(["buffer full", ""])})
CHECKPOINT_FIELDS = {"v": st.just(1), "size": COUNTS, "root": HASH}


def mostly(usual: st.SearchStrategy[Any], other: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """`usual` three times in four, else `other`."""
    return st.one_of(usual, usual, usual, other)


@st.composite
def _proof(draw: st.DrawFn) -> Any:
    """[size, index, [hash...]] with small or extreme numbers; rarely a hash of the wrong
    size, or anything at all."""
    if draw(RARELY):
        return draw(PLAIN_VALUES)
    hashes = st.lists(st.binary(min_size=33, max_size=33) if draw(RARELY) else HASH, max_size=4)
    return [draw(UINTS), draw(UINTS), draw(hashes)]


@st.composite
def signed_shaped(draw: st.DrawFn, content_type: str, kid: bytes, fields: dict[str, Any]) -> bytes:
    """A COSE_Sign1 of `content_type`, mostly under the device's kid, with a payload of
    the specified keys and random values (rarely a gap, or a field of any type) and a
    random low-s signature: it parses, and its signature does not verify."""
    payload = draw(st.fixed_dictionaries(fields))
    if draw(RARELY) and content_type == SEAL_CONTENT_TYPE:
        payload["gap"] = draw(GAP)
    if draw(RARELY):
        payload[draw(st.sampled_from(sorted(payload)))] = draw(PLAIN_VALUES)
    protected = cose.protected_header(content_type, draw(mostly(st.just(kid), st.just(bytes(32)))))
    signature = draw(st.binary(min_size=32, max_size=32)) + bytes([draw(st.integers(0, 0x7E))]) + bytes(31)
    return cose.assemble(protected, cbor.encode(payload), signature)


@st.composite
def bundle_shaped(draw: st.DrawFn, genuine: Bundle) -> bytes:
    """A version-1 bundle map with every key, random contents of roughly the right
    shapes: seals and checkpoints that mostly parse, leaves, proofs and anchors; and
    mostly the genuine certificate chain, so verification goes past the certificates
    into every later step."""
    msg, payload = open_seal(genuine.batches[0].seal)  # the device's kid and id, a time its certificate covers
    named = {"dev": mostly(st.just(payload.dev), st.text(max_size=4)), "t": mostly(st.just(payload.t), UINTS)}
    blobs = st.binary(max_size=80) | CBOR_VALUES.map(cbor.encode)
    seal = mostly(signed_shaped(SEAL_CONTENT_TYPE, msg.kid, {**SEAL_FIELDS, **named}), blobs)
    checkpoint = mostly(signed_shaped(CHECKPOINT_CONTENT_TYPE, msg.kid, {**CHECKPOINT_FIELDS, **named}), blobs)
    leaf = st.tuples(COUNTS, CBOR_INTS, st.sampled_from(["t", ""]), PLAIN_VALUES, UINTS).map(list).map(cbor.encode)
    full = st.fixed_dictionaries(
        {
            "seal": seal,
            "salt_key": st.binary(min_size=32, max_size=32),
            "readings": st.lists(mostly(leaf, blobs), max_size=4),
        }
    )
    disclosed = st.fixed_dictionaries(
        {"salt": st.binary(min_size=16, max_size=16), "leaf": mostly(leaf, blobs), "proof": _proof()}
    )
    selective = st.fixed_dictionaries({"seal": seal, "disclosed": st.lists(disclosed, max_size=3)})
    checkpoints = draw(st.lists(checkpoint, min_size=1, max_size=3))
    anchor = st.fixed_dictionaries(
        {
            "checkpoint": st.sampled_from(checkpoints),
            "chain_id": UINTS,
            "contract": st.binary(min_size=20, max_size=20),
            "tx": HASH,
            "block": UINTS,
            "block_hash": HASH,
            "confirmations": UINTS,
        }
    )
    bundle = {
        "v": 1,
        "certs": draw(st.lists(blobs, max_size=3)) if draw(RARELY) else genuine.certs,
        "batches": draw(st.lists(full, min_size=1, max_size=3) | st.lists(selective, min_size=1, max_size=3)),
        "checkpoints": checkpoints,
        "log_proofs": draw(st.lists(_proof(), max_size=3)),
        "consistency": draw(st.lists(_proof(), max_size=3)),
        "anchors": draw(st.lists(anchor, max_size=2)),
    }
    if draw(RARELY):
        bundle[draw(st.sampled_from(sorted(bundle)))] = draw(PLAIN_VALUES)
    return cbor.encode(bundle)


@FUZZ
@given(st.data())
def test_bundle_shaped_maps_give_a_clear_error_or_a_report(
    device: SealedState, genuine: Genuine, data: st.DataObject
) -> None:
    shaped = data.draw(bundle_shaped(decode_bundle(genuine["full"])))
    if decode(shaped) is not None:
        report = verify(shaped, device)
        assert report is not None and not report.valid, "random seals verified"


# -- a genuine bundle, changed ------------------------------------------------------------


@FUZZ
@given(st.sampled_from(["full", "selective"]), st.data())
def test_a_genuine_bundle_changed_byte_by_byte_never_verifies(
    device: SealedState, genuine: Genuine, kind: str, data: st.DataObject
) -> None:
    original = genuine[kind]
    changed = data.draw(mutated(original, tuple(genuine.values())))
    decode(changed)
    assert_never_valid_unless_unchanged(changed, original, device)


def _byte_fields(bundle: Bundle) -> list[tuple[str, ...]]:
    """Paths to every byte string of a bundle (certificates, seals, salt keys, readings,
    disclosed salts and leaves, checkpoints, proof hashes)."""
    paths = [("certs", str(i)) for i in range(len(bundle.certs))]
    paths += [("checkpoints", str(i)) for i in range(len(bundle.checkpoints))]
    for i, batch in enumerate(bundle.batches):
        paths.append(("batches", str(i), "seal"))
        if isinstance(batch, Batch):
            paths.append(("batches", str(i), "salt_key"))
            paths += [("batches", str(i), "readings", str(j)) for j in range(len(batch.readings))]
        else:
            for j, _ in enumerate(batch.disclosed):
                paths += [("batches", str(i), "disclosed", str(j), name) for name in ("salt", "leaf")]
    for name in ("log_proofs", "consistency"):
        for i, proof in enumerate(getattr(bundle, name)):
            paths += [(name, str(i), "path", str(j)) for j in range(len(proof.path))]
    return paths


def _get(node: Any, path: tuple[str, ...]) -> Any:
    for step in path:
        node = node[int(step)] if isinstance(node, list) else getattr(node, step)
    return node


def _set(node: Any, path: tuple[str, ...], value: Any) -> Any:
    """A copy of the frozen structure `node` with `value` at `path`."""
    if not path:
        return value
    step, rest = path[0], path[1:]
    if isinstance(node, list):
        items = list(node)
        items[int(step)] = _set(items[int(step)], rest, value)
        return items
    return dataclasses.replace(node, **{step: _set(getattr(node, step), rest, value)})


def _lists(bundle: Bundle) -> list[tuple[str, ...]]:
    """Paths to the lists in a bundle whose items may be swapped or repeated."""
    paths = [(name,) for name in ("certs", "batches", "checkpoints", "log_proofs", "consistency")]
    for i, batch in enumerate(bundle.batches):
        paths.append(("batches", str(i), "readings" if isinstance(batch, Batch) else "disclosed"))
    return [path for path in paths if _get(bundle, path)]


@st.composite
def structure_change(draw: st.DrawFn, bundle: Bundle, donors: tuple[bytes, ...]) -> Bundle:
    """One change that keeps the bundle well-formed: a byte string changed, the numbers
    of a proof replaced, or two items of a list swapped, or one repeated."""
    action = draw(st.sampled_from(["bytes", "bytes", "numbers", "swap", "repeat"]))
    if action == "bytes":
        path = draw(st.sampled_from(_byte_fields(bundle)))
        return _set(bundle, path, draw(mutated(_get(bundle, path), donors)))
    if action == "numbers":
        return _renumbered(draw, bundle)
    path = draw(st.sampled_from(_lists(bundle)))
    items = list(_get(bundle, path))
    i, j = draw(st.integers(0, len(items) - 1)), draw(st.integers(0, len(items) - 1))
    if action == "swap":
        items[i], items[j] = items[j], items[i]
    else:
        items.insert(j, items[i])
    return _set(bundle, path, items)


@st.composite
def structure_changes(draw: st.DrawFn, bundle: Bundle, donors: tuple[bytes, ...]) -> bytes:
    """The bundle after one to three structure changes, encoded."""
    for _ in range(draw(st.integers(1, 3))):
        bundle = draw(structure_change(bundle, donors))
    return bundle.encode()


def _renumbered(draw: st.DrawFn, bundle: Bundle) -> Bundle:
    """One proof with its sizes or index replaced (a selective bundle's disclosed
    readings carry proofs too)."""
    proofs = [(name, str(i)) for name in ("log_proofs", "consistency") for i in range(len(getattr(bundle, name)))]
    for i, batch in enumerate(bundle.batches):
        if isinstance(batch, SelectiveBatch):
            proofs += [("batches", str(i), "disclosed", str(j), "proof") for j in range(len(batch.disclosed))]
    path = draw(st.sampled_from(proofs))
    proof = _get(bundle, path)
    numbers = st.integers(0, 2**64 - 1) | st.integers(0, 12)
    if isinstance(proof, ConsistencyProof):
        return _set(bundle, path, ConsistencyProof(draw(numbers), draw(numbers), proof.path))
    return _set(bundle, path, InclusionProof(draw(numbers), draw(numbers), proof.path))


@FUZZ
@given(st.sampled_from(["full", "selective"]), st.data())
def test_a_genuine_bundle_changed_as_a_structure_never_verifies(
    device: SealedState, genuine: Genuine, kind: str, data: st.DataObject
) -> None:
    original = genuine[kind]
    changed = data.draw(structure_changes(decode_bundle(original), tuple(genuine.values())))
    decode(changed)
    assert_never_valid_unless_unchanged(changed, original, device)


def test_the_genuine_bundles_verify(device: SealedState, genuine: Genuine) -> None:
    """The baseline the properties above stand on: unchanged, both bundles verify."""
    for data in genuine.values():
        report = verify_bundle(data, device.roots())
        assert report.valid, report.findings
        assert decode_bundle(data).encode() == data
