"""Recognition's commands on a real SQLite database: dossier IBANs, rules, tests, overrides."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway import cli


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
