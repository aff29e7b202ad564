"""Who may use the web page: where it listens (``HOST:PORT``, loopback or not) and its token. Shared by
the ``web`` section (:mod:`edgeseg.sinks.web`) and its server (:mod:`edgeseg.sinks.webserver`)."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path

from edgeseg.errors import ConfigError
from edgeseg.validate import FieldError

TOKEN_CREDENTIAL = "web-token"
TOKEN_ENV = "EDGESEG_WEB_TOKEN"
TOKEN_COOKIE = "edgeseg_token"
TOKEN_MIN_CHARS = 16
_TOKEN_CHARS = re.compile(r"^[A-Za-z0-9._~+/=-]+$")
TOKEN_HINT = (
    f"put it in systemd credentials ($CREDENTIALS_DIRECTORY/{TOKEN_CREDENTIAL}, LoadCredential=) or "
    f"{TOKEN_ENV}, e.g. `openssl rand -hex 16`; the YAML never holds it"
)
LISTEN_PATTERN = r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):[0-9]{1,5}$"
LISTEN_SAYS = "HOST:PORT, e.g. 127.0.0.1:8080 or 0.0.0.0:8080"


def split_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT``) -> host, port; a :class:`FieldError` on ``listen`` otherwise."""
    m = re.fullmatch(LISTEN_PATTERN, listen.strip())
    if m is None:
        raise FieldError("listen", f"must be {LISTEN_SAYS}", listen)
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
    path = Path(creds) / TOKEN_CREDENTIAL
    try:
        # (exists() raises too, on a folder that is root's alone looked at without sudo: a traceback before)
        if creds and path.exists():
            token = path.read_text(encoding="utf-8").strip()
            origin = f"$CREDENTIALS_DIRECTORY/{TOKEN_CREDENTIAL}"
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ConfigError(f"credential {TOKEN_CREDENTIAL}: cannot read {path}: {reason}") from None
    if token is None and environ.get(TOKEN_ENV, "").strip():
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
