"""Generic signed delivery to a package's HTTP API (httpx).

POST multipart/form-data: a `metadata` part (JSON: document facts, dossier, checksum) and a
`file` part (the original bytes). The body is signed with HMAC-SHA256 over
`<timestamp>.<body>` (header `X-Gateway-Signature: t=<unix time>,v1=<hex>`), and every attempt
of one delivery carries the same `Idempotency-Key`, so a retry after a timeout or a crash
cannot create a second copy at a package that honours it.

Answers: 2xx with a JSON object is sent (its `id` is the remote reference); 409 means the
package already has this key: sent; 429/503 and 5xx are retried (Retry-After honoured); other
4xx are rejected with the body's reason; a 2xx that is not JSON is not believed. Redirects are
not followed; a body larger than 64 KiB is cut.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import structlog

from gateway.outbound.base import (
    DeliveryError,
    Outgoing,
    PermanentError,
    RejectedError,
    TransientError,
    UncertainError,
)
from gateway.outbound.kinds import HttpOptions
from gateway.outbound.secrets import read_secret

log = structlog.get_logger(__name__)
SIGNATURE_HEADER = "X-Gateway-Signature"
MAX_BODY = 64 * 1024


def idempotency_key(item: Outgoing) -> str:
    """Stable for a delivery across attempts and restarts, distinct for every document."""
    return f"delivery-{item.delivery_id}-{item.sha256[:16]}"


def signature(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def metadata(item: Outgoing) -> dict[str, Any]:
    return {
        "delivery_id": item.delivery_id,
        "document_id": item.document_id,
        "dossier": item.dossier,
        "accounting_file_id": item.accounting_file_id,
        "vat": item.vat,
        "type": item.doc_type,
        "filename": item.filename,
        "media_type": item.media_type,
        "sha256": item.sha256,
        "size": len(item.data),
        "facts": item.facts,
    }


class HttpAdapter:
    def __init__(self, name: str, options: HttpOptions) -> None:
        self.name = name
        self.options = options
        self._client = httpx.AsyncClient(
            timeout=options.timeout, follow_redirects=False, trust_env=False
        )

    async def deliver(self, item: Outgoing) -> str:
        opts = self.options
        secret = read_secret(opts.secret_file, opts.secret_credential, "secret")
        token = read_secret(opts.token_file, opts.token_credential, "token")
        request = self._client.build_request(
            "POST",
            opts.url,
            files={
                "metadata": (None, json.dumps(metadata(item)).encode(), "application/json"),
                "file": (item.filename, item.data, item.media_type),
            },
            headers={"Idempotency-Key": idempotency_key(item)},
        )
        body = request.read()
        request.headers[SIGNATURE_HEADER] = signature(secret or "", int(time.time()), body)
        if token:
            request.headers["Authorization"] = f"Bearer {token}"
        if item.uncertain:
            log.info("http_repeat_same_key", delivery=item.delivery_id, key=idempotency_key(item))
        try:
            response = await self._client.send(request, stream=True)
            try:
                content = await _read_capped(response)
            finally:
                await response.aclose()
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise TransientError("connect-failed", f"{opts.url}: {_describe(exc)}") from exc
        except httpx.HTTPError as exc:
            # The request may have been processed: the retry repeats the same key.
            raise UncertainError("http-no-answer", f"{opts.url}: {_describe(exc)}") from exc
        return _outcome(response, content)

    async def close(self) -> None:
        await self._client.aclose()


async def _read_capped(response: httpx.Response) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk[: MAX_BODY - size])
        size += len(chunks[-1])
        if size >= MAX_BODY:
            break
    return b"".join(chunks)


def _describe(exc: httpx.HTTPError) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _outcome(response: httpx.Response, content: bytes) -> str:
    status = response.status_code
    parsed = _json(content)
    if 200 <= status < 300:
        if not isinstance(parsed, dict):
            raise TransientError(
                "bad-response", f"HTTP {status} without a JSON object: {_snippet(content)}"
            )
        return str(parsed.get("id") or f"HTTP {status}")
    if status == 409:
        remote = parsed.get("id") if isinstance(parsed, dict) else None
        return str(remote or "HTTP 409 (already received under this key)")
    reason = f"HTTP {status}: {_reason(parsed, content)}"
    if status in (408, 425, 429) or status >= 500:
        raise _retry(reason, response)
    if 300 <= status < 400:
        where = response.headers.get("location", "")
        raise PermanentError("redirect", f"{reason} (to {where!r}; redirects are not followed)")
    raise RejectedError(f"http-{status}", reason)


def _retry(reason: str, response: httpx.Response) -> DeliveryError:
    error = TransientError(f"http-{response.status_code}", reason)
    error.retry_after = _retry_after(response.headers.get("retry-after", ""))
    return error


def _retry_after(value: str) -> float | None:
    """Seconds to wait from a Retry-After header: a number, or an HTTP date."""
    value = value.strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _json(content: bytes) -> Any:
    try:
        return json.loads(content)
    except ValueError:
        return None


def _reason(parsed: Any, content: bytes) -> str:
    if isinstance(parsed, dict):
        for key in ("error", "message", "detail", "reason"):
            if parsed.get(key):
                return str(parsed[key])[:500]
    return _snippet(content)


def _snippet(content: bytes) -> str:
    text = content[:300].decode("utf-8", "replace").strip()
    return " ".join(text.split()) or "(empty body)"
