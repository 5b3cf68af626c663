"""Safe parsing of untrusted XML: no DTD, no entity, bounded size and depth.

Every XML document the daemon receives goes through :func:`parse_xml` first.
Two parsers look at it:

1. expat (``xml.parsers.expat``), which never opens a file or a URL by itself,
   reads the document once: a ``<!DOCTYPE`` stops it at once (before any
   internal subset is processed, so a billion-laughs or an XXE payload is
   never expanded nor fetched). This pass has no per-element Python callback
   (it runs at C speed); only when it, or lxml, refuses the document is it
   run again with them, so that every refusal is reported exactly as expat
   sees it (depth bound, line and column).
2. lxml then builds the tree with entity resolution, DTD loading and network
   access all off; the depth bound is checked on that tree (one compiled
   XPath).

The byte offsets of every element's tags — what lets the XAdES engine insert
a signature without re-serialising (and so reformatting) the caller's
document — are recorded by a second expat pass with callbacks, run only when
:attr:`ParsedXml.spans` is first needed; the document element's offsets, the
common case, are found without it (:meth:`ParsedXml.span_of`).

Namespace declarations are bounded too, in total and in scope at any point (counted
by the first expat pass, with a callback per declaration only): libxml2's inclusive
canonicalisation costs, per element, the square of the namespaces in scope, so a
document declaring 10,000 on its root would keep a worker busy for minutes. Such a
document is refused in milliseconds instead.

Errors are typed: :class:`ForbiddenDtd` (API: 422 ``forbidden_dtd``),
:class:`MalformedXml` with line and column (400 ``malformed_xml``),
:class:`XmlLimitExceeded` (422 ``xml_limits``).
"""

from __future__ import annotations

import codecs
import functools
import re
from dataclasses import dataclass
from xml.parsers import expat

from lxml import etree

from ..errors import BadInput

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_NAMESPACES",
    "DEFAULT_MAX_NAMESPACES_IN_SCOPE",
    "DEFAULT_MAX_SIZE",
    "UNBOUNDED_NAMESPACES",
    "ElementSpan",
    "ForbiddenDtd",
    "MalformedXml",
    "NamespaceBounds",
    "ParsedXml",
    "XmlInputError",
    "XmlLimitExceeded",
    "parse_xml",
]

DEFAULT_MAX_SIZE = 20 * 1024**2
#: Standardized forms nest a dozen levels; anything near this is an attack or a bug.
DEFAULT_MAX_DEPTH = 128
#: Namespace declarations in a whole document. Forms declare a handful; a batch of
#: signed messages a few per signature.
DEFAULT_MAX_NAMESPACES = 1000
#: Namespace declarations in scope at any element. Canonicalising costs each element
#: the square of this (64: ~15 µs an element here, against ~0.5 µs with a form's five).
DEFAULT_MAX_NAMESPACES_IN_SCOPE = 64


class XmlInputError(ValueError, BadInput):
    """Base of the refusals of :func:`parse_xml`."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class ForbiddenDtd(XmlInputError):
    """The document has a DOCTYPE (DTD, entity declarations): refused unread."""


class MalformedXml(XmlInputError):
    """The document is not well-formed XML; ``line``/``column`` are 1-based."""

    def __init__(self, detail: str, *, line: int | None, column: int | None) -> None:
        where = f" (line {line}, column {column})" if line is not None else ""
        super().__init__(detail + where)
        self.line = line
        self.column = column
        self.reason = detail

    def __reduce__(self) -> tuple[object, ...]:
        # Raised in worker processes: it must survive pickling, keyword arguments included.
        return (_malformed, (self.reason, self.line, self.column))


def _malformed(detail: str, line: int | None, column: int | None) -> MalformedXml:
    return MalformedXml(detail, line=line, column=column)


class XmlLimitExceeded(XmlInputError):
    """The document is larger, deeper or declares more namespaces than the bounds allow."""


@dataclass(frozen=True)
class NamespaceBounds:
    """How many namespace declarations a document may have (``None``: no bound)."""

    total: int | None = DEFAULT_MAX_NAMESPACES
    in_scope: int | None = DEFAULT_MAX_NAMESPACES_IN_SCOPE


#: For re-reading a document the daemon made from one that passed the bounds.
UNBOUNDED_NAMESPACES = NamespaceBounds(None, None)


_START_TAG = re.compile(rb"""<[^\s/>]+(?:\s+[^\s=/>]+\s*=\s*(?:"[^"]*"|'[^']*'))*\s*(/?)>""")


@dataclass(frozen=True)
class ElementSpan:
    """Byte offsets of one element's tags in the original document.

    ``start`` is the offset of its ``<``; ``end`` where expat reported its end:
    the ``</`` of its end tag, or just past an empty-element tag (``<a/>``).
    """

    start: int
    end: int

    def start_tag(self, data: bytes) -> tuple[int, bool]:
        """Where the start tag ends (offset past its ``>``) and whether it is ``<a/>``.

        Only for ASCII-compatible encodings (see :attr:`ParsedXml.ascii_compatible`).
        """
        match = _START_TAG.match(data, self.start)
        if match is None:  # pragma: no cover - expat accepted this very tag
            raise ValueError("no start tag at the recorded offset")
        return match.end(), match.group(1) == b"/"


@dataclass(frozen=True)
class ParsedXml:
    """A parsed document and what is needed to edit its bytes in place."""

    data: bytes
    tree: etree._ElementTree
    #: The encoding the bytes are in (Python codec name), from the BOM or the declaration.
    encoding: str
    max_depth: int = DEFAULT_MAX_DEPTH

    @property
    def ascii_compatible(self) -> bool:
        """Whether markup is plain ASCII bytes (UTF-8, ISO-8859-x, windows-125x...)."""
        return "<a b='c'/>".encode(self.encoding, errors="replace") == b"<a b='c'/>"

    @property
    def root(self) -> etree._Element:
        return self.tree.getroot()

    @functools.cached_property
    def spans(self) -> tuple[ElementSpan, ...]:
        """Every element's tag offsets, in document order (the order of ``root.iter()``).

        Computed on first use (an expat pass with a callback per element): they
        describe :attr:`data`, so take them before adding elements to :attr:`tree`.
        """
        spans = _scan(self.data, self.max_depth)
        if sum(1 for _ in self.root.iter(etree.Element)) != len(spans):
            # Both parsers must see the same elements, or offsets would point elsewhere.
            raise MalformedXml("the document parses inconsistently", line=None, column=None)
        return spans

    def span_of(self, element: etree._Element) -> ElementSpan:
        """The byte offsets of ``element`` (which must belong to :attr:`tree`)."""
        root = self.root
        if element is root and "spans" not in self.__dict__:
            span = _root_span(self.data, root) if self.ascii_compatible else None
            if span is not None:
                return span
        for index, candidate in enumerate(root.iter(etree.Element)):
            if candidate is element:
                return self.spans[index]
        raise ValueError("the element is not part of this document")


#: What may precede the document element (no DOCTYPE: refused): a BOM, the XML
#: declaration, comments, processing instructions, white space (XML 1.0, [22]-[27]).
_PROLOG = re.compile(rb"(?:\xef\xbb\xbf)?(?:[ \t\r\n]+|<!--.*?-->|<\?.*?\?>)*", re.DOTALL)
#: The document element's end tag at the very end of the document (white space after).
_LAST_END_TAG = re.compile(rb"</([^\s>]+)[ \t\r\n]*>[ \t\r\n]*\Z")


def _root_span(data: bytes, root: etree._Element) -> ElementSpan | None:
    """The document element's span from its two ends, without a full scan.

    ``None`` (scan instead) unless the document ends with the root's end tag
    (nothing but white space after it: no comment or PI that could hold a ``</``),
    or is an empty-element root.
    """
    start = _PROLOG.match(data).end()  # type: ignore[union-attr] # always matches
    name = (f"{root.prefix}:" if root.prefix else "") + etree.QName(root).localname
    qname = name.encode("utf-8")
    if data[start : start + 1 + len(qname)] != b"<" + qname:
        return None
    tail = data.rstrip(b" \t\r\n")
    if len(root) == 0 and tail.endswith(b"/>"):
        # Possibly <root .../>: let the start tag's own pattern say so.
        end, empty = ElementSpan(start, start).start_tag(data)
        if empty:
            return ElementSpan(start, end) if not data[end:].strip(b" \t\r\n") else None
    at = tail.rfind(b"</")
    match = _LAST_END_TAG.match(data, at) if at > start else None
    if match is None or match.group(1) != qname:
        return None
    return ElementSpan(start, at)


class _StopParsing(Exception):
    pass


_DECLARED_ENCODING = re.compile(rb"""^<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")


def _detect_encoding(data: bytes) -> str:
    """The document's encoding per XML 1.0 appendix F (BOM, then declaration)."""
    if data.startswith(codecs.BOM_UTF8):
        return "utf-8"
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or data[:2] in (
        b"<\x00",
        b"\x00<",
    ):
        return "utf-16"
    match = _DECLARED_ENCODING.match(data[:200])
    if match is None:
        return "utf-8"
    name = match.group(1).decode("ascii")
    try:
        codec = codecs.lookup(name).name
    except LookupError:
        raise MalformedXml(f"unknown encoding {name!r}", line=1, column=1) from None
    if not _expat_reads(name):
        # expat reads UTF-8, UTF-16 and single-byte encodings; UTF-7, UTF-32 and the
        # multi-byte Asian ones it refuses with a bare ValueError.
        raise MalformedXml(
            f"encoding {name!r} is not supported (use UTF-8 or UTF-16)", line=1, column=1
        )
    return codec


@functools.lru_cache(maxsize=64)
def _expat_reads(encoding: str) -> bool:
    parser = expat.ParserCreate()
    try:
        parser.Parse(f'<?xml version="1.0" encoding="{encoding}"?><a/>'.encode("ascii"), True)
    except ValueError:
        return False
    except expat.ExpatError:
        pass  # the encoding is read; a mismatch with the bytes is reported later
    return True


def _check_fast(data: bytes, namespaces: NamespaceBounds) -> None:
    """The expat pass without per-element callbacks: refuse any DOCTYPE, check
    well-formedness, count namespace declarations.

    Raises :class:`ForbiddenDtd` and :class:`XmlLimitExceeded` (namespaces) itself, at
    the first declaration too many; any other refusal is left to :func:`_scan`
    (``_Refused``), which reports it as it always has.
    """
    parser = expat.ParserCreate(namespace_separator=" ")
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    total_bound, scope_bound = namespaces.total, namespaces.in_scope
    declared = in_scope = 0

    def namespace_start(*_: object) -> None:
        nonlocal declared, in_scope
        declared += 1
        in_scope += 1
        if total_bound is not None and declared > total_bound:
            raise XmlLimitExceeded(f"the document declares more than {total_bound} namespaces")
        if scope_bound is not None and in_scope > scope_bound:
            raise XmlLimitExceeded(
                f"the document has more than {scope_bound} namespace declarations in scope "
                f"at one element (line {parser.CurrentLineNumber})"
            )

    def namespace_end(*_: object) -> None:
        nonlocal in_scope
        in_scope -= 1

    if total_bound is not None or scope_bound is not None:
        parser.StartNamespaceDeclHandler = namespace_start
        parser.EndNamespaceDeclHandler = namespace_end

    def doctype(*_: object) -> None:
        raise ForbiddenDtd("DOCTYPE declarations (DTDs, entities) are not accepted")

    def entity(*_: object) -> None:
        raise ForbiddenDtd("entity declarations are not accepted")

    parser.StartDoctypeDeclHandler = doctype
    parser.EntityDeclHandler = entity
    parser.UnparsedEntityDeclHandler = entity
    parser.ExternalEntityRefHandler = lambda *_: 0
    try:
        parser.Parse(data, True)
    except expat.ExpatError:
        raise _Refused from None


class _Refused(Exception):
    """The fast pass refused the document: :func:`_scan` says why."""


@functools.lru_cache(maxsize=16)
def _too_deep(max_depth: int) -> etree.XPath:
    """An element nested ``max_depth + 1`` deep exists (the document element is depth 1)."""
    return etree.XPath("boolean(" + "/*" * (max_depth + 1) + ")")


def _scan(data: bytes, max_depth: int) -> tuple[ElementSpan, ...]:
    """The expat pass: refuse any DOCTYPE, bound the depth, record tag offsets."""
    parser = expat.ParserCreate(namespace_separator=" ")
    # Never hand an external entity to anyone (expat itself never fetches one).
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    starts: list[int] = []
    ends: dict[int, int] = {}
    open_elements: list[int] = []

    def doctype(*_: object) -> None:
        raise ForbiddenDtd("DOCTYPE declarations (DTDs, entities) are not accepted")

    def entity(*_: object) -> None:
        # Unreachable without a DOCTYPE; refuse all the same should expat change.
        raise ForbiddenDtd("entity declarations are not accepted")

    def start(*_: object) -> None:
        if len(open_elements) >= max_depth:
            raise XmlLimitExceeded(f"the document nests deeper than {max_depth} elements")
        open_elements.append(len(starts))
        starts.append(parser.CurrentByteIndex)

    def end(*_: object) -> None:
        ends[open_elements.pop()] = parser.CurrentByteIndex

    parser.StartDoctypeDeclHandler = doctype
    parser.EntityDeclHandler = entity
    parser.UnparsedEntityDeclHandler = entity
    parser.ExternalEntityRefHandler = lambda *_: 0
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    try:
        parser.Parse(data, True)
    except expat.ExpatError as exc:
        message = expat.errors.messages[exc.code] if exc.code else str(exc)
        raise MalformedXml(message, line=exc.lineno, column=exc.offset + 1) from None
    return tuple(ElementSpan(offset, ends[index]) for index, offset in enumerate(starts))


def _lxml_parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False,
        load_dtd=False,
        dtd_validation=False,
        no_network=True,
        huge_tree=False,
        remove_blank_text=False,
        remove_comments=False,
        remove_pis=False,
        strip_cdata=False,
        collect_ids=False,
    )


def parse_xml(
    data: bytes,
    *,
    max_size: int = DEFAULT_MAX_SIZE,
    max_depth: int = DEFAULT_MAX_DEPTH,
    namespaces: NamespaceBounds = NamespaceBounds(),
) -> ParsedXml:
    """Parse untrusted ``data``; raise an :class:`XmlInputError` subclass when refused."""
    if len(data) > max_size:
        raise XmlLimitExceeded(f"the document is over {max_size} bytes")
    if not data.strip():
        raise MalformedXml("the document is empty", line=1, column=1)
    encoding = _detect_encoding(data)
    try:
        _check_fast(data, namespaces)
    except _Refused:
        _scan(data, max_depth)  # raises the precise refusal
        raise MalformedXml("not well-formed", line=None, column=None) from None
    try:
        tree = etree.fromstring(data, parser=_lxml_parser()).getroottree()
    except etree.XMLSyntaxError as exc:
        # A depth beyond lxml's own bound (256) is ours to report.
        _scan(data, max_depth)
        line, column = exc.position if exc.position else (None, None)
        raise MalformedXml(exc.msg or "not well-formed", line=line, column=column) from None
    docinfo = tree.docinfo
    if docinfo.internalDTD is not None or docinfo.externalDTD is not None or docinfo.doctype:
        raise ForbiddenDtd("DOCTYPE declarations (DTDs, entities) are not accepted")
    if _too_deep(max_depth)(tree):
        raise XmlLimitExceeded(f"the document nests deeper than {max_depth} elements")
    return ParsedXml(data, tree, encoding, max_depth)
