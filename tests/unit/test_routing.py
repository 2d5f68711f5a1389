"""Routing from the database and from a snapshot of it agree; the snapshot book reads once for
all waiting sessions, and again whenever a caller needs a newer one."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway import office
from gateway.config import DossierSettings
from gateway.intake import routing
from gateway.store.db import Store, open_store, upgrade

ADDRESSES = [
    "acme@docs.example",
    "ACME@Docs.Example",
    " acme@docs.example ",
    "acme+purchase@docs.example",
    "acme+bank@docs.example",
    "acme+whatever@docs.example",
    "acme+@docs.example",
    "+purchase@docs.example",
    "beta.sales@docs.example",
    "beta.sales+sales@docs.example",
    "special+x@docs.example",
    "special+x+purchase@docs.example",
    "nobody@docs.example",
    "acme@other.example",
    "acme",
    "",
]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = open_store(f"sqlite:///{tmp_path}/gateway.db", tmp_path / "blobs")
    upgrade(store.engine)
    with store.session.begin() as session:
        for slug, addresses, senders in [
            ("acme", ["acme@docs.example"], ["@client.example", "bob@x.example"]),
            ("beta", ["beta.sales@docs.example", "special+x@docs.example"], None),
        ]:
            spec = DossierSettings(slug, "none", addresses=addresses, allowed_senders=senders)
            office.put_dossier(session, spec)
    yield store
    store.engine.dispose()


def test_a_snapshot_routes_as_the_database_does(store: Store) -> None:
    with store.session() as session:
        snapshot = routing.read_snapshot(session)
        for address in ADDRESSES:
            assert snapshot.route(address) == routing.resolve(session, address), address
        for slug in ("acme", "beta", "none"):
            assert sorted(snapshot.allowed(slug)) == sorted(office.allowed_patterns(session, slug))


class CountingReads:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.reads = 0
        self.release = threading.Event()
        self.release.set()

    def __call__(self) -> routing.Snapshot:
        self.reads += 1
        self.release.wait(5)
        with self.store.session() as session:
            return routing.read_snapshot(session)


def test_waiting_sessions_share_one_read_and_a_newer_need_reads_again(store: Store) -> None:
    reads = CountingReads(store)

    async def main() -> None:
        book = routing.RouteBook(reads)
        reads.release.clear()
        now = time.monotonic()
        waiting = [asyncio.create_task(book.snapshot(now)) for _ in range(10)]
        await asyncio.sleep(0.05)
        reads.release.set()
        snapshots = await asyncio.gather(*waiting)
        assert reads.reads == 1 and len({id(s) for s in snapshots}) == 1
        assert await book.snapshot(now - routing.MAX_AGE) is snapshots[0]
        assert reads.reads == 1
        with store.session.begin() as session:
            office.put_dossier(session, DossierSettings("new", "none", addresses=["n@x.example"]))
        fresh = await book.snapshot(time.monotonic())
        assert reads.reads == 2 and fresh.route("n@x.example") == routing.Route("new")

    asyncio.run(main())


def test_a_failed_read_reaches_the_caller_and_the_next_call_reads_again(store: Store) -> None:
    calls = []

    def flaky() -> routing.Snapshot:
        calls.append(1)
        if len(calls) == 1:
            raise OSError("database gone")
        with store.session() as session:
            return routing.read_snapshot(session)

    async def main() -> None:
        book = routing.RouteBook(flaky)
        with pytest.raises(OSError):
            await book.snapshot(time.monotonic())
        snapshot = await book.snapshot(time.monotonic())
        assert snapshot.route("acme@docs.example") == routing.Route("acme")

    asyncio.run(main())


def test_many_sessions_asking_at_once_never_spin(store: Store) -> None:
    """A session that asks right as a read finishes gets that read's snapshot; it must not
    find the finished read without its result and go round in a loop that never yields."""

    def read() -> routing.Snapshot:
        return routing.Snapshot({}, {}, time.monotonic())

    async def session(book: routing.RouteBook, rng: random.Random) -> None:
        for _ in range(300):
            await book.snapshot(time.monotonic() - rng.random() / 1000)
            await asyncio.sleep(rng.random() / 2000)

    async def main() -> None:
        book = routing.RouteBook(read)
        await asyncio.gather(*(session(book, random.Random(n)) for n in range(30)))

    runner = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    runner.start()
    runner.join(timeout=60)
    assert not runner.is_alive(), "a session spun on a finished read"
