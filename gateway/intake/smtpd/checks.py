"""Checks on an SMTP transaction's raw bytes and the replies they give, kept apart from aiosmtpd
so that the streaming DATA reader (`gateway.intake.smtpd.smtp_data`) refuses with the same words."""

from __future__ import annotations

import errno

from gateway import mime
from gateway.intake.senders import allowlist

# A CR not followed by LF, or an LF not preceded by CR, found by `data_decoder`: the raw material
# of SMTP smuggling (CVE-2023-51764 class). RFC 5321 §2.3.8 forbids both in DATA; we refuse
# rather than repair.
BARE_LINE_ENDING = (
    "550 5.6.0 Message refused: bare CR or LF in the content (every line must end in CRLF)"
)
TOO_BIG = "552 5.3.4 Message too big for system"
LINE_TOO_LONG = "500 5.5.2 Line too long (RFC 5321 4.5.3.1.6)"
TEMPFAIL = "451 4.3.0 Requested action aborted: local error in processing, try again later"
NO_ROOM = "452 4.3.1 Insufficient system storage, try again later"
TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
# Postfix's hopcount_limit: more Received headers than this is a mail loop (RFC 5321 §6.3).
MAX_HOPS = 50
LOOP = f"554 5.4.6 Too many hops (more than {MAX_HOPS} Received headers): mail loop"


def is_looping(raw: bytes) -> bool:
    """More than MAX_HOPS Received headers in the header block `raw`.

    Each of them spells "received" somewhere, so a block that does not hold the word more
    than MAX_HOPS times cannot loop: decided by one search in C, without parsing, for
    nearly every message.
    """
    if raw.lower().count(b"received") <= MAX_HOPS:
        return False
    return len(mime.header_values(raw, "Received")) > MAX_HOPS


# SQLite's SQLITE_FULL, and PostgreSQL's disk_full SQLSTATE: the database's storage is full.
SQLITE_FULL = 13
PG_DISK_FULL = "53100"


def storage_failure(exc: Exception) -> str:
    """A full disk or quota is the system's storage (452 4.3.1), whether a file or the
    database (which holds most messages' bytes) met it; anything else is 451 4.3.0."""
    if isinstance(exc, OSError):
        return NO_ROOM if exc.errno in (errno.ENOSPC, errno.EDQUOT) else TEMPFAIL
    cause = getattr(exc, "orig", None)  # the driver's error under SQLAlchemy's
    full = getattr(cause, "sqlite_errorcode", None) == SQLITE_FULL
    full = full or getattr(cause, "sqlstate", None) == PG_DISK_FULL
    return NO_ROOM if full else TEMPFAIL


def refusal(verdict: allowlist.Verdict) -> str:
    """The SMTP reply for a refused sender: 451 when the check could not be made."""
    if verdict.temporary:
        return f"451 4.7.1 {verdict.reason}; try again later"
    return f"550 5.7.1 {verdict.reason}"
