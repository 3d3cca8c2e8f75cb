"""The field contract in-process: what a person upsert sends for each kind of Encharge field (the run's tests in
test_b2b.py show the same through the command)."""

from __future__ import annotations

import decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from target_encharge.fields import MAX_PERSON_BYTES, MAX_VALUE_CHARS, FieldContract

ACCOUNT = [
    {"name": "email", "type": "string"},
    {"name": "firstName", "type": "string"},
    {"name": "plan", "type": "string", "enum": ["free", "pro"], "allowNewEnumValues": False},
    {"name": "tier", "type": "string", "enum": ["a"]},
    {"name": "logins", "type": "integer"},
    {"name": "score", "type": "number"},
    {"name": "active", "type": "boolean"},
    {"name": "leadScore", "type": "number", "readOnly": True},
    {"name": "notes", "type": "string"},
]
PROPERTIES = {f["name"]: {} for f in ACCOUNT} | {"company": {}}


@pytest.fixture
def contract() -> FieldContract:
    return FieldContract.of("people", "person", ACCOUNT, PROPERTIES, keep=["email"])


def test_values_of_their_fields_type_are_sent_as_they_are(contract: FieldContract) -> None:
    record = {"email": "a@example.com", "firstName": "Ann", "logins": 3, "active": False, "tier": "b", "x": [1]}
    assert contract.apply(record) == (record, None)


def test_values_that_read_as_their_type_are_sent_as_that_type(contract: FieldContract) -> None:
    sent, problem = contract.apply({"logins": "3", "score": "2.50", "active": "yes", "firstName": 7, "plan": "pro"})
    assert problem is None
    assert sent == {"logins": 3, "score": decimal.Decimal("2.50"), "active": True, "firstName": "7", "plan": "pro"}
    assert contract.apply({"score": 2.0})[0] == {"score": 2}


def test_read_only_fields_are_left_out_and_unknown_ones_kept(contract: FieldContract) -> None:
    assert contract.apply({"leadScore": 9, "company": "Acme", "logins": None}) == (
        {"company": "Acme", "logins": None},
        None,
    )
    assert contract.missing == ("company",)


@pytest.mark.parametrize(
    ("record", "says"),
    [
        ({"logins": 2.5}, "field 'logins': 2.5 is not an integer"),
        ({"logins": True}, "field 'logins': True is not an integer"),
        ({"score": "many"}, "field 'score': 'many' is not a number"),
        ({"active": "perhaps"}, "field 'active': 'perhaps' is not a boolean"),
        ({"plan": "gold"}, "field 'plan': 'gold' is not one of its values (free, pro)"),
        ({"notes": "n" * (MAX_VALUE_CHARS + 1)}, "field 'notes': its value is longer than Encharge's 5,000 characters"),
    ],
)
def test_misfits_are_refused_naming_the_field(contract: FieldContract, record: dict, says: str) -> None:
    sent, problem = contract.apply(record)
    assert sent is record
    assert problem is not None
    assert problem.startswith(says)


def test_a_person_past_encharges_size_is_refused_whatever_carries_it(contract: FieldContract) -> None:
    near = MAX_VALUE_CHARS - 10
    fits = {f"f{i}": "é" * near for i in range(8)}
    assert contract.apply(fits) == (fits, None)
    many = {f"f{i}": "x" * near for i in range(MAX_PERSON_BYTES // near + 1)}
    nested = {"email": "a@example.com", "extra": {"blob": "x" * MAX_PERSON_BYTES}}
    escaped = {f"f{i}": "\x01" * near for i in range(MAX_PERSON_BYTES // (6 * near) + 1)}  # \u0001: six bytes each
    named = {"n" * (MAX_PERSON_BYTES // 3) + str(i): "x" for i in range(4)}  # long names, short values
    for record in (many, nested, escaped, named):
        assert contract.apply(record) == (record, "the person is larger than Encharge's 200 KB")


@pytest.mark.parametrize("value", [2.5, 0.1, -3.25, 1e-7, 123456789.125, 1.5e-300])
def test_a_float_with_a_fraction_is_sent_as_the_decimal_it_reads_as(contract: FieldContract, value: float) -> None:
    sent, problem = contract.apply({"score": value})
    assert problem is None
    assert sent == {"score": decimal.Decimal(str(value))}
    assert type(sent["score"]) is decimal.Decimal


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_a_float_that_is_no_number_is_refused(contract: FieldContract, value: float) -> None:
    assert contract.apply({"score": value})[1] is not None


_SAMPLES = [
    *(None, True, False, 0, 7, -3, 2**70),
    *(
        decimal.Decimal(text)
        for text in ("2", "2.0", "-0.00", "2.5", "1E+2", "1E-7", "123456789012345678901234567890.5")
    ),
    *(2.0, 2.5, 1e300, float("inf"), float("nan")),
    *("", "3", "2.50", "yes", "pro", "gold", "n" * (MAX_VALUE_CHARS + 1)),
    [1],
    {"a": 1},
]
_VALUES = st.one_of(
    st.sampled_from(_SAMPLES),
    st.decimals(allow_nan=False, allow_infinity=False),  # the reader's numbers with a point (JSON has no NaN)
    st.integers(),
    st.floats(),
    st.text(max_size=8),
)


def _typed(found: tuple[dict, str | None]) -> tuple[list, str | None]:
    """A result with each value's type beside it (``2 == 2.0 == Decimal(2)``: the types tell them apart)."""
    sent, problem = found
    return [(k, type(v), v if v == v else "nan") for k, v in sent.items()], problem


def test_each_value_read_by_its_shape_is_sent_as_read_value_by_value() -> None:
    contract = FieldContract.of("people", "person", ACCOUNT, PROPERTIES, keep=["email"])
    for name in [*PROPERTIES, "email", "extra"]:
        for value in _SAMPLES:
            for record in ({name: value}, {"email": "a@example.com", name: value}, {name: value}):  # (a shape again)
                assert _typed(contract.apply(record)) == _typed(contract._read(record)), record


@settings(max_examples=200)
@given(st.lists(st.dictionaries(st.sampled_from([*PROPERTIES, "email", "extra"]), _VALUES, max_size=6), max_size=8))
def test_a_record_read_by_its_shape_is_sent_as_read_value_by_value(records: list[dict]) -> None:
    contract = FieldContract.of("people", "person", ACCOUNT, PROPERTIES, keep=["email"])
    for record in records:  # (one contract for all: later records of a shape seen before take the shape's way)
        assert _typed(contract.apply(record)) == _typed(contract._read(record)), record
