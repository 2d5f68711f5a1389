"""The door's decisions: MAIL, RCPT and the end of DATA (aiosmtpd handler hooks).

Routing is on the envelope recipient only: an address no dossier owns is refused at RCPT, so
the gateway can never relay. A sender a dossier does not allow is refused at RCPT when the
envelope already shows it, else after DATA, with `550 5.7.1`. At the end of DATA the checks
use the header block kept as it streamed (and read the whole message only for DKIM/SPF
alignment). A message held whole in memory (under the spool's `FLUSH_SIZE`, most mail) goes
with its bytes straight to the group commit (`group_commit`), which commits the rows and bytes
of many sessions together; a larger one, already in a spool file, first takes one durable-I/O
thread hop that fsyncs the file and makes it the blob by rename, and the group commit syncs the
blob directories before its commit. `250` is answered only after that commit; a full
disk answers `452 4.3.1`, any other failure `451 4.3.0`, so the client keeps the message and
tries again, never aiosmtpd's `500`.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from aiosmtpd.smtp import SMTP, Envelope, Session

from gateway import mime
from gateway.config import IntakeSettings, SmtpSettings
from gateway.intake import routing
from gateway.intake.accept import Accepted, KeptConnection, adopt_spooled, commit_arrivals, hold
from gateway.intake.accept import Envelope as IntakeEnvelope
from gateway.intake.senders import allowlist, authentication
from gateway.intake.smtpd import checks
from gateway.intake.smtpd.checks import NO_ROOM, TEMPFAIL
from gateway.intake.smtpd.group_commit import GroupCommitter
from gateway.intake.smtpd.lean import ScannedNames
from gateway.intake.smtpd.session import (
    HARVESTING,
    GatewayEnvelope,
    GatewaySession,
    Target,
    peer,
)
from gateway.intake.spool import DURABLE_IO, SpoolFile, report
from gateway.store.db import Store

log = structlog.get_logger(__name__)

# While messages come closer together than this, a group commit batch waits as long for more
# (`group_commit`): at 100 sessions/s a listener process commits two messages at a time.
COMMIT_LINGER = 0.010
# How long a measure of the spool's free space that showed enough room is used (`_room`).
FREE_SPACE_MAX_AGE = 1.0

Authenticate = Callable[[bytes, str, str, str], authentication.Evidence]


@dataclass
class Handler(ScannedNames):
    store: Store
    on_accept: Callable[[], None]
    smtp: SmtpSettings
    intake: IntakeSettings
    authenticate: Authenticate = field(default_factory=lambda: authentication.smtp_evidence)
    committer: GroupCommitter = field(init=False)
    routes: routing.RouteBook = field(init=False)
    # Where sessions spool DATA: worked out once, not for every connection.
    spool_dir: Path = field(init=False)
    # The spool's free space and when it was measured (monotonic); see `_room`.
    _free: tuple[int, float] = (0, -FREE_SPACE_MAX_AGE)

    def __post_init__(self) -> None:
        kept = KeptConnection(self.store.engine)
        self.committer = GroupCommitter(
            functools.partial(commit_arrivals, self.store, begin=kept.begin),
            on_stop=kept.close,
            linger=COMMIT_LINGER,
        )
        self.routes = routing.RouteBook(self._read_routes)
        self.spool_dir = self.store.blobs.spool_dir

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
            log.warning("smtp_low_disk", free=free, peer=peer(session))
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
            log.info("smtp_rcpt_refused", rcpt=address, peer=peer(session))
            session.unknown_rcpts += 1
            if session.unknown_rcpts > self.smtp.max_unknown_recipients:
                log.warning("smtp_harvesting", peer=peer(session), unknown=session.unknown_rcpts)
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
        """The end of DATA: the checks on the header block kept while it streamed, then the
        message is made durable with its row (`_take`); `250` only once that row is committed.
        A refused message is never fsync'd; `StreamingSMTP` drops it, and whatever a failure
        leaves."""
        assert isinstance(envelope, GatewayEnvelope)  # `GatewaySMTP` creates no other kind
        try:
            reply, accepted = await self._take(session, envelope, spool)
        except Exception as exc:
            log.exception("smtp_accept_failed", peer=peer(session), size=spool.size)
            reply, accepted = checks.storage_failure(exc), None
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
        """The checks on the message, then its commit, with its bytes when they are held in
        memory, else after `_store` made its file the blob: (refusal, None) or ("", accepted)."""
        head = spool.head
        if checks.is_looping(head):
            log.warning("smtp_mail_loop", peer=peer(session), size=spool.size)
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
        accepted: asyncio.Future[Accepted] = asyncio.get_running_loop().create_future()
        held = spool.held()
        if held is None:
            DURABLE_IO.submit(functools.partial(self._store, spool, intake, head, auth, accepted))
        else:
            self.committer.put(hold(head, held, intake, auth=auth), accepted)
        return "", await accepted

    def _store(
        self,
        spool: SpoolFile,
        intake: IntakeEnvelope,
        head: bytes,
        auth: dict[str, Any],
        accepted: asyncio.Future[Accepted],
    ) -> None:
        """fsync, rename into the blob store, build the row, and hand it straight to the
        group commit, which settles `accepted`: blocking, in one durable-I/O thread, and the
        event loop is woken only once the row is committed (or this failed)."""
        try:
            spooled = spool.finish()
            try:
                arrival = adopt_spooled(self.store, spooled, intake, raw_head=head, auth=auth)
            except BaseException:
                spooled.path.unlink(missing_ok=True)
                raise
        except Exception as exc:
            report(accepted.get_loop(), _fail, accepted, exc)
            return
        if not accepted.cancelled():  # a session gone meanwhile was never answered 250
            self.committer.put(arrival, accepted)

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
        """SPF and DKIM results; DKIM hashes the whole message, so this reads it back."""
        raw = await DURABLE_IO.run(spool.read_back)
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


def _fail(future: asyncio.Future[Accepted], error: Exception) -> None:
    if not future.done():
        future.set_exception(error)


def _allows(target: Target, sender: str) -> bool:
    return allowlist.check_envelope(target.route.dossier, target.patterns, sender).allowed
