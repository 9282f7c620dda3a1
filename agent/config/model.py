"""The configuration as typed, validated models. Field names are a contract: the rest of
the agent reads them, and plant engineers write them in YAML."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

import drivers
from agent.config.document import format_path
from agent.keys.tpm.handles import DEFAULT_HANDLE, handle_problem
from agent.keys.tpm.tcti import TCTI_RULE, parse_tcti
from agent.trust.certs import DEVICE_ID_PATTERN, DEVICE_ID_RULE
from drivers.config_types import AgentWide, DefinesTags, Duration, Expected, Matching, SubPath, expected, findings

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


class TpmConfig(_Section):
    """Where the TPM is and how the device key in it is used."""

    tcti: Annotated[str, Expected(TCTI_RULE)] = Field(
        "device:/dev/tpmrm0",
        description="How to reach the TPM: `device:/dev/tpmrm0` (the kernel resource manager), "
        "`tabrmd` (the access broker) or `swtpm:host=127.0.0.1,port=2321` (a software TPM, for tests).",
    )
    handle: int = Field(
        DEFAULT_HANDLE,
        description="Persistent handle of the device key, e.g. 0x81020001 (the default: outside the "
        "TCG-reserved SRK range 0x81000000-0x8100FFFF and EK range 0x81010000-0x8101FFFF).",
    )
    min_sign_interval: Duration = Field(
        0.0,
        description="Shortest time between two signatures, e.g. 5s for a secure element that throttles; "
        "seals wait and grow meanwhile, readings do not wait.",
    )
    secrets_dir: FilePath = Field(
        "secrets",
        min_length=1,
        description="Folder of TPM-sealed secrets (`edgeseal-provision secret seal NAME`). "
        "A relative path starts at the configuration file's folder.",
    )

    @field_validator("tcti")
    @classmethod
    def _known_tcti(cls, value: str) -> str:
        try:
            parse_tcti(value)
        except ValueError as exc:
            raise expected(str(exc)) from None
        return value

    @field_validator("handle")
    @classmethod
    def _owner_persistent(cls, value: int) -> int:
        problem = handle_problem(value)
        if problem:
            raise findings([((), problem)])
        return value


class IdentityConfig(_Section):
    """The key that signs this device's data, and the certificate that vouches for it."""

    signer: Literal["software", "tpm"] = Field(
        "software",
        description="Where the signing key lives. `tpm`: in this gateway's TPM (production). "
        "`software`: a private key file (development and tests only).",
    )
    key: FilePath | None = Field(
        None,
        min_length=1,
        description="signer: software only. Path of the device's private key file (PEM). "
        "A relative path starts at the configuration file's folder.",
    )
    tpm: TpmConfig | None = Field(None, description="signer: tpm only (optional: defaults apply).")
    cert_chain: FilePath = Field(
        min_length=1,
        description="Path of the device's certificate chain (PEM): the device certificate first, then the "
        "intermediate certificates. A relative path starts at the configuration file's folder.",
    )

    @model_validator(mode="after")
    def _signer_fields(self) -> IdentityConfig:
        found: list[tuple[SubPath, str]] = []
        if self.signer == "software" and self.key is None:
            found.append((("key",), "expected the key file of signer: software, found nothing"))
        if self.signer == "tpm" and self.key is not None:
            found.append((("key",), "expected no key file with signer: tpm (the key never leaves the TPM), found one"))
        if self.signer == "software" and self.tpm is not None:
            found.append((("tpm",), "expected no tpm section with signer: software, found one"))
        if found:
            raise findings(found)
        return self

    @property
    def tpm_settings(self) -> TpmConfig:
        return self.tpm or TpmConfig()


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
        found += _disagreements(sources)
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


def _disagreements(sources: list[Any]) -> list[tuple[SubPath, str]]:
    """Agent-wide settings (see AgentWide) that a source sets otherwise than the first."""
    first: dict[str, tuple[SubPath, object]] = {}
    found: list[tuple[SubPath, str]] = []
    for index, source in enumerate(sources):
        if not isinstance(source, AgentWide):
            continue
        for setting, at, value in source.agent_wide():
            path = (index, *at)
            if setting not in first:
                first[setting] = (path, value)
            elif value != first[setting][1]:
                earlier, expected_value = first[setting]
                where = format_path(("sources", *earlier))
                found.append(
                    (path, f"expected one {setting} per gateway, {expected_value} as at {where}, found {value}")
                )
    return found


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
