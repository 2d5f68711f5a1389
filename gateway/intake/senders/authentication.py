"""Evidence that a message's domain really sent it, for the `aligned` sender policy.

Over SMTP the gateway checks itself: SPF of the envelope sender (pyspf) and every DKIM
signature (dkimpy). Over IMAP the message was received by someone else, so only that
receiver's verdict counts: the topmost `Authentication-Results` header carrying the operator's
named authserv-id (RFC 8601); any other such header may have been written by the sender.

Both libraries look names up through dnspython's default resolver, which `use_resolver`
points at a chosen server: tests run a DNS stub on loopback, production may name a local
validating resolver. A DNS failure is a temporary error, never a pass.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import dkim
import dns.resolver
import spf

from gateway.intake.senders import allowlist


@dataclass(frozen=True)
class Evidence:
    # Domains with an SPF or DKIM pass (or a trusted DMARC pass) for this message.
    passed: frozenset[str] = frozenset()
    temporary: bool = False
    results: dict[str, Any] = field(default_factory=dict)


def use_resolver(nameserver: str, port: int = 53, timeout: float = 5.0) -> None:
    """Send every SPF and DKIM lookup of this process to `nameserver:port`."""
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [nameserver]
    resolver.port = port
    resolver.lifetime = timeout
    dns.resolver.default_resolver = resolver


def smtp_evidence(raw: bytes, mail_from: str, client_ip: str, helo: str) -> Evidence:
    """SPF and DKIM results for a message received over SMTP; blocking (DNS)."""
    passed: set[str] = set()
    spf_result, spf_domain = _spf(mail_from, client_ip, helo)
    if spf_result == "pass" and spf_domain:
        passed.add(spf_domain)
    dkim_results = _dkim(raw)
    passed.update(d for d, result in dkim_results if result == "pass")
    temporary = spf_result == "temperror" or any(r == "temperror" for _, r in dkim_results)
    results = {
        "spf": {"result": spf_result, "domain": spf_domain},
        "dkim": [{"domain": d, "result": r} for d, r in dkim_results],
    }
    return Evidence(frozenset(passed), temporary, results)


def _spf(mail_from: str, client_ip: str, helo: str) -> tuple[str, str]:
    domain = allowlist.domain_of(mail_from) if mail_from else helo.lower()
    sender = mail_from or f"postmaster@{helo}"
    if not domain or not client_ip:
        return "none", domain
    try:
        result, _explanation = spf.check2(i=client_ip, s=sender, h=helo or domain)
    except Exception as exc:  # pyspf raises bare Exception for some malformed input
        return f"permerror ({type(exc).__name__})", domain
    return str(result).lower(), domain


def _dkim(raw: bytes) -> list[tuple[str, str]]:
    """(signing domain, result) per DKIM-Signature; signatures with `l=` never pass, since
    anything may be appended after the signed length."""
    checker = dkim.DKIM(raw)
    count = sum(1 for name, _ in checker.headers if name.lower() == b"dkim-signature")
    found: list[tuple[str, str]] = []
    for idx in range(count):
        try:
            ok = checker.verify(idx=idx)
        except dkim.DnsTimeoutError:
            found.append((_domain(checker), "temperror"))
            continue
        except dkim.DKIMException:
            found.append((_domain(checker), "fail"))
            continue
        limited = b"l" in (checker.signature_fields or {})
        found.append((_domain(checker), "pass" if ok and not limited else "fail"))
    return found


def _domain(checker: dkim.DKIM) -> str:
    domain = getattr(checker, "domain", None) or b""
    return domain.decode("ascii", "replace").lower() if isinstance(domain, bytes) else ""


_COMMENT = re.compile(r"\([^()]*\)")


def trusted_results(values: list[str], authserv_id: str) -> Evidence:
    """Evidence from the topmost `Authentication-Results` by `authserv_id` (IMAP intake)."""
    if not authserv_id:
        return Evidence(results={"authentication_results": "no trusted authserv-id configured"})
    for value in values:
        text = _COMMENT.sub(" ", value.replace("\r\n", " "))
        head, _, rest = text.partition(";")
        if (head.split() or [""])[0].lower() != authserv_id.lower():
            continue
        return _parse_results(rest)
    return Evidence(results={"authentication_results": f"none by {authserv_id}"})


def _parse_results(text: str) -> Evidence:
    passed: set[str] = set()
    methods: list[dict[str, str]] = []
    temporary = False
    for resinfo in text.split(";"):
        tokens = resinfo.split()
        if not tokens or "=" not in tokens[0]:
            continue
        method, _, result = tokens[0].lower().partition("=")
        props = dict(t.lower().split("=", 1) for t in tokens[1:] if "=" in t)
        domain = _result_domain(method, props)
        methods.append({"method": method, "result": result, "domain": domain})
        if result == "pass" and domain:
            passed.add(domain)
        temporary = temporary or result == "temperror"
    return Evidence(frozenset(passed), temporary, {"authentication_results": methods})


def _result_domain(method: str, props: dict[str, str]) -> str:
    if method == "dkim":
        return props.get("header.d", "") or props.get("header.i", "").rpartition("@")[2]
    if method == "spf":
        sender = props.get("smtp.mailfrom", "")
        return allowlist.domain_of(sender) if "@" in sender else sender
    if method == "dmarc":
        return props.get("header.from", "")
    return ""
