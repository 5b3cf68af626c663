"""pyHanko's private hooks: the PDF writer's metadata rewrite and the signed attributes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.sign.attributes import CMSAttributeProvider
from pyhanko.sign.signers.pdf_cms import Signer

__all__ = ["AttrProviderRewritingSigner", "MetadataKeepingWriter"]


class MetadataKeepingWriter(IncrementalPdfFileWriter):
    """An incremental writer that leaves the document's Info dictionary and XMP alone.

    ``_update_meta`` is pyHanko's (internal) hook for the Info/XMP rewrite on every
    write; the maintainer's own advice for turning it off is to override it (pyHanko
    issue #223). A PDF/A document's metadata must not change under a signature.
    """

    def _update_meta(self) -> None:
        return None


class AttrProviderRewritingSigner(Signer):
    """A pyHanko signer whose signed-attribute providers pass through :meth:`rewrite_provider`.

    ``_signed_attr_providers`` is the (internal) generator of the providers pyHanko
    asks for each signed attribute; a subclass replaces some by overriding the public
    :meth:`rewrite_provider` instead of the private generator.
    """

    def rewrite_provider(self, provider: CMSAttributeProvider) -> CMSAttributeProvider:
        """The provider to use in place of ``provider`` (itself by default)."""
        return provider

    def _signed_attr_providers(self, *args: Any, **kwargs: Any) -> Iterator[CMSAttributeProvider]:
        for provider in super()._signed_attr_providers(*args, **kwargs):
            yield self.rewrite_provider(provider)
