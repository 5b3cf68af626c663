"""One error vocabulary: a common root and one family per cause.

Every exception sidecar raises below the API derives from :class:`SidecarError` and
from exactly one family, which says *why* it failed. The families know no HTTP: the
API alone decides how each is answered (:mod:`sidecar.api.problems`, one table, most
specific class first), so an error an engine adds later is answered by its family
rather than as an unexplained 500.

An engine's errors keep their own base where callers catch it (``except KeyLayerError``,
``except TsaError``): a class names its family as a second base. A base that only
gathers one engine's errors of several causes (:class:`~sidecar.keys.KeyLayerError`,
:class:`~sidecar.trust.revocation.RevocationError`) derives from the root alone and is
never raised as such.

The families carry no status and no code; what an answer needs is on the instance:
``detail`` (or the message), and :attr:`SidecarError.retry_after` where waiting helps.
"""

from __future__ import annotations

__all__ = [
    "FAMILIES",
    "BadInput",
    "Busy",
    "InternalError",
    "KeyUnavailable",
    "Misconfigured",
    "NotFound",
    "Refused",
    "SidecarError",
    "StorageError",
    "UpstreamError",
    "UpstreamFailed",
    "UpstreamSlow",
    "UpstreamUnavailable",
]


class SidecarError(Exception):
    """The root of every error sidecar raises."""

    #: Seconds after which trying again may succeed; ``None``: no advice.
    retry_after: float | None = None


class BadInput(SidecarError):
    """The caller's input cannot be processed: a malformed or unacceptable document
    (XML, PDF, form), a bad parameter. Sending the same again fails the same way."""


class Refused(SidecarError):
    """The input is well-formed, but a rule forbids the operation: an expired or
    revoked certificate, an untrusted chain, a message already accepted or past the
    state that allows it."""


class NotFound(SidecarError):
    """What the caller named does not exist: a key, a message, a profile."""


class KeyUnavailable(SidecarError):
    """The signing key exists but cannot sign now: token absent, PIN missing or wrong,
    card blocked. A person has to act (plug the card, store the PIN)."""


class UpstreamError(SidecarError):
    """A service sidecar depends on (TSA, OCSP/CRL, trusted lists, the CNS) failed.
    The three subclasses say how; this class alone: it answered something unusable."""


class UpstreamFailed(UpstreamError):
    """The service answered, with an error or something unusable."""


class UpstreamSlow(UpstreamError):
    """The service did not answer in time (the request may have been processed)."""


class UpstreamUnavailable(UpstreamError):
    """The service cannot be reached (refused, reset, circuit open); try again later."""


class StorageError(SidecarError):
    """A store of the daemon cannot write (disk full, read-only, failing): nothing was
    accepted or changed; try again later."""


class Busy(SidecarError):
    """The daemon is saturated or stopping: no worker took the job in time."""


class Misconfigured(SidecarError):
    """The installation or configuration is wrong: the operator must mend it (a bad
    setting, an unusable key file or module, a directory that cannot be written)."""


class InternalError(SidecarError):
    """A failure of sidecar itself (a worker died, a library failed unexpectedly)."""


#: The families, one per cause: every error below the API derives from exactly one.
FAMILIES: tuple[type[SidecarError], ...] = (
    BadInput,
    Refused,
    NotFound,
    KeyUnavailable,
    UpstreamError,
    StorageError,
    Busy,
    Misconfigured,
    InternalError,
)
