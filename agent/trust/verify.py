"""The verifier: what a bundle proves, step by step (numbered as in docs/formats.md).

1. The bundle is a version-1 bundle of the specified shape.
2. Its certificate chain leads from the device key to a root the auditor trusts, and
   no CRL the auditor gives lists a certificate of it.
3. Every seal and checkpoint is a COSE_Sign1 by that key (kid and signature).
4. Every batch's readings hash to the root its seal signs (full: all of them;
   selective: each disclosed reading through its inclusion proof).
5. Seals chain (b without holes, prev = hash of the previous seal) and seqs are
   complete, except for gaps the device signed or a restart explains.
6. Each seal is in the device seal log at a signed checkpoint, and consecutive
   checkpoints are consistent.
7. Anchor records refer to checkpoints of this bundle, in increasing size. Checking them
   against a chain needs a node (agent.anchor.onchain); its results come back through
   `Report.record_chain_checks`, judged by agent.trust.anchor_check.

Malformed input raises `NotABundle`, and a CRL that no CA of the chain signed raises
`CrlError`; everything else becomes findings in the report, so one run says everything
that is wrong, and where.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509

from agent.trust import cose, merkle
from agent.trust.anchor_check import AnchorCheck, AnchorClaim
from agent.trust.bundle import (
    Batch,
    Bundle,
    BundleFormatError,
    NotABundle,
    SelectiveBatch,
    decode_bundle,
)
from agent.trust.certs import ChainError, DeviceIdentity, check_valid_at, key_id, parse_der_chain, verify_chain
from agent.trust.chain import GapRecord, drop_tiling, first_seal_problems, link_seals
from agent.trust.leaf import (
    NO_READINGS_SALT_KEY,
    LeafError,
    check_leaves,
    decode_leaf,
    leaf_hashes,
    salted_leaf_hash,
)
from agent.trust.payloads import (
    CheckpointPayload,
    Gap,
    PayloadError,
    SealPayload,
    open_checkpoint,
    open_seal,
    seal_digest,
)
from agent.trust.revocation import CrlCheck, check_revocation


@dataclass(frozen=True)
class Finding:
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass
class Report:
    selective: bool = False
    device: str | None = None
    device_subject: str | None = None
    root_subject: str | None = None
    key_id: str | None = None
    revocation: list[CrlCheck] | None = None  # None: no CRL was given
    batches: int = 0
    readings: int = 0
    first_b: int | None = None
    last_b: int | None = None
    boots: list[int] = field(default_factory=list)
    complete: list[tuple[int, int]] = field(default_factory=list)
    gaps: list[GapRecord] = field(default_factory=list)
    tags: Counter[str] = field(default_factory=Counter)
    checkpointed_size: int | None = None
    anchors: list[AnchorClaim] = field(default_factory=list)
    chain_checks: list[AnchorCheck] | None = None  # None: not checked on a chain (no --rpc)
    findings: list[Finding] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.findings

    def fail(self, where: str, message: str) -> None:
        self.findings.append(Finding(where, message))

    def record_chain_checks(self, checks: list[AnchorCheck]) -> None:
        """Step 7 on a chain: each problem is a finding at its record."""
        self.chain_checks = checks
        for check in checks:
            for problem in check.problems:
                self.fail(f"anchors[{check.claim.index}]", problem)
        if self.findings:
            self.withhold_whole_claims()

    def withhold_whole_claims(self) -> None:
        """Claims about the whole (completeness, signed gaps, log coverage) hold only if
        all holds."""
        self.complete, self.gaps, self.checkpointed_size = [], [], None


@dataclass(frozen=True)
class _Seal:
    index: int  # position in the bundle
    cose_bytes: bytes
    msg: cose.Sign1
    payload: SealPayload


MapFn = Callable[..., Iterable[Any]]


def verify_bundle(
    data: bytes,
    roots: list[x509.Certificate],
    map_fn: MapFn = map,
    *,
    crls: Sequence[x509.CertificateRevocationList] = (),
) -> Report:
    """Step 1 raises NotABundle for unusable input, step 2 CrlError for an unusable CRL;
    all else is reported.

    `map_fn` runs step 4's per-batch work (`check_full_batch`, a pure function); pass a
    process pool's map to verify batches on several cores."""
    report = Report()
    try:
        bundle = decode_bundle(data)
    except NotABundle:
        raise
    except BundleFormatError as exc:
        report.fail("bundle", str(exc))
        return report
    report.selective = bundle.selective
    _Verifier(bundle, roots, crls, report, map_fn).run()
    return report


class _Verifier:
    def __init__(
        self,
        bundle: Bundle,
        roots: list[x509.Certificate],
        crls: Sequence[x509.CertificateRevocationList],
        report: Report,
        map_fn: MapFn,
    ) -> None:
        self.bundle, self.roots, self.crls, self.report, self.map_fn = bundle, roots, crls, report, map_fn

    def run(self) -> None:
        b = self.bundle
        if not b.batches:
            self.report.fail("bundle", "holds no batch: it proves nothing")
            return
        seals = self._parse_seals()
        checkpoints = self._parse_checkpoints()
        if seals is None or checkpoints is None:
            return
        identity = self._identity(seals, checkpoints)  # step 2
        if identity is None:
            return
        self._signatures(identity, seals, checkpoints)  # step 3
        self._contents(seals)  # step 4
        if not b.selective:
            self._chain(seals)  # step 5
        self._log(seals, checkpoints)  # step 6
        self._anchors(checkpoints)  # step 7
        if self.report.findings:
            self.report.withhold_whole_claims()

    # step 1 (content): every seal and checkpoint parses
    def _parse_seals(self) -> list[_Seal] | None:
        seals = []
        for i, batch in enumerate(self.bundle.batches):
            try:
                msg, payload = open_seal(batch.seal)
                seals.append(_Seal(i, batch.seal, msg, payload))
            except (cose.CoseError, PayloadError) as exc:
                self.report.fail(f"batches[{i}].seal", str(exc))
        return seals if len(seals) == len(self.bundle.batches) else None

    def _parse_checkpoints(self) -> list[tuple[cose.Sign1, CheckpointPayload]] | None:
        out = []
        for i, data in enumerate(self.bundle.checkpoints):
            try:
                out.append(open_checkpoint(data))
            except (cose.CoseError, PayloadError) as exc:
                self.report.fail(f"checkpoints[{i}]", str(exc))
        if not self.bundle.checkpoints:
            self.report.fail("checkpoints", "none: no seal is covered by a signed checkpoint")
        return out if len(out) == len(self.bundle.checkpoints) and out else None

    # step 2
    def _identity(
        self, seals: list[_Seal], checkpoints: list[tuple[cose.Sign1, CheckpointPayload]]
    ) -> DeviceIdentity | None:
        try:
            chain = parse_der_chain(self.bundle.certs)
            identity = verify_chain(chain, self.roots, [])
        except ChainError as exc:
            self.report.fail("certs", str(exc))
            return None
        self._signed_while_valid(identity, seals, checkpoints)
        r = self.report
        r.device_subject, r.root_subject = identity.subject, identity.root_subject
        r.key_id = key_id(identity.public_key).hex()
        self._revocation(identity)
        self._certs_match_carried_chains(seals)
        return identity

    def _signed_while_valid(
        self, identity: DeviceIdentity, seals: list[_Seal], checkpoints: list[tuple[cose.Sign1, CheckpointPayload]]
    ) -> None:
        """Each seal and checkpoint was signed while every certificate of the chain was
        valid. A device whose clock was wrong signs times outside it: each run of such
        seals is one finding, and the rest of the history is still checked, so the report
        says what holds besides."""
        dated = [(seal, _validity_problem(identity, seal.payload.t)) for seal in seals]
        for misdated, group in itertools.groupby(dated, key=lambda pair: pair[1] is not None):
            run = list(group)
            if misdated:
                (first, why), (last, _) = run[0], run[-1]
                where = f"batches[{first.index}]" if first is last else f"batches[{first.index}..{last.index}]"
                self.report.fail(where, f"b={first.payload.b}..{last.payload.b}: {why}")
        for i, (_, checkpoint) in enumerate(checkpoints):
            if problem := _validity_problem(identity, checkpoint.t):
                self.report.fail(f"checkpoints[{i}]", problem)

    def _revocation(self, identity: DeviceIdentity) -> None:
        """A revoked certificate is a finding, not a broken chain: the data is still
        checked, so the report says everything else that holds or fails too."""
        if not self.crls:
            return
        self.report.revocation = check_revocation(identity.path, self.crls)
        for check in self.report.revocation:
            if check.revoked:
                self.report.fail("certs", check.finding())

    def _certs_match_carried_chains(self, seals: list[_Seal]) -> None:
        """A seal's x5chain is in the signed log; where seals carry chains, `certs` must be
        the bytes of one of them (a renewed certificate makes two), so no re-encoding of a
        certificate goes unnoticed."""
        carried = {tuple(chain): s.payload.b for s in seals if (chain := s.msg.x5chain())}
        if carried and tuple(self.bundle.certs) not in carried:
            first = min(carried.values())
            self.report.fail("certs", f"differ from the certificate chain that seal b={first} carries")

    # step 3
    def _signatures(
        self, identity: DeviceIdentity, seals: list[_Seal], checkpoints: list[tuple[cose.Sign1, CheckpointPayload]]
    ) -> None:
        kid = key_id(identity.public_key)
        devices = {s.payload.dev for s in seals} | {c.dev for _, c in checkpoints}
        if devices != {identity.device_id}:
            others = sorted(devices - {identity.device_id})
            self.report.fail(
                "bundle", f"signed as device(s) {others}, but the certificate is for {identity.device_id!r}"
            )
        self.report.device = identity.device_id
        signed = [(f"batches[{s.index}].seal (b={s.payload.b})", s.msg) for s in seals]
        signed += [(f"checkpoints[{i}] (size={c.size})", m) for i, (m, c) in enumerate(checkpoints)]
        for where, msg in signed:
            if msg.kid != kid:
                self.report.fail(where, "kid is not the device certificate's key id")
                continue
            try:
                cose.verify_signature(msg, identity.public_key)
            except cose.CoseError as exc:
                self.report.fail(where, str(exc))

    # step 4
    def _contents(self, seals: list[_Seal]) -> None:
        r = self.report
        for prev, cur in zip(seals, seals[1:]):
            if cur.payload.b <= prev.payload.b:
                r.fail(
                    f"batches[{cur.index}] (b={cur.payload.b})",
                    f"batches must be in increasing b order (after b={prev.payload.b})",
                )
        full = [(s, b) for s, b in zip(seals, self.bundle.batches) if isinstance(b, Batch)]
        problems = self.map_fn(
            check_full_batch,
            [s.payload.s0 for s, _ in full],
            [s.payload.n for s, _ in full],
            [s.payload.root for s, _ in full],
            [b.salt_key for _, b in full],
            [b.readings for _, b in full],
        )
        for (seal, _), problem in zip(full, problems):
            if problem:
                r.fail(f"batches[{seal.index}] (b={seal.payload.b})", problem)
            else:
                r.readings += seal.payload.n
        for seal, batch in zip(seals, self.bundle.batches):
            if isinstance(batch, SelectiveBatch):
                self._selective_batch(f"batches[{seal.index}] (b={seal.payload.b})", seal.payload, batch)
        r.batches = len(seals)
        r.first_b = min(s.payload.b for s in seals)
        r.last_b = max(s.payload.b for s in seals)
        r.boots = sorted({s.payload.boot for s in seals})

    def _selective_batch(self, where: str, p: SealPayload, batch: SelectiveBatch) -> None:
        if not batch.disclosed:
            self.report.fail(where, "discloses no reading")
        indexes = [d.proof.leaf_index for d in batch.disclosed]
        if indexes != sorted(set(indexes)):
            self.report.fail(where, "disclosed readings must be in increasing seq order, each once")
            return
        for i, d in enumerate(batch.disclosed):
            at = f"{where}.disclosed[{i}]"
            try:
                leaf = decode_leaf(d.leaf)
            except LeafError as exc:
                self.report.fail(at, f"malformed reading: {exc}")
                continue
            seq = leaf.seq
            if not p.s0 <= seq <= p.last_seq:
                self.report.fail(at, f"seq {seq} is outside the batch ({p.s0}..{p.last_seq})")
                continue
            if (d.proof.tree_size, d.proof.leaf_index) != (p.n, seq - p.s0):
                self.report.fail(at, "inclusion proof is not for this reading's place in the batch")
                continue
            try:
                merkle.verify_inclusion(salted_leaf_hash(d.salt, d.leaf), seq - p.s0, p.n, d.proof.path, p.root)
            except merkle.ProofError as exc:
                self.report.fail(at, f"not in the sealed batch: {exc}")
                continue
            self.report.readings += 1
            self.report.tags[leaf.tag] += 1

    # step 5
    def _chain(self, seals: list[_Seal]) -> None:
        r = self.report
        ordered = sorted(seals, key=lambda s: s.payload.b)
        if ordered[0].payload.b == 1:
            for problem in first_seal_problems(ordered[0].payload):
                r.fail("batches (b=1)", problem)
        dropped = [(g, s.payload.b) for s in ordered if s.payload.drop_record and (g := s.payload.gap)]
        for prev, cur in zip(ordered, ordered[1:]):
            self._link(prev, cur, dropped, r)
        self._record_gaps(ordered)
        r.complete = _complete_ranges(ordered)

    def _link(self, prev: _Seal, cur: _Seal, dropped: list[tuple[Gap, int]], r: Report) -> None:
        p, c = prev.payload, cur.payload
        where = f"batches[{cur.index}] (b={c.b})"
        if c.b > p.b + 1 and drop_tiling((p.last_seq + 1, c.first_seq - 1), dropped):
            return  # dropped undelivered, as signed drop records say; their seals stay in the log
        if c.b != p.b + 1:
            hole = f"{p.b + 1}" if c.b == p.b + 2 else f"{p.b + 1}..{c.b - 1}"
            r.fail(where, "duplicate batch number" if c.b == p.b else f"batch(es) {hole} missing")
            return
        joined = link_seals(p, seal_digest(prev.cose_bytes), c)
        for problem in joined.problems:
            r.fail(where, problem)
        if joined.restart_gap is not None:
            r.gaps.append(joined.restart_gap)

    def _record_gaps(self, ordered: list[_Seal]) -> None:
        for s in ordered:
            if s.payload.gap:
                g = s.payload.gap
                self.report.gaps.append(GapRecord(g.first, g.last, g.why, s.payload.b, True))
        self.report.gaps.sort(key=lambda g: g.first)

    # step 6
    def _log(self, seals: list[_Seal], checkpoints: list[tuple[cose.Sign1, CheckpointPayload]]) -> None:
        r = self.report
        by_size = {c.size: c for _, c in checkpoints}
        sizes = [c.size for _, c in checkpoints]
        if sizes != sorted(set(sizes)):
            r.fail("checkpoints", "sizes must strictly increase")
            return
        self._consistency(checkpoints)
        if len(self.bundle.log_proofs) != len(seals):
            r.fail("log_proofs", f"{len(self.bundle.log_proofs)} proofs for {len(seals)} batches")
            return
        for seal, proof in zip(seals, self.bundle.log_proofs):
            where = f"log_proofs[{seal.index}] (b={seal.payload.b})"
            checkpoint = by_size.get(proof.tree_size)
            if checkpoint is None:
                r.fail(where, f"tree size {proof.tree_size} is not a checkpoint of this bundle")
                continue
            if proof.leaf_index != seal.payload.b - 1:
                r.fail(where, f"leaf index {proof.leaf_index} is not b - 1 = {seal.payload.b - 1}")
                continue
            try:
                merkle.verify_inclusion(
                    merkle.leaf_hash(seal.cose_bytes), proof.leaf_index, proof.tree_size, proof.path, checkpoint.root
                )
            except merkle.ProofError as exc:
                r.fail(where, f"seal not in the device log at checkpoint {proof.tree_size}: {exc}")
        r.checkpointed_size = sizes[-1]

    def _consistency(self, checkpoints: list[tuple[cose.Sign1, CheckpointPayload]]) -> None:
        pairs = list(zip(checkpoints, checkpoints[1:]))
        if len(self.bundle.consistency) != len(pairs):
            self.report.fail("consistency", f"{len(self.bundle.consistency)} proofs for {len(pairs)} checkpoint pairs")
            return
        for i, (((_, a), (_, b)), proof) in enumerate(zip(pairs, self.bundle.consistency)):
            if (proof.size1, proof.size2) != (a.size, b.size):
                self.report.fail(
                    f"consistency[{i}]", f"proves {proof.size1}->{proof.size2}, expected {a.size}->{b.size}"
                )
                continue
            try:
                merkle.verify_consistency(a.size, b.size, proof.path, a.root, b.root)
            except merkle.ProofError as exc:
                self.report.fail(f"consistency[{i}]", f"checkpoints {a.size} and {b.size} disagree: {exc}")

    # step 7
    def _anchors(self, checkpoints: list[tuple[cose.Sign1, CheckpointPayload]]) -> None:
        """Records name checkpoints of this bundle, in increasing size, one per checkpoint,
        as the exporter writes them: a record repeated or moved has been tampered with."""
        opened = dict(zip(self.bundle.checkpoints, checkpoints))
        last = 0
        for i, anchor in enumerate(self.bundle.anchors):
            if anchor.checkpoint not in opened:
                self.report.fail(f"anchors[{i}]", "anchors a checkpoint that is not in this bundle")
                continue
            msg, checkpoint = opened[anchor.checkpoint]
            if checkpoint.size <= last:
                self.report.fail(
                    f"anchors[{i}]",
                    f"records must be in increasing checkpoint size, one per checkpoint: size {checkpoint.size}"
                    f" after size {last}",
                )
            last = max(last, checkpoint.size)
            self.report.anchors.append(AnchorClaim(i, anchor, msg.kid, checkpoint))


def check_full_batch(s0: int, n: int, root: bytes, salt_key: bytes, readings: list[bytes]) -> str | None:
    """Step 4 for one full batch: None if its readings are exactly what the seal signs."""
    if len(readings) != n:
        return f"seal counts {n} readings, batch carries {len(readings)}"
    if n == 0 and salt_key != NO_READINGS_SALT_KEY:
        return "a batch of no readings carries a salt key other than 32 zero bytes"
    try:
        check_leaves(readings, s0)
    except LeafError as exc:
        return f"malformed reading: {exc}"
    if merkle.root_of(leaf_hashes(salt_key, s0, readings)) != root:
        return "readings do not hash to the sealed root"
    return None


def _complete_ranges(ordered: list[_Seal]) -> list[tuple[int, int]]:
    ranges: list[tuple[int, int]] = []
    for s in ordered:
        p = s.payload
        if p.n == 0:
            continue
        if ranges and ranges[-1][1] + 1 == p.s0:
            ranges[-1] = (ranges[-1][0], p.last_seq)
        else:
            ranges.append((p.s0, p.last_seq))
    return ranges


def _validity_problem(identity: DeviceIdentity, t: int) -> str | None:
    try:
        check_valid_at(identity.path, [_utc(t)])
    except ChainError as exc:
        return str(exc)
    return None


def _utc(ns: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC)
