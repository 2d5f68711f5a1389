"""structlog set-up: one JSON event per line for the journal, readable lines on a terminal.

Each event leaves in a single write, newline included: the SMTP listeners and the rules
child share the daemon's stderr, and `print` would write the line and its newline apart,
letting another process's event land between them.
"""

from __future__ import annotations

import logging
import sys

import structlog


def configure(level: str = "info", fmt: str = "auto") -> None:
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer()
    )
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.WriteLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
    _quiet_libraries()


def _quiet_libraries() -> None:
    """aiosmtpd and asyncssh log every session at INFO; keep their warnings only."""
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(name)s %(levelname)s %(message)s"
    )
    for name in ("mail.log", "asyncssh", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
