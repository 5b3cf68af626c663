"""asn1crypto's private hooks: the cached header of an encoded value, and ``_copy``.

asn1crypto takes any length header whose last byte is 0x80 for an indefinite length
and then re-encodes the whole value (its subtree included) on every ``dump()``. For
values whose bytes are known — signed data received from a TSA, a SignerInfo we built
definite-length — the two classes below give those bytes back instead.
"""

from __future__ import annotations

from collections.abc import Callable

from asn1crypto import cms

__all__ = ["DefiniteSignerInfo", "ReceivedContentInfo", "as_definite_signer_info"]


class ReceivedContentInfo(cms.ContentInfo):  # type: ignore[misc]  # asn1crypto: untyped
    """A ``ContentInfo`` as received from its signer: :meth:`dump` gives those bytes.

    A token is signed data and must travel unchanged; re-encoding it each time a CMS
    object holding it is written is also most of what PAdES signing costs otherwise.
    ``_copy`` is asn1crypto's (internal) hook of ``copy()``/``deepcopy()``: the copy
    keeps the received bytes.
    """

    _received: bytes | None = None

    @classmethod
    def received(cls, der: bytes) -> ReceivedContentInfo:
        value = cls.load(der, strict=True)
        value._received = der
        return value

    def dump(self, force: bool = False) -> bytes:
        if self._received is not None:
            return self._received
        return super().dump(force)

    def __setitem__(self, key: object, value: object) -> None:
        self._received = None  # changed: no longer what was received
        super().__setitem__(key, value)

    def _copy(self, other: ReceivedContentInfo, copy_func: Callable[..., object]) -> None:
        super()._copy(other, copy_func)
        self._received = getattr(other, "_received", None)


class DefiniteSignerInfo(cms.SignerInfo):  # type: ignore[misc]  # asn1crypto: untyped
    """A SignerInfo we build, written without asn1crypto's indefinite-length guess.

    A SignerInfo of 0x0a80 = 2688 bytes (an RSA-2048 signature with the sandbox TSA's
    token) would be re-encoded, signed attributes and token included, on every dump:
    20-30 ms per PAdES signature, dumped several times. The SignerInfo is ours, built
    definite-length, so clearing the cached ``_header`` makes asn1crypto recompute the
    header from the (kept) contents alone.
    """

    def dump(self, force: bool = False) -> bytes:
        if not force:
            self._header = None
        return super().dump(force)


def as_definite_signer_info(info: cms.SignerInfo) -> DefiniteSignerInfo:
    """``info`` read back from its own encoding, as a :class:`DefiniteSignerInfo`."""
    loaded = cms.SignerInfo.load(info.dump())
    loaded.__class__ = DefiniteSignerInfo  # same layout: only dump() differs
    return loaded
