"""Request rates per client: ``[server] rate_limit``, a client's own, 429 with Retry-After."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from sidecar.clients import Scope
from sidecar.config import ConfigError, ServerSettings, Settings, load_settings
from sidecar.ratelimit import Rate, RateLimiter, parse_rate
from tests.fixtures.daemon import Api


async def test_a_client_over_its_rate_gets_429_and_others_do_not(
    api_factory: Callable[..., Awaitable[Api]],
) -> None:
    # Per minute: the bucket does not refill noticeably while the test runs.
    api = await api_factory(Settings(server=ServerSettings(rate_limit="3/min")))
    client = api.client
    for _ in range(3):
        assert (await client.get("/v1/uuids", headers=api.auth("signer"))).status == 200
    response = await client.get("/v1/uuids", headers=api.auth("signer"))
    assert response.status == 429
    assert response.content_type == "application/problem+json"
    body = await response.json()
    assert body["code"] == "rate_limited"
    assert 1 <= int(response.headers["Retry-After"]) <= 20  # a third of a minute at most
    # Another client has its own bucket; health and metrics are never limited.
    assert (await client.get("/v1/uuids", headers=api.auth("all"))).status == 200
    for _ in range(5):
        assert (await client.get("/v1/health", headers=api.auth("signer"))).status == 200
        assert (await client.get("/metrics", headers=api.auth("all"))).status == 200
    assert (await client.get("/v1/uuids", headers=api.auth("all"))).status == 200


async def test_a_clients_own_rate_wins(api_factory: Callable[..., Awaitable[Api]]) -> None:
    api = await api_factory(Settings(server=ServerSettings(rate_limit="100/s")))
    token = api.store.create("robot", frozenset({Scope.SIGN}), rate_limit="1/h")
    headers = {"Authorization": f"Bearer {token}"}
    assert (await api.client.get("/v1/uuids", headers=headers)).status == 200
    response = await api.client.get("/v1/uuids", headers=headers)
    assert response.status == 429
    assert int(response.headers["Retry-After"]) > 3000


async def test_no_rate_configured_is_no_limit(api: Api) -> None:
    for _ in range(30):
        assert (await api.client.get("/v1/uuids", headers=api.auth("signer"))).status == 200


def test_the_bucket_refills_at_the_rate() -> None:
    now = [0.0]
    limiter = RateLimiter(clock=lambda: now[0])  # a settable clock, not the wall's
    rate = parse_rate("2/s")
    assert limiter.take("a", rate) == limiter.take("a", rate) == 0.0
    assert limiter.take("a", rate) == pytest.approx(0.5)
    now[0] += 0.5
    assert limiter.take("a", rate) == 0.0
    assert limiter.take("a", rate) > 0
    now[0] += 10  # a long pause fills the bucket to its size, not beyond
    assert [limiter.take("a", rate) for _ in range(3)] == [0.0, 0.0, pytest.approx(0.5)]


@pytest.mark.parametrize(
    ("text", "rate"), [("20/s", Rate(20, 1)), ("600 / min", Rate(600, 60)), ("5/h", Rate(5, 3600))]
)
def test_rates(text: str, rate: Rate) -> None:
    assert parse_rate(text) == rate


def test_a_bad_rate_is_a_config_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "sidecar.toml"
    config.write_text('[server]\nrate_limit = "lots"\n')
    with pytest.raises(ConfigError, match="rate_limit"):
        load_settings(config)
