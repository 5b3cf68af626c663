"""The TSA errors: what failed, with a stable short ``reason`` code.

Messages are meant for people: what failed and what to do. The low-level cause
(an ASN.1 parser's text, an exception name) goes to the log only.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyhanko.sign.timestamps.common_utils import TimestampRequestError

from ...errors import UpstreamError, UpstreamFailed, UpstreamSlow, UpstreamUnavailable


class TsaError(TimestampRequestError, UpstreamError):
    """A timestamp could not be obtained. ``reason`` is a stable short code."""

    reason = "tsa_error"

    def __init__(self, message: str, *, url: str | None = None, reason: str | None = None):
        super().__init__(message)
        self.url = url
        if reason is not None:
            self.reason = reason
        self.failures: tuple[TsaError, ...] = ()


class TsaUnavailable(TsaError, UpstreamUnavailable):
    """No TSA could be reached (refused, reset, circuit open, none configured)."""

    reason = "unreachable"
    #: Always set: seconds until the circuit may let a request through.
    retry_after: float

    def __init__(self, message: str, *, retry_after: float = 1.0, **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.retry_after = retry_after


class TsaIssuerUnavailable(TsaUnavailable):
    """The TSA answered, but its issuer certificate could not be fetched to check the
    reply's chain (the caIssuers host is unreachable): not the TSA's fault."""

    reason = "issuer_unavailable"


class TsaTimeout(TsaError, UpstreamSlow):
    """A TSA did not answer within its timeout."""

    reason = "timeout"


class TsaReplyError(TsaError, UpstreamFailed):
    """A TSA answered, but the answer is unusable (HTTP error, malformed, failed check)."""

    reason = "bad_reply"


class TsaRejected(TsaReplyError):
    """The TSA answered with a PKIStatus other than granted."""

    reason = "rejected"

    def __init__(self, message: str, *, fail_info: Sequence[str] = (), **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.fail_info = tuple(fail_info)
