"""Outcomes of certificate validation, reused only while nothing they depend on differs.

Every fee note the sandbox's CNS simulator checks, and every one ``POST /v1/verify``
judges, carries the same signer and TSA certificates and, for minutes at a time, the
same OCSP responses. Validating the signer's and the TSA's paths again each time
(pyhanko-certvalidator: path building, every signature, each OCSP response and its
responder's authorisation) was most of what verifying a XAdES-B-LT document cost.

An outcome is kept under a key made of *everything* it depends on:

- what was checked (the signer's or a TSA's usage) and the certificate (its DER);
- the trust anchors, the other certificates, the CRLs and the OCSP responses the
  validation was given, each by the SHA-256 of its DER, in order; so a different or
  revoked certificate, other revocation data or other anchors is another key;
- the *window* of the validation time. pyhanko-certvalidator compares the validation
  time only with instants written in those inputs (validity periods, thisUpdate and
  nextUpdate, revocation times), shifted by the time tolerance, or, for revocation
  data without nextUpdate, by its 30-minute fallback. Every instant written in any
  input (each UTCTime and GeneralizedTime in its DER) is the centre of a zone of
  ± (tolerance + 1 s), repeated 30 minutes later; between two consecutive zones each
  of those comparisons comes out the same, so the outcome does too. A validation time
  inside a zone is never cached, nor are inputs with a time this module cannot read.

Bounded: the least recently used entries are forgotten past ``size``. Thread-safe (a
worker process may verify on several threads).
"""

from __future__ import annotations

import bisect
import hashlib
import re
import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Sequence
from datetime import UTC, datetime, timedelta

from asn1crypto import core, x509
from pyhanko_certvalidator.policy_decl import FRESHNESS_FALLBACK_VALIDITY_DEFAULT

__all__ = ["MISS", "OutcomeCache", "instants"]

#: What :meth:`OutcomeCache.get` gives when nothing is kept (``None`` is an outcome).
MISS = object()

# A UTCTime (tag 23) or GeneralizedTime (tag 24), short-form length, anywhere in the
# DER (nested in OCTET STRINGs too: extensions, the OCSP BasicResponse). A match that
# is not a time in fact only adds a zone: more caution, never less.
_TIME = re.compile(rb"([\x17\x18])([\x0b-\x23])")
_DIGITS = re.compile(rb"[0-9]{10}")


def instants(der: bytes) -> tuple[datetime, ...] | None:
    """Every UTCTime and GeneralizedTime written in ``der``; ``None`` if one of them
    cannot be read as an aware time (then nothing depending on it is cached)."""
    found: list[datetime] = []
    for match in _TIME.finditer(der):
        start, length = match.end(), match.group(2)[0]
        content = der[start : start + length]
        if not _DIGITS.match(content):
            continue  # not a time: no time value starts without ten digits
        kind = core.UTCTime if match.group(1) == b"\x17" else core.GeneralizedTime
        try:
            value = kind.load(der[match.start() : start + length]).native
        except (ValueError, TypeError, OverflowError):
            return None
        if not isinstance(value, datetime) or value.utcoffset() is None:
            return None
        found.append(value)
    return tuple(found)


_EARLIEST = datetime.min.replace(tzinfo=UTC)
_LATEST = datetime.max.replace(tzinfo=UTC)


def _shifted(times: Iterable[datetime], by: timedelta) -> list[datetime]:
    """``times`` moved by ``by``; those moved past what a datetime holds are left out
    (no validation time can be there)."""
    moved = []
    for value in times:
        try:
            moved.append(value + by)
        except OverflowError:
            continue
    return moved


def _digest(der: bytes) -> bytes:
    return hashlib.sha256(der).digest()


class OutcomeCache:
    """Validation outcomes by exact inputs and validation-time window (LRU)."""

    def __init__(self, size: int = 256, *, tolerance: timedelta) -> None:
        self.size = size
        #: Half the width of the zone around each instant: more than the tolerance
        #: pyhanko-certvalidator applies to every comparison with the validation time.
        self._margin = abs(tolerance) + timedelta(seconds=1)
        self._outcomes: OrderedDict[Hashable, object] = OrderedDict()
        # Instants by input (its SHA-256): read once per certificate or response.
        self._instants: OrderedDict[bytes, tuple[datetime, ...] | None] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._outcomes)

    def clear(self) -> None:
        with self._lock:
            self._outcomes.clear()
            self._instants.clear()

    def key(
        self,
        what: str,
        cert: x509.Certificate,
        roots: Sequence[x509.Certificate],
        others: Sequence[x509.Certificate],
        crls: Sequence[bytes],
        ocsps: Sequence[bytes],
        moment: datetime,
    ) -> Hashable | None:
        """The key of validating ``cert`` (``what``: the check and its settings) at
        ``moment`` with those inputs; ``None`` when that must not be cached."""
        ders = [cert.dump(), *(c.dump() for c in roots), *(c.dump() for c in others)]
        ders += [*crls, *ocsps]
        digests = [_digest(d) for d in ders]
        window = self._window(moment, zip(digests, ders, strict=True))
        if window is None:
            return None
        # Roots, other certificates, CRLs and OCSP responses apart: the same bytes in
        # another role is another input.
        counts = (len(roots), len(others), len(crls), len(ocsps))
        return (what, counts, b"".join(digests), window)

    def get(self, key: Hashable) -> object:
        with self._lock:
            try:
                outcome = self._outcomes[key]
            except KeyError:
                self.misses += 1
                return MISS
            self._outcomes.move_to_end(key)
            self.hits += 1
            return outcome

    def put(self, key: Hashable, outcome: object) -> None:
        with self._lock:
            self._outcomes[key] = outcome
            self._outcomes.move_to_end(key)
            while len(self._outcomes) > self.size:
                self._outcomes.popitem(last=False)

    def _window(
        self, moment: datetime, inputs: Iterable[tuple[bytes, bytes]]
    ) -> tuple[datetime, datetime] | None:
        """The open interval between the zones around ``moment``, or ``None`` when
        ``moment`` is inside one (or a time in the inputs cannot be read)."""
        if moment.utcoffset() is None:
            return None
        margin = self._margin
        centres: set[datetime] = set()
        for digest, der in inputs:
            found = self._instants_of(digest, der)
            if found is None:
                return None
            centres.update(found)
            centres.update(_shifted(found, FRESHNESS_FALLBACK_VALIDITY_DEFAULT))
        ordered = sorted(centres)
        at = bisect.bisect_left(ordered, moment)
        # The nearest centres on either side; every other one's zone is farther still.
        below = ordered[at - 1] if at > 0 else None
        above = ordered[at] if at < len(ordered) else None
        low = _EARLIEST if below is None else min(_shifted((below,), margin), default=_LATEST)
        high = _LATEST if above is None else max(_shifted((above,), -margin), default=_EARLIEST)
        if not low < moment < high:
            return None
        return low, high

    def _instants_of(self, digest: bytes, der: bytes) -> tuple[datetime, ...] | None:
        with self._lock:
            if digest in self._instants:
                self._instants.move_to_end(digest)
                return self._instants[digest]
        found = instants(der)
        with self._lock:
            self._instants[digest] = found
            while len(self._instants) > 4 * self.size:
                self._instants.popitem(last=False)
        return found
