"""Simple Content-Type and part headers are read without the e-mail package, and read
exactly as it reads them (aiohttp's ``request.content_type``, the e-mail header parser's
``get_param``); anything not simple is left to it."""

from __future__ import annotations

import email.message
import email.parser
import email.policy

import pytest
from aiohttp.helpers import parse_content_type

from sidecar.api.media import _content_type, simple_header, simple_part_headers
from sidecar.api.multipart import _part_headers

CONTENT_TYPES = [
    "application/xml",
    "Application/XML",
    "application/xml; charset=utf-8",
    "application/xml;charset=UTF-8",
    "  text/xml ; charset = utf-8",
    "multipart/form-data; boundary=----WebKitFormBoundary7MA4YWxkTrZu0gW",
    "multipart/form-data; boundary=a3f8b1c2d4e5f60718293a4b5c6d7e8f",
    'multipart/form-data; boundary="simple boundary"',
    'multipart/form-data; boundary="a;b=c"; charset=x',
    "multipart/form-data; BOUNDARY=abc; boundary=def",
    "multipart/form-data; boundary=abc;",
    "multipart/form-data; boundary=",
    'multipart/form-data; boundary="a\\"b"',
    "multipart/form-data; boundary*=utf-8''abc",
    "multipart/form-data (a comment); boundary=abc",
    "multipart/form-data; boundary=abc (comment)",
    "multipart/form-data; boundary==?utf-8?q?x?=",
    "application/pdf",
    "application/timestamp-query",
    "xml",
    "a/b/c",
    "",
    ";",
    "application/xml; charset",
    'text/plain; a=1; b="2 3"; c=x',
]


@pytest.mark.parametrize("raw", CONTENT_TYPES)
def test_the_media_type_is_the_one_aiohttp_reads(raw: str) -> None:
    assert _content_type(raw) == parse_content_type(raw)[0]


@pytest.mark.parametrize("raw", CONTENT_TYPES)
def test_a_simple_header_has_the_parameters_the_email_parser_reads(raw: str) -> None:
    simple = simple_header(raw)
    if simple is None:
        return  # left to the e-mail parser
    message = email.message.Message()
    message["Content-Type"] = raw
    assert simple[1].get("boundary") == message.get_param("boundary")
    assert simple[1] == dict(parse_content_type(raw)[1])


def test_the_usual_headers_are_simple() -> None:
    assert simple_header("multipart/form-data; boundary=abc") == (
        "multipart/form-data",
        {"boundary": "abc"},
    )
    assert simple_header('form-data; name="xml"; filename="a.xml"') == (
        "form-data",
        {"name": "xml", "filename": "a.xml"},
    )
    assert simple_header("a (comment)/b") is None
    assert simple_header("a/b; name*=utf-8''x") is None


PART_HEADS = [
    b'Content-Disposition: form-data; name="xml"\r\nContent-Type: application/xml',
    b'Content-Disposition: form-data; name="pdf"; filename="f.pdf"\r\n'
    b"Content-Type: application/pdf\r\nContent-Transfer-Encoding: BASE64 ",
    b"content-disposition: form-data; name=xml",
    b'Content-Disposition: form-data; name="a"\r\nContent-Disposition: form-data; name="b"',
    b'Content-Disposition: form-data;\r\n name="folded"',
    b"Content-Disposition: form-data; name*=utf-8''%C3%A9",
    b'Content-Disposition: form-data; name="=?utf-8?q?x?="',
    b"Content-Disposition : form-data; name=x",
    b'Content-Disposition: form-data; name="\xc3\xa9"',
    b"Content-Type: application/xml",
    b"Content-Transfer-Encoding: quoted-printable\r\nContent-Disposition: form-data; name=q",
    b"",
    b"X-Other: 1",
]

_PARSER = email.parser.BytesHeaderParser(policy=email.policy.HTTP)


@pytest.mark.parametrize("head", PART_HEADS)
def test_a_parts_name_and_encoding_are_the_email_parsers(head: bytes) -> None:
    headers = _PARSER.parsebytes(head + b"\r\n")
    expected_name = headers.get_param("name", header="content-disposition")
    expected_encoding = str(headers.get("Content-Transfer-Encoding", "")).strip().lower()
    name, encoding = _part_headers(head)
    assert (name, encoding) == (expected_name, expected_encoding)


def test_the_usual_part_headers_are_simple() -> None:
    head = b'Content-Disposition: form-data; name="xml"\r\nContent-Type: application/xml\r\n'
    assert simple_part_headers(head) == {
        "content-disposition": 'form-data; name="xml"',
        "content-type": "application/xml",
    }
    assert simple_part_headers(b"A: 1\r\n b\r\n") is None  # folded
