"""Health, UUIDs, and the served contract."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest

from sidecar import __version__
from sidecar.api.contract import CONTRACT
from tests.fixtures.daemon import Api

API_MD = Path(__file__).resolve().parents[1] / "docs" / "api.md"


async def test_health_public_and_minimal(sandbox_api: Api) -> None:
    response = await sandbox_api.client.get("/v1/health", headers=sandbox_api.auth("signer"))
    assert response.status == 200
    body = await response.json()
    assert body == {"status": "ok", "version": __version__}


async def test_health_without_keys_is_degraded_and_says_why(api: Api) -> None:
    token = api.store.create("ops", frozenset({"admin"}))  # type: ignore[arg-type]
    public = await (await api.client.get("/v1/health")).json()
    assert public == {"status": "degraded", "version": __version__}
    response = await api.client.get("/v1/health", headers={"Authorization": f"Bearer {token}"})
    body = await response.json()
    assert body["status"] == "degraded"
    checks = {c["name"]: c for c in body["checks"]}
    assert checks["keys"]["status"] == "degraded"
    assert "no signing key" in checks["keys"]["detail"]


async def test_uuids_are_version_4_rfc4122(api: Api) -> None:
    response = await api.client.get("/v1/uuids?count=1000", headers=api.auth())
    values = (await response.json())["uuids"]
    assert len(values) == 1000
    for text in values:
        parsed = uuid.UUID(text)
        assert str(parsed) == text  # canonical lower-case 8-4-4-4-12 form
        assert parsed.version == 4  # bits 12-15 of time_hi_and_version = 0100
        assert parsed.variant == uuid.RFC_4122  # bits 6-7 of clock_seq_hi = 10
        assert text[14] == "4" and text[19] in "89ab"


async def test_ten_thousand_uuids_are_distinct(api: Api) -> None:
    seen: set[str] = set()
    for _ in range(10):
        response = await api.client.get("/v1/uuids?count=1000", headers=api.auth())
        seen.update((await response.json())["uuids"])
    assert len(seen) == 10_000


async def test_uuid_default_count_is_one(api: Api) -> None:
    response = await api.client.get("/v1/uuids", headers=api.auth())
    assert len((await response.json())["uuids"]) == 1


@pytest.mark.parametrize("count", ["0", "1001", "-1", "ten", "1.5", ""])
async def test_uuid_count_out_of_range_is_400(api: Api, count: str) -> None:
    response = await api.client.get(f"/v1/uuids?count={count}", headers=api.auth())
    assert response.status == 400
    body = await response.json()
    assert body["code"] == "bad_parameter"
    assert body["parameter"] == "count"


def api_md_routes() -> set[tuple[str, str]]:
    text = API_MD.read_text()
    routes = set()
    for method, path in re.findall(r"^\| `(GET|POST|DELETE|PUT) (/[^`?]*)", text, re.M):
        routes.add((method, path))
    return routes


def test_contract_table_covers_api_md() -> None:
    routes = api_md_routes()
    assert len(routes) >= 17
    assert routes == {(op.method, op.path) for op in CONTRACT}


async def test_openapi_describes_every_route_and_marks_unbuilt(api: Api) -> None:
    response = await api.client.get("/openapi.json")
    assert response.status == 200
    spec = await response.json()
    assert spec["openapi"].startswith("3.")
    described = {
        (method.upper(), path) for path, entry in spec["paths"].items() for method in entry
    }
    assert described == api_md_routes()
    for path, entry in spec["paths"].items():
        for method, operation in entry.items():
            implemented = operation["x-sidecar-implemented"]
            assert ("501" in operation["responses"]) != implemented, (method, path)
            if path not in ("/v1/health", "/openapi.json"):
                assert operation["security"], (method, path)


async def test_unbuilt_routes_answer_501_never_success(
    api_factory, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """A contract route without a handler answers 501 and says so in openapi.json.

    Every route is built now; take two handlers away to keep the mechanism honest
    for the routes the contract will grow.
    """
    from sidecar.api import app as app_module

    missing = {"signXml", "getMessage"}
    handlers = {k: v for k, v in app_module.HANDLERS.items() if k not in missing}
    monkeypatch.setattr(app_module, "HANDLERS", handlers)
    api = await api_factory()
    spec = await (await api.client.get("/openapi.json")).json()
    unbuilt = {
        op["operationId"]
        for entry in spec["paths"].values()
        for op in entry.values()
        if not op["x-sidecar-implemented"]
    }
    assert unbuilt == missing
    for op in CONTRACT:
        if op.operation_id not in missing:
            continue
        concrete = op.path.replace("{uuid}", str(uuid.uuid4()))
        headers = api.auth()
        if op.request_types:
            headers["Content-Type"] = op.request_types[0]
        response = await api.client.request(op.method, concrete, data=b"", headers=headers)
        assert response.status == 501, (op.path, await response.text())
        assert (await response.json())["code"] == "not_implemented"


async def test_every_contract_route_is_built(api: Api) -> None:
    spec = await (await api.client.get("/openapi.json")).json()
    unbuilt = [
        (method, path)
        for path, entry in spec["paths"].items()
        for method, op in entry.items()
        if not op["x-sidecar-implemented"]
    ]
    assert unbuilt == []
