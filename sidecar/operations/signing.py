"""Signing use cases: an XML document, a PDF, a form by its profile, a CNS fee note.

Each takes a typed request (the profile already found, the level already parsed: a
caller's typo is the caller's layer's 400/404), signs with the requested key (the
default one otherwise) under ``[trust.lists] at_signing``, emits the signature's
event (:mod:`.events`) and returns a typed result. The XAdES engine is bound to the
daemon's trust layer, ``[signing]`` options and drafting workers in one place,
:func:`xades_signer`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ..config import SigningSettings
from ..keys import Signer
from ..signing.forms import XmlSignFunction, check_profile, sign_form
from ..signing.pades import PadesOptions, VisibleStamp
from ..signing.profiles import Profile
from ..signing.report import BASELINE_LEVELS, Level
from ..signing.sources import UpstreamFailure
from ..signing.trust_binding import TrustTimestampSource, TrustValidationDataSource
from ..signing.xades import SignaturePolicy, XadesOptions, sign_xml
from ..signing.xml_safety import NamespaceBounds, parse_xml
from ..trust.lists.signing import SigningVerdict
from .events import SignatureEvent
from .qualification import after_signing, before_signing

if TYPE_CHECKING:
    from .services import Services

__all__ = [
    "FeeNoteSigner",
    "FormSigning",
    "PdfSigning",
    "Signed",
    "XmlSigning",
    "fee_note_signer",
    "level_named",
    "sign_form_document",
    "sign_pdf_document",
    "sign_xml_document",
    "xades_options",
    "xades_signer",
]

log = logging.getLogger("sidecar.signing")

_LEVELS = {level.value: level for level in BASELINE_LEVELS}

#: ``async (document, key, level, profile or None) -> signed document``; also a
#: :data:`~sidecar.signing.forms.XmlSignFunction` (which always has a profile).
XadesFunction = Callable[[bytes, Signer, Level, Profile | None], Awaitable[bytes]]


def level_named(name: str) -> Level:
    """``"B-LT"`` → :attr:`Level.B_LT`; ValueError naming the levels otherwise."""
    if name not in _LEVELS:
        raise ValueError(f"one of {', '.join(_LEVELS)} (got {name!r})")
    return _LEVELS[name]


@dataclass(frozen=True)
class XmlSigning:
    """Sign an XML document (enveloped XAdES)."""

    document: bytes
    #: Key id; the default key when None.
    key: str | None = None
    #: None: the profile's XML level, else ``[signing] xml_level``.
    level: Level | None = None
    #: The document must be this profile's (root element and XSD).
    profile: Profile | None = None
    #: Whose share of the drafting workers it uses, and who the journal names.
    client: str | None = None


@dataclass(frozen=True)
class PdfSigning:
    """Sign a PDF (PAdES)."""

    document: bytes
    key: str | None = None
    #: None: ``[signing] pdf_level``.
    level: Level | None = None
    reason: str | None = None
    location: str | None = None
    contact_info: str | None = None
    stamp: VisibleStamp | None = None
    require_pdfa: bool = False
    client: str | None = None


@dataclass(frozen=True)
class FormSigning:
    """Run a profile's form recipe: the PDF signed and embedded, the XML signed."""

    profile: Profile
    xml: bytes
    #: The PDF to embed; None when the XML carries it already.
    pdf: bytes | None = None
    key: str | None = None
    client: str | None = None


@dataclass(frozen=True)
class Signed:
    """A signed document and what describes it."""

    data: bytes
    #: The document's own signature level (a form: its XML's, ``Level.NONE`` if unsigned).
    level: Level
    key_id: str
    #: ``[trust.lists] at_signing``'s verdict; None without trusted lists.
    verdict: SigningVerdict | None = None
    #: PDF: the signature field's name.
    field_name: str | None = None
    #: A form: its embedded PDF's PAdES level, and its UUID.
    pdf_level: Level | None = None
    uuid: str | None = None


def xades_options(
    settings: SigningSettings, namespaces: dict[str, str] | None = None
) -> XadesOptions:
    """The engine's options from ``[signing]`` (raises ValueError when inconsistent)."""
    policy = None
    if settings.xml_policy_id:
        if not settings.xml_policy_digest:
            raise ValueError("[signing] xml_policy_id needs xml_policy_digest (base64)")
        try:
            base64.b64decode(settings.xml_policy_digest, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("[signing] xml_policy_digest must be base64") from None
        policy = SignaturePolicy(
            identifier=settings.xml_policy_id,
            digest_value=settings.xml_policy_digest,
            digest_algorithm=settings.xml_policy_digest_algorithm,
            uri=settings.xml_policy_uri,
        )
    prefixes = dict(namespaces or {})
    for entry in settings.xml_namespaces:
        prefix, sep, uri = entry.partition("=")
        if not sep or not prefix.strip() or not uri.strip():
            raise ValueError(f"[signing] xml_namespaces: {entry!r} is not 'prefix=uri'")
        prefixes[prefix.strip()] = uri.strip()
    return XadesOptions(
        placement=settings.xml_signature_parent,
        namespaces=prefixes,
        policy=policy,
        claimed_roles=settings.xml_signer_roles,
        allow_parallel=settings.xml_allow_parallel,
        namespace_bounds=NamespaceBounds(
            settings.xml_max_namespaces, settings.xml_max_namespaces_in_scope
        ),
    )


def xades_signer(services: Services, client: str | None = None) -> XadesFunction:
    """The XAdES engine bound to the trust layer, ``[signing]``'s options (a profile's
    namespaces added, ``[signing] xml_namespaces`` winning) and the drafting workers;
    *client*: whose share of the workers it uses."""
    trust = services.trust
    timestamps = TrustTimestampSource(trust.tsa) if trust.tsa.endpoints else None
    validation = TrustValidationDataSource(trust.revocation)

    async def xades(document: bytes, key: Signer, level: Level, form: Profile | None) -> bytes:
        options = services.xades
        if form is not None and form.namespaces:
            namespaces = {**form.namespaces, **options.namespaces}
            options = dataclasses.replace(options, namespaces=namespaces)
        return await sign_xml(
            document,
            key,
            level,
            options,
            timestamps=timestamps,
            validation_data=validation,
            workers=services.xml_workers.current(),
            client=client,
        )

    return xades


async def _signer(services: Services, key: str | None, signer: Signer | None) -> Signer:
    return signer if signer is not None else await services.keys.acquire(key)


async def sign_xml_document(
    services: Services, request: XmlSigning, *, signer: Signer | None = None
) -> Signed:
    """Sign an XML document; with a profile it must be that profile's (its root and XSD:
    :class:`~sidecar.signing.forms.SchemaViolation`). *signer*: a key already acquired
    (a batch's), instead of ``request.key``."""
    started = time.perf_counter()
    settings = services.settings
    level = request.level or (request.profile and request.profile.xml_level)
    level = level or _LEVELS[settings.signing.xml_level]
    key = await _signer(services, request.key, signer)
    profile = request.profile
    if profile is not None:
        limit = settings.limits.xml
        # Parsing and XSD validation are CPU work: off the event loop.
        await asyncio.to_thread(
            lambda: check_profile(parse_xml(request.document, max_size=limit), profile)
        )
    before_signing(services.trust, key)
    signed = await xades_signer(services, request.client)(request.document, key, level, profile)
    verdict = after_signing(services.trust, key)
    log.info("signed an XML document at %s with key %s", level.value, key.id)
    await services.signature_made(
        SignatureEvent(
            "sign.xml",
            key.id,
            level.value,
            signed,
            (("xades", level),),
            client=request.client or "",
            seconds=time.perf_counter() - started,
            detail={"profile": profile.name} if profile is not None else {},
        )
    )
    return Signed(signed, level, key.id, verdict)


async def sign_pdf_document(
    services: Services, request: PdfSigning, *, signer: Signer | None = None
) -> Signed:
    """PAdES-sign a PDF at the requested level (``[signing] pdf_level`` otherwise)."""
    started = time.perf_counter()
    level = request.level or level_named(services.settings.signing.pdf_level)
    key = await _signer(services, request.key, signer)
    options = PadesOptions(
        level=level,
        reason=request.reason,
        location=request.location,
        contact_info=request.contact_info,
        stamp=request.stamp,
        require_pdfa=request.require_pdfa,
    )
    before_signing(services.trust, key)
    signed = await services.pades.sign(request.document, key, options, client=request.client)
    verdict = after_signing(services.trust, key)
    log.info(
        "signed a PDF at %s with key %s (%d -> %d bytes)",
        signed.level.value,
        key.id,
        len(request.document),
        len(signed.data),
    )
    await services.signature_made(
        SignatureEvent(
            "sign.pdf",
            key.id,
            signed.level.value,
            signed.data,
            (("pades", signed.level),),
            client=request.client or "",
            seconds=time.perf_counter() - started,
        )
    )
    return Signed(signed.data, signed.level, key.id, verdict, field_name=signed.field_name)


async def _run_form(
    services: Services,
    request: FormSigning,
    key: Signer,
    xades: XmlSignFunction,
    started: float,
    made: list[Level] | None = None,
) -> Signed:
    """The recipe with *xades*, its event, its result; *made*: the XML levels *xades*
    made, when it may make another than the profile's (the last one is the form's)."""
    profile = request.profile
    before_signing(services.trust, key)
    form = await sign_form(
        profile, request.xml, request.pdf, key, pades=services.pades, sign_xml=xades
    )
    if made:
        form = dataclasses.replace(form, xml_level=made[-1])
    verdict = after_signing(services.trust, key)
    xml_level = form.xml_level or Level.NONE
    log.info(
        "signed a %s form (PDF %s, XML %s) with key %s",
        profile.name,
        form.pdf_level.value if form.pdf_level else "-",
        form.xml_level.value if form.xml_level else "unsigned",
        key.id,
    )
    signatures: list[tuple[str, Level]] = []
    if form.pdf_level is not None:
        signatures.append(("pades", form.pdf_level))
    if form.xml_level is not None:
        signatures.append(("xades", form.xml_level))
    await services.signature_made(
        SignatureEvent(
            f"sign.{profile.name}",
            key.id,
            xml_level.value,
            form.xml,
            tuple(signatures),
            client=request.client or "",
            uuid=form.uuid or "",
            seconds=time.perf_counter() - started,
            detail={
                "profile": profile.name,
                "pdf_level": form.pdf_level.value if form.pdf_level else None,
            },
        )
    )
    return Signed(form.xml, xml_level, key.id, verdict, pdf_level=form.pdf_level, uuid=form.uuid)


async def sign_form_document(
    services: Services, request: FormSigning, *, signer: Signer | None = None
) -> Signed:
    """Run the form recipe of ``request.profile`` (:func:`sidecar.signing.forms.sign_form`)."""
    started = time.perf_counter()
    key = await _signer(services, request.key, signer)
    return await _run_form(services, request, key, xades_signer(services, request.client), started)


class FeeNoteSigner(Protocol):
    """``async (xml, *, client="") -> Signed``; *client*: who deposited it (the journal)."""

    def __call__(self, xml: bytes, *, client: str = "") -> Awaitable[Signed]: ...


def fee_note_signer(
    services: Services, *, fallback_level: Level | None = None
) -> FeeNoteSigner | None:
    """The ``fee-note`` recipe with the default key, for the CNS deposit of an unsigned
    fee note (the PDF must already be embedded); None when there is no default key or
    no ``fee-note`` profile (such a deposit is refused).

    *fallback_level* (the CNS offline mode): when the TSA or the revocation data cannot
    be had (:class:`UpstreamFailure` ``unavailable``/``timeout``), the XML is signed at
    this level instead; the result's ``level`` says which level was made."""
    profile = services.profiles.get("fee-note")
    if services.keys.default_id is None or profile is None:
        return None
    xades = xades_signer(services)

    async def sign(xml: bytes, *, client: str = "") -> Signed:
        started = time.perf_counter()
        key = await services.keys.acquire(None)
        made: list[Level] = []

        async def with_fallback(
            document: bytes, signer: Signer, level: Level, form: Profile
        ) -> bytes:
            try:
                signed = await xades(document, signer, level, form)
            except UpstreamFailure as exc:
                if fallback_level is None or exc.kind == "error":
                    raise
                log.warning(
                    "fee note signed at %s, %s unreachable (%s): held for a timestamp",
                    fallback_level.value,
                    exc.service,
                    exc.detail,
                )
                signed = await xades(document, signer, fallback_level, form)
                level = fallback_level
            made.append(level)
            return signed

        return await _run_form(
            services,
            FormSigning(profile, xml, client=client or None),
            key,
            with_fallback,
            started,
            made,
        )

    return sign
