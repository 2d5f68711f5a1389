"""Named points where a test can kill the daemon (`GW_CRASH_AT=name`), to prove that a crash
at exactly that moment loses and duplicates nothing. Unset in production: one dict lookup."""

from __future__ import annotations

import os
import signal


def crashpoint(name: str) -> None:
    if os.environ.get("GW_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
