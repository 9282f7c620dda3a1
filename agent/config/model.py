"""The configuration as typed, validated models. Field names are a contract: the rest of
the agent reads them, and plant engineers write them in YAML."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

import drivers
from agent.config.document import format_path
from agent.trust.certs import DEVICE_ID_PATTERN, DEVICE_ID_RULE
from drivers.config_types import DefinesTags, Duration, Expected, Matching, SubPath, findings

DeviceId = Annotated[str, Matching(DEVICE_ID_RULE, DEVICE_ID_PATTERN)]
FilePath = Annotated[str, Expected("a file path")]


class _Section(BaseModel):
    # strict: a quoted "5" stays text and is reported, rather than silently becoming 5.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class DeviceConfig(_Section):
    """Which gateway this is."""

    id: DeviceId = Field(
        description="Unique name of this gateway, e.g. press-line-7. Written into every seal, so "
        "auditors see which device produced the data. 1-64 letters, digits and . : -"
    )
    model: str | None = Field(None, description="Hardware model of the gateway, e.g. EG-100; for information only.")


class IdentityConfig(_Section):
    """The key that signs this device's data, and the certificate that vouches for it."""

    signer: Literal["software"] = Field(
        "software", description="Where the signing key lives. `software`: a private key file on this gateway."
    )
    key: FilePath = Field(
        min_length=1,
        description="Path of the device's private key file (PEM). "
        "A relative path starts at the configuration file's folder.",
    )
    cert_chain: FilePath = Field(
        min_length=1,
        description="Path of the device's certificate chain (PEM): the device certificate first, then the "
        "intermediate certificates. A relative path starts at the configuration file's folder.",
    )


class SealConfig(_Section):
    """How often readings are sealed (signed in batches) and the seal log is checkpointed."""

    interval: Duration = Field(
        1.0,
        description="Seal the readings waiting at least this often, e.g. 1s. "
        "Shorter gives fresher proofs and more signatures.",
    )
    max_readings: int = Field(
        10000,
        ge=1,
        description="Seal as soon as this many readings wait, without waiting for `interval`. "
        "A seal may cover more while the signer is still busy with the previous one.",
    )
    checkpoint_every: int = Field(
        60,
        ge=1,
        description="Sign a checkpoint of the seal log every this many seals, "
        "or after `checkpoint_interval`, whichever comes first.",
    )
    checkpoint_interval: Duration = Field(
        60.0,
        description="Sign a checkpoint of the seal log at least this often, e.g. 60s, "
        "or after `checkpoint_every` seals, whichever comes first.",
    )


class BufferConfig(_Section):
    """The local store that keeps readings until they are delivered."""

    dir: FilePath = Field(
        "/var/lib/edgeseal",
        min_length=1,
        description="State directory; the buffer database is DIR/buffer.db. "
        "A relative path starts at the configuration file's folder.",
    )
    flush_interval: Duration = Field(
        0.02,
        description="Readings are written to disk at least this often, e.g. 20ms. Sealed readings are always on disk.",
    )
    max_pending: int = Field(
        100000,
        ge=1000,
        description="Readings held in memory while the database cannot be written. "
        "Beyond this the oldest are dropped, and the loss is recorded as a signed gap.",
    )


def _source_type() -> Any:
    """One item of `sources`: the model of whichever driver its `type` names."""
    # Union over a runtime tuple: the `X | Y` spelling cannot express it.
    return Annotated[Union[tuple(drivers.config_models())], Field(discriminator="type")]  # noqa: UP007


Source = _source_type()


class Config(_Section):
    """Configuration of an edgeseal gateway."""

    device: DeviceConfig = Field(description="Which gateway this is.")
    identity: IdentityConfig = Field(description="The key that signs this device's data, and its certificate chain.")
    sources: list[Source] = Field(  # type: ignore[valid-type]
        min_length=1, description="The devices to read (PLCs, sensors, simulators); each has a `type`."
    )
    seal: SealConfig = Field(default=SealConfig(), description="When readings are sealed and checkpointed.")
    buffer: BufferConfig = Field(default=BufferConfig(), description="The local buffer on disk.")

    @field_validator("sources")
    @classmethod
    def _unique_names(cls, sources: list[Any]) -> list[Any]:
        found = _duplicates((((index, "name"), source.name) for index, source in enumerate(sources)), "source name")
        found += _duplicates(_all_tag_names(sources), "tag name")
        if found:
            raise findings(found)
        return sources


def _all_tag_names(sources: list[Any]) -> Iterable[tuple[SubPath, str]]:
    for index, source in enumerate(sources):
        if isinstance(source, DefinesTags):
            named = source.tag_names()
        else:
            named = ((("tags", n, "name"), tag.name) for n, tag in enumerate(getattr(source, "tags", [])))
        for at, name in named:
            yield (index, *at), name


def _duplicates(named: Iterable[tuple[SubPath, str]], what: str) -> list[tuple[SubPath, str]]:
    """Names used before, reported where they are used again (the first use is not blamed).
    Several clashes at one place (generated names) make one finding."""
    first: dict[str, SubPath] = {}
    clashes: dict[SubPath, list[tuple[str, SubPath]]] = {}
    for at, name in named:
        if name in first:
            clashes.setdefault(at, []).append((name, first[name]))
        else:
            first[name] = at
    return [(at, _clash_message(what, found)) for at, found in clashes.items()]


def _clash_message(what: str, clashes: list[tuple[str, SubPath]]) -> str:
    name, earlier = clashes[0]
    more = f", and {len(clashes) - 1} more names used before" if len(clashes) > 1 else ""
    first = format_path(("sources", *earlier))
    return f"expected a unique {what}, found '{name}' again (first at {first}){more}"
