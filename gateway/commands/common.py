"""What every command shares: the config, a checked store, a session, and the output forms."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy.orm import Session

from gateway import config
from gateway.store.db import Store, check_current, open_store

# Exit status of a request the state refused (sysexits has none; 1 is the convention).
EX_REFUSED = 1


class Refused(Exception):
    """A request the state does not allow; the message is shown as is."""


def json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="one JSON object per line")


def load_settings(args: argparse.Namespace) -> config.Settings:
    return config.load(args.config)


def checked_store(settings: config.Settings) -> Store:
    """The store, refusing a schema behind the migrations (the message names the fix)."""
    store = open_store(settings.database.url, settings.blob_dir, settings.database.busy_timeout)
    check_current(store.engine)
    return store


def with_session(args: argparse.Namespace, work: Callable[[Session], int]) -> int:
    """Run `work` in one transaction, committed if it returns."""
    store = checked_store(load_settings(args))
    with store.session.begin() as session:
        return work(session)


def to_json(row: dict[str, Any]) -> str:
    return json.dumps(row, ensure_ascii=False)


def emit(
    rows: Iterable[dict[str, Any]], as_json: bool, line: Callable[[dict[str, Any]], str]
) -> None:
    for row in rows:
        print(to_json(row) if as_json else line(row))


def pretty(row: dict[str, Any]) -> str:
    return json.dumps(row, indent=2, ensure_ascii=False)
