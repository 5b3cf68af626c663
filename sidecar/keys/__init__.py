"""Signing keys: PKCS#12 files and PKCS#11 tokens behind one :class:`Signer`.

Keys know tokens and nothing of documents: the engines hand bytes in and get
signatures back.
"""

from .config import KEYRING_SERVICE, KeyConfig
from .errors import (
    CertificateNotValid,
    KeyConfigError,
    KeyLayerError,
    KeyLocked,
    KeyNotFound,
    UnsupportedAlgorithm,
)
from .registry import KeyRegistry, create_signer
from .signer import KeyInfo, Signer

__all__ = [
    "KEYRING_SERVICE",
    "CertificateNotValid",
    "KeyConfig",
    "KeyConfigError",
    "KeyInfo",
    "KeyLayerError",
    "KeyLocked",
    "KeyNotFound",
    "KeyRegistry",
    "Signer",
    "UnsupportedAlgorithm",
    "create_signer",
]
