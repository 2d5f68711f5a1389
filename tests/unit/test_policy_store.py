"""A dossier's policy, read in one statement for every batch, keeps the policy's order: the
dossier's rules before the gateway's, at each level the config file's before the database's
(by position), and no other dossier's."""

from __future__ import annotations

from pathlib import Path

from gateway.config import DossierSettings
from gateway.office import put_dossier
from gateway.pipeline.policy_store import put_rule, rules_for
from gateway.rules.policy import make_rule
from gateway.store.db import open_store, upgrade
from gateway.store.models import Dossier


def test_a_dossier_s_policy_is_its_rules_then_the_gateway_s_each_config_first(
    tmp_path: Path,
) -> None:
    store = open_store(f"sqlite:///{tmp_path}/r.db", tmp_path / "blobs")
    upgrade(store.engine)
    hold = {"quarantine": True}
    with store.session.begin() as session:
        for slug in ("acme", "other"):
            put_dossier(session, DossierSettings(slug, "none"))
        put_rule(session, make_rule("g-late", {"filename": "*"}, hold), position=30)
        put_rule(session, make_rule("d-late", {"filename": "*"}, hold, dossier="acme"), 20)
        put_rule(session, make_rule("elsewhere", {"filename": "*"}, hold, dossier="other"))
        put_rule(session, make_rule("g-early", {"filename": "*"}, hold), position=5)
        put_rule(session, make_rule("d-early", {"filename": "*"}, hold, dossier="acme"), 1)
    configured = [
        make_rule("c-gateway", {"filename": "*"}, hold),
        make_rule("c-acme", {"filename": "*"}, hold, dossier="acme"),
        make_rule("c-other", {"filename": "*"}, hold, dossier="other"),
    ]
    with store.session() as session:
        acme = session.query(Dossier).filter_by(slug="acme").one()
        policy = rules_for(session, acme, configured)
    assert [(r.name, r.dossier) for r in policy] == [
        ("c-acme", "acme"),
        ("d-early", "acme"),
        ("d-late", "acme"),
        ("c-gateway", ""),
        ("g-early", ""),
        ("g-late", ""),
    ]
