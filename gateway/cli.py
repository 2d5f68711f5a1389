"""The `gateway` command: run the daemon, check the config, and inspect or repair the state.

Exit statuses follow sysexits: 78 for a bad config (the message names file and key), 69 when
the database is unreachable or behind its migrations, 1 when a request is refused (the message
says why), 2 for usage errors.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys

from sqlalchemy.exc import SQLAlchemyError

from gateway import config, office
from gateway.commands import documents as document_commands
from gateway.commands import dossiers as dossier_commands
from gateway.commands import integrations as integration_commands
from gateway.commands import mapping as mapping_commands
from gateway.commands import queue as queue_commands
from gateway.commands import rules as rules_commands
from gateway.commands.common import EX_REFUSED, Refused, load_settings
from gateway.logging import configure as configure_logging
from gateway.outbound import queue
from gateway.store.db import SchemaOutdated, check_current, open_store, upgrade

__all__ = ["EX_REFUSED", "main"]

EX_UNAVAILABLE = 69
DEFAULT_CONFIG = "/etc/gateway/gateway.toml"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except config.ConfigError as exc:
        print(f"gateway: config error: {exc}", file=sys.stderr)
        return config.EX_CONFIG
    except (Refused, office.SetupError, queue.NotSendable, rules_commands.CommandRefused) as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return EX_REFUSED
    except SchemaOutdated as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return EX_UNAVAILABLE
    except SQLAlchemyError as exc:
        print(f"gateway: database error: {exc.__class__.__name__}: {exc}", file=sys.stderr)
        return EX_UNAVAILABLE


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description=__doc__)
    parser.add_argument(
        "-c",
        "--config",
        default=os.environ.get("GATEWAY_CONFIG", DEFAULT_CONFIG),
        help=f"config file (default: $GATEWAY_CONFIG or {DEFAULT_CONFIG})",
    )
    sub = parser.add_subparsers(required=True, metavar="COMMAND")
    sub.add_parser("run", help="run the daemon in the foreground").set_defaults(func=cmd_run)
    check = sub.add_parser("check-config", help="check a config file and exit")
    check.add_argument("file", nargs="?", help="file to check (default: --config)")
    check.set_defaults(func=cmd_check_config)
    db = sub.add_parser("db", help="database schema").add_subparsers(required=True)
    db.add_parser("upgrade", help="apply the migrations").set_defaults(func=cmd_db_upgrade)
    dossier_commands.register(sub)
    integration_commands.register(sub)
    document_commands.register(sub)
    rules_commands.register(sub)
    queue_commands.register(sub)
    pw = sub.add_parser(
        "smtp-password", help="print a smtp.auth_file line for USER (password from stdin)"
    )
    pw.add_argument("user")
    pw.set_defaults(func=cmd_smtp_password)
    mapping_commands.register(sub)
    return parser


def cmd_run(args: argparse.Namespace) -> int:
    from gateway.daemon import serve

    settings = load_settings(args)
    configure_logging(settings.gateway.log_level, settings.gateway.log_format)
    asyncio.run(serve(settings))
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    path = args.file or args.config
    settings = config.load(path)
    print(
        f"{path}: ok ({len(settings.integrations)} integrations, {len(settings.dossiers)} dossiers)"
    )
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    store = open_store(settings.database.url, settings.blob_dir, settings.database.busy_timeout)
    upgrade(store.engine)
    check_current(store.engine)
    print("database schema is up to date")
    return 0


def cmd_smtp_password(args: argparse.Namespace) -> int:
    from gateway.intake.smtpd.login import hash_password

    if ":" in args.user or not args.user.strip():
        raise Refused(f"user {args.user!r}: must be non-empty and contain no ':'")
    password = getpass.getpass("password: ") if sys.stdin.isatty() else sys.stdin.readline()
    password = password.rstrip("\r\n")
    if not password:
        raise Refused("empty password")
    print(f"{args.user}:{hash_password(password)}")
    return 0
