"""Failures below the HTTP layer are logged with the request id and a traceback
(file names, no directories), never shown in the answer."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web

from sidecar.logs import RequestIdFilter, current_request_id, traceback_text
from tests.fixtures.daemon import Api


def _engine_step() -> None:
    raise KeyError("/Fields")


async def _failing(request: web.Request) -> web.Response:
    _engine_step()
    return web.Response()


@pytest.mark.asyncio
async def test_unhandled_error_is_logged_with_id_and_traceback(
    api_factory: Callable[..., Awaitable[Api]], caplog: pytest.LogCaptureFixture
) -> None:
    api = await api_factory(extra_routes=[web.get("/test/fail", _failing)])
    with caplog.at_level(logging.ERROR, logger="sidecar.api"):
        response = await api.client.get("/test/fail", headers={"X-Request-Id": "req-12345678"})
    body = await response.text()
    assert response.status == 500
    assert "_engine_step" not in body and "Traceback" not in body
    (record,) = [r for r in caplog.records if "unhandled KeyError" in r.getMessage()]
    assert record.request_id == "req-12345678"  # type: ignore[attr-defined]
    trace = record.traceback  # type: ignore[attr-defined]
    assert "test_error_logging.py" in trace and "in _engine_step" in trace
    assert "/" not in trace.split(" | ")[0]  # no directories


def test_engine_logs_carry_the_request_id() -> None:
    record = logging.LogRecord(
        "sidecar.signing", logging.WARNING, "x", 1, "step failed", None, None
    )
    token = current_request_id.set("req-abc")
    try:
        assert RequestIdFilter().filter(record)
    finally:
        current_request_id.reset(token)
    assert record.request_id == "req-abc"  # type: ignore[attr-defined]


def test_traceback_text_has_no_directories() -> None:
    try:
        _engine_step()
    except KeyError as exc:
        text = traceback_text(exc)
    assert "test_error_logging.py:" in text and "KeyError: '/Fields'" in text
    assert "/work/" not in text and "/tests/" not in text
