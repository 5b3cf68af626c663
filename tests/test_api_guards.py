"""The door: tokens, scopes, Host and Origin guards, body limits, problem+json."""

from __future__ import annotations

import json
import uuid

import pytest
from aiohttp import web

from sidecar.config import LimitSettings, ServerSettings, Settings
from tests.fixtures.daemon import Api

PROBLEM = "application/problem+json"


async def problem(response) -> dict:  # type: ignore[no-untyped-def]
    assert response.content_type == PROBLEM, await response.text()
    body = await response.json()
    assert body["status"] == response.status
    assert body["type"].endswith(body["code"])
    assert "Traceback" not in json.dumps(body)
    return body


async def test_no_token_is_401(api: Api) -> None:
    response = await api.client.get("/v1/uuids")
    assert response.status == 401
    assert (await problem(response))["code"] == "unauthorized"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "header", ["Bearer not-a-real-token", "Basic dXNlcjpwYXNz", "Bearer ", "token"]
)
async def test_wrong_token_is_401(api: Api, header: str) -> None:
    response = await api.client.get("/v1/uuids", headers={"Authorization": header})
    assert response.status == 401
    assert (await problem(response))["code"] == "unauthorized"


async def test_wrong_token_on_public_route_is_401(api: Api) -> None:
    response = await api.client.get("/v1/health", headers={"Authorization": "Bearer forged"})
    assert response.status == 401


async def test_token_lacking_scope_is_403(api: Api) -> None:
    response = await api.client.get("/v1/uuids", headers=api.auth("verifier"))
    assert response.status == 403
    body = await problem(response)
    assert body["code"] == "forbidden"
    assert "'sign'" in body["detail"]


async def test_token_with_scope_passes(api: Api) -> None:
    response = await api.client.get("/v1/uuids", headers=api.auth("signer"))
    assert response.status == 200


async def test_revoked_token_stops_working_without_restart(api: Api) -> None:
    assert (await api.client.get("/v1/uuids", headers=api.auth("signer"))).status == 200
    api.store.revoke("signer")
    assert (await api.client.get("/v1/uuids", headers=api.auth("signer"))).status == 401


@pytest.mark.parametrize("host", ["evil.example", "evil.example:7420", "192.168.1.5", "[::2]"])
async def test_foreign_host_header_is_403(api: Api, host: str) -> None:
    response = await api.client.get("/v1/health", headers={"Host": host})
    assert response.status == 403
    assert (await problem(response))["code"] == "forbidden"


@pytest.mark.parametrize("host", ["localhost:7420", "127.0.0.1", "[::1]:7420", "LOCALHOST"])
async def test_loopback_host_header_passes(api: Api, host: str) -> None:
    response = await api.client.get("/v1/health", headers={"Host": host})
    assert response.status == 200


async def test_configured_host_name_passes(api_factory) -> None:  # type: ignore[no-untyped-def]
    api = await api_factory(Settings(server=ServerSettings(allowed_hosts=("sidecar.praxis.lu",))))
    ok = await api.client.get("/v1/health", headers={"Host": "sidecar.praxis.lu:7420"})
    assert ok.status == 200
    bad = await api.client.get("/v1/health", headers={"Host": "other.praxis.lu"})
    assert bad.status == 403


@pytest.mark.parametrize("origin", ["https://evil.example", "null", "http://localhost:3000"])
async def test_origin_not_allow_listed_is_403(api: Api, origin: str) -> None:
    response = await api.client.get("/v1/uuids", headers={"Origin": origin, **api.auth()})
    assert response.status == 403
    assert "Access-Control-Allow-Origin" not in response.headers
    assert (await problem(response))["code"] == "forbidden"


async def test_allow_listed_origin_gets_exact_echo(api_factory) -> None:  # type: ignore[no-untyped-def]
    origin = "http://localhost:3000"
    api = await api_factory(Settings(server=ServerSettings(allowed_origins=(origin,))))
    response = await api.client.get("/v1/uuids", headers={"Origin": origin, **api.auth()})
    assert response.status == 200
    assert response.headers["Access-Control-Allow-Origin"] == origin
    preflight = await api.client.options(
        "/v1/uuids",
        headers={"Origin": origin, "Access-Control-Request-Method": "GET"},
    )
    assert preflight.status == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == origin
    other = await api.client.get("/v1/uuids", headers={"Origin": "http://localhost:4000"})
    assert other.status == 403


async def test_body_over_limit_is_413(api_factory) -> None:  # type: ignore[no-untyped-def]
    api = await api_factory(Settings(limits=LimitSettings(xml=1024)))
    response = await api.client.post(
        "/v1/xml/sign",
        data=b"<a>" + b"x" * 2000 + b"</a>",
        headers={"Content-Type": "application/xml", **api.auth()},
    )
    assert response.status == 413
    body = await problem(response)
    assert body["code"] == "too_large"
    assert body["limit"] == 1024


async def test_chunked_body_over_limit_is_413(api_factory) -> None:  # type: ignore[no-untyped-def]
    api = await api_factory(Settings(limits=LimitSettings(timestamp=1024)))

    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(10):
            yield b"y" * 512

    # /v1/timestamps reads its body through the limited reader even before it is built.
    response = await api.client.post(
        "/v1/timestamps?hash=sha256",
        data=chunks(),
        headers={"Content-Type": "application/octet-stream", **api.auth()},
    )
    assert response.status in (413, 501)
    assert (await problem(response))["code"] in ("too_large", "not_implemented")


async def test_wrong_content_type_is_415(api: Api) -> None:
    response = await api.client.post(
        "/v1/xml/sign", data=b"<a/>", headers={"Content-Type": "text/plain", **api.auth()}
    )
    assert response.status == 415
    assert (await problem(response))["code"] == "unsupported_media_type"


async def test_unknown_route_is_problem_404(api: Api) -> None:
    response = await api.client.get("/v2/nothing", headers=api.auth())
    assert response.status == 404
    assert (await problem(response))["code"] == "not_found"


async def test_wrong_method_is_problem_405_with_allow(api: Api) -> None:
    response = await api.client.delete("/v1/uuids", headers=api.auth())
    assert response.status == 405
    assert (await problem(response))["code"] == "method_not_allowed"
    assert response.headers["Allow"] == "GET"


async def test_request_id_echoed_or_made(api: Api) -> None:
    given = await api.client.get("/v1/health", headers={"X-Request-Id": "abc-123"})
    assert given.headers["X-Request-Id"] == "abc-123"
    made = await api.client.get("/v1/health")
    assert uuid.UUID(made.headers["X-Request-Id"]).version == 4
    # An id that could inject into logs is replaced, not echoed.
    odd = await api.client.get("/v1/health", headers={"X-Request-Id": "a b\tc"})
    assert odd.headers["X-Request-Id"] != "a b\tc"
    error = await api.client.get("/nope", headers={"X-Request-Id": "err-1"})
    assert error.headers["X-Request-Id"] == "err-1"
    assert (await error.json())["instance"] == "err-1"


async def test_unexpected_error_is_500_problem_without_trace(api_factory, caplog) -> None:  # type: ignore[no-untyped-def]
    async def boom(_request: web.Request) -> web.Response:
        raise RuntimeError("/home/secret/path exploded")

    api = await api_factory(extra_routes=[web.get("/boom", boom)])
    response = await api.client.get("/boom", headers=api.auth())
    assert response.status == 500
    body = await problem(response)
    assert body["code"] == "internal_error"
    assert "/home/secret" not in json.dumps(body)
    assert "Traceback" not in caplog.text
    assert "RuntimeError" in caplog.text
