"""Checks on an SMTP transaction's raw bytes, kept apart from aiosmtpd so that a streaming DATA
reader can call the same functions on what it has read."""

from __future__ import annotations

import re

from gateway.intake import mime
from gateway.intake.senders import allowlist

# A CR not followed by LF, or an LF not preceded by CR: the raw material of SMTP smuggling
# (CVE-2023-51764 class). RFC 5321 §2.3.8 forbids both in DATA; we refuse rather than repair.
_BARE = re.compile(rb"\r(?!\n)|(?<!\r)\n")

BARE_LINE_ENDING = (
    "550 5.6.0 Message refused: bare CR or LF in the content (every line must end in CRLF)"
)
TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
# Postfix's hopcount_limit: more Received headers than this is a mail loop (RFC 5321 §6.3).
MAX_HOPS = 50
LOOP = f"554 5.4.6 Too many hops (more than {MAX_HOPS} Received headers): mail loop"


def has_bare_line_ending(data: bytes) -> bool:
    return _BARE.search(data) is not None


def is_looping(raw: bytes) -> bool:
    return len(mime.header_values(raw, "Received")) > MAX_HOPS


def refusal(verdict: allowlist.Verdict) -> str:
    """The SMTP reply for a refused sender: 451 when the check could not be made."""
    if verdict.temporary:
        return f"451 4.7.1 {verdict.reason}; try again later"
    return f"550 5.7.1 {verdict.reason}"
