"""`gateway integration test` against the real servers, and `integration list` afterwards.

Secrets are canaries: whatever happens, they never appear in anything the CLI prints.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from integration.mailservers import Postfix
from integration.package_api import SECRET, PackageApi
from integration.servers import Sshd

from gateway import cli

CANARY = "canary-Zx81-never-print-me"


@pytest.fixture
def config(tmp_path: Path) -> str:
    path = tmp_path / "gw.toml"
    path.write_text(
        f'[gateway]\nstate_dir = "{tmp_path}/var"\n'
        f'[database]\nurl = "sqlite:///{tmp_path}/var/gw.db"\n'
    )
    assert cli.main(["-c", str(path), "db", "upgrade"]) == 0
    return str(path)


def _add(config: str, name: str, kind: str, **options: object) -> None:
    args = ["-c", config, "integration", "add", name, "--kind", kind]
    for key, value in options.items():
        args += ["--option", f"{key}={json.dumps(value)}"]
    assert cli.main(args) == 0


def _test(config: str, name: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[dict]]:
    capsys.readouterr()
    code = cli.main(["-c", config, "integration", "test", name, "--json"])
    out, err = capsys.readouterr()
    assert CANARY not in out + err
    return code, [json.loads(line) for line in out.splitlines()]


def _listed(config: str, capsys: pytest.CaptureFixture[str]) -> dict[str, dict]:
    capsys.readouterr()
    assert cli.main(["-c", config, "integration", "list", "--json"]) == 0
    out = capsys.readouterr().out
    assert CANARY not in out
    return {row["name"]: row for row in map(json.loads, out.splitlines())}


def test_sftp_probe_logs_in_writes_renames_and_deletes(
    config: str, tmp_path: Path, sshd: Sshd, capsys: pytest.CaptureFixture[str]
) -> None:
    password = tmp_path / "password"
    password.write_text(CANARY)
    common = {
        "host": sshd.host,
        "port": sshd.port,
        "username": sshd.username,
        "upload_path": "Probe_import/",
    }
    _add(config, "good", "sftp", key_file=str(sshd.client_key), host_key=sshd.host_key_line,
         password_file=str(password), **common)  # fmt: skip
    code, steps = _test(config, "good", capsys)
    assert code == 0
    assert [(s["step"], s["ok"]) for s in steps] == [
        ("login", True),
        ("write", True),
        ("rename", True),
        ("delete", True),
    ]
    assert list((sshd.root / "Probe_import").iterdir()) == []

    _add(config, "password-only", "sftp", host_key=sshd.host_key_line,
         password_file=str(password), **common)  # fmt: skip
    code, steps = _test(config, "password-only", capsys)
    assert code == 1
    assert [(s["step"], s["ok"]) for s in steps] == [("login", False)]
    assert steps[0]["detail"].startswith("auth-failed: ")

    listed = _listed(config, capsys)
    assert listed["good"]["last_test"]["ok"] is True
    assert listed["password-only"]["last_test"]["ok"] is False
    assert listed["password-only"]["last_test"]["report"].startswith("login: auth-failed")
    assert listed["password-only"]["options"]["password_file"] == str(password)


def test_sftp_probe_names_a_wrong_host_key(
    config: str, sshd: Sshd, capsys: pytest.CaptureFixture[str]
) -> None:
    other = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
    _add(config, "mitm", "sftp", host=sshd.host, port=sshd.port, username=sshd.username,
         key_file=str(sshd.client_key), host_key=other)  # fmt: skip
    code, steps = _test(config, "mitm", capsys)
    assert code == 1
    assert steps[0]["detail"].startswith("host-key-mismatch: ")


def test_mailbox_probe_asks_the_relay_about_each_fixed_address(
    config: str, postfix: Postfix, capsys: pytest.CaptureFixture[str]
) -> None:
    base = {"host": postfix.host, "port": postfix.port, "tls": "none",
            "from_address": "gateway@office.test"}  # fmt: skip
    _add(config, "mail", "mailbox", to_purchase="purchase@books.test",
         to_sales="inbox-[accounting_file_id]@books.test", **base)  # fmt: skip
    before = len(postfix.messages("purchase"))
    code, steps = _test(config, "mail", capsys)
    assert code == 0
    assert [s["step"] for s in steps] == ["connect", "login", "recipients"]
    assert steps[2]["detail"] == "accepted: purchase@books.test"

    _add(config, "typo", "mailbox", to="purchsae@books.test", **base)
    code, steps = _test(config, "typo", capsys)
    assert code == 1
    assert steps[-1]["step"] == "recipients"
    assert "550" in steps[-1]["detail"]
    assert len(postfix.messages("purchase")) == before, "a probe must not send mail"


def test_http_probe_reads_the_secret_and_reaches_the_url(
    config: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    api = PackageApi()
    api.start()
    try:
        secret = tmp_path / "secret"
        secret.write_text(SECRET)
        _add(config, "api", "http", url=api.url, secret_file=str(secret))
        code, steps = _test(config, "api", capsys)
        assert code == 0
        assert [s["step"] for s in steps] == ["secret", "reach"]
        assert steps[1]["detail"].startswith(f"{api.url} answered HTTP ")
        assert api.attempts == []
    finally:
        api.stop()
    code, steps = _test(config, "api", capsys)
    assert code == 1
    assert steps[-1]["step"] == "reach"
    assert steps[-1]["detail"].startswith("ConnectError")
