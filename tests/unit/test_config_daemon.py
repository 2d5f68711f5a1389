"""`[daemon] rules_process` and `smtp_process`: off unless asked for, booleans like every switch."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway import config

REPO = Path(__file__).resolve().parents[2]


def test_the_rules_stage_stays_in_the_daemon_by_default() -> None:
    assert config.load(REPO / "config" / "gateway.example.toml").daemon.rules_process is False


def test_rules_process_is_a_switch(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text("[daemon]\nrules_process = true\n")
    assert config.load(path).daemon.rules_process is True
    path.write_text("[daemon]\nrules_process = 'yes'\n")
    with pytest.raises(config.ConfigError, match=r"daemon\.rules_process"):
        config.load(path)


def test_the_smtp_door_stays_in_the_daemon_by_default_and_may_leave_it(tmp_path: Path) -> None:
    assert config.load(REPO / "config" / "gateway.example.toml").daemon.smtp_process is False
    path = tmp_path / "gw.toml"
    path.write_text("[daemon]\nsmtp_process = true\n")
    assert config.load(path).daemon.smtp_process is True
    path.write_text("[daemon]\nsmtp_process = 1\n")
    with pytest.raises(config.ConfigError, match=r"daemon\.smtp_process"):
        config.load(path)
