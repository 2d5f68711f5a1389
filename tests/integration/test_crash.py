"""Invariants 1-3 under SIGKILL: whatever got a 250 is delivered, and delivered once.

A delivery caught in `sending` by the kill is taken again only when its lease expires; the
short lease here keeps the test quick, the drop's same-bytes check keeps it single.
"""

from __future__ import annotations

from pathlib import Path

from integration.gateway_proc import DEMO_DROP, Gateway, mail, start_gateway

REPO = Path(__file__).resolve().parents[2]
INVOICE = (REPO / "tests" / "data" / "purchase-invoice-demo.xml").read_bytes()
MESSAGES = 30


def _invoice(n: int) -> bytes:
    return INVOICE.replace(b"INV-2026-0042", f"INV-CRASH-{n:04d}".encode())


def _sent(gateway: Gateway) -> list[dict[str, str]] | None:
    docs = gateway.docs()
    if len(docs) == MESSAGES and all(d["status"] == "sent" for d in docs):
        return docs
    return None


def test_sigkill_while_accepting_and_delivering_loses_nothing_and_sends_once(
    tmp_path: Path,
) -> None:
    gateway = start_gateway(tmp_path, DEMO_DROP, lease=3)
    try:
        for n in range(MESSAGES):
            gateway.send(mail("demo@gateway.localhost", (f"inv-{n}.xml", _invoice(n), "text/xml")))
        gateway.kill()
        gateway.start()
        docs = gateway.wait_for(lambda: _sent(gateway), timeout=30)
    finally:
        gateway.stop()
    drop = tmp_path / "var" / "outbox" / "Invoice_import"
    delivered = sorted(p.name for p in drop.iterdir())
    assert delivered == sorted(f"{d['id']}-{d['filename']}" for d in docs)
    assert sorted(p.read_bytes() for p in drop.iterdir()) == sorted(
        _invoice(n) for n in range(MESSAGES)
    )
