"""The document work of a PAdES signature, run in a worker process (no key, no socket).

A PAdES signature is made in steps so that nothing CPU-bound runs on the daemon's
event loop and no key material leaves the daemon (see :mod:`.pades`):

1. :func:`prepare` (worker): the caller's PDF read and checked (:func:`check_input`:
   its facts, what the profile demands, earlier signatures' locks); the incremental
   update with the signature field, its appearance, the DSS (B-LT and up: in the
   signature's own revision, so that the signature covers it) and a ``/Contents``
   placeholder, written out; the ``/ByteRange`` digest; the CMS signed attributes
   over it — pyHanko's interrupted signing (``PdfSigner.async_digest_doc_for_signing``)
   with a stand-in for the key that only knows its certificate; and the written
   document's facts (the signature's contents change none of them).
2. The daemon: the key signs the signed attributes (its own executor), the TSA
   stamps the signature value.
3. :func:`assemble` (a thread of the daemon: small asn1crypto work, and the document
   need not cross to a process again): the CMS around that signature value and the
   timestamp token, written into the placeholder.
4. Only when more follows — B-LTA, or a TSA other than the expected one answered —
   :func:`extend` (worker): a revision after the signature with that TSA's DSS
   entries and/or a document timestamp's placeholder and its digest; the daemon asks
   the TSA and fills it in (:func:`fill`).

The DSS's contents are the daemon's own — its trust layer's paths and revocation
cache, checked when fetched: nothing is validated again here.

Arguments and results are plain frozen dataclasses of bytes: they cross the
process boundary by pickling. Every revision is written by
:class:`PreservingWriter`: metadata untouched and, for a PDF/A, the version kept.
"""

from __future__ import annotations

import asyncio
import io
import threading
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from asn1crypto import cms, crl, ocsp, tsp, x509
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.pdf_utils.text import TextBoxStyle
from pyhanko.pdf_utils.writer import DeveloperExtension
from pyhanko.sign import attributes, fields, signers
from pyhanko.sign.general import as_signing_certificate_v2
from pyhanko.sign.signers import constants
from pyhanko.sign.signers.cms_embedder import PdfCMSEmbedder, SigIOSetup, SigObjSetup
from pyhanko.sign.signers.pdf_byterange import DocumentTimestamp, PreparedByteRangeDigest
from pyhanko.sign.signers.pdf_cms import ExternalSigner, PdfCMSSignedAttributes
from pyhanko.sign.validation import DocumentSecurityStore
from pyhanko.stamp import TextStampStyle
from pyhanko_certvalidator.registry import SimpleCertificateStore

from .._hooks.asn1crypto_hooks import as_definite_signer_info
from .._hooks.pyhanko_hooks import AttrProviderRewritingSigner, MetadataKeepingWriter
from ..errors import InternalError
from .pdf_checks import (
    PdfFacts,
    PdfRefused,
    inspect_reader,
    inspect_update,
    pdfa_problems,
    read_pdf,
)
from .pdf_font import EmbeddedTrueTypeFactory

__all__ = [
    "Dss",
    "Extend",
    "Extended",
    "NoRoom",
    "Prepare",
    "Prepared",
    "PreservingWriter",
    "Stamp",
    "assemble",
    "check_input",
    "extend",
    "fill",
    "new_field_name",
    "prepare",
    "refuse_if_locked",
    "write_dss",
]

T = TypeVar("T")


class NoRoom(InternalError):
    """The CMS is larger than the room reserved for it: prepare again with ``needed``
    bytes (the hex length) or more. Caught by the engine, which signs again; one that
    escaped would be a fault of ours, hence the family."""

    def __init__(self, needed: int) -> None:
        super().__init__(needed)
        self.needed = needed


@dataclass(frozen=True)
class Stamp:
    """A visible appearance: 0-based page (negative from the end), box, text."""

    page: int
    box: tuple[int, int, int, int]
    text: str


@dataclass(frozen=True)
class Dss:
    """Validation data for the DSS, DER each: certificates, OCSP responses, CRLs."""

    certificates: tuple[bytes, ...]
    ocsp_responses: tuple[bytes, ...]
    crls: tuple[bytes, ...]


@dataclass(frozen=True)
class Prepare:
    data: bytes
    #: The signer's certificate and its chain, DER.
    certificate: bytes
    chain: tuple[bytes, ...]
    #: ``None``: ``Signature<n>``, the next free name (:func:`new_field_name`).
    field_name: str | None
    md_algorithm: str
    reason: str | None
    location: str | None
    contact_info: str | None
    stamp: Stamp | None
    #: Hex characters reserved for the CMS.
    reserved: int
    #: B-LT and up: the DSS, written in the signature's revision (signed with it).
    dss: Dss | None
    #: Refuse an input whose PDF/A markers are not all there.
    require_pdfa: bool
    #: :class:`~.pdf_checks.PdfLimits` ``max_objects``.
    max_objects: int


@dataclass(frozen=True)
class Prepared:
    #: The caller's document's facts, and the signed one's.
    before: PdfFacts
    after: PdfFacts
    field_name: str
    #: A PDF/A keeps its version in every revision written.
    keep_version: bool
    #: The document with the signature revision, ``/Contents`` still zeros.
    data: bytes
    region: tuple[int, int]
    #: DER ``SignedAttributes`` (a SET OF): what the key signs.
    signed_attrs: bytes


@dataclass(frozen=True)
class Extend:
    #: The signed document.
    data: bytes
    keep_version: bool
    #: The DSS entries of a TSA other than the one the signature's revision holds.
    dss: Dss | None
    #: Hex characters reserved for a document timestamp (B-LTA), else ``None``.
    timestamp_reserved: int | None
    max_objects: int


@dataclass(frozen=True)
class Extended:
    data: bytes
    #: B-LTA: the document timestamp's placeholder and the digest to stamp.
    timestamp_region: tuple[int, int] | None = None
    timestamp_digest: bytes | None = None
    #: The document's facts (with a document timestamp: once its token is filled in).
    facts: PdfFacts | None = None


class PreservingWriter(MetadataKeepingWriter):
    """An incremental writer that leaves metadata alone and, for PDF/A, the version."""

    def __init__(
        self, stream: io.BytesIO, *, keep_version: bool, reader: PdfFileReader | None = None
    ) -> None:
        self._keep_version = keep_version
        super().__init__(stream, reader=reader, strict=False)

    def _frozen_version(self) -> tuple[int, int]:
        version = self.prev.input_version
        try:
            from pyhanko.pdf_utils.reader import parse_catalog_version

            catalog = parse_catalog_version(self.prev.root.get("/Version"))
            if catalog is not None and catalog > version:
                version = catalog
        except (KeyError, ValueError, TypeError):
            pass
        return version

    def ensure_output_version(self, version: tuple[int, int]) -> None:
        if getattr(self, "_keep_version", False) and version > self._frozen_version():
            return
        super().ensure_output_version(version)

    def register_extension(self, ext: DeveloperExtension) -> None:
        if self._keep_version:
            base = tuple(int(p) for p in str(ext.base_version).lstrip("/").split("."))
            if base > self._frozen_version():
                # e.g. ISO 32002 (ECDSA in PDF 2.0): declaring it would claim PDF 2.0.
                return
        super().register_extension(ext)


class _FixedAttribute(attributes.CMSAttributeProvider):
    """A signed attribute whose value is known in advance."""

    def __init__(self, attribute_type: str, value: object) -> None:
        self.attribute_type = attribute_type
        self._value = value

    async def build_attr_value(self, dry_run: bool = False) -> object:
        return self._value


#: Per signer certificate (its DER): the signing-certificate-v2 value, encoded once.
_ESS: dict[bytes, tsp.SigningCertificateV2] = {}
#: Per DER: the parsed certificate (its encoding kept: parsed once per worker).
_CERTS: dict[bytes, x509.Certificate] = {}


def _certificate(der: bytes) -> x509.Certificate:
    cert = _CERTS.get(der)
    if cert is None:
        if len(_CERTS) > 256:
            _CERTS.clear()
        cert = _CERTS[der] = x509.Certificate.load(der)
    return cert


class _Drafter(AttrProviderRewritingSigner, ExternalSigner):
    """Stands in for the key in the worker: knows its certificate, and the signature
    value once the daemon's key made it (``signature``); adds the timestamp token.

    asn1crypto re-encodes a value built from Python values on every ``dump()``, its
    whole subtree included, and pyHanko dumps the signed attributes and the
    SignerInfo several times: each part is read back from its own encoding once
    built, and the signing-certificate-v2 value is built once per certificate.
    """

    def __init__(
        self,
        certificate: bytes,
        chain: tuple[bytes, ...],
        signature: bytes | None = None,
        token: bytes | None = None,
    ) -> None:
        self._certificate_der = certificate
        self._token = None if token is None else cms.ContentInfo.load(token)
        super().__init__(
            signing_cert=_certificate(certificate),
            cert_registry=SimpleCertificateStore.from_certs([_certificate(c) for c in chain]),
            signature_value=signature if signature is not None else 512,
            embed_roots=True,
        )

    def rewrite_provider(
        self, provider: attributes.CMSAttributeProvider
    ) -> attributes.CMSAttributeProvider:
        if not isinstance(provider, attributes.SigningCertificateV2Provider):
            return provider
        ess = _ESS.get(self._certificate_der)
        if ess is None:
            built = as_signing_certificate_v2(provider.signing_cert)
            ess = _ESS[self._certificate_der] = tsp.SigningCertificateV2.load(built.dump())
        return _FixedAttribute("signing_certificate_v2", ess)

    async def signed_attrs(self, *args: Any, **kwargs: Any) -> cms.CMSAttributes:
        attrs = await super().signed_attrs(*args, **kwargs)
        return cms.CMSAttributes.load(attrs.dump())

    async def unsigned_attrs(self, *args: Any, **kwargs: Any) -> cms.CMSAttributes | None:
        if self._token is None:
            return None
        return cms.CMSAttributes(
            [cms.CMSAttribute({"type": "signature_time_stamp_token", "values": [self._token]})]
        )

    def signer_info(
        self, digest_algorithm: str, signed_attrs: cms.CMSAttributes, signature: bytes
    ) -> cms.SignerInfo:
        return as_definite_signer_info(
            super().signer_info(digest_algorithm, signed_attrs, signature)
        )


#: An event loop per thread (a worker has one), for pyHanko's async API: nothing it
#: awaits here does I/O, so the loop only drives the coroutines.
_LOOPS = threading.local()


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    loop: asyncio.AbstractEventLoop | None = getattr(_LOOPS, "loop", None)
    if loop is None:
        loop = _LOOPS.loop = asyncio.new_event_loop()
    return loop.run_until_complete(coroutine)


def _stamp_style(stamp: Stamp) -> TextStampStyle:
    return TextStampStyle(
        stamp_text=stamp.text,
        text_box_style=TextBoxStyle(font=EmbeddedTrueTypeFactory(), font_size=9),
        border_width=1,
        timestamp_format="%Y-%m-%d %H:%M:%S %Z",
    )


def check_input(facts: PdfFacts, *, require_pdfa: bool) -> None:
    """:class:`~.pdf_checks.PdfRefused` for a PDF sidecar must not sign: not PDF/A when
    the profile demands it, or locked by an earlier signature."""
    if require_pdfa:
        problems = pdfa_problems(facts)
        if problems:
            raise PdfRefused("unsupported_pdf", "the profile demands PDF/A: " + "; ".join(problems))
    refuse_if_locked(facts)


def _read(data: bytes) -> PdfFileReader:
    try:
        return read_pdf(data)
    except MemoryError:
        raise _too_big() from None


def _inspect(reader: PdfFileReader, data: bytes, max_objects: int) -> PdfFacts:
    try:
        return inspect_reader(reader, data, max_objects)
    except MemoryError:
        raise _too_big() from None


def _too_big() -> PdfRefused:
    return PdfRefused("unsupported_pdf", "reading the PDF needs more memory than allowed")


#: Objects a signature's revision adds at most (field, widget, appearance, font, DSS).
_OWN_OBJECTS = 256


def prepare(request: Prepare) -> Prepared:
    """Worker step 1: the input checked, the signature revision written, the signed
    attributes.

    The input is read once: the reader that the checks resolved objects through is
    the one the writer updates (pyHanko would otherwise read the xref and every
    object it needs again), and the written document's facts are those of the
    writer's view (:func:`~.pdf_checks.inspect_update`), not of a third reading.
    """
    reader = _read(request.data)
    before = _inspect(reader, request.data, request.max_objects)
    check_input(before, require_pdfa=request.require_pdfa)
    field_name = request.field_name or new_field_name(before)
    writer = PreservingWriter(io.BytesIO(request.data), keep_version=before.is_pdfa, reader=reader)
    data, region, signed_attrs = _run(_prepare(request, field_name, writer))
    after = inspect_update(before, writer, len(data), request.max_objects + _OWN_OBJECTS)
    return Prepared(before, after, field_name, before.is_pdfa, data, region, signed_attrs)


async def _prepare(
    request: Prepare, field_name: str, writer: PreservingWriter
) -> tuple[bytes, tuple[int, int], bytes]:
    drafter = _Drafter(request.certificate, request.chain)
    metadata = signers.PdfSignatureMetadata(
        field_name=field_name,
        md_algorithm=request.md_algorithm,
        subfilter=fields.SigSeedSubFilter.PADES,
        reason=request.reason,
        location=request.location,
        contact_info=request.contact_info,
        embed_validation_info=False,
        use_pades_lta=False,
    )
    field_spec = None
    stamp_style = None
    if request.stamp is not None:
        field_spec = fields.SigFieldSpec(
            sig_field_name=field_name, on_page=request.stamp.page, box=request.stamp.box
        )
        stamp_style = _stamp_style(request.stamp)
    pdf_signer = signers.PdfSigner(
        metadata, signer=drafter, new_field_spec=field_spec, stamp_style=stamp_style
    )
    if request.dss is not None:
        write_dss(writer, request.dss)
    digest, _, output = await pdf_signer.async_digest_doc_for_signing(
        writer, bytes_reserved=request.reserved
    )
    attrs = await drafter.signed_attrs(
        digest.document_digest,
        request.md_algorithm,
        attr_settings=PdfCMSSignedAttributes(signing_time=datetime.now(UTC)),
        use_pades=True,
        is_pdf_sig=True,
    )
    assert isinstance(output, io.BytesIO)
    return (
        output.getvalue(),
        (digest.reserved_region_start, digest.reserved_region_end),
        attrs.dump(),
    )


def fill(data: bytes, region: tuple[int, int], der: bytes) -> bytes:
    """*data* with *der* hex-encoded into the ``/Contents`` placeholder at *region*;
    :class:`NoRoom` when it does not fit."""
    start, end = region
    content = der.hex().upper().encode("ascii")
    if len(content) > end - start - 2:
        raise NoRoom(len(content))
    # +1: past the '<'; the rest of the placeholder stays zeros (padding).
    return data[: start + 1] + content + data[start + 1 + len(content) :]


def assemble(
    prepared: Prepared,
    certificate: bytes,
    chain: tuple[bytes, ...],
    md_algorithm: str,
    signature: bytes,
    token: bytes | None,
) -> tuple[bytes, int]:
    """Step 3 (blocking): the CMS around *signature* (and the timestamp *token*) in the
    prepared document's placeholder; the signed document, and the CMS's DER length.
    :class:`NoRoom` when it does not fit."""
    drafter = _Drafter(certificate, chain, signature, token)
    signed_attrs = cms.CMSAttributes.load(prepared.signed_attrs)
    container = _run(drafter.async_sign_prescribed_attributes(md_algorithm, signed_attrs))
    der = container.dump()
    return fill(prepared.data, prepared.region, der), len(der)


def extend(request: Extend) -> Extended:
    """Worker step 4: a revision after the signature — a late TSA's DSS entries, a
    document timestamp's placeholder (B-LTA); the facts of the result (a timestamp's
    token, filled in later, changes none of them)."""
    reader = _read(request.data)
    signed = _inspect(reader, request.data, request.max_objects + _OWN_OBJECTS)
    writer = PreservingWriter(
        io.BytesIO(request.data), keep_version=request.keep_version, reader=reader
    )
    if request.dss is not None:
        write_dss(writer, request.dss)
    if request.timestamp_reserved is None:
        output = io.BytesIO()
        writer.write(output)
        data = output.getvalue()
        digest = None
    else:
        digest, data = _document_timestamp_placeholder(writer, request.timestamp_reserved)
    facts = inspect_update(signed, writer, len(data), request.max_objects + 2 * _OWN_OBJECTS)
    if digest is None:
        return Extended(data, facts=facts)
    return Extended(
        data,
        timestamp_region=(digest.reserved_region_start, digest.reserved_region_end),
        timestamp_digest=digest.document_digest,
        facts=facts,
    )


def write_dss(writer: PreservingWriter, dss: Dss) -> None:
    """Add the validation data to the document's DSS (made, or added to), no VRI.

    The values are the daemon's own, checked by its trust layer when they were
    fetched (the paths it built, the OCSP responses and CRLs of its revocation
    cache): nothing is validated again here. pyHanko's DSS object writer only
    lays them out (one stream each, an existing DSS's entries kept).
    """
    DocumentSecurityStore.supply_dss_in_writer(
        writer,
        None,
        certs=[_certificate(c) for c in dss.certificates],
        ocsps=[ocsp.OCSPResponse.load(r) for r in dss.ocsp_responses],
        crls=[crl.CertificateList.load(c) for c in dss.crls],
    )


def _document_timestamp_placeholder(
    writer: PreservingWriter, reserved: int
) -> tuple[PreparedByteRangeDigest, bytes]:
    """A document timestamp's field and placeholder in *writer*'s revision (with the
    DSS written before it), the revision written, and its ``/ByteRange`` digest."""
    # As pyHanko's PdfTimeStamper: PDF 1.7 at least, and ETSI's extension below 2.0.
    writer.ensure_output_version(version=(1, 7))
    if writer.output_version < (2, 0):
        writer.register_extension(constants.ESIC_EXTENSION_1)
    field_name = "Timestamp-" + str(uuid.uuid4())
    embedder = PdfCMSEmbedder(new_field_spec=fields.SigFieldSpec(sig_field_name=field_name))
    cms_writer = embedder.write_cms(field_name=field_name, writer=writer)
    next(cms_writer)
    cms_writer.send(SigObjSetup(sig_placeholder=DocumentTimestamp(bytes_reserved=reserved)))
    digest, output = cms_writer.send(SigIOSetup(md_algorithm="sha256", in_place=False))
    assert isinstance(output, io.BytesIO)
    return digest, output.getvalue()


def new_field_name(facts: PdfFacts) -> str:
    """``Signature<n>``, *n* one more than the signature fields, or the next name no
    field of the form has (a text field may be called ``Signature2``)."""
    taken = {name.casefold() for name in facts.field_names}
    number = facts.signature_fields + 1
    while f"signature{number}" in taken:
        number += 1
    return f"Signature{number}"


def refuse_if_locked(facts: PdfFacts) -> None:
    """:class:`PdfRefused` when an earlier signature forbids any change, a new signature
    included: a certification with DocMDP P=1 (``pdf_certified``), a field lock of all
    fields or P=1 (``pdf_locked``). Signing anyway would silently invalidate it."""
    if facts.certification is not None and facts.certification[0] == 1:
        by = f" by {facts.certification[1]}" if facts.certification[1] else ""
        raise PdfRefused(
            "pdf_certified",
            f"the PDF is certified{by} with DocMDP permission 1: no change is allowed, "
            "not even a new signature",
        )
    for field_name, what, signer in facts.locks:
        by = f" by {signer}" if signer else ""
        raise PdfRefused(
            "pdf_locked",
            f"the signature in field {field_name!r}{by} locks the document with {what}: "
            "a new signature would invalidate it",
        )
