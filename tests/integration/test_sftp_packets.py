"""The SSH packets an SFTP delivery sends to the real sshd: no empty SSH_MSG_IGNORE before each
(asyncssh's CBC countermeasure, useless with the AEAD and CTR ciphers offered), and the
documents still land whole."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pytest
from integration.servers import Sshd

from gateway.outbound.base import Outgoing
from gateway.outbound.kinds import SftpOptions
from gateway.outbound.sftp import SftpAdapter

# "[conn=0, chan=0, pktid=7] Sent MSG_CHANNEL_DATA (94), 48 bytes": the packet's name.
SENT = re.compile(r"\] Sent (\w+) \(")


@pytest.fixture
def packet_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """asyncssh's own packet log (debug level 3): one record for every packet sent."""
    caplog.set_level(logging.DEBUG, logger="asyncssh")
    asyncssh.set_debug_level(3)
    try:
        yield caplog
    finally:
        asyncssh.set_debug_level(1)


def _item(n: int) -> Outgoing:
    data = f"<Invoice n='{n}'/>\n".encode()
    return Outgoing(
        delivery_id=n,
        attempt_id=f"packets-{n}",
        document_id=n,
        dossier="packets",
        accounting_file_id="",
        doc_type="purchase_invoice",
        filename=f"packets-{n}.xml",
        media_type="application/xml",
        data=data,
        sha256=hashlib.sha256(data).hexdigest(),
    )


def test_no_empty_ignore_packets_and_the_documents_land(
    sshd: Sshd, packet_log: pytest.LogCaptureFixture
) -> None:
    options = SftpOptions(
        host=sshd.host,
        port=sshd.port,
        username=sshd.username,
        key_file=Path(sshd.client_key),
        host_key=sshd.host_key_line,
        upload_path="Packets_import/",
        concurrency=1,
    )
    items = [_item(n) for n in range(3)]

    async def scenario() -> list[str]:
        adapter = SftpAdapter("packets", options)
        try:
            return [await adapter.deliver(item) for item in items]
        finally:
            await adapter.close()

    refs = asyncio.run(scenario())
    sent = Counter(m[1] for r in packet_log.records if (m := SENT.search(r.getMessage())))
    assert sent["MSG_CHANNEL_DATA"] >= 5 * len(items)
    assert sent["MSG_IGNORE"] == 0
    landed = {ref: (sshd.root / ref.lstrip("/")).read_bytes() for ref in refs}
    assert list(landed.values()) == [item.data for item in items]
