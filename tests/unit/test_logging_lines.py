"""Children share the daemon's stderr: a JSON event must reach it in one write, whole."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

WRITER = """
import structlog
from gateway.logging import configure
configure("info", "json")
log = structlog.get_logger()
for n in range(1500):
    log.info("line", n=n, pad="x" * 40)
"""


def test_concurrent_processes_never_interleave_a_line(tmp_path: Path) -> None:
    out = tmp_path / "shared.log"
    with open(out, "ab") as shared:
        procs = [
            subprocess.Popen([sys.executable, "-c", WRITER], stdout=shared, stderr=shared)
            for _ in range(4)
        ]
        assert [p.wait(timeout=60) for p in procs] == [0, 0, 0, 0]
    lines = out.read_text().splitlines()
    events = [json.loads(line) for line in lines]
    assert len(events) == 4 * 1500
    assert {e["event"] for e in events} == {"line"}
