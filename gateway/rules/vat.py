"""VAT and company numbers as people and programs write them, reduced to one comparable form.

The same Belgian company shows up as `BE0123.456.749`, `BTW BE 0123 456 749`, `0123456749` or,
in older paperwork, `123.456.749`; the Greek tax office is `EL` to VIES and `GR` to ISO 3166.
Matching a document to a dossier must see through all of that and nothing more.
"""

from __future__ import annotations

import functools
import re

_LEADING_WORD = re.compile(r"^(?:VAT|BTW|TVA)\b[\s:.#-]*")
_SEPARATORS = re.compile(r"[\s./-]+")
_COUNTRY = re.compile(r"^[A-Z]{2}")
_COUNTRY_ALIASES = {"GR": "EL"}


@functools.lru_cache(maxsize=4096)
def normalize_vat(value: str, default_country: str = "") -> str:
    """Uppercase, unpunctuated, country-prefixed where a country is known.

    Remembered: every document compares the same few dossier and party numbers many times.

    `default_country` only applies when the value carries no country of its own. A number
    that stays without a country is returned bare (digits and letters only).
    """
    text = _SEPARATORS.sub("", _LEADING_WORD.sub("", value.strip().upper()))
    if _COUNTRY.match(text):
        country, number = text[:2], text[2:]
    elif text and default_country:
        country, number = default_country.strip().upper(), text
    else:
        return text
    country = _COUNTRY_ALIASES.get(country, country)
    if country == "BE" and len(number) == 9 and number.isdigit():
        number = "0" + number
    return country + number


def same_party(a: str, b: str) -> bool:
    """True when both values name the same taxable person; an empty value matches nothing.

    A bare number is read as a Belgian enterprise number (`BE` + its digits) only when it is one,
    check digits included, so a Swedish or Danish register number never passes for Belgian.
    """
    left, right = _comparable(a), _comparable(b)
    return bool(left) and left == right


def is_belgian_enterprise_number(digits: str) -> bool:
    """Ten digits starting 0 or 1 (nine in old style) whose last two are 97 - first eight mod 97."""
    if len(digits) == 9:
        digits = "0" + digits
    if len(digits) != 10 or not digits.isdigit() or digits[0] not in "01":
        return False
    return 97 - int(digits[:8]) % 97 == int(digits[8:])


def _comparable(value: str) -> str:
    number = normalize_vat(value)
    if number.isdigit() and is_belgian_enterprise_number(number):
        return normalize_vat(number, "BE")
    return number
