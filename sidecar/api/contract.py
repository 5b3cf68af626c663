"""The HTTP contract of API.md as data: every route, its scope, body and answers.

One table drives both the router (which handler, which guard, which body limit)
and ``/openapi.json``, so the served description cannot drift from what the
daemon does. A route whose handler is not built yet is still routed: it answers
``501 not_implemented`` and its OpenAPI entry says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..clients import Scope
from ..cns.outbox import Status

__all__ = ["CONTRACT", "MESSAGE_STATES", "Operation", "Parameter"]

#: The :class:`~sidecar.config.LimitSettings` field that bounds a route's body.
BodyLimit = Literal["json", "xml", "pdf", "form", "timestamp", "batch"]


#: The states of a CNS message (docs/api.md), in the order of its life.
MESSAGE_STATES = [s.value for s in Status]


@dataclass(frozen=True)
class Parameter:
    name: str
    location: Literal["query", "path"]
    description: str
    schema: dict[str, object] = field(default_factory=lambda: {"type": "string"})
    required: bool = False


@dataclass(frozen=True)
class Operation:
    """One route of the contract."""

    operation_id: str
    method: str
    path: str
    summary: str
    #: ``None``: public (no token needed).
    scope: Scope | None
    tag: str
    #: Content types accepted for the body; ``()`` means the route takes none.
    request_types: tuple[str, ...] = ()
    limit: BodyLimit = "json"
    response_type: str = "application/json"
    success: int = 200
    parameters: tuple[Parameter, ...] = ()
    #: Name of a schema in ``components.schemas`` describing a JSON answer.
    response_schema: str | None = None
    description: str = ""
    #: Status codes the route may answer besides the success and the common ones.
    errors: tuple[int, ...] = ()


_LEVEL = Parameter(
    "level",
    "query",
    "Signature level: B-B, B-T, B-LT or B-LTA.",
    {"type": "string", "enum": ["B-B", "B-T", "B-LT", "B-LTA"]},
)
_KEY = Parameter("key", "query", "Signing key id (GET /v1/keys); the default key when absent.")
_PROFILE = Parameter("profile", "query", "Signature/form profile name (profiles/).")
_UUID = Parameter("uuid", "path", "The message's RFC 4122 UUID.", {"type": "string"}, True)
_BATCH = Parameter("batch", "path", "The batch's id (from POST /v1/batches).", required=True)
_XML = ("application/xml", "text/xml")
_SIGN_ERRORS = (400, 404, 413, 415, 422, 423, 502, 503, 504)

CONTRACT: tuple[Operation, ...] = (
    Operation(
        "getHealth",
        "GET",
        "/v1/health",
        "Daemon health; with an admin token also each check.",
        None,
        "service",
        response_schema="Health",
    ),
    Operation(
        "getUuids",
        "GET",
        "/v1/uuids",
        "RFC 4122 section 4.4 (version 4, random) UUIDs.",
        Scope.SIGN,
        "service",
        parameters=(
            Parameter(
                "count",
                "query",
                "How many UUIDs (1-1000).",
                {"type": "integer", "minimum": 1, "maximum": 1000, "default": 1},
            ),
        ),
        response_schema="Uuids",
        errors=(400,),
    ),
    Operation(
        "listKeys",
        "GET",
        "/v1/keys",
        "The signing identities and whether each is unlocked.",
        Scope.SIGN,
        "signing",
        response_schema="Keys",
    ),
    Operation(
        "createTimestamp",
        "POST",
        "/v1/timestamps",
        "Relay an RFC 3161 TimeStampReq (or hash raw bytes with ?hash=) to the TSA(s).",
        Scope.TIMESTAMP,
        "timestamps",
        request_types=("application/timestamp-query", "*/*"),
        limit="timestamp",
        response_type="application/timestamp-reply",
        parameters=(
            Parameter(
                "hash",
                "query",
                "Treat the body as raw bytes and timestamp their digest with this algorithm.",
                {"type": "string", "enum": ["sha256", "sha384", "sha512"]},
            ),
        ),
        errors=(400, 413, 415, 502, 503, 504),
    ),
    Operation(
        "signXml",
        "POST",
        "/v1/xml/sign",
        "Enveloped XAdES signature of an XML document.",
        Scope.SIGN,
        "signing",
        request_types=_XML,
        limit="xml",
        response_type="application/xml",
        parameters=(_LEVEL, _PROFILE, _KEY),
        errors=_SIGN_ERRORS,
    ),
    Operation(
        "signPdf",
        "POST",
        "/v1/pdf/sign",
        "PAdES signature as an incremental update that keeps PDF/A conformance.",
        Scope.SIGN,
        "signing",
        request_types=("application/pdf",),
        limit="pdf",
        response_type="application/pdf",
        parameters=(
            _LEVEL,
            _KEY,
            Parameter("reason", "query", "Reason shown in the signature."),
            Parameter("location", "query", "Location shown in the signature."),
            Parameter("contact", "query", "Signer's contact information in the signature."),
            Parameter(
                "visible",
                "query",
                "A visible stamp (embedded font) instead of an invisible signature.",
                {"type": "boolean", "default": False},
            ),
            Parameter(
                "page",
                "query",
                "Page of the visible stamp: 1 = first, -1 = last.",
                {"type": "integer", "default": 1},
            ),
            Parameter("box", "query", "Visible stamp rectangle x1,y1,x2,y2 in points."),
            Parameter(
                "require_pdfa",
                "query",
                "Refuse (422 unsupported_pdf) a PDF without its PDF/A markers.",
                {"type": "boolean", "default": False},
            ),
        ),
        errors=_SIGN_ERRORS,
    ),
    Operation(
        "signForm",
        "POST",
        "/v1/forms/{profile}/sign",
        "The whole standardized-form recipe of a profile (e.g. fee-note).",
        Scope.SIGN,
        "signing",
        request_types=("multipart/form-data", *_XML),
        limit="form",
        response_type="application/xml",
        parameters=(
            Parameter("profile", "path", "Form profile, e.g. fee-note.", required=True),
            _KEY,
        ),
        errors=_SIGN_ERRORS,
    ),
    Operation(
        "createBatch",
        "POST",
        "/v1/batches",
        "Sign many documents (forms with their PDFs, PDFs, XMLs) with one authorisation.",
        Scope.SIGN,
        "signing",
        request_types=("application/json",),
        limit="batch",
        success=202,
        parameters=(_KEY,),
        response_schema="Batch",
        description=(
            "One PIN entry (header `X-Sidecar-PIN`, or the token's pinpad) for the whole "
            "batch, within `[signing] batch_max_documents` and `batch_max_minutes`. The "
            "first document is signed before the answer: a refused PIN is a 423 here."
        ),
        errors=(400, 404, 413, 415, 422, 423),
    ),
    Operation(
        "getBatch",
        "GET",
        "/v1/batches/{batch}",
        "Progress of a batch and one result (signed, or a problem) per document.",
        Scope.SIGN,
        "signing",
        parameters=(_BATCH,),
        response_schema="Batch",
        errors=(404,),
    ),
    Operation(
        "getBatchDocument",
        "GET",
        "/v1/batches/{batch}/documents/{index}",
        "One signed document of a batch.",
        Scope.SIGN,
        "signing",
        response_type="application/octet-stream",
        parameters=(
            _BATCH,
            Parameter("index", "path", "The document's index (0-based).", {"type": "integer"}),
        ),
        errors=(404, 409),
    ),
    Operation(
        "endBatch",
        "DELETE",
        "/v1/batches/{batch}",
        "End a batch early: nothing more is signed, the PIN is wiped; results stay readable.",
        Scope.SIGN,
        "signing",
        parameters=(_BATCH,),
        response_schema="Batch",
        errors=(404,),
    ),
    Operation(
        "verify",
        "POST",
        "/v1/verify",
        "Validation report per signature (ETSI EN 319 102-1 indications).",
        Scope.VERIFY,
        "verification",
        request_types=(*_XML, "application/pdf"),
        limit="pdf",
        response_schema="VerificationReport",
        errors=(400, 413, 415, 422),
    ),
    Operation(
        "depositFeeNote",
        "POST",
        "/v1/cns/fee-notes",
        "Deposit a fee note with the CNS through the durable outbox.",
        Scope.FORWARD,
        "cns",
        request_types=_XML,
        limit="xml",
        success=202,
        response_schema="Accepted",
        errors=(400, 409, 413, 415, 422, 423, 503),
    ),
    Operation(
        "cancelFeeNote",
        "DELETE",
        "/v1/cns/fee-notes/{uuid}",
        "Cancel a deposited fee note, through the outbox.",
        Scope.FORWARD,
        "cns",
        success=202,
        parameters=(_UUID,),
        response_schema="Accepted",
        errors=(404, 409),
    ),
    Operation(
        "getMessage",
        "GET",
        "/v1/cns/messages/{uuid}",
        "Status of one CNS message.",
        Scope.FORWARD,
        "cns",
        parameters=(_UUID,),
        response_schema="Message",
        errors=(404,),
    ),
    Operation(
        "listMessages",
        "GET",
        "/v1/cns/messages",
        "CNS messages, paged.",
        Scope.FORWARD,
        "cns",
        parameters=(
            Parameter(
                "status",
                "query",
                "Only messages in this state.",
                {
                    "type": "string",
                    "enum": MESSAGE_STATES,
                },
            ),
            Parameter(
                "since",
                "query",
                "Only messages changed since (RFC 3339).",
                {"type": "string", "format": "date-time"},
            ),
            Parameter(
                "limit",
                "query",
                "Page size (1-1000).",
                {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
            ),
            Parameter(
                "after",
                "query",
                "Cursor: the page after this one (taken from the answer's `next`).",
                {"type": "integer", "minimum": 0},
            ),
        ),
        response_schema="MessageList",
        errors=(400,),
    ),
    Operation(
        "pidSimulation",
        "POST",
        "/v1/cns/pid/simulations",
        "PID v2 simulation, synchronous.",
        Scope.FORWARD,
        "cns",
        request_types=_XML,
        limit="xml",
        response_type="application/xml",
        errors=(400, 413, 415, 422, 502, 503, 504),
    ),
    Operation(
        "pidValidation",
        "POST",
        "/v1/cns/pid/validations",
        "PID v2 validation, synchronous.",
        Scope.FORWARD,
        "cns",
        request_types=_XML,
        limit="xml",
        response_type="application/xml",
        errors=(400, 413, 415, 422, 502, 503, 504),
    ),
    Operation(
        "pidContestation",
        "POST",
        "/v1/cns/pid/contestations",
        "PID v2 contestation, synchronous.",
        Scope.FORWARD,
        "cns",
        request_types=_XML,
        limit="xml",
        response_type="application/xml",
        errors=(400, 413, 415, 422, 502, 503, 504),
    ),
    Operation(
        "getMetrics",
        "GET",
        "/metrics",
        "Prometheus metrics.",
        Scope.ADMIN,
        "service",
        response_type="text/plain",
    ),
    Operation(
        "getOpenApi",
        "GET",
        "/openapi.json",
        "This contract, machine-readable.",
        None,
        "service",
    ),
)
