"""A small JSON-RPC client for Tryton (`POST /<db>/rpc/`), and what its answers mean for us.

Tryton locks a login out after 5 wrong passwords within 5 minutes, so a refused login is never
retried: it raises `LoginRefused` and the caller marks the integration broken. A session that
went stale (401 on a call, e.g. a `fresh_session` method) gets exactly one new login.
The package's business errors come back as `TrytonUserError`; the adapter decides what they
mean for the document. Transport trouble, 5xx and 429 are `TransientError`s.
"""

from __future__ import annotations

import base64
import datetime as dt
import itertools
import json
from decimal import Decimal
from typing import Any

import httpx

from gateway.outbound.base import PermanentError, TransientError

TRANSIENT_TEXT = ("ConcurrencyException", "database is locked", "could not serialize")


class LoginRefused(PermanentError):
    """The package refused our credentials; trying again would only lock the user out."""


class TrytonUserError(Exception):
    """A `UserError` or `UserWarning` from the package: it understood and said no."""

    def __init__(self, kind: str, message: str, description: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.description = description


def encode(value: Any) -> Any:
    """Tryton's tagged JSON for the types it does not take as plain strings."""
    if isinstance(value, Decimal):
        return {"__class__": "Decimal", "decimal": str(value)}
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return {"__class__": "date", "year": value.year, "month": value.month, "day": value.day}
    if isinstance(value, bytes):
        return {"__class__": "bytes", "base64": base64.b64encode(value).decode()}
    if isinstance(value, dict):
        return {k: encode(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [encode(v) for v in value]
    return value


def _decode(obj: dict[str, Any]) -> Any:
    kind = obj.get("__class__")
    if kind == "Decimal":
        return Decimal(obj["decimal"])
    if kind == "date":
        return dt.date(obj["year"], obj["month"], obj["day"])
    if kind == "bytes":
        return base64.b64decode(obj["base64"])
    if kind == "datetime":
        return dt.datetime(
            obj["year"], obj["month"], obj["day"], obj.get("hour", 0), obj.get("minute", 0)
        )
    return obj


class TrytonRpc:
    """One authenticated JSON-RPC session against one database; reused between documents."""

    def __init__(
        self, url: str, database: str, login: str, password: str, timeout: float = 60.0
    ) -> None:
        self.endpoint = f"{url.rstrip('/')}/{database}/rpc/"
        self.login_name = login
        self._password = password
        self._client = httpx.AsyncClient(timeout=timeout)
        self._session: str | None = None
        self.context: dict[str, Any] = {}
        self._ids = itertools.count(1)

    async def close(self) -> None:
        await self._client.aclose()

    async def login(self) -> None:
        """One login attempt and the user's context; never repeated on refusal."""
        answer = await self._post(
            "common.db.login", [self.login_name, {"password": self._password}, "en"], None
        )
        if answer.status_code == 401:
            raise LoginRefused(
                "login-refused",
                f"Tryton refused the password of user {self.login_name!r}; integration marked"
                " broken, no further attempt until the credentials are fixed",
            )
        result = self._result(answer, "common.db.login")
        user_id, token = result[0], result[1]
        raw = f"{self.login_name}:{user_id}:{token}".encode()
        self._session = "Session " + base64.b64encode(raw).decode()
        self.context = await self.call("model.res.user.get_preferences", True)

    async def call(self, method: str, *params: Any) -> Any:
        """Call `method` with `params` and the user's context; log in first if needed."""
        if self._session is None:
            await self.login()
        answer = await self._post(method, [*params, self.context], self._session)
        if answer.status_code == 401:
            await self.login()  # stale session: one fresh login, then the call once more
            answer = await self._post(method, [*params, self.context], self._session)
            if answer.status_code == 401:
                raise PermanentError("unauthorized", f"{method}: 401 after a fresh login")
        return self._result(answer, method)

    async def _post(self, method: str, params: list[Any], auth: str | None) -> httpx.Response:
        body = {"id": next(self._ids), "method": method, "params": encode(params)}
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = auth
        try:
            return await self._client.post(self.endpoint, json=body, headers=headers)
        except httpx.TimeoutException as exc:
            raise TransientError("timeout", f"{method}: no answer from Tryton ({exc})") from exc
        except httpx.TransportError as exc:
            raise TransientError("connection", f"{method}: {type(exc).__name__}: {exc}") from exc

    def _result(self, answer: httpx.Response, method: str) -> Any:
        status = answer.status_code
        if status == 429:
            raise TransientError("rate-limited", f"{method}: Tryton answered 429 Too Many Requests")
        if status >= 500:
            raise TransientError("server-error", f"{method}: Tryton answered HTTP {status}")
        if status != 200:
            raise PermanentError(f"http-{status}", f"{method}: Tryton answered HTTP {status}")
        try:
            payload = json.loads(answer.content, object_hook=_decode)
        except ValueError as exc:
            raise TransientError("bad-answer", f"{method}: not JSON: {exc}") from exc
        if "error" not in payload or payload["error"] is None:
            return payload.get("result")
        return _raise_error(method, payload["error"])


def _raise_error(method: str, error: Any) -> Any:
    kind, detail = (error[0], error[1]) if isinstance(error, list) and error else (str(error), [])
    if kind == "UserError":
        raise TrytonUserError(kind, str(detail[0]), str(detail[1] or ""))
    if kind == "UserWarning":
        raise TrytonUserError(kind, str(detail[1]), str(detail[2] or ""))
    text = f"{kind}: {detail[0] if isinstance(detail, list) and detail else detail}"
    if any(marker in text for marker in TRANSIENT_TEXT):
        raise TransientError("package-busy", f"{method}: {text}")
    raise PermanentError("package-error", f"{method}: {text}")
