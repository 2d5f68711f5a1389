"""The intake settings refuse what cannot work, naming the key: IMAP accounts, the drop
folder, TLS and AUTH for SMTP, the sender policy and the DNS resolver."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway import config


def _load(tmp_path: Path, text: str) -> config.Settings:
    path = tmp_path / "gw.toml"
    path.write_text(text)
    return config.load(path)


def _imap(tmp_path: Path, extra: str) -> str:
    pw = tmp_path / "pw"
    pw.write_text("x")
    return f'[[imap]]\nname = "a"\nhost = "h"\nuser = "u"\npassword_file = "{pw}"\n{extra}\n'


@pytest.mark.parametrize(
    ("extra", "key", "expected"),
    [
        ("", "imap[0].dossier", "set either dossier or catch_all = true"),
        ('dossier = "a"\ncatch_all = true', "imap[0].dossier", "either dossier or catch_all"),
        ('dossier = "a"\ntls = "starttls"', "imap[0].tls", "ssl or none"),
        ('dossier = "a"\npost_action = "delete"', "imap[0].post_action", "move or flag"),
        ('dossier = "a"\nport = 0.5', "imap[0].port", "expected an integer"),
        ('dossier = "a"\nfolder = "Factures reçues"', "imap[0].folder", "printable ASCII"),
        ('dossier = "a"\nprocessed_folder = "INBOX"', "imap[0].processed_folder", "must differ"),
    ],
)
def test_imap_account_errors(tmp_path: Path, extra: str, key: str, expected: str) -> None:
    with pytest.raises(config.ConfigError) as error:
        _load(tmp_path, _imap(tmp_path, extra))
    assert error.value.key == key
    assert expected in error.value.problem


def test_imap_password_file_must_exist_and_names_unique(tmp_path: Path) -> None:
    text = '[[imap]]\nname = "a"\nhost = "h"\nuser = "u"\npassword_file = "/nope"\ndossier = "a"\n'
    with pytest.raises(config.ConfigError, match=r"imap\[0\]\.password_file: no such file"):
        _load(tmp_path, text)
    twice = _imap(tmp_path, 'dossier = "a"') * 2
    with pytest.raises(config.ConfigError, match="account names must be unique"):
        _load(tmp_path, twice)
    settings = _load(tmp_path, _imap(tmp_path, 'dossier = "a"'))
    assert settings.imap[0].post_action == "move"
    assert settings.imap[0].port == 993


@pytest.mark.parametrize(
    ("text", "key", "expected"),
    [
        ("[smtp]\nrequire_tls = true\n", "smtp.require_tls", "needs smtp.tls_cert"),
        ('[smtp]\ntls_cert = "/nope.pem"\n', "smtp.tls_cert", "no such file"),
        ('[smtp]\nauth_file = "/etc/hostname"\n', "smtp.auth_file", "needs smtp.tls_cert"),
        ("[smtp]\nmax_line_length = 50\n", "smtp.max_line_length", ">= 100"),
        ('[intake]\nsender_policy = "strict"\n', "intake.sender_policy", "off, header or"),
        ('[intake]\ndns_resolver = "1.2.3.4:x"\n', "intake.dns_resolver", "host or host:port"),
        ("[folder]\nstable_seconds = -1\n", "folder.stable_seconds", ">= 0"),
        ("[mime]\nmax_parts = 0\n", "mime.max_parts", "greater than 0"),
        (
            "[[dossiers]]\nslug='a'\nintegration='none'\nallowed_senders='x'\n",
            "dossiers[0].allowed_senders",
            "list of strings",
        ),
    ],
)
def test_intake_setting_errors(tmp_path: Path, text: str, key: str, expected: str) -> None:
    with pytest.raises(config.ConfigError) as error:
        _load(tmp_path, text)
    assert error.value.key == key
    assert expected in error.value.problem


def test_defaults(tmp_path: Path) -> None:
    settings = _load(tmp_path, "")
    assert settings.intake.sender_policy == "header"
    assert settings.folder.root == ""
    assert settings.smtp.max_recipients == 100
    assert settings.mime.zip_max_ratio == 100
