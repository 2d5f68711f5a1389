"""Config errors name the file, the key and what was expected; exit status 78."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway import cli, config

REPO = Path(__file__).resolve().parents[2]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gw.toml"
    path.write_text(text)
    return path


def test_example_config_is_valid() -> None:
    settings = config.load(REPO / "config" / "gateway.example.toml")
    assert (settings.smtp.host, settings.smtp.port) == ("127.0.0.1", 2525)
    assert settings.dossiers[0].slug == "demo"
    assert settings.dossiers[0].auto_send is True
    assert settings.integrations[0].kind == "directory"


@pytest.mark.parametrize(
    ("text", "key", "expected"),
    [
        ("[smtp]\nprot = 25\n", "smtp.prot", "unknown key"),
        ("[smtp]\nport = 'x'\n", "smtp.port", "expected an integer"),
        ("[smtp]\nport = 70000\n", "smtp.port", "port number"),
        ("[delivery]\nworkers = 0\n", "delivery.workers", "greater than 0"),
        ("[gateway]\nlog_level = 'loud'\n", "gateway.log_level", "one of"),
        ("[smpt]\n", "smpt", "unknown table"),
        ("[[dossiers]]\nslug = 'a'\n", "dossiers[0].integration", "missing"),
        (
            "[[dossiers]]\nslug = 'a'\nintegration = 'x'\n",
            "dossiers[0].integration",
            "no integration named 'x'",
        ),
        ("[[integrations]]\nname = 'x'\nkind = 'ftp'\n", "integrations[0].kind", "unknown kind"),
        (
            "[[integrations]]\nname = 'x'\nkind = 'directory'\n",
            "integrations[0].path",
            "missing",
        ),
        (
            "[[integrations]]\nname = 'x'\nkind = 'directory'\npath = 'o'\n"
            "filename_template = '[original]'\n",
            "integrations[0].filename_template",
            "template",
        ),
        (
            "[[integrations]]\nname = 'x'\nkind = 'directory'\npath = 'o'\n"
            "upload_path = '../etc'\n",
            "integrations[0].upload_path",
            "relative path",
        ),
        (
            "[[integrations]]\nname = 'x'\nkind = 'sftp'\nhost = 'h'\nusername = 'u'\n"
            "host_key = 'ssh-ed25519 AAAA'\nkey_file = 'k'\n",
            "integrations[0].host_key",
            "public key",
        ),
        ("[smtp\n", "(syntax)", ""),
    ],
)
def test_bad_settings_name_file_and_key(tmp_path: Path, text: str, key: str, expected: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(config.ConfigError) as error:
        config.load(path)
    assert error.value.key == key
    assert expected in error.value.problem
    assert str(path) in str(error.value)


def test_check_config_exits_78_with_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, "[database]\nbusy_timeout = 'soon'\n")
    assert cli.main(["check-config", str(path)]) == config.EX_CONFIG
    err = capsys.readouterr().err
    assert f"{path}: database.busy_timeout: expected a number" in err


def test_missing_config_file_exits_78(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["-c", str(tmp_path / "absent.toml"), "dossier", "list"]) == config.EX_CONFIG
    assert "absent.toml: (file): no such file" in capsys.readouterr().err
