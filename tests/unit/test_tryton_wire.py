"""Tryton's wire format and what its refusals mean, without a server."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import pytest

from gateway.outbound.base import PermanentError, RejectedError, TransientError
from gateway.outbound.tryton.errors import rejection
from gateway.outbound.tryton.rpc import TrytonUserError, _decode, _raise_error, encode


def test_tagged_values_round_trip() -> None:
    value = {"d": Decimal("33.30"), "day": dt.date(2026, 11, 21), "raw": b"<xml/>", "n": [1]}
    wire = json.loads(json.dumps(encode(value)))
    assert wire["d"] == {"__class__": "Decimal", "decimal": "33.30"}
    assert json.loads(json.dumps(wire), object_hook=_decode) == value


@pytest.mark.parametrize(
    ("message", "code"),
    [
        (
            'The value "999" for field "Account" in record "x" of "Account Invoice Line" is not'
            " valid according to its domain.",
            "ERROR_SYNC_INVOICE_ACCOUNT_NUMBER_NOT_ACTIVE",
        ),
        (
            'A value is required for field "Invoice Address" in record "[E]" of "Account Invoice".',
            "ERROR_SYNC_INVOICE_PARTNER_VALIDATION",
        ),
        (
            "Could not find tax for:\n<cac:ClassifiedTaxCategory/>",
            "ERROR_SYNC_INVOICE_MAPPING_TAX_RATE_NOT_FOUND",
        ),
        (
            'To continue, you must create a period for the date "05/01/2019" and company "X".',
            "ERROR_SYNC_INVOICE_PERIOD",
        ),
        ("Something else entirely.", "ERROR_SYNC_INVOICE_VALIDATION"),
    ],
)
def test_package_refusals_are_rejections_with_the_seed_codes(message: str, code: str) -> None:
    error = rejection(TrytonUserError("UserError", message))
    assert isinstance(error, RejectedError)
    assert (error.code, error.text) == (code, message)


def test_missing_access_right_is_ours_to_fix_not_a_rejection() -> None:
    error = rejection(
        TrytonUserError("UserError", 'You are not allowed to access "Account Invoice".', "Within")
    )
    assert isinstance(error, PermanentError) and error.code == "access-denied"


def test_error_kinds_sort_into_business_transient_and_configuration() -> None:
    with pytest.raises(TrytonUserError, match="similar"):
        _raise_error("m", ["UserWarning", ["w1", "The invoice is similar to X.", ""]])
    with pytest.raises(TransientError):
        _raise_error("m", ["ConcurrencyException", ["Records were modified", ""]])
    with pytest.raises(PermanentError, match="'frobnicate'"):
        _raise_error("m", ["'frobnicate'", ""])
