"""Promise (DESIGN 3.1 to 3.5, docs/mqtt.md): whatever arrives as a batch message, a
checkpoint or a certificate message, the decoders give a value or their one typed
error, and the stream checker (what `edgeseal watch` runs) answers with events, never an
exception; a stream that holds any message that is not the device's own is never
VALID; and what decodes is exactly what was given.

How: genuine messages of a device that booted twice (tests/sealed_stream.py), changed
byte by byte (bits, bytes, insertions, deletions, repeats, cuts, splices of other
messages); random bytes and random CBOR items; arrays shaped like reading leaves with
random fields. The checker is fed random sequences of genuine, changed and random
messages on the three topics, in any order, with repeats.

(The status topic carries JSON for dashboards that nothing in the product decodes.)
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import pytest
from fuzz_bytes import CBOR_INTS, CBOR_VALUES, cbor_items, mutated
from fuzz_tally import FUZZ, Tally, figures
from hypothesis import example, given
from hypothesis import strategies as st
from sealed_stream import Device

from agent.trust import cbor, cose
from agent.trust.bundle import Anchor, BundleFormatError, decode_anchor, decode_batch, decode_certificates
from agent.trust.leaf import LeafError, check_leaves, decode_leaf, encode_leaf
from agent.trust.payloads import PayloadError, open_checkpoint, open_seal
from agent.trust.stream import StreamChecker
from agent.trust.stream_events import Event, Summary

pytestmark = pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning")

TALLY = Tally()
print_figures = figures(TALLY)


@dataclass(frozen=True)
class Stream:
    """A device's genuine messages by topic (shown by their counts when an example fails)."""

    device: Device
    messages: dict[str, tuple[bytes, ...]]

    def __repr__(self) -> str:
        return "Stream(" + ", ".join(f"{topic}: {len(items)}" for topic, items in self.messages.items()) + ")"

    def every(self) -> tuple[bytes, ...]:
        return tuple(data for items in self.messages.values() for data in items)

    @functools.cached_property
    def parts(self) -> tuple[bytes, ...]:
        """Every genuine item of the stream: messages, the seals and leaves inside batch
        messages, and an anchor record of its first checkpoint."""
        batches = [decode_batch(data) for data in self.messages["batch"]]
        anchor = Anchor(self.messages["checkpoint"][0], 1, bytes(20), bytes(range(32)), 7, bytes(32), 12).encode()
        leaves = [leaf for batch in batches for leaf in batch.readings]
        return (*self.every(), *(batch.seal for batch in batches), *leaves, anchor)


@pytest.fixture(scope="module")
def stream(tmp_path_factory: pytest.TempPathFactory) -> Stream:
    """Two boots: b 1..3 and b 4..5, three readings each, a checkpoint after each boot."""
    device = Device.make(tmp_path_factory.mktemp("device"))
    device.boot(3)
    device.boot(2)
    messages = {
        "cert": (device.cert_message,),
        "batch": tuple(device.messages()),
        "checkpoint": tuple(device.checkpoints()),
    }
    return Stream(device, messages)


# -- the decoders -------------------------------------------------------------------


def _seal_bytes(opened: tuple[cose.Sign1, Any]) -> bytes:
    msg, payload = opened
    assert payload.encode() == msg.payload, "the payload decodes to what it was"
    return cose.assemble(msg.protected_bytes, msg.payload, msg.signature, msg.x5chain() or None)


def _leaf_bytes(leaf: Any) -> bytes:
    return encode_leaf(*leaf)


class Decoder(NamedTuple):
    decode: Callable[[bytes], Any]
    errors: tuple[type[Exception], ...]  # the typed errors it may raise
    encode: Callable[[Any], bytes]  # the exact bytes of what it decoded


DECODERS = {
    "batch message decoder": Decoder(decode_batch, (BundleFormatError,), lambda batch: batch.encode()),
    "certificate message decoder": Decoder(decode_certificates, (BundleFormatError,), cbor.encode),
    "anchor record decoder": Decoder(decode_anchor, (BundleFormatError,), lambda anchor: anchor.encode()),
    "seal decoder": Decoder(open_seal, (cose.CoseError, PayloadError), _seal_bytes),
    "checkpoint decoder": Decoder(open_checkpoint, (cose.CoseError, PayloadError), _seal_bytes),
    "leaf decoder": Decoder(decode_leaf, (LeafError,), _leaf_bytes),
}


@st.composite
def leaf_shaped(draw: st.DrawFn) -> bytes:
    """[seq, ts, tag, value, quality] with fields of any type, mostly of the right one."""
    seq = draw(CBOR_INTS | CBOR_VALUES)
    ts = draw(CBOR_INTS | CBOR_VALUES)
    tag = draw(st.text(max_size=6) | CBOR_VALUES)
    quality = draw(st.sampled_from([0, 0x40900000, 0x80050000, 2**32 - 1, 2**32]) | CBOR_VALUES)
    return cbor.encode([seq, ts, tag, draw(CBOR_VALUES), quality])


@st.composite
def decoder_inputs(draw: st.DrawFn, stream: Stream) -> bytes:
    genuine = stream.parts
    return draw(
        st.one_of(
            st.binary(max_size=600),
            cbor_items(),
            leaf_shaped(),
            st.sampled_from(genuine),
            st.sampled_from(genuine).flatmap(lambda data: mutated(data, genuine)),
        )
    )


@FUZZ
@pytest.mark.parametrize("target", DECODERS)
@given(st.data())
def test_every_decoder_gives_its_value_or_its_typed_error(stream: Stream, target: str, data: st.DataObject) -> None:
    decode, errors, encode = DECODERS[target]
    raw = data.draw(decoder_inputs(stream))
    TALLY.judged(target)
    try:
        value = decode(raw)
    except errors as error:
        assert str(error).strip() and "\n" not in str(error), repr(error)
        TALLY.rejected(target)
        return
    assert encode(value) == raw, "what decodes is exactly what was given"
    TALLY.accepted(target)


@FUZZ
@given(st.lists(leaf_shaped() | cbor_items(), max_size=4), st.integers(1, 5) | st.integers(1, 2**64 - 1))
@example([encode_leaf(1, 0, "t", 1.5, 0), b"\x85\x02\x00at\xf6\x1a\x80\x05\x00\x00"], 1)
def test_the_batch_leaf_check_agrees_with_the_leaf_decoder(leaves: list[bytes], first_seq: int) -> None:
    """The verifier's fast check over a batch's leaves takes exactly the leaves the
    strict decoder takes, each with the next seq from `first_seq`, a seal's s0 (>= 1)."""
    TALLY.judged("batch leaf check")
    try:
        strict = [decode_leaf(leaf).seq for leaf in leaves] == list(range(first_seq, first_seq + len(leaves)))
    except LeafError:
        strict = False
    try:
        check_leaves(leaves, first_seq)
    except LeafError as error:
        assert str(error).strip() and "\n" not in str(error)
        assert not strict, f"refused leaves the decoder takes: {error}"
        TALLY.rejected("batch leaf check")
        return
    assert strict, "took leaves the decoder refuses"
    TALLY.accepted("batch leaf check")


# -- the stream checker -------------------------------------------------------------

TOPICS = ("cert", "batch", "checkpoint")


@st.composite
def deliveries(draw: st.DrawFn, stream: Stream) -> list[tuple[str, bytes]]:
    """A random stream: (topic, message) with genuine messages on their topics, in any
    order, some twice, and some changed, random, or on the wrong topic."""
    every = stream.every()
    genuine = st.sampled_from([(topic, data) for topic, items in stream.messages.items() for data in items])
    changed = st.tuples(st.sampled_from(TOPICS), st.sampled_from(every).flatmap(lambda data: mutated(data, every)))
    foreign = st.tuples(st.sampled_from(TOPICS), st.binary(max_size=100) | cbor_items())
    wrong_topic = st.tuples(st.sampled_from(TOPICS), st.sampled_from(every))
    one = st.one_of(genuine, genuine, genuine, changed, foreign, wrong_topic)
    return draw(st.lists(one, max_size=14))


def _feed(checker: StreamChecker, topic: str, data: bytes) -> list[Event]:
    feed = {"cert": checker.feed_cert, "batch": checker.feed_batch, "checkpoint": checker.feed_checkpoint}[topic]
    return feed(data)


def assert_printable(event: Event) -> None:
    """What `edgeseal watch` prints of an event: one line, or one JSON object."""
    text = event.text()
    assert text.strip() and "\n" not in text, repr(text)
    json.dumps(event.as_dict())


@FUZZ
@given(st.data())
def test_the_stream_checker_answers_any_stream_with_events(stream: Stream, data: st.DataObject) -> None:
    delivered = data.draw(deliveries(stream))
    TALLY.judged("stream checker")
    checker = StreamChecker(stream.device.roots)
    events = [event for topic, message in delivered for event in _feed(checker, topic, message)]
    events += checker.finish()
    for event in events:
        assert_printable(event)
    summary = events[-1]
    assert isinstance(summary, Summary)
    own = {(topic, message) for topic, items in stream.messages.items() for message in items}
    if summary.valid:
        assert all(delivery in own for delivery in delivered), "a stream with a foreign message is VALID"
        TALLY.accepted("stream checker")
    else:
        TALLY.rejected("stream checker")


def test_the_genuine_stream_is_valid(stream: Stream) -> None:
    """The baseline the property above stands on: in order, the device's own stream verifies."""
    checker = StreamChecker(stream.device.roots)
    for topic in TOPICS:
        for message in stream.messages[topic]:
            _feed(checker, topic, message)
    summary = checker.finish()[-1]
    assert isinstance(summary, Summary) and summary.valid and summary.batches == 5, summary
