"""`python -m bench`: every benchmark in one run, printing Markdown tables.

Loopback only, bounded loops, real servers started here and stopped by PID. Absolute figures
depend on the machine and on what else runs on it; compare the ratios within one run.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

PARTS = ("intake", "latency", "memory", "rules", "sftp", "recognition")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--only", default=",".join(PARTS), help="comma-separated: " + ",".join(PARTS)
    )
    parser.add_argument("--repeats", type=int, default=3, help="trials per cell (median)")
    parser.add_argument("--small", type=int, default=600, help="60 KB messages per trial")
    parser.add_argument("--large", type=int, default=40, help="5 MB messages per trial")
    parser.add_argument("--rate", type=float, default=200.0, help="latency: messages per second")
    parser.add_argument("--seconds", type=float, default=5.0, help="latency: how long to send")
    parser.add_argument(
        "--smtp-processes", type=int, default=1, help="latency: the gateway's smtp.processes"
    )
    parser.add_argument(
        "--split",
        action="store_true",
        help="latency: the SMTP door and the rules stage each in a process of their own "
        "(daemon.smtp_process and daemon.rules_process)",
    )
    parser.add_argument("--files", type=int, default=1000, help="sftp: documents per mode")
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    args = parser.parse_args()
    chosen = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = set(chosen) - set(PARTS)
    if unknown:
        parser.error(f"unknown part(s): {', '.join(sorted(unknown))}")
    workdir = Path(tempfile.mkdtemp(prefix="gateway-bench-", dir="/var/tmp"))
    workdir.chmod(0o755)  # Postfix's daemons run as `postfix` and must reach their queue
    print(f"# gateway benchmarks ({time.strftime('%Y-%m-%d %H:%M:%S')}, workdir {workdir})")
    try:
        for part in chosen:
            print(f"\n## {part}", flush=True)
            print(run_part(part, workdir / part, args), flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


def run_part(part: str, workdir: Path, args: argparse.Namespace) -> str:
    workdir.mkdir(parents=True)
    if part == "intake":
        from bench import intake

        return intake.run(workdir, args.repeats, args.small, args.large)
    if part == "latency":
        from bench import latency

        return latency.run(workdir, args.rate, args.seconds, args.smtp_processes, args.split)
    if part == "memory":
        from bench import memory

        return memory.run(workdir)
    if part == "rules":
        from bench import rules_stage

        return rules_stage.run(workdir)
    if part == "sftp":
        from bench import sftp

        return sftp.run(workdir, args.files)
    from bench import recognition_hook

    return recognition_hook.run()


if __name__ == "__main__":
    main()
