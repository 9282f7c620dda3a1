"""`edgeseal status`: what an operator asks first, read from the state directory without
disturbing a running agent (no lock; a consistent snapshot): how far sealing has come,
and what waits for the broker — batches, readings, the age of the oldest, and what the
disk budget dropped; how far the log is anchored on chain, and any anchoring alarm; and
whether each source's devices answer, with their latest values (agent.health)."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Any, TextIO

from agent.buffer.store import Buffer
from agent.health import read_health
from agent.trust.bundle import decode_anchor

ANSWERING_WITHIN = 60.0  # seconds since a source's last Good reading
STALE_AFTER = 30.0  # seconds: an agent that runs rewrites its health file every few
SHOWN_TAGS = 5


@dataclass(frozen=True)
class Status:
    sealed_batches: int
    last_seal_t: int | None
    checkpointed: int  # seal log size the latest checkpoint covers
    waiting_batches: int  # sealed, not yet acknowledged by the broker
    waiting_readings: int
    oldest_waiting_t: int | None
    dropped_batches: int  # dropped undelivered when the disk budget was reached, ever
    used_bytes: int
    anchored: int  # seal log size of the latest final anchor; 0: none
    anchored_block: int | None
    anchored_t: int | None  # when that anchor was found final
    anchor_pending_since: int | None  # signing time of the oldest anchor transaction not yet final
    anchor_alarms: list[str]  # the chain holds what this log cannot explain (DESIGN 3.5; docs/anchoring.md)
    health: dict[str, Any] | None  # the agent's latest view of its sources (agent.health); None: never written


def read_status(buffer: Buffer) -> Status:
    with buffer.snapshot():
        last = buffer.last_seal()
        backlog = buffer.backlog()
        journal = buffer.anchors
        anchor = journal.latest_anchored()
        pending = journal.open_transactions()
        return Status(
            sealed_batches=last.b if last else 0,
            last_seal_t=last.t if last else None,
            checkpointed=buffer.last_checkpoint_size(),
            waiting_batches=backlog.batches,
            waiting_readings=backlog.readings,
            oldest_waiting_t=backlog.oldest_t,
            dropped_batches=backlog.dropped_batches,
            used_bytes=backlog.used_bytes,
            anchored=anchor.size if anchor else 0,
            anchored_block=decode_anchor(anchor.record).block if anchor else None,
            anchored_t=anchor.t if anchor else None,
            anchor_pending_since=pending[0].signed if pending else None,
            anchor_alarms=[alarm.message for alarm in journal.alarms()],
            health=read_health(buffer.path.parent),
        )


def print_status(status: Status, out: TextIO, *, as_json: bool, now_ns: int | None = None) -> None:
    if as_json:
        print(json.dumps(asdict(status)), file=out)
        return
    now_ns = now_ns or time.time_ns()
    print(f"sealed       {status.sealed_batches} batches, the last {_age(status.last_seal_t, now_ns)}", file=out)
    print(f"checkpointed {status.checkpointed} of them", file=out)
    oldest = f", the oldest sealed {_age(status.oldest_waiting_t, now_ns)}" if status.waiting_batches else ""
    print(f"waiting      {status.waiting_batches} batches, {status.waiting_readings} readings{oldest}", file=out)
    print(f"dropped      {status.dropped_batches} batches (disk budget)", file=out)
    print(f"buffer       {status.used_bytes / 1e6:.1f} MB in use", file=out)
    if status.anchored:
        behind = status.sealed_batches - status.anchored
        anchored = f"log size {status.anchored} in block {status.anchored_block}, {_age(status.anchored_t, now_ns)}"
        print(f"anchored     {anchored}; {behind} seals not yet anchored", file=out)
    else:
        print("anchored     never", file=out)
    if status.anchor_pending_since is not None:
        print(f"anchoring    a transaction waits, signed {_age(status.anchor_pending_since, now_ns)}", file=out)
    for alarm in status.anchor_alarms:
        print(f"ALARM        {alarm}", file=out)
    for line in _sources(status.health, now_ns):
        print(line, file=out)


def _sources(health: dict[str, Any] | None, now_ns: int) -> list[str]:
    """A line per source: answering or not, and its tags' latest values."""
    if health is None:
        return ["sources      unknown (the agent has not reported yet)"]
    stale = now_ns - health["t"] > STALE_AFTER * 1e9
    lines = [f"sources      as the agent saw them {_age(health['t'], now_ns)}" + (" (is it running?)" if stale else "")]
    for name, source in health["sources"].items():
        good = source["last_good"]
        answering = good is not None and health["t"] - good <= ANSWERING_WITHIN * 1e9
        state = (
            f"answering, last good reading {_age(good, now_ns)}"
            if answering
            else (f"NOT ANSWERING (last good reading {_age(good, now_ns)})")
        )
        values = [_tag(tag, r) for tag, r in list(source["tags"].items())[:SHOWN_TAGS]]
        more = len(source["tags"]) - SHOWN_TAGS
        lines.append(f"  {name:<10} {state}: " + ", ".join(values) + (f", and {more} more" if more > 0 else ""))
    return lines


def _tag(tag: str, reading: dict[str, Any]) -> str:
    quality = reading["quality"]
    return f"{tag}={reading['value']!r}" if quality == 0 else f"{tag} quality 0x{quality:08X}"


def _age(t: int | None, now_ns: int) -> str:
    return "never" if t is None else f"{max(0, now_ns - t) / 1e9:.0f}s ago"
