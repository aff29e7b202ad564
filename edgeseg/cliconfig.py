"""From command-line flags to a validated :class:`~edgeseg.config.PipelineConfig`, shared by every command.

Each flag stands for config keys (``--source`` for ``source.uri``, ``--output x.jsonl`` for
``sinks.jsonl.path``, ...), applied as overrides that name the flag in error messages. Paths are kept as typed
(relative to the current directory), never resolved through symlinks, so messages show what the user wrote.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from edgeseg.config import (
    DEFAULT_PIPELINE,
    Override,
    PipelineConfig,
    bundled_pipelines_dir,
    env_overrides,
    is_bundled,
    load_config,
    overridden,
)
from edgeseg.control import TuningFile, load_tuning, tuning_path
from edgeseg.errors import ConfigError, EdgesegError, InputError
from edgeseg.statedir import state_dir

log = logging.getLogger("edgeseg")

# --output suffix -> the sink key it sets
OUTPUT_KINDS = {".jsonl": "sinks.jsonl.path", ".mp4": "sinks.video.path", ".avi": "sinks.video.path"}
# videos, which are frames for --source, not a pipeline (as images are)
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mkv", ".mov", ".webm", ".h264", ".h265", ".mjpeg", ".ts"})
# settings of a camera that a file or a stream named by --source does not inherit from the pipeline file
CAMERA_KEYS = ("fps", "width", "height")


def add_pipeline_args(p: argparse.ArgumentParser) -> None:
    """The flags every command that runs a pipeline takes."""
    p.add_argument(
        "pipeline",
        nargs="?",
        metavar="PIPELINE",
        help="pipeline YAML file, or the name of a bundled one (see 'edgeseg pipelines'; default: demo)",
    )
    p.add_argument(
        "--source",
        metavar="URI",
        help="frame source instead of the pipeline's: synthetic:parts, a video or image folder, v4l2:N, "
        "rtsp://..., gst:<pipeline>, picamera2:. A file or stream plays at its own rate and size (pace or "
        "resize it with --set source.fps=... / source.width=...)",
    )
    p.add_argument(
        "--model", metavar="PATH", help="model file (.onnx with a card beside it; overrides model.path)"
    )
    p.add_argument("--roi", metavar="L,T,W,H", help="normalized region of interest, e.g. 0.25,0,0.5,1")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override any config key, e.g. --set postprocess.score_threshold=0.4 (repeatable)",
    )


def bundled_pipelines() -> dict[str, Path]:
    """The pipelines shipped in ``pipelines/``, by name."""
    return {p.stem: p for p in sorted(bundled_pipelines_dir().glob("*.yaml"))}


def pipeline_path(name: str | None) -> Path | None:
    """A pipeline argument as a file: a path as given, else a bundled pipeline of that name."""
    if name is None:
        return None
    from edgeseg.sources.files import IMAGE_SUFFIXES

    # os.path, not Path's is_dir and exists: a name longer than the file system takes raised from those
    path, folder = Path(name), os.path.isdir(name)
    if folder or path.suffix.lower() in VIDEO_SUFFIXES | IMAGE_SUFFIXES:
        # `edgeseg run clip.mp4`: "not UTF-8 text; save it as UTF-8" (after reading it all) misled
        what = "a folder" if folder else "a video or an image"
        # `edgeseg run demo` beside a demo/ folder: the bundled pipeline of that name was meant as likely
        meant = bundled_pipelines().get(name)
        also = f"; the bundled pipeline {name} is {meant}" if meant is not None else ""
        raise ConfigError(
            f"pipeline {name!r}: {what}, not a pipeline file (give it with --source {name}{also})"
        )
    if os.path.exists(name) or path.suffix.lower() in (".yaml", ".yml") or os.sep in name:
        meant = None if os.path.exists(name) else bundled_pipelines().get(path.stem)
        if meant is not None and meant.name == path.name:
            # `edgeseg run pipelines/usb-camera.yaml` outside a checkout (an installed edgeseg): "cannot read
            # pipeline file (No such file or directory)" said nothing of the bundled one of that name
            raise ConfigError(
                f"pipeline {name!r}: no such file; the bundled one of that name runs with "
                f"'edgeseg run {path.stem}' ({meant})"
            )
        return path
    bundled = bundled_pipelines()
    if name in bundled:
        return bundled[name]
    raise ConfigError(
        f"pipeline {name!r}: no such file, and no bundled pipeline of that name "
        f"(bundled: {', '.join(bundled)})"
    )


def _quoted(value: str) -> str:
    # JSON strings are valid YAML scalars, so paths and URIs with ':' or '#' survive override parsing
    return json.dumps(value)


def _explicit(key: str, args: argparse.Namespace) -> bool:
    """Whether the user set ``key`` with --set or an environment variable, as the loader reads them (a
    mapping that holds it, ``EDGESEG__SOURCE='{fps: 10}'``, or a variable in any case, too)."""
    return key in overridden([*env_overrides(os.environ), *args.overrides])


def _source_overrides(uri: str, args: argparse.Namespace) -> list[Override]:
    from edgeseg.sources import parse_uri

    out = [Override(f"source.uri={_quoted(uri)}", "--source")]
    try:
        scheme = parse_uri(uri).scheme
    except EdgesegError:
        scheme = ""  # reported with the key path when the config is validated
    if scheme not in ("synthetic", "v4l2", "picamera2", ""):
        # a pipeline written for a camera (fps: 30) must not pace a 10 fps file to 30 fps
        keys = [f"source.{k}" for k in CAMERA_KEYS if not _explicit(f"source.{k}", args)]
        out += [Override(f"{key}=null", "--source") for key in keys]
    return out


def output_overrides(outputs: list[str]) -> list[Override]:
    """``--output`` files (repeatable: one per kind) as sink path overrides."""
    out: list[Override] = []
    seen: dict[str, str] = {}
    for output in outputs:
        key = OUTPUT_KINDS.get(Path(output).suffix.lower())
        if key is None:
            raise InputError(f"--output {output}: use a .jsonl, .mp4 or .avi file name")
        if key in seen:
            raise InputError(
                f"--output {output}: {seen[key]} is already written as {key.split('.')[1]} "
                "(one --output per kind: .jsonl, .mp4/.avi)"
            )
        seen[key] = output
        out.append(Override(f"{key}={_quoted(output)}", f"--output {output}"))
    return out


def cli_overrides(args: argparse.Namespace) -> list[Override | str]:
    """The overrides the flags stand for, before the user's own ``--set``s."""
    out: list[Override | str] = []
    for name in ("source", "model", "roi", "web", "mqtt", "state_dir"):
        if getattr(args, name, None) == "":
            # `--mqtt "$BROKER"` with the variable unset: the flag was dropped without a word, and the run
            # went on with the pipeline's own source, model or sinks
            raise InputError(f"--{name.replace('_', '-')}: empty value (leave the flag out, or give one)")
    if getattr(args, "source", None):
        out += _source_overrides(args.source, args)
    if getattr(args, "model", None):
        out.append(Override(f"model.path={_quoted(args.model)}", "--model"))
    if getattr(args, "roi", None):
        try:
            roi = [float(v) for v in args.roi.split(",")]
        except ValueError:
            roi = []
        if len(roi) != 4:
            raise InputError(f"--roi: expected four numbers left,top,width,height (got {args.roi!r})")
        out.append(Override(f"source.roi={json.dumps(roi)}", "--roi"))
    if getattr(args, "display", None) is not None:
        out.append(Override(f"sinks.display.enabled={'true' if args.display else 'false'}", "--display"))
    if getattr(args, "tune", False):
        if getattr(args, "display", None) is False:
            # --tune turns the window on after --no-display turned it off: the window opened anyway
            raise InputError(
                "--tune: tune mode is the display window, which --no-display turns off; drop one"
            )
        out.append(Override("sinks.display.enabled=true", "--tune"))
        out.append(Override("sinks.display.tune=true", "--tune"))
    if getattr(args, "web", None):
        if ":" not in args.web:
            # `edgeseg run --web demo`: the optional address took the pipeline's name, and the error was the
            # address's pattern, a regular expression
            moved = (
                f"; give the pipeline before --web (edgeseg run {args.web} --web), or an address after it "
                "(--web 127.0.0.1:8080)"
                if getattr(args, "pipeline", None) is None
                else " (e.g. --web 127.0.0.1:8080)"
            )
            raise InputError(f"--web: {args.web!r} is not HOST:PORT{moved}")
        out.append(Override(f"sinks.web.listen={_quoted(args.web)}", "--web"))
    out += output_overrides(getattr(args, "output", None) or [])
    if getattr(args, "mqtt", None):
        from edgeseg.mqtt.broker import parse_broker_url

        parse_broker_url(args.mqtt, "--mqtt")
        out.append(Override(f"sinks.mqtt.url={_quoted(args.mqtt)}", "--mqtt"))
    if getattr(args, "state_dir", None):
        out.append(Override(f"pipeline.state_dir={_quoted(args.state_dir)}", "--state-dir"))
    if getattr(args, "max_frames", None) is not None:
        if args.max_frames < 1:
            raise InputError(f"--max-frames: must be >= 1 (got {args.max_frames})")
        out.append(Override(f"pipeline.max_frames={args.max_frames}", "--max-frames"))
    return [*out, *args.overrides]


@dataclass(frozen=True)
class LoadedPipeline:
    """A pipeline as the flags describe it.

    Attributes:
        config: what runs: the file, the environment, the flags, then the saved live tuning.
        base: the same without the saved tuning (what a new save is compared with).
        file: the pipeline YAML.
        tuning: the saved live tuning (see :mod:`edgeseg.control`), empty when there is none.
    """

    config: PipelineConfig
    base: PipelineConfig
    file: Path
    tuning: TuningFile


def load_pipeline(args: argparse.Namespace) -> LoadedPipeline:
    """The pipeline the flags describe, with its saved tuning (from the state directory) applied last."""
    overrides = cli_overrides(args)
    path = pipeline_path(args.pipeline) or DEFAULT_PIPELINE
    base = _load(path, overrides, args)
    _check_bundled_files(path, base)
    tuning = _applicable(
        path, overrides, load_tuning(tuning_path(state_dir(base.pipeline.state_dir), base.name))
    )
    for _, why in tuning.left_out.values():
        log.warning("%s: left out, the rest of the saved tuning applied (the file is kept as it is)", why)
    config = _load(path, [*overrides, *tuning.overrides()], args) if tuning.values else base
    return LoadedPipeline(config, base, path, tuning)


def _applicable(path: Path, overrides: list[Override | str], tuning: TuningFile) -> TuningFile:
    """``tuning`` less the values the configuration no longer takes (an upgrade narrowed a range, or they
    break a rule together with the file's values), left out with why. A start refused for one was exit 2,
    which the unit does not restart: an unattended device stayed down until someone deleted the file."""
    if not tuning.values:  # (nothing saved: the pipeline was just loaded without it)
        return tuning
    try:
        load_config(path, [*overrides, *tuning.overrides()])
        return tuning
    except ConfigError:
        pass
    kept = TuningFile(tuning.path, {}, tuning.left_out)
    for key, value in tuning.values.items():  # one at a time: each in turn over those that applied
        trial = TuningFile(tuning.path, {**kept.values, key: value}, kept.left_out)
        try:
            load_config(path, [*overrides, *trial.overrides()])
            kept = trial
        except ConfigError as exc:
            kept = TuningFile(tuning.path, kept.values, {**kept.left_out, key: (value, str(exc))})
    return kept


def _check_bundled_files(path: Path, config: PipelineConfig) -> None:
    """A bundled pipeline's own model or video file that this machine lacks, as one line naming the flags
    that give them: video-file's and jetson-csi-tensorrt's are the evaluation assets beside a checkout
    (../shared/assets), absent from an installed wheel, and the run ended in "model file not found"."""
    if not is_bundled(path):
        return
    from edgeseg.sources import parse_uri

    own = load_config(path, env={})
    missing: list[str] = []
    if config.model.path == own.model.path and not os.path.exists(config.model.path):
        missing.append(f"its model {config.model.path} is not here: give one with --model FILE")
    if config.source.uri == own.source.uri:
        try:
            parsed = parse_uri(config.source.uri)
        except EdgesegError:
            parsed = None  # reported by the source itself
        if parsed is not None and parsed.scheme == "file" and not os.path.exists(parsed.target):
            missing.append(f"its video {parsed.target} is not here: give one with --source FILE")
    if missing:
        raise ConfigError(f"bundled pipeline {path.stem}: {'; '.join(missing)}")


def load_cli_config(args: argparse.Namespace) -> PipelineConfig:
    """The configuration the flags describe, saved tuning included (:func:`load_pipeline`)."""
    return load_pipeline(args).config


def _load(path: Path, overrides: list[Override | str], args: argparse.Namespace) -> PipelineConfig:
    """A display the pipeline asks for but this machine lacks is turned off with a warning (unless
    ``--display`` asked for it: then opening it fails with the reason)."""
    config = load_config(path, overrides)
    from edgeseg.sinks.display import DisplaySinkConfig, display_problem

    asked = getattr(args, "display", None) is not None or getattr(args, "tune", False)
    if config.sinks.section(DisplaySinkConfig).enabled and not asked:
        problem = display_problem()
        if problem is not None:
            log.warning("display turned off: %s", problem)
            config = load_config(path, [*overrides, "sinks.display.enabled=false"])
    return config
