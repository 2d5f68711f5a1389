"""The tables: every hand-off between doors, rules and workers is a row here.

One schema serves SQLite and PostgreSQL; Alembic migrations in `migrations/` create it.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on both databases (SQLite would hand back naive ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None or value.tzinfo is not None:
            return value
        return value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dict[str, Any]: JSON,
        datetime: UTCDateTime(),
    }


class DocType(enum.StrEnum):
    PURCHASE_INVOICE = "purchase_invoice"
    PURCHASE_CREDIT_NOTE = "purchase_credit_note"
    SALES_INVOICE = "sales_invoice"
    SALES_CREDIT_NOTE = "sales_credit_note"
    BANK_STATEMENT = "bank_statement"
    OTHER = "other"


class DocStatus(enum.StrEnum):
    INBOX = "inbox"
    SENT = "sent"
    FAILED = "failed"
    REJECTED = "rejected"


class DeliveryState(enum.StrEnum):
    QUEUED = "queued"
    SENDING = "sending"
    DEFERRED = "deferred"
    HELD = "held"
    SENT = "sent"
    FAILED = "failed"
    REJECTED = "rejected"


def _enum(cls: type[enum.StrEnum]) -> Enum:
    return Enum(cls, name=cls.__name__.lower(), values_callable=lambda c: [m.value for m in c])


class Integration(Base):
    __tablename__ = "integrations"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    kind: Mapped[str] = mapped_column(String(20))
    options: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The last `gateway integration test`: when, whether every step passed, the failed step.
    last_test_at: Mapped[datetime | None] = mapped_column()
    last_test_ok: Mapped[bool | None] = mapped_column(Boolean)
    last_test_report: Mapped[str] = mapped_column(Text, default="", server_default="")


class Dossier(Base):
    __tablename__ = "dossiers"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(100), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    vat_number: Mapped[str] = mapped_column(String(40), default="")
    company_number: Mapped[str] = mapped_column(String(40), default="")
    accounting_file_id: Mapped[str] = mapped_column(String(100), default="")
    auto_send: Mapped[bool] = mapped_column(Boolean, default=False)
    # NULL means the dossier was bound explicitly to "none": documents stay in the Inbox.
    integration_id: Mapped[int | None] = mapped_column(ForeignKey("integrations.id"))
    overrides: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The dossier's own bank accounts: how a CODA or camt.053 statement is known to be its.
    ibans: Mapped[list[str]] = mapped_column(JSON, default=list)

    integration: Mapped[Integration | None] = relationship()
    addresses: Mapped[list[Address]] = relationship(
        back_populates="dossier", cascade="all, delete-orphan", order_by="Address.address"
    )
    allowed_senders: Mapped[list[AllowedSender]] = relationship(cascade="all, delete-orphan")


class Address(Base):
    __tablename__ = "addresses"

    id: Mapped[int] = mapped_column(primary_key=True)
    address: Mapped[str] = mapped_column(String(320), unique=True)
    dossier_id: Mapped[int] = mapped_column(ForeignKey("dossiers.id", ondelete="CASCADE"))

    dossier: Mapped[Dossier] = relationship(back_populates="addresses")


class AllowedSender(Base):
    __tablename__ = "allowed_senders"
    __table_args__ = (UniqueConstraint("dossier_id", "pattern"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    dossier_id: Mapped[int] = mapped_column(ForeignKey("dossiers.id", ondelete="CASCADE"))
    pattern: Mapped[str] = mapped_column(String(320))


class Message(Base):
    """One intake event; `processed_at` stays NULL until the rules stage has made documents."""

    __tablename__ = "messages"
    __table_args__ = (Index("ix_messages_unprocessed", "processed_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    source: Mapped[str] = mapped_column(String(20))
    # sha256 of Message-ID + raw hash + target dossiers: the same message taken twice, by any
    # door, for the same dossiers is one row.
    intake_key: Mapped[str] = mapped_column(String(64), unique=True)
    mail_from: Mapped[str] = mapped_column(String(320), default="")
    recipients: Mapped[list[str]] = mapped_column(JSON, default=list)
    header_from: Mapped[str] = mapped_column(Text, default="")
    message_id: Mapped[str] = mapped_column(Text, default="")
    subject: Mapped[str] = mapped_column(Text, default="")
    raw_sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)
    verdict: Mapped[str] = mapped_column(String(20), default="accepted")
    reason: Mapped[str] = mapped_column(Text, default="")
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    processed_at: Mapped[datetime | None] = mapped_column()
    # Where the message came from beyond its door: "account/folder/UIDVALIDITY/UID" for IMAP,
    # the path under the drop root for the folder; empty for SMTP.
    source_ref: Mapped[str] = mapped_column(Text, default="")
    # The dossiers it is for, decided by the door: [{"dossier": slug, "hint": "purchase"}, ...].
    routes: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    # Sender authentication evidence (SPF, DKIM, alignment) kept for audit.
    auth: Mapped[dict[str, Any]] = mapped_column(default=dict)


class BlobRow(Base):
    """A blob small enough to live in the database, named like a blob file by its sha256
    (`gateway.store.blob_rows` says which and why); a message's `raw_sha256` and a document's
    `blob_sha256` name either kind."""

    __tablename__ = "blobs"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class Document(Base):
    __tablename__ = "documents"
    __table_args__ = (Index("ix_documents_dossier_status", "dossier_id", "status"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    dossier_id: Mapped[int] = mapped_column(ForeignKey("dossiers.id"))
    message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id"))
    filename: Mapped[str] = mapped_column(Text)
    media_type: Mapped[str] = mapped_column(String(200))
    blob_sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)
    # NULL means unrecognised; `reason` then says why.
    doc_type: Mapped[DocType | None] = mapped_column(_enum(DocType))
    reason: Mapped[str] = mapped_column(Text, default="")
    facts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    duplicate_of_id: Mapped[int | None] = mapped_column(ForeignKey("documents.id"))
    status: Mapped[DocStatus] = mapped_column(_enum(DocStatus), default=DocStatus.INBOX)
    status_reason: Mapped[str] = mapped_column(Text, default="")
    archived: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column()
    # The PDF that shows a structured document (embedded in it or sent beside it).
    visual_sha256: Mapped[str | None] = mapped_column(String(64))
    visual_filename: Mapped[str] = mapped_column(Text, default="")
    # supplier VAT + number + type: the same invoice sent twice under other bytes.
    dedupe_key: Mapped[str] = mapped_column(String(300), default="")
    # Which rules of the policy matched and what they did, in order.
    matched_rules: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)

    dossier: Mapped[Dossier] = relationship()
    message: Mapped[Message | None] = relationship()


class ImapSeen(Base):
    """An IMAP message already taken, recorded in the transaction that stores it: the key to
    taking each message exactly once, however the connection or the daemon dies."""

    __tablename__ = "imap_seen"
    __table_args__ = (UniqueConstraint("account", "folder", "uidvalidity", "uid"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account: Mapped[str] = mapped_column(String(100))
    folder: Mapped[str] = mapped_column(String(200))
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    uid: Mapped[int] = mapped_column(BigInteger)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id"))
    # NULL until the post-action (move or flag) was applied on the server.
    done_at: Mapped[datetime | None] = mapped_column()


Index("ix_documents_dossier_blob", Document.dossier_id, Document.blob_sha256)
Index("ix_documents_dossier_dedupe", Document.dossier_id, Document.dedupe_key)


class Rule(Base):
    """One rule of the policy; `dossier_id` NULL means it applies to every dossier."""

    __tablename__ = "rules"
    __table_args__ = (Index("ix_rules_dossier_position", "dossier_id", "position"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    dossier_id: Mapped[int | None] = mapped_column(ForeignKey("dossiers.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(100))
    match: Mapped[dict[str, Any]] = mapped_column(default=dict)
    actions: Mapped[dict[str, Any]] = mapped_column(default=dict)
    continue_matching: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Delivery(Base):
    """One document to one integration; the unique pair is what makes 'twice' impossible."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("document_id", "integration_id"),
        Index("ix_deliveries_due", "state", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id"))
    integration_id: Mapped[int] = mapped_column(ForeignKey("integrations.id"))
    state: Mapped[DeliveryState] = mapped_column(_enum(DeliveryState), default=DeliveryState.QUEUED)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    attempt_id: Mapped[str | None] = mapped_column(String(36))
    lease_until: Mapped[datetime | None] = mapped_column()
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column()
    last_error_code: Mapped[str] = mapped_column(String(60), default="")
    last_error_text: Mapped[str] = mapped_column(Text, default="")
    remote_ref: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    document: Mapped[Document] = relationship()
    integration: Mapped[Integration] = relationship()


class Event(Base):
    """Append-only log of what happened to messages, documents and deliveries."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    kind: Mapped[str] = mapped_column(String(60))
    message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id"))
    document_id: Mapped[int | None] = mapped_column(ForeignKey("documents.id"), index=True)
    delivery_id: Mapped[int | None] = mapped_column(ForeignKey("deliveries.id"))
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
