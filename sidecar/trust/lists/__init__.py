"""The EU trusted lists (ETSI TS 119 612) as a part of the trust layer.

Built on pyHanko's ``pyhanko.sign.validation.qualified`` (its ``etsi`` extra): the
lists are fetched, verified and cached by :mod:`.source`, stored by :mod:`.cache`;
:mod:`.qualify` says whether a signer certificate and a timestamp are qualified;
:mod:`.service` keeps the lists current in the daemon. pyHanko's private hooks are
used only in :mod:`._pyhanko`.
"""

from .cache import ListCache
from .errors import ListError, ListSignatureInvalid, ListStale, ListUnavailable, ListUnparseable
from .qualify import (
    SignerQualification,
    TimestampQualification,
    chain_of,
    qualify_signer,
    qualify_timestamp,
)
from .source import (
    LOTL_KEY,
    ListedService,
    ListInfo,
    ListPolicy,
    TrustedLists,
    bundled_lotl_signers,
    fetch_lists,
    read_lists,
)

__all__ = [
    "LOTL_KEY",
    "ListCache",
    "ListError",
    "ListInfo",
    "ListPolicy",
    "ListSignatureInvalid",
    "ListStale",
    "ListUnavailable",
    "ListUnparseable",
    "ListedService",
    "SignerQualification",
    "TimestampQualification",
    "TrustedLists",
    "bundled_lotl_signers",
    "chain_of",
    "fetch_lists",
    "qualify_signer",
    "qualify_timestamp",
    "read_lists",
]
