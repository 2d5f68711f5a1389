"""A listener's start-up heap is left out of full garbage collections."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from gateway.intake.smtpd import listeners


class Node:
    def __init__(self) -> None:
        self.me = self


@pytest.fixture
def thawed() -> Iterator[None]:
    yield
    gc.unfreeze()


def test_settling_frees_start_up_garbage_then_freezes_what_lives_on(thawed: None) -> None:
    garbage, kept = Node(), Node()
    gone = weakref.ref(garbage)
    del garbage
    frozen = gc.get_freeze_count()
    listeners.settle_heap()
    assert gone() is None
    assert gc.get_freeze_count() > frozen
    assert not any(o is kept for o in gc.get_objects())  # frozen objects are not tracked
