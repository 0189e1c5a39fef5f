"""`packwise console`: the web app. Routes, authentication, live updates (server-sent events), the CSV export
and the replay action; the pages themselves are rendered in streams/console/pages.py.

It binds 127.0.0.1 by default. On any other address it refuses to start without a token, and then every
request must carry it: `Authorization: Bearer TOKEN`, basic auth with TOKEN as the password (any user), or
the session cookie the sign-in form sets. Behind an OIDC proxy (oauth2-proxy, a mesh's ext-authz), keep the
console on 127.0.0.1 in the proxy's pod and let the proxy add the bearer header.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import hmac
import io
import ipaddress
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable

import prometheus_client
from aiohttp import web

from streams.console import pages
from streams.console.reader import ConsoleReader, LagPoller, Scraper
from streams.console.replay import Coordinates, replay
from streams.console.store import ConsoleStore, Kind
from streams.errors import PackwiseError
from streams.logs import get_logger
from streams.marketplaces import load_marketplaces
from streams.settings import Settings

log = get_logger("packwise.console")
STATIC = Path(__file__).parent / "static"
COOKIE = "packwise_console"
LIVE_CHECK_S = 1.0
HEARTBEAT_S = 15.0
REPLAY_MOST = 200  # dead letters one replay request may name (the page lists 200)
CSRF_HEADER = "X-Packwise-Console"  # a custom header: a cross-site form cannot send it


def loopback_only(host: str) -> bool:
    """Whether binding `host` keeps the console to this machine's own processes (127.0.0.1, ::1, localhost).
    Any other address, other loopback ones included, counts as reachable by others and needs a token."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host) in (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"))
    except ValueError:
        return False


def _session_value(token: str) -> str:
    return hmac.new(token.encode(), b"packwise-console-session", hashlib.sha256).hexdigest()


def authorized(request: web.Request, token: str) -> bool:
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        return hmac.compare_digest(header[7:].strip().encode(), token.encode())
    if header.startswith("Basic "):
        import base64

        try:
            _, _, password = base64.b64decode(header[6:].strip()).decode().partition(":")
        except Exception:
            return False
        return hmac.compare_digest(password.encode(), token.encode())
    cookie = request.cookies.get(COOKIE, "")
    return bool(cookie) and hmac.compare_digest(cookie.encode(), _session_value(token).encode())


@dataclass
class Console:
    settings: Settings
    store: ConsoleStore
    reader: ConsoleReader | None = None
    lag: LagPoller | None = None
    scraper: Scraper | None = None
    token: str | None = None
    started: float = field(default_factory=time.monotonic)

    def live(self) -> pages.Live:
        targets = {code: m.target_damage_rate for code, m in load_marketplaces(self.settings.marketplaces_file).items()}
        return pages.Live(
            caught_up=self.reader.caught_up.is_set() if self.reader else True,
            folded=self.reader.folded if self.reader else 0,
            reader_failure=self.reader.failure if self.reader else None,
            lags=self.lag.lags if self.lag else [], lag_error=self.lag.error if self.lag else None,
            workers=list(self.scraper.results.values()) if self.scraper else [], targets=targets)

    def input_topics(self) -> list[str]:
        from streams.topics import TopicRole, topic_specs

        return [s.name for s in topic_specs(self.settings) if s.role is TopicRole.INPUT]


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8",
                        headers={"Cache-Control": "no-store"})


class ConsoleCollector:
    """The console's figures as Prometheus metrics, read from the store at scrape time: the certified cohort
    per marketplace and type (what the `PackwiseDamageAboveTarget` alerts check), each marketplace's target,
    the open test queue, and whether the figures are complete (caught up) and still moving (the reader alive).

    The cohort's counts are gauges, not counters: a decision read late can move shipments out of a cohort,
    so they may go down."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        store, live = self.console.store, self.console.live()
        shipments = GaugeMetricFamily("packwise_certified_shipments", "Shipments made in the type their product "
                                      "was auto-certified for at the time.", labels=["marketplace", "package_type"])
        damages = GaugeMetricFamily("packwise_certified_damages", "Damage reports of those shipments.",
                                    labels=["marketplace", "package_type"])
        for r in store.cohort():
            shipments.add_metric([r["marketplace"], r["package_type"]], r["shipments"])
            damages.add_metric([r["marketplace"], r["package_type"]], r["damages"])
        target = GaugeMetricFamily("packwise_target_damage_rate", "The marketplace's target damage rate.",
                                   labels=["marketplace"])
        for code, rate in live.targets.items():
            target.add_metric([code], rate)
        tests = GaugeMetricFamily("packwise_open_test_requests", "Open physical test requests.", labels=["marketplace"])
        grams = GaugeMetricFamily("packwise_open_test_grams", "Grams per unit saved if every open test passed.",
                                  labels=["marketplace"])
        for r in store.test_totals():
            tests.add_metric([r["marketplace"]], r["open"])
            grams.add_metric([r["marketplace"]], r["grams"])
        failed = live.reader_failure is not None
        caught_up = GaugeMetricFamily("packwise_console_caught_up", "1 once the console has read every partition to "
                                      "the end it had at start, while its reader runs (0 after a failure: the figures "
                                      "are stale).", value=int(live.caught_up and not failed))
        reader_failed = GaugeMetricFamily("packwise_console_reader_failed", "1 when the console stopped reading Kafka "
                                          "(its /healthz says why).", value=int(failed))
        yield from (shipments, damages, target, tests, grams, caught_up, reader_failed)


def make_app(console: Console) -> web.Application:
    store = console.store
    registry = prometheus_client.CollectorRegistry()
    registry.register(ConsoleCollector(console))

    @web.middleware
    async def guard(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
        version = store.version  # read before the page: a change while it renders makes it refresh, never miss
        if console.token is None or request.path in ("/login", "/healthz") or request.path.startswith("/static/"):
            response = await handler(request)
        elif not authorized(request, console.token):
            if "text/html" in request.headers.get("Accept", ""):
                response = _html(pages.login(), 401)
            else:
                response = web.json_response({"error": "a console token is required"}, status=401,
                                             headers={"WWW-Authenticate": 'Bearer realm="packwise console"'})
        else:
            response = await handler(request)
        if isinstance(response, web.Response) and response.content_type == "text/html" and response.body:
            # the live script compares this with the versions the server-sent events announce
            response.text = response.text.replace("<body>", f'<body data-version="{version}">', 1)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Content-Security-Policy",
                                    "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:")
        response.headers.setdefault("X-Frame-Options", "DENY")
        return response

    async def overview(_request: web.Request) -> web.Response:
        return _html(pages.overview(store, console.live()))

    async def product(request: web.Request) -> web.Response:
        product_id = request.match_info["product"]
        page = pages.product(store, product_id)
        return _html(page) if page else _html(pages.not_found(f"No decision for product {product_id}."), 404)

    async def search(request: web.Request) -> web.StreamResponse:
        query = request.query.get("q", "").strip()
        if query and store.decision(query) is not None:
            raise web.HTTPFound(f"/products/{query}")
        return _html(pages.search_results(query, store.search_products(query) if query else []))

    def _filter(request: web.Request, name: str) -> str | None:
        return request.query.get(name) or None

    async def tests(request: web.Request) -> web.Response:
        try:
            page = max(0, int(request.query.get("page", "0")))
        except ValueError:
            page = 0
        markets = sorted(load_marketplaces(console.settings.marketplaces_file))
        return _html(pages.test_queue(store, _filter(request, "marketplace"), _filter(request, "site"), page, markets))

    async def tests_csv(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": 'attachment; filename="packwise-test-queue.csv"'})
        await response.prepare(request)
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(pages.CSV_COLUMNS)
        for i, row in enumerate(store.test_queue(_filter(request, "marketplace"), _filter(request, "site"), None)):
            writer.writerow(pages.csv_row(row))
            if i % 1000 == 999:  # stream: a million rows never sit in memory
                await response.write(buffer.getvalue().encode())
                buffer.seek(0)
                buffer.truncate()
        await response.write(buffer.getvalue().encode())
        await response.write_eof()
        return response

    async def dead_letters(request: web.Request) -> web.Response:
        return _html(pages.dead_letters(store, _filter(request, "topic"), _filter(request, "reason"),
                                        console.input_topics()))

    async def dead_letter(request: web.Request) -> web.Response:
        from streams.serde import Serde, SerdeError

        try:
            where = Coordinates(request.match_info["topic"], int(request.match_info["partition"]),
                                int(request.match_info["offset"]))
        except ValueError:
            raise web.HTTPNotFound()
        row = store.dead_letter(where.topic, where.partition, where.offset)
        if row is None:
            return _html(pages.not_found(f"No dead letter at {where}."), 404)
        decoded, error = None, None
        kinds = console.reader.kinds if console.reader else {}
        contract = kinds.get(row["source_topic"]) or _input_contract(console.settings, row["source_topic"])
        if row["original_value"] is not None and contract:
            try:
                decoded = Serde.for_settings(console.settings).decode(contract, row["original_value"])
            except SerdeError as failure:
                error = str(failure)
        return _html(pages.dead_letter(row, decoded, error))

    async def replay_selected(request: web.Request) -> web.Response:
        if request.headers.get(CSRF_HEADER) != "1":
            return web.json_response({"error": f"send the {CSRF_HEADER}: 1 header"}, status=403)
        try:
            body = await request.json()
            targets = [Coordinates.parse(text) for text in body["dead_letters"]]
            if len(targets) > REPLAY_MOST:  # each is a read from Kafka and a send: a request stays short
                raise ValueError(f"at most {REPLAY_MOST} dead letters per replay, got {len(targets)}")
        except (ValueError, KeyError, TypeError, PackwiseError) as error:
            return web.json_response({"error": f"expected {{'dead_letters': ['TOPIC/PARTITION/OFFSET', ...]}}: "
                                               f"{error}"}, status=400)
        loop = asyncio.get_running_loop()
        report = await loop.run_in_executor(None, replay, console.settings, store, targets)
        log.info("dead_letters_replayed", sent=report.sent, refused=report.refused)
        return web.json_response({"sent": report.sent, "refused": report.refused, "message": report.line()})

    async def events(request: web.Request) -> web.StreamResponse:
        """Server-sent events: `version` whenever the store changed, so open pages reload their content."""
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                               "X-Accel-Buffering": "no"})
        await response.prepare(request)
        last, beat = None, time.monotonic()
        try:
            while True:
                version = store.version
                if version != last:
                    await response.write(f"event: version\ndata: {version}\n\n".encode())
                    last, beat = version, time.monotonic()
                elif time.monotonic() - beat > HEARTBEAT_S:
                    await response.write(b": still here\n\n")
                    beat = time.monotonic()
                await asyncio.sleep(LIVE_CHECK_S)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return response

    async def login_page(request: web.Request) -> web.Response:
        if request.method == "GET":
            return _html(pages.login())
        form = await request.post()
        given = str(form.get("token", ""))
        if console.token is None or not hmac.compare_digest(given.encode(), console.token.encode()):
            return _html(pages.login("That token is not the console's."), 401)
        response = web.HTTPFound("/")
        response.set_cookie(COOKIE, _session_value(console.token), httponly=True, samesite="Strict",
                            secure=request.secure)
        raise response

    async def metrics(_request: web.Request) -> web.Response:
        return web.Response(body=prometheus_client.generate_latest(registry),
                            headers={"Content-Type": prometheus_client.CONTENT_TYPE_LATEST})

    async def health(_request: web.Request) -> web.Response:
        reader = console.reader
        ok = reader is None or reader.failure is None
        return web.json_response({"ok": ok, "caught_up": reader.caught_up.is_set() if reader else True,
                                  "messages": reader.folded if reader else 0, "version": store.version},
                                 status=200 if ok else 503)

    app = web.Application(middlewares=[guard])
    app.add_routes([
        web.get("/", overview), web.get("/products", search), web.get("/products/{product}", product),
        web.get("/tests", tests), web.get("/tests.csv", tests_csv), web.get("/dead-letters", dead_letters),
        web.get("/dead-letters/{topic}/{partition}/{offset}", dead_letter),
        web.post("/dead-letters/replay", replay_selected), web.get("/events", events),
        web.get("/login", login_page), web.post("/login", login_page), web.get("/healthz", health),
        web.get("/metrics", metrics),
        web.static("/static", STATIC)])
    return app


def _input_contract(settings: Settings, topic: str) -> str | None:
    from streams.topics import topic_specs

    return next((s.contract for s in topic_specs(settings) if s.name == topic), None)


def console_token(settings: Settings) -> str | None:
    token = settings.console_token_secret()
    return token or None


def claim_store(path: Path):
    """An exclusive lock beside the store, held while this console reads into it: a second console on the
    same store is refused (`packwise dlq replay` shares the store without reading into it, and takes none)."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(f"{path}.lock", "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise PackwiseError(f"another packwise console is reading into {path}: stop it, or give this one its own "
                            "PACKWISE_STATE_DIR") from None
    return handle


def serve(settings: Settings, on_ready: Callable[[str], None] = print) -> None:
    """Start the reader, the pollers and the web server; run until SIGINT or SIGTERM."""
    host, port = settings.console_host, settings.console_port
    token = console_token(settings)
    if not loopback_only(host) and token is None:
        raise PackwiseError(f"PACKWISE_CONSOLE_HOST={host} makes the console reachable from other machines: set "
                            "PACKWISE_CONSOLE_TOKEN_FILE (or PACKWISE_CONSOLE_TOKEN) first, or keep 127.0.0.1 "
                            "behind an authenticating proxy")
    from streams.console.cli import store_path

    lock = claim_store(store_path(settings))
    store = ConsoleStore(store_path(settings))
    reader = ConsoleReader(settings, store)
    urls = [u.strip() for u in settings.console_metrics_urls.split(",") if u.strip()] or [
        f"http://127.0.0.1:{settings.web_port}/metrics"]
    console = Console(settings, store, reader, LagPoller(settings), Scraper(urls), token)
    for thread in (reader, console.lag, console.scraper):
        thread.start()

    async def main() -> None:
        runner = web.AppRunner(make_app(console), access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, host, port, shutdown_timeout=1.0)
        try:
            await site.start()
        except OSError as error:
            raise PackwiseError(f"the console cannot listen on {host}:{port} ({error.strerror}): choose another "
                                "PACKWISE_CONSOLE_PORT") from None
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        shown = f"[{host}]" if ":" in host else host
        on_ready(f"packwise console on http://{shown}:{port}/ (reading {len(reader.kinds)} topics from "
                 f"{settings.bootstrap_servers}; state in {store.path})")
        await stop.wait()
        await runner.cleanup()

    try:
        asyncio.run(main())
    finally:
        for thread in (reader, console.lag, console.scraper):
            thread.stopping.set()
        reader.join(timeout=5)
        store.close()
        lock.close()


__all__ = ["Console", "Kind", "make_app", "serve", "loopback_only", "authorized"]
