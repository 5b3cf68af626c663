"""Batches (:mod:`sidecar.batches`): many documents, one authorisation, each document
signed by its kind's operation.

:func:`open_batch` starts one (the API's ``POST /v1/batches``, ``sidecar sign`` on
several files). A batch's documents name their profile and level as text;
:func:`batch_request` reads one into the operation's typed request
(:class:`UnknownProfile`, :class:`InvalidLevel`: that document's own failure),
:func:`sign_batch_document` signs it with the batch's key (one card session for the
batch) and gives the :class:`~sidecar.batches.SignedDocument` a batch keeps.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..batches import Batch, BatchDocument, ProblemOf, SignedDocument, SignOne
from ..errors import BadInput, NotFound
from ..keys import Authorisation, Signer
from ..signing.pades import parse_level
from ..signing.profiles import Profile
from .signing import (
    FormSigning,
    PdfSigning,
    XmlSigning,
    level_named,
    sign_form_document,
    sign_pdf_document,
    sign_xml_document,
)

if TYPE_CHECKING:
    from .services import Services

__all__ = [
    "BatchRequest",
    "InvalidLevel",
    "UnknownProfile",
    "batch_request",
    "batch_signer",
    "open_batch",
    "sign_batch_document",
]

BatchRequest = XmlSigning | PdfSigning | FormSigning


class UnknownProfile(NotFound, LookupError):
    """A document names a profile the daemon does not have."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no profile {name!r}")
        self.name = name


class InvalidLevel(BadInput, ValueError):
    """A document asks for a level that is none (the message names the levels)."""


def _profile(services: Services, name: str) -> Profile:
    profile = services.profiles.get(name)
    if profile is None:
        raise UnknownProfile(name)
    return profile


def batch_request(services: Services, doc: BatchDocument, owner: str | None) -> BatchRequest:
    """The typed request for *doc*; *owner*: whose share of the drafting workers."""
    if doc.kind == "form":
        assert doc.xml is not None
        return FormSigning(_profile(services, doc.profile or ""), doc.xml, doc.pdf, client=owner)
    if doc.kind == "xml":
        assert doc.xml is not None
        profile = _profile(services, doc.profile) if doc.profile else None
        try:
            level = level_named(doc.level) if doc.level is not None else None
        except ValueError as exc:
            raise InvalidLevel(str(exc)) from None
        return XmlSigning(doc.xml, level=level, profile=profile, client=owner)
    assert doc.pdf is not None
    try:
        level = parse_level(doc.level or services.settings.signing.pdf_level)
    except ValueError as exc:
        raise InvalidLevel(str(exc)) from None
    return PdfSigning(doc.pdf, level=level, reason=doc.reason, location=doc.location, client=owner)


async def sign_batch_document(
    services: Services, request: BatchRequest, signer: Signer
) -> SignedDocument:
    """Sign one document with the batch's *signer*, ready for its authorisation."""
    await signer.ready()
    if isinstance(request, FormSigning):
        form = await sign_form_document(services, request, signer=signer)
        info = {"level": form.level.value}
        if form.pdf_level:
            info["pdf_level"] = form.pdf_level.value
        if form.uuid:
            info["uuid"] = form.uuid
        return SignedDocument(form.data, "application/xml", info)
    if isinstance(request, XmlSigning):
        signed = await sign_xml_document(services, request, signer=signer)
        return SignedDocument(signed.data, "application/xml", {"level": signed.level.value})
    signed = await sign_pdf_document(services, request, signer=signer)
    return SignedDocument(signed.data, "application/pdf", {"level": signed.level.value})


def batch_signer(services: Services, signer: Signer, owner: str | None) -> SignOne:
    """``async (document) -> SignedDocument``: read, then signed by its kind's operation
    with *signer*, on the drafting-worker share of *owner*."""

    async def sign_one(doc: BatchDocument) -> SignedDocument:
        return await sign_batch_document(services, batch_request(services, doc, owner), signer)

    return sign_one


async def open_batch(
    services: Services,
    documents: list[BatchDocument],
    signer: Signer,
    *,
    owner: str,
    authorisation: Authorisation | None,
    problem_of: ProblemOf,
    keep: bool = True,
) -> Batch:
    """Sign the first document now (a PIN the token refuses raises
    :class:`~sidecar.keys.KeyLocked` here, for the whole batch), the others in the
    background; *problem_of* says how a document's failure is reported. *keep*: the
    daemon's batches keep it (for its owner to read); the CLI reads its own."""
    settings = services.settings.signing
    batch = Batch(
        documents,
        owner=owner,
        key_id=signer.id,
        authorisation=authorisation,
        max_minutes=settings.batch_max_minutes,
    )
    sign_one = batch_signer(services, signer, owner)
    await batch.sign_first(sign_one, problem_of)
    if keep:
        services.batches.add(batch)
    batch.start(sign_one, problem_of, concurrency=settings.batch_concurrency)
    return batch
