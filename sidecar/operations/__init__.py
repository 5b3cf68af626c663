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
  by profile, the fee note the CNS deposit signs), :mod:`.verify`, :mod:`.timestamps`,
  :mod:`.batches` (one document of a batch). An API handler parses the request into
  the input (a profile looked up, a level parsed: its 400/404 are the API's), calls
  one operation and renders the result; the CLI does the same with files.
- **Every signature is one event**, emitted by the operation that made it
  (:mod:`.events`): one audit-journal entry and the metrics' ``sidecar_signatures``
  counted once per signature it holds (a form: its XAdES signature, and the embedded
  PDF's PAdES one). Nothing reads a level back from a response header.
- **Errors stay the engines' typed exceptions** (the API maps them to problems); the
  one added here, :class:`~sidecar.operations.signing.NotQualified`, is the trusted
  lists' ``refuse`` verdict at signing.
"""

from __future__ import annotations

from .events import SignatureEvent
from .services import DraftingWorkers, Services, open_services

__all__ = ["DraftingWorkers", "Services", "SignatureEvent", "open_services"]
