"""``edgeseg doctor``: what this machine offers (backends, cameras, displays, extras), how to add the rest."""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import platform
import re
import shlex
import shutil
import stat
import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from edgeseg.errors import ConfigError
from edgeseg.service import CARD, CARD_FILE

if TYPE_CHECKING:
    from edgeseg.config import PipelineConfig
    from edgeseg.service import Layout


@dataclass(frozen=True)
class Check:
    """One line of the report: ``ok`` says whether the thing is usable; ``fix`` how to get it when not."""

    area: str
    name: str
    ok: bool
    detail: str
    fix: str = ""


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _tensorrt_check() -> Check:
    """tensorrt and pycuda imported as the backend imports them, and TensorRT's version checked: found is
    not enough (JetPack 5's TensorRT 8, or a libcuda/libnvinfer that does not load)."""
    from edgeseg.backends.tensorrt import INSTALL, import_tensorrt, require_tensorrt_10
    from edgeseg.errors import MissingDependencyError

    trt, pycuda = _has("tensorrt"), _has("pycuda")
    if not (trt and pycuda):
        detail = f"tensorrt {'found' if trt else 'missing'}, pycuda {'found' if pycuda else 'missing'}"
        return Check("backend", "tensorrt", False, detail, INSTALL)
    try:
        require_tensorrt_10(import_tensorrt()[0])
    except MissingDependencyError as exc:  # says what to do
        return Check("backend", "tensorrt", False, str(exc))
    return Check("backend", "tensorrt", True, "installed")


def _picamera2_check() -> Check:
    """picamera2 with its IMX500 support imported as the source imports it: found is not enough (apt's
    picamera2 fails to import in a venv where pip put numpy 2, or without a module its IMX500 file needs)."""
    from edgeseg.errors import MissingDependencyError
    from edgeseg.sources.picamera2 import import_picamera2

    fix = (
        "on a Raspberry Pi OS: sudo apt install python3-picamera2 imx500-all (venv with "
        "--system-site-packages)"
    )
    if not _has("picamera2"):
        return Check("backend", "imx500 (picamera2)", False, "picamera2 not importable", fix)
    try:
        import_picamera2(True)
    except MissingDependencyError as exc:  # says what to do
        return Check("backend", "imx500 (picamera2)", False, str(exc))
    return Check("backend", "imx500 (picamera2)", True, "installed")


def _cv2_build(flag: str) -> bool:
    import cv2

    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith(flag + ":"):
            return "YES" in line.split(":", 1)[1]
    return False


def checks() -> list[Check]:
    """Everything :func:`command` reports, in order."""
    import cv2
    import numpy as np

    out = [
        Check("system", "python", True, f"{platform.python_version()} on {platform.machine()}"),
        Check("system", "numpy / opencv", True, f"numpy {np.__version__}, opencv {cv2.__version__}"),
    ]
    if _has("onnxruntime"):
        import onnxruntime as ort

        providers = ", ".join(ort.get_available_providers())
        telemetry = "off" if os.environ.get("ORT_DISABLE_TELEMETRY") == "1" else "left to onnxruntime"
        out.append(
            Check(
                "backend", "onnxruntime", True, f"{ort.__version__}: {providers}; its telemetry {telemetry}"
            )
        )
    else:
        out.append(Check("backend", "onnxruntime", False, "not installed", "pip install onnxruntime"))
    out.append(_tensorrt_check())
    out.append(_picamera2_check())
    from edgeseg.sources import list_cameras

    cams = list_cameras()
    out.append(
        Check(
            "camera",
            "v4l2",
            bool(cams),
            ", ".join(cams) if cams else "no /dev/video* devices",
            "plug in a USB camera (or pass --device /dev/video0 to docker); synthetic:parts needs none",
        )
    )
    from edgeseg.sources.opencv_live import gstreamer_missing

    gst = _cv2_build("GStreamer")
    out.append(
        Check(
            "camera",
            "gstreamer (gst: sources)",
            gst,
            "in OpenCV build" if gst else "OpenCV built without GStreamer",
            "" if gst else gstreamer_missing(),
        )
    )
    out.append(
        Check(
            "camera",
            "ffmpeg (video files, rtsp)",
            _cv2_build("FFMPEG"),
            "in OpenCV build" if _cv2_build("FFMPEG") else "OpenCV built without FFmpeg",
            "pip install opencv-python",
        )
    )
    from edgeseg.sinks.display import display_problem

    problem = display_problem()
    out.append(
        Check(
            "display",
            "window (--display)",
            problem is None,
            "available" if problem is None else problem,
            "use a desktop session, ssh -X, or Xvfb (apt install xvfb; xvfb-run edgeseg run --display)",
        )
    )
    xvfb = shutil.which("Xvfb")
    out.append(Check("display", "Xvfb", xvfb is not None, xvfb or "not installed", "apt install xvfb"))
    out.append(
        Check(
            "extra",
            "pycocotools (edgeseg eval)",
            _has("pycocotools"),
            "installed" if _has("pycocotools") else "missing",
            "pip install edgeseg[bench]",
        )
    )
    out.append(
        Check(
            "extra",
            "aiohttp (edgeseg run --web)",
            _has("aiohttp"),
            "installed" if _has("aiohttp") else "missing",
            "pip install edgeseg[web]",
        )
    )
    out.append(
        Check(
            "extra",
            "paho-mqtt",
            _has("paho"),
            "installed" if _has("paho") else "missing",
            "pip install paho-mqtt",
        )
    )
    return out


def pipeline_checks(path: str | Path | None, dev: Path = Path("/dev")) -> list[Check]:
    """What one pipeline needs: its camera's device node (under ``dev``), its model file, its state
    directory, and its broker answering."""
    from edgeseg.config import load_config
    from edgeseg.statedir import state_dir

    config = load_config(path)
    name = f"pipeline {config.name}"
    out = []
    # os.path.exists, not Path.exists: a name longer than the file system takes is missing, not a traceback
    nodes = camera_nodes(config.source.uri, dev)
    if isinstance(nodes, str):
        out.append(Check(name, "camera", False, nodes, "fix source.uri"))
    elif nodes is not None:
        missing = [n for n in nodes if not os.path.exists(n)] if nodes else [dev / "video0"]
        detail = f"{missing[0]} does not exist" if missing else ", ".join(str(n) for n in nodes)
        out.append(Check(name, "camera", not missing, detail, "plug in the camera, or fix source.uri"))
    model = config.model.path
    out.append(Check(name, "model", os.path.exists(model), str(model), "fix model.path"))
    state = state_dir(config.pipeline.state_dir)
    parent = next((p for p in (state, *state.parents) if os.path.exists(p)), state)
    writable = os.access(parent, os.W_OK)
    out.append(Check(name, "state directory", writable, str(state), "set pipeline.state_dir or --state-dir"))
    return out + broker_checks(name, config)


def broker_checks(name: str, config: PipelineConfig, env: Mapping[str, str] | None = None) -> list[Check]:
    """The broker answers with the credentials the pipeline would use (none when it has no MQTT sink)."""
    from edgeseg.sinks.mqtt import MqttSinkConfig

    mqtt = config.sinks.section(MqttSinkConfig)
    if mqtt.url is None:
        return []
    from edgeseg.mqtt.broker import load_credentials, parse_broker_url
    from edgeseg.mqtt_commands import check

    address = parse_broker_url(mqtt.url)
    try:
        creds = load_credentials(
            mqtt.username_file, mqtt.password_file, mqtt.ca_file, mqtt.cert_file, mqtt.key_file, env
        )
    except ConfigError as exc:
        # one of this check's own findings: raised, it ended doctor with that line alone, the report lost
        return [
            Check(
                name,
                "mqtt broker",
                False,
                str(exc),
                "make the file readable by the user the pipeline runs as, or fix the key",
            )
        ]
    problem = check(address, creds, mqtt.protocol)
    who = f" as {creds.username} ({creds.origin})" if creds.username else " (anonymous)"
    fix = (
        "start the broker or fix sinks.mqtt.url / the MQTT credentials (the pipeline runs anyway and spools "
        "results until the broker answers)"
    )
    return [
        Check(
            name,
            "mqtt broker",
            problem is None,
            f"{address} answers{who}" if problem is None else problem,
            fix,
        )
    ]


# --- edgeseg doctor --service NAME -------------------------------------------------------------------------

# systemd.time(7)'s units (a month is 30.44 days, a year 365.25, as systemd counts them)
_SPAN_UNITS = {
    "us": 1e-6, "usec": 1e-6, "μs": 1e-6, "ms": 1e-3, "msec": 1e-3, "": 1.0, "s": 1.0, "sec": 1.0,
    "second": 1.0, "seconds": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0, "minutes": 60.0, "h": 3600.0,
    "hr": 3600.0, "hour": 3600.0, "hours": 3600.0, "d": 86400.0, "day": 86400.0, "days": 86400.0,
    "w": 604800.0, "week": 604800.0, "weeks": 604800.0, "M": 2629800.0, "month": 2629800.0,
    "months": 2629800.0, "y": 31557600.0, "year": 31557600.0, "years": 31557600.0,
}  # fmt: skip
DEVICE_GROUPS_KEY = "DeviceAllow"
# where systemd 252 looks for a command given by its name alone ("ExecStart=edgeseg run ..."), a path fixed
# when it was built (systemd.service(5), "Command lines"; /sbin and /bin where /usr is not merged)
EXEC_SEARCH_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
LATENCY_FRAMES = 20
LATENCY_MARGIN = 2  # pings come every half interval: a frame must fit twice into it


def timespan_s(text: str) -> float:
    """A systemd time span (``60s``, ``1min 30s``, ``90``, ``1d``, ``infinity``) in seconds; ``ValueError``
    when unreadable."""
    if text.strip() == "infinity":
        return math.inf
    parts = re.findall(r"([0-9.]+)\s*([^\s0-9.]*)", text.strip())
    if not parts or "".join(n + u for n, u in parts) != re.sub(r"\s+", "", text):
        raise ValueError(text)
    try:
        return sum(float(n) * _SPAN_UNITS[u] for n, u in parts)
    except (ValueError, KeyError):  # "1.2.3", an unknown unit
        raise ValueError(text) from None


# keys that set others too: TimeoutSec= is TimeoutStartSec= and TimeoutStopSec= (systemd.service(5); its
# config_parse_service_timeout sets timeout_stop_usec for the lvalue "TimeoutSec")
_KEY_ALIASES = {"TimeoutSec": ("TimeoutStartSec", "TimeoutStopSec")}
# keys whose empty assignment systemd 252 refuses ("Failed to parse ..., ignoring": the value before stays),
# where a list's empty assignment resets it
_EMPTY_IGNORED = {"TimeoutStartSec", "TimeoutStopSec", "WatchdogSec", "ProtectHome", "DevicePolicy"}
# keys whose empty assignment is a value, kept as '': the empty capability set, which a later "~CAP_X" merges
# with (still empty) where it would replace an unset one (capability_set() reads them)
_EMPTY_KEPT = {"CapabilityBoundingSet", "AmbientCapabilities"}


def unit_lines(text: str) -> list[str]:
    """The lines of a unit file as systemd 252 reads them: a line ending in an odd number of backslashes
    goes on in the next, the backslash made a space; a comment line is dropped, also within such a
    continuation, and never continues itself (what ``systemd-analyze verify`` shows)."""
    out: list[str] = []
    pending: str | None = None
    for raw in text.splitlines():
        if raw.lstrip().startswith(("#", ";")):
            continue
        line = raw if pending is None else pending + raw
        if (len(line) - len(line.rstrip("\\"))) % 2:
            pending = line[:-1] + " "
            continue
        out.append(line)
        pending = None
    return out if pending is None else [*out, pending]


def specifiers(name: str) -> dict[str, str]:
    """What systemd 252's system manager puts for the specifiers of ``edgeseg@NAME`` that do not depend on
    the host (systemd.unit(5), "Specifiers available in unit files"), by letter."""
    unit = f"edgeseg@{name}.service"
    # unescaped: '-' is '/' (systemd-escape --unescape); a name check_name takes has no "\\x.." escapes
    unescaped = name.replace("-", "/")
    return {
        "i": name, "I": unescaped, "n": unit, "N": unit.removesuffix(".service"), "f": f"/{unescaped}",
        "p": "edgeseg", "P": "edgeseg", "j": "edgeseg", "J": "edgeseg", "d": f"/run/credentials/{unit}",
        "C": "/var/cache", "E": "/etc", "L": "/var/log", "S": "/var/lib", "t": "/run", "T": "/tmp",
        "V": "/var/tmp", "h": "/root", "u": "root", "U": "0", "g": "root", "G": "0", "%": "%",
    }  # fmt: skip


def unit_settings(root: Path, name: str) -> dict[str, list[str]]:
    """The installed unit of ``edgeseg@NAME`` and its drop-ins, read as systemd would: key -> values in
    order, an empty assignment resetting a list (ignored for a time span or a mode: :data:`_EMPTY_IGNORED`;
    kept for a capability set: :data:`_EMPTY_KEPT`), ``TimeoutSec=`` assigning both its keys; the
    specifiers of :func:`specifiers` expanded (in one pass: the ``%i`` of ``%%i`` is no specifier), those of
    the host (``%H``, ``%m``, ...) kept."""
    from edgeseg.service import installed

    out: dict[str, list[str]] = {}
    known = specifiers(name)
    for path in installed(root, name).values():
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            # a drop-in linked to nothing: systemd reads nothing from it, and it still hides the drop-ins of
            # its name further down the unit path (what systemd-analyze security shows)
            continue
        # (bytes: systemd reads a file edited into latin-1 too, "# café" and all)
        for line in unit_lines(data.decode("utf-8", "surrogateescape")):
            key, sep, value = line.strip().partition("=")
            if not sep or key.startswith("["):
                continue
            value = re.sub(r"%(.)", lambda m: known.get(m[1], m[0]), value.strip())
            for k in _KEY_ALIASES.get(key.strip(), (key.strip(),)):
                if k in _EMPTY_KEPT:
                    out[k] = [*out.get(k, []), value]
                elif value or k not in _EMPTY_IGNORED:
                    out[k] = [*out.get(k, []), value] if value else []
    return out


def has_capability(settings: Mapping[str, list[str]], key: str, capability: str) -> bool:
    """Whether the capability set ``key`` (CapabilityBoundingSet= or AmbientCapabilities=) gives holds
    ``capability``, built as systemd 252's config_parse_capability_set builds it: unset, every capability
    (the bounding set) or none (the ambient set); '' or '~' alone, and the first value, replace it; a later
    value merges, adding its capabilities or, with '~' ("all but these"), taking them away."""
    held: bool | None = None  # (unset)
    for value in settings.get(key, []):
        invert = value.startswith("~")
        names = value.removeprefix("~").split()
        if not names or held is None:
            held = (capability in names) != invert
        elif capability in names:
            held = not invert
    return key == "CapabilityBoundingSet" if held is None else held


def camera_nodes(uri: str, dev: Path) -> list[Path] | str | None:
    """The device nodes (under ``dev``) a source opens; ``None`` for sources that open none; why the source
    refuses its device, as it says it."""
    from edgeseg.errors import SourceError
    from edgeseg.sources import parse_uri
    from edgeseg.sources.opencv_live import v4l2_target

    parsed = parse_uri(uri)
    if parsed.scheme == "v4l2":
        try:
            target = v4l2_target(parsed)
        except SourceError as exc:
            return str(exc)
        return [dev / f"video{target}" if isinstance(target, int) else dev / Path(target).relative_to("/dev")]
    if parsed.scheme == "picamera2":
        return sorted([*dev.glob("media*"), *dev.glob("video*"), *dev.glob("dma_heap/*")])
    return None


def _device_groups() -> dict[int, str]:
    """Character device majors -> kernel device group names, from this machine's /proc/devices."""
    out: dict[int, str] = {}
    try:
        text = Path("/proc/devices").read_text(encoding="utf-8").split("Block devices:")[0]
    except OSError:
        return out
    for line in text.splitlines():
        major, _, group = line.strip().partition(" ")
        if major.isdigit():
            out[int(major)] = group
    return out


def _node_check(
    node: Path, gids: set[int], allowed: list[str] | None, majors: Mapping[int, str], root: Path
) -> str | None:
    """Why the service cannot read and write ``node``, or ``None``; ``allowed``: the unit's DeviceAllow=
    values, ``None`` where it restricts no device. A path among them is looked for under ``root``."""
    import fnmatch

    try:
        st = node.stat()
    except OSError:
        return f"{node} does not exist (camera unplugged, or its driver not loaded)"
    if not stat.S_ISCHR(st.st_mode):
        return f"{node} is not a character device"
    rw = stat.S_IRGRP | stat.S_IWGRP
    if not (st.st_gid in gids and st.st_mode & rw == rw) and st.st_mode & 0o006 != 0o006:
        return f"{node} (group {st.st_gid}, mode {stat.S_IMODE(st.st_mode):o}) is not rw for the groups"
    if allowed is None:
        return None
    group = majors.get(os.major(st.st_rdev))
    # the access a DeviceAllow= gives: its second word, rwm when there is none (systemd's
    # config_parse_device_allow: "if (isempty(m)) m = "rwm"")
    specs = [w[0] for w in (a.split() for a in allowed) if w and "w" in (w[1] if len(w) > 1 else "rwm")]
    by_group = group is not None and any(
        fnmatch.fnmatch(group, s[5:]) for s in specs if s.startswith("char-")
    )
    # a path gives the device number of the node it names (systemd stats it: bpf-devices.c,
    # bpf_devices_allow_list_device), a link such as /dev/v4l/by-id/... too
    by_path = any(_same_device(root / s.lstrip("/"), st) for s in specs if s.startswith("/dev/"))
    if group is not None and not by_group and not by_path:
        return f"{node} (device group {group}) is not in DeviceAllow="
    return None


def _same_device(path: Path, node: os.stat_result) -> bool:
    try:
        st = path.stat()
    except OSError:
        return False
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == node.st_rdev


def _device_allow(settings: Mapping[str, list[str]]) -> list[str] | None:
    """The unit's DeviceAllow= values, or ``None`` where its DevicePolicy= restricts no device: ``auto``,
    the default, with no DeviceAllow= (systemd.resource-control(5): "allows access to all devices if no
    explicit DeviceAllow= is present"); ``closed`` and ``strict`` restrict without one too."""
    policy = (settings.get("DevicePolicy") or ["auto"])[-1]
    allowed = settings.get(DEVICE_GROUPS_KEY, [])
    return allowed if policy in ("closed", "strict") or allowed else None


def service_checks(name: str, root: Path = Path("/")) -> list[Check]:
    """What the installed ``edgeseg@NAME`` needs, as its unit and drop-ins under ``root`` say: its config,
    its command, the camera device for its groups, its state directory (and that it writes nothing else),
    its credentials and MQTT files, its web page, its broker, its model, a stop timeout for the MQTT flush,
    and a watchdog interval longer than the model's worst frame latency."""
    from edgeseg.config import load_config
    from edgeseg.errors import EdgesegError
    from edgeseg.service import (
        Layout,
        check_name,
        masking,
        read_files,
        state_directory,
        unwritable_paths,
        written_paths,
    )

    area, layout = "service", Layout(root)
    name = check_name(name)  # (a name install refuses was looked up, and install of it suggested)
    settings = unit_settings(root, name)
    install = f"edgeseg service install {name} --pipeline FILE"
    if mask := masking(root, name):
        why = f"masked: {mask} is empty or a link to /dev/null, so systemd refuses to start it"
        return [Check(area, "unit", False, why, f"systemctl unmask {mask.name}")]
    if "ExecStart" not in settings:
        return [
            Check(area, "unit", False, f"no {layout.at('/etc/systemd/system/edgeseg@.service')}", install)
        ]
    commands = [words for v in settings["ExecStart"] if (words := _words(v))]
    if not commands and settings["ExecStart"]:
        why = (
            f"ExecStart={settings['ExecStart'][-1]}: unbalanced quotes, a line systemd ignores, and without "
            "it the unit has no command: systemd refuses to load it"
        )
        return [Check(area, "unit", False, why, "close the quote (or remove it) in that ExecStart=")]
    if not commands:
        # (an empty ExecStart= in a drop-in, meant to replace the command, with no new one after it)
        why = "ExecStart= emptied by a drop-in and not set again: systemd refuses to load the unit"
        return [Check(area, "unit", False, why, "give the drop-in an ExecStart= after the empty one")]
    # the executable, quoted or not, past the prefixes systemd.service(5) allows ("-" failure ignored, "@"
    # argv[0] given, ":" no expansion, "+" "!" "!!" privileges)
    command = commands[-1][0].lstrip("@-:+!")
    if not os.path.isabs(command):  # (a bare name: systemd's search path)
        command = shutil.which(command, path=EXEC_SEARCH_PATH) or command
    if _hidden_by_private_tmp(Path(command), settings, layout):
        why, fix = f"{command}: {PRIVATE_TMP_HIDES}", f"{MOVE_OUT_OF_TMP}, and {install} --bin PATH"
        out = [Check(area, "command", False, why, fix)]
    else:
        out = [_command_check(area, Path(command), settings, install)]
    config_path = layout.at(layout.config(name))
    try:
        config = load_config(config_path, env={})
    except EdgesegError as exc:
        return [*out, Check(area, "config", False, str(exc), f"fix {config_path} or {install}")]
    out.append(Check(area, "config", True, str(config_path)))
    known = layout.groups()
    groups = [g for value in settings.get("SupplementaryGroups", []) for g in value.split()]
    missing = [g for g in groups if g not in known and not g.isdigit()]
    out.append(
        Check(
            area,
            "groups",
            not missing,
            f"SupplementaryGroups={' '.join(groups)}"
            + (f": no group {', '.join(missing)} in {layout.at('/etc/group')}" if missing else ""),
            "systemd fails the start (216/GROUP) on an unknown group: create it or reinstall",
        )
    )
    nodes = camera_nodes(config.source.uri, layout.at("/dev"))
    if isinstance(nodes, str):
        out.append(Check(area, "camera device", False, nodes, "fix source.uri"))
    elif nodes is not None:
        gids = {known[g] if g in known else int(g) for g in groups if g in known or g.isdigit()}
        allowed = _device_allow(settings)
        problems = [
            p
            for n in nodes or [layout.at("/dev/video0")]
            if (p := _node_check(n, gids, allowed, _device_groups(), layout.root))
        ]
        out.append(
            Check(
                area,
                "camera device",
                not problems,
                problems[0] if problems else f"{', '.join(str(n) for n in nodes)} rw for {' '.join(groups)}",
                "plug in the camera; a node owned by another group needs that group in SupplementaryGroups= "
                "(a drop-in) and DeviceAllow=",
            )
        )
    out.append(_state_check(area, layout, settings, config, name))
    out.append(_credentials_check(area, layout, settings, name))
    out += _mqtt_files_check(area, layout, settings, config, name)
    out += _web_check(area, settings, config, name)
    out += _broker_check(area, layout, settings, config, name)
    checked: set[Path] = set()  # (an IMX500 pipeline's model is its network)
    for key, path in read_files(config).items():
        if any(c in path.name for c in "*?["):
            path = path.parent  # (an image glob: the folder, its images come and go)
        if path not in checked:
            checked.add(path)
            out.append(_read_check(area, key, path, settings, install, layout))
    cache = config.model.engine_cache_dir
    state = state_directory(name)
    if cache is not None:
        inside = "model.engine_cache_dir" not in dict(unwritable_paths(config, name))
        fix = "set model.engine_cache_dir: null (engines then go to the state directory, its one writable)"
        out.append(Check(area, "engine cache", inside, str(cache), fix))
    outputs = {k: p for k, p in written_paths(config).items() if k.startswith("sinks.")}
    if outputs:
        bad = [f"{k} is {p}" for k, p in unwritable_paths(config, name) if k in outputs]
        detail = (
            f"{bad[0]}: the service may only write {state}" if bad else ", ".join(map(str, outputs.values()))
        )
        out.append(Check(area, "outputs", not bad, detail, f"point it into {state}, or remove it"))
    stop = _stop_check(name, settings, config)
    watchdog = _watchdog_check(name, settings, config, layout.at(cache or state / "engines"))
    return [*out, *([stop] if stop else []), watchdog]


def _words(value: str) -> list[str] | None:
    """A command line or path list split as systemd splits it; ``None`` for unbalanced quoting, which
    systemd ignores ("Unbalanced quoting, ignoring", "Failed to parse ..., ignoring")."""
    try:
        return shlex.split(value)
    except ValueError:
        return None


# the check of each file read_files() gives, by its key
_READ_CHECKS = {
    "model.path": "model",
    CARD: "model card",
    CARD_FILE: "model file",
    "source.imx500_network": "imx500 network",
    "source.uri": "source file",
}


def _read_check(
    area: str, key: str, path: Path, settings: Mapping[str, list[str]], install: str, layout: Layout
) -> Check:
    """Whether the service can read ``path``: not hidden by its private /tmp or ProtectHome=, there,
    readable by "other" (its dynamic user). Doctor, run as root, sees it anyway: this is how the service
    does."""
    what = _READ_CHECKS[key]
    if _hidden_by_private_tmp(path, settings, layout):
        return Check(area, what, False, f"{path}: {PRIVATE_TMP_HIDES}", f"{MOVE_OUT_OF_TMP}, and fix {key}")
    if _hidden_by_protect_home(path, settings):
        fix = f"run `{install}` again: it binds the folders under /home that the pipeline needs into the unit"
        return Check(area, what, False, f"{path}: under a home folder, hidden by ProtectHome=", fix)
    # (os.path.exists: a name longer than the file system takes is missing, not a traceback)
    exists = os.path.exists(path)
    if exists and (closed := _closed_folder(path, settings)):
        why = f"{path}: the service's dynamic user may not enter {closed} ('other' has no x)"
        return Check(
            area, what, False, why, f"chmod o+x {closed}, or move it (e.g. to /opt/edgeseg) and fix {key}"
        )
    readable = exists and bool(path.stat().st_mode & stat.S_IROTH)
    fix = "the dynamic user reads it as 'other': chmod o+r" if exists else f"fix {key}"
    return Check(area, what, readable, str(path), fix)


def _command_check(area: str, command: Path, settings: Mapping[str, list[str]], install: str) -> Check:
    """Whether the service's dynamic user can run ``command``, as "other": each folder above it (and above
    where its links lead) entered, the file executable. Doctor, run as root, may run any file with an x bit
    (os.access), and enter any folder."""
    elsewhere = f"{install} --bin PATH of an environment elsewhere (e.g. /opt/edgeseg/venv)"
    for path in (command, command.resolve()):
        if closed := _closed_folder(path, settings):
            why = f"{command}: the service's dynamic user may not enter {closed} ('other' has no x)"
            return Check(area, "command", False, why, f"chmod o+x {closed}, or {elsewhere}")
    if not os.path.isfile(command):
        return Check(area, "command", False, str(command), f"{install} --bin PATH")
    if not command.stat().st_mode & stat.S_IXOTH:
        why = f"{command}: the service's dynamic user may not run it ('other' has no x)"
        return Check(area, "command", False, why, f"chmod o+x {command}, or {elsewhere}")
    return Check(area, "command", True, str(command))


_YES = ("yes", "true", "on", "1")  # how a unit file says a boolean is true (systemd parse_boolean)
PRIVATE_TMP_HIDES = "under /tmp or /var/tmp, hidden by the unit's own (PrivateTmp=, implied by DynamicUser=)"
MOVE_OUT_OF_TMP = "move it out of /tmp and /var/tmp (/tmp is emptied at boot too), e.g. to /opt/edgeseg"


def _hidden_by_private_tmp(path: Path, settings: Mapping[str, list[str]], layout: Layout) -> bool:
    """Whether the unit's private /tmp and /var/tmp hide ``path``, which lies in the root's."""
    from edgeseg.service import in_private_tmp

    private = [v for k in ("PrivateTmp", "DynamicUser") for v in settings.get(k, [])[-1:]]
    return any(v in _YES for v in private) and in_private_tmp(layout, path)


def _closed_folder(path: Path, settings: Mapping[str, list[str]]) -> Path | None:
    """The first folder above ``path`` that the service's dynamic user may not enter ("other" has no x),
    as the service sees them: under a home folder that a bind shows past ProtectHome=tmpfs, from the bind
    down, the folders above it being the tmpfs's, 0755 (systemd's namespace.c mounts it "mode=0755")."""
    from edgeseg.service import in_home

    folders = list(reversed(path.parents))
    tmpfs = (settings.get("ProtectHome") or ["no"])[-1] == "tmpfs" and in_home(path)
    bound = [b for b in _binds(settings) if path.is_relative_to(b)] if tmpfs else []
    if bound:
        top = min(bound, key=lambda b: len(b.parts))
        folders = [f for f in folders if f.is_relative_to(top)]
    for folder in folders:
        try:
            if not folder.stat().st_mode & stat.S_IXOTH:
                return folder
        except OSError:  # (missing: the check of the file says so)
            return None
    return None


def _binds(settings: Mapping[str, list[str]]) -> set[Path]:
    """The host folders the unit's BindPaths= and BindReadOnlyPaths= show: words as systemd reads them
    (unit_settings expanded '%%'): quoted, an optional '-' prefix and ':DEST[:OPTIONS]'."""
    values = [v for key in ("BindPaths", "BindReadOnlyPaths") for v in settings.get(key, [])]
    words = [w.lstrip("-") for v in values for w in _words(v) or []]
    return {Path(c) for w in words for c in (w, w.split(":")[0])}


def _hidden_by_protect_home(path: Path, settings: Mapping[str, list[str]]) -> bool:
    """Whether the unit's ``ProtectHome=`` hides ``path``: it lies under /home, /root or /run/user and no
    ``BindPaths=``/``BindReadOnlyPaths=`` entry shows it (what install writes when the pipeline file it was
    given needs such a folder; the copy in /etc edited afterwards gets none)."""
    from edgeseg.service import in_home

    protect = (settings.get("ProtectHome") or ["no"])[-1]
    if protect not in (*_YES, "tmpfs"):
        return False
    # (where its links lead too: the service reads the file there)
    paths = [p for p in (path, path.resolve()) if in_home(p)]
    return any(not any(p.is_relative_to(b) for b in _binds(settings)) for p in paths)


def _credentials_check(area: str, layout: Layout, settings: Mapping[str, list[str]], name: str) -> Check:
    """The unit's LoadCredential= lines against the files in /etc/edgeseg/credentials/NAME: systemd 252
    fails the start (243/CREDENTIALS) on a listed file that is missing, and the service never sees a file
    that no line lists (install writes the lines for the files there then)."""
    from edgeseg.service import CREDENTIALS

    folder = layout.credentials(name)
    # (a bare ID names itself: "LoadCredential=ID" is "LoadCredential=ID:ID")
    listed = {i: p or i for i, _, p in (v.partition(":") for v in settings.get("LoadCredential", []))}
    try:
        # (a file, or what systemd takes for one: an AF_UNIX socket it reads the credential from, a folder
        # whose files it loads each as ID_FILE; systemd.exec(5), LoadCredential=)
        missing = [
            f"{i} ({p})" for i, p in listed.items() if Path(p).is_absolute() and not layout.at(p).exists()
        ]
        stored = {i: _credstore(layout, p) for i, p in listed.items() if not Path(p).is_absolute()}
        unlisted = [c for c in CREDENTIALS if c not in listed and layout.at(f"{folder}/{c}").is_file()]
    except PermissionError as exc:  # (the folder is root's alone, mode 0700 as the README makes it)
        return Check(area, "credentials", False, f"cannot read {exc.filename}", "run doctor as root (sudo)")
    fix = f"edgeseg service install {name} --pipeline FILE again: it lists the files that are there"
    if missing:
        files = ", ".join(missing)
        why = f"LoadCredential= of a missing file, which fails the start (243/CREDENTIALS): {files}"
        return Check(area, "credentials", False, why, fix)
    if absent := [listed[i] for i, found in stored.items() if found is None]:
        # systemd skips a missing one of these (execute.c: "Couldn't read inherited credential ...,
        # skipping"): the service starts without it
        why = (
            f"LoadCredential= of a name in none of {', '.join(CREDSTORES)}, so the service starts without "
            f"it (unless systemd itself was given one of that name): {', '.join(absent)}"
        )
        where = f"{CREDSTORES[0]}/{absent[0]}"
        return Check(
            area, "credentials", False, why, f"put it in {where}, or give LoadCredential= a whole path"
        )
    if unlisted:
        why = f"{', '.join(unlisted)} in {folder} but not given to the service (no LoadCredential=)"
        return Check(area, "credentials", False, why, fix)
    return Check(area, "credentials", True, ", ".join(listed) or "none")


# where systemd 252 looks for a LoadCredential= path that is no absolute path but a credential's name, after
# the credentials it was given itself, first first (systemd.exec(5), LoadCredential=)
CREDSTORES = ("/etc/credstore", "/run/credstore", "/usr/lib/credstore")


def _credstore(layout: Layout, credential: str) -> Path | None:
    """The file of the credential store under the root that systemd loads ``credential`` from, if any."""
    return next((f for d in CREDSTORES if (f := layout.at(f"{d}/{credential}")).is_file()), None)


def _broker_check(
    area: str, layout: Layout, settings: Mapping[str, list[str]], config: PipelineConfig, name: str
) -> list[Check]:
    """:func:`broker_checks` with the credentials the unit's LoadCredential= lines give the service (a file
    of the credential store, another folder's), not those of /etc/edgeseg/credentials/NAME alone."""
    import tempfile

    folder = layout.at(layout.credentials(name))
    given: dict[str, Path] = {}
    try:
        for credential, _, path in (v.partition(":") for v in settings.get("LoadCredential", [])):
            path = path or credential
            found = layout.at(path) if Path(path).is_absolute() else _credstore(layout, path)
            if found is not None:
                given[credential] = found
    except PermissionError as exc:  # (a credential store is root's alone)
        return [Check(area, "mqtt broker", False, f"cannot read {exc.filename}", "run doctor as root (sudo)")]
    if all(file == folder / credential for credential, file in given.items()):
        # (install's lines: that folder itself, which a message then names)
        return broker_checks(area, config, {"CREDENTIALS_DIRECTORY": str(folder)} if folder.is_dir() else {})
    with tempfile.TemporaryDirectory() as directory:  # ($CREDENTIALS_DIRECTORY as the service has it)
        for credential, file in given.items():
            (Path(directory) / credential).symlink_to(file)
        return broker_checks(area, config, {"CREDENTIALS_DIRECTORY": directory})


def _mqtt_files_check(
    area: str, layout: Layout, settings: Mapping[str, list[str]], config: PipelineConfig, name: str
) -> list[Check]:
    """The files of ``sinks.mqtt`` the service reads (those no LoadCredential= replaces) as it sees them:
    shown past ProtectHome=, and readable by "other", as its dynamic user is. Doctor, run as root, reads
    them anyway, and its broker check passed where the service ends at its start ("cannot read")."""
    from edgeseg.service import mqtt_files

    loaded = {v.partition(":")[0] for v in settings.get("LoadCredential", [])}
    problems, files = [], [(c, p) for c, p in mqtt_files(config).items() if c not in loaded]
    for credential, path in files:
        if _hidden_by_private_tmp(path, settings, layout):
            problems.append((credential, f"{path}: {PRIVATE_TMP_HIDES}"))
        elif _hidden_by_protect_home(path, settings):
            problems.append((credential, f"{path}: under a home folder, hidden by ProtectHome="))
        elif not os.path.isfile(path):
            problems.append((credential, f"{path} does not exist"))
        elif closed := _closed_folder(path, settings):
            why = f"{path}: the service's dynamic user may not enter {closed} ('other' has no x)"
            problems.append((credential, why))
        elif not path.stat().st_mode & stat.S_IROTH:
            problems.append((credential, f"{path}: not readable by the service's dynamic user ('other')"))
    if not files:
        return []
    if not problems:
        return [Check(area, "mqtt files", True, ", ".join(str(p) for _, p in files))]
    credential, why = problems[0]
    fix = (
        f"give it as a credential, /etc/edgeseg/credentials/{name}/{credential}, and run `edgeseg service "
        f"install {name}` again (or, for what is no secret, chmod o+r it, and install again from a pipeline "
        "that names it)"
    )
    return [Check(area, "mqtt files", False, why, fix)]


def _web_check(
    area: str, settings: Mapping[str, list[str]], config: PipelineConfig, name: str
) -> list[Check]:
    """What the service needs of ``sinks.web.listen`` at its start (status 2 otherwise, never restarted):
    a token, from its one source under the unit (the web-token credential), beside a non-loopback address;
    a port it may bind, without root and, past the unit's empty CapabilityBoundingSet=, without
    CAP_NET_BIND_SERVICE: from net.ipv4.ip_unprivileged_port_start up."""
    from edgeseg.sinks.web import WebSinkConfig
    from edgeseg.sinks.webaccess import TOKEN_CREDENTIAL, is_loopback, split_listen

    listen = config.sinks.section(WebSinkConfig).listen
    if listen is None:
        return []
    host, port = split_listen(listen)
    try:
        lowest = int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        lowest = 1024  # the kernel's default
    granted = all(
        has_capability(settings, k, "CAP_NET_BIND_SERVICE")
        for k in ("AmbientCapabilities", "CapabilityBoundingSet")
    )
    if 0 < port < lowest and not granted:
        why = f"sinks.web.listen {listen}: the service may not bind a port below {lowest} (no capabilities)"
        return [Check(area, "web page", False, why, "listen on a port from 1024 up, e.g. 8080")]
    loaded = {v.partition(":")[0] for v in settings.get("LoadCredential", [])}
    if not is_loopback(host) and TOKEN_CREDENTIAL not in loaded:
        why = f"sinks.web.listen {listen} needs a token: the unit gives none (no LoadCredential=web-token)"
        fix = f"put one in /etc/edgeseg/credentials/{name}/{TOKEN_CREDENTIAL} and run install again"
        return [Check(area, "web page", False, why, fix)]
    return [Check(area, "web page", True, listen)]


def _state_check(
    area: str, layout: Layout, settings: Mapping[str, list[str]], config: PipelineConfig, name: str
) -> Check:
    """systemd creates StateDirectory= under /var/lib (as root) for the dynamic user: the service can write
    nothing else (ProtectSystem=strict), so the pipeline must not name another."""
    from edgeseg.service import unwritable_paths

    state = settings.get("StateDirectory", [])
    lib = layout.at("/var/lib")
    fix = "keep StateDirectory=edgeseg/%i in the unit, remove pipeline.state_dir, and give /var/lib to root"
    if not state:
        return Check(area, "state directory", False, "no StateDirectory= in the unit", fix)
    if "pipeline.state_dir" in dict(unwritable_paths(config, name)):
        why = (
            f"pipeline.state_dir is {config.pipeline.state_dir}: the service may only write $STATE_DIRECTORY"
        )
        return Check(area, "state directory", False, why, fix)
    if lib.exists() and not (lib.is_dir() and os.access(lib, os.W_OK)):
        return Check(area, "state directory", False, f"{lib} is not a writable folder", fix)
    return Check(area, "state directory", True, f"{lib}/{state[-1].split()[0]} (created by systemd)")


def _stop_check(name: str, settings: Mapping[str, list[str]], config: PipelineConfig) -> Check | None:
    """A stop's longest wait with an MQTT sink (a stuck sink's drain, then the broker's flush) against
    TimeoutStopSec=: past it systemd kills the process, the unit ends failed and the summary is never
    written (nothing is lost: the spool stays on disk). None without an MQTT sink."""
    from edgeseg.mqtt.publisher import PublisherSettings
    from edgeseg.pipeline import LOSSLESS_DRAIN_TIMEOUT_S
    from edgeseg.sinks.mqtt import MqttSinkConfig

    mqtt = config.sinks.section(MqttSinkConfig)
    if mqtt.url is None:
        return None
    values = settings.get("TimeoutStopSec", [])
    fix = (
        f"lower sinks.mqtt.flush_timeout_s, or raise TimeoutStopSec= in a drop-in (edgeseg@{name}.service.d/)"
    )
    try:
        # systemd's default without the key: DefaultTimeoutStopSec=, 90 s (systemd-system.conf(5))
        limit = timespan_s(values[-1]) if values else 90.0
    except ValueError:
        return Check("service", "stop timeout", False, f"TimeoutStopSec={values[-1]}: not a time span", fix)
    limit = limit or math.inf  # 0 disables the timeout, as infinity does (systemd's config_parse_sec_fix_0)
    needed = LOSSLESS_DRAIN_TIMEOUT_S + PublisherSettings().close_bound_s(mqtt.flush_timeout_s)
    detail = (
        f"TimeoutStopSec={values[-1] if values else '90s (the default)'}, a stop may take {needed:g} s "
        f"(sinks.mqtt.flush_timeout_s = "
        f"{mqtt.flush_timeout_s:g} s)"
    )
    return Check("service", "stop timeout", needed <= limit, detail, fix)


def _watchdog_check(
    name: str, settings: Mapping[str, list[str]], config: PipelineConfig, engines: Path
) -> Check:
    """Time preprocess + inference + decode of a blank frame and compare the worst with WatchdogSec=. A
    TensorRT model runs with the service's engine from ``engines``, never one built here: that takes minutes
    and hundreds of MB, in the cache of the user running doctor, which the service never reads."""
    import numpy as np

    from edgeseg.errors import EdgesegError
    from edgeseg.frame import Frame
    from edgeseg.pipeline import ModelStages

    values = settings.get("WatchdogSec", [])
    area, fix = (
        "service",
        f"raise WatchdogSec= in a drop-in (edgeseg@{name}.service.d/) or use a faster model",
    )
    try:
        watchdog = timespan_s(values[-1]) if values else 0.0
    except ValueError:
        return Check(area, "watchdog", False, f"WatchdogSec={values[-1]}: not a time span", fix)
    if watchdog <= 0 or math.isinf(watchdog):  # systemd arms no watchdog for 0 or infinity
        what = f"WatchdogSec={values[-1]}" if values else "no WatchdogSec="
        return Check(area, "watchdog", False, f"{what}: a stalled pipeline would not be restarted", fix)
    if config.model.backend == "imx500":
        return Check(area, "watchdog", True, f"WatchdogSec={watchdog:g} s; inference runs on the sensor")
    try:
        stages = ModelStages.from_config(
            replace(config, model=replace(config.model, engine_cache_dir=engines)), build_engine=False
        )
    except EdgesegError as exc:  # (a missing model or backend: one failing check, not the end of the report)
        return Check(area, "watchdog", False, f"WatchdogSec={watchdog:g} s; cannot time the model: {exc}")
    try:
        image = np.zeros((config.source.height or 480, config.source.width or 640, 3), np.uint8)
        times = []
        for i in range(LATENCY_FRAMES):
            start = time.perf_counter()
            frame = Frame(i, image, time.monotonic_ns(), time.time())
            prepared = stages.preprocess(frame)
            stages.decode(frame, prepared, stages.infer(prepared))
            times.append(time.perf_counter() - start)
    finally:
        stages.close()
    worst, median = max(times), statistics.median(times)
    detail = (
        f"WatchdogSec={watchdog:g} s, worst frame {worst * 1000:.0f} ms (median {median * 1000:.0f} ms, "
        f"{LATENCY_FRAMES} blank frames; needs {LATENCY_MARGIN}x margin)"
    )
    return Check(area, "watchdog", worst * LATENCY_MARGIN < watchdog, detail, fix)


def command(args: argparse.Namespace) -> int:
    """Print the report; exit code 0, or 1 when a pipeline or service was given and one of its needs is
    missing (missing extras are information, not errors)."""
    from edgeseg.cliconfig import pipeline_path

    # a bundled pipeline's name too, as 'edgeseg run NAME' takes it
    pipeline = pipeline_path(getattr(args, "pipeline", None))
    own = pipeline_checks(pipeline) if pipeline else []
    if getattr(args, "service", None) is not None:
        own += service_checks(args.service, Path(args.root))
    for c in [*checks(), *own]:
        mark = "ok " if c.ok else "-- "
        line = f"{mark} {c.area:<8} {c.name:<28} {c.detail}"
        if not c.ok and c.fix:
            line += f"\n{'':<41}fix: {c.fix}"
        print(line)
    return 0 if all(c.ok for c in own) else 1
