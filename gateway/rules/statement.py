"""Bank statements (CODA, camt.053): whose account it is decides whether it is the dossier's.

A statement has no purchase or sales side; the only question is whether it belongs to this
dossier. The account number (IBAN) is the strongest evidence, the account holder's company
number the next; a statement that names neither of the dossier's stays unrecognised, because
booking another company's bank movements is worse than waiting for a person to look.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from gateway.rules.split import Decision
from gateway.rules.vat import normalize_vat, same_party
from gateway.store.models import DocType

_NOT_ALNUM = re.compile(r"[^0-9A-Z]")


@dataclass(frozen=True)
class StatementFacts:
    syntax: Literal["coda", "camt"]
    version: str
    number: str
    issue_date: str
    currency: str
    accounts: tuple[str, ...]
    holder_name: str
    holder_ids: tuple[str, ...]
    statements: int

    def as_json(self) -> dict[str, Any]:
        return {
            "syntax": self.syntax,
            "kind": "bank-statement",
            "version": self.version,
            "number": self.number,
            "issue_date": self.issue_date,
            "currency": self.currency,
            "accounts": list(self.accounts),
            "holder": {"name": self.holder_name, "company_number": ", ".join(self.holder_ids)},
            "statements": self.statements,
        }


def normalize_account(value: str) -> str:
    """IBANs are written in groups of four and in lower case as often as not."""
    return _NOT_ALNUM.sub("", value.upper())


def is_valid_iban(iban: str) -> bool:
    """ISO 13616: two letters, two check digits, and the whole number mod 97 equal to 1."""
    if not re.fullmatch(r"[A-Z]{2}\d{2}[0-9A-Z]{8,30}", iban):
        return False
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1


def belgian_iban(bban: str) -> str:
    """The IBAN of an old-style 12-digit Belgian account number (CODA structure 0)."""
    check = 98 - int(f"{bban}111400") % 97
    return f"BE{check:02d}{bban}"


def decide_statement(
    facts: StatementFacts, dossier_ids: Sequence[str], ibans: Sequence[str]
) -> Decision:
    own = {normalize_account(iban) for iban in ibans if normalize_account(iban)}
    wanted = [value for value in dossier_ids if normalize_vat(value)]
    if not own and not wanted:
        return Decision(None, "dossier-unidentified: dossier has no IBAN, VAT or company number")
    account = next((a for a in facts.accounts if normalize_account(a) in own), "")
    if account:
        return Decision(
            DocType.BANK_STATEMENT, f"bank statement: account {account} is the dossier's"
        )
    holder = next((h for h in facts.holder_ids for w in wanted if same_party(w, h)), "")
    if holder:
        return Decision(
            DocType.BANK_STATEMENT, f"bank statement: account holder {holder} is the dossier"
        )
    accounts = ", ".join(facts.accounts) or "no account number"
    holders = ", ".join(facts.holder_ids) or "no company number"
    return Decision(
        None,
        f"account-mismatch: statement for {accounts} (holder {holders}) is not one of the"
        " dossier's accounts; add the IBAN to the dossier if it is",
    )
