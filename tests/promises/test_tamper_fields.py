"""DESIGN 5, "Any change to any byte of a batch, seal, checkpoint or bundle is detected by
`verify`", field by field: every field of batches, seals, reading leaves,
checkpoints, proofs, certificates and anchor records modified, deleted, truncated,
replayed, reordered and duplicated, at every depth, and the verifier catches every one.

How: tamper_tree.py decodes a genuine bundle (or MQTT message) into one tree, down into
the COSE structures and leaves inside its byte strings, and lists every mutation of every
field; each is encoded again, layer by layer, with the project's deterministic encoder,
and judged as `edgeseal verify` judges a file:
- caught: unusable input (`NotABundle`, exit 2) or an invalid report (exit 1);
- weaker claim: the same signed data claiming less, which nobody can prove false (a
  selective bundle disclosing fewer readings, an anchor record left out, fewer
  confirmations claimed): the report must be valid and state the truth about what is left;
- missed (a valid report of anything else) or crashed (any other exception): failures.

The history (tamper_history.py) has every optional field. Anchor records are claims about
a public chain that only a node can check: they are judged with `--rpc`'s code path
against anvil, where the history's checkpoints were really anchored. MQTT messages go to
the stream checker behind `edgeseal watch`, each mutated one in place of the genuine
message, among the genuine others. Each test prints one figure line per structure:

    reliability: tamper: full bundle, seal: 1049 mutations (modified 631, ...), 1049 caught, 0 missed

Every mutation runs, and every bundle is cut short at every byte offset. MQTT messages are
cut at every ninth offset (the whole stream is judged again for each), and at every offset
with EDGESEAL_TAMPER_ALL=1.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from anvil_chain import Anvil
from cryptography import x509
from fixtures import export, make_sealed_state
from tamper_history import Anchored, History, Stream, anchor_checkpoints, make_history
from tamper_tree import FieldPath, Mutation, decode_tree, mutations, replayed_from

from agent.anchor.onchain import check_anchors
from agent.anchor.rpc import Chain
from agent.export import Selection
from agent.report import as_dict, render_text
from agent.trust.bundle import Anchor, Bundle, NotABundle, SelectiveBatch, decode_batch, decode_bundle
from agent.trust.leaf import decode_leaf
from agent.trust.stream import StreamChecker
from agent.trust.stream_events import Duplicate, Event, Finding, Summary
from agent.trust.verify import Report, verify_bundle

# Mutated certificates make cryptography warn about what it parsed.
pytestmark = pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning")

# MQTT messages are cut short at every MESSAGE_CUT_STEP-th byte (a stream is judged whole
# for each cut); bundles, which fail fast when cut, at every byte
MESSAGE_CUT_STEP = 1 if os.environ.get("EDGESEAL_TAMPER_ALL") == "1" else 9
SELECTION = Selection(frozenset({"line.0", "line.1"}))  # two readings of each batch: one can be left out
KINDS = ("modified", "deleted", "truncated", "replayed", "reordered", "duplicated")
CAUGHT, WEAKER, DUPLICATE = "caught", "weaker claim", "duplicate"
MISSED, CRASHED = "missed", "crashed"
DESCRIBED = {
    WEAKER: "weaker claims stated truthfully",
    DUPLICATE: "duplicates recognised by b",
}


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> History:
    return make_history(tmp_path_factory.mktemp("history"))


# -- counting ---------------------------------------------------------------------------------


@dataclass
class Tally:
    """Outcomes by structure and kind, and each mutation by outcome."""

    name: str
    counts: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # structure, kind, outcome
    examples: defaultdict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def add(self, structure: str, kind: str, outcome: str, what: object) -> None:
        verdict = outcome.split(":")[0]
        self.counts[structure, kind, verdict] += 1
        self.examples[verdict].append(f"{structure}: {what}" + ("" if verdict == outcome else f": {outcome}"))

    def figures(self) -> Iterator[str]:
        for structure in sorted({s for s, _, _ in self.counts}):
            by_kind, by_outcome = Counter[str](), Counter[str]()
            for (s, kind, outcome), n in self.counts.items():
                if s == structure:
                    by_kind[kind] += n
                    by_outcome[outcome] += n
            kinds = ", ".join(f"{k} {by_kind[k]}" for k in KINDS if by_kind[k])
            others = "".join(f", {by_outcome[o]} {text}" for o, text in DESCRIBED.items() if by_outcome[o])
            crashed = f", {by_outcome[CRASHED]} crashed" if by_outcome[CRASHED] else ""
            yield (
                f"reliability: tamper: {self.name}, {structure}: {by_kind.total()} mutations ({kinds}),"
                f" {by_outcome[CAUGHT]} caught{others}, {by_outcome[MISSED]} missed{crashed}"
            )

    def check(self) -> None:
        for line in self.figures():
            print(line)
        wrong = self.examples[MISSED] + self.examples[CRASHED]
        if wrong:
            more = f"\n  ... and {len(wrong) - 25} more" if len(wrong) > 25 else ""
            pytest.fail(f"{self.name}: {len(wrong)} mutations not caught:\n  " + "\n  ".join(wrong[:25]) + more)


def crashed(exc: Exception) -> str:
    return f"{CRASHED}: {type(exc).__name__}: {exc}"


def tampered(data: bytes, tree: Any, candidates: Iterator[Mutation]) -> Iterator[tuple[Mutation, bytes]]:
    """Each mutation's bytes, except those that change nothing."""
    for mutation in candidates:
        changed = mutation.apply(tree)
        if changed != data:
            yield mutation, changed


def cut_short(data: bytes, step: int = 1) -> Iterator[bytes]:
    return (data[:length] for length in range(0, len(data), step))


# -- what may verify: weaker claims -----------------------------------------


def weaker_claim(genuine: Bundle, changed: Bundle) -> bool:
    """The same signed data claiming less: disclosed readings or anchor records left out,
    fewer confirmations claimed; nothing else different."""
    if dataclasses.replace(changed, batches=genuine.batches, anchors=genuine.anchors) != genuine:
        return False
    if len(changed.batches) != len(genuine.batches):
        return False
    for ours, theirs in zip(changed.batches, genuine.batches):
        fewer = (
            isinstance(ours, SelectiveBatch)
            and ours.seal == theirs.seal
            and subsequence(ours.disclosed, theirs.disclosed)
        )
        if ours != theirs and not fewer:
            return False
    return subsequence(changed.anchors, genuine.anchors, claims_less)


def claims_less(record: Anchor, genuine: Anchor) -> bool:
    humbler = dataclasses.replace(genuine, confirmations=record.confirmations)
    return record == humbler and record.confirmations <= genuine.confirmations


def subsequence(short: list[Any], long: list[Any], fits: Callable[[Any, Any], bool] = lambda a, b: a == b) -> bool:
    rest = iter(long)
    return all(any(fits(item, candidate) for candidate in rest) for item in short)


def selective_truth(report: Report, bundle: Bundle) -> str | None:
    """What a valid report of a selective bundle misstates about its readings, if anything."""
    leaves = [decode_leaf(d.leaf) for batch in bundle.batches for d in getattr(batch, "disclosed", [])]
    if report.readings != len(leaves) or report.tags != Counter(leaf.tag for leaf in leaves):
        return f"reports {report.readings} readings {dict(report.tags)}, the bundle holds {len(leaves)}"
    return None


# -- bundles, offline ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Genuine:
    """A genuine bundle, the roots that verify it, and its report."""

    data: bytes
    roots: list[x509.Certificate]
    bundle: Bundle
    report: dict[str, Any]

    @classmethod
    def of(cls, data: bytes, roots: list[x509.Certificate]) -> Genuine:
        return cls(data, roots, decode_bundle(data), as_dict(verify_bundle(data, roots)))


def judge_offline(data: bytes, genuine: Genuine) -> str:
    try:
        report = verify_bundle(data, genuine.roots)
    except NotABundle:
        return CAUGHT
    except Exception as exc:  # exactly what must not happen
        return crashed(exc)
    if not report.valid:
        return CAUGHT
    changed = decode_bundle(data)
    if not weaker_claim(genuine.bundle, changed):
        return MISSED
    misstated = selective_truth(report, changed)
    return f"{MISSED}: a weaker claim misstated: {misstated}" if misstated else WEAKER


def structure_of(path: FieldPath) -> str:
    """Which structure of a bundle a field belongs to."""
    top = path[0] if path else None
    if top == "batches" and len(path) > 2:
        if path[2] == "disclosed" and len(path) > 4:
            return {"leaf": "reading", "proof": "batch-tree proof"}.get(path[4], "batch")
        return {"seal": "seal", "readings": "reading" if len(path) > 3 else "batch"}.get(path[2], "batch")
    names = {"batches": "batch", "checkpoints": "checkpoint", "log_proofs": "log proof"}
    names |= {"consistency": "consistency proof", "certs": "certificate", "anchors": "anchor record"}
    return names.get(top, "bundle")


@pytest.fixture(scope="module")
def bundles(history: History, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Genuine]:
    """The history, full and selective (b 2..8: b 1 was dropped), and a plain history from
    b = 1, whose first seal's prev is zeros."""
    plain = make_sealed_state(tmp_path_factory.mktemp("plain"))
    return {
        "full bundle": Genuine.of(history.export(), history.roots),
        "selective bundle": Genuine.of(history.export(SELECTION), history.roots),
        "bundle from b=1": Genuine.of(export(plain), plain.roots()),
    }


def test_the_history_has_every_optional_field(bundles: dict[str, Genuine]) -> None:
    """So that the mutations reach each of them."""
    full = bundles["full bundle"].report
    assert full["valid"] and full["boots"] == [1, 2, 3], full["findings"]
    assert [(g["from"], g["to"], g["batch"]) for g in full["gaps"]] == [(1, 3, 7), (7, 8, 3)]  # drop record, signed gap
    seals = [decode_tree(b.seal).value for b in bundles["full bundle"].bundle.batches]
    chains = {tuple(seal[1][33]) for seal in seals if seal[1]}
    assert len(chains) == 2, "the first seal of a boot carries its chain: two chains of one key"
    leaves = [decode_leaf(leaf) for b in bundles["full bundle"].bundle.batches for leaf in b.readings]
    assert {type(leaf.value) for leaf in leaves} == {float, int, bool, str, bytes, type(None), list, dict}
    assert all(len(b.disclosed) == 2 for b in bundles["selective bundle"].bundle.batches)
    assert bundles["bundle from b=1"].report["batch_range"][0] == 1


@pytest.mark.parametrize("name", ["full bundle", "selective bundle", "bundle from b=1"])
def test_every_field_of_a_bundle(name: str, bundles: dict[str, Genuine]) -> None:
    genuine = bundles[name]
    assert genuine.report["valid"] and genuine.report["unverified_anchor_claims"] == [], genuine.report["findings"]
    tree, tally = decode_tree(genuine.data), Tally(name)
    for mutation, changed in tampered(genuine.data, tree, mutations(tree)):
        tally.add(structure_of(mutation.path), mutation.kind, judge_offline(changed, genuine), mutation)
    for cut in cut_short(genuine.data):
        tally.add("bundle bytes", "truncated", judge_offline(cut, genuine), f"first {len(cut)} bytes")
    tally.check()
    weaker = {w.split(": ")[1] for w in tally.examples[WEAKER]}
    if name == "selective bundle":  # a reading left out of a batch that discloses two
        assert weaker and all(w.startswith(("deleted batches", "truncated batches")) for w in weaker), weaker
    else:
        assert not weaker, weaker


# -- anchor records, on a chain -------------------------------------------------------------


async def verify_on_chain(chain: Chain, data: bytes, roots: list[x509.Certificate]) -> Report:
    """`edgeseal verify --rpc`: the bundle verified, then every anchor claim checked on the
    node (unless the bundle failed already)."""
    report = verify_bundle(data, roots)
    if report.valid:
        report.record_chain_checks(await check_anchors(chain, report.anchors))
    return report


async def judge_on_chain(chain: Chain, data: bytes, anchored: Anchored, history: History) -> str:
    try:
        report = await verify_on_chain(chain, data, history.roots)
    except NotABundle:
        return CAUGHT
    except Exception as exc:  # exactly what must not happen
        return crashed(exc)
    if not report.valid:
        return CAUGHT
    if not weaker_claim(decode_bundle(anchored.bundle), decode_bundle(data)):
        return MISSED
    misstated = anchor_truth(report, anchored.head)
    return f"{MISSED}: a weaker claim misstated: {misstated}" if misstated else WEAKER


def anchor_truth(report: Report, head: int) -> str | None:
    """What a valid report with fewer or humbler anchor records misstates, if anything:
    confirmations are those counted now, and the history is anchored up to the largest
    size that a record left in the bundle proves."""
    checks = report.chain_checks or []
    for check in checks:
        if check.confirmations != head - check.claim.record.block:
            return f"anchors[{check.claim.index}]: {check.confirmations} confirmations reported"
    sizes = [c.claim.checkpoint.size for c in checks]
    said = f"history up to log size {max(sizes)} " if sizes else "no (the bundle carries no anchor records)"
    text = render_text(report, "bundle.cbor")
    return None if f"  anchored    {said}" in text else f"the report does not say {said!r}:\n{text}"


def test_anchor_records_repeated_or_out_of_order_are_findings_offline(history: History) -> None:
    """The exporter writes one record per checkpoint, in increasing size: a record
    repeated or moved needs no node to be seen."""
    bundle = decode_bundle(history.export())
    size_2, size_4 = (Anchor(c, 31337, bytes(20), bytes(32), 1, bytes(32), 0) for c in bundle.checkpoints[:2])
    for records, found_size in (([size_4, size_2], 4), ([size_2, size_2], 2)):
        report = verify_bundle(dataclasses.replace(bundle, anchors=records).encode(), history.roots)
        rule = "records must be in increasing checkpoint size, one per checkpoint"
        assert [str(f) for f in report.findings] == [f"anchors[1]: {rule}: size 2 after size {found_size}"]


def test_every_field_of_every_anchor_record(anvil: Anvil, history: History) -> None:
    anchored = anchor_checkpoints(anvil, history)
    data, tree = anchored.bundle, decode_tree(anchored.bundle)
    candidates = (m for m in mutations(tree) if m.path[:1] == ("anchors",))
    tally = Tally("anchored bundle, checked on chain")

    async def judge_all() -> None:
        chain = Chain.connect(anvil.url)
        try:
            report = await verify_on_chain(chain, data, history.roots)
            assert report.valid and [c.verified for c in report.chain_checks or []] == [True] * 3, report.findings
            for mutation, changed in tampered(data, tree, candidates):
                outcome = await judge_on_chain(chain, changed, anchored, history)
                tally.add("anchor record", mutation.kind, outcome, mutation)
        finally:
            await chain.close()

    asyncio.run(judge_all())
    tally.check()
    confirmations = [r.confirmations for r in decode_bundle(data).anchors]
    assert sorted(tally.examples[WEAKER]) == sorted(
        [f"anchor record: deleted anchors[{i}]: removed" for i in range(3)]
        + [f"anchor record: truncated anchors: first {n} of 3" for n in (1, 2)]
        + [f"anchor record: modified anchors[{i}].confirmations: -> {c - 1}" for i, c in enumerate(confirmations)]
    )


# -- MQTT messages ----------------------------------------------------------------------------------


def watch(history: History, stream: Stream) -> list[Event]:
    """What `edgeseal watch` reports for `stream`: every event, the summary last."""
    checker = StreamChecker(history.roots)
    events = checker.feed_cert(history.cert_message)
    for topic, data in stream:
        events += checker.feed_batch(data) if topic == "batch" else checker.feed_checkpoint(data)
    return events + checker.finish()


def summary_of(events: list[Event]) -> Summary:
    assert isinstance(events[-1], Summary)
    return events[-1]


def found(events: list[Event]) -> bool:
    return any(isinstance(e, Finding) for e in events)


def judge_stream(history: History, index: int, data: bytes) -> str:
    """The stream with `data` in place of message `index`."""
    topic = history.stream[index][0]
    try:
        events = watch(history, [*history.stream[:index], (topic, data), *history.stream[index + 1 :]])
    except Exception as exc:  # exactly what must not happen
        return crashed(exc)
    if found(events):
        return CAUGHT
    return MISSED


def message_structure(topic: str, path: FieldPath) -> str:
    if topic == "checkpoint":
        return "checkpoint message"
    if path[:1] == ("readings",) and len(path) > 1:
        return "reading"
    return "seal" if path[:1] == ("seal",) else "batch message"


def message_mutations(history: History, index: int) -> Iterator[Mutation]:
    """Every mutation of the message's fields, and each field taken from the message of
    the same topic before it (after it, for the first)."""
    topic, data = history.stream[index]
    same = [i for i, (t, _) in enumerate(history.stream) if t == topic]
    at = same.index(index)
    other = same[at - 1] if at else same[1]
    tree = decode_tree(data)
    yield from mutations(tree)
    yield from replayed_from(tree, decode_tree(history.stream[other][1]), f"message {other}")


def test_every_field_of_every_mqtt_message(history: History) -> None:
    genuine = watch(history, history.stream)
    assert not found(genuine), [e.text() for e in genuine]
    tally = Tally("MQTT stream")
    for index, (topic, data) in enumerate(history.stream):
        tree = decode_tree(data)
        for mutation, changed in tampered(data, tree, message_mutations(history, index)):
            outcome = judge_stream(history, index, changed)
            tally.add(message_structure(topic, mutation.path), mutation.kind, outcome, f"message {index}: {mutation}")
        for cut in cut_short(data, MESSAGE_CUT_STEP):
            outcome = judge_stream(history, index, cut)
            tally.add(f"{topic} message bytes", "truncated", outcome, f"message {index}: first {len(cut)} bytes")
    tally.check()


def test_whole_mqtt_messages_left_out_or_delivered_again(history: History) -> None:
    """Left out: a batch is missing, a finding, except the first (a watch may begin at
    any batch, and its summary says where); a checkpoint is a weaker claim, since nothing
    shows that the device published it: the summary counts one fewer.
    Delivered again, after the next message: DESIGN 5, duplicates are possible and
    recognisable by `b`: a batch is reported as a duplicate of its b, a checkpoint as
    nothing new, and the summary counts no new data."""
    genuine = summary_of(watch(history, history.stream))
    tally = Tally("MQTT stream")
    for index, (topic, data) in enumerate(history.stream):
        left_out = watch(history, history.stream[:index] + history.stream[index + 1 :])
        tally.add("whole message", "deleted", left_out_outcome(genuine, left_out, topic, data), f"message {index}")
        again = watch(history, [*history.stream[: index + 2], (topic, data), *history.stream[index + 2 :]])
        tally.add("whole message", "replayed", again_outcome(genuine, again, topic, data), f"message {index}")
    tally.check()
    assert Counter(o for (_, _, o) in tally.counts.elements()) == {CAUGHT: 7, WEAKER: 4, DUPLICATE: 11}


def left_out_outcome(genuine: Summary, events: list[Event], topic: str, data: bytes) -> str:
    if found(events):
        return CAUGHT
    summary = summary_of(events)
    if topic == "checkpoint":
        fewer = dataclasses.replace(genuine, checkpoints=genuine.checkpoints - 1)
    elif decode_batch_b(data) == genuine.first_b:  # the watch began at the next batch
        readings = genuine.readings - len(decode_batch(data).readings)
        fewer = dataclasses.replace(
            genuine, batches=genuine.batches - 1, readings=readings, first_b=genuine.first_b + 1
        )
    else:
        return f"{MISSED}: {summary.text()}"
    return WEAKER if summary == fewer else f"{MISSED}: {summary.text()}"


def again_outcome(genuine: Summary, events: list[Event], topic: str, data: bytes) -> str:
    duplicates = [e.b for e in events if isinstance(e, Duplicate)]
    expected = [decode_batch_b(data)] if topic == "batch" else []
    counted = dataclasses.replace(genuine, duplicates=len(expected))
    if duplicates == expected and summary_of(events) == counted:
        return DUPLICATE
    return f"{MISSED}: duplicates {duplicates}, {summary_of(events).text()}"


def decode_batch_b(data: bytes) -> int:
    return decode_tree(decode_batch(data).seal).value[2].value["b"]
