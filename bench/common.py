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
__all__ += ["CORES", "PROCESS_COUNTS", "cpu_by_role", "full_gateway"]

INTAKE_ADDRESS = "bench@gateway.localhost"


def gateway_config(
    port: int, integration: str, workers: int = 2, smtp_processes: int = 1, split: bool = False
) -> str:
    """A production-like config: SQLite, info logs as JSON to a file, the daemon's defaults.
    With SMTP listener processes the rules stage gets a process of its own too, as the README
    advises for a busy gateway; `split` puts a single door in a listener process as well
    (`daemon.smtp_process`), so the door, the rules stage and the workers have one each."""
    rules_process = str(split or smtp_processes > 1).lower()
    smtp_process = str(split).lower()
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

[daemon]
rules_process = {rules_process}
smtp_process = {smtp_process}

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
    """The full gateway with `processes` SMTP processes (above 1, the rules stage in a process
    of its own too), started in its own folder under `workdir`, and the name the tables give
    it. The caller stops it."""
    port = free_port()
    home = workdir / f"gateway-{processes}"
    home.mkdir()
    config = gateway_config(port, DIRECTORY_DROP, smtp_processes=processes)
    gateway = Gateway(home, config, port)
    gateway.start()
    rules = "rules stage in its own process" if processes > 1 else "rules stage"
    return gateway, f"full gateway, {processes} SMTP process(es): door, {rules}, workers"


def cpu_by_role(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) the daemon `pid` and each kind of child of it used so far:
    `daemon`, `smtp listeners`, `rules stage`."""
    roles = {
        "gateway.intake.smtpd.listeners": "smtp listeners",
        "gateway.pipeline.process": "rules stage",
    }
    found = {"daemon": _cpu_seconds(pid)}
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    for child in map(int, children):
        try:
            command = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            role = roles.get(command[2].decode(), "other") if len(command) > 2 else "other"
            found[role] = found.get(role, 0.0) + _cpu_seconds(child)
        except OSError:
            continue  # it has just exited
    return found


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
