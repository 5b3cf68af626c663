"""PAdES signatures (ETSI EN 319 142-1) at B-B, B-T, B-LT and B-LTA, keeping PDF/A.

The DSR (3.4.2) asks PAdES-B-LT of a stand-alone PDF and at least PAdES-B of the
PDF/A embedded in a XAdES-signed form. pyHanko does the PDF and CMS work, through
its async API; this module decides how, so that a PDF/A input stays PDF/A:

- the signature is an incremental update (nothing before it is rewritten);
- the metadata update pyHanko makes on every write is off (pyHanko issue #223):
  it sets Info ``/Producer`` and ``/ModDate`` and the XMP differently, which breaks
  the Info/XMP agreement PDF/A requires (ISO 19005-2 6.6.3);
- a PDF/A keeps its version: pyHanko would set catalog ``/Version /2.0`` and the
  ISO 32002 extension for an EC key, and ``/1.7`` for an older file — neither is
  allowed to change under a PDF/A claim (PDF/A-1 is PDF 1.4, PDF/A-2/3 are 1.7);
- the DSS goes into the signature's own revision (``TOGETHER_WITH_SIGNATURE``, no
  VRI), and B-LTA appends one document timestamp (with the TSA's validation data
  added before it), each revision written by the same metadata-preserving writer.

PDF markers are checked before (:mod:`.pdf_checks`, in a worker with limits) and
after signing; a regression is a bug and fails the request rather than returning
a PDF/A that is no longer one.

Seams: a pyHanko ``TimeStamper`` (``sidecar.trust``'s checked one in the daemon)
and a factory of pyHanko ``ValidationContext`` with fetching on (the trust layer's
revocation service, sharing its cache and the daemon's HTTP session).
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from asn1crypto import cms, tsp
from pyhanko.pdf_utils import misc
from pyhanko.pdf_utils.text import TextBoxStyle
from pyhanko.pdf_utils.writer import DeveloperExtension
from pyhanko.sign import attributes, fields, signers
from pyhanko.sign.general import SigningError, as_signing_certificate_v2
from pyhanko.sign.signers.pdf_signer import (
    DSSContentSettings,
    SigDSSPlacementPreference,
    TimestampDSSContentSettings,
)
from pyhanko.sign.timestamps import TimeStamper
from pyhanko.stamp import TextStampStyle
from pyhanko_certvalidator import ValidationContext
from pyhanko_certvalidator.errors import (
    InsufficientRevinfoError,
    PathBuildingError,
    RevokedError,
    ValidationError,
)

from .._hooks.asn1crypto_hooks import as_definite_signer_info
from .._hooks.pyhanko_hooks import AttrProviderRewritingSigner, MetadataKeepingWriter
from ..errors import InternalError
from ..keys import Signer
from ..keys.pyhanko_adapter import PyHankoSignerAdapter
from ..logs import traceback_text
from .pdf_checks import (
    PdfFacts,
    PdfInspector,
    PdfRefused,
    inspect_pdf,
    pdfa_problems,
    pdfa_regressions,
)
from .pdf_font import EmbeddedTrueTypeFactory
from .report import BASELINE_LEVELS, Level

__all__ = [
    "PadesEngine",
    "PadesError",
    "PadesOptions",
    "SignedPdf",
    "ValidationContextFactory",
    "VisibleStamp",
    "parse_level",
]

log = logging.getLogger("sidecar.signing.pades")


def parse_level(value: str) -> Level:
    """``"B-LT"`` → :attr:`Level.B_LT`; ValueError for anything else."""
    for level in BASELINE_LEVELS:
        if value.upper() == level.value:
            return level
    raise ValueError(
        f"one of {', '.join(level.value for level in BASELINE_LEVELS)} (got {value!r})"
    )


class ValidationContextFactory(Protocol):
    """A fresh pyHanko ``ValidationContext`` with fetching allowed (one per signature)."""

    def __call__(self) -> ValidationContext: ...


class PadesError(InternalError):
    """Signing failed for a reason of the engine or its upstreams; ``reason`` says which.

    ``reason``: ``tsa_not_configured``, ``revocation_unavailable``, ``certificate_invalid``,
    ``certificate_revoked``,
    ``pdfa_broken`` (a bug: signing would have broken PDF/A), ``signing_failed``.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class VisibleStamp:
    """A visible signature appearance (text in an embedded font) on one page."""

    #: 1-based page number; negative counts from the end (-1: the last page).
    page: int = 1
    #: x1, y1, x2, y2 in PDF points from the page's lower left corner.
    box: tuple[int, int, int, int] = (56, 56, 296, 126)
    #: pyHanko stamp text; ``%(signer)s`` and ``%(ts)s`` are filled in.
    text: str = "Signé électroniquement par\n%(signer)s\n%(ts)s"


@dataclass(frozen=True)
class PadesOptions:
    level: Level = Level.B_LT
    reason: str | None = None
    location: str | None = None
    contact_info: str | None = None
    #: Signature field name; ``None``: ``Signature<n>``, the next free one.
    field_name: str | None = None
    #: ``None``: an invisible signature.
    stamp: VisibleStamp | None = None
    #: Refuse (422 unsupported_pdf) an input whose PDF/A markers are not all there.
    require_pdfa: bool = False
    md_algorithm: str = "sha256"


@dataclass(frozen=True)
class SignedPdf:
    data: bytes
    level: Level
    field_name: str
    before: PdfFacts
    after: PdfFacts


class _PreservingWriter(MetadataKeepingWriter):
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


class _PadesSignerAdapter(AttrProviderRewritingSigner, PyHankoSignerAdapter):
    """The key adapter, with the CMS parts it builds encoded once.

    asn1crypto re-encodes a value built from Python values on every ``dump()``, its
    whole subtree included (the mutation flag of a built value is never cleared),
    and pyHanko dumps the signed attributes and the SignerInfo several times per
    signature: ~8,000 encodings of the same names and algorithm identifiers, most of
    a PAdES-B signature's CPU. Each part is therefore read back from its own
    encoding once built — the same bytes, kept — and the SignerInfo is written as
    it was built (see :class:`~sidecar._hooks.asn1crypto_hooks.DefiniteSignerInfo`).
    """

    _ess: tsp.SigningCertificateV2 | None = None

    def rewrite_provider(
        self, provider: attributes.CMSAttributeProvider
    ) -> attributes.CMSAttributeProvider:
        # The signing-certificate-v2 value (the certificate's digest, issuer name and
        # serial) is the same for every signature with this key: encoded once. Its
        # issuer name nests SETs, which asn1crypto sorts by re-encoding them, level
        # by level, on each dump: ~1,400 encodings per dump when built afresh.
        if not isinstance(provider, attributes.SigningCertificateV2Provider):
            return provider
        if self._ess is None:
            built = as_signing_certificate_v2(provider.signing_cert)
            self._ess = tsp.SigningCertificateV2.load(built.dump())
        return _FixedAttribute("signing_certificate_v2", self._ess)

    async def signed_attrs(self, *args: Any, **kwargs: Any) -> cms.CMSAttributes:
        attrs = await super().signed_attrs(*args, **kwargs)
        return cms.CMSAttributes.load(attrs.dump())

    def signer_info(
        self, digest_algorithm: str, signed_attrs: cms.CMSAttributes, signature: bytes
    ) -> cms.SignerInfo:
        return as_definite_signer_info(
            super().signer_info(digest_algorithm, signed_attrs, signature)
        )


def _stamp_style(stamp: VisibleStamp) -> TextStampStyle:
    return TextStampStyle(
        stamp_text=stamp.text,
        text_box_style=TextBoxStyle(font=EmbeddedTrueTypeFactory(), font_size=9),
        border_width=1,
        timestamp_format="%Y-%m-%d %H:%M:%S %Z",
    )


class PadesEngine:
    """Signs PDFs with any :class:`~sidecar.keys.Signer`."""

    def __init__(
        self,
        *,
        inspector: PdfInspector,
        timestamper: TimeStamper | None = None,
        validation_context: ValidationContextFactory | None = None,
    ) -> None:
        self.inspector = inspector
        self.timestamper = timestamper
        self.validation_context = validation_context
        # Per signer certificate: the pyHanko adapter (its certificate objects keep
        # their encodings: re-parsing the chain per signature costs more than signing),
        # and per level the CMS size seen, so that pyHanko skips its dry-run signature.
        self._adapters: dict[tuple[int, bytes], PyHankoSignerAdapter] = {}
        self._reserved: dict[tuple[bytes, Level], int] = {}

    def _adapter(self, signer: Signer) -> PyHankoSignerAdapter:
        key = (id(signer), signer.certificate.sha256)
        adapter = self._adapters.get(key)
        if adapter is None:
            if len(self._adapters) > 64:
                self._adapters.clear()
            adapter = self._adapters[key] = _PadesSignerAdapter(signer)
        return adapter

    def _check_level(self, level: Level) -> None:
        if level.at_least(Level.B_T) and self.timestamper is None:
            raise PadesError("tsa_not_configured", f"{level.value} needs a TSA; none is configured")
        if level.at_least(Level.B_LT) and self.validation_context is None:
            raise PadesError(
                "revocation_unavailable", f"{level.value} needs revocation data; none configured"
            )

    async def sign(self, data: bytes, signer: Signer, options: PadesOptions) -> SignedPdf:
        """Sign *data*; :class:`PdfRefused` for an unacceptable input, :class:`PadesError`."""
        self._check_level(options.level)
        before = await self.inspector.inspect(data)
        if before.signature_fields and before.is_pdfa:
            log.info(
                "signing a PDF/A that already has %d signature field(s)", before.signature_fields
            )
        if options.require_pdfa:
            problems = pdfa_problems(before)
            if problems:
                raise PdfRefused(
                    "unsupported_pdf", "the profile demands PDF/A: " + "; ".join(problems)
                )
        refuse_if_locked(before)
        keep_version = before.is_pdfa
        field_name = options.field_name or new_field_name(before)
        try:
            output = await self._sign(data, signer, options, field_name, keep_version)
            if options.level is Level.B_LTA:
                output = await self._document_timestamp(output, keep_version)
        except InsufficientRevinfoError as exc:
            # OCSP/CRL unreachable: B-LT cannot be built now; a retry may succeed.
            raise PadesError("revocation_unavailable", f"no revocation data: {exc}") from None
        except RevokedError as exc:
            raise PadesError("certificate_revoked", f"a certificate is revoked: {exc}") from None
        except (PathBuildingError, ValidationError) as exc:
            raise PadesError(
                "certificate_invalid", f"the signing certificate does not validate: {exc}"
            ) from None
        except SigningError as exc:
            # pyHanko validates the signer before signing and wraps what it found.
            if isinstance(exc.__cause__, InsufficientRevinfoError):
                raise PadesError(
                    "revocation_unavailable", f"no revocation data: {exc.__cause__}"
                ) from None
            raise PadesError("signing_failed", f"pyHanko could not sign: {exc}") from None
        except misc.PdfError as exc:
            raise PdfRefused("malformed_pdf", f"the PDF cannot be updated: {exc}") from None
        except (
            KeyError, TypeError, AttributeError, ValueError, IndexError, RecursionError,
            AssertionError,
        ) as exc:  # fmt: skip
            # pyHanko met a structure it cannot update (readable, but not as it expects;
            # it checks some with assert):
            # the caller's document, not the daemon, is the cause; the log keeps where.
            log.warning(
                "pyHanko could not update the PDF", extra={"traceback": traceback_text(exc)}
            )
            raise PdfRefused(
                "unsupported_pdf",
                f"the PDF cannot be signed: its structure is not one sidecar can update "
                f"({type(exc).__name__})",
            ) from None
        after = await asyncio.to_thread(inspect_pdf, output)
        if before.is_pdfa:
            broken = pdfa_regressions(before, after)
            if broken:
                log.error("signing broke PDF/A markers: %s", "; ".join(broken))
                raise PadesError("pdfa_broken", "signing would break PDF/A: " + "; ".join(broken))
        return SignedPdf(output, options.level, field_name, before, after)

    async def _sign(
        self,
        data: bytes,
        signer: Signer,
        options: PadesOptions,
        field_name: str,
        keep_version: bool,
    ) -> bytes:
        level = options.level
        timestamped = level.at_least(Level.B_T)
        long_term = level.at_least(Level.B_LT)
        context = self.validation_context() if long_term and self.validation_context else None
        metadata = signers.PdfSignatureMetadata(
            field_name=field_name,
            md_algorithm=options.md_algorithm,
            subfilter=fields.SigSeedSubFilter.PADES,
            reason=options.reason,
            location=options.location,
            contact_info=options.contact_info,
            embed_validation_info=long_term,
            validation_context=context,
            use_pades_lta=False,
            dss_settings=DSSContentSettings(
                include_vri=False, placement=SigDSSPlacementPreference.TOGETHER_WITH_SIGNATURE
            ),
        )
        field_spec = None
        stamp_style = None
        if options.stamp is not None:
            page = options.stamp.page - 1 if options.stamp.page > 0 else options.stamp.page
            field_spec = fields.SigFieldSpec(
                sig_field_name=field_name, on_page=page, box=options.stamp.box
            )
            stamp_style = _stamp_style(options.stamp)
        pdf_signer = signers.PdfSigner(
            metadata,
            signer=self._adapter(signer),
            timestamper=self.timestamper if timestamped else None,
            new_field_spec=field_spec,
            stamp_style=stamp_style,
        )
        writer = _PreservingWriter(io.BytesIO(data), keep_version=keep_version)
        output = io.BytesIO()
        size_key = (signer.certificate.sha256, level)
        reserved = self._reserved.get(size_key)
        try:
            await pdf_signer.async_sign_pdf(writer, output=output, bytes_reserved=reserved)
        except SigningError:
            if reserved is None:
                raise
            # Larger than any before (a longer chain, a bigger token): let pyHanko measure.
            del self._reserved[size_key]
            writer = _PreservingWriter(io.BytesIO(data), keep_version=keep_version)
            output = io.BytesIO()
            await pdf_signer.async_sign_pdf(writer, output=output)
        signed = output.getvalue()
        if size_key not in self._reserved:
            self._reserved[size_key] = _reservation(signed)
        return signed

    async def _document_timestamp(self, data: bytes, keep_version: bool) -> bytes:
        assert self.timestamper is not None and self.validation_context is not None
        buffer = io.BytesIO(data)
        writer = _PreservingWriter(buffer, keep_version=keep_version)
        stamper = signers.PdfTimeStamper(self.timestamper)
        await stamper.async_timestamp_pdf(
            writer,
            "sha256",
            validation_context=self.validation_context(),
            in_place=True,
            # The TSA's validation data before the timestamp: one revision, no VRI.
            dss_settings=TimestampDSSContentSettings(include_vri=False, update_before_ts=True),
        )
        return buffer.getvalue()


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


def _reservation(signed: bytes) -> int:
    """Room for later CMS objects like the one in *signed* (hex: twice the DER length),
    with pyHanko's own margin: timestamp tokens vary by a few bytes."""
    from pyhanko.pdf_utils.reader import PdfFileReader

    reader = PdfFileReader(io.BytesIO(signed), strict=False)
    # The newest signature is the one whose revision is last.
    newest = max(reader.embedded_regular_signatures, key=lambda sig: sig.signed_revision)
    length = len(newest.signed_data.dump()) + 32  # + the ContentInfo wrapper
    return 2 * length + 2 * (length // 4) + 512


def http_validation_context_factory(
    trust_roots: list[object], fetchers_factory: Callable[[], object] | None = None
) -> ValidationContextFactory:
    """A factory for tests and tools without the trust layer: pyHanko's own fetchers."""

    def make() -> ValidationContext:
        kwargs: dict[str, Any] = {"trust_roots": trust_roots, "allow_fetching": True}
        if fetchers_factory is not None:
            kwargs["fetcher_backend"] = fetchers_factory()
        return ValidationContext(**kwargs)

    return make
