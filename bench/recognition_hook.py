"""Recognition speed belongs to `bench/recognition.py` (the recognition work writes it); this
part runs it when it is there, so `python -m bench` stays the one command for every figure."""

from __future__ import annotations

import subprocess
import sys

from bench.common import REPO

TIMEOUT = 1800.0


def run() -> str:
    if not (REPO / "bench" / "recognition.py").exists():
        return "bench/recognition.py is not on this branch yet: no recognition figures."
    done = subprocess.run(
        [sys.executable, "-m", "bench.recognition"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    if done.returncode != 0:
        return f"bench.recognition exited {done.returncode}:\n{done.stderr.strip()}"
    return done.stdout.strip()
