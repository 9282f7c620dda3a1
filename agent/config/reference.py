"""The field tables of docs/configuration.md, generated from the configuration models so
the reference cannot drift from what the agent accepts: each table lists a section's
fields with the type, the default and the description the models give (the same text
`edgeseal schema` gives editors).

    python -m agent.config.reference docs/configuration.md          rewrite the tables
    python -m agent.config.reference --check docs/configuration.md  exit 1 if out of date
A table stands between `<!-- fields: SECTION -->` and `<!-- /fields -->`; the prose
around it is written by hand.
"""

from __future__ import annotations

import argparse
import re
import sys
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from annotated_types import Ge, Gt, Le, MaxLen
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from agent.config.anchoring import AnchorConfig, ChainKeyConfig, FeesConfig
from agent.config.model import (
    BufferConfig,
    DeviceConfig,
    IdentityConfig,
    MetricsConfig,
    MqttConfig,
    MqttLive,
    MqttTls,
    SealConfig,
    TpmConfig,
)
from drivers.config_types import BYTES_TEXT, DURATION_TEXT, Expected

SECTIONS: dict[str, type[BaseModel]] = {
    "device": DeviceConfig,
    "identity": IdentityConfig,
    "identity.tpm": TpmConfig,
    "seal": SealConfig,
    "buffer": BufferConfig,
    "mqtt": MqttConfig,
    "mqtt.tls": MqttTls,
    "mqtt.live": MqttLive,
    "anchor": AnchorConfig,
    "anchor.key": ChainKeyConfig,
    "anchor.fees": FeesConfig,
    "metrics": MetricsConfig,
}
HEX_DEFAULTS = {(TpmConfig, "handle")}  # TPM handles are written in hex everywhere
BLOCK = re.compile(r"(<!-- fields: (?P<section>[\w.]+) -->\n).*?(<!-- /fields -->)", re.DOTALL)


def table(model: type[BaseModel]) -> str:
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for name, info in model.model_fields.items():
        description = (info.description or "").replace("|", "\\|")
        rows.append(f"| `{name}` | {_type(info)} | {_default(model, name, info)} | {description} |")
    return "\n".join(rows) + "\n"


def render(text: str) -> str:
    """`text` with every generated table made anew."""
    return BLOCK.sub(lambda m: m[1] + table(SECTIONS[m["section"]]) + m[3], text)


def _type(info: FieldInfo) -> str:
    annotation, metadata = _unwrapped(info.annotation, list(info.metadata))
    expected = next((m.text for m in metadata if isinstance(m, Expected)), None)
    kind = expected.removeprefix("a ").removeprefix("an ") if expected else _annotation_text(annotation, metadata)
    return {
        DURATION_TEXT.removeprefix("a "): "duration",
        BYTES_TEXT.removeprefix("a "): "size, e.g. `2GB`, `500MiB`, at least 1MB",
    }.get(kind, kind)


def _unwrapped(annotation: Any, metadata: list[Any]) -> tuple[Any, list[Any]]:
    """The type under Optional[...] and Annotated[...], with all the metadata found on the way."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        present = [a for a in get_args(annotation) if a is not type(None)]
        if len(present) == 1:
            return _unwrapped(present[0], metadata)
    if origin is Annotated:
        base, *extra = get_args(annotation)
        for item in extra:
            metadata += item.metadata if isinstance(item, FieldInfo) else [item]
        return _unwrapped(base, metadata)
    return annotation, metadata


def _annotation_text(annotation: Any, metadata: Sequence[Any]) -> str:
    origin = get_origin(annotation)
    if origin is Literal:
        return " or ".join(f"`{value}`" for value in get_args(annotation))
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping"
    if annotation is bool:
        return "true or false"
    if annotation is int:
        return "integer" + _bounds(metadata)
    if annotation is float:
        return "number" + _bounds(metadata)
    if annotation is str:
        longest = next((m.max_length for m in metadata if isinstance(m, MaxLen)), None)
        return f"text, up to {longest} characters" if longest else "text"
    if origin is list:
        return "list"
    return str(annotation)


def _bounds(metadata: Sequence[Any]) -> str:
    low = next((f" >= {m.ge}" for m in metadata if isinstance(m, Ge)), "")
    low = low or next((f" > {m.gt}" for m in metadata if isinstance(m, Gt)), "")
    high = next((m.le for m in metadata if isinstance(m, Le)), None)
    if low.startswith(" >= ") and high is not None:
        return f" {low[4:]} to {high}"
    return low


def _default(model: type[BaseModel], name: str, info: FieldInfo) -> str:
    value = info.default
    if value is PydanticUndefined:
        return "required"
    if value is None:
        return "none"
    if isinstance(value, BaseModel):
        return "defaults apply"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if (model, name) in HEX_DEFAULTS:
        return f"`0x{value:08x}`"
    kind = _type(info)
    if kind == "duration":
        return f"`{_duration(value)}`"
    if kind.startswith("size"):
        return f"`{_size(value)}`"
    return f"`{value}`"


def _duration(seconds: float) -> str:
    """In the largest unit that writes it whole: 7d, 20ms."""
    for unit, factor in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1), ("ms", 0.001)):
        count = seconds / factor
        if count >= 1 and abs(count - round(count)) < 1e-9:
            return f"{round(count)}{unit}"
    return f"{seconds:g}s"


def _size(value: int) -> str:
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value % factor == 0:
            return f"{value // factor}{unit}"
    return str(value)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agent.config.reference", description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if the tables are out of date; write nothing")
    parser.add_argument("document", type=Path)
    args = parser.parse_args(argv)
    text = args.document.read_text(encoding="utf-8")
    fresh = render(text)
    if args.check:
        if fresh != text:
            print(f"{args.document}: field tables out of date; run: python -m agent.config.reference {args.document}")
            return 1
        return 0
    args.document.write_text(fresh, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
