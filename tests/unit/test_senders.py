"""Allowed senders: the list semantics, the strict From parsing that fails closed on every
shape a forged From takes, and DMARC-style alignment."""

from __future__ import annotations

import pytest

from gateway.intake.senders import allowlist
from gateway.intake.senders.allowlist import SenderPolicy, check_message

PATTERNS = ["alice@allowed.example", "@partner.example"]


@pytest.mark.parametrize(
    ("entry", "normal"),
    [
        ("Alice@Allowed.EXAMPLE", "alice@allowed.example"),
        ("@Partner.Example", "@partner.example"),
        (" bob@bücher.example ", "bob@xn--bcher-kva.example"),
    ],
)
def test_patterns_are_normalized(entry: str, normal: str) -> None:
    assert allowlist.normalize_pattern(entry) == normal


@pytest.mark.parametrize("entry", ["not an address", "@", "a@", "@no_underscores.example", "a@@b"])
def test_bad_patterns_are_refused_with_the_entry_named(entry: str) -> None:
    with pytest.raises(allowlist.BadPattern, match="allowed sender"):
        allowlist.normalize_pattern(entry)


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("alice@allowed.example", True),
        ("ALICE@Allowed.Example", True),
        ("bob@allowed.example", False),
        ("anyone@partner.example", True),
        ("x@mail.partner.example", False),
        ("x@partner.example.evil", False),
        ("", False),
    ],
)
def test_matches(address: str, allowed: bool) -> None:
    assert allowlist.matches(address, PATTERNS) is allowed


def _check(from_values: list[str], mail_from: str = "alice@allowed.example") -> allowlist.Verdict:
    return check_message("acme", PATTERNS, mail_from, from_values, SenderPolicy.HEADER)


def test_empty_list_lets_anyone_in() -> None:
    assert check_message("acme", [], "", ["x@evil.example"], SenderPolicy.ALIGNED).allowed


def test_allowed_envelope_and_from_pass() -> None:
    assert _check(["Alice <alice@allowed.example>"]).allowed


@pytest.mark.parametrize(
    "from_values",
    [
        ["mallory@evil.example"],
        ["alice@allowed.example", "mallory@evil.example"],  # two From fields
        ["alice@allowed.example, mallory@evil.example"],  # two mailboxes
        ["Team: alice@allowed.example;"],  # group syntax
        ["<mallory@evil.example>:<alice@allowed.example>"],  # CERT VU#517845
        ["alice@allowed.example)<mallory@evil.example>"],  # CVE-2023-27043 shape
        ['"alice@allowed.example" <mallory@evil.example>'],  # display name is not matched
        ["=?utf-8?q?alice=40allowed.example?= <mallory@evil.example>"],
        [],
    ],
)
def test_forged_or_ambiguous_from_fails_closed(from_values: list[str]) -> None:
    verdict = _check(from_values)
    assert not verdict.allowed
    assert verdict.reason.startswith("dossier acme accepts documents only from its allowed")
    assert "partner.example" not in verdict.reason  # the list is never disclosed


def test_envelope_sender_must_be_allowed_too() -> None:
    verdict = _check(["alice@allowed.example"], mail_from="mallory@evil.example")
    assert not verdict.allowed
    assert "envelope sender mallory@evil.example" in verdict.reason
    assert not _check(["alice@allowed.example"], mail_from="").allowed


def test_policy_off_checks_the_envelope_only() -> None:
    verdict = check_message(
        "acme", PATTERNS, "alice@allowed.example", ["mallory@evil.example"], SenderPolicy.OFF
    )
    assert verdict.allowed


def test_aligned_needs_an_aligned_pass() -> None:
    def aligned(passed: frozenset[str], temporary: bool = False) -> allowlist.Verdict:
        return check_message(
            "acme",
            PATTERNS,
            "alice@allowed.example",
            ["alice@allowed.example"],
            SenderPolicy.ALIGNED,
            passed,
            temporary,
        )

    assert aligned(frozenset({"allowed.example"})).allowed
    assert aligned(frozenset({"mail.allowed.example"})).allowed
    refused = aligned(frozenset({"evil.example"}))
    assert not refused.allowed
    assert "no SPF or DKIM pass aligned with allowed.example" in refused.reason
    assert not refused.temporary
    assert aligned(frozenset(), temporary=True).temporary


@pytest.mark.parametrize(
    ("a", "b", "ok"),
    [
        ("example.com", "example.com", True),
        ("example.com", "mail.example.com", True),
        ("mail.example.com", "example.com", True),
        ("example.com", "badexample.com", False),
        ("example.com", "com", False),
    ],
)
def test_alignment(a: str, b: str, ok: bool) -> None:
    assert allowlist.aligned(a, b) is ok
