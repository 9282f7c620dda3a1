"""The configuration as typed, validated models. Field names are a contract: the rest of
the agent reads them, and plant engineers write them in YAML."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

import drivers
from agent.config.anchoring import AnchorConfig
from agent.config.document import format_path
from agent.keys.tpm.handles import DEFAULT_HANDLE, handle_problem
from agent.keys.tpm.tcti import TCTI_RULE, parse_tcti
from agent.trust.certs import DEVICE_ID_PATTERN, DEVICE_ID_RULE
from drivers.config_types import (
    AgentWide,
    ByteSize,
    DefinesTags,
    Duration,
    Expected,
    Matching,
    SubPath,
    backoff_findings,
    expected,
    findings,
)

DeviceId = Annotated[str, Matching(DEVICE_ID_RULE, DEVICE_ID_PATTERN)]
MQTT_URL_RULE = "a broker URL like mqtt://broker.local or mqtts://broker.local:8883"
MQTT_URL_PATTERN = r"mqtts?://(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::[0-9]{1,5})?/?"
FilePath = Annotated[str, Expected("a file path")]
LISTEN_RULE = "an address to listen on like 127.0.0.1:9108, [::1]:9108 or 0.0.0.0:9108"
LISTEN_PATTERN = r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):[0-9]{1,5}"


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
        description="How to reach the TPM: `device:/dev/tpmrm0` (the kernel resource manager: use it, not "
        "/dev/tpm0, so other TPM users cannot disturb the agent), `tabrmd` (the access broker) or "
        "`swtpm:host=127.0.0.1,port=2321` (a software TPM, for tests and the demo).",
    )
    handle: int = Field(
        DEFAULT_HANDLE,
        description="Persistent handle of the device key, e.g. 0x81020001. The default stays clear of the "
        "TCG-reserved ranges: storage root keys 0x81000000-0x8100FFFF and endorsement keys "
        "0x81010000-0x8101FFFF; platform handles from 0x81800000 are not the owner's to use.",
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
        description="Where the signing key lives. `tpm`: in this gateway's TPM, where it was created at the "
        "factory and never leaves (production). `software`: a private key file (development and tests only; "
        'it proves only "whoever holds this file").',
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
        "Beyond this the oldest are dropped, and the loss is recorded as a signed gap that every verifier sees.",
    )
    max_bytes: ByteSize = Field(
        1 << 30,
        description="Disk budget of the buffer, e.g. 2GB or 500MiB. When it is reached, the readings of "
        "delivered batches are deleted first (oldest first), then those of the oldest undelivered batches, "
        "and a signed drop record says which seqs went and why; it is published like any batch. Reading "
        "never stops. Seals and checkpoints are always kept, and so is the newest batch: the budget may be "
        "passed by at most one batch.",
    )
    keep_delivered: Duration = Field(
        7 * 86400.0,
        description="How long the readings of delivered batches stay in the buffer (for local exports), "
        "e.g. 7d; less when the budget needs the room. Seals and checkpoints are always kept.",
    )
    warn_at: int = Field(80, ge=1, le=100, description="Warn when the buffer fills this percentage of max_bytes.")


class MqttTls(_Section):
    """TLS to the broker (with an mqtts:// URL)."""

    ca_file: FilePath | None = Field(
        None,
        min_length=1,
        description="CA certificate(s) that sign the broker's certificate (PEM). Default: the system's.",
    )
    cert_file: FilePath | None = Field(
        None, min_length=1, description="This gateway's client certificate (PEM), for mutual TLS."
    )
    key_file: FilePath | None = Field(None, min_length=1, description="Its private key (PEM), for mutual TLS.")

    @model_validator(mode="after")
    def _pair(self) -> MqttTls:
        if (self.cert_file is None) != (self.key_file is None):
            raise findings([((), "expected cert_file and key_file together (mutual TLS), found only one")])
        return self


class MqttLive(_Section):
    """An unsigned mirror of the latest value of each tag, for dashboards."""

    enabled: bool = Field(False, description="Publish each reading as plain JSON on PREFIX/live/TAG (not signed).")


class MqttConfig(_Section):
    """The MQTT broker that sealed batches, checkpoints and the certificate go to."""

    url: Annotated[str, Matching(MQTT_URL_RULE, MQTT_URL_PATTERN)] = Field(
        description="The broker: mqtt://HOST[:PORT] (port 1883) or mqtts://HOST[:PORT] (TLS, port 8883)."
    )
    client_id: str | None = Field(
        None, min_length=1, max_length=64, description="MQTT client id. Default: edgeseal-DEVICE_ID."
    )
    protocol: Literal["3.1.1", "5"] = Field("5", description="MQTT protocol version: 3.1.1 or 5.")
    keepalive: Duration = Field(
        30.0, description="Keep-alive interval, e.g. 30s; a silent broker is noticed after 1.5x this."
    )
    clean_start: bool = Field(
        False,
        description="Start a clean session at each connect. "
        "Default: a persistent session (the broker keeps QoS 1 state).",
    )
    tls: MqttTls | None = Field(None, description="TLS settings, with an mqtts:// URL.")
    username: str | None = Field(None, min_length=1, description="User name at the broker.")
    password_env: str | None = Field(None, min_length=1, description="Environment variable holding the password.")
    password_secret: str | None = Field(
        None, min_length=1, description="Name of a TPM-sealed secret holding the password (needs identity.signer: tpm)."
    )
    topic_prefix: str = Field(
        "edgeseal/v1/{device}",
        min_length=1,
        description="Topics start with this; {device} is the device id, e.g. plant7/edgeseal/{device}.",
    )
    reconnect_delay: Duration = Field(
        1.0, description="Wait before connecting again after a failure; doubles with each failure in a row."
    )
    reconnect_delay_max: Duration = Field(
        60.0, description="Longest wait between two connection attempts: at most this long after a broker returns."
    )
    max_in_flight: int = Field(10, ge=1, le=1000, description="Batches published and not yet acknowledged, at most.")
    drain_rate: float = Field(
        20.0,
        gt=0,
        description="Batches per second at most while catching up a backlog, so live data keeps flowing.",
    )
    live: MqttLive = Field(MqttLive(), description="Unsigned live values for dashboards; off by default.")

    @model_validator(mode="after")
    def _consistent(self) -> MqttConfig:
        found: list[tuple[SubPath, str]] = []
        if self.tls is not None and not self.url.startswith("mqtts://"):
            found.append((("tls",), "expected tls settings only with an mqtts:// url, found them with mqtt://"))
        if self.password_env is not None and self.password_secret is not None:
            found.append((("password_secret",), "expected one of password_env or password_secret, found both"))
        if (self.password_env or self.password_secret) and self.username is None:
            found.append((("username",), "expected a username with a password, found none"))
        found += backoff_findings(self.reconnect_delay, self.reconnect_delay_max)
        if found:
            raise findings(found)
        return self


class MetricsConfig(_Section):
    """The Prometheus endpoint of the agent."""

    listen: Annotated[str, Matching(LISTEN_RULE, LISTEN_PATTERN)] = Field(
        "127.0.0.1:9108",
        description="HOST:PORT where GET /metrics answers. The default answers only on the gateway itself; "
        "0.0.0.0:9108 lets a Prometheus server on the plant network scrape it. A port in use stops the start.",
    )

    @field_validator("listen")
    @classmethod
    def _port_in_range(cls, value: str) -> str:
        if not 1 <= int(value.rpartition(":")[2]) <= 65535:
            raise expected(LISTEN_RULE + " (port 1 to 65535)")
        return value


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
    mqtt: MqttConfig | None = Field(None, description="Where sealed data is published. Default: not published.")
    anchor: AnchorConfig | None = Field(
        None, description="Where checkpoints of the device log are anchored on chain. Default: not anchored."
    )
    metrics: MetricsConfig | None = Field(
        None, description="A Prometheus endpoint for the agent's metrics. Default: none."
    )

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
