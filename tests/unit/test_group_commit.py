"""Spooled intake and group commit on a real SQLite database and blob store."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from gateway.intake import accept
from gateway.intake.accept import (
    Accepted,
    Arrival,
    Envelope,
    Route,
    accept_message,
    accept_spooled,
    adopt_spooled,
    commit_arrivals,
)
from gateway.intake.smtpd.group_commit import GroupCommitter
from gateway.intake.spool import Spooled, SpoolFile, sweep
from gateway.store import blobs
from gateway.store.db import Store, open_store, upgrade
from gateway.store.models import Event, Message

ENVELOPE = Envelope("smtp", "sender@example.com", ["demo@gateway.localhost"])


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = open_store(f"sqlite:///{tmp_path}/g.db", tmp_path / "blobs")
    upgrade(store.engine)
    return store


def raw(n: int, body: bytes = b"hello\r\n") -> bytes:
    return f"Message-ID: <m{n}@example.com>\r\nSubject: s{n}\r\n\r\n".encode() + body


def spool(store: Store, data: bytes) -> Spooled:
    file = SpoolFile(store.blobs.spool_dir)
    for i in range(0, len(data), 100_000):
        file.write(data[i : i + 100_000])
        if file.needs_flush:
            file.flush()
    return file.finish()


def count(store: Store, model: type[Message] | type[Event]) -> int:
    with store.session() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def test_a_spooled_message_becomes_a_blob_by_rename_and_a_row(store: Store) -> None:
    data = raw(1, b"x" * 300_000 + b"\r\n")
    spooled = spool(store, data)
    accepted = accept_spooled(store, spooled, ENVELOPE)
    assert not accepted.duplicate
    assert not spooled.path.exists()
    assert list(store.blobs.spool_dir.iterdir()) == []
    with store.session() as session:
        row = session.get(Message, accepted.message_id)
        assert row is not None
        assert (row.message_id, row.subject, row.size) == ("<m1@example.com>", "s1", len(data))
        assert store.blobs.get(row.raw_sha256) == data


def test_the_same_message_twice_is_one_row_whichever_door_took_it_first(store: Store) -> None:
    first = accept_message(store, raw(2), ENVELOPE)
    again = accept_spooled(store, spool(store, raw(2)), ENVELOPE)
    assert again == Accepted(first.message_id, duplicate=True)
    assert list(store.blobs.spool_dir.iterdir()) == []
    assert count(store, Message) == 1


def test_both_ways_in_build_the_same_row(store: Store) -> None:
    routed = Envelope("smtp", "s@example.com", ["acme+bank@x"], [Route("acme", "bank")], "ref")
    first = accept_message(store, raw(3), routed, auth={"spf": "pass"})
    other_dossier = Envelope("smtp", "s@example.com", ["beta@x"], [Route("beta")])
    arrivals = [
        adopt_spooled(store, spool(store, raw(3)), routed, auth={"spf": "pass"}),
        adopt_spooled(store, spool(store, raw(3)), other_dossier),
    ]
    again, beta = commit_arrivals(store, arrivals)
    assert again == Accepted(first.message_id, duplicate=True) and not beta.duplicate
    with store.session() as session:
        one, two = (session.get(Message, a.message_id) for a in (first, beta))
        assert one is not None and two is not None
        assert (one.routes, one.auth, one.source_ref) == (
            [{"dossier": "acme", "hint": "bank"}],
            {"spf": "pass"},
            "ref",
        )
        assert (two.routes, two.raw_sha256) == ([{"dossier": "beta", "hint": ""}], one.raw_sha256)
        kinds = session.scalars(select(Event.kind)).all()
    assert kinds == ["message_accepted", "message_accepted"]


def test_a_batch_syncs_each_blob_directory_once_before_its_rows_commit(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[tuple[Path, int]] = []

    def record(directory: Path) -> None:
        synced.append((directory, count(store, Message)))

    monkeypatch.setattr(blobs, "fsync_dir", record)
    monkeypatch.setattr(accept, "fsync_dir", record)
    arrivals = [adopt_spooled(store, spool(store, raw(n)), ENVELOPE) for n in range(6)]
    assert synced == [], "adopting renames; the batch syncs"
    commit_arrivals(store, [*arrivals, arrivals[0]])
    directories = [store.blobs.path(a.fields["raw_sha256"]).parent for a in arrivals]
    assert sorted(d for d, _ in synced) == sorted(set(directories))
    assert all(rows == 0 for _, rows in synced), "synced after a row was committed"
    assert count(store, Message) == 6


def test_adopting_a_blob_already_there_keeps_its_bytes_and_drops_the_spool_file(
    store: Store,
) -> None:
    first = accept_spooled(store, spool(store, raw(7)), ENVELOPE)
    second = spool(store, raw(7))
    assert accept_spooled(store, second, ENVELOPE) == Accepted(first.message_id, True)
    assert not second.path.exists()
    assert store.blobs.get(second.sha256) == raw(7)


def test_a_batch_commits_once_and_answers_each_arrival(store: Store) -> None:
    arrivals = [adopt_spooled(store, spool(store, raw(n)), ENVELOPE) for n in range(5)]
    arrivals.append(arrivals[1])
    results = commit_arrivals(store, arrivals)
    assert [r.duplicate for r in results] == [False] * 5 + [True]
    assert results[5].message_id == results[1].message_id
    assert len({r.message_id for r in results}) == 5
    assert count(store, Message) == 5 and count(store, Event) == 5
    again = commit_arrivals(store, arrivals[:2])
    assert again == [Accepted(r.message_id, duplicate=True) for r in results[:2]]


def test_a_batch_holding_a_known_row_is_looked_up_and_the_rest_inserted(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    arrivals = [adopt_spooled(store, spool(store, raw(n)), ENVELOPE) for n in range(3)]
    first = commit_arrivals(store, [arrivals[1]])[0]
    original = accept._commit_batch
    looked_up: list[bool] = []

    def recording(store_: Store, batch: list[Arrival], *, look_up: bool) -> list[Accepted]:
        looked_up.append(look_up)
        return original(store_, batch, look_up=look_up)

    monkeypatch.setattr(accept, "_commit_batch", recording)
    results = commit_arrivals(store, arrivals)
    assert looked_up == [False, True], "insert first, look up only when a key is known"
    assert [r.duplicate for r in results] == [False, True, False]
    assert results[1].message_id == first.message_id
    assert count(store, Message) == 3 and count(store, Event) == 3
    commit_arrivals(store, [adopt_spooled(store, spool(store, raw(9)), ENVELOPE)])
    assert looked_up[2:] == [False], "a batch of new rows is never looked up"


def test_a_key_inserted_behind_our_back_falls_back_to_row_by_row(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    arrivals = [adopt_spooled(store, spool(store, raw(n)), ENVELOPE) for n in range(4)]
    commit_arrivals(store, [arrivals[3]])  # seen before: the batch must look its keys up
    original = accept._commit_batch
    calls: list[tuple[int, bool]] = []

    def racing(store_: Store, batch: list[Arrival], *, look_up: bool) -> list[Accepted]:
        calls.append((len(batch), look_up))
        if look_up and len(calls) == 2:
            original(store_, [batch[1]], look_up=False)  # another writer wins one key
            stale = [*batch[:1], _stale(batch[1]), *batch[2:]]
            return original(store_, stale, look_up=True)
        return original(store_, batch, look_up=look_up)

    monkeypatch.setattr(accept, "_commit_batch", racing)
    results = commit_arrivals(store, arrivals)
    assert calls[:2] == [(4, False), (4, True)]
    assert all(size == 1 for size, _ in calls[2:]) and len(calls) > 2
    assert [r.duplicate for r in results] == [False, True, False, True]
    assert count(store, Message) == 4


def _stale(arrival: Arrival) -> Arrival:
    """An arrival whose look-up will miss: same row, but the batch checks a different key."""
    return Arrival(arrival.intake_key + "-unseen", arrival.fields)


def test_concurrent_sessions_share_commits_and_each_waits_for_its_own(store: Store) -> None:
    batches: list[int] = []
    gate = threading.Event()

    def commit(batch: list[Arrival]) -> list[Accepted]:
        gate.wait(5)
        batches.append(len(batch))
        return commit_arrivals(store, batch)

    async def main() -> list[Accepted]:
        committer = GroupCommitter(commit, max_batch=8)
        arrivals = [adopt_spooled(store, spool(store, raw(n)), ENVELOPE) for n in range(20)]
        tasks = [asyncio.create_task(committer.commit(arrivals[0]))]
        await asyncio.sleep(0.05)  # the first commit is now running, held at the gate
        tasks += [asyncio.create_task(committer.commit(a)) for a in arrivals[1:]]
        await asyncio.sleep(0.05)
        assert not any(t.done() for t in tasks), "answered before any commit"
        gate.set()
        return await asyncio.wait_for(asyncio.gather(*tasks), 10)

    results = asyncio.run(main())
    assert batches == [1, 8, 8, 3]
    assert len({r.message_id for r in results}) == 20
    assert count(store, Message) == 20


def test_a_failed_commit_fails_every_session_in_the_batch(store: Store) -> None:
    def broken(batch: list[Arrival]) -> list[Accepted]:
        raise OSError("disk full")

    async def main() -> list[BaseException | Accepted]:
        committer = GroupCommitter(broken)
        arrivals = [adopt_spooled(store, spool(store, raw(n)), ENVELOPE) for n in range(3)]
        return await asyncio.gather(
            *(committer.commit(a) for a in arrivals), return_exceptions=True
        )

    results = asyncio.run(main())
    assert all(isinstance(r, OSError) for r in results)
    assert count(store, Message) == 0


def test_sweep_removes_only_spool_files_nobody_can_still_be_writing(store: Store) -> None:
    directory = store.blobs.spool_dir
    directory.mkdir(parents=True)
    old, fresh, other = directory / "in-old", directory / "in-fresh", directory / "keep.txt"
    for path in (old, fresh, other):
        path.write_bytes(b"x")
    os.utime(old, (time.time() - 700, time.time() - 700))
    os.utime(other, (time.time() - 700, time.time() - 700))
    assert sweep(directory, older_than=600) == 1
    assert sorted(p.name for p in directory.iterdir()) == ["in-fresh", "keep.txt"]
    assert sweep(store.blobs.root / "missing", older_than=600) == 0


def test_a_busy_database_is_retried_before_anyone_is_told_451(store: Store) -> None:
    calls: list[int] = []

    def busy_twice(batch: list[Arrival]) -> list[Accepted]:
        calls.append(len(batch))
        if len(calls) <= 2:
            raise OperationalError("INSERT", {}, sqlite3.OperationalError("database is locked"))
        return commit_arrivals(store, batch)

    def always_busy(batch: list[Arrival]) -> list[Accepted]:
        raise OperationalError("INSERT", {}, sqlite3.OperationalError("database is locked"))

    async def main() -> tuple[Accepted, BaseException | Accepted]:
        arrival = adopt_spooled(store, spool(store, raw(1)), ENVELOPE)
        ok = await GroupCommitter(busy_twice, attempts=3).commit(arrival)
        other = adopt_spooled(store, spool(store, raw(2)), ENVELOPE)
        failed = await asyncio.gather(
            GroupCommitter(always_busy, attempts=3).commit(other), return_exceptions=True
        )
        return ok, failed[0]

    ok, failed = asyncio.run(main())
    assert calls == [1, 1, 1] and not ok.duplicate
    assert isinstance(failed, OperationalError)
    assert count(store, Message) == 1


def test_arrivals_handed_in_from_other_threads_are_committed_before_close_stops(
    store: Store,
) -> None:
    async def main() -> list[Accepted]:
        committer = GroupCommitter(lambda batch: commit_arrivals(store, batch))
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in range(4)]

        def hand_in(n: int) -> None:
            committer.put(adopt_spooled(store, spool(store, raw(n)), ENVELOPE), futures[n])

        threads = [threading.Thread(target=hand_in, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        committer.close()
        results = await asyncio.wait_for(asyncio.gather(*futures), 10)
        assert committer._thread is not None
        committer._thread.join(5)
        assert not committer._thread.is_alive()
        return results

    results = asyncio.run(main())
    assert [r.duplicate for r in results] == [False] * 4
    assert count(store, Message) == 4


def test_the_kept_connection_serves_one_transaction_after_another_until_one_fails(
    store: Store,
) -> None:
    kept = accept.KeptConnection(store.engine)
    connections = []
    for n in range(2):
        commit_arrivals(store, [adopt_spooled(store, spool(store, raw(n)), ENVELOPE)], kept.begin)
        with kept.begin() as connection:
            connections.append(connection)
    assert connections[0] is connections[1], "one connection for every transaction"
    assert not connections[0].closed
    with pytest.raises(OperationalError), kept.begin() as connection:
        connection.exec_driver_sql("INSERT INTO no_such_table VALUES (1)")
    assert connections[0].closed, "a failed transaction closes its connection"
    with kept.begin() as connection:
        assert connection is not connections[0]
        assert connection.scalar(select(func.count()).select_from(Message)) == 2
    kept.close()
    assert connection.closed


def test_the_thread_calls_on_stop_when_it_stops(store: Store) -> None:
    stopped = threading.Event()

    async def main() -> Accepted:
        committer = GroupCommitter(lambda batch: commit_arrivals(store, batch), on_stop=stopped.set)
        accepted = await committer.commit(adopt_spooled(store, spool(store, raw(1)), ENVELOPE))
        assert not stopped.is_set()
        committer.close()
        return accepted

    assert not asyncio.run(main()).duplicate
    assert stopped.wait(5)


def test_a_busy_door_lingers_for_company_and_a_quiet_one_commits_at_once(store: Store) -> None:
    batches: list[int] = []

    def commit(batch: list[Arrival]) -> list[Accepted]:
        batches.append(len(batch))
        return commit_arrivals(store, batch)

    arrivals = [adopt_spooled(store, spool(store, raw(n)), ENVELOPE) for n in range(5)]

    async def sessions() -> float:
        committer = GroupCommitter(commit, linger=0.5)
        await committer.commit(arrivals[0])  # the first after a quiet spell: alone, at once
        busy = asyncio.create_task(committer.commit(arrivals[1]))
        await asyncio.sleep(0.1)
        company = [asyncio.create_task(committer.commit(a)) for a in arrivals[2:4]]
        await asyncio.wait_for(asyncio.gather(busy, *company), 10)
        await asyncio.sleep(0.6)
        started = time.monotonic()
        await committer.commit(arrivals[4])
        committer.close()
        return time.monotonic() - started

    quiet = asyncio.run(sessions())
    assert batches == [1, 3, 1], "the second came at once after the first: it waited for two more"
    assert quiet < 0.4, "after a quiet spell a message does not wait for company"
    assert count(store, Message) == 5
