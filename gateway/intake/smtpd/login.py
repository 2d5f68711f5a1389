"""SMTP AUTH for submission: optional, only over TLS, users and scrypt hashes from a file.

An authenticated session is the strongest evidence of who sends, so it stands in for the SPF
or DKIM alignment of the `aligned` policy; the dossier's allowed senders still apply to the
envelope sender and the From header. Lines of the file: `user:scrypt$N$r$p$salt$hash` (hex),
made with `gateway smtp-password USER`.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path
from typing import Any

import structlog
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

log = structlog.get_logger(__name__)

N, R, P = 2**14, 8, 1
MAX_AUTH_ATTEMPTS = 3


class BadPasswordFile(ValueError):
    """A line of the AUTH file that cannot be used; the message names the line."""


def hash_password(password: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=N, r=R, p=P)
    return f"scrypt${N}${R}${P}${salt.hex()}${digest.hex()}"


def verify(password: bytes, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        found = hashlib.scrypt(
            password, salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p), dklen=len(digest) // 2
        )
    except ValueError:
        return False
    return hmac.compare_digest(found.hex(), digest)


def load_users(path: str | Path) -> dict[str, str]:
    users: dict[str, str] = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, stored = line.partition(":")
        if not sep or not user or not stored.startswith("scrypt$") or stored.count("$") != 5:
            raise BadPasswordFile(f"{path}:{number}: expected user:scrypt$N$r$p$salt$hash")
        users[user] = stored
    return users


class Authenticator:
    """aiosmtpd's `authenticator` callback for PLAIN and LOGIN."""

    def __init__(self, users: dict[str, str]) -> None:
        self.users = users

    def __call__(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user = data.login.decode("utf-8", "replace")
        stored = self.users.get(user)
        ok = stored is not None and verify(data.password, stored)
        log.info("smtp_auth", user=user, ok=ok, mechanism=mechanism)
        return AuthResult(success=ok, handled=False, auth_data=data)
