"""``web`` sink: a live page on ``HOST:PORT``: the annotated stream, the pipeline's figures, and a slider per
live setting (the same control point as MQTT's ``config/*``), with Save and Reset.

Built on aiohttp (an extra: ``pip install 'edgeseg[web]'``), served from a thread of its own with its own
asyncio loop, bound before the first frame (a port in use is a :class:`ConfigError` at start).

Routes: ``GET /`` the page (no external resources: it works offline), ``GET /stream`` the MJPEG stream
(``multipart/x-mixed-replace``), ``GET /api/state`` figures, ``config_version`` and the tunables with the
values in effect, ``POST /api/set`` a JSON object ``{"key.path": value}`` (the reply is the update's outcome:
``{ok, applied, rejected, config_version}``), ``POST /api/save`` (``{"into": "state"}`` or ``"yaml"``) and
``POST /api/reset``.

The stream costs the pipeline one JPEG per ``1 / stream_fps`` seconds, and only while someone watches: the
sink's thread encodes the newest result, stores it as *the* newest frame and wakes the viewers; every viewer
sends the newest frame it has not sent yet, so a slow one skips frames (never a backlog) and ten viewers cost
one encoding. ``send`` never waits on the network.

Security: bound to a loopback address (``127.0.0.0/8``, ``::1``, ``localhost``) the page needs no token, but
it answers only requests whose ``Host`` is a loopback name (DNS rebinding) and POSTs only as JSON from its own
origin (another site's page cannot drive it). On any other address every request, the stream included,
must carry the token: ``Authorization: Bearer <token>``, or ``?token=<token>`` once in the URL, after which
an HttpOnly, SameSite=Strict cookie carries it. The token comes from ``$CREDENTIALS_DIRECTORY/web-token``
(systemd ``LoadCredential=``), else ``EDGESEG_WEB_TOKEN``; without one such a bind is refused at start. It is
never logged (at most its length), and the access log (debug) shows paths without their query.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from edgeseg.errors import ConfigError, MissingDependencyError
from edgeseg.fields import meta
from edgeseg.sinks.base import SinkContext, SinkSpec
from edgeseg.validate import FieldError

if TYPE_CHECKING:
    from edgeseg.sinks.webserver import WebSink

TOKEN_CREDENTIAL = "web-token"
TOKEN_ENV = "EDGESEG_WEB_TOKEN"
TOKEN_COOKIE = "edgeseg_token"
TOKEN_MIN_CHARS = 16
_TOKEN_CHARS = re.compile(r"^[A-Za-z0-9._~+/=-]+$")
TOKEN_HINT = (
    f"put it in systemd credentials ($CREDENTIALS_DIRECTORY/{TOKEN_CREDENTIAL}, LoadCredential=) or "
    f"{TOKEN_ENV}, e.g. `openssl rand -hex 16`; the YAML never holds it"
)
_LISTEN_PATTERN = r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):[0-9]{1,5}$"


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
            pattern=_LISTEN_PATTERN,
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


def split_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT``) -> host, port; a :class:`FieldError` on ``listen`` otherwise."""
    m = re.fullmatch(_LISTEN_PATTERN, listen.strip())
    if m is None:
        raise FieldError("listen", "expected HOST:PORT, e.g. 127.0.0.1:8080 or 0.0.0.0:8080", listen)
    host, _, port_text = listen.strip().rpartition(":")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise FieldError("listen", "port must be 0..65535", listen)
    if host.startswith("["):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise FieldError("listen", f"{host!r} is not an IPv6 address", listen) from None
    return host, port


def is_loopback(host: str) -> bool:
    """``localhost``, ``127.0.0.0/8`` or ``::1`` (an empty host, ``0.0.0.0`` or ``::`` is every interface)."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_token(env: Mapping[str, str] | None = None) -> tuple[str, str] | None:
    """The web token and where it came from, else ``None``. The value never appears in an error."""
    environ = os.environ if env is None else env
    creds = environ.get("CREDENTIALS_DIRECTORY", "")
    token: str | None = None
    origin = ""
    if creds and (Path(creds) / TOKEN_CREDENTIAL).exists():
        path = Path(creds) / TOKEN_CREDENTIAL
        try:
            token = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
            raise ConfigError(f"credential {TOKEN_CREDENTIAL}: cannot read {path}: {reason}") from None
        origin = f"$CREDENTIALS_DIRECTORY/{TOKEN_CREDENTIAL}"
    elif environ.get(TOKEN_ENV, "").strip():
        token = environ[TOKEN_ENV].strip()
        origin = TOKEN_ENV
    if token is None:
        return None
    if len(token) < TOKEN_MIN_CHARS:
        raise ConfigError(
            f"sinks.web: the token in {origin} has {len(token)} characters, fewer than {TOKEN_MIN_CHARS}; "
            "make one with `openssl rand -hex 16`"
        )
    if not _TOKEN_CHARS.match(token):
        raise ConfigError(
            f"sinks.web: the token in {origin} has characters other than letters, digits and ._~+/=- "
            "(it travels in a header, a URL and a cookie); make one with `openssl rand -hex 16`"
        )
    return token, origin


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
