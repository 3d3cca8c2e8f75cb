"""The field contract in-process: what a person upsert sends for each kind of Encharge field (the run's tests in
test_b2b.py show the same through the command)."""

from __future__ import annotations

import decimal

import pytest

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
