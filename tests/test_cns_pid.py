"""PID v2 routes: synchronous forwarding and the 422/502/503/504 mapping."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable

from lxml import etree

from tests.fixtures.cns import SimulatorThread, cns_settings, xml_headers
from tests.fixtures.daemon import Api
from tests.fixtures.sandbox import free_port


def pid_request(acts: str, *, matricule: str = "1980010112345", extra: str = "") -> bytes:
    return (
        f'<PidRequest xmlns="urn:sidecar:standin:cns:pid:2"><UUID>{uuid.uuid4()}</UUID>'
        f'<Patient matricule="{matricule}"/>{acts}{extra}</PidRequest>'
    ).encode()


async def post(api: Api, kind: str, body: bytes) -> tuple[int, bytes, dict[str, str]]:
    response = await api.client.post(f"/v1/cns/pid/{kind}", data=body, headers=xml_headers(api))
    return response.status, await response.read(), dict(response.headers)


async def test_simulation_answers_amounts_and_anomalies(cns_api: Api) -> None:
    body = pid_request(
        '<Act code="C1" quantity="1"/><Act code="E1" quantity="3"/><Act code="ZZ9" quantity="1"/>'
    )
    status, answer, headers = await post(cns_api, "simulations", body)
    assert status == 200 and headers["Content-Type"].startswith("application/xml")
    root = etree.fromstring(answer)
    # C1 52.10 at 88 % + E1 capped at 2 x 31.75 at 88 %; ZZ9 unknown.
    assert root.findtext("Total") == "115.60"
    assert root.findtext("Covered") == "101.73"
    assert root.findtext("PatientShare") == "13.87"
    codes = [a.get("code") for a in root.iter("Anomaly")]
    assert codes == ["A002", "A001"]


async def test_validation_then_contestation(cns_api: Api) -> None:
    status, answer, _ = await post(cns_api, "validations", pid_request('<Act code="C1"/>'))
    assert status == 200
    reference = etree.fromstring(answer).findtext("Reference")
    assert reference and reference.startswith("PID-")
    contest = pid_request(
        "", extra=f"<ValidationReference>{reference}</ValidationReference><Motive>x</Motive>"
    )
    status, answer, _ = await post(cns_api, "contestations", contest)
    assert status == 200
    assert etree.fromstring(answer).findtext("Status") == "registered"


async def test_cns_4xx_is_422_with_its_reasons(cns_api: Api) -> None:
    status, answer, _ = await post(cns_api, "simulations", pid_request("", matricule=""))
    assert status == 422
    problem = json.loads(answer)
    assert problem["code"] == "cns_rejected" and problem["cns_status"] == 422
    assert problem["errors"] == [{"code": "R001", "message": "Matricule du patient manquant"}]


async def test_cns_5xx_is_502(cns_api: Api, cns_simulator: SimulatorThread) -> None:
    cns_simulator.simulator.faults.statuses = [500]
    status, answer, _ = await post(cns_api, "simulations", pid_request('<Act code="C1"/>'))
    assert status == 502 and b"upstream_error" in answer


async def test_cns_too_slow_is_504(cns_api: Api, cns_simulator: SimulatorThread) -> None:
    cns_simulator.simulator.faults.latency = 3.0  # pid_timeout is 2 s in cns_settings
    status, answer, _ = await post(cns_api, "simulations", pid_request('<Act code="C1"/>'))
    assert status == 504 and b"upstream_timeout" in answer


async def test_cns_refusing_connections_is_503_with_retry_after(
    api_factory: Callable[..., Awaitable[Api]],
) -> None:
    api = await api_factory(cns_settings(f"http://127.0.0.1:{free_port()}"))
    status, answer, headers = await post(api, "validations", pid_request('<Act code="C1"/>'))
    assert status == 503 and b"upstream_unavailable" in answer
    assert int(headers["Retry-After"]) > 0


async def test_dropped_connection_is_503(cns_api: Api, cns_simulator: SimulatorThread) -> None:
    cns_simulator.simulator.faults.drop_after_read = 1
    status, _, headers = await post(cns_api, "simulations", pid_request('<Act code="C1"/>'))
    assert status == 503 and "Retry-After" in headers


async def test_pid_request_without_uuid_is_refused(cns_api: Api) -> None:
    status, answer, _ = await post(cns_api, "simulations", b"<PidRequest/>")
    assert status == 422 and b"invalid_uuid" in answer
