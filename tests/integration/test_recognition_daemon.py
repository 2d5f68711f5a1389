"""The real daemon: Factur-X and CODA in by SMTP, duplicates kept but delivered once, rules
from the config applied, and a bad schema folder refused at start with exit 78."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from integration.gateway_proc import base_config, mail, start_gateway
from integration.servers import free_port

SETUP = """
[[integrations]]
name = "drop"
kind = "directory"
path = "{out}"

[[dossiers]]
slug = "fr"
vat = "FR19787878784"
addresses = ["fr@docs.office.example"]
ibans = ["BE13 0016 7609 6039"]
integration = "drop"
auto_send = true

[[rules]]
name = "statements-by-hand"
dossier = "fr"
[rules.match]
type = "bank_statement"
[rules.actions]
auto_send = false
"""


def test_hybrid_twice_and_a_statement(tmp_path: Path, corpus: Path) -> None:
    out = tmp_path / "out"
    gateway = start_gateway(tmp_path, SETUP.format(out=out))
    try:
        pdf = (corpus / "facturx" / "Facture_FR_EN16931.pdf").read_bytes()
        coda = (corpus / "coda" / "Coda_iban_v2_3_multi_statements.txt").read_bytes()
        gateway.send(mail("fr@docs.office.example", ("facture.pdf", pdf, "application/pdf")))
        gateway.send(mail("fr@docs.office.example", ("encore.pdf", pdf, "application/pdf")))
        gateway.send(mail("fr@docs.office.example", ("releve.cod", coda, "text/plain")))

        def sent_and_all_three() -> dict[str, dict[str, str]] | None:
            docs = {d["filename"]: d for d in gateway.docs()}
            done = len(docs) == 3 and docs["facture.pdf"]["status"] == "sent"
            return docs if done else None

        by_name = gateway.wait_for(sent_and_all_three)
        first, again = by_name["facture.pdf"], by_name["encore.pdf"]
        assert first["type"] == again["type"] == "purchase_invoice"
        shown = json.loads(gateway.cli("doc", "show", str(again["id"]), "--json").stdout)
        assert again["status"] == "inbox"
        assert again["status_reason"] == f"duplicate of document {first['id']} (same file)"
        assert shown["facts"]["embedded_xml"] == "factur-x.xml"
        statement = by_name["releve.cod"]
        assert statement["type"] == "bank_statement"
        assert statement["status"] == "inbox"
        landed = sorted(p.name for p in out.rglob("*") if p.is_file())
        assert landed == [f"{first['id']}-facture.pdf"]
    finally:
        gateway.stop()


def test_a_missing_schema_folder_stops_the_start(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    missing = tmp_path / "no-xsd"
    config.write_text(base_config(free_port(), f'[recognition]\nubl_xsd_dir = "{missing}"\n'))
    run = [sys.executable, "-m", "gateway", "-c", str(config)]
    subprocess.run([*run, "db", "upgrade"], cwd=tmp_path, check=True, timeout=60)
    result = subprocess.run([*run, "run"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 78
    assert "recognition.ubl_xsd_dir" in result.stderr
