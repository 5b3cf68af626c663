"""One document of a batch (:mod:`sidecar.batches`), signed by its kind's operation.

A batch's documents name their profile and level as text; :func:`batch_request`
reads one into the operation's typed request (:class:`UnknownProfile`, or ValueError
for a level that is none), :func:`sign_batch_document` signs it with the batch's key
(one card session for the batch) and gives the :class:`~sidecar.batches.SignedDocument`
a batch keeps.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..batches import BatchDocument, SignedDocument
from ..keys import Signer
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

__all__ = ["BatchRequest", "UnknownProfile", "batch_request", "sign_batch_document"]

BatchRequest = XmlSigning | PdfSigning | FormSigning


class UnknownProfile(LookupError):
    """A document names a profile the daemon does not have."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no profile {name!r}")
        self.name = name


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
        level = level_named(doc.level) if doc.level is not None else None
        return XmlSigning(doc.xml, level=level, profile=profile, client=owner)
    assert doc.pdf is not None
    level = parse_level(doc.level or services.settings.signing.pdf_level)
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
