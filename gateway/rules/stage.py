"""One message's files for one dossier: recognised, paired with their visuals, ruled on.

This is the whole decision of the rules stage, pure, shared by the pipeline (which stores it)
and `gateway rules test` (which prints it), so what the test shows is what the daemon does.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol, cast

from gateway.rules.bundle import Item, pair_visuals
from gateway.rules.pdftext import Side
from gateway.rules.policy import Outcome, Rule, Subject, evaluate
from gateway.rules.recognize import (
    Content,
    DossierFacts,
    Options,
    Recognition,
    Visual,
    recognize,
)
from gateway.store.models import DocType


class FilePart(Protocol):
    @property
    def filename(self) -> str: ...
    @property
    def media_type(self) -> str: ...
    @property
    def data(self) -> bytes: ...


@dataclass(frozen=True)
class Envelope:
    sender: str
    recipients: tuple[str, ...]
    subject: str
    # The `+purchase`-style sub-address the message came in on for this dossier, if any.
    hint: str = ""


# What an address hint means when the document itself does not decide its type.
HINT_TYPES = {
    "purchase": DocType.PURCHASE_INVOICE,
    "sales": DocType.SALES_INVOICE,
    "bank": DocType.BANK_STATEMENT,
    "other": DocType.OTHER,
}
SIDES: dict[str, Side] = {"purchase": "purchase", "sales": "sales"}


@dataclass(frozen=True)
class Planned:
    """A document to make from `parts[index]`, with its visual and the policy's outcome."""

    index: int
    found: Recognition
    visual: Visual | None
    outcome: Outcome


def plan(
    parts: Sequence[FilePart],
    dossier: DossierFacts,
    policy: Sequence[Rule],
    envelope: Envelope,
    options: Options,
) -> list[Planned]:
    found = [
        _hinted(recognize(*_args(p), dossier, options, SIDES.get(envelope.hint)), envelope.hint)
        for p in parts
    ]
    shows = pair_visuals([Item(p.filename, f) for p, f in zip(parts, found, strict=True)])
    shown_by = {doc: pdf for pdf, doc in shows.items()}
    planned = []
    for index, (part, recognition) in enumerate(zip(parts, found, strict=True)):
        if index in shows:
            continue
        pdf = shown_by.get(index)
        visual = Visual(parts[pdf].filename, part=pdf) if pdf is not None else recognition.visual
        subject = Subject(
            sender=envelope.sender,
            recipients=envelope.recipients,
            subject=envelope.subject,
            filename=part.filename,
            media_type=part.media_type,
            doc_type=recognition.doc_type,
            reason=recognition.reason,
            facts=recognition.facts,
        )
        planned.append(Planned(index, recognition, visual, evaluate(policy, subject)))
    return planned


def _args(part: FilePart) -> tuple[str, str, bytes | Content]:
    """A part that can be read where it lies is recognised from there (see `Content`)."""
    readable = _readable(type(part))
    return part.filename, part.media_type, cast(Content, part) if readable else part.data


@functools.cache
def _readable(kind: type) -> bool:
    """Asked once per class: a protocol check on an instance walks the protocol each time."""
    return issubclass(kind, Content)


def _hinted(found: Recognition, hint: str) -> Recognition:
    """The sender's `+hint` types what the content left open; the content always wins."""
    if found.doc_type is not None or hint not in HINT_TYPES:
        return found
    reason = f"type from the address hint +{hint}" + (f" ({found.reason})" if found.reason else "")
    return replace(found, doc_type=HINT_TYPES[hint], reason=reason)
