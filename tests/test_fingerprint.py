"""Change detection is exact: a number changed in any digit is a changed record (issue: decimals past 28
significant digits were rounded, so such a change was skipped as unchanged for good)."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from target_encharge.ledger import canonical_json, fingerprint


def test_a_balance_changed_in_its_30th_digit_is_a_change() -> None:
    before = {"email": "ada@example.com", "balance": Decimal("1234.56789012345678901234567890")}
    after = {**before, "balance": Decimal("1234.56789012345678901234567891")}
    assert fingerprint(before) != fingerprint(after)
    assert canonical_json(after) == '{"balance":1234.56789012345678901234567891,"email":"ada@example.com"}'


def test_trailing_zeros_of_a_long_decimal_are_still_the_same_number() -> None:
    long = "0.1234567890123456789012345678901"
    assert fingerprint({"n": Decimal(long)}) == fingerprint({"n": Decimal(long + "000")})


@given(st.integers(min_value=1, max_value=60), st.integers(min_value=0, max_value=59), st.data())
def test_any_two_different_decimals_fingerprint_apart(digits: int, place: int, data: st.DataObject) -> None:
    text = data.draw(st.text(alphabet="0123456789", min_size=digits, max_size=digits))
    first = Decimal(f"0.{text}1")
    second = first + Decimal(1).scaleb(-(place % (digits + 1)) - 1)
    assert fingerprint({"n": first}) != fingerprint({"n": second})
