"""The http kind against a real local API server: signature, idempotency, and each answer."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from integration.delivery_harness import FAST, Harness, invoice
from integration.package_api import SECRET, Answer, PackageApi

from gateway.config import DeliverySettings
from gateway.store.models import DeliveryState, DocType


@pytest.fixture
def api() -> Iterator[PackageApi]:
    server = PackageApi()
    server.start()
    yield server
    server.stop()


def _harness(
    tmp_path: Path, api: PackageApi, settings: DeliverySettings = FAST, **extra: object
) -> Harness:
    secret = tmp_path / "secret"
    secret.write_text(SECRET + "\n")
    h = Harness(tmp_path, settings)
    h.integration("api", "http", url=api.url, secret_file=str(secret), **extra)
    return h


def _answers(*answers: tuple[int, str]) -> Callable[[int], Answer | None]:
    """Answer the n-th request with answers[n-1]; after the list, behave normally."""
    return lambda n: (*answers[n - 1], {}) if n <= len(answers) else None


def test_2xx_is_sent_with_the_remote_id_file_metadata_and_a_valid_signature(
    tmp_path: Path, api: PackageApi
) -> None:
    h = _harness(tmp_path, api)
    data = invoice("API-1")
    doc = h.document("api", data, "api-1.xml", DocType.PURCHASE_INVOICE, {"number": "API-1"})
    h.run_until(lambda: h.settled(doc))
    delivery = h.delivery(doc)
    assert delivery.state is DeliveryState.SENT
    (received,) = api.resources.values()
    assert received.data == data
    assert received.filename == "api-1.xml"
    assert received.metadata["facts"] == {"number": "API-1"}
    assert received.metadata["type"] == "purchase_invoice"
    assert received.metadata["document_id"] == doc
    assert received.key.startswith(f"delivery-{delivery.id}-")
    assert delivery.remote_ref == f"R-{received.key}"
    assert api.bad_signatures == 0


def test_a_wrong_secret_is_refused_by_the_package_and_rejected(
    tmp_path: Path, api: PackageApi
) -> None:
    h = _harness(tmp_path, api)
    (tmp_path / "secret").write_text("not-the-key")
    doc = h.document("api", invoice("API-BADSIG"))
    h.run_until(lambda: h.settled(doc))
    assert h.status(doc) == ("rejected", "http-401: HTTP 401: bad signature")
    assert api.bad_signatures == 1


def test_5xx_is_retried_with_the_same_key_until_the_package_takes_it(
    tmp_path: Path, api: PackageApi
) -> None:
    api.behave = _answers((502, "bad gateway"), (503, '{"error": "maintenance"}'))
    h = _harness(tmp_path, api)
    doc = h.document("api", invoice("API-5XX"))
    h.run_until(lambda: h.delivery(doc).state is DeliveryState.SENT)
    assert len(set(api.attempts)) == 1
    assert len(api.attempts) == 3
    assert len(api.resources) == 1
    outcomes = [(e["outcome"], e.get("code")) for e in h.events(doc, "delivery_attempt")]
    assert outcomes == [("deferred", "http-502"), ("deferred", "http-503"), ("sent", None)]


def test_4xx_is_rejected_with_the_reason_from_the_body(tmp_path: Path, api: PackageApi) -> None:
    api.behave = _answers((422, '{"error": "unknown VAT number BE0123456749"}'))
    h = _harness(tmp_path, api)
    doc = h.document("api", invoice("API-422"))
    h.run_until(lambda: h.settled(doc))
    assert h.status(doc) == ("rejected", "http-422: HTTP 422: unknown VAT number BE0123456749")
    assert len(api.attempts) == 1


def test_409_for_our_key_counts_as_sent(tmp_path: Path, api: PackageApi) -> None:
    api.behave = _answers((409, '{"id": "R-earlier", "error": "duplicate key"}'))
    h = _harness(tmp_path, api)
    doc = h.document("api", invoice("API-409"))
    h.run_until(lambda: h.settled(doc))
    delivery = h.delivery(doc)
    assert delivery.state is DeliveryState.SENT
    assert delivery.remote_ref == "R-earlier"


def test_a_2xx_that_is_not_json_is_not_believed(tmp_path: Path, api: PackageApi) -> None:
    api.behave = _answers((200, "<html>Login</html>"))
    h = _harness(tmp_path, api)
    doc = h.document("api", invoice("API-HTML"))
    h.run_until(lambda: h.delivery(doc).state is not DeliveryState.QUEUED and h.settled(doc))
    assert h.delivery(doc).state is DeliveryState.DEFERRED
    assert h.status(doc)[1].startswith("bad-response: HTTP 200 without a JSON object")


def test_a_slow_package_times_out_then_the_same_key_makes_one_copy(
    tmp_path: Path, api: PackageApi
) -> None:
    api.delay = 1.5
    h = _harness(tmp_path, api, timeout=0.5)
    doc = h.document("api", invoice("API-SLOW"))
    h.run_until(lambda: h.delivery(doc).state is DeliveryState.DEFERRED)
    assert h.delivery(doc).last_error_code == "uncertain-http-no-answer"
    api.delay = 0.0
    h.run_until(lambda: h.delivery(doc).state is DeliveryState.SENT)
    assert len(api.resources) == 1
    assert len(set(api.attempts)) == 1
    (key,) = api.resources
    assert h.delivery(doc).remote_ref == f"R-{key}"


@pytest.mark.parametrize(("header", "least", "most"), [(None, 0.1, 0.3), ("3", 2.9, 3.2)])
def test_retry_after_is_honoured(
    tmp_path: Path, api: PackageApi, header: str | None, least: float, most: float
) -> None:
    headers = {"Retry-After": header} if header else {}
    api.behave = lambda n: (429, '{"error": "slow down"}', headers) if n == 1 else None
    settings = DeliverySettings(poll_interval=0.05, retry_initial=0.2, retry_max=10)
    h = _harness(tmp_path, api, settings)
    doc = h.document("api", invoice("API-429"))
    h.run_until(lambda: h.delivery(doc).state is DeliveryState.DEFERRED)
    delivery = h.delivery(doc)
    wait = (delivery.next_attempt_at - delivery.updated_at).total_seconds()
    assert least <= wait <= most
    assert h.status(doc)[1].startswith("http-429: HTTP 429: slow down")
