"""Fee rules: a replacement offers at least 12.5 % more on both caps (geth and Besu want
10 %), or the node's current suggestion if that is more."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from agent.anchor.fees import Fees, raised

wei = st.integers(min_value=0, max_value=10**15)


@given(wei, wei, wei, wei)
def test_a_replacement_raises_both_caps_by_at_least_an_eighth(
    max_fee: int, tip: int, now_max: int, now_tip: int
) -> None:
    tip = min(tip, max_fee)
    old, now = Fees(max_fee, tip, legacy=False), Fees(now_max, min(now_tip, now_max), legacy=False)
    new = raised(old, now)
    assert new.max_fee * 8 >= old.max_fee * 9 and new.max_fee >= now.max_fee
    assert new.tip <= new.max_fee
    if old.max_fee:
        assert new.max_fee > old.max_fee  # never stuck at the old price, even at 1 wei
    assert new.tip * 8 >= old.tip * 9 or new.tip == new.max_fee


def test_legacy_fees_stay_legacy_and_round_up() -> None:
    assert raised(Fees(1, 1, legacy=True), Fees(0, 0, legacy=True)) == Fees(2, 2, legacy=True)
    assert raised(Fees(80, 80, legacy=True), Fees(0, 0, legacy=True)) == Fees(90, 90, legacy=True)
    assert Fees(5, 5, legacy=True).fields() == {"gasPrice": 5}
    assert Fees(9, 2, legacy=False).fields() == {"maxFeePerGas": 9, "maxPriorityFeePerGas": 2}


def test_zero_fees_of_a_free_gas_chain_stay_zero() -> None:
    assert raised(Fees(0, 0, legacy=True), Fees(0, 0, legacy=True)) == Fees(0, 0, legacy=True)
