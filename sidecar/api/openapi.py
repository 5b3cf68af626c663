"""``/openapi.json``: the OpenAPI 3.1 description generated from :data:`CONTRACT`."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from .. import __version__
from .contract import CONTRACT, MESSAGE_STATES, Operation

__all__ = ["build_openapi"]

_ERROR_CODES: dict[int, tuple[str, str]] = {
    400: ("Malformed input.", "malformed_xml | malformed_pdf | bad_parameter | key_required"),
    401: ("Missing or unknown token.", "unauthorized"),
    403: (
        "Token lacks the scope; bad Host; disallowed Origin; a key the client may not use.",
        "forbidden | key_not_allowed",
    ),
    404: ("Unknown route, message, key or profile.", "not_found"),
    405: ("Method not allowed on this route.", "method_not_allowed"),
    409: ("Same UUID, different content.", "duplicate_uuid"),
    413: ("Body over the configured limit.", "too_large"),
    415: ("Wrong Content-Type.", "unsupported_media_type"),
    422: (
        "Well-formed but unacceptable.",
        "schema_violation | forbidden_dtd | unsupported_pdf | pdf_certified | pdf_locked",
    ),
    423: ("The signing key is locked.", "key_locked"),
    429: ("The client is over its rate limit (see Retry-After).", "rate_limited"),
    501: ("Not implemented yet in this version.", "not_implemented"),
    502: ("An upstream answered with an error.", "upstream_error"),
    503: (
        "An upstream is unreachable, or no signing worker is free (see Retry-After).",
        "upstream_unavailable | workers_busy",
    ),
    504: ("An upstream did not answer in time.", "upstream_timeout"),
}

_SCHEMAS: dict[str, Any] = {
    "Problem": {
        "type": "object",
        "description": "RFC 9457 problem details.",
        "required": ["type", "title", "status", "code"],
        "properties": {
            "type": {"type": "string", "format": "uri"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "code": {"type": "string", "description": "Stable machine-readable code."},
            "instance": {"type": "string"},
            "errors": {"type": "array", "items": {"type": "object"}},
        },
    },
    "Health": {
        "type": "object",
        "required": ["status", "version"],
        "properties": {
            "status": {"type": "string", "enum": ["ok", "degraded", "down"]},
            "version": {"type": "string"},
            "checks": {
                "type": "array",
                "description": "Only with an admin token.",
                "items": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "status": {"type": "string", "enum": ["ok", "degraded", "down"]},
                        "detail": {"type": "string"},
                    },
                },
            },
        },
    },
    "Uuids": {
        "type": "object",
        "required": ["uuids"],
        "properties": {"uuids": {"type": "array", "items": {"type": "string", "format": "uuid"}}},
    },
    "Keys": {
        "type": "object",
        "properties": {
            "keys": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string"},
                        "backend": {"type": "string", "enum": ["pkcs12", "pkcs11"]},
                        "subject": {"type": "string"},
                        "issuer": {"type": "string"},
                        "serial": {"type": "string"},
                        "not_before": {"type": "string", "format": "date-time"},
                        "not_after": {"type": "string", "format": "date-time"},
                        "key_type": {"type": "string"},
                        "unlocked": {"type": "boolean"},
                        "opened": {"type": "boolean"},
                    },
                },
            }
        },
    },
    "VerificationReport": {
        "type": "object",
        "properties": {
            "signatures": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "format": {"type": "string"},
                        "level": {"type": "string"},
                        "indication": {
                            "type": "string",
                            "enum": ["TOTAL_PASSED", "INDETERMINATE", "TOTAL_FAILED"],
                        },
                        "sub_indication": {"type": ["string", "null"]},
                        "signer": {"type": "string"},
                        "claimed_signing_time": {"type": ["string", "null"]},
                        "timestamp_time": {"type": ["string", "null"]},
                        "offline_validation_data": {"type": "boolean"},
                    },
                },
            }
        },
    },
    "Accepted": {
        "type": "object",
        "required": ["uuid", "status", "status_url"],
        "properties": {
            "uuid": {"type": "string", "format": "uuid"},
            "status": {"type": "string"},
            "status_url": {"type": "string"},
        },
    },
    "Batch": {
        "type": "object",
        "required": ["id", "state", "total", "documents"],
        "properties": {
            "id": {"type": "string"},
            "state": {
                "type": "string",
                "enum": ["running", "done", "cancelled", "expired", "refused"],
            },
            "key": {"type": ["string", "null"]},
            "total": {"type": "integer"},
            "pending": {"type": "integer"},
            "signed": {"type": "integer"},
            "failed": {"type": "integer"},
            "cancelled": {"type": "integer"},
            "created": {"type": "string", "format": "date-time"},
            "expires": {"type": "string", "format": "date-time"},
            "finished": {"type": ["string", "null"], "format": "date-time"},
            "documents": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "index": {"type": "integer"},
                        "name": {"type": "string"},
                        "kind": {"type": "string", "enum": ["form", "xml", "pdf"]},
                        "state": {
                            "type": "string",
                            "enum": ["pending", "signed", "failed", "cancelled"],
                        },
                        "href": {"type": "string"},
                        "problem": {"$ref": "#/components/schemas/Problem"},
                    },
                },
            },
        },
    },
    "Message": {
        "type": "object",
        "properties": {
            "uuid": {"type": "string", "format": "uuid"},
            "status": {
                "type": "string",
                "enum": MESSAGE_STATES,
            },
            "attempts": {"type": "integer"},
            "answer": {},
        },
    },
    "MessageList": {
        "type": "object",
        "properties": {
            "messages": {"type": "array", "items": {"$ref": "#/components/schemas/Message"}},
            "next": {"type": ["string", "null"]},
        },
    },
}


def _problem(description: str, code: str) -> dict[str, Any]:
    return {
        "description": f"{description} code: {code}",
        "content": {
            "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
        },
    }


def _operation(op: Operation, implemented: bool) -> dict[str, Any]:
    success_content: dict[str, Any] = {}
    if op.response_schema:
        success_content[op.response_type] = {
            "schema": {"$ref": f"#/components/schemas/{op.response_schema}"}
        }
    else:
        success_content[op.response_type] = {}
    responses: dict[str, Any] = {
        str(op.success): {"description": "Success.", "content": success_content}
    }
    codes = set(op.errors) | {405}
    if op.scope is not None:
        codes |= {401, 403, 429}
    if op.request_types:
        codes |= {413}
        if "*/*" not in op.request_types:
            codes |= {415}
    if not implemented:
        codes |= {501}
    for status in sorted(codes):
        responses[str(status)] = _problem(*_ERROR_CODES[status])
    entry: dict[str, Any] = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "tags": [op.tag],
        "responses": responses,
        "x-sidecar-implemented": implemented,
    }
    description = op.description
    if not implemented:
        description = (description + "\n\n" if description else "") + (
            "Not implemented in this version: answers 501 with code `not_implemented`."
        )
    if description:
        entry["description"] = description
    if op.scope is None:
        entry["security"] = []
    else:
        entry["x-sidecar-scope"] = op.scope.value
        entry["security"] = [{"bearer": [op.scope.value]}]
    if op.parameters:
        entry["parameters"] = [
            {
                "name": p.name,
                "in": p.location,
                "required": p.required or p.location == "path",
                "description": p.description,
                "schema": p.schema,
            }
            for p in op.parameters
        ]
    if op.request_types:
        entry["requestBody"] = {
            "required": True,
            "content": {
                t: {"schema": {"type": "string", "format": "binary"}} for t in op.request_types
            },
        }
    return entry


def build_openapi(implemented: Collection[str]) -> dict[str, Any]:
    """The document for the routes of :data:`CONTRACT`; *implemented* are operation ids."""
    paths: dict[str, dict[str, Any]] = {}
    for op in CONTRACT:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(
            op, op.operation_id in implemented
        )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "sidecar",
            "version": __version__,
            "description": (
                "Local signing, timestamping and CNS forwarding daemon. Every route except "
                "GET /v1/health and GET /openapi.json needs `Authorization: Bearer <token>`; "
                "errors are RFC 9457 problem+json with a stable `code`; every response "
                "carries X-Request-Id."
            ),
        },
        "servers": [{"url": "http://127.0.0.1:7420"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": _SCHEMAS,
        },
    }
