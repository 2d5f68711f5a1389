"""The drop folder with real files and the real watcher (inotify, and polling as for network
shares): stable files only, claim by rename, nothing taken twice, junk left alone, unknown
folders quarantined, and a SIGKILL between commit and clean-up loses and duplicates nothing."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from integration.gateway_proc import start_gateway
from integration.smtp_door import dossier
from sqlalchemy import select

from gateway import mime, office
from gateway.config import FolderSettings, IntakeSettings, MimeSettings
from gateway.intake.folder import SPOOL, FolderDoor
from gateway.store.db import Store, open_store, upgrade
from gateway.store.models import Message

T = TypeVar("T")
PDF = b"%PDF-1.4\n" + b"0" * 5000 + b"\n%%EOF\n"


def wait_for(what: Callable[[], T], timeout: float = 10.0, why: str = "") -> T:
    deadline = time.monotonic() + timeout
    while True:
        found = what()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {why or what}")
        time.sleep(0.05)


class Door:
    def __init__(self, workdir: Path, root: Path, senders: list[str] | None = None, **kw: Any):
        self.root = root
        self.store: Store = open_store(f"sqlite:///{workdir}/gw.db", workdir / "blobs")
        upgrade(self.store.engine)
        with self.store.session.begin() as session:
            office.put_dossier(session, dossier("acme", senders))
        settings = FolderSettings(root=str(root), **({"stable_seconds": 0.5} | kw))
        self.loop = asyncio.new_event_loop()
        self.door = FolderDoor(settings, self.store, IntakeSettings(), asyncio.Event())
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.task = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(timeout=5)

    async def _start(self) -> asyncio.Task[None]:
        return asyncio.create_task(self.door.run())

    def messages(self) -> list[Message]:
        with self.store.session() as session:
            return list(session.scalars(select(Message).order_by(Message.id)))

    def documents(self, message: Message) -> list[tuple[str, bytes]]:
        found = mime.extract(self.store.blobs.get(message.raw_sha256), MimeSettings())
        return [(p.filename, p.data) for p in found.parts]

    def stop(self) -> None:
        async def cancel() -> None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            # A store still running in a worker thread would outlive the test otherwise.
            await asyncio.get_running_loop().shutdown_default_executor()

        asyncio.run_coroutine_threadsafe(cancel(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        self.store.engine.dispose()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "drop"
    (folder / "acme").mkdir(parents=True)
    return folder


@pytest.fixture
def make_door(tmp_path: Path, root: Path) -> Iterator[Callable[..., Door]]:
    doors: list[Door] = []

    def make(**kw: Any) -> Door:
        door = Door(tmp_path, root, **kw)
        doors.append(door)
        return door

    yield make
    for door in doors:
        door.stop()


def _spool_files(root: Path) -> list[Path]:
    """The claimed files, read while the door may be pruning the folders that held them
    (`os.walk` passes over a folder that vanishes; `rglob` raises)."""
    return [Path(top, name) for top, _, names in os.walk(root / SPOOL) for name in names]


@pytest.mark.parametrize("polling", [False, True], ids=["inotify", "polling"])
def test_dropped_file_is_taken_once_and_removed(
    root: Path, make_door: Callable[..., Door], polling: bool
) -> None:
    (root / "acme" / "present-at-start.pdf").write_bytes(PDF)
    door = make_door(force_polling=polling)
    wait_for(lambda: len(door.messages()) == 1, why="the file present at start")
    (root / "acme" / "factuur mei.pdf").write_bytes(PDF + b"2")
    wait_for(lambda: len(door.messages()) == 2, why="the dropped file")
    message = door.messages()[1]
    assert (message.source, message.source_ref) == ("folder", "acme/factuur mei.pdf")
    assert message.routes == [{"dossier": "acme", "hint": ""}]
    assert door.documents(message) == [("factuur mei.pdf", PDF + b"2")]
    assert list((root / "acme").iterdir()) == []
    # The spool copy goes only after the commit that made the message visible above.
    wait_for(lambda: _spool_files(root) == [], why="the spool copy removed after the commit")


def test_a_file_still_being_written_is_taken_only_when_complete(
    root: Path, make_door: Callable[..., Door]
) -> None:
    door = make_door(stable_seconds=1.0)
    target = root / "acme" / "slow.pdf"
    chunks = [PDF[i : i + 1000] for i in range(0, len(PDF), 1000)]
    with open(target, "wb") as fh:
        for chunk in chunks:
            fh.write(chunk)
            fh.flush()
            time.sleep(0.3)
            assert door.messages() == []  # never taken half-written
    [message] = wait_for(door.messages, why="the completed file")
    assert door.documents(message) == [("slow.pdf", PDF)]


def test_junk_is_ignored_and_left_alone(root: Path, make_door: Callable[..., Door]) -> None:
    secret = root.parent / "secret.pdf"
    secret.write_bytes(b"%PDF secret")
    (root / "acme" / "link.pdf").symlink_to(secret)
    os.mkfifo(root / "acme" / "pipe.xml")
    for name in (".hidden.pdf", "upload.pdf.part", "~$draft.docx"):
        (root / "acme" / name).write_bytes(PDF)
    (root / "acme" / ".dotdir").mkdir()
    (root / "acme" / ".dotdir" / "x.pdf").write_bytes(PDF)
    hard = root / "acme" / "hard.pdf"
    hard.write_bytes(PDF)
    os.link(hard, root.parent / "elsewhere.pdf")
    door = make_door(stable_seconds=0.1)
    (root / "acme" / "real.pdf").write_bytes(PDF)
    wait_for(lambda: len(door.messages()) == 1, why="the real file")
    time.sleep(1.0)  # several scans: still nothing else taken
    assert [m.source_ref for m in door.messages()] == ["acme/real.pdf"]
    left = sorted(p.name for p in (root / "acme").iterdir())
    assert left == [
        ".dotdir",
        ".hidden.pdf",
        "hard.pdf",
        "link.pdf",
        "pipe.xml",
        "upload.pdf.part",
        "~$draft.docx",
    ]
    assert secret.read_bytes() == b"%PDF secret"


def test_unknown_folder_and_root_files_are_quarantined(
    root: Path, make_door: Callable[..., Door]
) -> None:
    (root / "nobody").mkdir()
    (root / "nobody" / "a.pdf").write_bytes(PDF)
    (root / "loose.pdf").write_bytes(PDF + b"x")
    door = make_door()
    wait_for(lambda: len(door.messages()) == 2, why="both quarantined")
    reasons = {m.source_ref: (m.verdict, m.reason) for m in door.messages()}
    assert reasons == {
        "nobody/a.pdf": ("quarantined", "drop folder: no dossier 'nobody'"),
        "loose.pdf": (
            "quarantined",
            "drop folder: file directly in the root, not in a dossier's folder",
        ),
    }


def test_eml_is_taken_as_mail_and_its_sender_checked(
    root: Path, make_door: Callable[..., Door]
) -> None:
    raw = (
        b"Return-Path: <mallory@evil.example>\r\nFrom: mallory@evil.example\r\n"
        b"Subject: forged\r\nMessage-ID: <f@evil.example>\r\n\r\nhello\r\n"
    )
    (root / "acme" / "mail.eml").write_bytes(raw)
    door = make_door(senders=["@client.example"])
    [message] = wait_for(door.messages, why="the eml")
    assert door.store.blobs.get(message.raw_sha256) == raw
    assert message.verdict == "quarantined"
    assert "envelope sender mallory@evil.example is not allowed" in message.reason


def test_the_same_file_twice_is_stored_once(root: Path, make_door: Callable[..., Door]) -> None:
    door = make_door(stable_seconds=0.1)
    (root / "acme" / "a.pdf").write_bytes(PDF)
    wait_for(lambda: len(door.messages()) == 1)
    (root / "acme" / "a.pdf").write_bytes(PDF)
    wait_for(lambda: not (root / "acme" / "a.pdf").exists(), why="second copy claimed")
    wait_for(lambda: _spool_files(root) == [], why="second copy stored and cleaned up")
    assert len(door.messages()) == 1


def test_sigkill_between_commit_and_cleanup_takes_the_file_once(
    tmp_path: Path, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    extra = f"""
[folder]
root = "{root}"
stable_seconds = 0.2

[[dossiers]]
slug = "acme"
integration = "none"
addresses = ["acme@docs.office.example"]
"""
    monkeypatch.setenv("GW_CRASH_AT", "folder_after_commit")
    gateway = start_gateway(tmp_path, extra)
    try:
        (root / "acme" / "crash.pdf").write_bytes(PDF)
        assert gateway.proc is not None
        assert gateway.proc.wait(timeout=20) == -signal.SIGKILL
        assert [p.name for p in _spool_files(root)] == ["crash.pdf"]  # committed, not cleaned
        monkeypatch.delenv("GW_CRASH_AT")
        gateway.start()
        wait_for(lambda: _spool_files(root) == [], timeout=20, why="spool cleaned")
        docs = gateway.wait_for(lambda: gateway.docs())
        assert [(d["filename"], d["source"]) for d in docs] == [("crash.pdf", "folder")]
    finally:
        gateway.stop()
