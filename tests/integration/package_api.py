"""A package's import API, as a real aiohttp server on loopback, for the http kind's tests.

It checks the HMAC signature, stores one resource per Idempotency-Key (answering 409 with the
stored id for a repeated key, as a careful package does), and can be told to misbehave.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import default
from typing import Any

from aiohttp import web
from integration.servers import free_port

SECRET = "test-signing-key-0123456789"
Answer = tuple[int, str, dict[str, str]]


@dataclass
class Received:
    key: str
    metadata: dict[str, Any]
    data: bytes
    filename: str


@dataclass
class PackageApi:
    """`behave(attempt_number)` may return (status, body, headers) to answer instead of storing."""

    behave: Callable[[int], Answer | None] = lambda _n: None
    delay: float = 0.0
    port: int = field(default_factory=free_port)
    resources: dict[str, Received] = field(default_factory=dict)
    attempts: list[str] = field(default_factory=list)
    bad_signatures: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/import"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if not _signed(request.headers.get("X-Gateway-Signature", ""), body):
            self.bad_signatures += 1
            return web.json_response({"error": "bad signature"}, status=401)
        key = request.headers["Idempotency-Key"]
        self.attempts.append(key)
        answer = self.behave(len(self.attempts))
        if answer is not None:
            status, text, headers = answer
            return web.Response(
                status=status, text=text, content_type="application/json", headers=headers
            )
        if key in self.resources:
            return web.json_response({"id": f"R-{key}", "error": "duplicate key"}, status=409)
        parts = _form(request.headers["Content-Type"], body)
        meta, _ = parts["metadata"]
        data, filename = parts["file"]
        self.resources[key] = Received(key, json.loads(meta), data, filename)
        await asyncio.sleep(self.delay)
        return web.json_response({"id": f"R-{key}"}, status=201)

    def start(self) -> None:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        async def serve() -> None:
            app = web.Application()
            app.router.add_post("/import", self._handle)
            self._runner = web.AppRunner(app)
            await self._runner.setup()
            await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
            ready.set()

        def run() -> None:
            self._loop.run_until_complete(serve())
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("package API did not start")

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def _form(content_type: str, body: bytes) -> dict[str, tuple[bytes, str]]:
    """multipart/form-data parts by name: (bytes, filename); the body was read for the HMAC."""
    message = BytesParser(policy=default).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    parts = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        assert isinstance(name, str) and isinstance(payload, bytes)
        parts[name] = (payload, part.get_filename() or "")
    return parts


def _signed(header: str, body: bytes) -> bool:
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    if "t" not in parts or "v1" not in parts:
        return False
    expected = hmac.new(SECRET.encode(), f"{parts['t']}.".encode() + body, hashlib.sha256)
    return hmac.compare_digest(expected.hexdigest(), parts["v1"])
