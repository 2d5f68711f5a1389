"""Two pipeline instances on one PostgreSQL: the same invoice in two mails is delivered once.

The duplicate check reads, then inserts; two instances doing that at once would both find no
earlier document. A fault (a pause right after the check) is injected to make them overlap,
so the test fails unless the check is serialised per dossier.
"""

from __future__ import annotations

import asyncio
import threading
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from integration.servers import Postgres
from sqlalchemy import func, select

import gateway.pipeline.write
from gateway.config import DeliverySettings, DossierSettings, IntegrationEntry
from gateway.intake.accept import Envelope, accept_message
from gateway.office import put_dossier, put_integration
from gateway.pipeline.runner import PipelineRunner
from gateway.store.db import open_store, upgrade
from gateway.store.models import Delivery, Document

pytestmark = pytest.mark.integration
ADDRESS = "se@docs.example"
RUN_TIMEOUT = 60.0


def test_concurrent_instances_deliver_one_invoice_once(
    postgres: Postgres, tmp_path: Path, corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store(postgres.create_database("dupes"), tmp_path / "blobs")
    try:
        upgrade(store.engine)
        with store.session.begin() as session:
            put_integration(
                session, IntegrationEntry("drop", "directory", {"path": str(tmp_path)}), "t"
            )
            put_dossier(
                session,
                DossierSettings(
                    "se", "drop", vat="SE4598375937", addresses=[ADDRESS], auto_send=True
                ),
            )
        invoice = (corpus / "peppol-bis3" / "base-example.xml").read_bytes()
        for n in range(2):
            msg = EmailMessage()
            msg["To"] = ADDRESS
            msg["Subject"] = f"copy {n}"
            msg.add_attachment(invoice, maintype="application", subtype="xml", filename=f"{n}.xml")
            accept_message(store, msg.as_bytes(), Envelope("smtp", "c@example.com", [ADDRESS]))

        original = gateway.pipeline.write.find_originals

        def slow_check(*args: Any, **kwargs: Any) -> Any:
            found = original(*args, **kwargs)
            time.sleep(1.0)
            return found

        monkeypatch.setattr(gateway.pipeline.write, "find_originals", slow_check)
        runners = [PipelineRunner(store, DeliverySettings(), asyncio.Event()) for _ in range(2)]
        threads = [threading.Thread(target=r.process_batch) for r in runners]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(RUN_TIMEOUT)
        assert not any(thread.is_alive() for thread in threads)
        with store.session() as session:
            docs = session.scalars(select(Document).order_by(Document.id)).all()
            queued = session.scalar(select(func.count()).select_from(Delivery))
        assert len(docs) == 2
        assert [d.duplicate_of_id for d in docs] == [None, docs[0].id]
        assert queued == 1
    finally:
        store.engine.dispose()
