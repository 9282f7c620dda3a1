"""What the stream checker (agent.trust.stream) reports: one typed event per observable
thing, each with its one-line text and its JSON form (`edgeseal watch` prints one per line;
`--json` prints `as_dict()`, whose "event" names the type)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

Seqs = tuple[int, int]  # first and last seq, inclusive


@dataclass(frozen=True)
class Event:
    kind: ClassVar[str]
    is_finding: ClassVar[bool] = False

    def text(self) -> str:
        raise NotImplementedError

    def as_dict(self) -> dict[str, Any]:
        return {"event": self.kind, **dataclasses.asdict(self)}


@dataclass(frozen=True)
class CertificateAccepted(Event):
    """A device certificate chain that leads to a trusted root: seals by its key verify."""

    kind = "certificate"
    device: str
    subject: str
    root: str
    key_id: str
    source: str  # the certificate message, or the seal that carried the chain (x5chain)

    def text(self) -> str:
        return (
            f"certificate {self.device} ({self.subject}) under {self.root}, key id {self.key_id} (from {self.source})"
        )


@dataclass(frozen=True)
class BatchVerified(Event):
    """Signed by the device, and its readings hash to the sealed root."""

    kind = "batch"
    b: int
    boot: int
    seqs: Seqs | None  # None for a drop record, which holds no reading
    readings: int

    def text(self) -> str:
        if self.seqs is None:
            return f"b={self.b} verified: no readings (drop record), boot {self.boot}"
        first, last = self.seqs
        return f"b={self.b} verified: seq {first}..{last}, {self.readings} readings, boot {self.boot}"


@dataclass(frozen=True)
class Duplicate(Event):
    """The same batch message again, byte for byte: at-least-once delivery, not a finding."""

    kind = "duplicate"
    b: int

    def text(self) -> str:
        return f"duplicate of b={self.b}"


@dataclass(frozen=True)
class Missing(Event):
    """Batches skipped over: a finding at the end unless a drop record explains them first."""

    kind = "missing"
    first_b: int
    last_b: int
    seqs: Seqs | None  # the seqs they would hold; None where a neighbour is not known, or none

    def text(self) -> str:
        held = f" (seq {self.seqs[0]}..{self.seqs[1]})" if self.seqs else ""
        return f"missing {b_range(self.first_b, self.last_b)}{held}: not received (yet)"


@dataclass(frozen=True)
class Dropped(Event):
    """Missing batches that signed drop records account for: dropped from the device's full
    buffer before delivery."""

    kind = "dropped"
    first_b: int
    last_b: int
    seqs: Seqs
    why: str
    records: list[int]  # the b of each drop record that names part of `seqs`

    def text(self) -> str:
        signed = ", ".join(f"b={b}" for b in self.records)
        return (
            f"dropped undelivered: seqs {self.seqs[0]}..{self.seqs[1]} ({self.why}); "
            f"{b_range(self.first_b, self.last_b)}, signed in {signed}"
        )


@dataclass(frozen=True)
class SignedGap(Event):
    """Seqs the device says will never exist, and why, in the seal of batch b."""

    kind = "gap"
    b: int
    seqs: Seqs
    why: str

    def text(self) -> str:
        return f"signed gap: seqs {self.seqs[0]}..{self.seqs[1]} ({self.why}), signed in b={self.b}"


@dataclass(frozen=True)
class Restart(Event):
    """Batch b is the first of a newer boot than any before: the agent started again."""

    kind = "restart"
    b: int
    from_boot: int
    to_boot: int
    lost: Seqs | None  # readings lost before sealing, which the restart explains (unsigned)

    def text(self) -> str:
        lost = f"; seqs {self.lost[0]}..{self.lost[1]} lost at restart (unsigned)" if self.lost else ""
        return f"restart before b={self.b}: boot {self.from_boot} -> {self.to_boot}{lost}"


@dataclass(frozen=True)
class CheckpointVerified(Event):
    """A checkpoint signed by the device; `root` says how its root compares with the seals
    received: "matches", "later" (when seals up to b = size arrive) or "unchecked" (some
    seal of b 1..size will not come: before this watch began, or dropped undelivered)."""

    kind = "checkpoint"
    size: int
    root: str

    def text(self) -> str:
        status = {
            "matches": f"its root matches the seals b 1..{self.size} received",
            "later": f"its root is compared once seals up to b={self.size} arrive",
            "unchecked": f"its root is not compared: this watch cannot have every seal b 1..{self.size}",
        }[self.root]
        return f"checkpoint size={self.size} verified: {status}"


@dataclass(frozen=True)
class Held(Event):
    """A message signed by a key no certificate has named yet: checked once one arrives."""

    kind = "held"
    what: str

    def text(self) -> str:
        return f"{self.what}: held until a certificate arrives"


@dataclass(frozen=True)
class Finding(Event):
    """Something that does not verify, and where."""

    kind = "finding"
    is_finding = True
    where: str
    message: str

    def text(self) -> str:
        return f"FINDING {self.where}: {self.message}"


@dataclass(frozen=True)
class Summary(Event):
    kind = "summary"
    valid: bool
    batches: int  # distinct batches verified
    readings: int
    first_b: int | None
    last_b: int | None
    boots: list[int]
    duplicates: int
    dropped: int  # batches dropped undelivered, as drop records say
    checkpoints: int
    findings: int

    def text(self) -> str:
        span = ""
        if self.first_b is not None and self.last_b is not None:
            span = f" ({b_range(self.first_b, self.last_b)}, boots {', '.join(map(str, self.boots))})"
        return (
            f"summary: {'VALID' if self.valid else 'INVALID'}: {_count(self.batches, 'batch')} verified{span}, "
            f"{_count(self.readings, 'reading')}; {_count(self.duplicates, 'duplicate')}, "
            f"{self.dropped} dropped undelivered (signed), {_count(self.checkpoints, 'checkpoint')}; "
            f"{_count(self.findings, 'finding')}"
        )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}{'es' if noun.endswith('h') else 's'}"


def b_range(first: int, last: int) -> str:
    return f"b={first}" if first == last else f"b={first}..{last}"
