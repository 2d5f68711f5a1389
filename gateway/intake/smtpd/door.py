"""The SMTP door (aiosmtpd), created inside the daemon's own event loop.

Routing is on the envelope recipient only: an address no dossier owns is refused at RCPT, so
the gateway can never relay. A sender a dossier does not allow is refused at RCPT when the
envelope already shows it, else after DATA, with `550 5.7.1`. DATA streams into a spool
file (`smtp_data`) with bounded memory; the checks use its header block, kept as it streamed
(and read the whole file only for DKIM/SPF alignment), then one thread hop fsyncs it, makes it
the blob by rename and syncs the directory, and its row is committed together with other
sessions' (`group_commit`). `250` is answered only after that
commit; a full disk answers `452 4.3.1`, any other failure `451 4.3.0`, so the client keeps the
message and tries again, never aiosmtpd's `500`.

Limits are explicit (size, recipients, line length, sessions, idle time) and every refusal
carries an enhanced status code, including the replies aiosmtpd words itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import secrets
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, AnyStr

import structlog
from aiosmtpd.smtp import SMTP, Envelope, Session

from gateway import metrics, mime
from gateway.config import IntakeSettings, SmtpSettings
from gateway.intake import routing, spool
from gateway.intake.accept import Accepted, Arrival, Route, adopt_spooled, commit_arrivals
from gateway.intake.accept import Envelope as IntakeEnvelope
from gateway.intake.group_commit import GroupCommitter
from gateway.intake.senders import allowlist, authentication
from gateway.intake.smtp_data import StreamingSMTP
from gateway.intake.smtpd import checks, login
from gateway.intake.smtpd.checks import NO_ROOM, TEMPFAIL
from gateway.intake.smtpd.lean import ScannedNames
from gateway.intake.spool import DURABLE_IO, SpoolFile
from gateway.store.db import Store

log = structlog.get_logger(__name__)

TOO_BUSY = "421 4.7.0 Too many connections, try again later"
SHUTTING_DOWN = "421 4.3.2 Service shutting down, try again later"
# Connections the kernel queues before any process accepts them (asyncio's default is 100).
BACKLOG = 1024
HARVESTING = "421 4.7.0 Too many unknown recipients, closing connection"
# Replies after which the server hangs up, as RFC 5321 §3.8 expects of a 421.
CLOSING = frozenset({HARVESTING})
# aiosmtpd's own replies, given the enhanced status codes of RFC 3463.
ENHANCED = {
    "530 Must issue a STARTTLS command first": "530 5.7.0 Must issue a STARTTLS command first",
    "552 Error: Too much mail data": checks.TOO_BIG,
    "552 Error: message size exceeds fixed maximum message size": (
        "552 5.3.4 Message size exceeds fixed maximum message size"
    ),
    "500 Command line too long": "500 5.5.2 Command line too long",
}

# How long a measure of the spool's free space that showed enough room is used (`_room`).
FREE_SPACE_MAX_AGE = 1.0

Authenticate = Callable[[bytes, str, str, str], authentication.Evidence]


@dataclass
class Target:
    """One dossier the current transaction is for, with its allowed senders."""

    route: Route
    patterns: list[str]


class GatewaySession(Session):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.unknown_rcpts = 0


class GatewayEnvelope(Envelope):
    def __init__(self) -> None:
        super().__init__()
        self.targets: list[Target] = []


@dataclass
class SessionGate:
    """The sessions across all connections: past `limit` new ones get 421 4.7.0, and while
    draining for a shutdown, 421 4.3.2; sessions already in come to an end on their own."""

    limit: int
    sessions: set[GatewaySMTP] = field(default_factory=set)
    draining: bool = False
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    def enter(self, session: GatewaySMTP) -> str | None:
        """None when `session` may go on, else the reply that sends it away."""
        if self.draining:
            return SHUTTING_DOWN
        if len(self.sessions) >= self.limit:
            return TOO_BUSY
        self.sessions.add(session)
        self.idle.clear()
        return None

    def leave(self, session: GatewaySMTP) -> None:
        self.sessions.discard(session)
        if not self.sessions:
            self.idle.set()

    async def drain(self, timeout: float) -> int:
        """Refuse new sessions, wait up to `timeout` for the others; return how many were cut."""
        self.draining = True
        if self.sessions:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.idle.wait(), timeout)
        cut = list(self.sessions)
        for session in cut:
            await session.close_for_shutdown()
        return len(cut)


class GatewaySMTP(StreamingSMTP):
    def __init__(self, handler: Handler, gate: SessionGate, line_length: int, **kw: Any) -> None:
        # aiosmtpd sizes its reader by it; `line_length` counts the CRLF, the decoder does not.
        self.line_length_limit = line_length
        super().__init__(
            handler, spool_dir=handler.store.blobs.spool_dir, max_line_chars=line_length - 2, **kw
        )
        self.gate = gate

    def _create_envelope(self) -> GatewayEnvelope:
        return GatewayEnvelope()

    def _create_session(self) -> GatewaySession:
        return GatewaySession(self.loop)

    async def push(self, status: AnyStr) -> None:
        """Every reply leaves here: aiosmtpd's own get enhanced codes, refusals are counted
        by their code as postfix_exporter does, and a closing 421 hangs up."""
        text = ENHANCED.get(status, status) if isinstance(status, str) else status.decode()
        if text[:1] in ("4", "5"):
            metrics.refused("smtp", text[:9].strip())
        await super().push(text)
        if text in CLOSING and self.transport is not None:
            self.transport.close()

    async def _handle_client(self) -> None:
        structlog.contextvars.bind_contextvars(smtp_session=secrets.token_hex(6))
        refusal = self.gate.enter(self)
        if refusal is not None:
            log.warning("smtp_session_refused", peer=_peer(self.session), reply=refusal[:9])
            await self.push(refusal)
            if self.transport is not None:
                self.transport.close()
            return
        try:
            await super()._handle_client()
        finally:
            self.gate.leave(self)

    async def close_for_shutdown(self) -> None:
        """Past the drain deadline: say why, then hang up. A message whose DATA was not
        answered 250 stays with the client, which tries again later."""
        if self.transport is not None and not self.transport.is_closing():
            with contextlib.suppress(ConnectionError):
                await self.push(SHUTTING_DOWN)
            self.transport.close()


@dataclass
class Handler(ScannedNames):
    store: Store
    on_accept: Callable[[], None]
    smtp: SmtpSettings
    intake: IntakeSettings
    authenticate: Authenticate = field(default_factory=lambda: authentication.smtp_evidence)
    committer: GroupCommitter = field(init=False)
    routes: routing.RouteBook = field(init=False)
    # The spool's free space and when it was measured (monotonic); see `_room`.
    _free: tuple[int, float] = (0, -FREE_SPACE_MAX_AGE)

    def __post_init__(self) -> None:
        self.committer = GroupCommitter(functools.partial(commit_arrivals, self.store))
        self.routes = routing.RouteBook(self._read_routes)

    def _read_routes(self) -> routing.Snapshot:
        with self.store.session() as session:
            return routing.read_snapshot(session)

    async def handle_MAIL(
        self,
        server: SMTP,
        session: GatewaySession,
        envelope: GatewayEnvelope,
        address: str,
        options: list[str],
    ) -> str:
        """Refuse early, like Postfix's queue_minfree, when the spool could not take two
        messages of the largest size: the client keeps the mail and tries again later."""
        free = await self._room()
        if free < 2 * self.smtp.max_message_size:
            log.warning("smtp_low_disk", free=free, peer=_peer(session))
            return NO_ROOM
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 Ok"

    async def _room(self) -> int:
        """The spool's free bytes: a measure up to FREE_SPACE_MAX_AGE old when it showed
        enough room, a new one otherwise, so a disk just emptied is seen at once. Space taken
        in between is no risk: a write that finds the disk full answers 452 all the same."""
        free, measured = self._free
        enough = free >= 2 * self.smtp.max_message_size
        if enough and time.monotonic() - measured < FREE_SPACE_MAX_AGE:
            return free
        measured = time.monotonic()
        free = await asyncio.to_thread(self.store.blobs.free_bytes)
        self._free = (free, measured)
        return free

    async def handle_RCPT(
        self,
        server: SMTP,
        session: GatewaySession,
        envelope: GatewayEnvelope,
        address: str,
        options: Any,
    ) -> str:
        if len(envelope.rcpt_tos) >= self.smtp.max_recipients:
            return checks.TOO_MANY_RECIPIENTS
        asked = time.monotonic()
        sender = envelope.mail_from or ""
        try:
            target = await self._target(address, asked - routing.MAX_AGE)
            if target is None or not _allows(target, sender):
                # Refused only on what the database says now (see `routing`).
                target = await self._target(address, asked)
        except Exception:
            log.exception("smtp_rcpt_lookup_failed", rcpt=address)
            return TEMPFAIL
        if target is None:
            log.info("smtp_rcpt_refused", rcpt=address, peer=_peer(session))
            session.unknown_rcpts += 1
            if session.unknown_rcpts > self.smtp.max_unknown_recipients:
                log.warning("smtp_harvesting", peer=_peer(session), unknown=session.unknown_rcpts)
                return HARVESTING
            return f"550 5.1.1 <{address}>: no dossier has this address"
        slug = target.route.dossier
        verdict = allowlist.check_envelope(slug, target.patterns, sender)
        if not verdict.allowed:
            log.info("smtp_sender_refused", rcpt=address, dossier=slug, at="rcpt")
            return checks.refusal(verdict)
        envelope.rcpt_tos.append(address)
        if all(t.route.dossier != slug for t in envelope.targets):
            envelope.targets.append(target)
        return "250 2.1.5 Ok"

    async def _target(self, address: str, since: float) -> Target | None:
        snapshot = await self.routes.snapshot(since)
        route = snapshot.route(address)
        return None if route is None else Target(route, snapshot.allowed(route.dossier))

    async def handle_SPOOLED(
        self, server: SMTP, session: Session, envelope: Envelope, spool: SpoolFile
    ) -> str:
        """The end of DATA: the checks on the header block kept while it streamed, then one
        thread hop makes the message durable and adopts it as a blob (`_store`); `250` only
        once its row is committed. A refused message is never fsync'd; `StreamingSMTP` drops
        it, and whatever a failure leaves."""
        assert isinstance(envelope, GatewayEnvelope)  # `GatewaySMTP` creates no other kind
        try:
            reply, accepted = await self._take(session, envelope, spool)
        except OSError as exc:
            log.exception("smtp_accept_failed", peer=_peer(session), size=spool.size)
            reply, accepted = checks.storage_failure(exc), None
        except Exception:
            log.exception("smtp_accept_failed", peer=_peer(session), size=spool.size)
            reply, accepted = TEMPFAIL, None
        if accepted is None:
            return reply
        log.info(
            "message_accepted",
            message=accepted.message_id,
            duplicate=accepted.duplicate,
            size=spool.size,
            rcpts=len(envelope.rcpt_tos),
        )
        self.on_accept()
        return f"250 2.0.0 Ok: queued as {accepted.message_id}"

    async def _take(
        self, session: Session, envelope: GatewayEnvelope, spool: SpoolFile
    ) -> tuple[str, Accepted | None]:
        """The checks on the message, then its adoption and commit: (refusal, None) or
        ("", accepted)."""
        head = spool.head
        if checks.is_looping(head):
            log.warning("smtp_mail_loop", peer=_peer(session), size=spool.size)
            return checks.LOOP, None
        refusal, auth = await self._check_senders(session, envelope, head, spool)
        if refusal:
            return refusal, None
        intake = IntakeEnvelope(
            "smtp",
            envelope.mail_from or "",
            list(envelope.rcpt_tos),
            routes=[t.route for t in envelope.targets],
        )
        store = functools.partial(self._store, spool, intake, head, auth)
        arrival = await asyncio.get_running_loop().run_in_executor(DURABLE_IO, store)
        return "", await self.committer.commit(arrival)

    def _store(
        self, spool: SpoolFile, intake: IntakeEnvelope, head: bytes, auth: dict[str, Any]
    ) -> Arrival:
        """fsync, rename into the blob store, fsync its directory, build the row: blocking,
        in one durable-I/O thread, so a message costs one hop however many steps it takes."""
        spooled = spool.finish()
        try:
            return adopt_spooled(self.store, spooled, intake, raw_head=head, auth=auth)
        except BaseException:
            spooled.path.unlink(missing_ok=True)
            raise

    async def _check_senders(
        self, session: Session, envelope: GatewayEnvelope, head: bytes, spool: SpoolFile
    ) -> tuple[str, dict[str, Any]]:
        """("", evidence) when every dossier of the transaction allows this message, else
        the refusal of the first that does not. The From header comes from the header block
        `head`; the whole message is read only when DKIM/SPF alignment must be evaluated."""
        if not any(t.patterns for t in envelope.targets):
            return "", {}
        policy = allowlist.SenderPolicy(self.intake.sender_policy)
        evidence = authentication.Evidence()
        if policy is allowlist.SenderPolicy.ALIGNED and session.authenticated:
            # The login proves the sender better than SPF or DKIM would.
            policy = allowlist.SenderPolicy.HEADER
            evidence = authentication.Evidence(results={"smtp_auth": session.login_data.decode()})
        elif policy is allowlist.SenderPolicy.ALIGNED:
            evidence = await self._evidence(session, envelope, spool)
        verdict = functools.partial(
            _first_refused,
            sender=envelope.mail_from or "",
            from_values=mime.header_values(head, "From"),
            policy=policy,
            evidence=evidence,
        )
        refused = verdict(envelope.targets)
        if refused is not None:
            # Refused only on what the database says now (see `routing`).
            fresh = await self.routes.snapshot(time.monotonic())
            refused = verdict(
                [Target(t.route, fresh.allowed(t.route.dossier)) for t in envelope.targets]
            )
        if refused is None:
            return "", evidence.results
        log.info("smtp_sender_refused", dossier=refused[0], at="data")
        return checks.refusal(refused[1]), evidence.results

    async def _evidence(
        self, session: Session, envelope: GatewayEnvelope, spool: SpoolFile
    ) -> authentication.Evidence:
        """SPF and DKIM results; DKIM hashes the whole message, so this reads the file."""
        raw = await asyncio.get_running_loop().run_in_executor(DURABLE_IO, spool.read_back)
        peer_ip = session.peer[0] if isinstance(session.peer, tuple) else ""
        return await asyncio.to_thread(
            self.authenticate, raw, envelope.mail_from or "", peer_ip, session.host_name or ""
        )

    async def handle_exception(self, error: Exception) -> str:
        log.error("smtp_session_error", error=repr(error))
        return TEMPFAIL


def _first_refused(
    targets: list[Target],
    *,
    sender: str,
    from_values: list[str],
    policy: allowlist.SenderPolicy,
    evidence: authentication.Evidence,
) -> tuple[str, allowlist.Verdict] | None:
    """The first dossier of `targets` that does not allow the message, with its verdict."""
    for target in targets:
        if not target.patterns:
            continue
        verdict = allowlist.check_message(
            target.route.dossier,
            target.patterns,
            sender,
            from_values,
            policy,
            evidence.passed,
            evidence.temporary,
        )
        if not verdict.allowed:
            return target.route.dossier, verdict
    return None


def _allows(target: Target, sender: str) -> bool:
    return allowlist.check_envelope(target.route.dossier, target.patterns, sender).allowed


def _peer(session: Session | None) -> str:
    peer = session.peer if session is not None else None
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)


def tls_context(settings: SmtpSettings) -> ssl.SSLContext | None:
    if not settings.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.tls_cert, settings.tls_key or None)
    return context


@dataclass
class SmtpDoor:
    """The listeners and their sessions, so a shutdown can drain them before closing."""

    servers: list[asyncio.Server]
    gate: SessionGate

    def is_serving(self) -> bool:
        return all(s.is_serving() for s in self.servers) and not self.gate.draining

    async def serve_forever(self) -> None:
        await asyncio.gather(*(server.serve_forever() for server in self.servers))

    async def close(self, drain_timeout: float) -> None:
        cut = await self.gate.drain(drain_timeout)
        if cut:
            log.warning("smtp_sessions_cut", sessions=cut, after_seconds=drain_timeout)
        for server in self.servers:
            server.close()
        await asyncio.gather(*(server.wait_closed() for server in self.servers))


async def start(
    settings: SmtpSettings,
    store: Store,
    on_accept: Callable[[], None],
    intake: IntakeSettings | None = None,
    sockets: Sequence[socket.socket] = (),
) -> SmtpDoor:
    """Listen on `settings.host`/`port`, or on `sockets` already bound by another process."""
    handler = Handler(store, on_accept, settings, intake or IntakeSettings())
    swept = await asyncio.to_thread(spool.sweep, store.blobs.spool_dir, 2 * settings.timeout)
    if swept:
        log.info("smtp_spool_swept", files=swept)
    gate = SessionGate(settings.max_sessions)
    context = tls_context(settings)
    auth: dict[str, Any] = {}
    if settings.auth_file:
        auth = {
            "authenticator": login.Authenticator(login.load_users(settings.auth_file)),
            "auth_require_tls": True,
            "command_call_limit": {"AUTH": login.MAX_AUTH_ATTEMPTS, "*": 10**9},
        }
    loop = asyncio.get_running_loop()

    def protocol() -> SMTP:
        return GatewaySMTP(
            handler,
            gate,
            settings.max_line_length,
            hostname=settings.hostname,
            data_size_limit=settings.max_message_size,
            timeout=settings.timeout,
            enable_SMTPUTF8=True,
            decode_data=False,
            ident="gateway ESMTP",
            tls_context=context,
            require_starttls=settings.require_tls,
            **auth,
        )

    if sockets:
        servers = [
            await loop.create_server(protocol, sock=sock, backlog=BACKLOG) for sock in sockets
        ]
    else:
        servers = [
            await loop.create_server(protocol, settings.host, settings.port, backlog=BACKLOG)
        ]
    return SmtpDoor(servers, gate)
