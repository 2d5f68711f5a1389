"""A MIME part's header block, read without the email package's header registry when it can be.

Taking a message apart asks each part for its type, boundary, file name, disposition and
transfer encoding. With `policy.default` every such look-up goes through the header registry,
which parses the value with the full RFC 2045/2231/2047 grammar; that was a third of the cost
of taking a small message apart. Yet the email package then answers those questions from the
registry's string form of the value, with the same code `compat32` runs on the raw value
(`Message.get_param`, `get_filename`, ...). For a plain value that string form differs from
the value at most in quotes and blanks, which those answers do not see: ASCII, no encoded
word, a type or a token, then `name=value` parameters whose values are tokens (without the
`'` and `*` of RFC 2231) or quoted strings without escapes. A block whose MIME headers are
all plain is therefore answered by a `compat32` message holding the unfolded values, which
gives the same answers at a fraction of the cost; any other block is parsed by the email
package as before.
A test compares both on generated header blocks.
"""

from __future__ import annotations

import re
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesParser
from typing import Any

_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+")
# Tokens without `'` or `*`, which RFC 2231 gives a meaning: those values go to the email package.
_TOKEN = r"[!#$%&+\-.0-9A-Z^_`a-z{|}~]+"
_QUOTED = r'"[ !#-\[\]-~]*"'
_PARAMETERS = re.compile(
    rf"[ \t]*{_TOKEN}(?:/{_TOKEN})?(?:[ \t]*;[ \t]*{_TOKEN}=(?:{_TOKEN}|{_QUOTED}))*[ \t]*"
)
_PARAMETER = re.compile(rf";[ \t]*({_TOKEN})=({_TOKEN}|{_QUOTED})")
_WITH_PARAMETERS = ("content-type", "content-disposition")
_PLAIN = {
    "content-type": _PARAMETERS,
    "content-disposition": _PARAMETERS,
    "content-transfer-encoding": re.compile(r"[0-9A-Za-z-]+"),
    "content-id": re.compile(r"<[!#-;=?-~]+>"),
}
_MISSING = object()
_UNSET = object()
# Keys of the cached answers that are not a header's (those are its lowercased name).
_TYPE = ("type",)
_MAINTYPE = ("maintype",)


class _Cached(Message):
    """Each answer computed once: taking a part apart asks for its type a dozen times. The
    answers are looked up straight in a dict; a key and a closure made for every question
    cost more than most answers."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._answers: dict[Any, Any] = {}

    def get(self, name: str, failobj: Any = None) -> Any:
        key = name.lower()
        found = self._answers.get(key, _UNSET)
        if found is _UNSET:
            found = self._answers[key] = Message.get(self, name, _MISSING)
        return failobj if found is _MISSING else found

    def get_content_type(self) -> str:
        found = self._answers.get(_TYPE)
        if found is None:
            found = self._answers[_TYPE] = str(Message.get_content_type(self))
        return found

    def get_content_maintype(self) -> str:
        found = self._answers.get(_MAINTYPE)
        if found is None:
            found = self._answers[_MAINTYPE] = str(Message.get_content_maintype(self))
        return found

    def get_params(
        self, failobj: Any = None, header: str = "content-type", unquote: bool = True
    ) -> Any:
        key = (header.lower(), unquote)
        found = self._answers.get(key, _UNSET)
        if found is _UNSET:
            found = self._answers[key] = self._parse_params(header, unquote)
        return failobj if found is _MISSING else list(found)

    def _parse_params(self, header: str, unquote: bool) -> Any:
        return Message.get_params(self, _MISSING, header, unquote)

    def get_param(
        self,
        param: str,
        failobj: Any = None,
        header: str = "content-type",
        unquote: bool = True,
    ) -> Any:
        """`Message.get_param`'s answer from the header's parameters, parsed once for every
        name asked of them (boundary, charset and name are all in Content-Type)."""
        params = self.get_params(_MISSING, header, unquote)
        if params is _MISSING:
            return failobj
        name = param.lower()
        return next((value for key, value in params if key.lower() == name), failobj)

    def set_default_type(self, ctype: str) -> None:
        super().set_default_type(ctype)
        self._answers.clear()


class RegistryHeaders(_Cached, EmailMessage):
    """A header block as the email package reads it (`policy.default`)."""


class PlainHeaders(_Cached, Message):
    """A header block of plain values, answered by `compat32` (see the module's docstring)."""

    def _parse_params(self, header: str, unquote: bool) -> Any:
        value = self.get(header, _MISSING)
        if value is _MISSING or header.lower() not in _WITH_PARAMETERS:
            return super()._parse_params(header, unquote)
        return _split_parameters(value, unquote)


def _split_parameters(value: str, unquote: bool) -> list[tuple[str, str]]:
    """A plain value's parameters as `Message.get_params` gives them (the type first, with an
    empty value; names lowercased; values unquoted, or quoted when `unquote` is false), split
    by the pattern that found the value plain instead of the email package's general parser."""
    params = [(value.partition(";")[0].strip(), "")]
    for name, given in _PARAMETER.findall(value):
        bare = given[1:-1] if given.startswith('"') else given
        params.append((name.lower(), bare if unquote else f'"{bare}"'))
    return params


_HEADER_POLICY = policy.default.clone(message_factory=RegistryHeaders)


def parse_head(block: bytes) -> Message:
    """The header block `block` (its lines, without the blank line after them)."""
    fields = _plain_fields(block.decode("ascii", "surrogateescape"))
    if fields is None:
        head = BytesParser(policy=_HEADER_POLICY).parsebytes(block, headersonly=True)
        assert isinstance(head, RegistryHeaders)
        return head
    plain = PlainHeaders(policy.compat32)
    for name, value in fields:
        plain.set_raw(name, value)
    return plain


def _plain_fields(text: str) -> list[tuple[str, str]] | None:
    """The fields as the email package splits them, MIME values unfolded; None when the
    block is not one of plain values (or is odd in a way only the email package settles)."""
    lines: list[tuple[str, list[str]]] = []
    for line in _LINE.findall(text):
        if line[0] in " \t":
            if not lines:
                return None
            lines[-1][1].append(line)
            continue
        colon = line.find(":")
        if colon <= 0 or line.startswith("From "):
            return None
        lines.append((line[:colon], [line[colon + 1 :].lstrip(" \t")]))
    fields = []
    for name, parts in lines:
        value = "".join(parts).rstrip("\r\n")
        plain = _PLAIN.get(name.lower())
        if plain is not None:
            value = value.replace("\r", "").replace("\n", "")
            if not value.isascii() or "=?" in value or not plain.fullmatch(value):
                return None
        fields.append((name, value))
    return fields
