"""ISO 20022 camt.053 bank-to-customer statements, every version (.001.02 to .001.13).

The versions differ in namespace and in details recognition does not read; local-name paths
(`xmlpath`) read them all. Several statements in one message are one document: the accounts of
all of them are listed and any one of them being the dossier's is enough.
"""

from __future__ import annotations

from lxml import etree

from gateway.rules.facts import iso_date
from gateway.rules.statement import StatementFacts
from gateway.rules.xmlpath import find, find_all, local_name, namespace, text

CAMT053 = "urn:iso:std:iso:20022:tech:xsd:camt.053."


def is_camt053(root: etree._Element) -> bool:
    return local_name(root) == "Document" and namespace(root).startswith(CAMT053)


def read_camt(root: etree._Element) -> StatementFacts:
    statements = list(find_all(root, "BkToCstmrStmt/Stmt"))
    first = statements[0] if statements else None
    accounts = [
        text(statement, "Acct/Id/IBAN") or text(statement, "Acct/Id/Othr/Id")
        for statement in statements
    ]
    holder_ids = [
        (other.text or "").strip()
        for statement in statements
        for other in find_all(statement, "Acct/Ownr/Id/OrgId/Othr/Id")
    ]
    return StatementFacts(
        syntax="camt",
        version=namespace(root).removeprefix(CAMT053),
        number=text(first, "ElctrncSeqNb") or text(first, "LglSeqNb") or text(first, "Id"),
        issue_date=iso_date(text(first, "CreDtTm") or text(root, "BkToCstmrStmt/GrpHdr/CreDtTm")),
        currency=text(first, "Acct/Ccy") or _balance_currency(first),
        accounts=tuple(dict.fromkeys(a for a in accounts if a)),
        holder_name=text(first, "Acct/Ownr/Nm"),
        holder_ids=tuple(dict.fromkeys(h for h in holder_ids if h)),
        statements=len(statements),
    )


def _balance_currency(statement: etree._Element | None) -> str:
    """Many banks leave `Acct/Ccy` out; the balances always say which currency they count."""
    amount = find(statement, "Bal/Amt") if statement is not None else None
    return (amount.get("Ccy") or "").strip() if amount is not None else ""
