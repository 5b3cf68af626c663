"""pyHanko's private hooks: the PDF writer's metadata rewrite and its reader given in,
the signed attributes, and the reading of hexadecimal strings."""

from __future__ import annotations

import binascii
from collections.abc import Iterator
from typing import IO, Any

from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.attributes import CMSAttributeProvider
from pyhanko.sign.signers.pdf_cms import Signer

__all__ = [
    "AttrProviderRewritingSigner",
    "MetadataKeepingWriter",
    "install_fast_hex_strings",
    "read_hex_string",
]


class MetadataKeepingWriter(IncrementalPdfFileWriter):
    """An incremental writer that leaves the document's Info dictionary and XMP alone.

    ``_update_meta`` is pyHanko's (internal) hook for the Info/XMP rewrite on every
    write; the maintainer's own advice for turning it off is to override it (pyHanko
    issue #223). A PDF/A document's metadata must not change under a signature.
    """

    def __init__(
        self,
        input_stream: IO[bytes],
        *,
        reader: PdfFileReader | None = None,
        strict: bool = True,
    ) -> None:
        """``reader``: the document already opened on ``input_stream`` — what it read
        and resolved (xref, trailer, objects) is used, not read again. It is pyHanko's
        ``prev`` parameter, documented as internal API (its public ``from_reader``
        passes it)."""
        super().__init__(input_stream, prev=reader, strict=strict)

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


#: pyHanko's own reader, kept for what the fast path leaves to it.
_PYHANKO_READ_HEX = generic.read_hex_string_from_stream
_WHITESPACE = b" \n\r\t\f\x00"
_HEX_DIGITS = b"0123456789abcdefABCDEF"


def read_hex_string(stream: IO[bytes]) -> generic.ByteStringObject | generic.TextStringObject:
    """pyHanko's ``read_hex_string_from_stream``, in chunks rather than byte by byte.

    pyHanko reads a hex string one byte per call (whitespace and comments skipped
    each time): a signature's ``/Contents`` (8-32 K hex digits, mostly the zeros of its
    placeholder) costs ~2 µs a digit, more than everything else read from a signed
    PDF of 100 KB. This reads up to the ``>`` at once and decodes it in one call. What
    it does not handle as pyHanko does — a ``%`` (a comment inside the string), a
    character that is no hex digit (pyHanko's error), no ``>`` before the end — goes to
    pyHanko's own reader from the same position.
    """
    start = stream.tell()
    stream.read(1)  # the '<'
    chunks = []
    while True:
        chunk = stream.read(16384)
        if not chunk:
            stream.seek(start)
            return _PYHANKO_READ_HEX(stream)
        end = chunk.find(b">")
        if end >= 0:
            chunks.append(chunk[:end])
            stream.seek(end - len(chunk) + 1, 1)  # just past the '>'
            break
        chunks.append(chunk)
    digits = b"".join(chunks).translate(None, _WHITESPACE)
    if digits.translate(None, _HEX_DIGITS):  # a comment, or what pyHanko refuses
        stream.seek(start)
        return _PYHANKO_READ_HEX(stream)
    if len(digits) % 2:
        digits += b"0"
    return generic.pdf_string(binascii.unhexlify(digits))


def install_fast_hex_strings() -> None:
    """Make pyHanko's object reader use :func:`read_hex_string` (this process, once).

    ``read_hex_string_from_stream`` is the module-level function pyHanko's
    ``read_object`` calls by its global name for a ``<`` not followed by ``<``.
    """
    generic.read_hex_string_from_stream = read_hex_string
