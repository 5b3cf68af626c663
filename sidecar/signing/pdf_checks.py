"""What sidecar checks of a PDF before and after signing it: guards and PDF/A markers.

Two concerns:

- **Guards against bad input.** A PDF from a caller is parsed first in a worker
  process with a memory ceiling and a deadline (:class:`PdfInspector`), so that a
  file built to exhaust the parser (an xref with millions of entries, a loop between
  revisions, deep nesting) costs a bounded amount and is answered with a clear
  :class:`PdfRefused` — ``malformed_pdf`` (not a PDF, truncated, broken xref)
  or ``unsupported_pdf`` (encrypted, too many objects, too costly to read).
- **PDF/A markers** (ISO 19005-2/3; veraPDF is not available, so this is what can
  be checked without it): the XMP ``pdfaid`` identification, an OutputIntent
  ``GTS_PDFA1`` with a destination profile, Info entries that agree with their XMP
  equivalents (6.6.3), no encryption. :func:`pdfa_problems` lists what is wrong
  with one document and :func:`pdfa_regressions` what signing changed.
"""

from __future__ import annotations

import functools
import io
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, TypeVar

from lxml import etree
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.reader import PdfFileReader

from .._hooks.pyhanko_hooks import install_fast_hex_strings
from ..errors import BadInput
from .report import subject_text
from .workers import WorkerLost, WorkerPool

# A signed PDF's /Contents is read here (and in every worker, which imports this
# module) in one call, not one pyHanko call per hex digit.
install_fast_hex_strings()

__all__ = [
    "PdfFacts",
    "PdfInspector",
    "PdfLimits",
    "PdfRefused",
    "form_fields",
    "inspect_pdf",
    "inspect_reader",
    "inspect_update",
    "pdfa_problems",
    "pdfa_regressions",
    "read_pdf",
    "signer_name",
]

_NS = {
    "x": "adobe:ns:meta/",
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "pdfaid": "http://www.aiim.org/pdfa/ns/id/",
    "dc": "http://purl.org/dc/elements/1.1/",
    "xmp": "http://ns.adobe.com/xap/1.0/",
    "pdf": "http://ns.adobe.com/pdf/1.3/",
}
_RDF = f"{{{_NS['rdf']}}}"
T = TypeVar("T")

#: Info key → (XMP property, kind), per ISO 19005-2 6.6.3 / XMP part 2.
_INFO_XMP = {
    "/Title": ("dc:title", "alt"),
    "/Author": ("dc:creator", "seq"),
    "/Subject": ("dc:description", "alt"),
    "/Keywords": ("pdf:Keywords", "text"),
    "/Creator": ("xmp:CreatorTool", "text"),
    "/Producer": ("pdf:Producer", "text"),
    "/CreationDate": ("xmp:CreateDate", "date"),
    "/ModDate": ("xmp:ModifyDate", "date"),
}


class PdfRefused(BadInput):
    """A PDF sidecar will not process; ``code`` says why: ``malformed_pdf`` (it cannot
    be read), ``unsupported_pdf`` (read, but not acceptable), ``pdf_certified`` or
    ``pdf_locked`` (an earlier signature forbids a new one)."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail

    def __reduce__(self) -> tuple[type[PdfRefused], tuple[str, str]]:
        # Raised in a worker process: it must survive the trip back.
        return (PdfRefused, (self.code, self.detail))


def _malformed(detail: str) -> PdfRefused:
    return PdfRefused("malformed_pdf", detail)


def _unsupported(detail: str) -> PdfRefused:
    return PdfRefused("unsupported_pdf", detail)


@dataclass(frozen=True)
class PdfLimits:
    """Bounds on what reading one caller's PDF may cost."""

    #: Objects (xref entries, trailer /Size) a document may declare.
    max_objects: int = 200_000
    #: Seconds the worker may spend on one document.
    timeout: float = 10.0
    #: Address-space ceiling of a worker process, bytes.
    worker_memory: int = 1024**3
    #: Worker processes (each parses one document at a time).
    workers: int = 2
    #: Seconds the verification of one document's signatures may take; what is not
    #: checked by then is reported INDETERMINATE.
    verify_timeout: float = 30.0
    #: Seconds without a document after which the workers end (0: never).
    idle_exit: float = 0.0


@dataclass(frozen=True)
class PdfFacts:
    """What :func:`inspect_pdf` found (plain values: it crosses a process boundary)."""

    size: int
    header_version: str
    #: The catalog's /Version, if any (it overrides the header when higher).
    catalog_version: str | None
    encrypted: bool
    objects: int
    revisions: int
    signature_fields: int
    pdfaid_part: str | None = None
    pdfaid_conformance: str | None = None
    #: (subtype /S, has /DestOutputProfile) of each OutputIntent.
    output_intents: tuple[tuple[str, bool], ...] = ()
    info: dict[str, str] = field(default_factory=dict)
    xmp: dict[str, str] = field(default_factory=dict)
    #: Info entries whose XMP equivalent is missing or differs.
    info_xmp_mismatches: tuple[str, ...] = ()
    xmp_error: str | None = None
    #: Fully qualified names of the form's fields (of every type), for a new field's name.
    field_names: tuple[str, ...] = ()
    #: (name, ``/Sig`` or ``/DocTimeStamp``) of each filled signature field.
    signatures: tuple[tuple[str, str], ...] = ()
    #: The certification signature's DocMDP permission (1, 2 or 3) and its signer, if any.
    certification: tuple[int, str | None] | None = None
    #: (field name, what locks, signer) of each earlier signature that forbids any
    #: further change: a field lock ``/Action /All``, or ``/P 1`` (FieldMDP or /Lock).
    locks: tuple[tuple[str, str, str | None], ...] = ()

    @property
    def version(self) -> str:
        """The effective PDF version (header, or the catalog's when higher)."""
        if self.catalog_version and _version_key(self.catalog_version) > _version_key(
            self.header_version
        ):
            return self.catalog_version
        return self.header_version

    @property
    def is_pdfa(self) -> bool:
        return self.pdfaid_part is not None

    @property
    def pdfa(self) -> str | None:
        """``"2B"``-style PDF/A claim, if any."""
        if self.pdfaid_part is None:
            return None
        return f"{self.pdfaid_part}{(self.pdfaid_conformance or '').upper()}"


def _version_key(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in version.split("."))
    except ValueError:
        return (0,)


# -- quick checks (in process, no parsing) ----------------------------------------------

_HEADER = re.compile(rb"%PDF-(\d\.\d)")
# No leading ``\b``: a pattern that starts with a literal is searched for that literal
# (memchr-fast), one with ``\b`` is tried at every byte (~20x slower on 100 KB); the
# word boundary is checked on each match instead (:func:`_declared_subsections`).
_XREF_SUBSECTION = re.compile(rb"xref\s+\d+\s+(\d+)")
_WORD_BYTES = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
_SIZE = re.compile(rb"/Size\s+(\d{1,20})")


def quick_guard(data: bytes, limits: PdfLimits) -> None:
    """Refuse what can be refused without parsing: not a PDF, cut off, oversized tables."""
    if not data:
        raise _malformed("the body is empty, not a PDF")
    # ISO 32000 wants the header at byte 0; readers accept it in the first 1024 bytes.
    if _HEADER.search(data[:1024]) is None:
        raise _malformed("not a PDF: no %PDF- header")
    if b"%%EOF" not in data[-2048:]:
        raise _malformed("the PDF is truncated: no %%EOF marker at its end")
    declared = _declared_subsections(data)
    sizes = [int(m) for m in _SIZE.findall(data[-65536:])]
    biggest = max(declared + sizes, default=0)
    if biggest > limits.max_objects:
        raise _unsupported(
            f"the PDF declares {biggest} objects; at most {limits.max_objects} are accepted"
        )


def _declared_subsections(data: bytes) -> list[int]:
    """The entry counts of the xref subsections *data* declares (``xref <first> <count>``
    where ``xref`` starts a word, as ``\\bxref`` would match)."""
    return [
        int(match.group(1))
        for match in _XREF_SUBSECTION.finditer(data)
        if match.start() == 0 or data[match.start() - 1] not in _WORD_BYTES
    ]


# -- inspection (runs in a worker) --------------------------------------------------


def inspect_pdf(data: bytes, max_objects: int = PdfLimits.max_objects) -> PdfFacts:
    """Parse *data* with pyHanko and collect :class:`PdfFacts`; raise :class:`PdfRefused`.

    Blocking; meant for :class:`PdfInspector`'s workers (or in process for a PDF
    sidecar wrote itself).
    """
    return inspect_reader(read_pdf(data), data, max_objects)


def read_pdf(data: bytes) -> PdfFileReader:
    """*data* opened by pyHanko's reader (header, xref, trailer), or :class:`PdfRefused`:
    not a PDF, unreadable, encrypted. The reader can then be inspected
    (:func:`inspect_reader`) and written on (an incremental writer over it), so that
    the document is read, and each object resolved, once."""
    from pyhanko.pdf_utils import misc

    if _HEADER.search(data[:1024]) is None:
        raise _malformed("not a PDF: no %PDF- header")
    try:
        reader = PdfFileReader(io.BytesIO(data), strict=False)
    except misc.PdfReadError as exc:
        raise _malformed(f"the PDF cannot be read: {_short(exc)}") from None
    except (ValueError, KeyError, TypeError, IndexError, RecursionError) as exc:
        raise _malformed(f"the PDF cannot be read: {type(exc).__name__}") from None
    try:
        encrypted = "/Encrypt" in reader.trailer or reader.encrypted
    except (misc.PdfError, ValueError, KeyError, TypeError, AttributeError) as exc:
        # An /Encrypt that is not a dictionary, or names no known security handler.
        raise _unsupported(f"the PDF's /Encrypt is not usable ({_short(exc)})") from None
    if encrypted:
        raise _unsupported("the PDF is encrypted; PDF/A forbids it and sidecar signs none")
    return reader


def inspect_reader(reader: PdfFileReader, data: bytes, max_objects: int) -> PdfFacts:
    """:class:`PdfFacts` of the document *reader* (:func:`read_pdf`) read from *data*."""
    from pyhanko.pdf_utils import misc

    header = _HEADER.search(data[:1024])
    assert header is not None  # read_pdf refused it otherwise
    try:
        size = int(reader.trailer["/Size"])
        if size > max_objects:
            raise _unsupported(f"the PDF declares {size} objects; at most {max_objects}")
        revisions = reader.xrefs.total_revisions
        objects = sum(
            len(list(reader.xrefs.explicit_refs_in_revision(r))) for r in range(revisions)
        )
        if objects > max_objects:
            raise _unsupported(f"the PDF has {objects} objects; at most {max_objects}")
        return _document_facts(
            reader.root, reader.trailer, len(data), header.group(1).decode(), objects, revisions
        )
    except PdfRefused:
        raise
    except misc.PdfError as exc:
        raise _malformed(f"the PDF is damaged: {_short(exc)}") from None
    except (ValueError, KeyError, TypeError, IndexError, AttributeError, RecursionError) as exc:
        raise _malformed(f"the PDF is damaged ({type(exc).__name__})") from None


def inspect_update(
    before: PdfFacts, writer: IncrementalPdfFileWriter, size: int, max_objects: int
) -> PdfFacts:
    """:class:`PdfFacts` of the document *writer* wrote (*size* bytes): its input, whose
    facts are *before*, and the one revision the writer added — without reading the
    output again.

    The writer's view is the written document: the objects of the new revision (its
    ``objects``) are either new or the very objects its reader resolved, changed in
    place (pyHanko's ``mark_update``), so the catalog, the form, the OutputIntents,
    the Info and the XMP are read as they were written. Counts come from the input's
    and the new revision's. :class:`PdfRefused` (unsupported) past *max_objects*, as a
    reading of the output would say; a fault of the writer otherwise surfaces as
    pyHanko's own error.
    """
    objects = before.objects + len(writer.objects)
    if objects > max_objects:
        raise _unsupported(f"the PDF has {objects} objects; at most {max_objects}")
    return _document_facts(
        writer.root, writer.trailer, size, before.header_version, objects, before.revisions + 1
    )


def _document_facts(
    root: Any, trailer: Any, size: int, header_version: str, objects: int, revisions: int
) -> PdfFacts:
    """The facts of a document whose catalog is *root* and trailer *trailer*."""
    from pyhanko.pdf_utils import generic

    catalog_version = None
    if "/Version" in root:
        catalog_version = str(root["/Version"]).lstrip("/")
    form = _form_facts(root)
    intents: list[tuple[str, bool]] = []
    for intent in _array(root, "/OutputIntents"):
        intent = _resolve(intent)
        if isinstance(intent, generic.DictionaryObject):
            intents.append((str(intent.get("/S", "")), "/DestOutputProfile" in intent))
    info: dict[str, str] = {}
    if "/Info" in trailer:
        info_dict = _resolve(trailer["/Info"])
        if isinstance(info_dict, generic.DictionaryObject):
            for key in _INFO_XMP:
                if key in info_dict:
                    info[key] = str(info_dict[key])
    xmp: dict[str, str] = {}
    xmp_error = None
    if "/Metadata" in root:
        stream = _resolve(root["/Metadata"])
        if isinstance(stream, generic.StreamObject):
            try:
                xmp = _read_xmp(stream.data)
            except ValueError as exc:
                xmp_error = str(exc)
    return PdfFacts(
        size=size,
        header_version=header_version,
        catalog_version=catalog_version,
        encrypted=False,
        objects=objects,
        revisions=revisions,
        signature_fields=form.signature_fields,
        pdfaid_part=xmp.get("pdfaid:part"),
        pdfaid_conformance=xmp.get("pdfaid:conformance"),
        output_intents=tuple(intents),
        info=info,
        xmp=xmp,
        info_xmp_mismatches=tuple(_mismatches(info, xmp)),
        xmp_error=xmp_error,
        field_names=form.names,
        signatures=form.signatures,
        certification=form.certification,
        locks=form.locks,
    )


# -- the form: field names, signatures, certification and locks ----------------------

#: Form fields walked at most (a form is walked once per inspection).
_MAX_FIELDS = 20_000


def _resolve(value: Any) -> Any:
    """The object itself: ISO 32000 lets most values be indirect references."""
    from pyhanko.pdf_utils import generic

    seen = 0
    while isinstance(value, generic.IndirectObject) and seen < 16:
        value = value.get_object()
        seen += 1
    return value


def _array(mapping: Any, key: str) -> list[Any]:
    """``mapping[key]`` as a list, resolved (a missing or non-array value: empty)."""
    from pyhanko.pdf_utils import generic

    if not isinstance(mapping, generic.DictionaryObject) or key not in mapping:
        return []
    value = _resolve(mapping.raw_get(key))
    return list(value) if isinstance(value, generic.ArrayObject) else []


def _dict(mapping: Any, key: str) -> Any:
    from pyhanko.pdf_utils import generic

    if not isinstance(mapping, generic.DictionaryObject) or key not in mapping:
        return None
    value = _resolve(mapping.raw_get(key))
    return value if isinstance(value, generic.DictionaryObject) else None


def signer_name(sig_value: Any) -> str | None:
    """The subject of the certificate that made the CMS in a signature dictionary."""
    from asn1crypto import cms

    try:
        contents = _resolve(sig_value.raw_get("/Contents"))
        info = cms.ContentInfo.load(bytes(contents), strict=False)
        signed = info["content"]
        sid = signed["signer_infos"][0]["sid"]
        certificates = [c.chosen for c in signed["certificates"] if c.name == "certificate"]
        for cert in certificates:
            if sid.name == "issuer_and_serial_number":
                if (
                    cert.issuer == sid.chosen["issuer"]
                    and cert.serial_number == sid.chosen["serial_number"].native
                ):
                    return subject_text(cert)
            elif cert.key_identifier == sid.chosen.native:
                return subject_text(cert)
        return subject_text(certificates[0]) if certificates else None
    except Exception:  # a name for a message only; the CMS is checked elsewhere
        return None


@dataclass(frozen=True)
class _Form:
    names: tuple[str, ...] = ()
    signatures: tuple[tuple[str, str], ...] = ()
    signature_fields: int = 0
    certification: tuple[int, str | None] | None = None
    locks: tuple[tuple[str, str, str | None], ...] = ()


def form_fields(root: Any) -> list[tuple[str, Any, str | None]]:
    """(fully qualified name, field dictionary, inherited /FT) of every field node."""
    from pyhanko.pdf_utils import generic

    found: list[tuple[str, Any, str | None]] = []
    seen: set[generic.Reference] = set()
    stack: list[tuple[Any, str, str | None, int]] = [
        (item, "", None, 0) for item in reversed(_array(_dict(root, "/AcroForm"), "/Fields"))
    ]
    while stack and len(found) < _MAX_FIELDS:
        item, parent, inherited, depth = stack.pop()
        if isinstance(item, generic.IndirectObject):
            if item.reference in seen:
                continue
            seen.add(item.reference)
        node = _resolve(item)
        if not isinstance(node, generic.DictionaryObject) or depth > 32:
            continue
        partial = str(_resolve(node.raw_get("/T"))) if "/T" in node else None
        name = f"{parent}.{partial}" if parent and partial else (partial or parent)
        field_type = str(node["/FT"]) if "/FT" in node else inherited
        if partial is not None:
            found.append((name, node, field_type))
        for kid in reversed(_array(node, "/Kids")):
            stack.append((kid, name, field_type, depth + 1))
    return found


def _docmdp_permission(sig_value: Any) -> int | None:
    for reference in _array(sig_value, "/Reference"):
        reference = _resolve(reference)
        if _resolve(reference.get("/TransformMethod")) == "/DocMDP":
            params = _dict(reference, "/TransformParams")
            return int(params.get("/P", 2)) if params is not None else 2
    return None


def _field_locks(field: Any, sig_value: Any) -> list[str]:
    """What of this signed field's locks forbids any further change."""
    found = []
    lock = _dict(field, "/Lock")
    if lock is not None:
        if lock.get("/Action") == "/All":
            found.append("its field lock (/Lock /Action /All)")
        if int(lock.get("/P", 0)) == 1:
            found.append("its field lock (/Lock /P 1: no changes)")
    for reference in _array(sig_value, "/Reference"):
        reference = _resolve(reference)
        if _resolve(reference.get("/TransformMethod")) != "/FieldMDP":
            continue
        params = _dict(reference, "/TransformParams")
        if params is not None and int(params.get("/P", 0)) == 1:
            found.append("its FieldMDP lock (/P 1: no changes)")
        elif params is not None and params.get("/Action") == "/All" and lock is None:
            found.append("its FieldMDP lock (/Action /All)")
    return found


def _form_facts(root: Any) -> _Form:
    from pyhanko.pdf_utils import generic

    names: list[str] = []
    signatures: list[tuple[str, str]] = []
    locks: list[tuple[str, str, str | None]] = []
    sig_fields = 0
    for name, node, field_type in form_fields(root):
        names.append(name)
        if field_type != "/Sig":
            continue
        sig_fields += 1
        value = _resolve(node.raw_get("/V")) if "/V" in node else None
        if not isinstance(value, generic.DictionaryObject):
            continue
        kind = "/DocTimeStamp" if value.get("/Type") == "/DocTimeStamp" else "/Sig"
        signatures.append((name, kind))
        for what in _field_locks(node, value):
            locks.append((name, what, signer_name(value)))
    certification = None
    certifier = _dict(_dict(root, "/Perms"), "/DocMDP")
    if certifier is not None:
        permission = _docmdp_permission(certifier)
        certification = (permission or 2, signer_name(certifier))
    return _Form(tuple(names), tuple(signatures), sig_fields, certification, tuple(locks))


def _short(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]


def _read_xmp(data: bytes) -> dict[str, str]:
    """The XMP properties sidecar checks (prefixed name → text); ValueError when the
    packet is not well-formed."""
    if len(data) <= _XMP_REMEMBERED:
        return dict(_remembered_xmp(data))
    return dict(_parse_xmp(data))


#: Packets up to this size are remembered (a few, so that a worker holds little).
_XMP_REMEMBERED = 64 * 1024


@functools.lru_cache(maxsize=8)
def _remembered_xmp(data: bytes) -> tuple[tuple[str, str], ...]:
    """:func:`_parse_xmp`, remembered per packet: a signature's checks read the same
    packet before and after the revision it adds (the writer leaves metadata alone),
    and a practice's forms share theirs. Errors are not remembered."""
    return _parse_xmp(data)


def _parse_xmp(data: bytes) -> tuple[tuple[str, str], ...]:
    parser = etree.XMLParser(
        resolve_entities=False, load_dtd=False, no_network=True, huge_tree=False
    )
    try:
        root = etree.fromstring(data.strip(b"\x00 \r\n\t"), parser=parser)
    except etree.XMLSyntaxError as exc:
        raise ValueError(f"the XMP metadata is not well-formed: {exc.msg}") from None
    found: dict[str, str] = {}
    for description in root.iter(f"{_RDF}Description"):
        for name, value in description.attrib.items():  # shorthand properties
            prefixed = _prefixed(name)
            if prefixed:
                found.setdefault(prefixed, value.strip())
        for child in description:
            prefixed = _prefixed(child.tag) if isinstance(child.tag, str) else None
            if not prefixed:
                continue
            items = child.findall(f".//{_RDF}li")
            if items:
                default = [
                    li
                    for li in items
                    if li.get("{http://www.w3.org/XML/1998/namespace}lang") == "x-default"
                ]
                text = (default or items)[0].text or ""
            else:
                text = child.text or ""
            found.setdefault(prefixed, text.strip())
    return tuple(found.items())


def _prefixed(clark: str) -> str | None:
    if not clark.startswith("{"):
        return None
    namespace, _, local = clark[1:].partition("}")
    for prefix, uri in _NS.items():
        if uri == namespace:
            return f"{prefix}:{local}"
    return None


def _pdf_date(value: str) -> datetime | None:
    match = re.match(
        r"^D:(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?([Zz+\-])?(\d{2})?'?(\d{2})?'?$",
        value.strip(),
    )
    if not match:
        return None
    year, month, day, hour, minute, second, sign, tz_h, tz_m = match.groups()
    offset = timedelta(hours=int(tz_h or 0), minutes=int(tz_m or 0))
    if sign == "-":
        offset = -offset
    return datetime(
        int(year), int(month or 1), int(day or 1), int(hour or 0), int(minute or 0),
        int(second or 0), tzinfo=timezone(offset) if sign else UTC,
    )  # fmt: skip


def _xmp_date(value: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _mismatches(info: dict[str, str], xmp: dict[str, str]) -> list[str]:
    problems = []
    for key, value in info.items():
        prop, kind = _INFO_XMP[key]
        if prop not in xmp:
            problems.append(f"Info {key} has no XMP {prop}")
            continue
        if kind == "date":
            same = _pdf_date(value) is not None and _pdf_date(value) == _xmp_date(xmp[prop])
        else:
            same = value.strip() == xmp[prop]
        if not same:
            problems.append(f"Info {key} {value!r} differs from XMP {prop} {xmp[prop]!r}")
    return problems


# -- PDF/A ---------------------------------------------------------------------------


def pdfa_problems(facts: PdfFacts) -> list[str]:
    """Why *facts* do not look like PDF/A (empty: every checked marker is present)."""
    problems = []
    if facts.pdfaid_part is None:
        problems.append(
            facts.xmp_error or "no PDF/A identification (XMP pdfaid:part) in the metadata"
        )
    elif facts.pdfaid_part not in {"1", "2", "3", "4"}:
        problems.append(f"unknown PDF/A part {facts.pdfaid_part!r}")
    if not any(s == "/GTS_PDFA1" and profile for s, profile in facts.output_intents):
        problems.append("no /GTS_PDFA1 OutputIntent with a destination profile")
    problems.extend(facts.info_xmp_mismatches)
    if facts.encrypted:
        problems.append("the PDF is encrypted")
    return problems


def pdfa_regressions(before: PdfFacts, after: PdfFacts) -> list[str]:
    """What signing broke of the PDF/A markers *before* had."""
    problems = []
    if (before.pdfaid_part, before.pdfaid_conformance) != (
        after.pdfaid_part,
        after.pdfaid_conformance,
    ):
        problems.append(f"PDF/A identification changed from {before.pdfa} to {after.pdfa}")
    if before.output_intents != after.output_intents:
        problems.append("the OutputIntents changed")
    if before.version != after.version:
        problems.append(f"the PDF version changed from {before.version} to {after.version}")
    if after.info_xmp_mismatches and not before.info_xmp_mismatches:
        problems.extend(after.info_xmp_mismatches)
    if after.encrypted:
        problems.append("the output is encrypted")
    return problems


# -- the worker pool -------------------------------------------------------------------


def _inspect_in_worker(data: bytes, max_objects: int) -> PdfFacts:
    try:
        return inspect_pdf(data, max_objects)
    except MemoryError:
        raise _unsupported("reading the PDF needs more memory than allowed") from None


class PdfInspector:
    """Runs :func:`inspect_pdf` in worker processes with a memory ceiling and a deadline."""

    def __init__(self, limits: PdfLimits = PdfLimits()) -> None:
        self.limits = limits
        self._workers = WorkerPool(
            "PDF", workers=limits.workers, memory=limits.worker_memory, idle_exit=limits.idle_exit
        )

    async def inspect(self, data: bytes) -> PdfFacts:
        """The facts of a caller's PDF, or :class:`PdfRefused`."""
        quick_guard(data, self.limits)
        try:
            return await self._workers.run(
                _inspect_in_worker, data, self.limits.max_objects, deadline=self.limits.timeout
            )
        except TimeoutError:
            raise _unsupported(
                f"the PDF could not be read within {self.limits.timeout:g} s"
            ) from None
        except WorkerLost:
            raise _unsupported("reading the PDF needs more memory than allowed") from None

    async def run(
        self, fn: Callable[..., T], /, *args: Any, deadline: float, client: str | None = None
    ) -> T:
        """``fn(*args)`` in one of these workers (same memory ceiling), within *deadline*
        seconds, on ``client``'s share: :class:`TimeoutError` or :class:`WorkerLost`
        otherwise."""
        return await self._workers.run(fn, *args, deadline=deadline, client=client)

    @property
    def workers(self) -> WorkerPool:
        """The worker processes, for another engine's steps to share
        (:meth:`WorkerPool.kind`): one pool keeps the process tree small."""
        return self._workers

    def close(self) -> None:
        self._workers.close()
