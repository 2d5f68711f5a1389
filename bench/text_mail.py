"""A message of plain prose for `smtp-source -F`: every line a sentence ending in a full stop.

`smtp-source -l` sends lines of `X`, none ending in `.`; real text mail (letters, reminders,
quoted replies) ends most lines with a full stop. A DATA reader that treats every `.CRLF` as a
possible end pays for such lines one by one, and only a load like this one shows it.
"""

from __future__ import annotations

import random
from pathlib import Path

VOCABULARY = (
    "the invoice for march is attached please find our statement of account and the credit "
    "note we booked your payment on the ledger thank you kind regards from the office"
)
HEADER = "From: <bench@example.com>\nTo: <bench@gateway.localhost>\nSubject: text\n\n"


def write(path: Path, size: int) -> Path:
    """Write about `size` bytes (as sent, with CRLF line ends) of text mail to `path`, with LF
    line ends as `smtp-source -F` wants them; the same bytes for the same size every time."""
    rng = random.Random(size)
    vocabulary = VOCABULARY.split(" ")
    lines = [HEADER]
    sent = len(HEADER) + HEADER.count("\n")
    while sent < size:
        words = [rng.choice(vocabulary) for _ in range(rng.randint(6, 12))]
        line = " ".join(words).capitalize() + ".\n"
        lines.append(line)
        sent += len(line) + 1
    path.write_text("".join(lines))
    return path
