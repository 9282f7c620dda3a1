"""The two kinds of signed gap a seal may carry (DESIGN 3.2): readings lost before
sealing (the gap ends right before the batch), and a drop record (a seal of no readings
whose gap lies wholly before it: sealed batches dropped from a full buffer undelivered)."""

from __future__ import annotations

import pytest

from agent.trust.merkle import EMPTY_ROOT
from agent.trust.payloads import Gap, PayloadError, SealPayload

ROOT = bytes(range(32))


def _payload(s0: int, n: int, gap: Gap | None) -> SealPayload:
    return SealPayload("gw-1", 1, 5, s0, n, ROOT if n else EMPTY_ROOT, bytes(32), 1, gap)


def _decoded(payload: SealPayload) -> SealPayload:
    return SealPayload.decode(payload.encode())


def test_a_gap_right_before_the_batch_is_lost_before_sealing() -> None:
    p = _decoded(_payload(101, 5, Gap(90, 100, "dropped from the full memory queue")))
    assert not p.drop_record and p.first_seq == 90 and p.last_seq == 105


def test_a_drop_record_names_earlier_seqs_and_covers_none_of_its_own() -> None:
    p = _decoded(_payload(501, 0, Gap(101, 300, "buffer full")))
    assert p.drop_record and p.first_seq == 501 and p.last_seq == 500


@pytest.mark.parametrize(
    ("s0", "n", "gap"),
    [
        (501, 3, Gap(101, 300, "buffer full")),  # a drop record with readings of its own
        (501, 0, Gap(101, 501, "buffer full")),  # a gap running into the batch
        (501, 0, Gap(101, 600, "buffer full")),  # a gap beyond it
        (501, 2, Gap(400, 499, "lost")),  # a gap that stops short of the batch
        (501, 0, None),  # no readings and no gap
    ],
)
def test_any_other_gap_is_refused(s0: int, n: int, gap: Gap | None) -> None:
    with pytest.raises(PayloadError):
        _decoded(_payload(s0, n, gap))
