"""Node ids as plant engineers write them (the OPC UA string form, Part 6 5.3.1.10):

    i=2253                       namespace 0, numeric
    ns=3;s=Press1.Force          namespace index 3, string
    nsu=urn:acme:press;i=1001    namespace by URI (preferred: indexes move across restarts)
    ns=2;g=09087e75-8e5e-499b-954f-f2a9603db28a    GUID
    ns=2;b=M/RbKBsRVkePCePcx24oRA==                  opaque (base64)

A `NodeRef` keeps the namespace as written, index or URI; the driver turns it into a
wire NodeId at every connect from the server's NamespaceArray. Pure: no asyncua here.
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from dataclasses import dataclass
from typing import Literal

NODE_ID_TEXT = "a node id like ns=2;s=Line1.Speed, nsu=urn:plant:line;i=1001 or i=2253"

IdentifierKind = Literal["i", "s", "g", "b"]
Identifier = int | str | uuid.UUID | bytes

_NODE_ID = re.compile(r"(?:(?:ns=(?P<ns>[0-9]+)|nsu=(?P<nsu>[^;]+));)?(?P<kind>[isgb])=(?P<id>.+)", re.DOTALL)
_DIGITS = re.compile(r"[0-9]+")
UINT32_MAX = 2**32 - 1
UINT16_MAX = 2**16 - 1


@dataclass(frozen=True)
class NodeRef:
    """A node id with its namespace as written: an index (int) or a namespace URI (str)."""

    namespace: int | str
    kind: IdentifierKind
    identifier: Identifier

    def text(self) -> str:
        """The string form, parseable by `parse_node_id`; namespace 0 is left out."""
        if isinstance(self.identifier, bytes):
            ident = base64.b64encode(self.identifier).decode("ascii")
        else:
            ident = str(self.identifier)
        if isinstance(self.namespace, str):
            return f"nsu={self.namespace};{self.kind}={ident}"
        prefix = f"ns={self.namespace};" if self.namespace else ""
        return f"{prefix}{self.kind}={ident}"

    def __str__(self) -> str:
        return self.text()


def parse_node_id(text: str) -> NodeRef:
    """Raises ValueError saying what was expected."""
    match = _NODE_ID.fullmatch(text)
    if not match:
        raise ValueError(NODE_ID_TEXT)
    namespace: int | str = match["nsu"] if match["nsu"] is not None else int(match["ns"] or 0)
    if isinstance(namespace, int) and namespace > UINT16_MAX:
        raise ValueError(f"a namespace index 0..{UINT16_MAX}")
    kind: IdentifierKind = match["kind"]  # type: ignore[assignment]
    return NodeRef(namespace, kind, _identifier(kind, match["id"]))


def _identifier(kind: IdentifierKind, text: str) -> Identifier:
    if kind == "i":
        if not _DIGITS.fullmatch(text) or int(text) > UINT32_MAX:
            raise ValueError(f"a numeric identifier 0..{UINT32_MAX} after i=")
        return int(text)
    if kind == "g":
        try:
            return uuid.UUID(text)
        except ValueError:
            raise ValueError("a GUID like 09087e75-8e5e-499b-954f-f2a9603db28a after g=") from None
    if kind == "b":
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):  # ValueError: text that is not ASCII
            raise ValueError("base64 bytes after b=") from None
    return text
