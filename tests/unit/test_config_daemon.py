"""`[daemon] rules_process` and `smtp_process`: off unless asked for, booleans like every switch."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway import config

REPO = Path(__file__).resolve().parents[2]
SWITCHES = ("rules_process", "smtp_process")


@pytest.mark.parametrize("switch", SWITCHES)
def test_the_stage_stays_in_the_daemon_by_default(switch: str) -> None:
    settings = config.load(REPO / "config" / "gateway.example.toml")
    assert getattr(settings.daemon, switch) is False


@pytest.mark.parametrize("switch", SWITCHES)
def test_each_is_a_switch(tmp_path: Path, switch: str) -> None:
    path = tmp_path / "gw.toml"
    path.write_text(f"[daemon]\n{switch} = true\n")
    assert getattr(config.load(path).daemon, switch) is True
    path.write_text(f"[daemon]\n{switch} = 'yes'\n")
    with pytest.raises(config.ConfigError, match=rf"daemon\.{switch}"):
        config.load(path)
