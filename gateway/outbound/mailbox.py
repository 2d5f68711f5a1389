"""Delivery by mail to the package's import mailbox, through the office's relay (aiosmtplib).

One document per mail, the original file attached (and, with `attach_pdf`, the PDF a UBL file
carries inside beside it), to the address configured for its type.
The Message-ID is derived from the delivery, so every attempt of one delivery carries the same
one and the package (or a person) can recognise a resend. Headers are built by the email
package's SMTP policy, and values that come from a document lose their control characters
first, so no invoice number can add a header.

A reply to the final dot decides: 250 sent, 4xx deferred, 5xx rejected. A connection that
breaks after the data went out is uncertain: the relay may have queued the mail, so the retry
is logged as a possible duplicate.
"""

from __future__ import annotations

import asyncio
import re
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate

import aiosmtplib
import structlog

from gateway.outbound.base import (
    DeliveryError,
    Outgoing,
    PermanentError,
    RejectedError,
    TransientError,
    UncertainError,
)
from gateway.outbound.kinds import MailboxOptions
from gateway.outbound.mailaddress import destination
from gateway.outbound.naming import render_text
from gateway.outbound.secrets import read_secret
from gateway.rules.ubl import embedded_pdf
from gateway.rules.xmlsafe import NotXml, looks_like_xml, parse_xml

log = structlog.get_logger(__name__)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def message_id(item: Outgoing, from_address: str) -> str:
    """Stable per delivery: the same on every attempt, different for every document."""
    domain = from_address.rpartition("@")[2]
    return f"<gateway.{item.delivery_id}.{item.sha256[:16]}@{domain}>"


def build(
    item: Outgoing, options: MailboxOptions, to: str, beside: tuple[str, bytes] | None = None
) -> EmailMessage:
    """The mail for `item`; `beside` is an extra (name, PDF) attached after the original."""
    msg = EmailMessage(policy=SMTP)
    msg["From"] = options.from_address
    msg["To"] = to
    msg["Subject"] = _CONTROL.sub(" ", render_text(options.subject, item)).strip()
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = message_id(item, options.from_address)
    msg["X-Gateway-Document"] = str(item.document_id)
    msg.set_content(f"Document {item.document_id} ({item.doc_type}) for {item.dossier}.\n")
    maintype, _, subtype = item.media_type.partition("/")
    if not subtype:
        maintype, subtype = "application", "octet-stream"
    msg.add_attachment(item.data, maintype=maintype, subtype=subtype, filename=_name(item))
    if beside is not None:
        name, pdf = beside
        msg.add_attachment(pdf, maintype="application", subtype="pdf", filename=name)
    return msg


def embedded_pdf_of(item: Outgoing) -> tuple[str, bytes] | None:
    """The PDF a UBL document carries inside, for packages that want it as a file beside."""
    if not looks_like_xml(item.data):
        return None
    try:
        return embedded_pdf(parse_xml(item.data))
    except NotXml:
        return None


def _name(item: Outgoing) -> str:
    """The attachment name; XML (UBL, CII) always ends in .xml, packages sort on it."""
    name = item.filename
    if item.media_type.endswith("xml") and not name.lower().endswith(".xml"):
        name += ".xml"
    return name


def relay(opts: MailboxOptions) -> aiosmtplib.SMTP:
    return aiosmtplib.SMTP(
        hostname=opts.host,
        port=opts.port,
        timeout=opts.timeout,
        use_tls=opts.tls == "tls",
        start_tls=False,
    )


async def connect(smtp: aiosmtplib.SMTP, opts: MailboxOptions) -> None:
    """Connect and EHLO; with tls = "starttls" a relay that does not offer it is refused."""
    await smtp.connect()
    await smtp.ehlo()
    if opts.tls != "starttls":
        return
    if not smtp.supports_extension("starttls"):
        raise PermanentError(
            "tls-unavailable",
            f"{opts.host}:{opts.port} does not offer STARTTLS; not sending in clear "
            '(set tls = "none" only for a relay on this machine)',
        )
    await smtp.starttls()


async def login(smtp: aiosmtplib.SMTP, opts: MailboxOptions) -> str:
    if not opts.username:
        return "no login configured"
    password = read_secret(opts.password_file, opts.password_credential, "password")
    await smtp.login(opts.username, password or "")
    return f"logged in as {opts.username}"


class MailboxAdapter:
    def __init__(self, name: str, options: MailboxOptions) -> None:
        self.name = name
        self.options = options

    async def deliver(self, item: Outgoing) -> str:
        opts = self.options
        to = destination(opts, item)
        beside = await asyncio.to_thread(embedded_pdf_of, item) if opts.attach_pdf else None
        msg = build(item, opts, to, beside)
        if item.uncertain:
            log.warning(
                "possible_duplicate",
                integration=self.name,
                delivery=item.delivery_id,
                message_id=msg["Message-ID"],
            )
        smtp = relay(opts)
        try:
            await connect(smtp, opts)
            await login(smtp, opts)
            await smtp.mail(opts.from_address)
            await smtp.rcpt(to)
            reply = await _data(smtp, msg.as_bytes())
        except aiosmtplib.SMTPAuthenticationError as exc:
            reason = f"{self._where()}: {exc.code} {exc.message}"
            raise PermanentError("auth-failed", reason) from exc
        except aiosmtplib.SMTPResponseException as exc:
            raise _by_code(exc.code, f"{self._where()}: {exc.code} {exc.message}") from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise TransientError("connect-failed", f"{self._where()}: {exc}") from exc
        finally:
            smtp.close()
        return f"{to} {msg['Message-ID']} {reply}"

    async def close(self) -> None:
        return None

    def _where(self) -> str:
        return f"{self.options.host}:{self.options.port}"


async def _data(smtp: aiosmtplib.SMTP, data: bytes) -> str:
    """DATA; a break once the bytes may have gone out is uncertain, not a plain failure."""
    try:
        response = await smtp.data(data)
    except aiosmtplib.SMTPResponseException:
        raise
    except (aiosmtplib.SMTPException, OSError) as exc:
        raise UncertainError(
            "after-data", f"connection lost after the message was sent, no reply: {exc}"
        ) from exc
    return f"{response.code} {response.message}"


def _by_code(code: int, text: str) -> DeliveryError:
    if 400 <= code < 500:
        return TransientError(f"smtp-{code}", text)
    if 500 <= code < 600:
        return RejectedError(f"smtp-{code}", text)
    return TransientError("smtp-unexpected", text)
