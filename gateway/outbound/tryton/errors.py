"""What Tryton's own refusals mean, in the seed's error codes.

Tryton reports most validation problems as "The value … for field "X" … is not valid according
to its domain" or "A value is required for field "X"": the field names the culprit.
The package's message is kept word for word; the code only sorts it.
"""

from __future__ import annotations

import re

from gateway.booking.mapping import (
    ACCOUNT_NOT_ACTIVE,
    LINE_VALIDATION,
    PARTNER_VALIDATION,
    TAX_RATE_NOT_FOUND,
)
from gateway.outbound.base import PermanentError, RejectedError
from gateway.outbound.tryton.rpc import TrytonUserError

_FIELD = re.compile(r'for field "([^"]+)"')
FIELD_CODES = {
    "Account": ACCOUNT_NOT_ACTIVE,
    "Taxes": LINE_VALIDATION,
    "Lines": LINE_VALIDATION,
    "Invoice Address": PARTNER_VALIDATION,
    "Party": PARTNER_VALIDATION,
}
MESSAGE_CODES = (
    ("Could not find tax", TAX_RATE_NOT_FOUND),
    ("Could not find the company", "ERROR_SYNC_INVOICE_COMPANY_NOT_FOUND"),
    ("Could not find a currency", "ERROR_SYNC_INVOICE_CURRENCY_NOT_FOUND"),
    ("Unsupported invoice type code", "ERROR_SYNC_INVOICE_TYPE_UNSUPPORTED"),
    ("create a period", "ERROR_SYNC_INVOICE_PERIOD"),
    ("is closed", "ERROR_SYNC_INVOICE_PERIOD"),
    ("is similar to", "ERROR_SYNC_INVOICE_DUPLICATE"),
)
PACKAGE_REFUSED = "ERROR_SYNC_INVOICE_VALIDATION"


def rejection(exc: TrytonUserError) -> RejectedError | PermanentError:
    """A business refusal is the package rejecting the document; an access refusal means our
    user lacks a group, which the office must fix (failed, not rejected)."""
    message = exc.message.strip()
    if message.startswith("You are not allowed to"):
        return PermanentError("access-denied", f"{message} {exc.description}".strip())
    for marker, code in MESSAGE_CODES:
        if marker in message:
            return RejectedError(code, message)
    found = _FIELD.search(message)
    if found and found.group(1) in FIELD_CODES:
        return RejectedError(FIELD_CODES[found.group(1)], message)
    return RejectedError(PACKAGE_REFUSED, message)
