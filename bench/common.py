"""What the benchmarks share: the test suite's real-server helpers, ports, a gateway to run."""

from __future__ import annotations

import os
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
# Gateways run from their work directories: make them import this checkout, not another
# installed copy of the package.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))

from integration.gateway_proc import Gateway  # noqa: E402
from integration.servers import free_port, start_sshd, stop_process, wait_for_port  # noqa: E402

__all__ = ["REPO", "Gateway", "free_port", "gateway_config", "start_sshd", "stop_process"]
__all__ += ["median", "table", "wait_for_port"]
__all__ += ["CORES", "PROCESS_COUNTS", "full_gateway"]

INTAKE_ADDRESS = "bench@gateway.localhost"


def gateway_config(port: int, integration: str, workers: int = 2, smtp_processes: int = 1) -> str:
    """A production-like config: SQLite, info logs as JSON to a file, the daemon's defaults."""
    return f"""
[gateway]
state_dir = "var"
log_level = "info"
log_format = "json"

[database]
url = "sqlite:///var/gateway.db"

[smtp]
host = "127.0.0.1"
port = {port}
max_message_size = 67108864
processes = {smtp_processes}

[delivery]
workers = {workers}
poll_interval = 0.2

[metrics]
enabled = false

{integration}

[[dossiers]]
slug = "bench"
vat = "BE0123456749"
addresses = ["{INTAKE_ADDRESS}"]
integration = "drop"
auto_send = true
"""


DIRECTORY_DROP = """
[[integrations]]
name = "drop"
kind = "directory"
path = "var/outbox"
"""


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table, so the output can be pasted into an issue as it is."""
    cells = [[str(c) for c in header], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
        for row in cells
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


# The full gateway runs once with one SMTP process and once with one per core.
CORES = os.cpu_count() or 1
PROCESS_COUNTS = sorted({1, CORES})


def full_gateway(workdir: Path, processes: int) -> tuple[Gateway, str]:
    """The full gateway with `processes` SMTP processes, started in its own folder under
    `workdir`, and the name the tables give it. The caller stops it."""
    port = free_port()
    home = workdir / f"gateway-{processes}"
    home.mkdir()
    config = gateway_config(port, DIRECTORY_DROP, smtp_processes=processes)
    gateway = Gateway(home, config, port)
    gateway.start()
    return gateway, f"full gateway, {processes} SMTP process(es): door, rules stage, workers"
