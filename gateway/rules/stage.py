"""One message's files for one dossier: recognised, paired with their visuals, ruled on.

This is the whole decision of the rules stage, pure, shared by the pipeline (which stores it)
and `gateway rules test` (which prints it), so what the test shows is what the daemon does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from gateway.rules.bundle import Item, pair_visuals
from gateway.rules.pdftext import Side
from gateway.rules.policy import Outcome, Rule, Subject, evaluate
from gateway.rules.recognize import DossierFacts, Options, Recognition, Visual, recognize


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
    # A side the intake declared for the whole message (e.g. from `slug+purchase@`).
    hint: Side | None = None


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
        recognize(p.filename, p.media_type, p.data, dossier, options, envelope.hint) for p in parts
    ]
    shows = pair_visuals([Item(p.filename, f) for p, f in zip(parts, found, strict=True)])
    shown_by = {doc: pdf for pdf, doc in shows.items()}
    planned = []
    for index, (part, recognition) in enumerate(zip(parts, found, strict=True)):
        if index in shows:
            continue
        pdf = parts[shown_by[index]] if index in shown_by else None
        visual = Visual(pdf.filename, pdf.data) if pdf else recognition.visual
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
