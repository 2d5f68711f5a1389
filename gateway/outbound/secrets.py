"""Secrets for integrations, read when a connection is made and never kept in the config.

A secret comes from a file (`*_file`, e.g. mode 0600 owned by the service user) or from the
systemd credentials directory (`*_credential`: a name under `$CREDENTIALS_DIRECTORY`, set by
`LoadCredential=`). Errors name the file or credential, never its contents.
"""

from __future__ import annotations

import os
from pathlib import Path

from gateway.outbound.base import PermanentError


def read_secret(path: Path | None, credential: str | None, what: str) -> str | None:
    """The secret from `path` or the systemd credential `credential`; None if neither is set."""
    if credential:
        base = os.environ.get("CREDENTIALS_DIRECTORY")
        if not base:
            raise PermanentError(
                "no-credentials-directory",
                f"{what} credential {credential!r}: $CREDENTIALS_DIRECTORY is not set "
                "(LoadCredential= in the systemd unit)",
            )
        if "/" in credential or credential in (".", ".."):
            raise PermanentError("bad-credential", f"{what} credential {credential!r}: not a name")
        path = Path(base) / credential
    if path is None:
        return None
    try:
        return path.read_text().rstrip("\r\n")
    except OSError as exc:
        raise PermanentError(
            "secret-unreadable", f"{what} file {path}: {exc.strerror or type(exc).__name__}"
        ) from None
