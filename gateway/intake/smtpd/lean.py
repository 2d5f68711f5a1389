"""aiosmtpd's fixed costs per connection and per command, made small without changing a reply.

aiosmtpd finds SMTP verbs, AUTH mechanisms and handler hooks by scanning `dir()` of every new
protocol object and of its handler (`inspect.getmembers`, a `getattr` of every name): about
0.3 ms of CPU per connection, which a door taking one message per connection pays per message.
`ScannedNames.__dir__` lists only the names that scan looks for, worked out once per class.

It looks the event loop up under `warnings.catch_warnings()` unless it is given one.

It restarts its idle timer on every command (and the streaming DATA reader on every chunk) by
cancelling one timer and scheduling another. Here the activity only moves a deadline; the one
timer, when it fires early, sleeps again until the deadline, so the idle time limit holds as
before at the cost of a clock reading per command.

It sends every line of a multi-line reply (EHLO's five or more) with a write, a `send` system
call, of its own; on loopback each costs about as much CPU as a one-line reply. Here the lines
of a reply wait for its last line (the one without `-` after the code), and leave with it.

Its address parser (`_getaddr`) runs MAIL and RCPT arguments through the e-mail header parser
(~0.1 ms each). A plain `<local@domain>` (dot-atoms of ASCII atext) is split here instead;
anything else (SMTPUTF8, quoted local parts, source routes, comments, encoded words, the null
sender) still goes through aiosmtpd's own parser, so both give the same result for every input.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from typing import Any, AnyStr

from aiosmtpd.smtp import SMTP

# The prefixes aiosmtpd's scan keeps: `smtp_` verbs, `auth_` mechanisms, `handle_` hooks.
SCANNED_PREFIXES = ("smtp_", "auth_", "handle_")

# RFC 5322 atext, dot-atom; `=?` is left out because the header parser reads encoded words.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_DOT_ATOM = rf"{_ATEXT}+(?:\.{_ATEXT}+)*"
# `<addr>`, then the spaces and tabs the header parser also takes as part of the address.
_PLAIN = re.compile(rf"<({_DOT_ATOM})@({_DOT_ATOM})>[ \t]*", re.ASCII)


class ScannedNames:
    """`dir()` limited to the names aiosmtpd's per-connection scan looks for.

    Mixed into the protocol class and into the handler; instance attributes never carry those
    prefixes, so the scan finds exactly what it would find in the full `dir()`.
    """

    def __dir__(self) -> list[str]:
        cls = type(self)
        names = _SCANNED.get(cls)
        if names is None:
            names = _SCANNED[cls] = [n for n in dir(cls) if n.startswith(SCANNED_PREFIXES)]
        return list(names)


_SCANNED: dict[type, list[str]] = {}


class LeanSMTP(ScannedNames, SMTP):
    """aiosmtpd's `SMTP` with the scan limited and a fast path for plain addresses."""

    def __init__(self, handler: Any, *args: Any, **kwargs: Any) -> None:
        # Without a `loop`, aiosmtpd asks `asyncio.get_event_loop()` under a
        # `warnings.catch_warnings()` for every connection; the running loop is the same one.
        if kwargs.get("loop") is None:
            with contextlib.suppress(RuntimeError):
                kwargs["loop"] = asyncio.get_running_loop()
        super().__init__(handler, *args, **kwargs)

    _deadline = 0.0
    # The lines of a multi-line reply so far, each with its CRLF, until its last line.
    _continued = ""

    async def push(self, status: AnyStr) -> None:
        continued, self._continued = self._continued, ""
        if isinstance(status, bytes):
            charset = "utf-8" if self.enable_SMTPUTF8 else "ascii"
            await super().push(continued.encode(charset) + status)
        elif status[3:4] == "-":
            self._continued = continued + status + "\r\n"
        else:
            await super().push(continued + status)

    def _reset_timeout(self, duration: float | None = None) -> None:
        self._deadline = self.loop.time() + (duration or self._timeout_duration)
        timer = self._timeout_handle
        if timer is None or timer.cancelled() or timer.when() > self._deadline:
            if timer is not None:
                timer.cancel()
            self._timeout_handle = self.loop.call_at(self._deadline, self._idle_timer)

    def _idle_timer(self) -> None:
        if self.loop.time() < self._deadline:
            self._timeout_handle = self.loop.call_at(self._deadline, self._idle_timer)
        else:
            self._timeout_cb()  # type: ignore[no-untyped-call]

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        plain = _PLAIN.match(arg) if "=?" not in arg else None
        if plain is None or arg.startswith("(", plain.end()):
            return super()._getaddr(arg)
        local, domain = plain.groups()
        if self.local_part_limit and len(local) > self.local_part_limit:
            return None, None
        return f"{local}@{domain}", arg[plain.end() :]
