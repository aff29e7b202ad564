"""Live control over MQTT: ``config/*`` topics driving the pipeline's one control point.

Every request goes through :meth:`edgeseg.live.Controls.update`, so it is validated exactly like the YAML.
The state topics only ever carry the value in effect: a rejected request leaves them as they were and is
answered on ``config/result`` (and on an MQTT 5 request's response topic, with its correlation data), never
echoed as state. A request costs at most one bounded parse: payloads over :data:`MAX_PAYLOAD` bytes are
refused unread, and a single value is read as JSON (or a bare word), never as YAML with its aliases.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from edgeseg.errors import EdgesegError
from edgeseg.live import Controls, Outcome, Tunable, parse_request
from edgeseg.logtally import said
from edgeseg.mqtt.publisher import Message, Publisher
from edgeseg.mqtt.topics import Topics, config_result_payload, config_state_payload

log = logging.getLogger(__name__)

MAX_PAYLOAD = 64 * 1024  # a change request is a few bytes; anything this big is refused unread
PAYLOAD_KEY = "payload"  # the key a reply names when the request as a whole was unusable


class RemoteControl:
    """Subscribes to the ``config/*`` topics of ``topics`` and keeps ``config/<key>/state`` current."""

    def __init__(self, publisher: Publisher, topics: Topics, control: Controls) -> None:
        self.publisher = publisher
        self.topics = topics
        self.control = control
        self.tunables: list[Tunable] = list(control.tunables())
        self._refused = 0
        self._state_lock = threading.Lock()
        for tunable in self.tunables:
            self._publish_state(tunable.key, tunable.value)
        publisher.subscribe(topics.config_key_set("+"), self._on_key_set)
        publisher.subscribe(topics.config_set, self._on_set)
        publisher.subscribe(topics.config_save, self._on_save)
        control.watch(self._on_change)

    def _publish_state(self, key: str, value: Any) -> None:
        self.publisher.set_retained(self.topics.config_state(key), config_state_payload(value))

    def _on_change(self, outcome: Outcome) -> None:
        # the value in effect now, not the outcome's, read and retained under one lock: two updates racing
        # (the web page and MQTT) end with the state of the last, where the first could read before the
        # second applied and retain after it (the watchers run on each updating thread)
        with self._state_lock:
            for key in outcome.applied:
                self._publish_state(key, self.control.value(key))

    def _reply(self, request: Message, doc: dict[str, Any]) -> None:
        payload = config_result_payload({**doc, "request": request.topic})
        self.publisher.reply(self.topics.config_result, payload)
        if request.response_topic:
            self.publisher.reply(request.response_topic, payload, request.correlation_data)

    def _refuse(self, request: Message, key: str, why: str) -> None:
        outcome = Outcome({}, {key: why}, self.control.current().version)
        self._refused += 1
        if said(self._refused):
            log.warning("%s: refused (%d so far): %s", request.topic, self._refused, why)
        self._reply(request, outcome.to_json())

    def _text(self, request: Message) -> str | None:
        """The payload as text, or ``None`` after refusing it (retained, too big, not UTF-8)."""
        if request.retained:
            # a request published with retain comes again at every connect, a broker restart's or the
            # device's: it undid every later change (the web page's, Home Assistant's) and a retained
            # config/save rewrote the tuning each time. A request is an event, not a state: said, not applied
            self._refused += 1
            if said(self._refused):
                log.warning(
                    "%s: a retained request, ignored (%d refused so far): it would be applied again at "
                    "every connect; publish requests without retain, and clear this one (an empty retained "
                    "message)",
                    request.topic,
                    self._refused,
                )
            return None
        if len(request.payload) > MAX_PAYLOAD:
            self._refuse(
                request, PAYLOAD_KEY, f"{len(request.payload)} bytes is over the {MAX_PAYLOAD}-byte limit"
            )
            return None
        try:
            return request.payload.decode("utf-8")
        except UnicodeDecodeError:
            self._refuse(request, PAYLOAD_KEY, "is not UTF-8 text")
            return None

    def _on_key_set(self, request: Message) -> None:
        key = self.topics.config_key(request.topic)
        text = self._text(request)
        if key is None or text is None:
            return
        self._reply(request, self.control.update({key: _value(text)}, f"mqtt {request.topic}").to_json())

    def _on_set(self, request: Message) -> None:
        text = self._text(request)
        if text is None:
            return
        try:
            changes = parse_request(text)
        except ValueError as exc:
            self._refuse(request, PAYLOAD_KEY, f"is not JSON ({exc})")
            return
        if not isinstance(changes, dict) or not changes:
            self._refuse(request, PAYLOAD_KEY, 'must be a JSON object {"key.path": value, ...}')
            return
        self._reply(request, self.control.update(changes, f"mqtt {request.topic}").to_json())

    def _on_save(self, request: Message) -> None:
        text = self._text(request)
        if text is None:
            return
        target = text.strip() or "state"
        if target not in ("state", "yaml"):
            self._refuse(request, PAYLOAD_KEY, f"must be state or yaml (got {text[:40]!r})")
            return
        try:
            line = self.control.save(into_yaml=target == "yaml")
        except EdgesegError as exc:
            self._refuse(request, PAYLOAD_KEY, str(exc))
            return
        outcome = Outcome({}, {}, self.control.current().version)
        self._reply(request, {**outcome.to_json(), "message": line})


def _value(text: str) -> Any:
    """A ``config/<key>/set`` payload: JSON (``0.4``, ``true``, ``[0, 0, 1, 1]``), else the bare text."""
    try:
        return parse_request(text)
    except ValueError:
        return text.strip()
