"""The console's web app on a store, without Kafka: authentication, the replay action's guard, the CSV export,
the metrics it exports for the alerts. (tests/test_console.py drives the same app in Chromium on a real run.)"""

from __future__ import annotations

import asyncio
import base64
import csv
import io
from pathlib import Path
from typing import Any, Awaitable, Callable

import pytest
from aiohttp.test_utils import TestClient, TestServer

from streams.console.store import ConsoleStore, Kind
from streams.console.web import Console, claim_store, loopback_only, make_app
from streams.errors import PackwiseError
from streams.settings import Settings
from tests.test_console_store import Feed, decision, report, request, shipment

TOKEN = "s3cret-token"


def with_client(store: ConsoleStore, token: str | None, check: Callable[[TestClient], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        console = Console(Settings(), store, token=token)
        async with TestClient(TestServer(make_app(console), host="127.0.0.1")) as client:
            return await check(client)

    return asyncio.run(main())


@pytest.fixture
def store(tmp_path: Path):
    store = ConsoleStore(tmp_path / "console.sqlite3")
    feed = Feed(store)
    feed((Kind.DECISION, decision("p1", 1, "box", "needs_test", market="EU")),
         (Kind.TEST_REQUEST, request("p1", 1, "poly_bag", "box", 150.0, market="EU")),
         (Kind.DECISION, decision("p2", 1, "poly_bag", market="JP")))
    ships = [shipment("p2", 2 + i, "poly_bag", market="JP") for i in range(10)]
    feed(*[(Kind.SHIPMENT, s) for s in ships], (Kind.DAMAGE_REPORT, report(ships[0])))
    yield store
    store.close()


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("::1", True), ("localhost", True),
                                            ("127.0.0.2", False), ("0.0.0.0", False), ("10.1.2.3", False),
                                            ("console.internal", False)])
def test_only_the_loopback_addresses_go_without_a_token(host: str, loopback: bool) -> None:
    assert loopback_only(host) is loopback


def test_a_console_with_a_token_serves_nothing_without_it(store: ConsoleStore) -> None:
    async def check(client: TestClient) -> None:
        assert (await client.get("/")).status == 401
        assert (await client.get("/tests.csv")).status == 401
        assert (await client.get("/metrics")).status == 401
        denied = await client.get("/", headers={"Accept": "text/html"})
        assert denied.status == 401 and 'name="token"' in await denied.text()  # the sign-in form
        assert (await client.get("/", headers={"Authorization": "Bearer nope"})).status == 401
        assert (await client.get("/", headers={"Authorization": f"Bearer {TOKEN}"})).status == 200
        basic = base64.b64encode(f"ops:{TOKEN}".encode()).decode()
        assert (await client.get("/", headers={"Authorization": f"Basic {basic}"})).status == 200
        assert (await client.get("/healthz")).status == 200  # probes need no token
        wrong = await client.post("/login", data={"token": "nope"}, allow_redirects=False)
        assert wrong.status == 401
        signed_in = await client.post("/login", data={"token": TOKEN}, allow_redirects=False)
        assert signed_in.status == 302 and "HttpOnly" in signed_in.headers["Set-Cookie"]
        assert TOKEN not in signed_in.headers["Set-Cookie"]  # the cookie is derived from the token, not it
        assert (await client.get("/")).status == 200  # the session cookie now

    with_client(store, TOKEN, check)


def test_replay_needs_the_consoles_own_header_so_no_other_site_can_post_it(store: ConsoleStore) -> None:
    async def check(client: TestClient) -> None:
        forged = await client.post("/dead-letters/replay", json={"dead_letters": ["shipments.dlq/0/1"]})
        assert forged.status == 403
        bad = await client.post("/dead-letters/replay", headers={"X-Packwise-Console": "1"},
                                json={"dead_letters": ["no-coordinates"]})
        assert bad.status == 400 and "TOPIC/PARTITION/OFFSET" in (await bad.json())["error"]
        too_many = await client.post("/dead-letters/replay", headers={"X-Packwise-Console": "1"},
                                     json={"dead_letters": [f"shipments.dlq/0/{i}" for i in range(201)]})
        assert too_many.status == 400 and "at most 200" in (await too_many.json())["error"]

    with_client(store, None, check)


def test_pages_carry_a_policy_that_refuses_foreign_scripts(store: ConsoleStore) -> None:
    async def check(client: TestClient) -> None:
        page = await client.get("/")
        assert "default-src 'self'" in page.headers["Content-Security-Policy"]
        # the version the page was rendered at, which the live script compares with the events' versions
        assert f'<body data-version="{store.version}">' in await page.text()
        assert page.headers["X-Frame-Options"] == "DENY"
        assert (await client.get("/products/p1")).status == 200
        assert (await client.get("/products/nobody")).status == 404
        assert (await client.get("/static/console.js")).status == 200

    with_client(store, None, check)


def test_the_csv_export_holds_every_open_request_of_the_filter(store: ConsoleStore) -> None:
    async def check(client: TestClient) -> list[dict[str, str]]:
        response = await client.get("/tests.csv?marketplace=EU")
        assert response.headers["Content-Disposition"].startswith("attachment")
        return list(csv.DictReader(io.StringIO(await response.text())))

    rows = with_client(store, None, check)
    assert [(r["product_id"], r["package_type"], float(r["weight_saved_g"])) for r in rows] == [("p1", "poly_bag", 150.0)]


def test_the_console_exports_the_certified_cohort_and_the_targets_for_the_alerts(store: ConsoleStore) -> None:
    async def check(client: TestClient) -> str:
        return await (await client.get("/metrics")).text()

    text = with_client(store, None, check)
    assert 'packwise_certified_shipments{marketplace="JP",package_type="poly_bag"} 10.0' in text
    assert 'packwise_certified_damages{marketplace="JP",package_type="poly_bag"} 1.0' in text
    assert 'packwise_target_damage_rate{marketplace="JP"} 0.003' in text
    assert 'packwise_open_test_requests{marketplace="EU"} 1.0' in text
    assert "packwise_console_caught_up 1.0" in text and "packwise_console_reader_failed 0.0" in text


def test_a_console_whose_reader_failed_says_so_and_stops_vouching_for_its_figures(store: ConsoleStore) -> None:
    class Failed:
        failure, folded, kinds = "KafkaException: broker gone", 10, {}
        caught_up = type("Set", (), {"is_set": staticmethod(lambda: True)})()

    async def check(client: TestClient) -> tuple[int, str]:
        health = await client.get("/healthz")
        return health.status, await (await client.get("/metrics")).text()

    async def main() -> tuple[int, str]:
        console = Console(Settings(), store, reader=Failed())
        async with TestClient(TestServer(make_app(console), host="127.0.0.1")) as client:
            return await check(client)

    status, text = asyncio.run(main())
    assert status == 503
    assert "packwise_console_caught_up 0.0" in text and "packwise_console_reader_failed 1.0" in text


def test_a_second_console_on_the_same_store_is_refused(tmp_path: Path) -> None:
    first = claim_store(tmp_path / "console" / "packwise.sqlite3")
    try:
        with pytest.raises(PackwiseError, match="another packwise console is reading into"):
            claim_store(tmp_path / "console" / "packwise.sqlite3")
    finally:
        first.close()
    claim_store(tmp_path / "console" / "packwise.sqlite3").close()  # free again once the first stopped
