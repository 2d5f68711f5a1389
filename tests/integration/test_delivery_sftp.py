"""SFTP delivery against the real OpenSSH sshd: faults end in the status they deserve.

Each fault is produced for real on loopback: the server stopped, a directory the server may
not write (chattr +i, which binds root too), a host key regenerated, a 64 KiB tmpfs mounted
over the upload path for a full disk.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from integration.delivery_harness import Harness, invoice
from integration.servers import Sshd

from gateway.store.models import DeliveryState, DocType


def _sftp(h: Harness, sshd: Sshd, name: str, **extra: object) -> None:
    h.integration(
        name,
        "sftp",
        host=sshd.host,
        port=sshd.port,
        username=sshd.username,
        key_file=str(sshd.client_key),
        host_key=sshd.host_key_line,
        **extra,
    )


def _root_tool(*argv: str) -> None:
    """mount/chattr need root; in CI that is a broken machine, elsewhere a skip that says so."""
    if os.geteuid() != 0:
        message = f"{argv[0]} needs root to simulate this fault"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    subprocess.run(argv, check=True, timeout=30, capture_output=True)


def _logins(sshd: Sshd) -> int:
    return sshd.log.read_text(errors="replace").count("Accepted publickey")


def test_many_documents_go_over_one_connection_each_once(tmp_path: Path, sshd: Sshd) -> None:
    h = Harness(tmp_path)
    _sftp(h, sshd, "one-conn", upload_path="Many_import/", concurrency=1)
    before = _logins(sshd)
    docs = [h.document("one-conn", invoice(f"MANY-{i}")) for i in range(20)]
    h.run_until(lambda: h.settled(*docs))
    assert all(h.delivery(d).state is DeliveryState.SENT for d in docs)
    landed = sorted(p.name for p in (sshd.root / "Many_import").iterdir())
    assert landed == sorted(f"{d}-invoice.xml" for d in docs)
    assert _logins(sshd) - before == 1


def test_server_down_is_deferred_then_delivered_once_after_recovery(
    tmp_path: Path, sshd: Sshd
) -> None:
    h = Harness(tmp_path)
    _sftp(h, sshd, "down", upload_path="Down_import/", connect_timeout=2.0)
    sshd.stop()
    try:
        doc = h.document("down", invoice("DOWN-1"))
        h.run_until(lambda: h.delivery(doc).state is DeliveryState.DEFERRED)
        status, reason = h.status(doc)
        assert status == "failed"
        assert reason.startswith("connect-failed: ")
        assert "retrying at" in reason
    finally:
        sshd.start()
    h.run_until(lambda: h.delivery(doc).state is DeliveryState.SENT)
    assert [p.name for p in (sshd.root / "Down_import").iterdir()] == [f"{doc}-invoice.xml"]
    assert h.status(doc) == ("sent", "")
    outcomes = [e["outcome"] for e in h.events(doc, "delivery_attempt")]
    assert outcomes[-1] == "sent"
    assert set(outcomes[:-1]) == {"deferred"}


@pytest.fixture
def locked_dir(sshd: Sshd) -> Iterator[Path]:
    locked = sshd.root / "Locked_import"
    locked.mkdir(exist_ok=True)
    _root_tool("chattr", "+i", str(locked))
    yield locked
    _root_tool("chattr", "-i", str(locked))


def test_permission_denied_on_the_upload_path_fails_with_the_reason(
    tmp_path: Path, sshd: Sshd, locked_dir: Path
) -> None:
    h = Harness(tmp_path)
    _sftp(h, sshd, "locked", upload_path="Locked_import/")
    doc = h.document("locked", invoice("LOCKED-1"))
    h.run_until(lambda: h.settled(doc))
    assert h.delivery(doc).state is DeliveryState.FAILED
    status, reason = h.status(doc)
    assert status == "failed"
    assert reason.startswith("permission-denied: Locked_import")
    assert list(locked_dir.iterdir()) == []


def test_changed_host_key_fails_and_says_so(tmp_path: Path, sshd: Sshd) -> None:
    h = Harness(tmp_path)
    _sftp(h, sshd, "rekeyed", upload_path="Rekeyed_import/")
    sshd.restart_with_new_host_key()
    doc = h.document("rekeyed", invoice("REKEY-1"))
    h.run_until(lambda: h.settled(doc))
    assert h.delivery(doc).state is DeliveryState.FAILED
    status, reason = h.status(doc)
    assert status == "failed"
    assert reason.startswith("host-key-mismatch: ")
    assert "not the pinned one" in reason
    assert not (sshd.root / "Rekeyed_import").exists()


@pytest.fixture
def tiny_disk(sshd: Sshd) -> Iterator[Path]:
    full = sshd.root / "Full_import"
    full.mkdir(exist_ok=True)
    _root_tool("mount", "-t", "tmpfs", "-o", "size=64k,mode=0755", "tmpfs", str(full))
    try:
        yield full
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            _root_tool("umount", str(full))


def test_full_disk_is_deferred_leaves_no_partial_file_and_delivers_once_freed(
    tmp_path: Path, sshd: Sshd, tiny_disk: Path
) -> None:
    h = Harness(tmp_path)
    _sftp(h, sshd, "full", upload_path="Full_import/")
    big = invoice("FULL-1").replace(b"</Invoice>", b"<!--" + b"x" * 200_000 + b"--></Invoice>")
    doc = h.document("full", big)
    h.run_until(lambda: h.delivery(doc).state is DeliveryState.DEFERRED)
    status, reason = h.status(doc)
    assert status == "failed"
    assert reason.startswith("write-failed: Full_import")
    assert "disk full" in reason
    assert list(tiny_disk.iterdir()) == []
    _root_tool("mount", "-o", "remount,size=1m", str(tiny_disk))
    h.run_until(lambda: h.delivery(doc).state is DeliveryState.SENT)
    assert [p.read_bytes() for p in tiny_disk.iterdir()] == [big]


def test_each_type_lands_in_its_sub_path_below_the_upload_path(tmp_path: Path, sshd: Sshd) -> None:
    h = Harness(tmp_path)
    _sftp(h, sshd, "typed", upload_path="Typed_import/", purchase_subpath="Purchase",
          sales_subpath="Sales/2026")  # fmt: skip
    bought = h.document("typed", invoice("TYPE-P"), "p.xml", DocType.PURCHASE_INVOICE)
    sold = h.document("typed", invoice("TYPE-S"), "s.xml", DocType.SALES_CREDIT_NOTE)
    bank = h.document("typed", invoice("TYPE-B"), "b.xml", DocType.BANK_STATEMENT)
    h.run_until(lambda: h.settled(bought, sold, bank))
    root = sshd.root / "Typed_import"
    assert (root / "Purchase" / f"{bought}-p.xml").read_bytes() == invoice("TYPE-P")
    assert (root / "Sales" / "2026" / f"{sold}-s.xml").read_bytes() == invoice("TYPE-S")
    assert (root / f"{bank}-b.xml").read_bytes() == invoice("TYPE-B")
    assert h.delivery(sold).remote_ref == f"Typed_import/Sales/2026/{sold}-s.xml"


def _sessions(sshd: Sshd) -> list[int]:
    """The per-connection processes sshd forked (its children), not the listener itself."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == sshd.pid:
                found.append(int(stat.parent.name))
    return found


def test_a_server_that_stalls_mid_session_is_uncertain_then_delivered_once(
    tmp_path: Path, sshd: Sshd
) -> None:
    h = Harness(tmp_path)
    _sftp(h, sshd, "stall", upload_path="Stall_import/", concurrency=1, timeout=1.0)
    first = h.document("stall", invoice("STALL-1"))
    stopped: list[int] = []
    second: list[int] = []

    def stall_after_first() -> bool:
        if not stopped and h.delivery(first).state is DeliveryState.SENT:
            stopped.extend(_sessions(sshd))
            for pid in stopped:
                os.kill(pid, signal.SIGSTOP)
            second.append(h.document("stall", invoice("STALL-2")))
        return bool(second) and h.delivery(second[0]).state is DeliveryState.DEFERRED

    try:
        h.run_until(stall_after_first)
    finally:
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    assert stopped, "no sshd session to stall"
    assert h.delivery(second[0]).last_error_code == "uncertain-sftp-stalled"
    h.run_until(lambda: h.delivery(second[0]).state is DeliveryState.SENT)
    landed = sorted(p.name for p in (sshd.root / "Stall_import").iterdir())
    assert landed == sorted(f"{d}-invoice.xml" for d in (first, second[0]))


def test_a_folder_removed_between_deliveries_is_made_again_on_the_kept_connection(
    tmp_path: Path, sshd: Sshd
) -> None:
    """The pooled connection remembers the folders it made; one removed behind its back
    (an operator tidying up) is made again, not a failed delivery."""
    h = Harness(tmp_path)
    _sftp(h, sshd, "gone", upload_path="Gone_import/", concurrency=1)
    folder = sshd.root / "Gone_import"
    before = _logins(sshd)
    first = h.document("gone", invoice("GONE-1"))
    second: list[int] = []

    def remove_after_first() -> bool:
        if not second and h.delivery(first).state is DeliveryState.SENT:
            shutil.rmtree(folder)
            second.append(h.document("gone", invoice("GONE-2")))
        return bool(second) and h.settled(second[0])

    h.run_until(remove_after_first)
    assert h.delivery(second[0]).state is DeliveryState.SENT
    assert [p.name for p in folder.iterdir()] == [f"{second[0]}-invoice.xml"]
    assert _logins(sshd) - before == 1


def test_a_final_name_already_holding_the_document_is_delivered_without_a_second_write(
    tmp_path: Path, sshd: Sshd
) -> None:
    """What an attempt whose rename answer was lost leaves behind: the refused rename finds
    the same bytes under the final name, which counts as delivered."""
    h = Harness(tmp_path)
    _sftp(h, sshd, "there", upload_path="There_import/")
    doc = h.document("there", invoice("THERE-1"))
    folder = sshd.root / "There_import"
    folder.mkdir()
    final = folder / f"{doc}-invoice.xml"
    final.write_bytes(invoice("THERE-1"))
    written = final.stat().st_mtime_ns
    h.run_until(lambda: h.settled(doc))
    assert h.delivery(doc).state is DeliveryState.SENT
    assert [p.name for p in folder.iterdir()] == [final.name]
    assert final.stat().st_mtime_ns == written


def test_a_final_name_holding_other_bytes_is_a_name_conflict_and_stays_untouched(
    tmp_path: Path, sshd: Sshd
) -> None:
    h = Harness(tmp_path)
    _sftp(h, sshd, "clash", upload_path="Clash_import/")
    doc = h.document("clash", invoice("CLASH-1"))
    folder = sshd.root / "Clash_import"
    folder.mkdir()
    final = folder / f"{doc}-invoice.xml"
    final.write_bytes(b"someone else's file")
    h.run_until(lambda: h.settled(doc))
    assert h.delivery(doc).state is DeliveryState.FAILED
    status, reason = h.status(doc)
    assert (status, reason.split(":")[0]) == ("failed", "name-conflict")
    assert [p.name for p in folder.iterdir()] == [final.name]
    assert final.read_bytes() == b"someone else's file"
