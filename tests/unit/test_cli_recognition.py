"""Recognition's commands on a real SQLite database: dossier IBANs, rules, tests, overrides."""

from __future__ import annotations

import csv
import hashlib
import json
import os
from email.message import EmailMessage
from pathlib import Path

import pytest
from corpus_dir import CORPUS
from sqlalchemy import func, select

from gateway import cli
from gateway.config import load
from gateway.rules.columns import COLUMNS
from gateway.store.db import open_store
from gateway.store.models import Delivery, DocStatus, Document, Dossier, Integration


@pytest.fixture
def config(tmp_path: Path) -> str:
    path = tmp_path / "gw.toml"
    path.write_text(
        f'[gateway]\nstate_dir = "{tmp_path}/var"\n'
        f'[database]\nurl = "sqlite:///{tmp_path}/var/gw.db"\n'
    )
    assert cli.main(["-c", str(path), "db", "upgrade"]) == 0
    return str(path)


def add_dossier(config: str, *extra: str) -> int:
    base = ["-c", config, "dossier", "add", "acme", "--integration", "none"]
    return cli.main([*base, "--vat", "BE0123456749", *extra])


def test_dossier_ibans_are_stored_compact(config: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert add_dossier(config, "--iban", "be68 5390 0754 7034", "--iban", "NL91ABNA0417164300") == 0
    capsys.readouterr()
    assert cli.main(["-c", config, "dossier", "show", "acme", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ibans"] == [
        "BE68539007547034",
        "NL91ABNA0417164300",
    ]


def test_a_mistyped_iban_is_refused_by_its_check_digits(
    config: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert add_dossier(config, "--iban", "BE68539007547035") == cli.EX_REFUSED
    assert "IBAN 'BE68539007547035': not a valid IBAN" in capsys.readouterr().err


def corpus_file(relative: str) -> Path:
    path = CORPUS / relative
    if not path.is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and the corpus file is missing: {path}", pytrace=False)
        pytest.skip(f"no corpus file {path}")
    return path


def test_rules_test_prints_the_expected_csv_columns(
    config: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert add_dossier(config) == 0
    path = corpus_file("en16931-ubl/ubl-tc434-creditnote1.xml")
    with (CORPUS / "expected.csv").open(newline="", encoding="utf-8") as handle:
        row = next(r for r in csv.DictReader(handle) if r["path"].endswith(path.name))
    capsys.readouterr()
    assert cli.main(["-c", config, "rules", "test", str(path), "--dossier", "acme", "--json"]) == 0
    (decision,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {key: decision[key] for key in COLUMNS} == {key: row[key] for key in COLUMNS}
    assert decision["type"] == "unrecognised"
    assert decision["reason"].startswith("party-mismatch: ")
    assert decision["rules"] == []


def test_rules_add_list_test_and_delete(
    config: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert add_dossier(config) == 0
    base = ["-c", config, "rules"]
    assert (
        cli.main(
            [
                *base,
                "add",
                "greek",
                "--dossier",
                "acme",
                "--match",
                "supplier_vat=EL*",
                "--set-type",
                "purchase_invoice",
                "--no-auto-send",
            ]
        )
        == 0
    )
    assert cli.main([*base, "add", "all-xml", "--match", "syntax=ubl", "--quarantine"]) == 0
    capsys.readouterr()
    assert cli.main([*base, "list", "--json"]) == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["name"], r["dossier"], r["source"]) for r in listed] == [
        ("greek", "acme", "database"),
        ("all-xml", "", "database"),
    ]
    path = corpus_file("peppol-bis3/GR-base-example-correct.xml")
    assert cli.main([*base, "test", str(path), "--dossier", "acme", "--json"]) == 0
    decision = json.loads(capsys.readouterr().out)
    assert decision["type"] == "purchase_invoice"
    assert [m["rule"] for m in decision["rules"]] == ["greek"]
    assert decision["rules"][0]["why"] == "supplier_vat='EL0618285912'"
    assert decision["rules"][0]["actions"] == {"set_type": "purchase_invoice", "auto_send": False}
    assert decision["auto_send"] is False
    assert cli.main([*base, "delete", "greek", "--dossier", "acme"]) == 0
    capsys.readouterr()
    assert cli.main([*base, "test", str(path), "--dossier", "acme", "--json"]) == 0
    assert [m["rule"] for m in json.loads(capsys.readouterr().out)["rules"]] == ["all-xml"]
    assert cli.main([*base, "delete", "greek", "--dossier", "acme"]) == cli.EX_REFUSED
    assert "no rule 'greek' at dossier acme" in capsys.readouterr().err


def test_rules_test_takes_a_mail_apart_like_the_daemon(
    config: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        cli.main(
            [
                "-c",
                config,
                "dossier",
                "add",
                "se",
                "--integration",
                "none",
                "--vat",
                "SE4598375937",
                "--address",
                "se@docs.example",
            ]
        )
        == 0
    )
    msg = EmailMessage()
    msg["From"] = "billing@supplier.example"
    msg["To"] = "se@docs.example"
    msg["Subject"] = "Invoice Snippet1"
    msg.set_content("attached")
    xml = corpus_file("peppol-bis3/base-example.xml").read_bytes()
    pdf = corpus_file("facturx/MustangGnuaccountingBeispielRE-20201121_508blanko.pdf").read_bytes()
    msg.add_attachment(xml, maintype="application", subtype="xml", filename="inv.xml")
    msg.add_attachment(pdf, maintype="application", subtype="pdf", filename="inv.pdf")
    eml = tmp_path / "mail.eml"
    eml.write_bytes(msg.as_bytes())
    capsys.readouterr()
    assert cli.main(["-c", config, "rules", "test", str(eml), "--dossier", "se", "--json"]) == 0
    (decision,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (decision["file"], decision["type"], decision["visual"]) == (
        "inv.xml",
        "purchase_invoice",
        "inv.pdf",
    )


def test_rules_test_refuses_an_unknown_dossier_or_file(
    config: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        cli.main(["-c", config, "rules", "test", str(tmp_path / "nope.xml"), "--dossier", "x"]) == 1
    )
    assert "nope.xml" in capsys.readouterr().err
    (tmp_path / "a.xml").write_bytes(b"<a/>")
    assert cli.main(["-c", config, "rules", "test", str(tmp_path / "a.xml"), "--dossier", "x"]) == 1
    assert "no dossier 'x'" in capsys.readouterr().err


def test_a_bad_rule_is_refused_with_the_key(
    config: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["-c", config, "rules", "add", "r", "--match", "colour=red", "--drop"]) == 1
    assert "match.colour: unknown" in capsys.readouterr().err


def _doc(config: str, status: DocStatus = DocStatus.INBOX, queued: bool = False) -> int:
    settings = load(config)
    store = open_store(settings.database.url, settings.blob_dir)
    with store.session.begin() as session:
        integration = Integration(name=f"drop{status}{queued}", kind="directory", options={})
        dossier = Dossier(slug=f"d-{status}-{queued}".lower(), integration=integration)
        doc = Document(
            dossier=dossier,
            filename="scan.pdf",
            media_type="application/pdf",
            blob_sha256="0" * 64,
            size=1,
            doc_type=None,
            reason="pdf-low-confidence: 0.50 < 0.85",
            status=status,
            facts={"supplier": {"vat": "BE0987654321"}, "number": "F-1"},
        )
        session.add(doc)
        if queued:
            session.add(Delivery(document=doc, integration=integration))
        session.flush()
        doc_id = doc.id
    store.engine.dispose()
    return doc_id


def test_set_type_by_hand_until_sent(config: str, capsys: pytest.CaptureFixture[str]) -> None:
    doc_id = _doc(config)
    assert cli.main(["-c", config, "doc", "set-type", str(doc_id), "purchase_invoice"]) == 0
    capsys.readouterr()
    assert cli.main(["-c", config, "doc", "show", str(doc_id), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["type"] == "purchase_invoice"
    assert shown["reason"].startswith("set by hand to purchase_invoice (was unrecognised: pdf-low")
    assert shown["events"][-1]["kind"] == "type_set"
    sent = _doc(config, DocStatus.SENT)
    assert cli.main(["-c", config, "doc", "set-type", str(sent), "sales_invoice"]) == 1
    assert "already sent" in capsys.readouterr().err
    queued = _doc(config, queued=True)
    assert cli.main(["-c", config, "doc", "set-type", str(queued), "sales_invoice"]) == 1
    assert "is on its way" in capsys.readouterr().err


def test_a_bad_schema_folder_is_a_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "gw.toml"
    path.write_text(
        f'[gateway]\nstate_dir = "{tmp_path}/var"\n'
        f'[database]\nurl = "sqlite:///{tmp_path}/var/gw.db"\n'
        f'[recognition]\nubl_xsd_dir = "{tmp_path}/missing"\n'
    )
    assert cli.main(["-c", str(path), "db", "upgrade"]) == 0
    assert cli.main(["-c", str(path), "dossier", "add", "a", "--integration", "none"]) == 0
    (tmp_path / "x.xml").write_bytes(b"<a/>")
    status = cli.main(["-c", str(path), "rules", "test", str(tmp_path / "x.xml"), "--dossier", "a"])
    assert status == 78
    err = capsys.readouterr().err
    assert f"{path}: recognition.ubl_xsd_dir: {tmp_path}/missing/maindoc/UBL-Invoice-2.1.xsd" in err


def test_rules_test_sees_the_mail_headers(
    config: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert add_dossier(config, "--address", "acme@docs.example") == 0
    rule = [
        "rules",
        "add",
        "purchase-hint",
        "--match",
        "subaddress=purchase",
        "--match",
        "sender=*@telecom.example",
        "--set-type",
        "purchase_invoice",
    ]
    assert cli.main(["-c", config, *rule]) == 0
    msg = EmailMessage()
    msg["From"] = "Telecom <billing@telecom.example>"
    msg["To"] = "acme+purchase@docs.example"
    msg["Subject"] = "Your bill"
    msg.add_attachment(
        b"%PDF-1.4 not really", maintype="application", subtype="pdf", filename="b.pdf"
    )
    eml = tmp_path / "bill.eml"
    eml.write_bytes(msg.as_bytes())
    capsys.readouterr()
    assert cli.main(["-c", config, "rules", "test", str(eml), "--dossier", "acme", "--json"]) == 0
    decision = json.loads(capsys.readouterr().out)
    assert decision["type"] == "purchase_invoice"
    assert decision["rules"][0]["why"] == (
        "subaddress='purchase', sender='billing@telecom.example'"
    )


def test_rules_test_says_what_it_would_duplicate_and_stores_nothing(
    config: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert add_dossier(config) == 0
    invoice = tmp_path / "again.xml"
    invoice.write_bytes(corpus_file("peppol-bis3/base-example.xml").read_bytes())
    settings = load(config)
    store = open_store(settings.database.url, settings.blob_dir)
    with store.session.begin() as session:
        dossier = session.scalars(select(Dossier).where(Dossier.slug == "acme")).one()
        first = Document(
            dossier=dossier,
            filename="first.xml",
            media_type="application/xml",
            blob_sha256=hashlib.sha256(invoice.read_bytes()).hexdigest(),
            size=1,
        )
        session.add(first)
        session.flush()
        first_id = first.id
    capsys.readouterr()
    argv = ["-c", config, "rules", "test", str(invoice), "--dossier", "acme", "--json"]
    assert cli.main(argv) == 0
    decision = json.loads(capsys.readouterr().out)
    assert decision["duplicate_of"] == first_id
    assert decision["auto_send"] is False
    with store.session() as session:
        assert session.scalar(select(func.count()).select_from(Document)) == 1
    store.engine.dispose()


def test_rules_test_knows_the_config_dossiers_before_the_first_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "gw.toml"
    path.write_text(
        f'[gateway]\nstate_dir = "{tmp_path}/var"\n'
        f'[database]\nurl = "sqlite:///{tmp_path}/var/gw.db"\n'
        '[[dossiers]]\nslug = "se"\nvat = "SE4598375937"\nintegration = "none"\n'
    )
    assert cli.main(["-c", str(path), "db", "upgrade"]) == 0
    invoice = str(corpus_file("peppol-bis3/base-example.xml"))
    capsys.readouterr()
    assert cli.main(["-c", str(path), "rules", "test", invoice, "--dossier", "se", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["type"] == "purchase_invoice"
    assert cli.main(["-c", str(path), "dossier", "list", "--json"]) == 0
    assert capsys.readouterr().out == ""
