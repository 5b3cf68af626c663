"""``POST /v1/xml/sign``: an enveloped XAdES signature of the caller's XML document.

``?level=`` (B-B, B-T, B-LT, B-LTA; default: the profile's, else ``[signing]
xml_level``), ``?profile=`` (its XML level), ``?key=`` (default key otherwise).
The operation (:func:`sidecar.operations.signing.sign_xml_document`) does the work,
in the drafting workers' share of the calling client (:func:`client_name`); this
module maps the engine's typed errors to problems: refused XML (400/422), unknown key
or profile (404), locked key (423, mapped by the keys' module), and an unavailable TSA
or revocation service for the asked level (502/503/504 — never a lower level).
"""

from __future__ import annotations

from aiohttp import web

from ..operations import Services
from ..operations.signing import XmlSigning, level_named, sign_xml_document
from ..signing.profiles import Profile
from ..signing.report import Level
from .appkeys import CLIENT, SERVICES
from .authorisation import with_operation_pin
from .guards import read_body
from .problems import Problem, bad_parameter
from .qualification import qualification_headers

__all__ = [
    "HANDLERS",
    "client_name",
    "named_profile",
    "sign_xml",
    "xml_level",
]


def client_name(request: web.Request) -> str | None:
    """Whose share of the drafting workers a request's signature counts against."""
    client = request.get(CLIENT)
    return client.name if client is not None else None


def named_profile(services: Services, name: str) -> Profile:
    """Profile ``name`` (404 when there is no such profile)."""
    profile = services.profiles.get(name)
    if profile is None:
        raise Problem(404, "not_found", f"no profile {name!r}", profile=name)
    return profile


def xml_level(raw_level: str | None) -> Level | None:
    """The level asked (``level``); None: the profile's, else ``[signing] xml_level``."""
    if raw_level is None:
        return None
    try:
        return level_named(raw_level)
    except ValueError as exc:
        raise bad_parameter("level", str(exc)) from None


async def sign_xml(request: web.Request) -> web.Response:
    """``signXml``: the signed document, same encoding, otherwise byte for byte."""
    services = request.app[SERVICES]
    name = request.query.get("profile")
    profile = named_profile(services, name) if name else None
    level = xml_level(request.query.get("level"))
    body = await read_body(request)
    signing = XmlSigning(
        body,
        key=request.query.get("key") or None,
        level=level,
        profile=profile,
        client=client_name(request),
    )
    signed = await sign_xml_document(services, signing)
    return web.Response(
        body=signed.data,
        content_type="application/xml",
        headers={
            "X-Signature-Level": signed.level.value,
            **qualification_headers(signed.verdict),
        },
    )


HANDLERS = {"signXml": with_operation_pin(sign_xml)}
