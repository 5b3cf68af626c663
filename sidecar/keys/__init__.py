"""Signing keys: PKCS#12 files and PKCS#11 tokens behind one :class:`Signer`.

Keys know tokens and nothing of documents: the engines hand bytes in and get
signatures back.
"""

from .authorisation import Authorisation, authorised, current_authorisation
from .errors import (
    CertificateNotValid,
    KeyConfigError,
    KeyLayerError,
    KeyLocked,
    KeyNotFound,
    UnsupportedAlgorithm,
)
from .key_settings import KEYRING_SERVICE, KeyConfig
from .registry import KeyRegistry, create_signer
from .signer import KeyInfo, Signer

__all__ = [
    "KEYRING_SERVICE",
    "Authorisation",
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
    "authorised",
    "create_signer",
    "current_authorisation",
]
