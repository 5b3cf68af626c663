"""The daemon's own pages: ``/`` (status) and ``/docs`` (API reference), and their assets.

They are outside the API contract (not in ``/openapi.json``): static, public, and
holding no secret. What they show comes from authenticated API calls the page
makes itself (``/v1/health`` with an admin token from the tab's sessionStorage) or
from the public ``/openapi.json``. The Host guard applies to them like to every
route; the Origin guard lets them through because a browser sends no ``Origin``
on a top-level navigation, a classic ``<script src>`` or a same-origin GET
``fetch()`` (checked with Chromium in ``tests/test_docs_status.py``). The pages
therefore use only those: no module scripts and no POST.
"""

from __future__ import annotations

import json
from importlib import resources

from aiohttp import web
from aiohttp.typedefs import Handler

from ..i18n import choose, negotiate, web_messages
from .appkeys import SETTINGS
from .problems import Problem

__all__ = ["PAGE_HEADERS", "add_routes"]

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
}

#: Everything comes from the daemon itself; no inline script, no framing, no referrer
#: (the status link carries its token in the fragment, which the page removes).
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    # Small files; after an upgrade the new ones must show at once.
    "Cache-Control": "no-cache",
}

_PAGES = {"/": "status.html", "/docs": "docs.html"}


def _load_assets() -> dict[str, tuple[bytes, str]]:
    assets: dict[str, tuple[bytes, str]] = {}
    for entry in resources.files("sidecar.web").iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1]
        if entry.is_file() and suffix in _TYPES:
            assets[entry.name] = (entry.read_bytes(), _TYPES[suffix])
    return assets


def add_routes(app: web.Application) -> None:
    """Route ``/``, ``/docs`` and ``/assets/{name}`` to the packaged files."""
    assets = _load_assets()

    def respond(name: str) -> web.Response:
        body, content_type = assets[name]
        return web.Response(body=body, headers={"Content-Type": content_type, **PAGE_HEADERS})

    def page(name: str) -> Handler:
        async def handler(request: web.Request) -> web.Response:
            return respond(name)

        return handler

    async def messages(request: web.Request) -> web.Response:
        # The status page's words: [ui] language, else the browser's, else English.
        settings = request.app.get(SETTINGS)
        configured = settings.ui.language if settings is not None else None
        language = choose(configured, negotiate(request.headers.get("Accept-Language")))
        catalog = {"language": language, "messages": web_messages(language)}
        body = f"var sidecarMessages = {json.dumps(catalog, ensure_ascii=False)};\n"
        return web.Response(
            body=body.encode("utf-8"),
            headers={
                "Content-Type": _TYPES[".js"],
                "Content-Language": language,
                "Vary": "Accept-Language",
                **PAGE_HEADERS,
            },
        )

    async def asset(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        # Only the packaged files by exact name: no path is ever built from the request.
        if name not in assets or name.endswith(".html"):
            raise Problem(404, "not_found", f"no asset {name!r}")
        return respond(name)

    for path, name in _PAGES.items():
        app.router.add_get(path, page(name))
    app.router.add_get("/assets/messages.js", messages)
    app.router.add_get("/assets/{name}", asset)
