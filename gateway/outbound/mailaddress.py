"""Which mailbox a document goes to: one address per document type, with a fallback.

Addresses may be templates with `[accounting_file_id]` and `[vat]`, because many packages give
each client file its own import address. A dossier's overrides win over the integration's.
"""

from __future__ import annotations

import re

from email_validator import EmailNotValidError, validate_email

from gateway.outbound.base import Outgoing, PermanentError
from gateway.outbound.kinds import MailboxOptions
from gateway.outbound.naming import category, unknown_placeholder

ADDRESS_FIELDS = {"accounting_file_id", "vat"}
_PLACEHOLDER = re.compile(r"\[([a-z_]+)\]")


def address_template_problem(template: str) -> str | None:
    """Why `template` cannot be an address template, or None."""
    unknown = unknown_placeholder(template, ADDRESS_FIELDS)
    if unknown:
        return f"unknown placeholder [{unknown}] (known: [accounting_file_id], [vat])"
    sample = _PLACEHOLDER.sub("x", template)
    try:
        validate_email(sample, check_deliverability=False, test_environment=True)
    except EmailNotValidError as exc:
        return f"not an address: {exc}"
    return None


def destination(options: MailboxOptions, item: Outgoing) -> str:
    """The address for `item`, or a PermanentError saying what to configure."""
    kind = category(item.doc_type)
    key = f"to_{kind}"
    template = (
        str(item.overrides.get(key) or "")
        or getattr(options, key)
        or str(item.overrides.get("to") or "")
        or options.to
    )
    if not template:
        raise PermanentError("no-destination", f"no address for {kind} documents: set {key} or to")
    values = {"accounting_file_id": item.accounting_file_id, "vat": item.vat}

    def fill(match: re.Match[str]) -> str:
        value = values.get(match.group(1), "")
        if not value:
            raise PermanentError(
                "template-value-missing",
                f"address {template} needs [{match.group(1)}], dossier {item.dossier} has none",
            )
        return value

    address = _PLACEHOLDER.sub(fill, template)
    try:
        valid = validate_email(address, check_deliverability=False, test_environment=True)
    except EmailNotValidError as exc:
        raise PermanentError("bad-address", f"{address!r}: {exc}") from None
    return str(valid.normalized)
