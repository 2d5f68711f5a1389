"""The daemon as a sysadmin runs it, booking into a real Tryton: mail in, invoice in the package,
statuses and codes on the documents; the mapping commands and `integration test` on the CLI."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from integration.gateway_proc import mail, start_gateway
from integration.lossy_proxy import LossyProxy
from integration.tryton_helpers import MAPPING, admin, invoice_count
from integration.tryton_server import DBNAME, PASSWORD, TrytonServer

pytestmark = pytest.mark.integration


def _config(
    server: TrytonServer, password_file: Path, user: str = "gateway", vat: str = "SE4598375937"
) -> str:
    mapping = {**MAPPING, "mode": "e-document"}
    tables = "\n".join(
        f"[integrations.mapping.{name}]\n"
        + "\n".join(f'"{k}" = "{v}"' for k, v in mapping[name].items())
        for name in ("purchase_vat", "sales_vat")
    )
    scalars = "\n".join(
        f'{k} = "{v}"' for k, v in mapping.items() if k not in ("purchase_vat", "sales_vat")
    )
    return f"""
[[integrations]]
name = "books"
kind = "tryton"
url = "{server.url}"
database = "{DBNAME}"
username = "{user}"
password_file = "{password_file}"

[integrations.mapping]
{scalars}

{tables}

[[dossiers]]
slug = "acme"
vat = "{vat}"
addresses = ["acme@docs.office.example"]
integration = "books"
auto_send = true
"""


def test_mailed_invoices_are_booked_or_rejected_with_the_packages_reason(
    tryton_factory: Callable[[], TrytonServer], corpus: Path, tmp_path: Path
) -> None:
    server = tryton_factory()
    password_file = tmp_path / "tryton.pass"
    password_file.write_text(PASSWORD + "\n")
    gateway = start_gateway(tmp_path, _config(server, password_file))
    try:
        good = (corpus / "peppol-bis3" / "base-example.xml").read_bytes()
        gateway.send(mail("acme@docs.office.example", ("invoice.xml", good, "application/xml")))
        sent = gateway.wait_for(lambda: [d for d in gateway.docs() if d["status"] == "sent"], 30)
        shown = json.loads(gateway.cli("doc", "show", str(sent[0]["id"]), "--json").stdout)
        assert shown["deliveries"][0]["remote_ref"].startswith("account.invoice,")

        # An override for this dossier: 25 % on a tax Tryton lacks -> the mapping's error code.
        gateway.cli("mapping", "set", "books", "mode=mapped", "--dossier", "acme")
        gateway.cli("mapping", "set", "books", "purchase_vat.S:25=BTW 25%", "--dossier", "acme")
        shown = json.loads(gateway.cli("mapping", "show", "books", "--dossier", "acme").stdout)
        assert (shown["mode"], shown["purchase_vat"]["S:25"]) == ("mapped", "BTW 25%")
        plain = json.loads(gateway.cli("mapping", "show", "books").stdout)
        assert (plain["mode"], plain["purchase_vat"]["S:25"]) == (
            "e-document",
            "Buitenlandse BTW 25%",
        )
        other = good.replace(b"<cbc:ID>Snippet1</cbc:ID>", b"<cbc:ID>GW-2</cbc:ID>", 1)
        gateway.send(mail("acme@docs.office.example", ("other.xml", other, "application/xml")))
        rejected = gateway.wait_for(
            lambda: [d for d in gateway.docs() if d["status"] == "rejected"], 30
        )
        assert rejected[0]["status_reason"].startswith(
            "ERROR_SYNC_INVOICE_MAPPING_TAX_RATE_NOT_FOUND: mapped tax 'BTW 25%'"
        )

        check = gateway.cli("mapping", "check", "books")
        assert check.returncode == 0, check.stdout + check.stderr
        gateway.cli(
            "mapping", "set", "books", "purchase_account=999999", "journals.sales_invoice=XX"
        )
        check = gateway.cli("mapping", "check", "books", check=False)
        assert check.returncode == 1
        assert "purchase_account: account 999999 does not exist" in check.stdout
        assert "journals.sales_invoice: journal 'XX' does not exist" in check.stdout

        tested = gateway.cli("integration", "test", "books")
        assert "logged in as gateway" in tested.stdout
    finally:
        gateway.stop()

    async def count() -> int:
        rpc = admin(server)
        try:
            return await invoice_count(rpc)
        finally:
            await rpc.close()

    assert asyncio.run(count()) == 1


def test_refused_password_fails_deliveries_and_integration_test_says_broken(
    tryton_factory: Callable[[], TrytonServer], corpus: Path, tmp_path: Path
) -> None:
    server = tryton_factory()
    password_file = tmp_path / "tryton.pass"
    password_file.write_text("Not-The-Password-1\n")
    gateway = start_gateway(tmp_path, _config(server, password_file, user="lockcheck"))
    try:
        base = (corpus / "peppol-bis3" / "base-example.xml").read_bytes()
        for n in range(3):
            data = base.replace(b"<cbc:ID>Snippet1</cbc:ID>", f"<cbc:ID>PW-{n}</cbc:ID>".encode())
            gateway.send(mail("acme@docs.office.example", (f"{n}.xml", data, "application/xml")))

        def all_failed() -> list[dict[str, str]] | None:
            found = [d for d in gateway.docs() if d["status"] == "failed"]
            return found if len(found) == 3 else None

        failed = gateway.wait_for(all_failed, 30)
        reasons = sorted(d["status_reason"].split(":")[0] for d in failed)
        assert reasons == ["integration-broken", "integration-broken", "login-refused"]
        assert all("retrying" not in d["status_reason"] for d in failed)  # never retried
        tested = gateway.cli("integration", "test", "books", check=False)
        assert tested.returncode == 1
        assert "broken since" in tested.stdout and "lockcheck" in tested.stdout
        assert "login-refused" in tested.stdout
    finally:
        gateway.stop()
    with sqlite3.connect(f"file:{server.sqlite}?mode=ro", uri=True) as db:
        (attempts,) = db.execute(
            "SELECT count(*) FROM res_user_login_attempt WHERE login = 'lockcheck'"
        ).fetchone()
    assert attempts == 2  # the daemon's one, and the one `integration test` was asked for


def test_gateway_killed_after_the_package_booked_books_nothing_twice(
    tryton_factory: Callable[[], TrytonServer], corpus: Path, tmp_path: Path
) -> None:
    """Tryton commits the import, the answer is lost, the gateway is SIGKILLed; after the
    restart and the lease, the delivery finds the invoice instead of booking a second one."""
    server = tryton_factory()
    proxy = LossyProxy(server.port, b"edocument.ubl.invoice.parse")
    proxy.start()
    password_file = tmp_path / "tryton.pass"
    password_file.write_text(PASSWORD + "\n")
    through_proxy = TrytonServer(dir=server.dir, template=server.template, port=proxy.port)
    config = _config(through_proxy, password_file, vat="BE0000000295")
    gateway = start_gateway(tmp_path, config, lease=3)
    try:
        data = (corpus / "efff" / "UBLBE_BE0000000196_V01-15000001.xml").read_bytes()
        gateway.send(mail("acme@docs.office.example", ("inv.xml", data, "application/xml")))
        assert proxy.swallowed.wait(30), gateway.log_tail()
        gateway.kill()
        proxy.stop()
        gateway.config.write_text(gateway.config.read_text().replace(through_proxy.url, server.url))
        gateway.start()
        sent = gateway.wait_for(lambda: [d for d in gateway.docs() if d["status"] == "sent"], 30)
        shown = json.loads(gateway.cli("doc", "show", str(sent[0]["id"]), "--json").stdout)
    finally:
        gateway.stop()
        proxy.stop()

    async def count() -> int:
        rpc = admin(server)
        try:
            return await invoice_count(rpc)
        finally:
            await rpc.close()

    assert asyncio.run(count()) == 1
    assert shown["deliveries"][0]["remote_ref"].startswith("account.invoice,")
    assert "tryton_already_booked" in gateway.log.read_text()  # found, not booked again
