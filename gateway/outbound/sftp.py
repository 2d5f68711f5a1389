"""Delivery to an SFTP drop (asyncssh against the package's OpenSSH server).

The host key is pinned: an unknown or changed key is a failure that says so, never a prompt.
A small pool (the integration's `concurrency`) of connections is kept and reused; a connection
is dropped on any transport error, and sends its packets once per turn of the loop, without
asyncssh's empty SSH_MSG_IGNORE before each (`sftp_wire`). A file is written under a temporary
name and renamed; SFTP's rename refuses to overwrite, and a final name that already holds the
same bytes counts as delivered, which is also how an uncertain attempt is reconciled.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Awaitable
from dataclasses import dataclass, field

import asyncssh
import structlog
from asyncssh import SFTPClientFile

from gateway.outbound.base import (
    DeliveryError,
    Outgoing,
    PermanentError,
    TransientError,
    UncertainError,
)
from gateway.outbound.kinds import SftpOptions
from gateway.outbound.naming import render, target_folder
from gateway.outbound.secrets import read_secret
from gateway.outbound.sftp_wire import DirectTcp

log = structlog.get_logger(__name__)

# asyncssh's defaults with AES-GCM first: the processor does AES in hardware, while asyncssh's
# ChaCha20-Poly1305 builds a new cipher context for every packet. Still all AEAD, and a server
# without AES-GCM still gets ChaCha20 or CTR.
CIPHERS = [
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes256-ctr",
    "aes192-ctr",
    "aes128-ctr",
]


def host_key_problem(text: str) -> str | None:
    """Why `text` is not a usable pinned public key (OpenSSH one-line form), or None."""
    try:
        asyncssh.import_public_key(text.strip())
    except (asyncssh.KeyImportError, ValueError) as exc:
        return f"expected an OpenSSH public key line like 'ssh-ed25519 AAAA...': {exc}"
    return None


@dataclass
class _Link:
    conn: asyncssh.SSHClientConnection
    sftp: asyncssh.SFTPClient
    # Folders this connection made sure of: a pooled link checks each once, not per file.
    folders: set[str] = field(default_factory=set)

    async def close(self) -> None:
        self.sftp.exit()
        self.conn.close()
        with contextlib.suppress(OSError, asyncssh.Error):
            await self.conn.wait_closed()


class SftpAdapter:
    def __init__(self, name: str, options: SftpOptions) -> None:
        self.name = name
        self.options = options
        self._idle: list[_Link] = []
        self._slots = asyncio.Semaphore(options.concurrency)

    async def deliver(self, item: Outgoing) -> str:
        folder = target_folder(self.options, item)
        name = render(self.options.filename_template, item)
        async with self._slots:
            link = self._idle.pop() if self._idle else await self.open_link()
            try:
                async with asyncio.timeout(self.options.timeout):
                    ref = await _upload(link, folder, name, item)
            except TimeoutError as exc:
                link.conn.abort()
                raise UncertainError(
                    "sftp-stalled",
                    f"{self._where()}: no answer within {self.options.timeout:g}s during upload",
                ) from exc
            except asyncssh.SFTPError as exc:
                self._idle.append(link)
                raise _sftp_error(exc, folder) from exc
            except DeliveryError:
                self._idle.append(link)
                raise
            except (OSError, asyncssh.Error) as exc:
                await link.close()
                raise TransientError("connection-lost", f"{self._where()}: {exc}") from exc
            except BaseException:
                await link.close()
                raise
            self._idle.append(link)
            return ref

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for link in idle:
            await link.close()

    def _where(self) -> str:
        return f"{self.options.host}:{self.options.port}"

    async def open_link(self) -> _Link:
        """A new logged-in SFTP session (the pool calls this; so does `integration test`)."""
        opts = self.options
        pinned = asyncssh.import_public_key(opts.host_key.strip())
        password = read_secret(opts.password_file, opts.password_credential, "password")
        try:
            conn = await asyncssh.connect(
                opts.host,
                opts.port,
                username=opts.username,
                password=password,
                client_keys=[str(opts.key_file)] if opts.key_file else None,
                known_hosts=([pinned], [], []),
                connect_timeout=opts.connect_timeout,
                encryption_algs=CIPHERS,
                agent_path=None,
                tunnel=DirectTcp(),
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
        try:
            return _Link(conn, await conn.start_sftp_client())
        except (OSError, asyncssh.Error) as exc:
            conn.close()
            raise TransientError("connect-failed", f"{self._where()}: sftp: {exc}") from exc


async def _upload(link: _Link, folder: str, name: str, item: Outgoing) -> str:
    """Write a temporary name, fsync, rename. The rename never overwrites (SFTP's rename
    refuses an existing name), so only an attempt after one cut off mid-flight looks for the
    final name first; any other finds a same-named file through the refused rename."""
    sftp, final = link.sftp, f"{folder}/{name}"
    if folder not in link.folders:
        await sftp.makedirs(folder, exist_ok=True)
        link.folders.add(folder)
    if item.uncertain:
        if await _holds_same_bytes(sftp, final, item):
            return final
        await _remove_leftovers(sftp, folder, name)
    tmp = f"{folder}/.{name}.{item.attempt_id}.part"
    try:
        fh = await _create(sftp, folder, tmp, len(item.data))
        try:
            await _in_order(fh.write(item.data), _fsync(fh, tmp))
        except asyncssh.SFTPError:
            # Only a refused write: a broken or stalled connection is dropped with its handle.
            with contextlib.suppress(asyncssh.SFTPError):
                await fh.close()
            raise
        # Renamed right behind the close: the bytes are on the server's disk already.
        closed, renamed = await _answers(fh.close(), sftp.rename(tmp, final))
    except asyncssh.SFTPError as exc:
        with contextlib.suppress(asyncssh.SFTPError):
            await sftp.remove(tmp)
        raise _sftp_error(exc, folder, "writing") from exc
    if isinstance(renamed, asyncssh.SFTPFailure):
        await sftp.remove(tmp)
        if await _holds_same_bytes(sftp, final, item):
            return final
        conflict = f"{final} already exists with other content"
        raise PermanentError("name-conflict", conflict) from renamed
    if isinstance(renamed, BaseException):
        raise renamed
    if isinstance(closed, BaseException):
        # The bytes were synced and renamed: the package has the document all the same.
        log.warning("sftp_close_failed", path=tmp, error=str(closed))
    return final


async def _create(sftp: asyncssh.SFTPClient, folder: str, path: str, size: int) -> SFTPClientFile:
    """Open `path` for writing. A document that fits one SFTP write is written by one request
    rather than through asyncssh's parallel writer, which starts a task per block."""
    block_size = 0 if size <= sftp.limits.max_write_len else -1
    try:
        return await sftp.open(path, "wb", block_size=block_size)
    except asyncssh.SFTPNoSuchFile:
        # The folder went away since this connection made it: make it again, once.
        await sftp.makedirs(folder, exist_ok=True)
        return await sftp.open(path, "wb", block_size=block_size)


async def _fsync(fh: SFTPClientFile, path: str) -> None:
    try:
        await fh.fsync()
    except asyncssh.SFTPOpUnsupported:
        log.debug("sftp_fsync_unsupported", path=path)


async def _in_order(*requests: Awaitable[object]) -> None:
    """Send `requests` back to back and wait for every answer; raise the first error.

    The server handles a session's requests in the order sent, so a write and its fsync, or a
    close and the rename after it, need one round trip instead of two.
    """
    for answer in await _answers(*requests):
        if isinstance(answer, BaseException):
            raise answer


async def _answers(*requests: Awaitable[object]) -> list[object]:
    """Every request's answer or error, in order; the requests go out in this order."""
    return list(await asyncio.gather(*requests, return_exceptions=True))


async def _remove_leftovers(sftp: asyncssh.SFTPClient, folder: str, name: str) -> None:
    """Temporary files of attempts cut off mid-write (a crash) for this same document."""
    prefix = f".{name}."
    for entry in await sftp.readdir(folder):
        leftover = str(entry.filename)
        if leftover.startswith(prefix) and leftover.endswith(".part"):
            with contextlib.suppress(asyncssh.SFTPError):
                await sftp.remove(f"{folder}/{leftover}")
            log.info("sftp_leftover_removed", path=f"{folder}/{leftover}")


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


def _sftp_error(
    exc: asyncssh.SFTPError, folder: str, step: str = ""
) -> TransientError | PermanentError:
    during = f" while {step}" if step else ""
    if isinstance(exc, asyncssh.SFTPPermissionDenied):
        return PermanentError("permission-denied", f"{folder}: {exc.reason}{during}")
    if isinstance(exc, asyncssh.SFTPFailure) and step == "writing":
        # OpenSSH reports a full disk or an exceeded quota only as a generic failure.
        return TransientError(
            "write-failed", f"{folder}: {exc.reason}{during} (disk full or over quota?)"
        )
    return TransientError("sftp-error", f"{folder}: {exc.reason}{during}")
