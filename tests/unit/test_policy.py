"""The rules policy, pure: matching, order, `continue`, actions, and what gets recorded."""

from __future__ import annotations

from typing import Any

import pytest

from gateway import config
from gateway.rules.policy import Rule, RuleError, Subject, evaluate, make_rule
from gateway.store.models import DocType

FACTS: dict[str, Any] = {
    "syntax": "ubl",
    "kind": "invoice",
    "number": "INV-7",
    "supplier": {"vat": "BE0987654321", "endpoint": "0208:0987654321"},
    "customer": {"vat": "BE0123456749"},
}


def subject(**changes: Any) -> Subject:
    values: dict[str, Any] = {
        "sender": "billing@telecom.example",
        "recipients": ("acme+purchase@docs.example",),
        "subject": "Uw factuur van maart",
        "filename": "factuur-2024-03.xml",
        "media_type": "application/xml",
        "doc_type": DocType.PURCHASE_INVOICE,
        "reason": "purchase: dossier is the customer (BE0123456749)",
        "facts": FACTS,
    }
    return Subject(**(values | changes))


def rule(name: str, match: dict[str, str], continue_: bool = False, **actions: Any) -> Rule:
    return make_rule(name, match, actions, continue_)


def test_no_rules_keeps_the_recognition() -> None:
    outcome = evaluate([], subject())
    assert outcome.doc_type is DocType.PURCHASE_INVOICE
    assert outcome.auto_send and not outcome.matched


@pytest.mark.parametrize(
    "match",
    [
        {"sender": "*@TELECOM.example"},
        {"recipient": "acme+*@docs.example"},
        {"subaddress": "purchase"},
        {"subject": "*factuur*"},
        {"filename": "factuur-*.xml"},
        {"media_type": "application/*"},
        {"syntax": "ubl"},
        {"type": "purchase_invoice"},
        {"reason": "purchase:*"},
        {"supplier_vat": "BE 0987.654.321"},
        {"supplier_vat": "BE09876*"},
        {"invoice_number": "INV-?"},
        {"sender": "*@telecom.example", "syntax": "ubl"},
    ],
)
def test_every_match_key(match: dict[str, str]) -> None:
    outcome = evaluate([rule("r", match, set_type="sales_invoice")], subject())
    assert outcome.doc_type is DocType.SALES_INVOICE
    assert outcome.matched[0]["rule"] == "r"
    assert outcome.reason.startswith("rule r: type sales_invoice (")


def test_all_keys_must_match() -> None:
    only_half = rule("r", {"sender": "*@telecom.example", "syntax": "cii"}, drop=True)
    assert not evaluate([only_half], subject()).matched


def test_first_match_wins_unless_continue() -> None:
    rules = [
        rule("quiet", {"syntax": "ubl"}, continue_=True, auto_send=False),
        rule("typed", {"sender": "*@telecom.example"}, set_type="purchase_credit_note"),
        rule("never", {"syntax": "ubl"}, drop=True),
    ]
    outcome = evaluate(rules, subject())
    assert [m["rule"] for m in outcome.matched] == ["quiet", "typed"]
    assert outcome.doc_type is DocType.PURCHASE_CREDIT_NOTE
    assert not outcome.auto_send
    assert not outcome.dropped


def test_the_record_says_why() -> None:
    (entry,) = evaluate([rule("r", {"subaddress": "purchase"}, quarantine=True)], subject()).matched
    assert entry == {
        "rule": "r",
        "level": "gateway",
        "source": "config",
        "why": "subaddress='purchase'",
        "actions": {"quarantine": True},
    }


def test_quarantine_and_drop_stop_auto_send() -> None:
    held = evaluate([rule("q", {"syntax": "ubl"}, quarantine=True)], subject())
    dropped = evaluate([rule("d", {"syntax": "ubl"}, drop=True)], subject())
    assert (held.quarantined, held.auto_send) == ("q", False)
    assert (dropped.dropped, dropped.auto_send) == ("d", False)


def test_unrecognised_documents_can_be_typed() -> None:
    unknown = subject(doc_type=None, reason="party-mismatch: ...")
    outcome = evaluate([rule("r", {"type": "unrecognised"}, set_type="purchase_invoice")], unknown)
    assert outcome.doc_type is DocType.PURCHASE_INVOICE


@pytest.mark.parametrize(
    ("match", "actions", "key"),
    [
        ({}, {"drop": True}, "match"),
        ({"colour": "red"}, {"drop": True}, "match.colour"),
        ({"sender": 3}, {"drop": True}, "match.sender"),
        ({"sender": "*"}, {}, "actions"),
        ({"sender": "*"}, {"set_type": "invoice"}, "actions.set_type"),
        ({"sender": "*"}, {"drop": "yes"}, "actions.drop"),
        ({"sender": "*"}, {"forward": True}, "actions.forward"),
    ],
)
def test_bad_rules_name_the_key(match: dict[str, Any], actions: dict[str, Any], key: str) -> None:
    with pytest.raises(RuleError) as error:
        make_rule("r", match, actions)
    assert error.value.key == key


def test_config_rules_are_read_in_order_and_checked() -> None:
    text = {
        "rules": [
            {"name": "a", "dossier": "acme", "match": {"syntax": "pdf"}, "actions": {"drop": True}},
            {
                "name": "b",
                "continue": True,
                "match": {"sender": "*"},
                "actions": {"auto_send": False},
            },
        ]
    }
    rules = config.parse(text, "gw.toml").rules
    assert [(r.name, r.dossier, r.continue_) for r in rules] == [
        ("a", "acme", False),
        ("b", "", True),
    ]


def test_config_rule_errors_name_file_and_key() -> None:
    bad = {"rules": [{"name": "a", "match": {"syntax": "pdf"}, "actions": {"set_type": "x"}}]}
    with pytest.raises(config.ConfigError) as error:
        config.parse(bad, "gw.toml")
    assert str(error.value).startswith("gw.toml: rules[0].actions.set_type: expected one of")


def test_config_rule_names_are_unique_per_level() -> None:
    rule = {"name": "a", "match": {"syntax": "pdf"}, "actions": {"drop": True}}
    config.parse({"rules": [rule, rule | {"dossier": "acme"}]}, "gw.toml")
    with pytest.raises(config.ConfigError) as error:
        config.parse({"rules": [rule, rule]}, "gw.toml")
    assert str(error.value) == "gw.toml: rules[1].name: 'a' is used twice"
