"""The drop-folder door: `ROOT/<dossier-slug>/<file>` becomes a message for that dossier.

A file is taken only once it is stable (size and mtime unchanged for `stable_seconds`), so a
slow upload is never read half-written. It is claimed by an atomic rename into the spool
(`ROOT/.gateway-spool/<id>/<path>`, same filesystem, so two instances never take the same
file), stored through `accept`, and the spool copy is removed only after that commit. A crash
anywhere leaves the file either where it was or in the spool, and the spool is taken again at
start-up; taking it twice dedups on its bytes. Files present at start-up are taken; a full
rescan runs every `rescan_interval` whatever the watcher says (network shares send no events).

Ignored, never touched: symbolic links, FIFOs and other non-regular files, hard-linked files,
dot-files and dot-folders, partial uploads (`*.part`, `~$*`). A file in a folder no dossier
owns, or directly in ROOT, is kept in quarantine with the reason.

A plain file is wrapped in a deterministic MIME message (the same file gives the same bytes);
an `.eml` file is taken as the mail it is, and its senders are checked like IMAP mail.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import mimetypes
import os
import stat
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

import structlog
import watchfiles
from sqlalchemy import select

from gateway import mime
from gateway.config import FolderSettings, IntakeSettings
from gateway.crashpoint import crashpoint
from gateway.filenames import safe_filename
from gateway.intake.accept import Envelope, Route, accept_message
from gateway.intake.senders import allowlist, screen
from gateway.store.blobs import fsync_dir
from gateway.store.db import Store
from gateway.store.models import Dossier

log = structlog.get_logger(__name__)

SPOOL = ".gateway-spool"
PARTIAL_SUFFIXES = (".part", ".partial", ".crdownload", ".tmp")


def ignored_name(name: str) -> bool:
    return name.startswith((".", "~$")) or name.lower().endswith(PARTIAL_SUFFIXES)


@dataclass
class Seen:
    size: int
    mtime_ns: int
    since: float


@dataclass
class FolderDoor:
    settings: FolderSettings
    store: Store
    intake: IntakeSettings
    on_accept: asyncio.Event
    pending: dict[Path, Seen] = field(default_factory=dict)
    warned: set[Path] = field(default_factory=set)

    @property
    def root(self) -> Path:
        return Path(self.settings.root)

    @property
    def spool(self) -> Path:
        return self.root / SPOOL

    async def run(self) -> None:
        self.spool.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        changed = asyncio.Event()
        watcher = asyncio.create_task(self._watch(changed))
        next_recovery = loop.time()
        try:
            while True:
                if loop.time() >= next_recovery:
                    await self._safely(self.recover)
                    next_recovery = loop.time() + self.settings.rescan_interval
                for path in await asyncio.to_thread(self.scan, loop.time()):
                    await self._safely(self.take, path)
                tick = max(0.05, self.settings.stable_seconds / 2)
                timeout = tick if self.pending else self.settings.rescan_interval
                changed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await changed.wait()
        finally:
            watcher.cancel()

    async def _safely(self, work: Callable[..., None], *args: Path) -> None:
        """One file's failure (database busy, disk full) is logged and retried later; it
        never stops the door. A claimed file stays in the spool until it is stored."""
        try:
            await asyncio.to_thread(work, *args)
        except Exception:
            log.exception("folder_take_failed", path=str(args[0]) if args else "(spool)")

    async def _watch(self, changed: asyncio.Event) -> None:
        """Wake the scanner on file events; without events the periodic rescan still runs."""
        try:
            async for _ in watchfiles.awatch(
                self.root,
                watch_filter=None,
                debounce=100,
                force_polling=self.settings.force_polling,
                poll_delay_ms=500,
            ):
                changed.set()
        except (OSError, RuntimeError) as exc:
            log.error("folder_watch_failed", root=str(self.root), error=str(exc))

    def scan(self, now: float) -> list[Path]:
        """Candidate files whose size and mtime held still for `stable_seconds`."""
        found: dict[Path, Seen] = {}
        ready: list[Path] = []
        for path in self._files():
            try:
                info = path.lstat()
            except FileNotFoundError:
                continue
            if not self._acceptable(path, info):
                continue
            before = self.pending.get(path)
            same = before is not None and (before.size, before.mtime_ns) == (
                info.st_size,
                info.st_mtime_ns,
            )
            seen = (
                before if before is not None and same else Seen(info.st_size, info.st_mtime_ns, now)
            )
            if now - seen.since >= self.settings.stable_seconds:
                ready.append(path)
            else:
                found[path] = seen
        self.pending = found
        return ready

    def _files(self) -> list[Path]:
        files: list[Path] = []
        for top, dirs, names in os.walk(self.root, followlinks=False):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            files.extend(Path(top) / n for n in names if not ignored_name(n))
        return sorted(files)

    def _acceptable(self, path: Path, info: os.stat_result) -> bool:
        why = ""
        if not stat.S_ISREG(info.st_mode):
            why = "not a regular file"
        elif info.st_nlink != 1:
            why = "hard-linked file"
        elif info.st_size > self.settings.max_file_size:
            why = f"larger than {self.settings.max_file_size} bytes"
        if why and path not in self.warned:
            self.warned.add(path)
            log.warning("folder_file_ignored", path=str(path), why=why)
        return not why

    def take(self, path: Path) -> None:
        """Claim `path` by renaming it into the spool, then store it."""
        rel = path.relative_to(self.root)
        claim = self.spool / uuid.uuid4().hex / rel
        claim.parent.mkdir(parents=True)
        try:
            os.rename(path, claim)
        except FileNotFoundError:
            return  # taken by someone else, or gone
        fsync_dir(path.parent)
        fsync_dir(claim.parent)
        self.ingest(claim, rel)

    def recover(self) -> None:
        """Spool files left by a crash: taken again (a repeat dedups on its bytes)."""
        for claim in sorted(p for p in self.spool.rglob("*") if p.is_file()):
            rel = claim.relative_to(self.spool)
            self.ingest(claim, Path(*rel.parts[1:]))

    def ingest(self, claim: Path, rel: Path) -> None:
        data = _read_regular(claim)
        is_mail = rel.suffix.lower() == ".eml"
        raw = data if is_mail else wrap(data, rel)
        routes, quarantine = self._routes(rel)
        mail_from, auth = "", {}
        if is_mail and routes:
            mail_from = screen.return_path(raw) or allowlist.header_from(
                mime.header_values(raw, "From")
            )
            screening = screen.screen(self.store, raw, routes, self.intake)
            quarantine, auth = screening.quarantine, screening.auth
        envelope = Envelope("folder", mail_from, [], routes, source_ref=str(rel))
        accepted = accept_message(self.store, raw, envelope, quarantine=quarantine, auth=auth)
        log.info(
            "message_accepted",
            source="folder",
            path=str(rel),
            message=accepted.message_id,
            duplicate=accepted.duplicate,
            quarantined=bool(quarantine),
        )
        self.on_accept.set()
        crashpoint("folder_after_commit")
        claim.unlink()
        _prune(claim.parent, self.spool)

    def _routes(self, rel: Path) -> tuple[list[Route], str]:
        if len(rel.parts) < 2:
            return [], "drop folder: file directly in the root, not in a dossier's folder"
        slug = rel.parts[0]
        with self.store.session() as session:
            found = session.scalars(select(Dossier.id).where(Dossier.slug == slug)).first()
        if found is None:
            return [], f"drop folder: no dossier {slug[:100]!r}"
        return [Route(slug)], ""


def _read_regular(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise OSError(f"{path}: not a regular file")
        return fh.read()


def wrap(data: bytes, rel: Path) -> bytes:
    """A file as a one-attachment message whose bytes depend only on the file and its path."""
    digest = hashlib.sha256(data).hexdigest()
    name = safe_filename(rel.name, fallback="document")
    media_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    maintype, subtype = media_type.split("/", 1)
    msg = EmailMessage()
    msg["Subject"] = "".join(c if c.isprintable() else "_" for c in str(rel))[:200]
    msg["Message-ID"] = f"<{digest}@drop-folder.invalid>"
    msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    msg.set_boundary(f"gateway-{digest[:40]}")
    return msg.as_bytes(policy=SMTP)


def _prune(folder: Path, stop: Path) -> None:
    """Remove the claim's now empty folders up to the spool."""
    while folder != stop and stop in folder.parents:
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent
