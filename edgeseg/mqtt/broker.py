"""Where the broker is and how to log in: the broker URL, the device id and the credentials.

Each credential is looked up in this order, and never read from the pipeline YAML or ``EDGESEG__…`` variables:

1. systemd credentials (``LoadCredential=`` / ``SetCredential=``): ``$CREDENTIALS_DIRECTORY/mqtt-username``,
   ``mqtt-password``, ``mqtt-ca``, ``mqtt-cert``, ``mqtt-key``;
2. the environment: ``EDGESEG_MQTT_USERNAME``, ``EDGESEG_MQTT_PASSWORD``;
3. file paths in the config: ``sinks.mqtt.username_file``, ``password_file``, ``ca_file``, ``cert_file``,
   ``key_file``.

A secret's value never appears in a log line or an error message (:class:`Credentials` hides it in
``repr``); an unreadable credential file is one :class:`ConfigError` line naming the file.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from edgeseg.errors import ConfigError
from edgeseg.mqtt.topics import sanitize

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
SECRETS_HINT = (
    "secrets are not read from pipeline files or EDGESEG__ variables; put them in systemd credentials "
    "($CREDENTIALS_DIRECTORY/mqtt-username, mqtt-password), EDGESEG_MQTT_USERNAME / EDGESEG_MQTT_PASSWORD, "
    "or files named by sinks.mqtt.username_file / password_file"
)


@dataclass(frozen=True)
class BrokerAddress:
    """A parsed ``mqtt://host[:port]`` or ``mqtts://host[:port]`` (TLS)."""

    host: str
    port: int
    tls: bool

    def __str__(self) -> str:
        # an IPv6 address in brackets, as in the URL it came from: mqtt://::1:1883 runs host and port together
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'mqtts' if self.tls else 'mqtt'}://{host}:{self.port}"


def parse_broker_url(url: str, key: str = "sinks.mqtt.url") -> BrokerAddress:
    """``mqtt://host[:port]`` or ``mqtts://host[:port]``; a :class:`ConfigError` naming ``key`` otherwise.

    Credentials in the URL are refused (they would end up in logs and process listings).
    """
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"{key}: {exc} in {url!r}; expected mqtt://host[:port]") from None
    if parts.scheme not in DEFAULT_PORTS:
        raise ConfigError(f"{key}: expected mqtt://host[:port] or mqtts://host[:port] (got {url!r})")
    if parts.username is not None or parts.password is not None:
        raise ConfigError(f"{key}: no credentials in the URL; {SECRETS_HINT}")
    if not parts.hostname:
        raise ConfigError(f"{key}: no host in {url!r}; expected mqtt://host[:port]")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(f"{key}: unexpected path or query in {url!r}; expected mqtt://host[:port]")
    if port == 0:
        # (a falsy port read as none given: mqtt://host:0 connected to 1883 without a word)
        raise ConfigError(f"{key}: port 0 in {url!r}; expected mqtt://host[:port] with a port 1-65535")
    return BrokerAddress(parts.hostname, port or DEFAULT_PORTS[parts.scheme], parts.scheme == "mqtts")


def device_id(configured: str | None, env: Mapping[str, str] | None = None) -> str:
    """The configured id, else the hostname reduced to ``[A-Za-z0-9_-]``, plus ``-<instance>`` when run as a
    service instance (``EDGESEG_INSTANCE``, set by ``edgeseg@.service`` to ``%i``).

    It names the topics, the MQTT client id, the last will and the spool file, so two pipelines on one
    device never share any of them.
    """
    environ = os.environ if env is None else env
    base = configured or sanitize(socket.gethostname(), "-") or "edgeseg"
    instance = sanitize(environ.get("EDGESEG_INSTANCE", ""), "-")
    return f"{base}-{instance}" if instance else base


@dataclass(frozen=True)
class Credentials:
    """What the client logs in with; file paths for TLS material. ``password`` is hidden from ``repr``."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    origin: str = "none"


def _read_secret(path: Path, what: str) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ConfigError(f"{what}: cannot read {path}: {reason}") from None
    value = text.rstrip("\r\n")
    if not value:
        raise ConfigError(f"{what}: {path} is empty")
    return value


def _present(path: Path, what: str) -> bool:
    """Whether a credential file is there. One that cannot even be looked at (a folder that is root's alone,
    run without sudo) is a ConfigError: a traceback before, and not to be taken for absent (a login as
    nobody, or anonymous, in its place)."""
    try:
        return path.exists()
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read {path}: {exc.strerror or exc}") from None


def _readable(path: Path, what: str) -> Path:
    if not os.access(path, os.R_OK) or not path.is_file():
        raise ConfigError(f"{what}: cannot read {path} (missing or not readable)")
    return path


def load_credentials(
    username_file: Path | None = None,
    password_file: Path | None = None,
    ca_file: Path | None = None,
    cert_file: Path | None = None,
    key_file: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Credentials:
    """Credentials from the first place that has them (see the module docstring).

    Raises:
        ConfigError: a credential file that exists in the configuration cannot be read.
    """
    environ = os.environ if env is None else env
    creds_dir = environ.get("CREDENTIALS_DIRECTORY", "")
    username = password = None
    origin = "none"
    tls: dict[str, Path | None] = {"ca": ca_file, "cert": cert_file, "key": key_file}
    if creds_dir:
        folder = Path(creds_dir)
        if _present(folder / "mqtt-username", "credential mqtt-username"):
            username = _read_secret(folder / "mqtt-username", "credential mqtt-username")
            origin = "systemd credentials"
        if _present(folder / "mqtt-password", "credential mqtt-password"):
            password = _read_secret(folder / "mqtt-password", "credential mqtt-password")
        for name in tls:
            if _present(folder / f"mqtt-{name}", f"credential mqtt-{name}"):
                tls[name] = _readable(folder / f"mqtt-{name}", f"credential mqtt-{name}")
    if username is None and environ.get("EDGESEG_MQTT_USERNAME"):
        username = environ["EDGESEG_MQTT_USERNAME"]
        origin = "environment"
    # each secret from the first place that has it, as the user name: read only beside the variable's user
    # name, the password of a user named by username_file was dropped, and the broker refused the login
    if password is None and environ.get("EDGESEG_MQTT_PASSWORD"):
        password = environ["EDGESEG_MQTT_PASSWORD"]
    if username is None and username_file is not None:
        username = _read_secret(username_file, "sinks.mqtt.username_file")
        origin = "files"
    if password is None and password_file is not None:
        password = _read_secret(password_file, "sinks.mqtt.password_file")
    if password is not None and username is None:
        raise ConfigError(f"sinks.mqtt: a password without a user name ({origin}); give both")
    for name, path in tls.items():
        if path is not None:
            tls[name] = _readable(path, f"sinks.mqtt.{name}_file")
    return Credentials(username, password, tls["ca"], tls["cert"], tls["key"], origin)
