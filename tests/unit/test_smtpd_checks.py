"""The mail-loop check: Received headers counted as the header parser counts them."""

from __future__ import annotations

from gateway.intake.smtpd.checks import MAX_HOPS, is_looping


def _hops(n: int, name: bytes = b"Received") -> bytes:
    return b"".join(name + b": from hop%d by relay\r\n" % i for i in range(n))


def test_more_received_headers_than_the_hop_limit_is_a_loop() -> None:
    assert is_looping(_hops(MAX_HOPS + 1) + b"Subject: x\r\n\r\n")
    assert is_looping(_hops(MAX_HOPS + 1, b"RECEIVED") + b"\r\n")
    assert not is_looping(_hops(MAX_HOPS) + b"Subject: x\r\n\r\n")


def test_the_word_elsewhere_is_not_a_hop() -> None:
    # Enough "received" for the quick count to look twice, too few headers for a loop.
    subject = b"Subject: " + b"received " * (2 * MAX_HOPS) + b"\r\n"
    folded = b"X-Note: received\r\n" + b" received\r\n" * MAX_HOPS
    assert not is_looping(_hops(MAX_HOPS) + subject + folded + b"\r\n")
    assert not is_looping(b"X-Received-Count: 1\r\n" * (MAX_HOPS + 1) + b"\r\n")
