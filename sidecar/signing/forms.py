"""The standardized-form recipe (DSR 3.1, 3.3.2, 3.4.2): one profile, start to finish.

For a profile (e.g. ``fee-note``), given the form's XML and its PDF/A version:

1. fill the UUID with an RFC 4122 version-4 UUID if the profile names where it is
   and it is empty (a caller's own UUID is kept);
2. validate against the profile's XSD — every error with line, column and message;
3. sign the PDF/A (PAdES, at least B as the DSR asks of an embedded PDF/A), the
   profile demanding PDF/A markers;
4. embed it, base64, in the element the profile names;
5. sign the XML (XAdES, B-LT by default) with the same key;
6. validate the result against the XSD again.

The PDF comes either separately (the API's multipart part ``pdf``) or already
embedded in the XML. The engines are passed in: PAdES (:class:`PadesEngine`) and
an XAdES signing function (the daemon binds :func:`sidecar.signing.xades.sign_xml`
to the trust layer).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import threading
import uuid as uuid_module
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from lxml import etree

from ..errors import BadInput
from ..keys import Signer
from .pades import PadesEngine, PadesOptions
from .profiles import Profile, ProfileRegistry, SchemaError, validate_xml
from .report import Indication, Level, SignatureReport, SubIndication
from .xml_safety import UNBOUNDED_NAMESPACES, ParsedXml, parse_xml

__all__ = [
    "FormError",
    "SchemaViolation",
    "SignedForm",
    "XmlSignFunction",
    "check_profile",
    "embedded_pdf",
    "embedded_pdf_note",
    "sign_form",
]

#: ``async (document, signer, level, profile) -> signed document``.
XmlSignFunction = Callable[[bytes, Signer, Level, Profile], Awaitable[bytes]]


class SchemaViolation(BadInput):
    """The XML does not match the profile's XSD (422 ``schema_violation``).

    ``stage``: ``"input"`` (the caller's document) or ``"output"`` (the signed result:
    a profile whose XSD does not admit what the recipe adds).
    """

    def __init__(self, profile: str, errors: list[SchemaError], stage: Literal["input", "output"]):
        super().__init__(f"{len(errors)} XSD violation(s) of profile {profile!r} ({stage})")
        self.profile = profile
        self.errors = errors
        self.stage = stage


class FormError(BadInput):
    """The request does not fit the profile (``reason``: ``pdf_missing``, ``pdf_unexpected``,
    ``element_missing``, ``bad_base64``)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class SignedForm:
    xml: bytes
    uuid: str | None
    uuid_filled: bool
    pdf_level: Level | None
    xml_level: Level | None


def _one(tree: etree._ElementTree, xpath: str, profile: Profile, what: str) -> object:
    found = tree.xpath(xpath, namespaces=dict(profile.namespaces))
    if not isinstance(found, list) or len(found) != 1:
        count = len(found) if isinstance(found, list) else 0
        raise FormError(
            "element_missing",
            f"the profile {profile.name!r} expects exactly one {what} at {xpath} (found {count})",
        )
    return found[0]


def _fill_uuid(tree: etree._ElementTree, profile: Profile) -> tuple[str | None, bool]:
    if profile.uuid_xpath is None:
        return None, False
    node = _one(tree, profile.uuid_xpath, profile, "UUID")
    if isinstance(node, etree._Element):
        current = (node.text or "").strip()
        if not current and profile.fill_uuid:
            node.text = str(uuid_module.uuid4())
            return node.text, True
        return current or None, False
    # An attribute: lxml returns its value as a "smart string" with a parent.
    value = str(node).strip()
    parent = node.getparent()  # type: ignore[attr-defined]
    name = node.attrname  # type: ignore[attr-defined]
    if not value and profile.fill_uuid:
        value = str(uuid_module.uuid4())
        parent.set(name, value)
        return value, True
    return value or None, False


#: A profile's compiled XSD keeps its last validation's error log on itself: two
#: threads validating at once would read each other's errors.
_SCHEMA_LOCK = threading.Lock()


def check_profile(
    parsed: ParsedXml, profile: Profile, stage: Literal["input", "output"] = "input"
) -> None:
    """The document is the profile's: its root element, then its XSD. Wherever a
    profile is named (the form recipe, ``POST /v1/xml/sign?profile=``) this is the check;
    raises :class:`SchemaViolation` with every error. Blocking: call it in a thread."""
    with _SCHEMA_LOCK:
        errors = validate_xml(parsed.tree, profile, parsed.data)
    if errors:
        raise SchemaViolation(profile.name, errors, stage)


def _serialize(parsed: ParsedXml) -> bytes:
    encoding = parsed.tree.docinfo.encoding or "UTF-8"
    return etree.tostring(parsed.tree, xml_declaration=True, encoding=encoding)


def _read_form(
    profile: Profile, xml: bytes, pdf: bytes | None
) -> tuple[ParsedXml, str | None, bool, etree._Element | None, bytes | None]:
    """Blocking (a thread): steps 1-2 — the form parsed, its UUID filled, the PDF
    element found (and the PDF, when embedded), the XSD checked."""
    parsed = parse_xml(xml)
    uuid, filled = _fill_uuid(parsed.tree, profile)

    pdf_element = None
    if profile.pdf_xpath is not None:
        pdf_element = _one(parsed.tree, profile.pdf_xpath, profile, "PDF element")
        if not isinstance(pdf_element, etree._Element):
            raise FormError("element_missing", f"{profile.pdf_xpath} must select an element")
        embedded = "".join((pdf_element.text or "").split())
        if pdf is None:
            if not embedded:
                raise FormError(
                    "pdf_missing",
                    f"the profile {profile.name!r} needs the PDF/A: send it as the part 'pdf' "
                    f"or embed it (base64) at {profile.pdf_xpath}",
                )
            try:
                pdf = base64.b64decode(embedded, validate=True)
            except (binascii.Error, ValueError):
                raise FormError(
                    "bad_base64", f"the PDF embedded at {profile.pdf_xpath} is not valid base64"
                ) from None
    elif pdf is not None:
        raise FormError("pdf_unexpected", f"the profile {profile.name!r} has no PDF")

    # Validate what the caller sent (UUID filled: line numbers are the caller's).
    check_profile(parsed, profile)
    return parsed, uuid, filled, pdf_element, pdf


def _check_output(profile: Profile, document: bytes) -> None:
    """Blocking (a thread): step 6 (on the daemon's own output: the input passed the
    namespace bounds, the signature adds its few)."""
    check_profile(parse_xml(document, namespaces=UNBOUNDED_NAMESPACES), profile, "output")


async def sign_form(
    profile: Profile,
    xml: bytes,
    pdf: bytes | None,
    signer: Signer,
    *,
    pades: PadesEngine,
    sign_xml: XmlSignFunction | None,
) -> SignedForm:
    """Run the recipe; raises :class:`SchemaViolation`, :class:`FormError`, and the
    engines' errors (XmlInputError, PdfRefused, PadesError, UpstreamFailure, KeyLocked...).

    Parsing, XSD validation and serialising (a form may be tens of MB) run in threads,
    never on the event loop; the document's own bounds (size, depth, namespaces) bound
    what they cost."""
    parsed, uuid, filled, pdf_element, pdf = await asyncio.to_thread(_read_form, profile, xml, pdf)

    pdf_level = None
    if pdf_element is not None and pdf is not None:
        signed_pdf = await pades.sign(
            pdf,
            signer,
            PadesOptions(level=profile.pdf_level, require_pdfa=profile.require_pdfa),
        )
        pdf_element.text = base64.b64encode(signed_pdf.data).decode("ascii")
        pdf_level = signed_pdf.level

    document = await asyncio.to_thread(_serialize, parsed)
    if profile.xml_level is not None:
        if sign_xml is None:
            raise FormError("xml_signing_unavailable", "no XAdES engine is configured")
        document = await sign_xml(document, signer, profile.xml_level, profile)

    await asyncio.to_thread(_check_output, profile, document)
    return SignedForm(document, uuid, filled, pdf_level, profile.xml_level)


def embedded_pdf(
    tree: etree._ElementTree, registry: ProfileRegistry
) -> tuple[Profile, bytes] | None:
    """The PDF embedded in a form, found through the profile whose root matches.

    For ``POST /v1/verify`` of a form: the XML signature and the embedded PDF's are
    both reported. ``None`` when no profile with a PDF matches or the element is empty;
    :class:`FormError` (``bad_base64``) when it does not decode.
    """
    root = tree.getroot().tag
    for profile in registry:
        if profile.root != root or profile.pdf_xpath is None:
            continue
        found = tree.xpath(profile.pdf_xpath, namespaces=dict(profile.namespaces))
        if (
            not isinstance(found, list)
            or len(found) != 1
            or not isinstance(found[0], etree._Element)
        ):
            continue
        text = "".join((found[0].text or "").split())
        if not text:
            return None
        try:
            return profile, base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise FormError(
                "bad_base64", f"the PDF at {profile.pdf_xpath} is not valid base64"
            ) from None
    return None


def embedded_pdf_note(report: SignatureReport, profile: Profile) -> str | None:
    """Why an embedded PDF's signature that is not TOTAL_PASSED is nonetheless what the
    form asks for, or None when it is not.

    The DSR asks only PAdES-B of a PDF/A embedded in a signed XML: the XML's XAdES
    signature covers the PDF's bytes and carries the timestamp and the validation data.
    Such a PDF signature, intact and covering the whole file, is INDETERMINATE/TRY_LATER
    for one reason only — it carries no revocation data — and that is by design, as long
    as the profile does not itself ask for B-LT or more.
    """
    if report.indication is not Indication.INDETERMINATE:
        return None
    if report.sub_indication is not SubIndication.TRY_LATER:
        return None
    if profile.pdf_level.at_least(Level.B_LT) or not report.level.at_least(profile.pdf_level):
        return None
    if report.coverage != "entire_file":
        return None
    return (
        f"PAdES-{profile.pdf_level.value.removeprefix('B-')} by design: the DSR asks only "
        "PAdES-B of a PDF embedded in a signed XML; the XML's XAdES signature covers it "
        "and carries the timestamp and validation data, so the PDF signature's own "
        "INDETERMINATE/TRY_LATER (no revocation data in the PDF) is expected"
    )
