"""Queue semantics on a real SQLite database: claims are exclusive, statuses move only forward."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from gateway.config import DeliverySettings
from gateway.outbound import attempts, queue
from gateway.outbound.base import PermanentError, RejectedError, TransientError
from gateway.store.db import Store, open_store, upgrade
from gateway.store.models import (
    Delivery,
    DeliveryState,
    DocStatus,
    DocType,
    Document,
    Dossier,
    Event,
    Integration,
    utcnow,
)

SETTINGS = DeliverySettings(retry_initial=60, retry_max=600, lifetime=3600)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = open_store(f"sqlite:///{tmp_path}/q.db", tmp_path / "blobs")
    upgrade(store.engine)
    return store


def _document(store: Store, doc_type: DocType | None = DocType.PURCHASE_INVOICE) -> int:
    with store.session.begin() as session:
        integration = Integration(name="drop", kind="directory", options={"path": "x"})
        dossier = Dossier(slug="acme", integration=integration)
        doc = Document(
            dossier=dossier,
            filename="i.xml",
            media_type="application/xml",
            blob_sha256="0" * 64,
            size=1,
            doc_type=doc_type,
        )
        session.add(doc)
        session.flush()
        return doc.id


def _enqueue_and_claim(store: Store) -> attempts.Claim:
    doc_id = _document(store)
    with store.session.begin() as session:
        queue.enqueue(session, session.get_one(Document, doc_id), SETTINGS)
    with store.session.begin() as session:
        (claim,) = attempts.claim(session, lease=60, limit=5)
    return claim


def _state(store: Store, claim: attempts.Claim) -> tuple[DeliveryState, DocStatus, str]:
    with store.session() as session:
        delivery = session.get_one(Delivery, claim.delivery_id)
        return delivery.state, delivery.document.status, delivery.document.status_reason


def test_a_claimed_delivery_cannot_be_claimed_again_until_its_lease_expires(store: Store) -> None:
    claim = _enqueue_and_claim(store)
    with store.session.begin() as session:
        assert attempts.claim(session, lease=60, limit=5) == []
    with store.session.begin() as session:
        session.execute(update(Delivery).values(lease_until=utcnow() - timedelta(seconds=1)))
    with store.session.begin() as session:
        (again,) = attempts.claim(session, lease=60, limit=5)
    assert again.delivery_id == claim.delivery_id
    assert again.attempt_id != claim.attempt_id


def test_sent_is_final(store: Store) -> None:
    claim = _enqueue_and_claim(store)
    with store.session.begin() as session:
        attempts.complete(session, claim, "/drop/1-i.xml")
    assert _state(store, claim)[:2] == (DeliveryState.SENT, DocStatus.SENT)
    with store.session.begin() as session:
        doc = session.get_one(Delivery, claim.delivery_id).document
        with pytest.raises(queue.NotSendable, match="already sent"):
            queue.enqueue(session, doc, SETTINGS)
        with pytest.raises(queue.NotSendable):
            queue.set_status(doc, DocStatus.FAILED)


def test_transient_failure_defers_and_shows_failed_with_reason(store: Store) -> None:
    claim = _enqueue_and_claim(store)
    with store.session.begin() as session:
        attempts.fail(session, claim, TransientError("connect-failed", "refused"), SETTINGS)
    state, status, reason = _state(store, claim)
    assert (state, status) == (DeliveryState.DEFERRED, DocStatus.FAILED)
    assert reason.startswith("connect-failed: refused (retrying at ")
    with store.session.begin() as session:
        assert attempts.claim(session, lease=60, limit=5) == []


def test_transient_failure_past_the_lifetime_fails_for_good(store: Store) -> None:
    claim = _enqueue_and_claim(store)
    with store.session.begin() as session:
        session.execute(update(Delivery).values(expires_at=utcnow()))
        attempts.fail(session, claim, TransientError("connect-failed", "refused"), SETTINGS)
    assert _state(store, claim)[:2] == (DeliveryState.FAILED, DocStatus.FAILED)


def test_permanent_failure_fails_at_once_and_can_be_requeued_by_hand(store: Store) -> None:
    claim = _enqueue_and_claim(store)
    with store.session.begin() as session:
        attempts.fail(session, claim, PermanentError("host-key-mismatch", "changed"), SETTINGS)
    assert _state(store, claim) == (
        DeliveryState.FAILED,
        DocStatus.FAILED,
        "host-key-mismatch: changed",
    )
    with store.session.begin() as session:
        doc = session.get_one(Delivery, claim.delivery_id).document
        again = queue.enqueue(session, doc, SETTINGS)
        assert again.id == claim.delivery_id
        assert again.state is DeliveryState.QUEUED


def test_rejected_is_final(store: Store) -> None:
    claim = _enqueue_and_claim(store)
    with store.session.begin() as session:
        attempts.fail(session, claim, RejectedError("invalid-vat", "unknown VAT code"), SETTINGS)
    assert _state(store, claim)[:2] == (DeliveryState.REJECTED, DocStatus.REJECTED)
    with store.session.begin() as session:
        doc = session.get_one(Delivery, claim.delivery_id).document
        with pytest.raises(queue.NotSendable, match="rejected"):
            queue.enqueue(session, doc, SETTINGS)


def test_unrecognised_documents_cannot_be_sent(store: Store) -> None:
    doc_id = _document(store, doc_type=None)
    with store.session.begin() as session, pytest.raises(queue.NotSendable, match="has no type"):
        queue.enqueue(session, session.get_one(Document, doc_id), SETTINGS)


def test_release_returns_an_interrupted_attempt_at_once(store: Store) -> None:
    claim = _enqueue_and_claim(store)
    with store.session.begin() as session:
        attempts.release(session, claim)
    with store.session.begin() as session:
        (again,) = attempts.claim(session, lease=60, limit=5)
    assert again.delivery_id == claim.delivery_id


def test_backoff_doubles_within_jitter_and_is_capped() -> None:
    assert 48 <= attempts.backoff(1, SETTINGS) <= 72
    assert 96 <= attempts.backoff(2, SETTINGS) <= 144
    assert attempts.backoff(20, SETTINGS) <= 600 * 1.2


def _expire_lease(store: Store) -> None:
    with store.session.begin() as session:
        session.execute(update(Delivery).values(lease_until=utcnow() - timedelta(seconds=1)))


def _events(store: Store, kind: str) -> list[dict[str, str]]:
    with store.session() as session:
        rows = session.scalars(select(Event).where(Event.kind == kind).order_by(Event.id))
        return [e.detail for e in rows]


def test_a_worker_that_lost_its_lease_cannot_overwrite_the_new_owners_result(
    store: Store,
) -> None:
    stale = _enqueue_and_claim(store)
    _expire_lease(store)
    with store.session.begin() as session:
        (fresh,) = attempts.claim(session, lease=60, limit=5)
    with store.session.begin() as session:
        assert attempts.complete(session, fresh, "/drop/1-i.xml")
    with store.session.begin() as session:
        error = TransientError("connect-failed", "refused")
        assert not attempts.fail(session, stale, error, SETTINGS)
    with store.session.begin() as session:
        assert not attempts.complete(session, stale, "/drop/other")
    with store.session() as session:
        delivery = session.get_one(Delivery, fresh.delivery_id)
        assert (delivery.state, delivery.remote_ref, delivery.attempts) == (
            DeliveryState.SENT,
            "/drop/1-i.xml",
            1,
        )
        assert delivery.document.status is DocStatus.SENT
    superseded = _events(store, "attempt_superseded")
    assert [(e["attempt"], e["outcome"]) for e in superseded] == [
        (stale.attempt_id, "error"),
        (stale.attempt_id, "sent"),
    ]


def test_a_stale_worker_cannot_fail_a_delivery_the_new_owner_still_holds(store: Store) -> None:
    stale = _enqueue_and_claim(store)
    _expire_lease(store)
    with store.session.begin() as session:
        (fresh,) = attempts.claim(session, lease=60, limit=5)
    with store.session.begin() as session:
        assert not attempts.fail(session, stale, PermanentError("auth-failed", "no"), SETTINGS)
        assert not attempts.renew(session, stale, 60)
        assert attempts.renew(session, fresh, 60)
    assert _state(store, fresh)[:2] == (DeliveryState.SENDING, DocStatus.INBOX)


def test_sending_found_after_an_expired_lease_is_claimed_as_uncertain(store: Store) -> None:
    first = _enqueue_and_claim(store)
    assert not first.uncertain
    _expire_lease(store)
    with store.session.begin() as session:
        (again,) = attempts.claim(session, lease=60, limit=5)
    assert again.uncertain
    (event,) = _events(store, "delivery_uncertain")
    assert event["previous_attempt"] == first.attempt_id
    assert event["attempt"] == again.attempt_id
    assert event["integration"] == "drop"


def test_expire_hands_an_interrupted_handover_back_at_once_as_uncertain(store: Store) -> None:
    first = _enqueue_and_claim(store)
    with store.session.begin() as session:
        attempts.expire(session, first)
    with store.session.begin() as session:
        (again,) = attempts.claim(session, lease=60, limit=5)
    assert again.uncertain


def test_released_attempts_are_not_uncertain(store: Store) -> None:
    first = _enqueue_and_claim(store)
    with store.session.begin() as session:
        attempts.release(session, first)
    with store.session.begin() as session:
        (again,) = attempts.claim(session, lease=60, limit=5)
    assert not again.uncertain


def test_every_attempt_is_an_event_with_integration_outcome_code_and_reason(
    store: Store,
) -> None:
    claim = _enqueue_and_claim(store)
    with store.session.begin() as session:
        attempts.fail(session, claim, TransientError("connect-failed", "refused"), SETTINGS)
    with store.session.begin() as session:
        session.execute(update(Delivery).values(next_attempt_at=utcnow()))
    with store.session.begin() as session:
        (second,) = attempts.claim(session, lease=60, limit=5)
        attempts.complete(session, second, "/drop/1-i.xml")
    recorded = _events(store, "delivery_attempt")
    assert [
        (a["integration"], a["number"], a["outcome"], a.get("code"), a.get("reason"))
        for a in recorded
    ] == [
        ("drop", "1", "deferred", "connect-failed", "refused"),
        ("drop", "2", "sent", None, None),
    ]
    assert recorded[1]["remote_ref"] == "/drop/1-i.xml"


def test_claim_skips_integrations_that_are_busy(store: Store) -> None:
    doc_id = _document(store)
    with store.session.begin() as session:
        doc = session.get_one(Document, doc_id)
        queue.enqueue(session, doc, SETTINGS)
        busy = {doc.dossier.integration_id}
    with store.session.begin() as session:
        assert attempts.claim(session, lease=60, limit=5, busy=busy) == []
    with store.session.begin() as session:
        assert len(attempts.claim(session, lease=60, limit=5, busy={999})) == 1


def test_claim_for_one_integration_takes_none_of_another(store: Store) -> None:
    doc_id = _document(store)
    with store.session.begin() as session:
        doc = session.get_one(Document, doc_id)
        queue.enqueue(session, doc, SETTINGS)
        mine = doc.dossier.integration_id
    assert mine is not None
    with store.session.begin() as session:
        assert attempts.claim(session, lease=60, limit=5, integration_id=mine + 1) == []
    with store.session.begin() as session:
        (claim,) = attempts.claim(session, lease=60, limit=5, integration_id=mine)
    assert claim.integration_id == mine


def test_send_takes_inbox_documents_and_points_failed_ones_to_retry(store: Store) -> None:
    claim = _enqueue_and_claim(store)
    with store.session.begin() as session:
        attempts.fail(session, claim, TransientError("connect-failed", "refused"), SETTINGS)
    with store.session.begin() as session:
        doc = session.get_one(Delivery, claim.delivery_id).document
        with pytest.raises(queue.NotSendable, match="gateway doc retry"):
            queue.send(session, doc, SETTINGS)


def test_retry_pulls_a_deferred_delivery_forward(store: Store) -> None:
    claim = _enqueue_and_claim(store)
    with store.session.begin() as session:
        attempts.fail(session, claim, TransientError("connect-failed", "refused"), SETTINGS)
    with store.session.begin() as session:
        assert attempts.claim(session, lease=60, limit=5) == []
        doc = session.get_one(Delivery, claim.delivery_id).document
        queue.retry(session, doc, SETTINGS)
    with store.session.begin() as session:
        assert len(attempts.claim(session, lease=60, limit=5)) == 1


def test_retry_refuses_documents_that_did_not_fail(store: Store) -> None:
    doc_id = _document(store)
    with store.session.begin() as session:
        doc = session.get_one(Document, doc_id)
        with pytest.raises(queue.NotSendable, match="only failed documents"):
            queue.retry(session, doc, SETTINGS)


def test_archive_only_after_sent(store: Store) -> None:
    claim = _enqueue_and_claim(store)
    with store.session.begin() as session:
        doc = session.get_one(Delivery, claim.delivery_id).document
        with pytest.raises(queue.NotSendable, match="only sent documents"):
            queue.archive(session, doc)
        attempts.complete(session, claim, "/drop/1-i.xml")
    with store.session.begin() as session:
        doc = session.get_one(Delivery, claim.delivery_id).document
        assert queue.archive(session, doc)
        assert not queue.archive(session, doc)
    assert len(_events(store, "document_archived")) == 1
