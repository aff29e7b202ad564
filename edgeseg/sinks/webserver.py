"""The ``web`` sink's server: :class:`WebSink` (routes, security and the stream are described in
:mod:`edgeseg.sinks.web`). Imported only when ``sinks.web.listen`` is set, so a run without the page never
loads aiohttp or asyncio."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hmac
import importlib.resources
import logging
import math
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_to_bytes

import cv2
import numpy as np

from edgeseg.errors import ConfigError, EdgesegError, TransientError
from edgeseg.frame import Result
from edgeseg.live import Outcome, Tunable, parse_request
from edgeseg.logtally import said
from edgeseg.procmem import memory_mb
from edgeseg.sinks.base import SinkContext, SinkReport
from edgeseg.sinks.webaccess import TOKEN_COOKIE, TOKEN_HINT, is_loopback, split_listen
from edgeseg.stats import STALE_S

if TYPE_CHECKING:
    from aiohttp import web

    from edgeseg.sinks.web import WebSinkConfig

    Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024  # a change request is a few bytes
# connections at once, before any request or token is seen: under systemd's soft limit of 1024 descriptors
# the rest of the pipeline (files, the camera, MQTT) keeps its own; those beyond are closed at once
MAX_CONNECTIONS = 128
# a connection without a whole request in this time is closed (aiohttp's default keeps it for an hour)
IDLE_TIMEOUT_S = 10.0
# a viewer whose socket takes no frame in this time has stopped reading (a paused player, a peer gone without
# a FIN): its stream ends, or it would hold a slot for good and keep the pipeline encoding for nobody
STALL_TIMEOUT_S = 30.0
MAX_VIEWERS = 32  # streams at once; each costs a socket write per frame, never an encoding
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 2.0
BOUNDARY = "frame"


def _host_name(host: str) -> str:
    """The name in a ``Host`` header: ``[::1]:8080`` -> ``::1``, ``localhost:8080`` -> ``localhost``."""
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _finite(value: float, digits: int = 2) -> float | None:
    return round(value, digits) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _tunable_json(t: Tunable) -> dict[str, Any]:
    return {
        "key": t.key,
        "value": t.value,
        "kind": t.kind,
        "doc": t.doc,
        "lo": t.lo,
        "hi": t.hi,
        "step": t.step,
    }


def _wire_bytes(text: str) -> bytes:
    """A header's or query's text as the bytes the client sent: aiohttp keeps bytes that are not UTF-8 as
    surrogates, which a plain ``encode()`` refuses (a 500 and a traceback for anyone, before the token)."""
    return text.encode("utf-8", "surrogateescape")


def _query_token(request: web.Request) -> bytes | None:
    """``?token=`` as the client sent it, percent escapes decoded and a ``+`` kept: read as a form field
    (aiohttp's ``request.query``) a ``+``, which a token may hold (:func:`load_token`: base64), was a space,
    and the address with the token, opened once as the README says, was refused."""
    for part in request.rel_url.raw_query_string.split("&"):
        name, _, value = part.partition("=")
        if name == "token":
            return unquote_to_bytes(value)
    return None


def _page() -> bytes:
    return importlib.resources.files("edgeseg.sinks").joinpath("web_page.html").read_bytes()


class WebSink:
    """Serves the page from its own thread; ``send`` shares the newest annotated frame with the viewers.

    Args:
        config: the ``sinks.web`` section (``listen`` set).
        ctx: the pipeline's context (render, live stats, control).
        token: required on every request (``None``: none, only allowed on a loopback bind).
        token_origin: where the token came from, for the log line (never the token).
    """

    def __init__(
        self, config: WebSinkConfig, ctx: SinkContext, token: str | None = None, token_origin: str = ""
    ) -> None:
        assert config.listen is not None
        self.config = config
        self.ctx = ctx
        self.host, port = split_listen(config.listen)
        self.loopback = is_loopback(self.host)
        if token is None and not self.loopback:
            raise ConfigError(f"sinks.web.listen: binding to {self.host} needs a token: {TOKEN_HINT}")
        self._token = token.encode() if token is not None else None
        self._page = _page()
        self.started_at = round(time.time(), 3)
        # figures (read by report() and the tests)
        self.frames_encoded = 0
        self.frames_sent = 0  # frames written to viewers, all viewers together
        self.max_viewers = 0
        self.refused = 0
        self.turned_away = 0  # connections closed at accept: MAX_CONNECTIONS were open
        self._viewers = 0
        self._next_frame_at = 0.0
        self._encode_failures = 0
        # the newest frame (none while nobody watches): written on the loop's thread only
        self._jpeg = b""
        self._frame_no = 0
        self._loop = asyncio.new_event_loop()
        self._new_frame: asyncio.Event | None = None
        self._stopping: asyncio.Event | None = None
        self._closing = False
        self._closed = False
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None
        self._start_error: BaseException | None = None
        self._ready = threading.Event()
        self.port = port
        self._thread = threading.Thread(target=self._serve, args=(port,), name="edgeseg-web", daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_S):
            self.close()
            # no configuration problem: a slow resolver (a host name in listen) or a machine overloaded at
            # boot, which a restart may well find gone
            raise TransientError(
                f"sinks.web.listen: the web server did not start within {START_TIMEOUT_S:g} s"
            )
        exc = self._startup_error()
        if exc is not None:
            self._thread.join(STOP_TIMEOUT_S)
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            message = f"sinks.web.listen: cannot listen on {config.listen}: {why}"
            # an address the machine lacks (EADDRNOTAVAIL) may be one not assigned yet: at boot DHCP or a
            # static address on a link still coming up can outlast network-online.target. A restart may
            # find it there (a mistyped one ends the same, failed, after StartLimitBurst= restarts),
            # where status 2 would never have tried
            held = isinstance(exc, OSError) and exc.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL)
            # (a host name with no nameserver answering yet, e.g. the router still booting: EAI_AGAIN)
            unresolved = isinstance(exc, socket.gaierror) and exc.errno == socket.EAI_AGAIN
            if held or unresolved:
                # the port's holder (most often the instance before this one, still closing) may be gone
                # by a restart, the address assigned and the resolver back, where a port refused to us
                # (EACCES) is not
                raise TransientError(message) from None
            raise ConfigError(message) from None
        guard = (
            "loopback only, no token"
            if self._token is None
            else f"token required: {len(self._token)} characters from {token_origin or 'the caller'}"
        )
        log.info("web page on %s (%s)", self.url, guard)

    def _startup_error(self) -> BaseException | None:
        return self._start_error  # set by the server's thread

    @property
    def viewers(self) -> int:
        """Streams open now."""
        return self._viewers

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    # the server's thread ----------------------------------------------------------------------------

    def _serve(self, port: int) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._start(port))
        except BaseException as exc:
            self._start_error = exc
            self._ready.set()
            loop.run_until_complete(self._cleanup())
            loop.close()
            return
        self._ready.set()
        try:
            assert self._stopping is not None
            loop.run_until_complete(self._stopping.wait())
            loop.run_until_complete(self._cleanup())
        except Exception as exc:
            log.warning("web server stopped with an error: %s", exc, exc_info=log.isEnabledFor(logging.DEBUG))
        finally:
            loop.close()

    async def _start(self, port: int) -> None:
        from aiohttp import web  # create() checked that it is installed

        self._new_frame = asyncio.Event()
        self._stopping = asyncio.Event()

        @web.middleware
        async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
            return await self._guard(request, handler)

        app = web.Application(middlewares=[guard], client_max_size=MAX_BODY)
        app.router.add_get("/", self._handle_page)
        app.router.add_get("/favicon.ico", self._handle_favicon)
        app.router.add_get("/stream", self._handle_stream)
        app.router.add_get("/api/state", self._handle_state)
        app.router.add_post("/api/set", self._handle_set)
        app.router.add_post("/api/save", self._handle_save)
        app.router.add_post("/api/reset", self._handle_reset)
        app.on_response_prepare.append(self._on_prepare)
        self._runner = web.AppRunner(
            app,
            access_log_class=_access_logger_class(),
            handle_signals=False,
            shutdown_timeout=1.0,
            keepalive_timeout=IDLE_TIMEOUT_S,
            logger=_server_logger(),
        )
        await self._runner.setup()
        http = self._runner.server
        assert http is not None
        # not web.TCPSite: each connection passes _Gate first, which hands it to aiohttp or closes it
        self._listener = await asyncio.get_running_loop().create_server(
            lambda: _Gate(http, self._turned_away), self.host, port, reuse_address=True
        )
        if port == 0 and self._listener.sockets:  # "any free port": say which
            self.port = int(self._listener.sockets[0].getsockname()[1])

    async def _cleanup(self) -> None:
        self._closing = True
        if self._new_frame is not None:
            self._new_frame.set()  # viewers waiting for a frame see the flag and end their stream
        if self._listener is not None:
            self._listener.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # guard -----------------------------------------------------------------------------------------

    def _given_token(self, request: web.Request) -> bytes:
        """The token the request carries: ``Authorization: Bearer``, else ``?token=``, else the cookie."""
        header = request.headers.get("Authorization", "")
        if header[:7].lower() == "bearer ":
            return _wire_bytes(header[7:].strip())
        query = _query_token(request)
        if query is not None:
            return query
        return _wire_bytes(request.cookies.get(TOKEN_COOKIE, ""))

    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Every request passes here first, unknown paths too: the token, the Host, POSTs as JSON."""
        from aiohttp import web

        if self._token is not None:
            given = self._given_token(request)
            if not given or not hmac.compare_digest(given, self._token):
                self.refused += 1
                if said(self.refused):
                    log.warning(
                        "web: refused %s %s from %s: %s token (%d refused so far)",
                        request.method,
                        request.path,  # never the query: it may hold a (wrong) token
                        request.remote,
                        "wrong" if given else "no",
                        self.refused,
                    )
                return web.json_response(
                    {"ok": False, "error": "a valid token is required (Authorization: Bearer, or ?token=)"},
                    status=401,
                    headers={"WWW-Authenticate": 'Bearer realm="edgeseg"'},
                )
        elif not is_loopback(_host_name(request.host)):
            # another site's page whose name now resolves to 127.0.0.1 (DNS rebinding) sends its own Host
            return web.json_response({"ok": False, "error": "unexpected Host header"}, status=403)
        if request.method == "POST":
            # another site's page may POST a form here; only JSON from this page's own origin is taken
            origin = request.headers.get("Origin")
            if origin is not None and origin.split("://", 1)[-1] != request.host:
                return web.json_response({"ok": False, "error": "cross-origin request refused"}, status=403)
            if request.content_type != "application/json":
                return web.json_response(
                    {"ok": False, "error": "send JSON (Content-Type: application/json)"}, status=415
                )
        try:
            return await handler(request)
        except web.HTTPException:  # 404, 405, 413: aiohttp's own answers
            raise
        except Exception as exc:  # one line, not aiohttp's traceback (unless debugging)
            transport = request.transport
            if isinstance(exc, ConnectionError) and (transport is None or transport.is_closing()):
                # The client hung up, mid-body say (a tab closed as it sent a change: aiohttp fails the read
                # with ConnectionResetError("Connection lost"), web_protocol.py:406 in 3.14): nothing of
                # this server's failed, and nobody reads the answer (a 4xx in the access log, not a 500)
                log.debug("web: %s %s: the client went away (%s)", request.method, request.path, exc)
                return web.json_response({"ok": False, "error": "the connection closed"}, status=400)
            log.warning(
                "web: %s %s failed: %s",
                request.method,
                request.path,
                exc,
                exc_info=log.isEnabledFor(logging.DEBUG),
            )
            return web.json_response({"ok": False, "error": f"internal error: {exc}"}, status=500)

    async def _on_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        if self._token is not None and hmac.compare_digest(_query_token(request) or b"", self._token):
            # a header, not response.set_cookie(): aiohttp has written its cookies by the time this runs; the
            # token's characters (load_token) need no quoting in a cookie
            response.headers.add(
                "Set-Cookie", f"{TOKEN_COOKIE}={self._token.decode()}; Path=/; HttpOnly; SameSite=Strict"
            )
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")  # a ?token= URL never leaks onwards

    # routes ----------------------------------------------------------------------------------------

    async def _handle_page(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web

        return web.Response(
            body=self._page,
            content_type="text/html",
            charset="utf-8",
            headers={
                "Content-Security-Policy": "default-src 'self'; img-src 'self'; style-src 'unsafe-inline'; "
                "script-src 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'"
            },
        )

    async def _handle_favicon(self, request: web.Request) -> web.StreamResponse:
        """No icon, said without an error: a browser asks for one with every page, and a 404 is a red line
        in its console each load."""
        from aiohttp import web

        return web.Response(status=204)

    async def _handle_stream(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web

        if self._viewers >= MAX_VIEWERS:
            return web.json_response({"ok": False, "error": f"{MAX_VIEWERS} viewers already"}, status=503)
        response = web.StreamResponse(
            headers={"Content-Type": f"multipart/x-mixed-replace; boundary={BOUNDARY}", "Pragma": "no-cache"}
        )
        self._viewers += 1
        self.max_viewers = max(self.max_viewers, self._viewers)
        sent = 0
        try:
            await response.prepare(request)
            while not self._closing:
                assert self._new_frame is not None
                if self._frame_no == sent or not self._jpeg:
                    event = self._new_frame
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(event.wait(), 5.0)
                    # a viewer gone while no frame comes (a camera out, a page reloaded) is noticed here,
                    # not at the next write: it counted as a viewer and held its socket until the camera came
                    # back, and MAX_VIEWERS reloads had the stream refuse everyone
                    if request.transport is None or request.transport.is_closing():
                        break
                    continue
                sent, jpeg = self._frame_no, self._jpeg
                head = (
                    f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
                ).encode()
                # waits while the viewer's socket is full
                await asyncio.wait_for(response.write(head + jpeg + b"\r\n"), STALL_TIMEOUT_S)
                self.frames_sent += 1
        except ConnectionError:
            pass  # the viewer left
        except asyncio.TimeoutError:
            log.info(
                "web: a viewer at %s took no frame for %g s; its stream ends", request.remote, STALL_TIMEOUT_S
            )
            if request.transport is not None:
                request.transport.abort()  # half a frame is written: nothing more can go on this connection
        finally:
            self._viewers -= 1
            if self._viewers == 0:
                # with nobody watching, results go on unencoded: this frame is no longer the newest, and the
                # next viewer (a page reloaded, or opened an hour later) was shown it first as if it were live
                self._jpeg = b""
        return response

    async def _handle_state(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web

        return web.json_response(self.state())

    async def _json_body(self, request: web.Request) -> Any:
        try:
            text = await request.text()
        except LookupError:  # "Content-Type: application/json; charset=bogus": the sender's mistake, not ours
            raise ValueError(f"unknown charset {request.charset!r}") from None
        return parse_request(text) if text.strip() else {}

    async def _handle_set(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web

        control = self.ctx.control
        try:
            changes = await self._json_body(request)
        except ValueError as exc:
            return web.json_response(self._refusal("payload", f"is not JSON ({exc})"), status=400)
        if not isinstance(changes, dict) or not changes:
            return web.json_response(
                self._refusal("payload", 'must be a JSON object {"key.path": value, ...}'), status=400
            )
        if control is None:
            why = "this pipeline has no live control"
            return web.json_response(Outcome({}, dict.fromkeys(map(str, changes), why), 0).to_json())
        origin = f"web {request.remote}"
        outcome = await asyncio.to_thread(control.update, changes, origin)
        return web.json_response(outcome.to_json())

    async def _handle_save(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web

        control = self.ctx.control
        try:
            body = await self._json_body(request)
        except ValueError as exc:
            return web.json_response(self._refusal("payload", f"is not JSON ({exc})"), status=400)
        target = body.get("into", "state") if isinstance(body, dict) else None
        if target not in ("state", "yaml"):
            return web.json_response(self._refusal("into", 'must be "state" or "yaml"'), status=400)
        if control is None:
            return web.json_response(self._refusal("save", "this pipeline has no live control"), status=409)
        try:
            line = await asyncio.to_thread(control.save, target == "yaml")
        except EdgesegError as exc:
            log.warning("web: save refused: %s", exc)
            return web.json_response(self._refusal("save", str(exc)), status=409)
        return web.json_response({**Outcome({}, {}, control.current().version).to_json(), "message": line})

    async def _handle_reset(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web

        control = self.ctx.control
        if control is None:
            return web.json_response(self._refusal("reset", "this pipeline has no live control"), status=409)
        outcome = await asyncio.to_thread(control.reset)
        return web.json_response(outcome.to_json())

    def _refusal(self, key: str, why: str) -> dict[str, Any]:
        version = self.ctx.control.current().version if self.ctx.control is not None else 0
        return Outcome({}, {key: why}, version).to_json()

    def state(self) -> dict[str, Any]:
        """What ``/api/state`` answers: the pipeline's figures, the settings version and the tunables."""
        p = self.ctx.stats()
        control = self.ctx.control
        return {
            "stats": {
                "fps": _finite(p.fps),
                "fps_mean": _finite(p.fps_mean),
                "latency_ms": {"p50": _finite(p.latency_ms_p50, 1), "p99": _finite(p.latency_ms_p99, 1)},
                "frames": {"read": p.frames_read, "done": p.frames_done},
                "elapsed_s": _finite(p.elapsed_s, 1),
                # a camera out (or none yet): the page says so, not "live" beside a frozen or empty image;
                # by the stream's pause rule, as MQTT's FPS, not between two frames of a slow camera
                "no_result_s": (
                    _finite(p.idle_s, 0) if p.paused or (not p.frames_done and p.idle_s > STALE_S) else None
                ),
                "drops": dict(p.drops),
                "dropped_total": p.dropped_total,
                "bad_frames": dict(p.bad_frames),
                "stage_ms": {k: _finite(v) for k, v in p.stage_ms.items()},
                "error": p.error,
                "memory_mb": memory_mb(),
            },
            "config_version": control.current().version if control is not None else 0,
            "tunables": [_tunable_json(t) for t in control.tunables()] if control is not None else [],
            "stream": {
                "viewers": self._viewers,
                "frames_encoded": self.frames_encoded,
                "stream_fps": self.config.stream_fps,
            },
            "model": self.ctx.model_name,
            "source": self.ctx.source_uri,
            "source_state": self.ctx.source_state(),  # "connecting (attempt 3, last error: ...)"
            # which run answers: the page reloads its state when it changes (a restart it saw no gap in)
            "started_at_unix": self.started_at,
        }

    # the sink --------------------------------------------------------------------------------------

    def send(self, result: Result) -> None:
        """Encode the result for the viewers, if any and if the stream's rate allows; never blocks."""
        if self._viewers <= 0 or self._closing:
            return
        now = time.monotonic()
        if now < self._next_frame_at:
            return
        period = 1.0 / self.config.stream_fps
        # from the previous slot, not from now, so the long-run rate is stream_fps exactly
        self._next_frame_at = max(self._next_frame_at + period, now - period)
        img = self.ctx.render(result)
        width = self.config.width
        if img.shape[1] > width:
            height = max(1, round(img.shape[0] * width / img.shape[1]))
            img = np.ascontiguousarray(cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA))
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, self.config.jpeg_quality])
        if not ok:
            self._encode_failures += 1
            if self._encode_failures <= 3:
                log.warning("web: frame %d could not be encoded as JPEG", result.frame.index)
            return
        self.frames_encoded += 1
        with contextlib.suppress(RuntimeError):  # a closed loop: the server has stopped
            self._loop.call_soon_threadsafe(self._publish, buf.tobytes())

    def _publish(self, jpeg: bytes) -> None:
        """On the loop's thread: the newest frame, and a wake-up for every viewer waiting for it."""
        if self._viewers <= 0:
            # encoded for a viewer who has left since (the last one: their stream's end forgot the newest
            # frame before this one came): kept, it was the next viewer's first frame, however much later
            return
        self._jpeg = jpeg
        self._frame_no += 1
        event, self._new_frame = self._new_frame, asyncio.Event()
        if event is not None:
            event.set()

    def close(self) -> None:
        """Stop the server: streams end, the port is free again (within ~2 s)."""
        if self._closed:
            return
        self._closed = True
        self._closing = True
        stopping = self._stopping
        if stopping is not None and self._thread.is_alive():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(stopping.set)
        self._thread.join(STOP_TIMEOUT_S + 1.0)
        if self._thread.is_alive():
            log.warning("web: the server did not stop within %.0f s; leaving it behind", STOP_TIMEOUT_S + 1)

    def describe(self) -> str:
        guard = "loopback" if self._token is None else "token required"
        return f"web page {self.url} ({guard})"

    def _turned_away(self) -> None:
        """A connection closed at accept (the page unreachable for it): counted, and said, so an operator
        sees why the page is down while its connections are held."""
        self.turned_away += 1
        if said(self.turned_away):
            log.warning(
                "web: %d connections open, a new one closed (%d so far)", MAX_CONNECTIONS, self.turned_away
            )

    def report(self) -> SinkReport:
        # both: one encoding serves every viewer, and a slow viewer skips frames (a paused one takes none)
        lines = [
            f"web: {self.frames_encoded} frames encoded, {self.frames_sent} sent to viewers "
            f"(up to {self.max_viewers} at once)"
        ]
        if self.refused:
            lines.append(f"web: {self.refused} requests refused without a valid token")
        if self.turned_away:
            lines.append(f"web: {self.turned_away} connections closed at once, {MAX_CONNECTIONS} being open")
        return SinkReport(tuple(lines))


class _Gate(asyncio.Protocol):
    """A new connection's first protocol: it hands the connection to aiohttp's server, or closes it when
    :data:`MAX_CONNECTIONS` are open. Counted here, not in the factory: asyncio makes the protocols of a
    burst of connections before any is registered, so the factory's count would lag by up to a backlog."""

    def __init__(self, http: web.Server, turned_away: Callable[[], None]) -> None:
        self._http = http
        self._turned_away = turned_away

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if len(self._http.connections) >= MAX_CONNECTIONS:
            transport.abort()  # type: ignore[attr-defined]
            self._turned_away()
            return
        handler = self._http()
        transport.set_protocol(handler)
        handler.connection_made(transport)


class _ServerLogFilter(logging.Filter):
    """aiohttp's own log (``Error handling request`` with a traceback, as an error, for every request it
    cannot parse) through edgeseg's handler: a client's malformed request is debug, anything else one line
    with the exception, and the traceback only when debugging (``-v``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from aiohttp.http_exceptions import HttpProcessingError

        if log.isEnabledFor(logging.DEBUG) or record.exc_info is None:
            return True
        exc = record.exc_info[1]
        if isinstance(exc, HttpProcessingError) and 400 <= exc.code < 500:
            return False  # the client's fault, from anyone who can connect: not a line a request
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        record.msg = f"web: {record.getMessage()}: {type(exc).__name__}" + (f": {first}" if first else "")
        record.args = ()
        record.exc_info = record.exc_text = None
        return True


def _server_logger() -> logging.Logger:
    server_log = logging.getLogger(f"{__name__}.aiohttp")
    if not any(isinstance(f, _ServerLogFilter) for f in server_log.filters):
        server_log.addFilter(_ServerLogFilter())
    return server_log


def _access_logger_class() -> Any:
    """aiohttp's access log, at debug level and without the query string (it may hold the token)."""
    from aiohttp.abc import AbstractAccessLogger

    class PathOnlyAccessLogger(AbstractAccessLogger):
        def log(self, request: Any, response: Any, time: float) -> None:
            if log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "web: %s %s %s %d (%.1f ms)",
                    request.remote,
                    request.method,
                    request.path,
                    response.status,
                    time * 1000,
                )

    return PathOnlyAccessLogger
