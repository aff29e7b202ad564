"""``web`` sink: a live page on ``HOST:PORT``: the annotated stream, the pipeline's figures, and a slider per
live setting (the same control point as MQTT's ``config/*``), with Save and Reset.

Built on aiohttp (an extra: ``pip install 'edgeseg[web]'``), served from a thread of its own with its own
asyncio loop, bound before the first frame (at start, an address it cannot listen on is a
:class:`ConfigError`, a port in use a :class:`~edgeseg.errors.TransientError`).

Routes: ``GET /`` the page (no external resources: it works offline; ``GET /favicon.ico`` a 204, no icon),
``GET /stream`` the MJPEG stream (``multipart/x-mixed-replace``), ``GET /api/state`` figures,
``config_version``, the tunables with the values in effect and the run's ``started_at_unix`` (another value:
the service restarted), ``POST /api/set`` a JSON object
``{"key.path": value}`` (the reply is the update's outcome: ``{ok, applied, rejected, config_version}``),
``POST /api/save`` (``{"into": "state"}`` or ``"yaml"``) and ``POST /api/reset``.

The stream costs the pipeline one JPEG per ``1 / stream_fps`` seconds, and only while someone watches: the
sink's thread encodes the newest result, stores it as *the* newest frame and wakes the viewers; every viewer
sends the newest frame it has not sent yet, so a slow one skips frames (never a backlog) and ten viewers cost
one encoding. The newest frame is forgotten when the last viewer leaves: the next one waits for a new frame
rather than get one from when someone last watched. ``send`` never waits on the network. A viewer that
takes no frame for 30 s (it stopped reading) loses its stream.

Security: bound to a loopback address (``127.0.0.0/8``, ``::1``, ``localhost``) the page needs no token, but
it answers only requests whose ``Host`` is a loopback name (DNS rebinding) and POSTs only as JSON from its own
origin (another site's page cannot drive it). On any other address every request, the stream included,
must carry the token: ``Authorization: Bearer <token>``, or ``?token=<token>`` once in the URL, after which
an HttpOnly, SameSite=Strict cookie carries it. The token comes from ``$CREDENTIALS_DIRECTORY/web-token``
(systemd ``LoadCredential=``), else ``EDGESEG_WEB_TOKEN``; without one such a bind is refused at start. It is
never logged (at most its length), and the access log (debug) shows paths without their query. Before any
token is seen, at most 128 connections are kept (those beyond are closed at once, so the rest of the
pipeline keeps its file descriptors) and one without a whole request within 10 s is closed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from edgeseg.errors import ConfigError, MissingDependencyError
from edgeseg.fields import meta
from edgeseg.sinks.base import SinkContext, SinkSpec
from edgeseg.sinks.webaccess import (
    LISTEN_PATTERN,
    LISTEN_SAYS,
    TOKEN_HINT,
    is_loopback,
    load_token,
    split_listen,
)

if TYPE_CHECKING:
    from edgeseg.sinks.webserver import WebSink


@dataclass(frozen=True)
class WebSinkConfig:
    """Live web page: annotated stream, figures, sliders for the live settings."""

    __secrets__: ClassVar[Mapping[str, str]] = {
        name: TOKEN_HINT for name in ("token", "password", "secret", "auth_token")
    }

    listen: str | None = field(
        default=None,
        metadata=meta(
            "Serve the page on HOST:PORT, e.g. 127.0.0.1:8080 (null: off); any address but loopback needs a "
            "token ($CREDENTIALS_DIRECTORY/web-token or EDGESEG_WEB_TOKEN).",
            pattern=LISTEN_PATTERN,
            says=LISTEN_SAYS,
        ),
    )
    # 5, not the camera's rate: on a 2-core device busy with inference, every frame drawn and encoded
    # for the page is taken from the pipeline (scripts/bench_web.py: 0.70 of its FPS at 10, 0.83 at 5)
    stream_fps: float = field(
        default=5.0, metadata=meta("Most frames per second encoded for the viewers.", gt=0)
    )
    jpeg_quality: int = field(default=80, metadata=meta("JPEG quality of the stream.", ge=10, le=100))
    width: int = field(default=960, metadata=meta("Stream frames are scaled down to this width.", ge=16))

    def __post_init__(self) -> None:
        if self.listen is not None:
            split_listen(self.listen)


def create(section: WebSinkConfig, ctx: SinkContext) -> WebSink | None:
    if section.listen is None:
        return None
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        raise MissingDependencyError("the web page needs aiohttp: pip install 'edgeseg[web]'") from None
    # the server (aiohttp, asyncio: ~8 MB of RSS) is imported only by a run that serves the page
    from edgeseg.sinks.webserver import WebSink

    host, _ = split_listen(section.listen)
    if is_loopback(host):
        return WebSink(section, ctx)
    found = load_token()
    if found is None:
        raise ConfigError(f"sinks.web.listen: binding to {host} needs a token: {TOKEN_HINT}")
    return WebSink(section, ctx, *found)


SPEC = SinkSpec("web", WebSinkConfig, create, "Live page: stream, figures and sliders.")
