"""GET /metrics and the engine-facing metrics API (sidecar.metrics)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sidecar import __version__
from sidecar.metrics import CertificateExpiry, Metrics, OutboxStats
from tests.fixtures.daemon import Api


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a scrape, keyed by (name, labels)."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(scrape: dict, metric: str, /, **labels: str) -> float:
    return scrape.get((metric, frozenset(labels.items())), 0.0)


async def scrape(api: Api) -> tuple[str, dict]:
    response = await api.client.get("/metrics", headers=api.auth("all"))
    assert response.status == 200, await response.text()
    text = await response.text()
    return text, samples(text)


async def test_requests_by_route_template_and_status(api: Api) -> None:
    _, before = await scrape(api)
    for _ in range(3):
        assert (await api.client.get("/v1/uuids?count=2", headers=api.auth("signer"))).status == 200
    assert (await api.client.get("/v1/uuids")).status == 401
    assert (await api.client.get("/v1/uuids?count=0", headers=api.auth("signer"))).status == 400
    message = str(uuid.uuid4())
    await api.client.get(f"/v1/cns/messages/{message}", headers=api.auth("all"))
    assert (await api.client.get("/no/such/route")).status == 404

    text, after = await scrape(api)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    total = "sidecar_http_requests_total"
    assert moved(total, method="GET", route="/v1/uuids", status="200") == 3
    assert moved(total, method="GET", route="/v1/uuids", status="401") == 1
    assert moved(total, method="GET", route="/v1/uuids", status="400") == 1
    assert moved(total, method="GET", route="(unmatched)", status="404") == 1
    # The message route is labelled by its template, never by the raw path.
    assert any(
        name == total and ("route", "/v1/cns/messages/{uuid}") in labels for name, labels in after
    )
    assert message not in text
    assert "/no/such/route" not in text
    histogram = "sidecar_http_request_duration_seconds_count"
    assert moved(histogram, method="GET", route="/v1/uuids", outcome="success") == 3
    assert moved(histogram, method="GET", route="/v1/uuids", outcome="client_error") == 2
    assert value(after, "sidecar_info", version=__version__) == 1


async def test_loop_lag_histogram_sees_a_blocked_loop(api: Api) -> None:
    """The daemon's ticker records a loop held for 0.3 s in a bucket above 0.25 s."""
    lag = "sidecar_event_loop_lag_seconds"
    _, before = await scrape(api)
    await asyncio.sleep(0.2)  # the ticker runs: a few samples of an idle loop
    time.sleep(0.3)  # holding the loop (test and daemon share it) is the point
    await asyncio.sleep(0.1)  # the ticker wakes late and records it
    _, after = await scrape(api)

    def moved(**labels: str) -> float:
        return value(after, f"{lag}_bucket", **labels) - value(before, f"{lag}_bucket", **labels)

    assert value(after, f"{lag}_count") > value(before, f"{lag}_count")
    # At least one sample over 0.25 s: counted in +Inf but not in the 0.25 s bucket.
    assert moved(le="+Inf") - moved(le="0.25") >= 1


async def test_metrics_needs_the_admin_scope(api: Api) -> None:
    assert (await api.client.get("/metrics")).status == 401
    refused = await api.client.get("/metrics", headers=api.auth("signer"))
    assert refused.status == 403
    assert refused.content_type == "application/problem+json"
    ok = await api.client.get("/metrics", headers=api.auth("all"))
    assert ok.status == 200
    assert ok.headers["Content-Type"].startswith("text/plain; version=0.0.4")


async def test_each_app_has_its_own_registry(
    api_factory: Callable[..., Awaitable[Api]],
) -> None:
    first, second = await api_factory(), await api_factory()
    for _ in range(4):
        await first.client.get("/v1/uuids", headers=first.auth("signer"))
    _, seen_by_first = await scrape(first)
    _, seen_by_second = await scrape(second)
    labels = {"method": "GET", "route": "/v1/uuids", "status": "200"}
    assert value(seen_by_first, "sidecar_http_requests_total", **labels) == 4
    assert value(seen_by_second, "sidecar_http_requests_total", **labels) == 0


async def test_refusals_reach_the_recent_errors_of_health(api: Api) -> None:
    await api.client.get("/v1/uuids", headers={"Authorization": "Bearer not-a-token"})
    health = await (await api.client.get("/v1/health", headers=api.auth("all"))).json()
    errors = next(c for c in health["checks"] if c["name"] == "errors")
    assert errors["status"] == "ok"  # past errors inform; they do not degrade health
    latest = errors["data"]["recent"][0]
    assert latest["area"] == "api"
    assert "/v1/uuids" in latest["message"] and "token" in latest["message"]
    assert "not-a-token" not in str(health)


async def test_engine_facing_api_and_scrape_time_sources() -> None:
    metrics = Metrics(process=False)
    metrics.signature_made("xades", "B-LT", 0.2)
    with metrics.signing("pades", "B-B"):
        pass
    with pytest.raises(TimeoutError), metrics.upstream("tsa"):
        raise TimeoutError
    with pytest.raises(ConnectionRefusedError), metrics.upstream("ocsp"):
        raise ConnectionRefusedError
    with metrics.upstream("cns") as call:
        call.fail("error", "the CNS answered HTTP 500")
    with metrics.upstream("tsa"):
        pass
    metrics.cns_message("deposit", "delivered")

    async def outbox() -> OutboxStats:
        return OutboxStats({"queued": 3, "sending": 1, "delivered": 7}, 125.0)

    now = datetime.now(UTC)
    metrics.watch_outbox(outbox)
    metrics.watch_certificates(
        lambda: [CertificateExpiry("sandbox-signer", "signer", now + timedelta(days=30))]
    )

    def broken() -> list[CertificateExpiry]:
        raise RuntimeError("a subsystem with a bug")

    metrics.watch_certificates(broken)

    scraped = samples((await metrics.render()).decode())
    assert value(scraped, "sidecar_signatures_total", format="xades", level="B-LT") == 1
    assert value(scraped, "sidecar_signatures_total", format="pades", level="B-B") == 1
    assert value(scraped, "sidecar_upstream_requests_total", upstream="tsa", outcome="timeout") == 1
    assert value(scraped, "sidecar_upstream_requests_total", upstream="tsa", outcome="ok") == 1
    assert (
        value(scraped, "sidecar_upstream_requests_total", upstream="ocsp", outcome="unavailable")
        == 1
    )
    assert value(scraped, "sidecar_upstream_requests_total", upstream="cns", outcome="error") == 1
    assert (
        value(scraped, "sidecar_cns_messages_total", operation="deposit", result="delivered") == 1
    )
    assert value(scraped, "sidecar_outbox_messages", status="queued") == 3
    assert value(scraped, "sidecar_outbox_oldest_pending_age_seconds") == 125.0
    days = value(
        scraped, "sidecar_certificate_days_to_expiry", name="sandbox-signer", role="signer"
    )
    assert 29.9 < days <= 30.0
    assert value(scraped, "sidecar_metrics_source_failures_total", source="certificates") == 1
    assert value(scraped, "sidecar_errors_total", area="tsa") == 1

    # The trust layer reports through on_exchange(upstream, outcome, seconds).
    metrics.upstream_done("crl", "unavailable", 0.01)
    words = [e.message for e in metrics.recent_errors()]
    assert words[0] == "the certificate revocation list (CRL) server could not be reached"
    words = words[1:]
    assert words[0] == "the CNS answered with an error (the CNS answered HTTP 500)"
    assert "the timestamp authority (TSA) did not answer in time" in words
    assert "the OCSP responder could not be reached (ConnectionRefusedError)" in words


async def test_outbox_gauges_drop_states_that_emptied() -> None:
    metrics = Metrics(process=False)
    state = {"counts": {"queued": 2}}
    metrics.watch_outbox(lambda: OutboxStats(state["counts"], None))
    first = samples((await metrics.render()).decode())
    assert value(first, "sidecar_outbox_messages", status="queued") == 2
    state["counts"] = {"delivered": 2}
    second = samples((await metrics.render()).decode())
    assert ("sidecar_outbox_messages", frozenset({("status", "queued")})) not in second
    assert value(second, "sidecar_outbox_messages", status="delivered") == 2
    assert value(second, "sidecar_outbox_oldest_pending_age_seconds") == 0


def test_engines_can_use_metrics_without_aiohttp() -> None:
    code = "import sys, sidecar.metrics; sys.exit('aiohttp' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


async def test_sandbox_scrape_has_key_expiry_and_outbox_state(sandbox_api: Api) -> None:
    """Read when scraped from the key registry and the CNS outbox of a sandbox daemon."""
    health = await (await sandbox_api.client.get("/v1/health", headers=sandbox_api.auth())).json()
    keys = {
        k["id"]: k["days_to_expiry"]
        for c in health["checks"]
        if c["name"] == "keys"
        for k in c["data"]["keys"]
    }
    assert keys, health
    _, scraped = await scrape(sandbox_api)
    for key_id, days in keys.items():
        shown = value(scraped, "sidecar_certificate_days_to_expiry", name=key_id, role="signer")
        assert days <= shown < days + 1, (key_id, days, shown)
    outbox = next(c for c in health["checks"] if c["name"] == "outbox")["data"]
    pending = sum(
        value(scraped, "sidecar_outbox_messages", status=s)
        for s in ("queued", "sending", "awaiting_timestamp")
    )
    assert pending == outbox["depth"]
    assert ("sidecar_outbox_oldest_pending_age_seconds", frozenset()) in scraped


async def test_signatures_are_counted_by_format_and_level(sandbox_api: Api) -> None:
    samples = Path(__file__).resolve().parents[1] / "profiles" / "samples"
    _, before = await scrape(sandbox_api)
    form = aiohttp.FormData()
    xml = (samples / "fee-note.xml").read_bytes()
    form.add_field("xml", xml, filename="fee-note.xml", content_type="application/xml")
    pdf_bytes = (samples / "fee-note.pdf").read_bytes()
    form.add_field("pdf", pdf_bytes, filename="fee-note.pdf", content_type="application/pdf")
    signed = await sandbox_api.client.post(
        "/v1/forms/fee-note/sign", data=form, headers=sandbox_api.auth()
    )
    assert signed.status == 200, await signed.text()
    xml_level = signed.headers["X-Signature-Level"]
    pdf_level = signed.headers["X-Pdf-Signature-Level"]
    pdf = await sandbox_api.client.post(
        "/v1/pdf/sign?level=B-B",
        data=(samples / "fee-note.pdf").read_bytes(),
        headers={**sandbox_api.auth(), "Content-Type": "application/pdf"},
    )
    assert pdf.status == 200, await pdf.text()
    refused = await sandbox_api.client.post(
        "/v1/pdf/sign?level=B-X",
        data=b"%PDF-1.7",
        headers={**sandbox_api.auth(), "Content-Type": "application/pdf"},
    )
    assert refused.status == 400
    _, after = await scrape(sandbox_api)

    def moved(format: str, level: str) -> float:
        name = "sidecar_signatures_total"
        return value(after, name, format=format, level=level) - value(
            before, name, format=format, level=level
        )

    assert xml_level == "B-LT"
    assert moved("xades", "B-LT") == 1
    assert moved("pades", pdf_level) == 1 + (pdf_level == "B-B")
    assert moved("pades", "B-B") >= 1


async def test_tsa_exchanges_are_counted(sandbox_api: Api) -> None:
    """A timestamp through the daemon moves the TSA's upstream counter and histogram."""
    _, before = await scrape(sandbox_api)
    response = await sandbox_api.client.post(
        "/v1/timestamps?hash=sha256",
        data=b"a document",
        headers={**sandbox_api.auth(), "Content-Type": "application/octet-stream"},
    )
    assert response.status == 200, await response.text()
    _, after = await scrape(sandbox_api)
    labels = {"upstream": "tsa", "outcome": "ok"}
    counter = "sidecar_upstream_requests_total"
    assert value(after, counter, **labels) - value(before, counter, **labels) == 1
    histogram = "sidecar_upstream_duration_seconds_count"
    assert value(after, histogram, **labels) - value(before, histogram, **labels) == 1
