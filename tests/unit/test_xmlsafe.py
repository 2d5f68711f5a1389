"""Hostile and broken XML is refused with a reason code, and never expanded or fetched."""

from __future__ import annotations

import codecs
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from gateway.rules.xmlsafe import NotXml, looks_like_xml, parse_xml

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
  <!ENTITY lol "lol">
  <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
  <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
  <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
  <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
  <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
  <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
  <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
  <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
  <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<lolz>&lol9;</lolz>
"""


def external_entity(url: str) -> bytes:
    return (
        f'<?xml version="1.0"?>\n<!DOCTYPE r [<!ENTITY x SYSTEM "{url}">]>\n<r>&x;</r>\n'
    ).encode()


def refusal(data: bytes) -> NotXml:
    with pytest.raises(NotXml) as caught:
        parse_xml(data)
    return caught.value


def test_billion_laughs_is_refused_without_expanding() -> None:
    error = refusal(BILLION_LAUGHS)
    assert error.reason == "xml-doctype-forbidden"
    assert "lollol" not in str(error)


def test_external_entity_to_etc_passwd_is_refused() -> None:
    error = refusal(external_entity("file:///etc/passwd"))
    assert error.reason == "xml-doctype-forbidden"
    assert "root:" not in str(error)


def test_external_entity_is_never_read(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("SECRET-MARKER-4711")
    error = refusal(external_entity(secret.as_uri()))
    assert error.reason == "xml-doctype-forbidden"
    assert "SECRET-MARKER-4711" not in str(error)


def test_parameter_entity_is_refused() -> None:
    data = b'<!DOCTYPE r [<!ENTITY % p SYSTEM "file:///etc/passwd"> %p;]><r/>'
    assert refusal(data).reason == "xml-doctype-forbidden"


def test_doctype_after_comments_and_instructions_is_refused_before_parsing() -> None:
    prolog = b"<?xml version='1.0'?>\n<!-- <a/> -->\n<?pi x?>\n"
    assert refusal(prolog + BILLION_LAUGHS.split(b"?>", 1)[1]).reason == "xml-doctype-forbidden"


def test_utf16_doctype_is_refused_after_parsing() -> None:
    data = external_entity("file:///etc/passwd").decode().replace("&x;", "")
    assert refusal(data.encode("utf-16")).reason == "xml-doctype-forbidden"


@pytest.mark.parametrize(
    "data",
    [
        b"<!DOCTYPE a><a/>",
        b'<!DOCTYPE a SYSTEM "http://127.0.0.1:9/a.dtd"><a/>',
        b'<!DOCTYPE a PUBLIC "-//X//Y//EN" "a.dtd"><a/>',
        b"<?xml version='1.0'?>\n<!-- x -->\n<!DOCTYPE a [<!ELEMENT a ANY>]>\n<a/>",
    ],
)
def test_any_doctype_is_refused(data: bytes) -> None:
    assert refusal(data).reason == "xml-doctype-forbidden"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"   \n",
        b"hello world",
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
        b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n",
        b"\x00<a/>",
        codecs.BOM_UTF8 + b"plain text",
    ],
)
def test_garbage_is_not_xml(data: bytes) -> None:
    assert refusal(data).reason == "not-xml"


def test_truncated_xml_is_broken_with_position() -> None:
    error = refusal(b'<?xml version="1.0"?>\n<Invoice>\n  <ID>1</ID>\n  <Note>')
    assert error.reason == "xml-broken"
    assert error.detail.startswith("line 4, column")


@pytest.mark.parametrize(
    "data",
    [
        b"<a>&undefined;</a>",
        b"<a><b></a>",
        b'<?xml version="1.0" encoding="no-such-encoding"?><a/>',
        b"<a>\x00</a>",
    ],
)
def test_malformed_xml_is_broken(data: bytes) -> None:
    assert refusal(data).reason == "xml-broken"


@pytest.mark.parametrize(
    "data",
    [
        b"<a/>",
        b" \r\n\t<a/>",
        codecs.BOM_UTF8 + b"<?xml version='1.0' encoding='UTF-8'?>\n<a/>",
        b"\n\n<?xml version='1.0'?>\n<a/>",
        codecs.BOM_UTF8 + b"\r\n <?xml version='1.0'?><a/>",
        "<?xml version='1.0' encoding='UTF-16'?>\n<a>\u00e9</a>".encode("utf-16"),
        codecs.BOM_UTF16_BE + "  <a/>".encode("utf-16-be"),
    ],
)
def test_well_formed_xml_parses(data: bytes) -> None:
    assert looks_like_xml(data)
    assert parse_xml(data).tag == "a"


def test_comments_and_processing_instructions_are_kept() -> None:
    root = parse_xml(b'<?xml-stylesheet href="x.xsl"?><a><!-- note --><b/></a>')
    assert [child.tag for child in root][1] == "b"
    assert len(root) == 2


def test_a_refusal_leaves_nothing_behind_for_the_next_document() -> None:
    """Each thread keeps one parser; what one document did must not reach the next."""
    good = b'<?xml version="1.0" encoding="UTF-8"?><r><a>x</a></r>'
    for bad in (b"<r><a></r>", b"\xff\xfe<\x00r\x00", BILLION_LAUGHS, external_entity("file:///")):
        with pytest.raises(NotXml):
            parse_xml(bad)
        assert parse_xml(good).findtext("a") == "x"
    assert refusal(b"<r><a></r>").reason == "xml-broken"


def test_threads_parse_side_by_side() -> None:
    docs = [f"<r><n>{i}</n>{'<x/>' * 200}</r>".encode() for i in range(200)]
    with ThreadPoolExecutor(4) as pool:
        read = list(pool.map(lambda doc: parse_xml(doc).findtext("n"), docs))
    assert read == [str(i) for i in range(200)]
