"""Booking rules against a real Tryton: rounding, reverse charge, account fallback, mapping and
package refusals, idempotency across restarts, and a refused password that never locks out.

One server serves the module; each test books documents no other test books.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from integration.tryton_helpers import (
    MAPPING,
    PURCHASE_VAT,
    adapter,
    admin,
    invoice,
    invoice_count,
    outgoing,
)
from integration.tryton_server import PASSWORD, TrytonServer, TrytonTemplate, start_tryton

from gateway.booking.mapping import (
    ACCOUNT_NOT_FOUND,
    AMOUNT_VALIDATION,
    TAX_RATE_NOT_FOUND,
)
from gateway.booking.read import read_invoice
from gateway.outbound.base import PermanentError, RejectedError, TransientError
from gateway.outbound.tryton.rpc import TrytonRpc
from gateway.rules.xmlsafe import parse_xml

pytestmark = pytest.mark.integration

EFFF_21 = "efff/UBLBE_BE0000000196_V01-15000001.xml"  # 400 + 84 VAT = 484, S 21 %
EFFF_K = "efff/UBLBE_BE0000000196_V01-15000014.xml"  # 700, intra-community (K 0 %)
PEPPOL = "peppol-bis3/base-example.xml"  # 25 % VAT, line accounts Tryton does not have


@pytest.fixture(scope="module")
def tryton(
    tryton_template: TrytonTemplate, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TrytonServer]:
    server = start_tryton(tryton_template, tmp_path_factory.mktemp("trytond"))
    try:
        yield server
    finally:
        server.stop()


def _doc(corpus: Path, name: str, number: str, **replace: str) -> bytes:
    """A corpus document under a new invoice number (so tests never meet), edited as told."""
    text = (corpus / name).read_text(encoding="utf-8")
    original = text.split("<cbc:ID>", 1)[1].split("</cbc:ID>", 1)[0]
    text = text.replace(f"<cbc:ID>{original}</cbc:ID>", f"<cbc:ID>{number}</cbc:ID>", 1)
    for old, new in replace.items():
        assert old.replace("_", " ") in text or old in text, old
        text = text.replace(old, new)
    return text.encode()


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _deliver(server: TrytonServer, workdir: Path, data: bytes, **kw: Any) -> str:
    mapping = kw.pop("mapping", MAPPING)
    books = adapter(server, workdir, mapping)
    try:
        return await books.deliver(outgoing(data, **kw))
    finally:
        await books.close()


async def _look(server: TrytonServer, work: Callable[[TrytonRpc], Any]) -> Any:
    rpc = admin(server)
    try:
        return await work(rpc)
    finally:
        await rpc.close()


async def _lines(rpc: TrytonRpc, ref: str) -> list[dict[str, Any]]:
    row = await invoice(rpc, ref, ["lines"])
    return list(
        await rpc.call(
            "model.account.invoice.line.read",
            row["lines"],
            ["description", "amount", "account.code", "taxes"],
        )
    )


def test_rounding_difference_gets_a_line_on_the_debit_rounding_account(
    tryton: TrytonServer, corpus: Path, tmp_path: Path
) -> None:
    data = _doc(
        corpus,
        EFFF_21,
        "ROUND-1",
        **{
            '<cbc:TaxInclusiveAmount currencyID="EUR">484<': (
                '<cbc:TaxInclusiveAmount currencyID="EUR">484.02<'
            ),
            '<cbc:PayableAmount currencyID="EUR">484<': (
                '<cbc:PayableAmount currencyID="EUR">484.02<'
            ),
        },
    )
    ref = _run(_deliver(tryton, tmp_path, data))
    row = _run(_look(tryton, lambda rpc: invoice(rpc, ref, ["total_amount", "tax_amount"])))
    assert (str(row["total_amount"]), str(row["tax_amount"])) == ("484.02", "84.00")
    lines = _run(_look(tryton, lambda rpc: _lines(rpc, ref)))
    rounding = [line for line in lines if line["description"] == "rounding"]
    assert len(rounding) == 1
    assert (rounding[0]["account."]["code"], str(rounding[0]["amount"])) == ("602", "0.02")


def test_difference_beyond_tolerance_is_rejected_with_both_figures_and_nothing_booked(
    tryton: TrytonServer, corpus: Path, tmp_path: Path
) -> None:
    data = _doc(
        corpus,
        EFFF_21,
        "ROUND-2",
        **{'<cbc:TaxInclusiveAmount currencyID="EUR">484<': (
            '<cbc:TaxInclusiveAmount currencyID="EUR">490<'
        )},
    )  # fmt: skip
    before = _run(_look(tryton, invoice_count))
    with pytest.raises(RejectedError) as rejected:
        _run(_deliver(tryton, tmp_path, data))
    assert rejected.value.code == AMOUNT_VALIDATION
    assert "484" in rejected.value.text and "490" in rejected.value.text
    assert _run(_look(tryton, invoice_count)) == before


@pytest.mark.parametrize("category", ["K", "AE"])
def test_reverse_charge_document_uses_the_mapped_tax_codes(
    tryton: TrytonServer, corpus: Path, tmp_path: Path, category: str
) -> None:
    """Intra-community (K) and Belgian co-contractor (AE) reverse charge: the mapped tax books
    21 % due and 21 % deductible, so the invoice total stays the document's."""
    data = _doc(
        corpus, EFFF_K, f"RC-{category}", **{"<cbc:ID>K</cbc:ID>": f"<cbc:ID>{category}</cbc:ID>"}
    )
    ref = _run(_deliver(tryton, tmp_path, data))

    async def taxes(rpc: TrytonRpc) -> tuple[Any, ...]:
        row = await invoice(rpc, ref, ["total_amount", "tax_amount", "taxes", "lines"])
        lines = await rpc.call("model.account.invoice.line.read", row["lines"], ["taxes"])
        tax_ids = sorted({t for line in lines for t in line["taxes"]})
        names = await rpc.call("model.account.tax.read", tax_ids, ["name"])
        entries = await rpc.call("model.account.invoice.tax.read", row["taxes"], ["amount"])
        return row["total_amount"], row["tax_amount"], names, sorted(e["amount"] for e in entries)

    total, tax, names, amounts = _run(_look(tryton, taxes))
    assert (str(total), str(tax)) == ("700.00", "0.00")
    assert [n["name"] for n in names] == [PURCHASE_VAT[f"{category}:0"]]
    assert sum(amounts) == 0 and str(max(amounts)) == "147.00"  # 21 % due and deductible


def test_unknown_and_closed_accounts_fall_back_to_the_default(
    tryton: TrytonServer, corpus: Path, tmp_path: Path
) -> None:
    data = _doc(corpus, PEPPOL, "ACC-1", **{"4025:123:4343": "608"})  # 608 is closed
    ref = _run(_deliver(tryton, tmp_path, data))
    lines = _run(_look(tryton, lambda rpc: _lines(rpc, ref)))
    assert {line["account."]["code"] for line in lines} == {"604"}


def test_without_collective_account_the_partys_own_payable_is_used(
    tryton: TrytonServer, corpus: Path, tmp_path: Path
) -> None:
    overrides = {"mapping": {"supplier_account": ""}}
    ref = _run(_deliver(tryton, tmp_path, _doc(corpus, EFFF_21, "COLL-1"), overrides=overrides))
    row = _run(_look(tryton, lambda rpc: invoice(rpc, ref, ["account.code"])))
    assert row["account."]["code"] == "440"


def test_unknown_default_account_is_rejected_with_the_seed_code(
    tryton: TrytonServer, corpus: Path, tmp_path: Path
) -> None:
    overrides = {"mapping": {"purchase_account": "999998"}}
    with pytest.raises(RejectedError) as rejected:
        _run(_deliver(tryton, tmp_path, _doc(corpus, PEPPOL, "ACC-2"), overrides=overrides))
    assert rejected.value.code == ACCOUNT_NOT_FOUND
    assert "999998" in rejected.value.text


def test_unmapped_vat_rate_is_rejected_with_the_mapping_code(
    tryton: TrytonServer, corpus: Path, tmp_path: Path
) -> None:
    vat = {k: v for k, v in PURCHASE_VAT.items() if k != "S:25"}
    with pytest.raises(RejectedError) as rejected:
        _run(
            _deliver(
                tryton,
                tmp_path,
                _doc(corpus, PEPPOL, "VAT-1"),
                mapping={**MAPPING, "purchase_vat": vat},
            )
        )
    assert rejected.value.code == TAX_RATE_NOT_FOUND
    assert "S:25" in rejected.value.text


def test_closed_fiscal_year_is_rejected_with_the_packages_message(
    tryton: TrytonServer, corpus: Path, tmp_path: Path
) -> None:
    data = _doc(corpus, EFFF_21, "FY-1", **{"2018-04-09": "2014-06-02"})
    before = _run(_look(tryton, invoice_count))
    with pytest.raises(RejectedError) as rejected:
        _run(_deliver(tryton, tmp_path, data, mapping={**MAPPING, "post": True}))
    assert "2014" in rejected.value.text or "closed" in rejected.value.text
    assert rejected.value.code.startswith("ERROR_SYNC_INVOICE_")
    assert _run(_look(tryton, invoice_count)) == before


def test_posting_in_an_open_year_posts(tryton: TrytonServer, corpus: Path, tmp_path: Path) -> None:
    import datetime as dt

    today = dt.date.today().isoformat()
    data = _doc(corpus, EFFF_21, "POST-1", **{"2018-04-09": today})
    ref = _run(_deliver(tryton, tmp_path, data, mapping={**MAPPING, "post": True}))
    row = _run(_look(tryton, lambda rpc: invoice(rpc, ref, ["state", "number"])))
    assert row["state"] == "posted" and row["number"]


def test_sales_invoice_is_booked_as_customer_invoice_with_a_new_party(
    tryton: TrytonServer, corpus: Path, tmp_path: Path
) -> None:
    data = _doc(corpus, EFFF_21, "SALE-1")
    ref = _run(_deliver(tryton, tmp_path, data, doc_type="sales_invoice"))
    row = _run(_look(tryton, lambda rpc: invoice(rpc, ref, ["type", "total_amount", "party"])))
    assert (row["type"], str(row["total_amount"])) == ("out", "484.00")


def test_second_delivery_and_restarts_book_nothing_twice(
    tryton: TrytonServer, corpus: Path, tmp_path: Path
) -> None:
    data = _doc(corpus, EFFF_21, "TWICE-1")
    before = _run(_look(tryton, invoice_count))
    first = _run(_deliver(tryton, tmp_path, data, mapping={"mode": "e-document"}))
    tryton.restart()
    again = _run(_deliver(tryton, tmp_path, data, mapping={"mode": "e-document"}))
    assert again == first
    # The package committed but the gateway never heard (killed between): Tryton's own import
    # already made the invoice, without our marker; supplier + number still find it.
    other = _doc(corpus, EFFF_21, "TWICE-2")
    made = _run(_look(tryton, lambda rpc: rpc.call("model.edocument.ubl.invoice.parse", other)))
    assert _run(_deliver(tryton, tmp_path, other, mapping=MAPPING)) == f"account.invoice,{made}"
    assert _run(_look(tryton, invoice_count)) == before + 2


def test_package_down_is_transient_then_books_once(
    tryton: TrytonServer, corpus: Path, tmp_path: Path
) -> None:
    data = _doc(corpus, EFFF_21, "DOWN-1")
    tryton.stop()
    try:
        with pytest.raises(TransientError) as down:
            _run(_deliver(tryton, tmp_path, data))
        assert down.value.code == "connection"
    finally:
        tryton.start()
    before = _run(_look(tryton, invoice_count))
    _run(_deliver(tryton, tmp_path, data))
    assert _run(_look(tryton, invoice_count)) == before + 1


def test_cii_invoices_are_booked_from_the_mapping_even_in_e_document_mode(
    tryton: TrytonServer, corpus: Path, tmp_path: Path
) -> None:
    """Tryton has no CII import, so CII goes through the mapping; totals equal the document's."""
    mapping = {**MAPPING, "mode": "e-document"}

    async def book() -> list[tuple[object, ...]]:
        books, reader = adapter(tryton, tmp_path, mapping), admin(tryton)
        found = []
        try:
            for name in ("CII_example1.xml", "CII_example8.xml", "CII_example9.xml"):
                data = (corpus / "en16931-cii" / name).read_bytes()
                ref = await books.deliver(outgoing(data, "purchase_invoice", name))
                row = await invoice(reader, ref, ["total_amount", "tax_amount", "comment"])
                expected = read_invoice(parse_xml(data))
                found.append((row["total_amount"], row["tax_amount"], expected.total, expected.tax))
            german = (corpus / "en16931-cii" / "CII_business_example_02.xml").read_bytes()
            with pytest.raises(RejectedError) as unmapped:  # 19 % is not in the mapping
                await books.deliver(outgoing(german, "purchase_invoice", "de.xml"))
            assert unmapped.value.code == TAX_RATE_NOT_FOUND
        finally:
            await books.close()
            await reader.close()
        return found

    for total, tax, expected_total, expected_tax in _run(book()):
        assert (total, tax) == (expected_total, expected_tax)


@pytest.mark.parametrize("mode", ["mapped", "e-document"])
def test_original_and_embedded_pdf_are_attached_once(
    tryton: TrytonServer, corpus: Path, tmp_path: Path, mode: str
) -> None:
    data = _doc(corpus, EFFF_21, f"ATT-{mode}")
    mapping = {**MAPPING, "mode": mode}
    ref = _run(_deliver(tryton, tmp_path, data, mapping=mapping, filename="original.xml"))

    async def names(rpc: TrytonRpc) -> list[str]:
        rows = await rpc.call(
            "model.ir.attachment.search_read", [["resource", "=", ref]], 0, None, None, ["name"]
        )
        return sorted(row["name"] for row in rows)

    attached = _run(_look(tryton, names))
    assert attached.count("original.xml") == 1, attached
    # mapped: ours; e-document: Tryton's import attaches every embedded file itself
    assert len([n for n in attached if n.lower().endswith(".pdf")]) == 1, attached
    assert _run(_deliver(tryton, tmp_path, data, mapping=mapping, filename="original.xml")) == ref
    assert _run(_look(tryton, names)) == attached


def _login_attempts(server: TrytonServer, login: str) -> int:
    with sqlite3.connect(f"file:{server.sqlite}?mode=ro", uri=True) as db:
        (count,) = db.execute(
            "SELECT count(*) FROM res_user_login_attempt WHERE login = ?", (login,)
        ).fetchone()
    return int(count)


def test_wrong_password_is_tried_once_marks_broken_and_never_locks_out(
    tryton: TrytonServer, corpus: Path, tmp_path: Path
) -> None:
    async def scenario() -> list[BaseException]:
        books = adapter(tryton, tmp_path, MAPPING, user="lockcheck", password="Wrong-Pass-2026")
        try:
            # Two workers at once, then four more deliveries: still a single login attempt.
            errors = await asyncio.gather(
                *(books.deliver(outgoing(_doc(corpus, EFFF_21, f"LOCK-{n}"))) for n in range(2)),
                return_exceptions=True,
            )
            for n in range(2, 6):
                with pytest.raises(PermanentError) as failed:
                    await books.deliver(outgoing(_doc(corpus, EFFF_21, f"LOCK-{n}")))
                errors.append(failed.value)
            # Tryton counts failed logins until one succeeds; five in five minutes lock out.
            assert _login_attempts(tryton, "lockcheck") == 1
            (tmp_path / "lockcheck.pass").write_text(PASSWORD + "\n")  # the operator fixes it
            await books.deliver(outgoing(_doc(corpus, EFFF_21, "LOCK-OK")))
        finally:
            await books.close()
        return list(errors)

    errors = _run(scenario())
    assert all(isinstance(e, PermanentError) for e in errors), errors
    codes = [e.code for e in errors if isinstance(e, PermanentError)]
    assert codes == ["login-refused"] + ["integration-broken"] * 5
    assert all("lockcheck" in str(e) for e in errors)
