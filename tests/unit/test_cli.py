"""The management commands on a real SQLite database: add, list, show, and clear refusals."""

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


def _json_lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_integration_and_dossier_round_trip(
    config: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        cli.main(
            [
                "-c",
                config,
                "integration",
                "add",
                "drop",
                "--kind",
                "directory",
                "--option",
                f"path={tmp_path}/out",
                "--option",
                "upload_path=In/",
            ]
        )
        == 0
    )
    assert (
        cli.main(
            [
                "-c",
                config,
                "dossier",
                "add",
                "acme",
                "--integration",
                "drop",
                "--vat",
                "BE0123456749",
                "--address",
                "Acme@Docs.Example",
                "--auto-send",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert cli.main(["-c", config, "integration", "list", "--json"]) == 0
    (integration,) = _json_lines(capsys)
    assert integration["options"] == {"path": f"{tmp_path}/out", "upload_path": "In/"}
    assert cli.main(["-c", config, "dossier", "list", "--json"]) == 0
    (dossier,) = _json_lines(capsys)
    assert dossier["addresses"] == ["acme@docs.example"]
    assert dossier["integration"] == "drop"
    assert dossier["auto_send"] is True
    assert cli.main(["-c", config, "dossier", "show", "acme", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["vat"] == "BE0123456749"


def test_refusals_say_what_is_wrong(config: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["-c", config, "dossier", "add", "x", "--integration", "nope"]) == 1
    assert "no integration named 'nope'" in capsys.readouterr().err
    assert cli.main(["-c", config, "dossier", "add", "Bad Slug", "--integration", "none"]) == 1
    assert "dossier slug 'Bad Slug'" in capsys.readouterr().err
    args = ["-c", config, "dossier", "add", "x", "--integration", "none", "--address", "a@@b"]
    assert cli.main(args) == 1
    assert "address 'a@@b'" in capsys.readouterr().err
    args = ["-c", config, "integration", "add", "s", "--kind", "sftp", "--option", "host=h"]
    assert cli.main(args) == 78
    assert "username: missing" in capsys.readouterr().err
    assert cli.main(["-c", config, "doc", "send", "99"]) == 1
    assert "no document 99" in capsys.readouterr().err
    assert cli.main(["-c", config, "dossier", "show", "ghost"]) == 1


def test_an_address_belongs_to_one_dossier(config: str, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["-c", config, "dossier", "add"]
    assert cli.main([*base, "a", "--integration", "none", "--address", "x@d.example"]) == 0
    assert cli.main([*base, "b", "--integration", "none", "--address", "X@d.example"]) == 1
    assert "already belongs to dossier a" in capsys.readouterr().err


def test_commands_refuse_a_database_behind_the_migrations(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "fresh.toml"
    path.write_text(f'[database]\nurl = "sqlite:///{tmp_path}/fresh.db"\n')
    assert cli.main(["-c", str(path), "doc", "list"]) == 69
    assert "gateway db upgrade" in capsys.readouterr().err
