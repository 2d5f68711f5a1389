"""SMTP intake throughput: receivers side by side, loaded by Postfix's `smtp-source`.

One session per message, over loopback, every receiver measured in the same run (absolute
figures move with the machine; ratios to real Postfix in the same run are what we compare).
Each trial is timed from smtp-source's start to its exit; smtp-source exits non-zero when any
reply is not positive, and such a trial is reported as failed, never counted. Between trials
the receiver is left to settle (Postfix's queue empty, the gateway idle), so one trial's
backlog never slows the next. Repetitions are interleaved across receivers, so a noisy minute
on the machine hits them all rather than one.
"""

from __future__ import annotations

import contextlib
import functools
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.common import (
    INTAKE_ADDRESS,
    PROCESS_COUNTS,
    REPO,
    free_port,
    full_gateway,
    median,
    stop_process,
    table,
    wait_for_port,
)
from bench.postfix import PrivatePostfix

SIZES = {"60 KB": 60 * 1024, "5 MB": 5 * 1024 * 1024}
SESSIONS = (10, 50)
REFERENCE = "real Postfix, into its queue (fsync)"
SETTLE_TIMEOUT = 300.0
TRIAL_TIMEOUT = 900.0


@dataclass
class Receiver:
    name: str
    port: int
    settle: Callable[[], None]


def cpu_ticks(pid: int) -> int:
    """User and system ticks of process `pid` and of its children, theirs and so on: the
    gateway's SMTP listeners and rules stage are children of the daemon."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return 0  # it has just exited
    return int(fields[11]) + int(fields[12]) + sum(cpu_ticks(int(c)) for c in children)


def wait_idle(pid: int) -> None:
    """Until the process and its children used under 30 ms of CPU in half a second (their
    backlog is done: a rules stage in a child still working on the last trial's messages
    would take CPU from the next)."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    before = cpu_ticks(pid)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = cpu_ticks(pid)
        if now - before < 3:
            return
        before = now
    raise TimeoutError(f"process {pid} still busy after {SETTLE_TIMEOUT}s")


def wait_queue_empty(postfix: PrivatePostfix) -> None:
    deadline = time.monotonic() + SETTLE_TIMEOUT
    queues = [postfix.root / "spool" / q for q in ("maildrop", "incoming", "active", "deferred")]
    while any(f.is_file() for q in queues for f in q.rglob("*")):
        if time.monotonic() > deadline:
            raise TimeoutError("Postfix's queue did not empty")
        time.sleep(0.2)


@contextlib.contextmanager
def receivers(workdir: Path) -> Iterator[list[Receiver]]:
    with contextlib.ExitStack() as stack:
        found: list[Receiver] = []

        port = free_port()
        sink = subprocess.Popen(
            ["smtp-sink", "-u", "nobody", f"127.0.0.1:{port}", "1024"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        stack.callback(stop_process, sink)
        wait_for_port("127.0.0.1", port, 30, sink)
        found.append(Receiver("Postfix smtp-sink (protocol only, C)", port, lambda: None))

        postfix = PrivatePostfix(workdir / "postfix", free_port())
        postfix.start()
        stack.callback(postfix.stop)
        wait_for_port("127.0.0.1", postfix.port, 30)
        found.append(Receiver(REFERENCE, postfix.port, lambda: wait_queue_empty(postfix)))

        for kind, name in [
            ("aiosmtpd", "aiosmtpd stock DATA loop, discarding"),
            ("streaming", "gateway streaming DATA reader, discarding"),
            ("door", "gateway SMTP door alone, durable + group commit"),
        ]:
            port = free_port()
            proc = python_receiver(kind, port, workdir)
            stack.callback(stop_process, proc)
            found.append(Receiver(name, port, functools.partial(wait_idle, proc.pid)))

        for processes in PROCESS_COUNTS:
            gateway, name = full_gateway(workdir, processes)
            stack.callback(gateway.stop)
            assert gateway.proc is not None
            settle = functools.partial(wait_idle, gateway.proc.pid)
            found.append(Receiver(name, gateway.port, settle))
        yield found


def python_receiver(kind: str, port: int, workdir: Path) -> subprocess.Popen[bytes]:
    (workdir / kind).mkdir()
    with open(workdir / f"{kind}.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.receivers", kind, str(port), str(workdir / kind)],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    wait_for_port("127.0.0.1", port, 60, proc)
    return proc


def trial(
    port: int, size: int, sessions: int, messages: int, message_file: Path | None = None
) -> float | None:
    """Messages per second, or None when any message was not accepted. With `message_file`
    smtp-source sends that file (`-F`) instead of `size` bytes of its own."""
    content = ["-F", str(message_file)] if message_file else ["-l", str(size)]
    command = ["smtp-source", "-s", str(sessions), "-m", str(messages), *content]
    command += ["-f", "bench@example.com", "-t", INTAKE_ADDRESS, f"127.0.0.1:{port}"]
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, timeout=TRIAL_TIMEOUT, check=False)
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        print(f"  trial failed: {done.stderr.decode(errors='replace').strip()}", flush=True)
        return None
    return messages / elapsed


def run(workdir: Path, repeats: int, small_messages: int, large_messages: int) -> str:
    results: dict[tuple[str, str, int], list[float]] = {}
    failures: dict[tuple[str, str, int], int] = {}
    with receivers(workdir) as found:
        for repeat in range(1, repeats + 1):
            for size_name, size in SIZES.items():
                count = small_messages if size < 1024 * 1024 else large_messages
                for sessions in SESSIONS:
                    for receiver in found:
                        rate = trial(receiver.port, size, sessions, count)
                        receiver.settle()
                        key = (receiver.name, size_name, sessions)
                        if rate is None:
                            failures[key] = failures.get(key, 0) + 1
                        else:
                            results.setdefault(key, []).append(rate)
                        shown = "failed" if rate is None else f"{rate:.0f} msgs/s"
                        print(
                            f"  [{repeat}/{repeats}] {size_name} x{sessions} {receiver.name}: "
                            f"{shown}",
                            flush=True,
                        )
        names = [r.name for r in found]
    return report(names, results, failures)


def report(
    names: list[str],
    results: dict[tuple[str, str, int], list[float]],
    failures: dict[tuple[str, str, int], int],
) -> str:
    out = []
    for size_name in SIZES:
        for sessions in SESSIONS:
            reference = median(results.get((REFERENCE, size_name, sessions), []))
            rows = []
            for name in names:
                key = (name, size_name, sessions)
                rate = median(results.get(key, []))
                ratio = rate / reference if reference == reference and reference else float("nan")
                failed = f" ({failures[key]} failed)" if key in failures else ""
                rows.append([name, f"{rate:.1f}{failed}", f"{ratio:.2f}"])
            out.append(f"\n{size_name} messages, {sessions} sessions (median msgs/s)\n")
            header = [
                f"receiver, {size_name}, {sessions} sessions",
                "msgs/s",
                "\N{MULTIPLICATION SIGN} Postfix",
            ]
            out.append(table(header, rows))
    return "\n".join(out)
