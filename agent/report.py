"""How a verification report reads: for people (text) and for programs (--json)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from agent.trust.revocation import CrlCheck
from agent.trust.verify import Report


def as_dict(report: Report) -> dict[str, Any]:
    return {
        "valid": report.valid,
        "selective": report.selective,
        "device": report.device,
        "certificate": {"subject": report.device_subject, "root": report.root_subject, "key_id": report.key_id},
        "revocation": None if report.revocation is None else [_crl_check(c) for c in report.revocation],
        "batches": report.batches,
        "batch_range": [report.first_b, report.last_b] if report.batches else None,
        "readings": report.readings,
        "boots": report.boots,
        "complete_seq_ranges": [list(r) for r in report.complete],
        "gaps": [{"from": g.first, "to": g.last, "why": g.why, "batch": g.b, "signed": g.signed} for g in report.gaps],
        "tags": dict(sorted(report.tags.items())),
        "checkpointed_log_size": report.checkpointed_size,
        "unverified_anchor_claims": report.anchors,  # checked against no chain: not part of "valid"
        "findings": [{"where": f.where, "message": f.message} for f in report.findings],
    }


def _crl_check(check: CrlCheck) -> dict[str, Any]:
    return {
        "subject": check.subject,
        "serial": f"{check.serial_number:x}",
        "issuer": check.issuer,
        "checked": check.this_update is not None,
        "crl_this_update": _iso(check.this_update),
        "revoked": check.revoked,
        "revoked_at": _iso(check.revoked_at),
        "reason": check.reason,
    }


def render_json(report: Report) -> str:
    return json.dumps(as_dict(report), indent=2)


def render_text(report: Report, name: str) -> str:
    lines = [f"{name}: {'VALID' if report.valid else 'INVALID'}"]
    if report.device:
        lines.append(f"  device      {report.device}: {report.device_subject}")
        lines.append(f"  key id      {report.key_id}")
        lines.append(f"  root        {report.root_subject}")
        lines += [f"  revocation  {status}" for status in _revocation(report)]
    if report.batches:
        kind = "selective: disclosed readings only" if report.selective else "full"
        proven = "verified readings" if report.valid else "readings verified before the findings below"
        lines.append(
            f"  content     {report.readings} {proven} in {report.batches} batches "
            f"(b {report.first_b}..{report.last_b}, boots {_list(report.boots)}; {kind})"
        )
    if report.tags:
        lines.append("  disclosed   " + ", ".join(f"{tag} ({n})" for tag, n in sorted(report.tags.items())))
    if report.complete:
        lines.append("  complete    seq " + ", ".join(f"{a}..{b}" for a, b in report.complete))
    for g in report.gaps:
        origin = f"signed in batch {g.b}" if g.signed else "unsigned"
        lines.append(f"  gap         seq {g.first}..{g.last}: {g.why} ({origin})")
    if report.checkpointed_size:
        size = report.checkpointed_size
        lines.append(f"  device log  signed checkpoint of {size} seals (b 1..{size}); every batch here is in it")
        if report.last_b is not None and report.last_b < size and not report.selective:
            lines.append(f"  not here    b {report.last_b + 1}..{size} are in the device log but not in this bundle")
    for a in report.anchors:
        claim = f"log size {a['size']} claimed in block {a['block']} of chain {a['chain_id']}"
        lines.append(f"  anchor      {claim}: NOT VERIFIED (no chain access); VALID does not cover it")
    if not report.anchors and report.valid:
        lines.append("  anchored    no (the bundle carries no anchor records)")
    for f in report.findings:
        lines.append(f"  FINDING     {f}")
    return "\n".join(lines)


def _revocation(report: Report) -> list[str]:
    if report.revocation is None:
        return ["not checked (no CRL given)"]
    return [_crl_status(c) for c in report.revocation]


def _crl_status(c: CrlCheck) -> str:
    if c.this_update is None:
        return f"{c.subject}: not checked (no CRL of {c.issuer} given)"
    if c.revoked_at is not None:
        return f"{c.subject}: REVOKED on {c.revoked_at.isoformat()} (CRL of {c.issuer})"
    return f"{c.subject}: not revoked (CRL of {c.issuer}, issued {c.this_update.isoformat()})"


def _iso(moment: dt.datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _list(items: list[int]) -> str:
    return ", ".join(map(str, items))
