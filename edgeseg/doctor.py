"""``edgeseg doctor``: what this machine offers (backends, cameras, displays, extras), how to add the rest."""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import shutil
from dataclasses import dataclass


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
        out.append(Check("backend", "onnxruntime", True, f"{ort.__version__}: {providers}"))
    else:
        out.append(Check("backend", "onnxruntime", False, "not installed", "pip install onnxruntime"))
    trt, pycuda = _has("tensorrt"), _has("pycuda")
    out.append(
        Check(
            "backend",
            "tensorrt",
            trt and pycuda,
            "installed"
            if trt and pycuda
            else f"tensorrt {'found' if trt else 'missing'}, pycuda {'found' if pycuda else 'missing'}",
            "on a Jetson: use JetPack's TensorRT, then pip install edgeseg[tensorrt]",
        )
    )
    out.append(
        Check(
            "backend",
            "imx500 (picamera2)",
            _has("picamera2"),
            "installed" if _has("picamera2") else "picamera2 not importable",
            "on a Raspberry Pi OS: sudo apt install python3-picamera2 imx500-all (venv with "
            "--system-site-packages)",
        )
    )
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
    out.append(
        Check(
            "camera",
            "gstreamer (gst: sources)",
            _cv2_build("GStreamer"),
            "in OpenCV build" if _cv2_build("GStreamer") else "OpenCV built without GStreamer",
            "use the distribution's python3-opencv (built with GStreamer) for gst: URIs",
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


def pipeline_checks(path: str | None) -> list[Check]:
    """What one pipeline needs: its model file, its state directory, and its broker answering."""
    from edgeseg.config import load_config
    from edgeseg.statedir import state_dir

    config = load_config(path)
    name = f"pipeline {config.name}"
    model = config.model.path
    out = [Check(name, "model", model.exists(), str(model), "fix model.path")]
    state = state_dir(config.pipeline.state_dir)
    parent = next((p for p in (state, *state.parents) if p.exists()), state)
    writable = os.access(parent, os.W_OK)
    out.append(Check(name, "state directory", writable, str(state), "set pipeline.state_dir or --state-dir"))
    from edgeseg.sinks.mqtt import MqttSinkConfig

    mqtt = config.sinks.section(MqttSinkConfig)
    if mqtt.url is not None:
        from edgeseg.mqtt.broker import load_credentials, parse_broker_url
        from edgeseg.mqtt_commands import check

        address = parse_broker_url(mqtt.url)
        creds = load_credentials(
            mqtt.username_file, mqtt.password_file, mqtt.ca_file, mqtt.cert_file, mqtt.key_file
        )
        problem = check(address, creds)
        who = f" as {creds.username} ({creds.origin})" if creds.username else " (anonymous)"
        out.append(
            Check(
                name,
                "mqtt broker",
                problem is None,
                f"{address} answers{who}" if problem is None else problem,
                "start the broker or fix sinks.mqtt.url / the MQTT credentials (the pipeline runs anyway and "
                "spools results until the broker answers)",
            )
        )
    return out


def command(args: argparse.Namespace) -> int:
    """Print the report; exit code 0, or 1 when a pipeline was given and one of its needs is missing
    (missing extras are information, not errors)."""
    pipeline = getattr(args, "pipeline", None)
    own = pipeline_checks(pipeline) if pipeline else []
    for c in [*checks(), *own]:
        mark = "ok " if c.ok else "-- "
        line = f"{mark} {c.area:<8} {c.name:<28} {c.detail}"
        if not c.ok and c.fix:
            line += f"\n{'':<41}fix: {c.fix}"
        print(line)
    return 0 if all(c.ok for c in own) else 1
