"""Delivery to an SFTP drop (asyncssh against the package's OpenSSH server).

The host key is pinned: an unknown or changed key is a failure that says so, never a prompt.
One connection per integration is kept and reused; it is dropped on any error.
A file is written under a temporary name and renamed; SFTP's rename refuses to overwrite, and
a final name that already holds the same bytes counts as delivered.
"""

from __future__ import annotations

import asyncio
import hashlib

import asyncssh
import structlog

from gateway.outbound.base import Outgoing, PermanentError, TransientError
from gateway.outbound.kinds import SftpOptions
from gateway.outbound.naming import check_upload_path, render

log = structlog.get_logger(__name__)


def host_key_problem(text: str) -> str | None:
    """Why `text` is not a usable pinned public key (OpenSSH one-line form), or None."""
    try:
        asyncssh.import_public_key(text.strip())
    except (asyncssh.KeyImportError, ValueError) as exc:
        return f"expected an OpenSSH public key line like 'ssh-ed25519 AAAA...': {exc}"
    return None


class SftpAdapter:
    def __init__(self, name: str, options: SftpOptions) -> None:
        self.name = name
        self.options = options
        self._conn: asyncssh.SSHClientConnection | None = None
        self._sftp: asyncssh.SFTPClient | None = None
        self._lock = asyncio.Lock()

    async def deliver(self, item: Outgoing) -> str:
        upload = str(item.overrides.get("upload_path") or self.options.upload_path)
        problem = check_upload_path(upload)
        if problem:
            raise PermanentError("bad-upload-path", f"upload path {upload!r} {problem}")
        folder = upload.rstrip("/") or "."
        name = render(self.options.filename_template, item)
        sftp = await self._client()
        try:
            return await _upload(sftp, folder, name, item)
        except asyncssh.SFTPError as exc:
            await self.close()
            raise _sftp_error(exc, folder) from exc
        except (OSError, asyncssh.Error) as exc:
            await self.close()
            raise TransientError("connection-lost", f"{self._where()}: {exc}") from exc

    async def close(self) -> None:
        if self._sftp is not None:
            self._sftp.exit()
        if self._conn is not None:
            self._conn.close()
            await self._conn.wait_closed()
        self._sftp = self._conn = None

    def _where(self) -> str:
        return f"{self.options.host}:{self.options.port}"

    async def _client(self) -> asyncssh.SFTPClient:
        async with self._lock:
            if self._sftp is None:
                self._conn = await self._connect()
                self._sftp = await self._conn.start_sftp_client()
            return self._sftp

    async def _connect(self) -> asyncssh.SSHClientConnection:
        opts = self.options
        pinned = asyncssh.import_public_key(opts.host_key.strip())
        password = None
        if opts.password_file is not None:
            password = opts.password_file.read_text().rstrip("\r\n")
        try:
            return await asyncssh.connect(
                opts.host,
                opts.port,
                username=opts.username,
                password=password,
                client_keys=[str(opts.key_file)] if opts.key_file else None,
                known_hosts=([pinned], [], []),
                connect_timeout=opts.connect_timeout,
                agent_path=None,
            )
        except asyncssh.HostKeyNotVerifiable as exc:
            raise PermanentError(
                "host-key-mismatch",
                f"{self._where()} presented a host key that is not the pinned one: {exc.reason}",
            ) from exc
        except asyncssh.PermissionDenied as exc:
            raise PermanentError(
                "auth-failed", f"{self._where()} refused login for {opts.username!r}"
            ) from exc
        except (OSError, asyncssh.Error, TimeoutError) as exc:
            raise TransientError("connect-failed", f"{self._where()}: {exc}") from exc


async def _upload(sftp: asyncssh.SFTPClient, folder: str, name: str, item: Outgoing) -> str:
    final = f"{folder}/{name}"
    await sftp.makedirs(folder, exist_ok=True)
    if await _holds_same_bytes(sftp, final, item):
        return final
    tmp = f"{folder}/.{name}.{item.attempt_id}.part"
    async with sftp.open(tmp, "wb") as fh:
        await fh.write(item.data)
        try:
            await fh.fsync()
        except asyncssh.SFTPOpUnsupported:
            log.debug("sftp_fsync_unsupported", path=tmp)
    try:
        await sftp.rename(tmp, final)
    except asyncssh.SFTPFailure as exc:
        await sftp.remove(tmp)
        if await _holds_same_bytes(sftp, final, item):
            return final
        conflict = f"{final} already exists with other content"
        raise PermanentError("name-conflict", conflict) from exc
    return final


async def _holds_same_bytes(sftp: asyncssh.SFTPClient, path: str, item: Outgoing) -> bool:
    try:
        attrs = await sftp.stat(path)
    except asyncssh.SFTPNoSuchFile:
        return False
    if attrs.size != len(item.data):
        return False
    async with sftp.open(path, "rb") as fh:
        existing: bytes = await fh.read()
    return hashlib.sha256(existing).hexdigest() == item.sha256


def _sftp_error(exc: asyncssh.SFTPError, folder: str) -> TransientError | PermanentError:
    if isinstance(exc, asyncssh.SFTPPermissionDenied):
        return PermanentError("permission-denied", f"{folder}: {exc.reason}")
    return TransientError("sftp-error", f"{folder}: {exc.reason}")
