"""Configuration of the simulator source: tags whose values follow a waveform, for
demonstrations, commissioning without a PLC, and load tests. No I/O here."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, WithJsonSchema, model_validator

from drivers.api import Quality, is_good
from drivers.config_types import (
    Duration,
    Expected,
    Matching,
    SourceName,
    SubPath,
    TagName,
    expected,
    findings,
    format_duration,
)

TagType = Literal["bool", "int", "float", "text", "bytes"]
Pattern = Literal["constant", "sine", "ramp", "random", "counter", "step"]

Prefix = Annotated[str, Matching("up to 120 characters without spaces", r"\S{0,120}")]

SCALAR_TEXT = "a single value (a number, text, true or false)"


def _scalar(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise expected(SCALAR_TEXT)


Scalar = Annotated[
    Any,
    PlainValidator(_scalar),
    WithJsonSchema({"type": ["null", "boolean", "number", "string"]}),
    Expected(SCALAR_TEXT),
]

PATTERNS = (
    "How values change: "
    "constant (always `value`, or `min` without one), "
    "sine (a wave between min and max, one cycle per period), "
    "ramp (climbs from min to max over one period, then starts again), "
    "random (anywhere between min and max), "
    "counter (up by one per sample, starting at min), "
    "step (min for half a period, then max for half a period)."
)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class Fault(_Model):
    """A repeating outage: the tag reads with a Bad quality and no value for a while."""

    every: Duration = Field(description="Time from the start of one outage to the start of the next, e.g. 10s.")
    duration: Duration = Field(description="How long each outage lasts, e.g. 2s; shorter than `every`.")
    quality: int = Field(
        int(Quality.BAD_COMMUNICATION_ERROR),
        ge=0,
        le=0xFFFFFFFF,
        description="OPC UA status code of the readings during an outage; must be Bad or Uncertain. "
        "Default 0x80050000 (Bad_CommunicationError); 0x800A0000 is Bad_Timeout.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Fault:
        found: list[tuple[SubPath, str]] = []
        if self.duration >= self.every:
            every, duration = format_duration(self.every), format_duration(self.duration)
            found.append((("duration",), f"expected a duration shorter than every ({every}), found {duration}"))
        if is_good(self.quality):
            found.append(
                (
                    ("quality",),
                    f"expected a Bad or Uncertain status code such as 0x80050000, found 0x{self.quality:08X} (Good)",
                )
            )
        if found:
            raise findings(found)
        return self


class _Waveform(_Model):
    type: TagType = Field("float", description="Data type of the values: bool, int, float, text or bytes.")
    pattern: Pattern = Field("sine", description=PATTERNS)
    min: float = Field(0.0, description="Lowest value the pattern produces.")
    max: float = Field(100.0, description="Highest value the pattern produces; at least `min`.")
    period: Duration = Field(60.0, description="Length of one cycle of the pattern, e.g. 60s.")

    @model_validator(mode="after")
    def _max_not_below_min(self) -> _Waveform:
        if self.max < self.min:
            raise findings([(("max",), f"expected a number >= min ({self.min:g}), found {self.max:g}")])
        return self


class SimTag(_Waveform):
    """One simulated tag."""

    name: TagName = Field(
        description="Tag name written into every reading, e.g. press.temp; unique across all sources."
    )
    value: Scalar = Field(None, description="The value of a `constant` pattern: a number, text, true or false.")
    unit: str | None = Field(None, description="Engineering unit, e.g. degC; for documentation only.")
    fault: Fault | None = Field(None, description="Makes the tag fail on a schedule, to see how failures look.")


class Generate(_Waveform):
    """Many tags at once, named prefix + zero-padded index, for load tests."""

    count: int = Field(ge=1, le=1_000_000, description="How many tags to generate (1 to 1000000).")
    prefix: Prefix = Field("sim.", description="Start of every generated name: `sim.` gives sim.000, sim.001...")

    def names(self) -> list[str]:
        width = len(str(self.count - 1))
        return [f"{self.prefix}{index:0{width}d}" for index in range(self.count)]


class SourceConfig(_Model):
    """A simulated device: readings without any hardware."""

    name: SourceName = Field(description="Name of this source in logs and metrics; unique among sources.")
    type: Literal["simulator"] = Field(description="Source type: `simulator` for simulated values.")
    interval: Duration = Field(1.0, description="How often every tag of this source is sampled, e.g. 1s.")
    tags: list[SimTag] = Field(default_factory=list, description="The simulated tags.")
    generate: Generate | None = Field(None, description="Adds many generated tags at once, for load tests.")

    @model_validator(mode="after")
    def _has_tags(self) -> SourceConfig:
        if not self.tags and self.generate is None:
            raise findings([(("tags",), "expected at least one tag (in tags or generate), found none")])
        return self

    def tag_names(self) -> Iterator[tuple[SubPath, str]]:
        """Every tag name with the field to blame for a duplicate (see DefinesTags)."""
        for index, tag in enumerate(self.tags):
            yield ("tags", index, "name"), tag.name
        if self.generate is not None:
            for name in self.generate.names():
                yield ("generate", "prefix"), name
