"""Optional UBL 2.1 schema check against the OASIS XSDs the operator points us at.

The schemas are trusted local files, loaded once at start-up (outside the pure rules stage);
validation is CPU work on the already-parsed tree. A document that fails is still recognised,
because an accountant would rather book a slightly malformed invoice than lose it, but it is
flagged with the first errors so the sender can be told. libxml2 keeps a schema's error log on
the schema object, hence one lock per schema.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from lxml import etree

from gateway.rules.ubl import CREDIT_NOTE, INVOICE, NS

FILES = {
    INVOICE: Path("maindoc") / "UBL-Invoice-2.1.xsd",
    CREDIT_NOTE: Path("maindoc") / "UBL-CreditNote-2.1.xsd",
}
MAX_ERRORS = 5


class SchemaUnavailable(ValueError):
    """The schema folder cannot be used; the message names the file and the problem."""


class UblSchemas:
    def __init__(self, schemas: dict[str, etree.XMLSchema]) -> None:
        self._schemas = schemas
        self._locks = {tag: threading.Lock() for tag in schemas}

    @classmethod
    def load(cls, folder: Path) -> UblSchemas:
        parser = etree.XMLParser(no_network=True, resolve_entities=False)
        schemas = {}
        for tag, relative in FILES.items():
            path = folder / relative
            try:
                schemas[tag] = etree.XMLSchema(etree.parse(str(path), parser))
            except OSError as exc:
                raise SchemaUnavailable(f"{path}: cannot read ({exc})") from None
            except (etree.XMLSyntaxError, etree.XMLSchemaParseError) as exc:
                raise SchemaUnavailable(f"{path}: not a usable schema ({exc})") from None
        return cls(schemas)

    def errors(self, root: etree._Element) -> list[str]:
        """The first schema errors of a UBL Invoice or CreditNote; [] when valid or not UBL."""
        tag = str(root.tag)
        schema = self._schemas.get(tag)
        if schema is None:
            return []
        with self._locks[tag]:
            if schema.validate(root):
                return []
            # lxml-stubs declare the error log opaque; at run time it is a sequence of entries.
            entries = cast(Sequence[Any], schema.error_log)
            return [f"line {e.line}: {_short(e.message)}" for e in entries[:MAX_ERRORS]]


def _short(message: str) -> str:
    """`{urn:...:CommonAggregateComponents-2}Party` reads better as `cac:Party`."""
    for prefix, namespace in NS.items():
        message = message.replace(f"{{{namespace}}}", f"{prefix}:")
    return message
