"""Named points where a test can kill the daemon (`GW_CRASH_AT=name`, or `name:N` for the
Nth time the point is reached), to prove that a crash at exactly that moment loses and
duplicates nothing. Unset in production: one environment look-up."""

from __future__ import annotations

import os
import signal
from collections import Counter

_reached: Counter[str] = Counter()


def crashpoint(name: str) -> None:
    wanted = os.environ.get("GW_CRASH_AT")
    if not wanted:
        return
    point, _, nth = wanted.partition(":")
    if point != name:
        return
    _reached[name] += 1
    if _reached[name] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
