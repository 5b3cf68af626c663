"""The document work of a PAdES signature, run in a worker process (no key, no socket).

A PAdES signature is made in steps so that nothing CPU-bound runs on the daemon's
event loop and no key material leaves the daemon (see :mod:`.pades`):

1. :func:`prepare` (worker): the incremental update with the signature field, its
   appearance and a ``/Contents`` placeholder, written out; the ``/ByteRange``
   digest; the CMS signed attributes over it — pyHanko's interrupted signing
   (``PdfSigner.async_digest_doc_for_signing``), with a stand-in for the key that
   only knows its certificate.
2. The daemon: the key signs the signed attributes (its own executor), the TSA
   stamps the signature value, the revocation cache gives the validation data.
3. :func:`finish` (worker): the CMS assembled around that signature value (and the
   timestamp token), written into the placeholder; for B-LT and B-LTA the DSS,
   for B-LTA the document timestamp's placeholder in a revision after it, and
   its digest — the daemon asks the TSA and fills it in (:func:`fill`).

For B-LT and up, the DSS is written in step 1, in the signature's own revision
(covered by the signature: a verifier sees the whole document signed), from the
validation data the daemon passed — its trust layer's paths and revocation cache,
checked when fetched: nothing is validated again here.

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
from .pdf_checks import PdfFacts, inspect_pdf
from .pdf_font import EmbeddedTrueTypeFactory

__all__ = [
    "Dss",
    "Finish",
    "Finished",
    "NoRoom",
    "Prepare",
    "Prepared",
    "PreservingWriter",
    "Stamp",
    "fill",
    "finish",
    "prepare",
    "write_dss",
]

T = TypeVar("T")


class NoRoom(Exception):
    """The CMS is larger than the room reserved for it: prepare again with ``needed``
    bytes (the hex length) or more."""

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
    field_name: str
    md_algorithm: str
    reason: str | None
    location: str | None
    contact_info: str | None
    stamp: Stamp | None
    keep_version: bool
    #: Hex characters reserved for the CMS.
    reserved: int
    #: B-LT and up: the DSS, written in the signature's revision (signed with it).
    dss: Dss | None = None


@dataclass(frozen=True)
class Prepared:
    #: The document with the signature revision, ``/Contents`` still zeros.
    data: bytes
    region: tuple[int, int]
    #: DER ``SignedAttributes`` (a SET OF): what the key signs.
    signed_attrs: bytes


@dataclass(frozen=True)
class Finish:
    prepared: Prepared
    certificate: bytes
    chain: tuple[bytes, ...]
    md_algorithm: str
    signature: bytes
    #: The signature timestamp token (B-T and up), DER.
    token: bytes | None
    keep_version: bool
    #: Validation data to add after the signature (the timestamp came from another
    #: TSA than the one whose data the signature's revision holds); ``None``: none.
    dss: Dss | None = None
    #: Hex characters reserved for a document timestamp (B-LTA), else ``None``.
    timestamp_reserved: int | None = None


@dataclass(frozen=True)
class Finished:
    data: bytes
    #: The signature CMS's DER length (to size the next reservation).
    cms_length: int
    #: B-LTA: the document timestamp's placeholder and the digest to stamp.
    timestamp_region: tuple[int, int] | None = None
    timestamp_digest: bytes | None = None
    #: The signed document's facts (``None`` while a document timestamp is due).
    facts: PdfFacts | None = None


class PreservingWriter(MetadataKeepingWriter):
    """An incremental writer that leaves metadata alone and, for PDF/A, the version."""

    def __init__(self, stream: io.BytesIO, *, keep_version: bool) -> None:
        self._keep_version = keep_version
        super().__init__(stream, strict=False)

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


def prepare(request: Prepare) -> Prepared:
    """Worker step 1: the signature revision written, and the signed attributes."""
    return _run(_prepare(request))


async def _prepare(request: Prepare) -> Prepared:
    drafter = _Drafter(request.certificate, request.chain)
    metadata = signers.PdfSignatureMetadata(
        field_name=request.field_name,
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
            sig_field_name=request.field_name, on_page=request.stamp.page, box=request.stamp.box
        )
        stamp_style = _stamp_style(request.stamp)
    pdf_signer = signers.PdfSigner(
        metadata, signer=drafter, new_field_spec=field_spec, stamp_style=stamp_style
    )
    writer = PreservingWriter(io.BytesIO(request.data), keep_version=request.keep_version)
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
    return Prepared(
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


def finish(request: Finish) -> Finished:
    """Worker step 3: the CMS in place; the DSS (B-LT); a document timestamp's
    placeholder (B-LTA)."""
    return _run(_finish(request))


async def _finish(request: Finish) -> Finished:
    drafter = _Drafter(request.certificate, request.chain, request.signature, request.token)
    signed_attrs = cms.CMSAttributes.load(request.prepared.signed_attrs)
    container = await drafter.async_sign_prescribed_attributes(request.md_algorithm, signed_attrs)
    der = container.dump()
    data = fill(request.prepared.data, request.prepared.region, der)
    if request.dss is None and request.timestamp_reserved is None:
        return Finished(data, len(der), facts=inspect_pdf(data))
    writer = PreservingWriter(io.BytesIO(data), keep_version=request.keep_version)
    if request.dss is not None:
        write_dss(writer, request.dss)
    if request.timestamp_reserved is None:
        output = io.BytesIO()
        writer.write(output)
        signed = output.getvalue()
        return Finished(signed, len(der), facts=inspect_pdf(signed))
    digest, stamped = _document_timestamp_placeholder(writer, request.timestamp_reserved)
    return Finished(
        stamped,
        len(der),
        timestamp_region=(digest.reserved_region_start, digest.reserved_region_end),
        timestamp_digest=digest.document_digest,
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
