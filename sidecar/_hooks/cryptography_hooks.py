"""cryptography's private hooks: the salt length a ``PSS`` padding was made with."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import padding

__all__ = ["pss_salt_length"]


def pss_salt_length(pss: padding.PSS) -> object:
    """The ``salt_length`` given to ``PSS(...)``: an int or one of ``PSS``'s markers
    (``PSS.DIGEST_LENGTH``, ``PSS.MAX_LENGTH``, ``PSS.AUTO``).

    cryptography has no public accessor for it (``_salt_length``); a token's PSS uses a
    salt as long as the digest, so the key wrappers must refuse any other.
    """
    return pss._salt_length
