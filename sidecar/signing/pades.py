"""PAdES signatures (ETSI EN 319 142-1) at B-B, B-T, B-LT and B-LTA, keeping PDF/A.

The DSR (3.4.2) asks PAdES-B-LT of a stand-alone PDF and at least PAdES-B of the
PDF/A embedded in a XAdES-signed form. pyHanko does the PDF and CMS work; this
module decides how, so that a PDF/A input stays PDF/A, and where, so that none of
it runs on the event loop:

- the document work (the incremental update, the ``/ByteRange`` digest, the CMS
  assembly, the DSS) runs in the PDF worker processes (:mod:`.pades_draft`, through
  the inspector's pool: its memory ceiling, deadline and per-client share); the key
  signs in the daemon, in its own executor — no key material leaves the daemon;
- the signature is an incremental update (nothing before it is rewritten);
- the metadata update pyHanko makes on every write is off (pyHanko issue #223):
  it sets Info ``/Producer`` and ``/ModDate`` and the XMP differently, which breaks
  the Info/XMP agreement PDF/A requires (ISO 19005-2 6.6.3);
- a PDF/A keeps its version: pyHanko would set catalog ``/Version /2.0`` and the
  ISO 32002 extension for an EC key, and ``/1.7`` for an older file — neither is
  allowed to change under a PDF/A claim (PDF/A-1 is PDF 1.4, PDF/A-2/3 are 1.7);
- B-LT: the DSS (no VRI: the baseline levels do not need it) in a revision after
  the signature's, holding the validation data of the signer's and the TSA's paths
  as the daemon's trust layer built and checked them (its revocation cache), not
  re-validated by pyHanko per signature; B-LTA adds one document timestamp in that
  same revision, after the DSS.

PDF markers are checked before (:mod:`.pdf_checks`, in a worker with limits) and
after signing; a regression is a bug and fails the request rather than returning
a PDF/A that is no longer one.

Seams: a pyHanko ``TimeStamper`` (``sidecar.trust``'s checked one in the daemon)
and a :class:`~.sources.ValidationDataSource` (the trust layer's revocation
service through :mod:`.trust_binding`). An engine given only the older
``validation_context`` factory gets its validation data from pyHanko's validator
on each signature (slower: the per-signature validation this module avoids).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from asn1crypto import x509
from pyhanko.pdf_utils import misc
from pyhanko.sign.general import SigningError
from pyhanko.sign.timestamps import TimeStamper
from pyhanko_certvalidator import CertificateValidator, ValidationContext
from pyhanko_certvalidator.errors import (
    InsufficientRevinfoError,
    PathBuildingError,
    RevokedError,
    ValidationError,
)

from ..errors import InternalError
from ..keys import Signer
from ..logs import traceback_text
from ..trust.tsa import TokenContents, read_token
from . import pades_draft
from .pades_draft import NoRoom
from .pdf_checks import PdfFacts, PdfInspector, PdfRefused, pdfa_regressions, quick_guard
from .report import BASELINE_LEVELS, Level
from .sources import (
    CertificateUnusable,
    UpstreamFailure,
    ValidationData,
    ValidationDataSource,
    collect_for_signature,
)
from .workers import WorkerLost

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

T = TypeVar("T")


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


class PadesEngine:
    """Signs PDFs with any :class:`~sidecar.keys.Signer`.

    ``validation_data`` feeds B-LT and B-LTA (the daemon's trust layer, its checked
    revocation cache); without it, ``validation_context`` (the older seam: a factory
    of pyHanko contexts with fetching on) is used through pyHanko's validator.
    The document work runs in ``inspector``'s worker processes.
    """

    def __init__(
        self,
        *,
        inspector: PdfInspector,
        timestamper: TimeStamper | None = None,
        validation_context: ValidationContextFactory | None = None,
        validation_data: ValidationDataSource | None = None,
    ) -> None:
        self.inspector = inspector
        self.timestamper = timestamper
        self.validation_context = validation_context
        if validation_data is None and validation_context is not None:
            validation_data = _ContextValidationData(validation_context)
        self.validation_data = validation_data
        # Per signer certificate and level: the hex room the CMS took last time (so
        # that no dry-run signature is needed), and the document timestamps' room.
        self._reserved: dict[tuple[bytes, Level], int] = {}
        self._timestamp_reserved: int | None = None
        #: The last timestamp token read: its TSA's data goes in the next DSS.
        self._tsa: TokenContents | None = None

    def _check_level(self, level: Level) -> None:
        if level.at_least(Level.B_T) and self.timestamper is None:
            raise PadesError("tsa_not_configured", f"{level.value} needs a TSA; none is configured")
        if level.at_least(Level.B_LT) and self.validation_data is None:
            raise PadesError(
                "revocation_unavailable", f"{level.value} needs revocation data; none configured"
            )

    async def sign(
        self, data: bytes, signer: Signer, options: PadesOptions, *, client: str | None = None
    ) -> SignedPdf:
        """Sign *data*; :class:`PdfRefused` for an unacceptable input, :class:`PadesError`.

        ``client`` (the caller's name): whose share of the PDF workers the document
        work counts against."""
        self._check_level(options.level)
        quick_guard(data, self.inspector.limits)
        try:
            prepared, output, after = await self._sign(data, signer, options, client)
        except CertificateUnusable as exc:
            reason = "certificate_revoked" if exc.reason == "revoked" else "certificate_invalid"
            raise PadesError(reason, f"the signing certificate does not validate: {exc}") from None
        except UpstreamFailure as exc:
            if exc.service != "revocation":
                raise PadesError("signing_failed", f"{exc.service}: {exc.detail}") from None
            raise PadesError("revocation_unavailable", f"no revocation data: {exc}") from None
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
        before = prepared.before
        if before.signature_fields and before.is_pdfa:
            log.info(
                "signed a PDF/A that already had %d signature field(s)", before.signature_fields
            )
        if before.is_pdfa:
            broken = pdfa_regressions(before, after)
            if broken:
                log.error("signing broke PDF/A markers: %s", "; ".join(broken))
                raise PadesError("pdfa_broken", "signing would break PDF/A: " + "; ".join(broken))
        return SignedPdf(output, options.level, prepared.field_name, before, after)

    async def _work(self, fn: Callable[..., T], *args: object, client: str | None) -> T:
        """``fn(*args)`` in a PDF worker, under the inspector's deadline."""
        timeout = self.inspector.limits.timeout
        try:
            return await self.inspector.run(fn, *args, deadline=timeout, client=client)
        except TimeoutError:
            raise PdfRefused(
                "unsupported_pdf", f"the PDF could not be signed within {timeout:g} s"
            ) from None
        except WorkerLost:
            raise PdfRefused(
                "unsupported_pdf", "signing the PDF needs more memory than allowed"
            ) from None

    async def _sign(
        self, data: bytes, signer: Signer, options: PadesOptions, client: str | None
    ) -> tuple[pades_draft.Prepared, bytes, PdfFacts]:
        level = options.level
        md = options.md_algorithm
        max_objects = self.inspector.limits.max_objects
        certificate = signer.certificate.dump()
        chain = tuple(c.dump() for c in signer.chain)
        stamp = None
        if options.stamp is not None:
            page = options.stamp.page - 1 if options.stamp.page > 0 else options.stamp.page
            stamp = pades_draft.Stamp(page, options.stamp.box, options.stamp.text)
        size_key = (signer.certificate.sha256, level)
        dss = None
        if level.at_least(Level.B_LT):
            # The signer's path and the TSA's (the one that stamped last), from the trust
            # layer's checked cache: written in the signature's revision, signed with it.
            tsa = await self._expected_tsa(md)
            dss = await self._collect(signer, tsa)
        for attempt in range(2):
            reserved = self._reserved.get(size_key) or self._estimate(certificate, chain, level)
            prepared = await self._work(
                pades_draft.prepare,
                pades_draft.Prepare(
                    data=data,
                    certificate=certificate,
                    chain=chain,
                    field_name=options.field_name,
                    md_algorithm=md,
                    reason=options.reason,
                    location=options.location,
                    contact_info=options.contact_info,
                    stamp=stamp,
                    reserved=reserved,
                    dss=dss,
                    require_pdfa=options.require_pdfa,
                    max_objects=max_objects,
                ),
                client=client,
            )
            # The key signs where it lives (its executor); no key material moves.
            signature = await signer.sign(prepared.signed_attrs, digest=md)
            token = None
            late_dss = None
            if level.at_least(Level.B_T):
                token = await self._timestamp(hashlib.new(md, signature).digest(), md)
            if dss is not None and token is not None:
                stamped = read_token(token)
                if (
                    stamped.tsa_certificate is None
                    or tsa.tsa_certificate is None
                    or (stamped.tsa_certificate.sha256 != tsa.tsa_certificate.sha256)
                ):
                    # Another TSA answered (failover): its data after the signature.
                    self._tsa = stamped
                    late_dss = await self._collect(signer, stamped)
            try:
                signed, cms_length = await asyncio.to_thread(
                    pades_draft.assemble, prepared, certificate, chain, md, signature, token
                )
            except NoRoom as exc:
                # A longer chain, a bigger token than before: room for it, and again.
                self._reserved[size_key] = _room(exc.needed)
                if attempt:
                    raise PadesError("signing_failed", "the signature outgrew its room") from None
                continue
            if size_key not in self._reserved:
                self._reserved[size_key] = _room(2 * cms_length)
            if late_dss is None and level is not Level.B_LTA:
                return prepared, signed, prepared.after
            output, after = await self._extend(signed, prepared, late_dss, level, client)
            return prepared, output, after
        raise AssertionError("unreachable")

    async def _extend(
        self,
        signed: bytes,
        prepared: pades_draft.Prepared,
        late_dss: pades_draft.Dss | None,
        level: Level,
        client: str | None,
    ) -> tuple[bytes, PdfFacts]:
        """A revision after the signature: a late TSA's data, the document timestamp."""
        max_objects = self.inspector.limits.max_objects
        for attempt in range(2):
            room = self._document_timestamp_room() if level is Level.B_LTA else None
            extended = await self._work(
                pades_draft.extend,
                pades_draft.Extend(signed, prepared.keep_version, late_dss, room, max_objects),
                client=client,
            )
            if extended.timestamp_region is None:
                assert extended.facts is not None
                return extended.data, extended.facts
            try:
                return await self._document_timestamp(extended)
            except NoRoom as exc:
                # The room is measured from the first token; a TSA's tokens vary.
                self._timestamp_reserved = _room(exc.needed)
                if attempt:
                    raise PadesError(
                        "signing_failed", "the document timestamp outgrew its room"
                    ) from None
        raise AssertionError("unreachable")

    def _estimate(self, certificate: bytes, chain: tuple[bytes, ...], level: Level) -> int:
        """Hex room for a first CMS of this key at *level*: its certificates, signed
        attributes and signature, and a timestamp token's allowance."""
        der = len(certificate) + sum(len(c) for c in chain) + 2048
        if level.at_least(Level.B_T):
            der += 8192
        return 2 * der

    def _document_timestamp_room(self) -> int:
        return self._timestamp_reserved or 2 * 8192

    async def _timestamp(self, digest: bytes, md: str) -> bytes:
        assert self.timestamper is not None
        token = await self.timestamper.async_timestamp(digest, md)
        return bytes(token.dump())

    async def _expected_tsa(self, md: str) -> TokenContents:
        """The TSA that will stamp the next signature, as its last token tells (the
        first time, pyHanko's cached size-estimate token: one TSA request)."""
        if self._tsa is None:
            assert self.timestamper is not None
            dummy = await self.timestamper.async_dummy_response(md)
            self._tsa = read_token(bytes(dummy.dump()))
        return self._tsa

    async def _collect(self, signer: Signer, tsa: TokenContents) -> pades_draft.Dss:
        """The validation data of the signer's path and the TSA's (checked, cached)."""
        assert self.validation_data is not None
        data = await collect_for_signature(
            self.validation_data,
            [signer.certificate, *signer.chain],
            tsa.tsa_certificate,
            tsa.certificates,
        )
        return pades_draft.Dss(
            tuple(c.dump() for c in data.certificates), data.ocsp_responses, data.crls
        )

    async def _document_timestamp(self, finished: pades_draft.Extended) -> tuple[bytes, PdfFacts]:
        """B-LTA: the TSA stamps the prepared revision's digest; the token filled in
        (:class:`NoRoom` when it does not fit)."""
        assert finished.timestamp_region is not None and finished.timestamp_digest is not None
        token = await self._timestamp(finished.timestamp_digest, "sha256")
        if len(finished.data) <= _SPLICE_ON_LOOP:
            output = pades_draft.fill(finished.data, finished.timestamp_region, token)
        else:
            output = await asyncio.to_thread(
                pades_draft.fill, finished.data, finished.timestamp_region, token
            )
        if self._timestamp_reserved is None:
            self._timestamp_reserved = _room(2 * len(token))
        # The token changes none of the facts the worker found of the placeholder's
        # revision: the document is not read again.
        assert finished.facts is not None
        return output, finished.facts


def _room(needed: int) -> int:
    """Hex characters to reserve for contents of *needed* hex characters, with
    pyHanko's own margin (a TSA's tokens vary by a few bytes), even (whole bytes)."""
    room = needed + needed // 4 + 512
    return room + room % 2


#: Below this size, filling a token in (copying the bytes) costs less than a thread hop.
_SPLICE_ON_LOOP = 1024**2


class _ContextValidationData:
    """:class:`~.sources.ValidationDataSource` over a pyHanko context factory: pyHanko's
    validator on each call (the older seam; the trust layer's source caches instead).
    Raises pyHanko's errors, which :meth:`PadesEngine.sign` maps."""

    def __init__(self, factory: ValidationContextFactory) -> None:
        self.factory = factory

    async def collect(self, certificates: Sequence[x509.Certificate]) -> ValidationData:
        context = self.factory()
        validator = CertificateValidator(
            certificates[0], intermediate_certs=list(certificates[1:]), validation_context=context
        )
        path = await validator.async_validate_path()
        unique = {c.sha256: c for c in path.iter_certs(include_root=True)}
        for response in context.ocsps:
            for cert in response.basic_ocsp_response["certs"] or ():
                unique.setdefault(cert.sha256, cert)
        return ValidationData(
            tuple(unique.values()),
            tuple(dict.fromkeys(r.dump() for r in context.ocsps)),
            tuple(dict.fromkeys(c.dump() for c in context.crls)),
        )


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
