"""Configuration of an OPC UA source: one server endpoint (security, user), tag groups
that are subscribed or polled, and event/alarm subscriptions. No I/O here.

What the driver gets from a validated `SourceConfig`: node ids parsed into `NodeRef`s
(`OpcUaTag.ref()`, `EventGroup.notifier_ref()` …), event fields as `FieldPath`s, and
every default resolved (`SubscribeGroup.sampling()`, `.queue()`, `SecurityConfig.
message_mode()`, `SourceConfig.app_uri()`).
"""

from __future__ import annotations

import math
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from drivers.config_types import (
    Duration,
    Expected,
    Matching,
    SourceName,
    SubPath,
    TagName,
    backoff_findings,
    expected,
    findings,
)
from drivers.opcua.nodeid import NODE_ID_TEXT, NodeRef, parse_node_id

POLICIES = ("None", "Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss")
Policy = Literal[POLICIES]  # type: ignore[valid-type]
Mode = Literal["None", "Sign", "SignAndEncrypt"]

URL_TEXT = "an endpoint URL like opc.tcp://plc.local:4840 or opc.tcp://10.0.0.5:4840/path"
_URL = re.compile(r"opc\.tcp://(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::(?P<port>[0-9]{1,5}))?(?:/\S*)?")

SERVER_OBJECT = "i=2253"  # the Server object: the notifier of every event in the server
BASE_EVENT_TYPE = "i=2041"
DEFAULT_EVENT_FIELDS = ("EventType", "SourceName", "Time", "Severity", "Message")
# Part 9: what an alarm's reading carries besides the event fields, so that its state
# (and its acknowledgement) is sealed with it.
CONDITION_FIELDS = ("ConditionName", "ActiveState/Id", "AckedState/Id", "Retain")

FIELD_PATH_TEXT = "a field like Severity, ActiveState/Id or {urn:plant:press}Pressure/Value"
_FIELD_PATH = re.compile(r"(?:\{[^{}]+\})?[^/{}\s]+(?:/(?:\{[^{}]+\})?[^/{}\s]+)*")
_FIELD_SEGMENT = re.compile(r"(?:\{(?P<uri>[^{}]+)\})?(?P<name>[^/{}\s]+)")


class StrictModel(BaseModel):
    """Unknown keys are errors, and values are not converted (a quoted "5" stays text)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


def _url(value: str) -> str:
    match = _URL.fullmatch(value)
    if not match or (match["port"] is not None and not 1 <= int(match["port"]) <= 65535):
        raise expected(URL_TEXT)
    return value


def _node_id(value: str) -> str:
    try:
        parse_node_id(value)
    except ValueError as err:
        raise expected(str(err)) from None
    return value


Url = Annotated[str, AfterValidator(_url), Expected(URL_TEXT)]
NodeIdText = Annotated[str, AfterValidator(_node_id), Expected(NODE_ID_TEXT)]
FieldPathText = Annotated[str, Matching(FIELD_PATH_TEXT, _FIELD_PATH.pattern)]
EnvName = Annotated[str, Matching("an environment variable name like PLC_PASSWORD", r"[A-Za-z_][A-Za-z0-9_]*")]
SecretName = Annotated[str, Matching("a secret name: letters, digits, . _ -", r"[A-Za-z0-9._-]{1,64}")]


@dataclass(frozen=True)
class FieldPath:
    """An event field as a browse path from the event type: (namespace URI or None for
    namespace 0, browse name) per step, e.g. ActiveState/Id."""

    text: str
    steps: tuple[tuple[str | None, str], ...]


def parse_field_path(text: str) -> FieldPath:
    return FieldPath(text, tuple((m["uri"], m["name"]) for m in _FIELD_SEGMENT.finditer(text)))


class SecurityConfig(StrictModel):
    """How the connection is secured, and who this client is."""

    policy: Policy = Field(
        "None",
        description="Security policy: None, Basic256Sha256, Aes128_Sha256_RsaOaep or Aes256_Sha256_RsaPss.",
    )
    mode: Mode | None = Field(
        None,
        description="Message security: Sign or SignAndEncrypt (None only with policy None). "
        "Default: SignAndEncrypt with a secure policy.",
    )
    application_uri: str | None = Field(
        None,
        min_length=1,
        description="This client's application URI, written into its certificate. Default: urn:edgeseal:HOSTNAME.",
    )

    @model_validator(mode="after")
    def _mode_fits_policy(self) -> SecurityConfig:
        if self.policy == "None" and self.mode not in (None, "None"):
            raise findings([(("mode",), f"expected mode None with policy None, found {self.mode}")])
        if self.policy != "None" and self.mode == "None":
            raise findings([(("mode",), f"expected Sign or SignAndEncrypt with policy {self.policy}, found None")])
        return self

    def message_mode(self) -> Mode:
        return self.mode or ("None" if self.policy == "None" else "SignAndEncrypt")


class AuthConfig(StrictModel):
    """A user name and where its password comes from; never the password itself."""

    username: str = Field(min_length=1, description="User name the server knows.")
    password_env: EnvName | None = Field(None, description="Environment variable holding the password.")
    password_secret: SecretName | None = Field(
        None,
        description="Name of a TPM-sealed secret holding the password (edgeseal-provision secret seal NAME).",
    )

    @model_validator(mode="after")
    def _one_password_source(self) -> AuthConfig:
        if (self.password_env is None) == (self.password_secret is None):
            given = "both" if self.password_env else "neither"
            raise findings([((), f"expected one of password_env or password_secret, found {given}")])
        return self


class Deadband(StrictModel):
    """A data-change filter: changes smaller than this are not reported."""

    type: Literal["absolute", "percent"] = Field(
        description="absolute (in the value's unit) or percent (of the node's EURange, which the server must have)."
    )
    value: float = Field(ge=0, description="The deadband: a change must exceed it to be reported.")

    @model_validator(mode="after")
    def _percent_range(self) -> Deadband:
        if self.type == "percent" and self.value > 100:
            raise findings([(("value",), f"expected a percentage 0..100, found {self.value:g}")])
        return self


class OpcUaTag(StrictModel):
    """One variable to read."""

    name: TagName = Field(description="Tag name written into every reading, e.g. press1.force; unique across sources.")
    node: NodeIdText = Field(description="The variable's node id; prefer nsu= (namespace URI) to ns= (index).")
    deadband: Deadband | None = Field(None, description="Overrides the group's deadband for this tag (subscribe only).")

    def ref(self) -> NodeRef:
        return parse_node_id(self.node)


class SubscribeGroup(StrictModel):
    """Tags the server reports when they change (a subscription)."""

    mode: Literal["subscribe"] = Field(description="subscribe: the server reports changes.")
    publishing_interval: Duration = Field(1.0, description="How often the server sends what changed, e.g. 1s.")
    sampling_interval: Duration | None = Field(
        None, description="How often the server samples each value, e.g. 100ms. Default: the publishing interval."
    )
    queue_size: int | None = Field(
        None,
        ge=1,
        le=10000,
        description="Samples the server keeps per tag between two publications. Default: enough for every sample "
        "taken in one publishing interval, so none is lost.",
    )
    deadband: Deadband | None = Field(None, description="Report only changes larger than this, for every tag.")
    tags: list[OpcUaTag] = Field(min_length=1, description="The variables of this group.")

    def sampling(self) -> float:
        return self.sampling_interval or self.publishing_interval

    def queue(self) -> int:
        # rounded first: 0.07 / 0.01 is 7.000000000000001 in floats
        return self.queue_size or max(1, math.ceil(round(self.publishing_interval / self.sampling(), 6)))


class PollGroup(StrictModel):
    """Tags read at a fixed interval with batched Read requests."""

    mode: Literal["poll"] = Field(description="poll: the values are read every interval.")
    interval: Duration = Field(1.0, description="How often the tags are read, e.g. 5s.")
    tags: list[OpcUaTag] = Field(min_length=1, description="The variables of this group.")

    @model_validator(mode="after")
    def _no_deadband(self) -> PollGroup:
        found = [
            (("tags", index, "deadband"), "expected no deadband in a poll group (a deadband filters subscriptions)")
            for index, tag in enumerate(self.tags)
            if tag.deadband is not None
        ]
        if found:
            raise findings(found)
        return self


TagGroup = Annotated[SubscribeGroup | PollGroup, Field(discriminator="mode")]


class EventGroup(StrictModel):
    """Events (and Part 9 alarms) of one notifier, each sealed as one reading whose
    value is a map of the selected fields."""

    name: TagName = Field(description="Tag name of the readings these events become, e.g. press1.alarms.")
    notifier: NodeIdText = Field(
        SERVER_OBJECT, description="The object whose events are subscribed. Default: the Server object (all events)."
    )
    event_type: NodeIdText = Field(
        BASE_EVENT_TYPE,
        description="Only events of this type or its subtypes, e.g. i=2915 (AlarmConditionType). Default: all.",
    )
    fields: list[FieldPathText] = Field(
        list(DEFAULT_EVENT_FIELDS),
        min_length=1,
        description="The event fields kept, as browse paths from the event type: Severity, Message, "
        "ActiveState/Id, or {namespace-uri}Name for a vendor field.",
    )
    sources: list[NodeIdText] = Field(
        [], description="Keep only events whose SourceNode is one of these nodes. Default: every source."
    )
    alarms: bool = Field(
        False,
        description="Part 9 conditions: add the condition's state fields (ConditionName, ActiveState/Id, "
        "AckedState/Id, Retain) and ask for the alarms already active (ConditionRefresh) at every connect.",
    )
    publishing_interval: Duration = Field(1.0, description="How often the server sends new events, e.g. 500ms.")
    queue_size: int = Field(
        1000, ge=1, le=100000, description="Events the server keeps between two publications before dropping."
    )

    def notifier_ref(self) -> NodeRef:
        return parse_node_id(self.notifier)

    def type_ref(self) -> NodeRef:
        return parse_node_id(self.event_type)

    def source_refs(self) -> list[NodeRef]:
        return [parse_node_id(text) for text in self.sources]

    def field_paths(self) -> list[FieldPath]:
        """The fields read from each event: the configured ones, then the condition
        fields for alarms, each once."""
        texts = list(dict.fromkeys([*self.fields, *(CONDITION_FIELDS if self.alarms else ())]))
        return [parse_field_path(text) for text in texts]


class SourceConfig(StrictModel):
    """An OPC UA server and what is read from it."""

    name: SourceName = Field(description="Name of this source in logs and metrics; unique among sources.")
    type: Literal["opcua"] = Field(description="Source type: `opcua` for an OPC UA server (opc.tcp).")
    url: Url = Field(description="The server's endpoint URL, e.g. opc.tcp://press-plc:4840.")
    security: SecurityConfig = Field(
        SecurityConfig(), description="Security policy and mode; the server's certificate must be trusted."
    )
    auth: AuthConfig | None = Field(None, description="User name and password. Default: anonymous.")
    timeout: Duration = Field(5.0, description="How long to wait for an answer to one request, e.g. 5s.")
    session_timeout: Duration = Field(
        60.0, description="How long the server keeps the session (and its subscriptions) while unreachable."
    )
    check_interval: Duration = Field(
        5.0,
        description="How often the server's health is checked (its status, start time and namespaces), "
        "to notice a restart even when the connection survived it.",
    )
    reconnect_delay: Duration = Field(
        1.0, description="Wait before connecting again after a failure; doubles with each failure in a row."
    )
    reconnect_delay_max: Duration = Field(60.0, description="Longest wait between two connection attempts.")
    groups: list[TagGroup] = Field([], description="Tag groups, each subscribed or polled.")  # type: ignore[valid-type]
    events: list[EventGroup] = Field([], description="Event and alarm subscriptions.")

    @model_validator(mode="after")
    def _consistent(self) -> SourceConfig:
        found: list[tuple[SubPath, str]] = []
        if not self.groups and not self.events:
            found.append(((), "expected at least one entry in groups or events, found neither"))
        found += backoff_findings(self.reconnect_delay, self.reconnect_delay_max)
        if found:
            raise findings(found)
        return self

    def app_uri(self) -> str:
        return self.security.application_uri or f"urn:edgeseal:{socket.gethostname()}"

    def agent_wide(self) -> Iterator[tuple[str, SubPath, object]]:
        """One client certificate per gateway, so one application URI (see AgentWide)."""
        yield "OPC UA application_uri", ("security", "application_uri"), self.app_uri()

    def tag_names(self) -> Iterator[tuple[SubPath, str]]:
        """Every tag name with the field to blame for a duplicate (see DefinesTags)."""
        for g, group in enumerate(self.groups):
            for t, tag in enumerate(group.tags):
                yield ("groups", g, "tags", t, "name"), tag.name
        for e, events in enumerate(self.events):
            yield ("events", e, "name"), events.name
