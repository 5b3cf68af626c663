"""The operations layer: the daemon's use cases, between the API and the engines.

Design (issue #14; ``api → operations → engines → keys/trust/stores``, never upward):

- **One composition root.** :func:`~sidecar.operations.services.open_services` builds
  every service once, in dependency order — the outgoing HTTP session, the sandbox PKI
  (when asked to serve it), metrics, the audit journal, the key registry, the trust
  layer, the profiles, the PAdES engine and its PDF workers, the XAdES drafting
  workers, the batches — and closes them in reverse order. What it yields, a
  :class:`~sidecar.operations.services.Services`, is the one object the daemon's
  application holds (under one AppKey, ``sidecar.api.appkeys.SERVICES``) and the one
  the CLI (``sidecar sign``/``verify``) opens itself, with no HTTP server. Its
  ``cns`` slot is where the CNS runtime goes (built by ``sidecar.cns``).
- **One function per use case**, typed inputs in, typed results out, knowing no HTTP
  (no aiohttp.web, no status code): :mod:`.signing` (sign XML, sign PDF, sign a form
  by profile, the fee note the CNS deposit signs — the XAdES engine bound to the
  trust layer and ``[signing]``'s options in one place), :mod:`.verify`,
  :mod:`.timestamps`, :mod:`.batches` (start a batch, sign one of its documents),
  :mod:`.key_info`. An API handler parses the request into the input (a profile
  looked up, a level parsed: its 400/404 are the API's), calls one operation and
  renders the result; the CLI does the same with files.
- **The trusted lists' verdict at signing** (:mod:`.qualification`) is the
  operations' too: ``refuse`` raises :class:`~.qualification.NotQualified`, ``warn``
  returns the verdict with the result, for the API's ``X-Signature-Qualification``.
- **Every signature is one event**, emitted by the operation that made it
  (:mod:`.events`): one audit-journal entry and the metrics' ``sidecar_signatures``
  counted once per signature it holds (a form: its XAdES signature, and the embedded
  PDF's PAdES one). Nothing reads a level back from a response header.
- **Errors stay the engines' typed exceptions**, each in one family of
  :mod:`sidecar.errors` (the API's one table maps them to problems); added here:
  ``NotQualified``, and a batch document's ``UnknownProfile``/``InvalidLevel``.
"""

from __future__ import annotations

from .events import SignatureEvent
from .services import DraftingWorkers, Services, open_services

__all__ = ["DraftingWorkers", "Services", "SignatureEvent", "open_services"]
