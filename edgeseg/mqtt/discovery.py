"""Home Assistant MQTT discovery, device-based: one retained ``homeassistant/device/<device_id>/config``.

The device gets sensors for FPS, latency (p50, p99), each class count, each zone's ``inside``/``entered``/
``exited`` and each line's ``in``/``out`` per class, a binary sensor "detected" (any
instance in the latest result) and, when snapshots are on, an ``image`` entity. Every entity is available
while ``<prefix>/<device_id>/status`` is ``online`` (Home Assistant's default payloads); those that say what
the scene holds now (the counts, "detected", a zone's ``inside``) also need ``source`` ``online``: while the
camera is gone they are unavailable, not its last result's figures (a person seen as the camera died stayed
"detected" for as long as it was out). The payload is sent
again whenever Home Assistant announces itself on ``homeassistant/status`` (its birth message), and an
empty retained payload on the same topic removes the device (``edgeseg mqtt forget``).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from edgeseg import __version__
from edgeseg.live import Tunable
from edgeseg.mqtt.topics import Topics, topic_name

ORIGIN_URL = "https://github.com/edgeseg/edgeseg"


# the thresholds a dashboard shows as sliders (the other live keys are changed by config/set)
SLIDERS = (
    "postprocess.score_threshold",
    "postprocess.iou_threshold",
    "postprocess.semantic.dist_threshold",
    "postprocess.semantic.min_score",
    "postprocess.semantic.size_threshold",
)
UNBOUNDED_MAX = 10000  # a number entity needs a max: what a slider without an upper bound spans


def discovery_payload(
    topics: Topics,
    model_name: str,
    counted_classes: Sequence[str],
    snapshot: bool,
    tunables: Sequence[Tunable] = (),
    zones: Sequence[str] = (),
    lines: Sequence[str] = (),
    previous: Mapping[str, str] | None = None,
) -> bytes:
    """The retained discovery config for the device of ``topics``; ``tunables`` (the pipeline's live keys)
    among :data:`SLIDERS` become ``number`` entities, and a ``button`` saves the tuning. ``previous``: the
    components announced before (:func:`components`); those this config lacks are sent for removal."""
    did = topics.device_id

    def uid(key: str) -> str:
        return f"edgeseg_{did}_{key}"

    # each component names its availability (none at the root): Home Assistant merges the root's shared
    # options into a component, and a component with both an availability list and a topic is refused
    device = {"availability_topic": topics.status}
    scene = {
        "availability": [{"topic": topics.status}, {"topic": topics.source}],
        "availability_mode": "all",
    }

    def stat(key: str, name: str, template: str, unit: str) -> dict[str, Any]:
        return {
            "p": "sensor",
            "unique_id": uid(key),
            "name": name,
            "state_topic": topics.stats,
            "value_template": template,
            "unit_of_measurement": unit,
            "state_class": "measurement",
            "entity_category": "diagnostic",
            **device,
        }

    def count(key: str, name: str, topic: str) -> dict[str, Any]:
        return {
            "p": "sensor",
            "unique_id": uid(key),
            "name": name,
            "state_topic": topic,
            "state_class": "measurement",
            **scene,
        }

    cmps: dict[str, dict[str, Any]] = {
        "fps": stat("fps", "FPS", "{{ value_json.fps }}", "fps"),
        "latency_p50": stat("latency_p50", "Latency p50", "{{ value_json.latency_ms.p50 }}", "ms"),
        "latency_p99": stat("latency_p99", "Latency p99", "{{ value_json.latency_ms.p99 }}", "ms"),
        # (Home Assistant's MQTT sensor reads the string None as unknown: a device without /proc)
        "memory": stat(
            "memory",
            "Resident memory",
            "{{ value_json.memory_mb.resident if value_json.memory_mb else None }}",
            "MB",
        ),
        "count_all": count("count_all", "Count", topics.counts("all")),
        "detected": {
            "p": "binary_sensor",
            "unique_id": uid("detected"),
            "name": "Detected",
            "state_topic": topics.counts("all"),
            "value_template": "{{ 'ON' if value | int(0) > 0 else 'OFF' }}",
            "device_class": "occupancy",
            **scene,
        },
    }
    for name in counted_classes:
        key = f"count_{topic_name(name)}"
        cmps[key] = count(key, f"{name} count", topics.counts(name))
    # zones and lines: per class, a sensor for each figure of the retained JSON count
    for kind, names, figures in (
        (
            "zone",
            zones,
            (("inside", "measurement"), ("entered", "total_increasing"), ("exited", "total_increasing")),
        ),
        ("line", lines, (("in", "total_increasing"), ("out", "total_increasing"))),
    ):
        keys = _figure_keys(kind, names, counted_classes)
        for name in names:
            for cls in counted_classes:
                topic = topics.zone_counts(name, cls) if kind == "zone" else topics.line_counts(name, cls)
                for figure, state_class in figures:
                    key = f"{keys[name, cls]}_{figure}"
                    cmps[key] = {
                        "p": "sensor",
                        "unique_id": uid(key),
                        "name": f"{name} {cls} {figure}",
                        "state_topic": topic,
                        "value_template": f"{{{{ value_json['{figure}'] }}}}",
                        "state_class": state_class,
                        # (entered, exited and crossings are totals: still true while the camera is gone)
                        **(scene if figure == "inside" else device),
                    }
    for t in tunables:
        if t.key not in SLIDERS:
            continue
        key = topic_name(t.key.rpartition(".")[2])
        step = t.step or 1
        cmps[key] = {
            "p": "number",
            "unique_id": uid(key),
            "name": t.key.rpartition(".")[2].replace("_", " ").capitalize(),
            "command_topic": topics.config_key_set(t.key),
            "state_topic": topics.config_state(t.key),
            "min": t.lo if t.lo is not None else 0,
            "max": t.hi if t.hi is not None else UNBOUNDED_MAX,
            "step": step,
            "mode": "slider" if t.hi is not None else "box",
            "entity_category": "config",
            **device,
        }
    if any(t.key in SLIDERS for t in tunables):
        cmps["save_tuning"] = {
            "p": "button",
            "unique_id": uid("save_tuning"),
            "name": "Save tuning",
            "command_topic": topics.config_save,
            "payload_press": "state",
            "entity_category": "config",
            **device,
        }
    if snapshot:
        cmps["snapshot"] = {
            "p": "image",
            "unique_id": uid("snapshot"),
            "name": "Snapshot",
            "image_topic": topics.snapshot,
            "content_type": "image/jpeg",
            # (a picture of a moment: Home Assistant shows when it was taken, so the last one stays)
            **device,
        }
    # Home Assistant keeps a component a device payload merely omits (the count of a class the new model
    # lacks, a zone taken out, a slider of another head): one sent as its platform alone is removed
    for key, platform in (previous or {}).items():
        cmps.setdefault(key, {"p": platform})
    doc = {
        "dev": {
            "ids": [f"edgeseg_{did}"],
            "name": f"edgeseg {did}",
            "mf": "edgeseg",
            "mdl": model_name or "edgeseg",
            "sw": __version__,
        },
        "o": {"name": "edgeseg", "sw": __version__, "url": ORIGIN_URL},
        "qos": 1,
        "cmps": cmps,
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def _figure_keys(kind: str, names: Sequence[str], classes: Sequence[str]) -> dict[tuple[str, str], str]:
    """The start of the keys of each zone's (or line's) sensors per class: ``zone_<zone>_<class>``, or, where
    that is another pair's too (zone ``a`` with class ``b_c`` and zone ``a_b`` with class ``c``: one sensor
    overwrote the other), ``zone<n>_<zone>_<class>`` with ``n`` the zone's length, which no other pair shares.
    The keys of the pairs that collide with none stay as they were (Home Assistant keeps their history)."""
    plain = {(n, c): f"{kind}_{topic_name(n)}_{topic_name(c)}" for n in names for c in classes}
    uses = Counter(plain.values())
    return {
        (n, c): key if uses[key] == 1 else f"{kind}{len(topic_name(n))}_{topic_name(n)}_{topic_name(c)}"
        for (n, c), key in plain.items()
    }


def components(payload: bytes) -> dict[str, str]:
    """The components a discovery payload announces (not those it removes): key -> platform."""
    cmps = json.loads(payload)["cmps"]
    return {key: c["p"] for key, c in cmps.items() if len(c) > 1}
