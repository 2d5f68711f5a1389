"""VAT and company number normalisation and the one comparison the split relies on."""

from __future__ import annotations

import pytest

from gateway.rules.vat import is_belgian_enterprise_number, normalize_vat, same_party


@pytest.mark.parametrize(
    ("value", "default_country", "expected"),
    [
        ("BE0123.456.749", "", "BE0123456749"),
        ("BE 0123 456 749", "", "BE0123456749"),
        ("be0123-456-749", "", "BE0123456749"),
        ("0123456749", "BE", "BE0123456749"),
        ("0123.456.749", "be", "BE0123456749"),
        ("123.456.749", "BE", "BE0123456749"),
        ("BE 123 456 749", "", "BE0123456749"),
        ("BTW BE 0123.456.749", "", "BE0123456749"),
        ("TVA: BE0123456749", "", "BE0123456749"),
        ("vat be0123456749", "", "BE0123456749"),
        ("VAT\u00a0BE\u00a00123\u00a0456\u00a0749", "", "BE0123456749"),
        ("0123/456/749", "", "0123456749"),
        ("GR061828591", "", "EL061828591"),
        ("061828591", "GR", "EL061828591"),
        ("EL 061 828 591", "DE", "EL061828591"),
        ("NO 991 825 827 MVA", "", "NO991825827MVA"),
        ("", "BE", ""),
        ("  ", "", ""),
        ("VAT", "", ""),
    ],
)
def test_normalize_vat(value: str, default_country: str, expected: str) -> None:
    assert normalize_vat(value, default_country) == expected


def test_default_country_never_overrides_a_written_one() -> None:
    assert normalize_vat("NL809561074B01", "BE") == "NL809561074B01"


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("BE0123.456.749", "BE 0123 456 749"),
        ("BE0123456749", "0123456749"),
        ("BE0123456749", "0123.456.749"),
        ("BE0123456749", "123.456.749"),
        ("BTW BE0123456749", "be 0123-456-749"),
        ("0123456749", "123456749"),
        ("EL061828591", "GR 061828591"),
        ("GR061828591", "gr061828591"),
        ("DK12345678", "DK 12 34 56 78"),
        ("NO123456789MVA", "NO 123 456 789 MVA"),
    ],
)
def test_same_party(a: str, b: str) -> None:
    assert same_party(a, b)
    assert same_party(b, a)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("", ""),
        ("", "BE0123456749"),
        ("BE0123456749", ""),
        ("VAT", "VAT"),
        ("BE0123456749", "BE0123456750"),
        ("BE0123456749", "NL0123456749"),
        # A bare number only reads as Belgian when it is a valid enterprise number.
        ("BE0123456789", "0123456789"),
        # Swedish organisation number: ten digits, but not a Belgian enterprise number.
        ("BE5566778899", "5566778899"),
        ("DK12345678", "12345678"),
        ("EL061828591", "061828591"),
        ("NO123456789MVA", "NO123456789"),
    ],
)
def test_not_same_party(a: str, b: str) -> None:
    assert not same_party(a, b)
    assert not same_party(b, a)


@pytest.mark.parametrize(
    ("digits", "valid"),
    [
        ("0123456749", True),
        ("123456749", True),
        ("0000000196", True),
        ("0505890632", True),
        ("0123456789", False),
        ("5566778899", False),
        ("012345674", False),
        ("01234567490", False),
        ("01234567AB", False),
    ],
)
def test_is_belgian_enterprise_number(digits: str, valid: bool) -> None:
    assert is_belgian_enterprise_number(digits) is valid
