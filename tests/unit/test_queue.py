"""Queue semantics on a real SQLite database: claims are exclusive, statuses move only forward."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from gateway.config import DeliverySettings
from gateway.outbound import queue
from gateway.outbound.base import PermanentError, RejectedError, TransientError
from gateway.store.db import Store, open_store, upgrade
from gateway.store.models import (
    Delivery,
    DeliveryState,
    DocStatus,
    DocType,
    Document,
    Dossier,
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


def _enqueue_and_claim(store: Store) -> queue.Claim:
    doc_id = _document(store)
    with store.session.begin() as session:
        queue.enqueue(session, session.get_one(Document, doc_id), SETTINGS)
    with store.session.begin() as session:
        (claim,) = queue.claim(session, lease=60, limit=5)
    return claim


def _state(store: Store, claim: queue.Claim) -> tuple[DeliveryState, DocStatus, str]:
    with store.session() as session:
        delivery = session.get_one(Delivery, claim.delivery_id)
        return delivery.state, delivery.document.status, delivery.document.status_reason


def test_a_claimed_delivery_cannot_be_claimed_again_until_its_lease_expires(store: Store) -> None:
    claim = _enqueue_and_claim(store)
    with store.session.begin() as session:
        assert queue.claim(session, lease=60, limit=5) == []
    with store.session.begin() as session:
        session.execute(update(Delivery).values(lease_until=utcnow() - timedelta(seconds=1)))
    with store.session.begin() as session:
        (again,) = queue.claim(session, lease=60, limit=5)
    assert again.delivery_id == claim.delivery_id
    assert again.attempt_id != claim.attempt_id


def test_sent_is_final(store: Store) -> None:
    claim = _enqueue_and_claim(store)
    with store.session.begin() as session:
        queue.complete(session, claim, "/drop/1-i.xml")
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
        queue.fail(session, claim, TransientError("connect-failed", "refused"), SETTINGS)
    state, status, reason = _state(store, claim)
    assert (state, status) == (DeliveryState.DEFERRED, DocStatus.FAILED)
    assert reason.startswith("connect-failed: refused (retrying at ")
    with store.session.begin() as session:
        assert queue.claim(session, lease=60, limit=5) == []


def test_transient_failure_past_the_lifetime_fails_for_good(store: Store) -> None:
    claim = _enqueue_and_claim(store)
    with store.session.begin() as session:
        session.execute(update(Delivery).values(expires_at=utcnow()))
        queue.fail(session, claim, TransientError("connect-failed", "refused"), SETTINGS)
    assert _state(store, claim)[:2] == (DeliveryState.FAILED, DocStatus.FAILED)


def test_permanent_failure_fails_at_once_and_can_be_requeued_by_hand(store: Store) -> None:
    claim = _enqueue_and_claim(store)
    with store.session.begin() as session:
        queue.fail(session, claim, PermanentError("host-key-mismatch", "changed"), SETTINGS)
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
        queue.fail(session, claim, RejectedError("invalid-vat", "unknown VAT code"), SETTINGS)
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
        queue.release(session, claim)
    with store.session.begin() as session:
        (again,) = queue.claim(session, lease=60, limit=5)
    assert again.delivery_id == claim.delivery_id


def test_backoff_doubles_within_jitter_and_is_capped() -> None:
    assert 48 <= queue.backoff(1, SETTINGS) <= 72
    assert 96 <= queue.backoff(2, SETTINGS) <= 144
    assert queue.backoff(20, SETTINGS) <= 600 * 1.2
