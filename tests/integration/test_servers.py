"""The server fixtures themselves: if these fail, every integration test after them is noise."""

from __future__ import annotations

import asyncio
from pathlib import PurePosixPath

import asyncssh
import pytest
from integration.servers import Postgres, Sshd
from sqlalchemy import create_engine, text

pytestmark = pytest.mark.integration


def _pinned(sshd: Sshd, host_key_line: str) -> asyncssh.SSHClientConnectionOptions:
    """Client options trusting exactly one host key, as the gateway's SFTP integration does."""
    trusted = [asyncssh.import_public_key(host_key_line)]
    return asyncssh.SSHClientConnectionOptions(
        username=sshd.username,
        client_keys=[str(sshd.client_key)],
        known_hosts=(trusted, [], []),
    )


async def _upload(sshd: Sshd, options: asyncssh.SSHClientConnectionOptions, data: bytes) -> str:
    """Write under a temporary name, then rename: the drop-folder protocol; returns the cwd."""
    async with (
        asyncssh.connect(sshd.host, sshd.port, options=options) as conn,
        conn.start_sftp_client() as sftp,
    ):
        cwd = await sftp.getcwd()
        async with sftp.open("Invoice_import/invoice-1.xml.part", "wb") as f:
            await f.write(data)
        await sftp.rename("Invoice_import/invoice-1.xml.part", "Invoice_import/invoice-1.xml")
        assert await sftp.exists("Invoice_import/invoice-1.xml")
        return str(cwd)


async def _list_root(sshd: Sshd, options: asyncssh.SSHClientConnectionOptions) -> list[str]:
    """Any SFTP round trip: proves a connection got past host-key checking."""
    async with (
        asyncssh.connect(sshd.host, sshd.port, options=options) as conn,
        conn.start_sftp_client() as sftp,
    ):
        return sorted(str(name) for name in await sftp.listdir("."))


def test_sftp_upload_lands_in_drop_root(sshd: Sshd) -> None:
    data = b"<Invoice>\x00binary-safe\r\n</Invoice>"
    cwd = asyncio.run(_upload(sshd, _pinned(sshd, sshd.host_key_line), data))

    assert PurePosixPath(cwd) == PurePosixPath(sshd.root.resolve())
    target = sshd.root / "Invoice_import"
    assert (target / "invoice-1.xml").read_bytes() == data
    assert not (target / "invoice-1.xml.part").exists()


def test_changed_host_key_is_refused(sshd: Sshd) -> None:
    old_options = _pinned(sshd, sshd.host_key_line)
    assert "Invoice_import" in asyncio.run(_list_root(sshd, old_options))
    old_pid = sshd.pid

    sshd.restart_with_new_host_key()

    assert sshd.pid != old_pid
    with pytest.raises(asyncssh.HostKeyNotVerifiable):
        asyncio.run(_list_root(sshd, old_options))
    # The server itself is fine: pinning the new key gets in again.
    assert "Invoice_import" in asyncio.run(_list_root(sshd, _pinned(sshd, sshd.host_key_line)))


def test_postgres_fresh_database_answers(postgres: Postgres) -> None:
    url = postgres.create_database("x")
    assert url == f"postgresql+psycopg://gw@127.0.0.1:{postgres.port}/x"
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("select 1")).scalar_one() == 1
            assert conn.execute(text("select current_database()")).scalar_one() == "x"
    finally:
        engine.dispose()
