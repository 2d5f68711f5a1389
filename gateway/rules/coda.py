"""Belgian CODA statements: fixed 128-column records, read by position as the banks define.

Only what recognition needs is read: the header (record 0: creation date, account holder's
company number, version) and the old balance (record 1: account and currency). Movements are
the accounting package's business. A file whose header or version code is wrong is refused with
the position that is wrong, so the bank or the client can be told exactly what to fix.
"""

from __future__ import annotations

import re

from gateway.rules.statement import StatementFacts, belgian_iban
from gateway.rules.vat import normalize_vat

_HEADER = re.compile(r"00000\d{6}.{3}05")
RECORD = 128


class CodaBroken(ValueError):
    """Looks like CODA but cannot be read as a statement; the message says where."""


def looks_like_coda(data: bytes) -> bool:
    """A header record first; blank lines or a UTF-8 BOM before it are tolerated."""
    head = data.removeprefix(b"\xef\xbb\xbf").lstrip(b"\r\n")[:16]
    return _HEADER.match(head.decode("latin-1")) is not None


def read_coda(data: bytes) -> StatementFacts:
    text = data.removeprefix(b"\xef\xbb\xbf").decode("latin-1")
    records = [line.ljust(RECORD) for line in text.splitlines() if line.strip()]
    headers = [r for r in records if r.startswith("0")]
    balances = [r for r in records if r.startswith("1")]
    header = headers[0]
    version = header[127]
    if version not in "12" or version == "":
        raise CodaBroken(
            f"coda-broken: header version code (column 128) is {version!r}, not 1 or 2"
        )
    if not balances:
        raise CodaBroken("coda-broken: no old-balance record (record type 1)")
    accounts = tuple(dict.fromkeys(_account(record) for record in balances))
    holder_ids = tuple(dict.fromkeys(filter(None, (_company(h) for h in headers))))
    return StatementFacts(
        syntax="coda",
        version=version,
        number=balances[0][2:5].strip(),
        issue_date=_date(header[5:11]),
        currency=_currency(balances[0]),
        accounts=tuple(a for a in accounts if a),
        holder_name=balances[0][64:90].strip() or header[34:60].strip(),
        holder_ids=holder_ids,
        statements=len(headers),
    )


def _account(record: str) -> str:
    """Columns 6-42 by account structure (column 2): 0 Belgian number, 2 Belgian IBAN,
    1 and 3 foreign number or IBAN."""
    structure = record[1]
    if structure == "0":
        bban = record[5:17]
        return belgian_iban(bban) if bban.isdigit() else bban.strip()
    if structure == "2":
        return record[5:21].strip()
    return record[5:39].strip()


def _currency(record: str) -> str:
    return record[18:21] if record[1] == "0" else record[39:42]


def _company(header: str) -> str:
    """Columns 72-82: `0` followed by the Belgian company number, zeros when not given."""
    digits = header[71:82].strip()
    if not digits.isdigit() or not digits.strip("0"):
        return ""
    return normalize_vat(digits[-10:], "BE")


def _date(ddmmyy: str) -> str:
    if not ddmmyy.isdigit():
        return ddmmyy
    return f"20{ddmmyy[4:6]}-{ddmmyy[2:4]}-{ddmmyy[0:2]}"
