"""What the CNS forwarding needs to know about an XML message, without signing anything.

- :func:`parse_message`: parse untrusted XML safely (no DTD, no entity expansion, no
  network); not well-formed → :class:`MalformedXml` (with line and column), any DTD →
  :class:`ForbiddenDtd`.
- :func:`message_uuid`: the message's UUID (DSR 3.6.2: every XML message carries an
  RFC 4122 section 4.4 UUID). Until the profiles say where it is, the rule is: the
  configured XPath (``cns.uuid_xpath``) if any; else the first element whose local name
  is ``UUID`` or ``MessageId`` (any namespace, outside ``ds:Signature``); else a
  ``uuid`` or ``Id`` attribute of the root element. It must be a version-4, RFC 4122
  variant UUID; it is returned in lower-case canonical form.
- :func:`is_signed` / :func:`signature_level`: whether the document carries a
  ``ds:Signature``, and which XAdES level its unsigned properties reach (a structural
  reading, not a validation: the XAdES engine's verifier judges the signature).
"""

from __future__ import annotations

import uuid as uuid_module

from lxml import etree

from ..errors import BadInput
from .transport import safe_parser

__all__ = [
    "DS_NS",
    "XADES_NS",
    "DocumentError",
    "ForbiddenDtd",
    "InvalidUuid",
    "MalformedXml",
    "is_signed",
    "message_uuid",
    "parse_message",
    "signature_level",
]

DS_NS = "http://www.w3.org/2000/09/xmldsig#"
XADES_NS = "http://uri.etsi.org/01903/v1.3.2#"
XADES141_NS = "http://uri.etsi.org/01903/v1.4.1#"


class DocumentError(BadInput):
    """The message cannot be forwarded as it is."""

    def __init__(self, detail: str, *, line: int | None = None, column: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.line = line
        self.column = column


class MalformedXml(DocumentError):
    """Not well-formed XML."""


class ForbiddenDtd(DocumentError):
    """A DOCTYPE (and so possibly entities) in a message: refused outright."""


class InvalidUuid(DocumentError):
    """No UUID where it should be, or not an RFC 4122 version-4 UUID."""


def parse_message(data: bytes) -> etree._Element:
    """The root element of *data*, parsed with no DTD, entities or network."""
    try:
        root = etree.fromstring(data, parser=safe_parser())
    except etree.XMLSyntaxError as exc:
        line, column = exc.position if exc.position else (None, None)
        raise MalformedXml(f"not well-formed XML: {exc.msg}", line=line, column=column) from None
    if root is None:
        raise MalformedXml("empty document")
    info = root.getroottree().docinfo
    if info.doctype or info.internalDTD is not None or info.externalDTD is not None:
        raise ForbiddenDtd("DOCTYPE declarations (DTDs, entities) are not accepted")
    return root


_DEFAULT_UUID_XPATH = (
    "//*[(local-name()='UUID' or local-name()='MessageId') "
    f"and not(ancestor::*[local-name()='Signature' and namespace-uri()='{DS_NS}'])]"
)


def message_uuid(root: etree._Element, xpath: str = "") -> str:
    """The message's UUID (see the module docstring for where it is looked for)."""
    value: str | None = None
    if xpath:
        try:
            found = root.xpath(xpath)
        except etree.XPathError as exc:
            raise InvalidUuid(f"cns.uuid_xpath cannot be evaluated: {exc}") from None
        value = _first_text(found)
    else:
        value = _first_text(root.xpath(_DEFAULT_UUID_XPATH))
        if value is None:
            value = root.get("uuid") or root.get("Id")
    if not value:
        raise InvalidUuid("the message carries no UUID (element UUID or MessageId)")
    value = value.strip()
    try:
        parsed = uuid_module.UUID(value)
    except ValueError:
        raise InvalidUuid(f"{value[:64]!r} is not a UUID") from None
    if parsed.variant != uuid_module.RFC_4122 or parsed.version != 4:
        raise InvalidUuid(f"{value} is not an RFC 4122 version-4 (random) UUID")
    return str(parsed)


def _first_text(found: object) -> str | None:
    if isinstance(found, list) and found:
        first = found[0]
        if isinstance(first, etree._Element):
            return first.text or ""
        return str(first)
    if isinstance(found, str):
        return found
    return None


def is_signed(root: etree._Element) -> bool:
    return root.find(f".//{{{DS_NS}}}Signature") is not None


def signature_level(root: etree._Element) -> str:
    """``""`` (unsigned), ``B-B``, ``B-T``, ``B-LT`` or ``B-LTA``, from the structure."""
    if not is_signed(root):
        return ""

    def has(ns: str, name: str) -> bool:
        return root.find(f".//{{{ns}}}{name}") is not None

    if has(XADES141_NS, "ArchiveTimeStamp") or has(XADES_NS, "ArchiveTimeStamp"):
        return "B-LTA"
    if not has(XADES_NS, "SignatureTimeStamp"):
        return "B-B"
    if has(XADES_NS, "CertificateValues") and has(XADES_NS, "RevocationValues"):
        return "B-LT"
    return "B-T"
