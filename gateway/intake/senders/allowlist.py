"""Allowed senders per dossier: who may send documents into it.

An empty list lets anyone in. Otherwise the envelope sender must be on the list, and (policy
`header`, the default, or `aligned`) so must the one mailbox of the one `From:` header, parsed
strictly: a second From, a group, several mailboxes or any parse defect fails closed, because
those are exactly the shapes forged mail takes to slip past a whitelist (CVE-2023-27043, CERT
VU#517845). With `aligned`, the From domain must also carry an SPF or DKIM pass that aligns
with it (see `authentication`). Display names are never compared.

Reasons name the dossier's policy, never its list: a refused sender learns nothing about who
would have been let in.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from email import policy

from email_validator import EmailNotValidError, validate_email


class SenderPolicy(enum.StrEnum):
    OFF = "off"
    HEADER = "header"
    ALIGNED = "aligned"


class BadPattern(ValueError):
    """An allowed-sender entry that is neither an address nor `@domain`."""


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    reason: str = ""
    # True when the check could not be made (DNS down): the client should try again later.
    temporary: bool = False


ALLOW = Verdict(True)


def normalize_pattern(text: str) -> str:
    """`Alice@Example.COM` → `alice@example.com`; `@Example.com` → `@example.com` (IDN as
    punycode), checked with email-validator."""
    text = text.strip()
    probe = f"postmaster{text}" if text.startswith("@") else text
    try:
        checked = validate_email(probe, check_deliverability=False, allow_smtputf8=True)
    except EmailNotValidError as exc:
        raise BadPattern(f"allowed sender {text!r}: {exc}") from None
    domain = (checked.ascii_domain or checked.domain).lower()
    if text.startswith("@"):
        return f"@{domain}"
    return f"{checked.local_part.lower()}@{domain}"


def _normalize_address(address: str) -> str:
    local, at, domain = address.strip().lower().rpartition("@")
    if not at or not local or not domain:
        return ""
    try:
        domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        return ""
    return f"{local}@{domain}"


def matches(address: str, patterns: Iterable[str]) -> bool:
    """Whether `address` is on the list: an exact address, or its domain as `@domain`
    (subdomains are not included: `@example.com` does not admit `x@mail.example.com`)."""
    normal = _normalize_address(address)
    if not normal:
        return False
    domain = "@" + normal.rpartition("@")[2]
    return bool({normal, domain} & set(patterns))


def header_from(values: list[str]) -> str:
    """The single mailbox of the single From header, or "" when that is not unambiguous."""
    if len(values) != 1:
        return ""
    header = policy.default.header_factory("From", values[0])
    if header.defects or len(header.groups) != 1:
        return ""
    group = header.groups[0]
    if group.display_name is not None or len(group.addresses) != 1:
        return ""
    addr = group.addresses[0].addr_spec
    return addr if addr.count("@") == 1 and not addr.startswith("<") else ""


def domain_of(address: str) -> str:
    return _normalize_address(address).rpartition("@")[2]


def refuse(slug: str, detail: str, temporary: bool = False) -> Verdict:
    return Verdict(
        False,
        f"dossier {slug} accepts documents only from its allowed senders: {detail}",
        temporary,
    )


def check_envelope(slug: str, patterns: list[str], mail_from: str) -> Verdict:
    """The check possible at RCPT time, before the message is seen."""
    if not patterns or matches(mail_from, patterns):
        return ALLOW
    sender = mail_from or "the null sender <>"
    return refuse(slug, f"envelope sender {sender} is not allowed")


def check_message(
    slug: str,
    patterns: list[str],
    mail_from: str,
    from_values: list[str],
    sender_policy: SenderPolicy,
    aligned_domains: frozenset[str] | None = None,
    auth_temporary: bool = False,
) -> Verdict:
    """The full check once the headers are known; `aligned_domains` are the domains that
    passed SPF or DKIM for this message (only used by the `aligned` policy)."""
    envelope = check_envelope(slug, patterns, mail_from)
    if not envelope.allowed or not patterns or sender_policy is SenderPolicy.OFF:
        return envelope
    author = header_from(from_values)
    if not author:
        return refuse(slug, "the From header is not exactly one unambiguous mailbox")
    if not matches(author, patterns):
        return refuse(slug, f"header From {author} is not allowed")
    if sender_policy is SenderPolicy.ALIGNED:
        domain = domain_of(author)
        if not any(aligned(domain, d) for d in aligned_domains or ()):
            if auth_temporary:
                return refuse(slug, "sender authentication could not be checked now", True)
            return refuse(slug, f"no SPF or DKIM pass aligned with {domain}")
    return ALLOW


def aligned(from_domain: str, authenticated: str) -> bool:
    """DMARC relaxed alignment, approximated without a public-suffix list: the same domain,
    or one a subdomain of the other, never on a bare top-level domain."""
    a, b = from_domain.lower().rstrip("."), authenticated.lower().rstrip(".")
    if not a or not b:
        return False
    if a == b:
        return True
    shorter, longer = sorted((a, b), key=len)
    return "." in shorter and longer.endswith("." + shorter)
