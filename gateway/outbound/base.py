"""What an adapter receives and the three ways it can fail.

The class of the error decides the status the accountant sees: a `TransientError` is retried
with backoff, a `PermanentError` fails at once (and can be retried by hand), a `RejectedError`
means the package itself refused the document.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


class DeliveryError(Exception):
    def __init__(self, code: str, text: str) -> None:
        super().__init__(f"{code}: {text}")
        self.code = code
        self.text = text


class TransientError(DeliveryError):
    """Worth trying again later: the network, a full disk, a busy server."""

    # Seconds the receiver asked us to wait (HTTP Retry-After); None lets the backoff decide.
    retry_after: float | None = None


class UncertainError(TransientError):
    """The connection broke after the document may have been accepted (RFC 1047's gap).

    Retried like a transient error; the next attempt is uncertain, so it reconciles or, for
    mail, resends with the same Message-ID and says it may be a duplicate.
    """

    def __init__(self, code: str, text: str) -> None:
        super().__init__(UNCERTAIN_PREFIX + code, text)


UNCERTAIN_PREFIX = "uncertain-"


class PermanentError(DeliveryError):
    """Will not heal by waiting: wrong credentials, a changed host key, a name conflict."""


class RejectedError(DeliveryError):
    """The package received the document and refused it."""


@dataclass(frozen=True)
class Outgoing:
    """One claimed delivery, with everything an adapter needs and nothing it may change."""

    delivery_id: int
    attempt_id: str
    document_id: int
    dossier: str
    accounting_file_id: str
    doc_type: str
    filename: str
    media_type: str
    data: bytes
    sha256: str
    facts: dict[str, Any] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)
    vat: str = ""
    # An earlier attempt was cut off mid-flight: reconcile, and say so if a copy may double.
    uncertain: bool = False


class Adapter(Protocol):
    async def deliver(self, item: Outgoing) -> str:
        """Hand the document over; return the remote reference (e.g. the final path)."""
        ...

    async def close(self) -> None: ...
