"""The IMAP door: poll an existing mailbox (IDLE where offered) and take each message once.

Exactly once, whatever dies when: a message's (account, folder, UIDVALIDITY, UID) is recorded
in the same transaction that stores it, so a UID already recorded is never fetched again; the
post-action (move to the processed folder, or set a keyword) happens only after that commit,
and one recorded but not yet acted on (crash in between) is acted on at the next sync. When
UIDVALIDITY changes, the same bytes for the same dossier dedup in `accept` (Message-ID + hash),
so nothing taken before is taken twice. Nothing is marked on the server for a message that was
not stored (paperless-ngx #3332), and `\\Seen` is never the marker: people read that mailbox.

A connection that breaks, hangs or is refused is retried with exponential backoff; a sync
takes at most `max_messages_per_run` messages and `max_bytes_per_run` bytes, the rest next time.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aioimaplib
import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway import mime
from gateway.config import ImapAccountSettings, IntakeSettings
from gateway.crashpoint import crashpoint
from gateway.intake import routing
from gateway.intake.accept import Envelope, Route, accept_message
from gateway.intake.senders import screen
from gateway.store.db import Store
from gateway.store.models import ImapSeen, utcnow

log = structlog.get_logger(__name__)

_UIDVALIDITY = re.compile(rb"\[UIDVALIDITY (\d+)\]")
_FETCH_SIZE = re.compile(rb"UID (\d+) RFC822\.SIZE (\d+)|RFC822\.SIZE (\d+) UID (\d+)")
BATCH = 200


class ImapError(Exception):
    """The server said NO/BAD or answered something we cannot use."""


def quoted(mailbox: str) -> str:
    """A mailbox name as an IMAP quoted string (names are ASCII: the config checks that)."""
    return '"' + mailbox.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _ok(response: aioimaplib.Response, what: str) -> aioimaplib.Response:
    if response.result != "OK":
        text = b" ".join(bytes(line) for line in response.lines)[:200]
        raise ImapError(f"{what}: {response.result} {text.decode(errors='replace')}")
    return response


@dataclass
class Mailbox:
    """One selected folder on one connection."""

    client: aioimaplib.IMAP4
    settings: ImapAccountSettings
    uidvalidity: int = 0

    async def select(self) -> None:
        response = _ok(await self.client.select(quoted(self.settings.folder)), "SELECT")
        for line in response.lines:
            found = _UIDVALIDITY.search(bytes(line))
            if found:
                self.uidvalidity = int(found.group(1))
                return
        raise ImapError("SELECT: no UIDVALIDITY")

    async def uids(self) -> list[int]:
        response = _ok(await self.client.uid_search("ALL", charset=None), "UID SEARCH")
        first = bytes(response.lines[0]) if response.lines else b""
        return sorted(int(t) for t in first.split() if t.isdigit())

    async def sizes(self, uids: list[int]) -> dict[int, int]:
        found: dict[int, int] = {}
        for start in range(0, len(uids), BATCH):
            batch = ",".join(str(u) for u in uids[start : start + BATCH])
            response = _ok(await self.client.uid("fetch", batch, "(RFC822.SIZE)"), "FETCH SIZE")
            for line in response.lines:
                match = _FETCH_SIZE.search(bytes(line))
                if match:
                    uid, size = match.group(1) or match.group(4), match.group(2) or match.group(3)
                    found[int(uid)] = int(size)
        return found

    async def body(self, uid: int) -> bytes:
        response = _ok(await self.client.uid("fetch", str(uid), "(BODY.PEEK[])"), "FETCH BODY")
        literals = [bytes(line) for line in response.lines if isinstance(line, bytearray)]
        if len(literals) != 1:
            raise ImapError(f"FETCH BODY of UID {uid}: no message in the answer")
        return literals[0]

    async def prepare(self) -> None:
        if self.settings.post_action == "move":
            response = await self.client.create(quoted(self.settings.processed_folder))
            text = b" ".join(bytes(line) for line in response.lines)
            if response.result != "OK" and b"ALREADYEXISTS" not in text:
                _ok(response, f"CREATE {self.settings.processed_folder}")

    async def post_action(self, uid: int) -> None:
        if self.settings.post_action == "flag":
            flag = f"({self.settings.flag})"
            _ok(await self.client.uid("store", str(uid), "+FLAGS", flag), "STORE")
            return
        target = quoted(self.settings.processed_folder)
        if self.client.has_capability("MOVE"):
            _ok(await self.client.uid("move", str(uid), target), "MOVE")
            return
        _ok(await self.client.uid("copy", str(uid), target), "COPY")
        _ok(await self.client.uid("store", str(uid), "+FLAGS", "(\\Deleted)"), "STORE")
        if self.client.has_capability("UIDPLUS"):
            _ok(await self.client.uid("expunge", str(uid)), "UID EXPUNGE")


class ImapPoller:
    def __init__(
        self,
        settings: ImapAccountSettings,
        store: Store,
        intake: IntakeSettings,
        on_accept: asyncio.Event,
    ) -> None:
        self.settings = settings
        self.store = store
        self.intake = intake
        self.on_accept = on_accept
        self.log = log.bind(account=settings.name, folder=settings.folder)
        self.synced = False
        self.too_big: set[tuple[int, int]] = set()

    async def run(self) -> None:
        """Forever: connect, sync, wait for news; on any failure back off and reconnect."""
        delay = 1.0
        while True:
            self.synced = False
            try:
                await self.session()
                self.log.warning("imap_connection_lost")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.log.warning("imap_session_failed", error=f"{type(exc).__name__}: {exc}")
            delay = 1.0 if self.synced else min(delay * 2, self.settings.reconnect_max)
            await asyncio.sleep(delay)

    async def session(self) -> None:
        lost = asyncio.Event()
        client = self._client(lambda _exc: lost.set())
        try:
            await client.wait_hello_from_server()
            password = Path(self.settings.password_file).read_text().strip()
            _ok(await client.login(self.settings.user, password), "LOGIN")
            mailbox = Mailbox(client, self.settings)
            await mailbox.prepare()
            while not lost.is_set():
                await mailbox.select()
                await self.sync(mailbox)
                self.synced = True
                await self._wait(client, lost)
        finally:
            with contextlib.suppress(Exception):
                if client.has_pending_idle():
                    client.idle_done()
                await asyncio.wait_for(client.logout(), 2)

    def _client(self, on_lost: Callable[[Exception | None], None]) -> aioimaplib.IMAP4:
        s = self.settings
        context = ssl.create_default_context(cafile=s.ca_file or None) if s.tls == "ssl" else None
        return aioimaplib.IMAP4(
            s.host, s.port, timeout=s.timeout, conn_lost_cb=on_lost, ssl_context=context
        )

    async def _wait(self, client: aioimaplib.IMAP4, lost: asyncio.Event) -> None:
        """Until the server reports a change (IDLE) or `poll_interval` passes."""
        interval = self.settings.poll_interval
        if not (self.settings.idle and client.has_capability("IDLE")):
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await lost.wait()
            return
        idle = await client.idle_start(timeout=interval)
        push = asyncio.ensure_future(client.wait_server_push(timeout=interval + 5))
        gone = asyncio.ensure_future(lost.wait())
        try:
            await asyncio.wait({push, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            push.cancel()
            gone.cancel()
        if lost.is_set():
            return
        client.idle_done()
        await asyncio.wait_for(idle, self.settings.timeout)

    async def sync(self, mailbox: Mailbox) -> int:
        """Finish interrupted post-actions, then take new messages; returns how many."""
        seen, unfinished = await asyncio.to_thread(self._recorded, mailbox.uidvalidity)
        for uid in unfinished:
            await self._finish(mailbox, uid)
        present = await mailbox.uids()
        new = [u for u in present if u not in seen]
        if not new:
            return 0
        sizes = await mailbox.sizes(new)
        budget, taken = self.settings.max_bytes_per_run, 0
        for uid in new:
            size = sizes.get(uid, 0)
            if size > self.settings.max_message_size:
                if (mailbox.uidvalidity, uid) not in self.too_big:
                    self.too_big.add((mailbox.uidvalidity, uid))
                    self.log.error("imap_message_too_big", uid=uid, size=size)
                continue
            # At least one message per run, so a budget smaller than a message cannot stall.
            if taken >= self.settings.max_messages_per_run or (taken and size > budget):
                break
            await self._take(mailbox, uid)
            budget -= size
            taken += 1
        return taken

    async def _take(self, mailbox: Mailbox, uid: int) -> None:
        raw = await mailbox.body(uid)
        routes, unrouted = await asyncio.to_thread(self._routes, raw)
        screening = await asyncio.to_thread(screen.screen, self.store, raw, routes, self.intake)
        ref = f"{self.settings.name}/{self.settings.folder}/{mailbox.uidvalidity}/{uid}"
        envelope = Envelope("imap", screen.return_path(raw), [], routes, source_ref=ref)
        uidvalidity = mailbox.uidvalidity

        def record(session: Session, message_id: int) -> None:
            session.add(
                ImapSeen(
                    account=self.settings.name,
                    folder=self.settings.folder,
                    uidvalidity=uidvalidity,
                    uid=uid,
                    message_id=message_id,
                )
            )

        accepted = await asyncio.to_thread(
            accept_message,
            self.store,
            raw,
            envelope,
            quarantine=unrouted or screening.quarantine,
            auth=screening.auth,
            record=record,
        )
        self.log.info(
            "message_accepted", uid=uid, message=accepted.message_id, duplicate=accepted.duplicate
        )
        self.on_accept.set()
        crashpoint("imap_after_commit")
        await self._finish(mailbox, uid)

    async def _finish(self, mailbox: Mailbox, uid: int) -> None:
        await mailbox.post_action(uid)
        await asyncio.to_thread(self._done, mailbox.uidvalidity, uid)

    def _routes(self, raw: bytes) -> tuple[list[Route], str]:
        if not self.settings.catch_all:
            return [Route(self.settings.dossier)], ""
        addresses = [
            a.strip().strip("<>")
            for name in ("Delivered-To", "X-Original-To")
            for a in mime.header_values(raw, name)
        ]
        routes: dict[str, Route] = {}
        with self.store.session() as session:
            for address in addresses:
                route = routing.resolve(session, address)
                if route is not None:
                    routes.setdefault(route.dossier, route)
        if not routes:
            shown = ", ".join(addresses[:5]) or "none"
            return [], f"catch-all mailbox: no dossier has the address it was for ({shown})"
        return list(routes.values()), ""

    def _recorded(self, uidvalidity: int) -> tuple[set[int], list[int]]:
        with self.store.session() as session:
            rows = session.execute(
                select(ImapSeen.uid, ImapSeen.done_at).where(
                    ImapSeen.account == self.settings.name,
                    ImapSeen.folder == self.settings.folder,
                    ImapSeen.uidvalidity == uidvalidity,
                )
            ).all()
        return {r.uid for r in rows}, sorted(r.uid for r in rows if r.done_at is None)

    def _done(self, uidvalidity: int, uid: int) -> None:
        with self.store.session.begin() as session:
            row = session.scalars(
                select(ImapSeen).where(
                    ImapSeen.account == self.settings.name,
                    ImapSeen.folder == self.settings.folder,
                    ImapSeen.uidvalidity == uidvalidity,
                    ImapSeen.uid == uid,
                )
            ).one()
            row.done_at = utcnow()
