"""Node ids as written in the configuration (drivers/opcua/nodeid.py): every identifier
kind with and without a namespace, the text form back, and the messages of what is refused."""

from __future__ import annotations

import base64
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.opcua.nodeid import NODE_ID_TEXT, NodeRef, parse_node_id

GUID = uuid.UUID("09087e75-8e5e-499b-954f-f2a9603db28a")
OPAQUE = base64.b64decode("M/RbKBsRVkePCePcx24oRA==")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("i=2253", NodeRef(0, "i", 2253)),
        ("ns=3;i=1001", NodeRef(3, "i", 1001)),
        ("nsu=urn:acme:press;i=1001", NodeRef("urn:acme:press", "i", 1001)),
        ("i=0", NodeRef(0, "i", 0)),
        ("i=4294967295", NodeRef(0, "i", 2**32 - 1)),
        ("s=Press1.Force", NodeRef(0, "s", "Press1.Force")),
        ("ns=3;s=Press1.Force", NodeRef(3, "s", "Press1.Force")),
        ("nsu=http://acme.com/press/;s=Press1.Force", NodeRef("http://acme.com/press/", "s", "Press1.Force")),
        ("g=09087e75-8e5e-499b-954f-f2a9603db28a", NodeRef(0, "g", GUID)),
        ("ns=2;g=09087e75-8e5e-499b-954f-f2a9603db28a", NodeRef(2, "g", GUID)),
        ("nsu=urn:acme:press;g=09087E75-8E5E-499B-954F-F2A9603DB28A", NodeRef("urn:acme:press", "g", GUID)),
        ("b=M/RbKBsRVkePCePcx24oRA==", NodeRef(0, "b", OPAQUE)),
        ("ns=2;b=M/RbKBsRVkePCePcx24oRA==", NodeRef(2, "b", OPAQUE)),
        ("nsu=urn:acme:press;b=AA==", NodeRef("urn:acme:press", "b", b"\x00")),
        ("ns=65535;i=1", NodeRef(65535, "i", 1)),
        ("ns=0;i=85", NodeRef(0, "i", 85)),
    ],
)
def test_every_identifier_kind_parses_with_its_namespace(text: str, expected: NodeRef) -> None:
    assert parse_node_id(text) == expected


@pytest.mark.parametrize(
    ("text", "identifier"),
    [
        ("ns=2;s=a;b", "a;b"),
        ("ns=2;s=a=b", "a=b"),
        ("ns=2;s=ns=3;i=5", "ns=3;i=5"),
        ("s=nsu=urn:x;s=y", "nsu=urn:x;s=y"),
        ("nsu=urn:x;s=Line1;Speed=fast", "Line1;Speed=fast"),
        ("ns=1;s=Ölpumpe Förderung", "Ölpumpe Förderung"),
    ],
)
def test_everything_after_s_is_the_string_identifier(text: str, identifier: str) -> None:
    ref = parse_node_id(text)
    assert (ref.kind, ref.identifier) == ("s", identifier)
    assert parse_node_id(ref.text()) == ref


@pytest.mark.parametrize(
    ("ref", "text"),
    [
        (NodeRef(0, "i", 2253), "i=2253"),
        (NodeRef(3, "s", "Press1.Force"), "ns=3;s=Press1.Force"),
        (NodeRef("urn:acme:press", "i", 1001), "nsu=urn:acme:press;i=1001"),
        (NodeRef(2, "g", GUID), "ns=2;g=09087e75-8e5e-499b-954f-f2a9603db28a"),
        (NodeRef(2, "b", OPAQUE), "ns=2;b=M/RbKBsRVkePCePcx24oRA=="),
    ],
)
def test_text_is_the_canonical_string_form_leaving_namespace_0_out(ref: NodeRef, text: str) -> None:
    assert ref.text() == text
    assert str(ref) == text


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("ns=0;i=85", "i=85"),
        ("ns=007;i=0042", "ns=7;i=42"),
        ("g=09087E75-8E5E-499B-954F-F2A9603DB28A", "g=09087e75-8e5e-499b-954f-f2a9603db28a"),
    ],
)
def test_equivalent_spellings_come_back_in_one_form(text: str, canonical: str) -> None:
    assert parse_node_id(text).text() == canonical


GUID_MESSAGE = "a GUID like 09087e75-8e5e-499b-954f-f2a9603db28a after g="
NUMERIC_MESSAGE = "a numeric identifier 0..4294967295 after i="


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", NODE_ID_TEXT),
        ("   ", NODE_ID_TEXT),
        ("Press1.Force", NODE_ID_TEXT),
        ("x=5", NODE_ID_TEXT),
        ("I=5", NODE_ID_TEXT),
        ("s=", NODE_ID_TEXT),
        ("ns=2;", NODE_ID_TEXT),
        ("ns=;i=5", NODE_ID_TEXT),
        ("ns=-1;i=5", NODE_ID_TEXT),
        ("nsu=;i=5", NODE_ID_TEXT),
        ("ns=2,i=5", NODE_ID_TEXT),
        ("ns=2;nsu=urn:x;i=5", NODE_ID_TEXT),
        ("i=4294967296", NUMERIC_MESSAGE),
        ("ns=2;i=99999999999999999999", NUMERIC_MESSAGE),
        ("i=-1", NUMERIC_MESSAGE),
        ("i=12a", NUMERIC_MESSAGE),
        ("i=0x10", NUMERIC_MESSAGE),
        ("i= 5", NUMERIC_MESSAGE),
        ("ns=65536;i=1", "a namespace index 0..65535"),
        ("ns=99999999999;s=x", "a namespace index 0..65535"),
        ("g=xyz", GUID_MESSAGE),
        ("ns=2;g=09087e75-8e5e-499b-954f-f2a9603db28", GUID_MESSAGE),
        ("ns=2;g=09087e75-8e5e-499b-954f-f2a9603db28g", GUID_MESSAGE),
        ("b=!!!", "base64 bytes after b="),
        ("b=QQ", "base64 bytes after b="),
        ("ns=2;b=M/RbKBsRVkeP CePcx24oRA==", "base64 bytes after b="),
    ],
)
def test_refusals_say_what_was_expected(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_node_id(text)
    assert str(caught.value) == message


@pytest.mark.parametrize("text", ["i=²", "i=٣", "i=１２"])
def test_a_numeric_identifier_is_ascii_digits_only(text: str) -> None:
    """str.isdigit() also accepts superscripts and other scripts' digits; int() then
    fails on some with its own message, or silently reads others as a number."""
    with pytest.raises(ValueError) as caught:
        parse_node_id(text)
    assert str(caught.value) == NUMERIC_MESSAGE


@pytest.mark.parametrize("text", ["b=é", "ns=2;b=QUJD€==", "nsu=urn:x;b=ü"])
def test_non_ascii_after_b_is_refused_as_base64(text: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_node_id(text)
    assert str(caught.value) == "base64 bytes after b="


@pytest.mark.parametrize("identifier", ["Tag1 ", "Tag1\t", " ", "Motor 1\n"])
def test_a_string_identifier_keeps_its_trailing_whitespace(identifier: str) -> None:
    """Browse writes server node ids into configuration with text(); a string id that
    ends in a space must come back as the same node, not as a neighbour or an error."""
    ref = NodeRef(2, "s", identifier)
    assert parse_node_id(ref.text()) == ref


# -- round trips ------------------------------------------------------------------------

_URIS = st.from_regex(r"(urn|http)[:/][A-Za-z0-9:/._=-]{1,30}", fullmatch=True)
_NAMESPACES = st.one_of(st.integers(0, 2**16 - 1), _URIS)
# Any text, with spaces at either end made common (server string ids do end in spaces).
_STRING_IDS = st.builds(
    lambda text, end: text + end,
    st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40),
    st.sampled_from(["", "", "", " ", "\t"]),
)
_IDENTIFIERS = st.one_of(
    st.tuples(st.just("i"), st.integers(0, 2**32 - 1)),
    st.tuples(st.just("s"), _STRING_IDS),
    st.tuples(st.just("g"), st.uuids()),
    st.tuples(st.just("b"), st.binary(min_size=1, max_size=40)),
)
_REFS = st.builds(lambda ns, kind_id: NodeRef(ns, *kind_id), _NAMESPACES, _IDENTIFIERS)


@given(_REFS)
def test_any_ref_goes_to_text_and_back_unchanged(ref: NodeRef) -> None:
    assert parse_node_id(ref.text()) == ref


def _spelled(kind_id: tuple[str, object], zeros: str, upper: bool) -> str:
    kind, identifier = kind_id
    if kind == "i":
        return f"i={zeros}{identifier}"
    if kind == "g":
        return f"g={str(identifier).upper() if upper else identifier}"
    if kind == "b":
        return f"b={base64.b64encode(identifier).decode()}"  # type: ignore[arg-type]
    return f"s={identifier}"


_PREFIXES = st.one_of(
    st.just(""),
    st.builds(lambda zeros, ns: f"ns={zeros}{ns};", st.sampled_from(["", "0", "00"]), st.integers(0, 2**16 - 1)),
    st.builds(lambda uri: f"nsu={uri};", _URIS),
)
_TEXTS = st.builds(
    lambda prefix, body: f"{prefix}{body}",
    _PREFIXES,
    st.builds(_spelled, _IDENTIFIERS, st.sampled_from(["", "0"]), st.booleans()),
)


@pytest.mark.parametrize("text", ["  ns=2;i=7", "ns=2;i=7\n", " i=85"])
def test_a_node_id_is_taken_exactly_as_written(text: str) -> None:
    """Whitespace belongs to string identifiers, so none is trimmed anywhere."""
    with pytest.raises(ValueError):
        parse_node_id(text)


@given(_TEXTS)
def test_parse_text_parse_gives_the_same_ref(text: str) -> None:
    once = parse_node_id(text)
    assert parse_node_id(once.text()) == once
