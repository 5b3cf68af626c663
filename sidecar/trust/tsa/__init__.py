"""RFC 3161 timestamps: the client, and the one reader and check of their tokens.

The parts, each its own module:

- :mod:`.errors` — the :class:`TsaError` family (a stable ``reason`` per cause);
- :mod:`.endpoint` — one ``[[trust.tsa]]`` as used: URL, timeout, credentials;
- :mod:`.token` — requests (:func:`make_request`, :func:`parse_request`), the one
  reader of a token (:func:`read_token`) and the checked :class:`TimeStampToken`;
- :mod:`.check` — :func:`check_reply`, every check a reply passes before use (the
  client's, and ``sidecar doctor``'s probe's);
- :mod:`.paths` — :class:`TsaPathCache`, validated TSA certificate paths;
- :mod:`.client` — :class:`TimeStampClient`: failover over several TSAs, retries,
  circuit breakers, issuer fetching; :class:`CheckedTimeStamper` for pyHanko.

Engines use :meth:`TimeStampClient.timestamp` (XAdES) or
:meth:`TimeStampClient.timestamper` (PAdES); the API relays callers' requests with
:meth:`TimeStampClient.relay`.
"""

from ..._hooks.asn1crypto_hooks import ReceivedContentInfo
from .check import (
    ISSUER_RETRY_AFTER,
    IssuerFetcher,
    check_reply,
)
from .check import (
    _check_token_signature as _check_token_signature,  # tests reach the check's parts
)
from .check import (
    _check_tsa_eku as _check_tsa_eku,
)
from .client import (
    MAX_REPLY_BYTES,
    CheckedTimeStamper,
    ExchangeObserver,
    TimeStampClient,
    TsaStatus,
    fetch_issuers,
)
from .endpoint import TsaEndpoint
from .errors import (
    TsaError,
    TsaIssuerUnavailable,
    TsaRejected,
    TsaReplyError,
    TsaTimeout,
    TsaUnavailable,
)
from .paths import TsaPathCache, TsaPathStats
from .token import (
    DIGEST_SIZES,
    RelayedReply,
    TimeStampToken,
    TokenContents,
    complete_chain,
    designates,
    make_request,
    parse_request,
    read_token,
)

__all__ = [
    "DIGEST_SIZES",
    "ISSUER_RETRY_AFTER",
    "MAX_REPLY_BYTES",
    "CheckedTimeStamper",
    "ExchangeObserver",
    "IssuerFetcher",
    "ReceivedContentInfo",
    "RelayedReply",
    "TimeStampClient",
    "TimeStampToken",
    "TokenContents",
    "TsaEndpoint",
    "TsaError",
    "TsaIssuerUnavailable",
    "TsaPathCache",
    "TsaPathStats",
    "TsaRejected",
    "TsaReplyError",
    "TsaStatus",
    "TsaTimeout",
    "TsaUnavailable",
    "check_reply",
    "complete_chain",
    "designates",
    "fetch_issuers",
    "make_request",
    "parse_request",
    "read_token",
]
