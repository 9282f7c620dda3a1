"""How a verification report reads: for people (text) and for programs (--json)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from agent.trust.anchor_check import AnchorCheck, AnchorClaim
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
        # checked against no chain (no --rpc): not part of "valid"
        "unverified_anchor_claims": [_claim(a) for a in report.anchors] if report.chain_checks is None else [],
        "anchors": None if report.chain_checks is None else [_chain_check(c) for c in report.chain_checks],
        "findings": [{"where": f.where, "message": f.message} for f in report.findings],
    }


def _claim(claim: AnchorClaim) -> dict[str, Any]:
    r = claim.record
    return {
        "size": claim.checkpoint.size,
        "chain_id": r.chain_id,
        "block": r.block,
        "confirmations": r.confirmations,
        "checked_on_chain": False,
    }


def _chain_check(check: AnchorCheck) -> dict[str, Any]:
    r = check.claim.record
    return {
        "index": check.claim.index,
        "size": check.claim.checkpoint.size,
        "chain_id": r.chain_id,
        "contract": _hex(r.contract),
        "block": r.block,
        "block_hash": _hex(r.block_hash),
        "verified": check.verified,
        "confirmations": check.confirmations,  # counted now; null when the block is not on the chain
        "claimed_confirmations": r.confirmations,
        "submitter": _hex(check.log.event.submitter) if check.log else None,
        "tx": _hex(check.log.tx) if check.log else None,  # where the log was found
        "record_tx": _hex(r.tx),
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
    lines += _anchors(report)
    for f in report.findings:
        lines.append(f"  FINDING     {f}")
    return "\n".join(lines)


def _anchors(report: Report) -> list[str]:
    if not report.anchors:
        return ["  anchored    no (the bundle carries no anchor records)"] if report.valid else []
    if report.chain_checks is None:
        return [
            f"  anchor      {_claimed(a)}: NOT VERIFIED (no chain access); VALID does not cover it"
            for a in report.anchors
        ]
    lines = [line for check in report.chain_checks for line in _checked(check)]
    verified = [c.claim for c in report.chain_checks if c.verified]
    if verified and report.valid:
        top = max(verified, key=lambda a: a.checkpoint.size)
        size = top.checkpoint.size
        lines.append(
            f"  anchored    history up to log size {size} (b 1..{size}), in block {top.record.block}"
            f" of chain {top.record.chain_id}: verified on chain"
        )
    return lines


def _checked(check: AnchorCheck) -> list[str]:
    a = check.claim
    if not check.verified or check.log is None:
        return [f"  anchor      {_claimed(a)}: NOT VERIFIED on chain (see the findings)"]
    place = f"log size {a.checkpoint.size} in block {a.record.block} of chain {a.record.chain_id}"
    count = "1 confirmation" if check.confirmations == 1 else f"{check.confirmations} confirmations"
    proof = f"{count}, submitter {_hex(check.log.event.submitter)}"
    return [f"  anchor      {place}: VERIFIED on chain ({proof})"]


def _claimed(claim: AnchorClaim) -> str:
    return f"log size {claim.checkpoint.size} claimed in block {claim.record.block} of chain {claim.record.chain_id}"


def _hex(data: bytes) -> str:
    return "0x" + data.hex()


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
