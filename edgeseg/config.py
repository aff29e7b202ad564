"""Typed pipeline configuration: a YAML file, then ``EDGESEG__…`` environment variables, then ``--set``.

Defaults, value ranges and descriptions live in one place: the dataclass fields below. The loader validates
against them and :func:`config_json_schema` turns them into a JSON Schema (``pipelines/schema.json``, for
editor completion), so the two cannot drift apart.

Every error is one :class:`~edgeseg.errors.ConfigError` line that starts with the key path and names what
is allowed, e.g. ``sinks.jsonl.mask_format: must be one of rle, polygon, none (got 'bmp')``; an override's
origin is added in brackets. Unknown keys are errors (with a "did you mean").

Paths: relative paths written in the YAML file (``model.path``, ``model.engine_cache_dir``,
``source.imx500_network``, a file ``source.uri``, plain or ``file:``, a ``picamera2:`` URI's
``network`` and ``pipeline.state_dir``) are relative to the YAML file's folder; relative paths
given by ``--set`` or the environment are relative to the current directory. Output paths (``sinks.*.path``)
are kept as written (relative to the directory the pipeline runs in).
"""

from __future__ import annotations

import contextlib
import os
import types
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin
from urllib.parse import urlencode

import yaml

from edgeseg.errors import ConfigError, EdgesegError, InputError
from edgeseg.fields import meta as _m
from edgeseg.geometry import Roi, validate_roi
from edgeseg.semantic import SemanticParams
from edgeseg.sources.spec import SourceConfig as SourceConfig  # re-exported for callers of edgeseg.config
from edgeseg.tracker import TrackerConfig
from edgeseg.validate import FieldError, Validator, type_hints
from edgeseg.yamlfile import load, read_yaml
from edgeseg.zones import NAME_PATTERN, LineConfig, Points, ZoneConfig, check_name, check_points

# package data: in a checkout edgeseg/pipelines is a link to the top-level pipelines/, and the demo's model
# path (../models/...) is resolved from where the link leads; installed, both are folders of the package
PIPELINES_DIR = (Path(__file__).resolve().parent / "pipelines").resolve()
DEFAULT_PIPELINE = PIPELINES_DIR / "demo.yaml"
ENV_PREFIX = "EDGESEG__"
S = TypeVar("S")


def bundled_pipelines_dir() -> Path:
    """``PIPELINES_DIR``, where it exists: an edgeseg installed from a package built without its package
    data (setup.cfg) has none, and said nothing of it (``edgeseg pipelines`` listed nothing)."""
    if not PIPELINES_DIR.is_dir():
        raise ConfigError(
            f"no bundled pipelines: {PIPELINES_DIR} is missing from this edgeseg's install; reinstall it "
            "('pip install --force-reinstall CHECKOUT'), or name a pipeline file"
        )
    return PIPELINES_DIR


def is_bundled(file: Path) -> bool:
    """Whether ``file`` is one of the bundled pipelines, however it was named (``demo``, its path, a link)."""
    return file.resolve().parent == PIPELINES_DIR.resolve()


def _backends() -> tuple[str, ...]:
    from edgeseg.backends import BACKENDS

    return tuple(BACKENDS)


@dataclass(frozen=True)
class ModelConfig:
    """Which model runs, and how."""

    path: Path = field(
        metadata=_m("Model: .onnx (card beside it or in its metadata), a model card .yaml, or .rpk.")
    )
    backend: str = field(default="onnxruntime", metadata=_m("Inference backend.", choices=_backends))
    providers: tuple[str, ...] = field(
        default=(), metadata=_m("ONNX Runtime execution providers (empty: CPU).")
    )
    threads: int = field(
        default=0,
        metadata=_m(
            "Intra-op threads (0: chosen while frames flow, the run's summary says how: one per usable core;"
            " one fewer while that keeps the slower of inference and post-processing as fast; or, where"
            " frames wait for inference, one per core each running its own frame where that is faster by a"
            " tenth, which holds a frame's intermediate tensors per core). Set, frames run one at a time."
            " At most 1024.",
            ge=0,
            # onnxruntime takes a C int (2**31 and more: a TypeError), and starts each thread before the
            # first frame (100000: minutes)
            le=1024,
        ),
    )
    spin: bool | None = field(
        default=None,
        metadata=_m(
            "ONNX Runtime: idle intra-op threads spin, waiting for work (null: only where cores are left"
            " over for them; a spinning thread takes its core from the decode and source threads)."
        ),
    )
    nice: int = field(
        default=5,
        metadata=_m(
            "Linux: inference (and the thread pools it makes) runs this many nice steps below the pipeline's"
            " other threads, so decoding, publishing and the camera get a core as soon as they have work and"
            " results come at a steadier latency (the frame rate stays within a few percent: README)."
            " 0: the same priority. Lowered once, a thread cannot be raised back without privileges: a shared"
            " machine's other programs keep their share over inference.",
            ge=0,
            le=19,
        ),
    )
    float_convs: bool | None = field(
        default=None,
        metadata=_m(
            "Run dynamically quantized convolutions (ConvInteger) as float ones, weights dequantized at load"
            " (null: with onnxruntime on x86-64 CPUs, where it measured ~4x faster, and with an onnxruntime"
            " before 1.24, which cannot run int8 weights; with TensorRT, which cannot run them, always)."
        ),
    )
    fp16: bool = field(default=False, metadata=_m("TensorRT: build FP16 engines."))
    engine_cache_dir: Path | None = field(
        default=None, metadata=_m("TensorRT engine cache (null: state dir).")
    )


def _like(name: str) -> Any:
    """A :class:`SemanticTuning` field: ``SemanticParams``' rule and description, null = the card's."""
    source = next(f for f in fields(SemanticParams) if f.name == name)
    doc = source.metadata["doc"].rstrip(".")
    return field(default=None, metadata={**source.metadata, "doc": f"{doc} (null: model card)."})


@dataclass(frozen=True)
class SemanticTuning:
    """Semantic -> instances (:class:`edgeseg.semantic.SemanticParams`); each null key keeps the card's."""

    erosion_kernel: int | None = _like("erosion_kernel")
    erosion_iteration: int | None = _like("erosion_iteration")
    dilate_kernel: int | None = _like("dilate_kernel")
    dilate_iteration: int | None = _like("dilate_iteration")
    dist_threshold: float | None = _like("dist_threshold")
    size_threshold: int | None = _like("size_threshold")
    per_component: bool | None = _like("per_component")
    saddle_ratio: float | None = _like("saddle_ratio")
    min_score: float | None = _like("min_score")
    rods: bool | None = _like("rods")
    max_instances: int | None = _like("max_instances")

    def over(self, params: SemanticParams) -> SemanticParams:
        """``params`` (the card's) with every key set here replaced."""
        given = {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}
        return replace(params, **given) if given else params


@dataclass(frozen=True)
class PostprocessConfig:
    """Decoding and post-processing of the raw outputs; every null value is the model card's."""

    score_threshold: float | None = field(
        default=None, metadata=_m("Min score (yolo-seg; null: model card).", ge=0, le=1, live=True, step=0.01)
    )
    iou_threshold: float | None = field(
        default=None,
        metadata=_m("NMS IoU threshold (yolo-seg; null: model card).", gt=0, le=1, live=True, step=0.01),
    )
    max_det: int | None = field(
        default=None, metadata=_m("Most instances per frame (yolo-seg; null: model card).", ge=1, live=True)
    )
    semantic: SemanticTuning = field(
        default_factory=SemanticTuning, metadata=_m("Semantic -> instances (null: model card).")
    )


@dataclass(frozen=True)
class RuntimeConfig:
    """The threaded pipeline itself."""

    queue_size: int = field(
        default=2,
        metadata=_m(
            "Frames buffered between stages (a file source fills them; a live one keeps the newest)."
            " At most 64.",
            ge=1,
            # each queue holds that many decoded frames (1080p: 6 MB each) before the stage in front of it:
            # a thousand would take gigabytes from a file source read faster than inference
            le=64,
        ),
    )
    max_frames: int | None = field(
        default=None, metadata=_m("Stop after this many frames (null: no limit).", ge=1)
    )
    stats_interval_s: float = field(default=5.0, metadata=_m("Seconds between stats reports.", gt=0))
    start_timeout_s: float = field(
        default=1800.0,
        metadata=_m(
            "Longest start-up a service manager is asked to wait for (model load, TensorRT engine build, "
            "IMX500 firmware upload, first result).",
            gt=0,
        ),
    )
    state_dir: Path | None = field(
        default=None,
        metadata=_m("Spool and engine cache (null: $STATE_DIRECTORY, else ~/.local/state/edgeseg)."),
    )


class SinksConfig:
    """The ``sinks`` section: one section per registered sink (:data:`edgeseg.sinks.SINKS`), by name.

    Each sink module declares its own section's dataclass; ``section(cls)`` gives one of them typed.
    """

    def __init__(self, sections: Mapping[str, Any] | None = None) -> None:
        from edgeseg.sinks import SINKS

        given = dict(sections or {})
        self.sections: dict[str, Any] = {
            name: given.pop(name, None) or spec.config() for name, spec in SINKS.items()
        }
        if given:
            raise ConfigError(f"sinks: unknown sections {', '.join(sorted(given))}")

    def __getitem__(self, name: str) -> Any:
        return self.sections[name]

    def section(self, cls: type[S]) -> S:
        """The section whose dataclass is ``cls`` (e.g. ``DisplaySinkConfig``)."""
        for value in self.sections.values():
            if type(value) is cls:
                return value
        raise KeyError(cls.__name__)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SinksConfig) and other.sections == self.sections

    def __repr__(self) -> str:
        return f"SinksConfig({self.sections!r})"


@dataclass(frozen=True)
class Override:
    """One ``key.path=value`` override and the flag or variable it came from, named in error messages."""

    text: str
    origin: str = "--set"


@dataclass(frozen=True)
class PipelineConfig:
    """A whole pipeline; ``name`` defaults to the YAML file's stem, ``source`` to ``synthetic:parts``."""

    name: str = field(metadata=_m("Pipeline name (default: the file name without .yaml).", pattern=r"\S"))
    source: SourceConfig = field(metadata=_m("Frame source."))
    model: ModelConfig = field(metadata=_m("Model and inference backend."))
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig, metadata=_m("Post-processing."))
    pipeline: RuntimeConfig = field(default_factory=RuntimeConfig, metadata=_m("Threading and run length."))
    tracker: TrackerConfig = field(default_factory=TrackerConfig, metadata=_m("Track ids across frames."))
    zones: dict[str, ZoneConfig] = field(
        default_factory=dict, metadata=_m("Named zones (polygons) counting tracks; needs the tracker.")
    )
    lines: dict[str, LineConfig] = field(
        default_factory=dict, metadata=_m("Named counting lines (segments); needs the tracker.")
    )
    sinks: SinksConfig = field(default_factory=SinksConfig, metadata=_m("Outputs."))


def load_config(
    path: str | Path | None,
    overrides: Sequence[str | Override] = (),
    env: Mapping[str, str] | None = None,
) -> PipelineConfig:
    """Load, override and validate a pipeline.

    Args:
        path: the YAML file; ``None`` = ``pipelines/demo.yaml``.
        overrides: ``"key.path=value"`` strings (``--set``) or :class:`Override` (a flag that stands for a
            key); values are parsed as YAML (``3``, ``true``, ``null``, ``[0, 0, 1, 1]``). They win over the
            environment.
        env: environment to read ``EDGESEG__SECTION__KEY=value`` variables from (``__`` separates the key
            path, keys are lower-cased, zone and line names kept); ``None`` = ``os.environ``.

    Raises:
        ConfigError: one line starting with the key path (or the file) and naming the allowed values, and
            where the key came from in brackets (the file, ``--set``, ``--source``, ``env EDGESEG__...``).
    """
    file = Path(path) if path is not None else DEFAULT_PIPELINE
    if file.parent == PIPELINES_DIR:
        file = bundled_pipelines_dir() / file.name  # says why where there are none
    raw = read_yaml(file, "pipeline file", ConfigError)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{file}: must be a mapping of sections (got {type(raw).__name__})")
    origins: dict[str, str] = {}
    for item in [*env_overrides(os.environ if env is None else env), *overrides]:
        _override(raw, item, origins)
    raw.setdefault("name", file.stem)
    return build_config(raw, file, origins)


def env_overrides(environ: Mapping[str, str]) -> list[Override]:
    """The ``EDGESEG__…`` variables of ``environ`` as overrides, in the order they apply."""
    return [
        Override(f"{env_key(name)}={environ[name]}", f"env {name}")
        for name in sorted(environ)
        if name.startswith(ENV_PREFIX) and len(name) > len(ENV_PREFIX)
    ]


def overridden(overrides: Sequence[str | Override]) -> set[str]:
    """The key paths ``overrides`` set, each key of a mapping given one by one (a malformed override is
    left out: loading the config says what is wrong with it)."""
    doc: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for item in overrides:
        with contextlib.suppress(ConfigError):
            _override(doc, item, origins)
    return set(origins)


def _override(raw: dict[str, Any], item: str | Override, origins: dict[str, str]) -> None:
    override = item if isinstance(item, Override) else Override(item)
    key, sep, value = override.text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(
            f"{override.origin} {override.text!r}: expected key.path=value (e.g. source.uri=v4l2:0)"
        )
    set_key(raw, key.strip(), parse_value(value), override.origin, origins)


def build_config(raw: Mapping[str, Any], file: Path, origins: Mapping[str, str]) -> PipelineConfig:
    """Validate a whole raw pipeline document (as read from ``file``, with ``origins``: key path -> where
    an override came from, for messages). Raises :class:`ConfigError`."""
    loader = _Loader(file.resolve().parent, origins, _shown(file))
    return loader.check(loader.build(PipelineConfig, raw, ""))


def apply_changes(
    config: PipelineConfig,
    raw: Mapping[str, Any],
    changes: Mapping[str, Any],
    origin: str,
    file: Path,
) -> PipelineConfig:
    """``config`` (whose document is ``raw``, see :func:`to_raw`) with ``changes`` (dotted key -> value)
    validated exactly as :func:`load_config` would, rebuilding only the top-level sections they touch: a
    live update costs a fraction of a whole load. Raises :class:`ConfigError` tagged ``[origin]``."""
    doc = _copy(raw)
    origins: dict[str, str] = {}
    for key, value in changes.items():
        set_key(doc, key, value, origin, origins)
    # the paths in ``config`` are resolved already, or were given relative to the working directory (a
    # flag): resolving them against the file's folder again would move the latter
    loader = _Loader(file.resolve().parent, origins, _shown(file), resolve=False)
    known = {f.name: f for f in fields(PipelineConfig)}
    tops = {key.partition(".")[0] for key in changes}
    if not tops <= known.keys() - {"name", "sinks"}:
        return loader.check(loader.build(PipelineConfig, doc, ""))
    hints = type_hints(PipelineConfig)
    sections = {top: loader.convert(hints[top], doc[top], top, known[top].metadata) for top in tops}
    return loader.check(replace(config, **sections))


def _copy(doc: Any) -> Any:
    if isinstance(doc, dict):
        return {k: _copy(v) for k, v in doc.items()}
    return list(doc) if isinstance(doc, list) else doc


def to_raw(value: Any) -> Any:
    """A config (or any part of it) back as the plain document it was built from: sections as dicts,
    tuples as lists, paths as strings. ``build_config(to_raw(c), ...) == c``."""
    if isinstance(value, SinksConfig):
        return {name: to_raw(section) for name, section in value.sections.items()}
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_raw(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, tuple):
        return [to_raw(v) for v in value]
    if isinstance(value, dict):
        return {k: to_raw(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value


def flatten(doc: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A raw document as dotted key path -> leaf value (lists are leaves)."""
    out: dict[str, Any] = {}
    for key, value in doc.items():
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def field_meta(key: str) -> Mapping[str, Any] | None:
    """The field metadata of a dotted key path of the pipeline config (``None``: no such leaf field)."""
    from edgeseg.sinks import SINKS

    cls: Any = PipelineConfig
    named: Any = None  # the entries' dataclass of a section of named entries (zones), its name next
    parts = key.split(".")
    for i, part in enumerate(parts):
        if cls is SinksConfig:
            spec = SINKS.get(part)
            if spec is None:
                return None
            cls = spec.config
            continue
        if named is not None:  # an entry's name (zones.<name>): its keys are the dataclass's
            cls, named = named, None
            continue
        found = next((f for f in fields(cls) if f.name == part), None)
        if found is None:
            return None
        hint = type_hints(cls)[part]
        if get_origin(hint) in (Union, types.UnionType):
            hint = next(a for a in get_args(hint) if a is not type(None))
        if get_origin(hint) is dict:
            named = get_args(hint)[1]
        if i == len(parts) - 1:
            return None if is_dataclass(hint) or hint is SinksConfig or named else found.metadata
        if named is None and not (is_dataclass(hint) or hint is SinksConfig):
            return None
        cls = hint
    return None


def config_json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of a pipeline YAML file, from the same dataclass fields as the loader."""
    schema = _object_schema(PipelineConfig)
    schema["required"] = ["model"]
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://github.com/edgeseg/edgeseg/pipelines/schema.json",
        "title": "edgeseg pipeline",
        **schema,
    }


# --- loading ------------------------------------------------------------------------------------------


def _shown(file: Path) -> str:
    """The pipeline file as the user would type it: as given, or the bundled one relative to the repo."""
    if file == DEFAULT_PIPELINE or file.parent == PIPELINES_DIR:
        return f"pipelines/{file.name}"
    return str(file)


def parse_value(text: str) -> Any:
    """An override's value as YAML (``3``, ``true``, ``null``, ``[0, 0, 1, 1]``); bad YAML stays text."""
    try:
        return load(text)
    except yaml.YAMLError:
        return text


def env_key(name: str) -> str:
    """The key path of an ``EDGESEG__…`` variable: its words lower-cased, as keys are, but a zone's or a
    line's name as written (user data: ``Dock`` and ``dock`` are two zones)."""
    hints = type_hints(PipelineConfig)
    parts = name[len(ENV_PREFIX) :].split("__")
    named = len(parts) > 1 and get_origin(hints.get(parts[0].lower())) is dict  # zones, lines
    return ".".join(part if i == 1 and named else part.lower() for i, part in enumerate(parts))


_MAX_DEPTH = 2  # dots in the deepest keys: sinks.<sink>.<key>, zones.<name>.<key>, postprocess.semantic.<key>


def set_key(raw: dict[str, Any], key: str, value: Any, origin: str, origins: dict[str, str]) -> None:
    """Set ``key`` (a dotted path) in a raw document, creating sections on the way.

    A mapping is merged key by key: ``--set 'source={loop: true}'`` keeps ``--source`` and the file's other
    source keys, and each key it holds is an override of its own (named in messages; a path in it is the
    current directory's). An empty mapping (or null) empties the section."""
    mergeable = isinstance(value, dict) and value and all(isinstance(name, str) for name in value)
    # a mapping that holds itself (YAML's `&a {b: *a}`) is merged down to the deepest keys only, where it is
    # an unknown key, instead of for ever
    if mergeable and key.count(".") < _MAX_DEPTH:
        for name, item in value.items():
            set_key(raw, f"{key}.{name}", item, origin, origins)
        return
    parts = key.split(".")
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(
                f"{'.'.join(parts[: i + 1])}: is a value, not a section, cannot set {key} [{origin}]"
            )
        node = child
    node[parts[-1]] = value
    origins[key] = origin


class _Loader(Validator):
    def __init__(self, base: Path, origins: Mapping[str, str], file: str = "", resolve: bool = True) -> None:
        self.base = base
        self.origins = origins
        self.file = file
        self.resolve = resolve

    def fail(self, key: str, message: str, value: Any = MISSING) -> ConfigError:
        # an override names its key or a key below it; an unknown section is named by the override inside it
        origin = next(
            (
                o
                for k, o in self.origins.items()
                if key == k or key.startswith(k + ".") or k.startswith(key + ".")
            ),
            self.file,
        )
        return ConfigError(FieldError(key, message, value).text() + (f" [{origin}]" if origin else ""))

    def special(self, hint: Any, value: Any, key: str) -> Any:
        if hint is SinksConfig:
            return self._sinks(value, key)
        if hint == Points:
            return check_points(value, key, self.fail)
        if get_origin(hint) is dict:
            item = get_args(hint)[1]
            value = {} if value is None else value
            if not isinstance(value, dict):
                raise self.fail(key, "must be a section of name: {...} entries", value)
            return {
                check_name(name, f"{key}.{name}", self.fail): self.build(item, body, f"{key}.{name}.")
                for name, body in value.items()
            }
        if hint == Roi:
            try:
                return validate_roi(value)
            except InputError:
                raise self.fail(
                    key, "must be [left, top, width, height] inside the frame, normalized 0..1", value
                ) from None
        return MISSING

    def _sinks(self, data: Any, key: str) -> SinksConfig:
        from edgeseg.sinks import SINKS

        data = {} if data is None else data
        if not isinstance(data, dict):
            raise self.fail(key, "must be a section of key: value pairs", data)
        self.check_keys(data, SINKS, key + ".", {})
        return SinksConfig(
            {
                name: self.build(spec.config, data.get(name) or {}, f"{key}.{name}.")
                for name, spec in SINKS.items()
            }
        )

    def check(self, config: PipelineConfig) -> PipelineConfig:
        """Cross-field rules; paths resolved against the YAML folder (see the module docstring)."""
        src, model = config.source, config.model
        if "/" in config.name or "\0" in config.name:
            # the name is a file's (the saved tuning's): a '/' put it in a folder of its own in the state
            # directory, '../' outside it; a NUL is a ValueError from every call that takes a file name
            raise self.fail(
                "name",
                "must not contain '/' or NUL (it names the saved tuning's file, tuning-NAME.yaml)",
                config.name,
            )
        from edgeseg.sources import parse_uri

        uri = src.uri
        beside = self._path(uri.strip(), "source.uri")
        if beside != uri.strip() and os.path.exists(beside):
            # a file beside the pipeline named like a scheme (rec-10:00.mp4) is that file, as parse_uri takes
            # one in the current directory: it was an unknown scheme when run from another folder
            uri = beside
        try:
            # a path that exists as written is not percent-decoded: asked where a relative one lies
            parsed = parse_uri(uri, lambda p: os.path.exists(self._path(p, "source.uri")))
        except EdgesegError as e:
            raise self.fail("source.uri", str(e)) from None
        if parsed.scheme == "file":
            path = self._path(parsed.target, "source.uri")
            # a file: URI's relative path follows the file as a plain one does (file:clips/a.mp4 was the
            # current directory's); one left relative (--set) stays the URI: a plain 'cam:1.mp4' is a scheme
            if not uri.startswith("file:") or os.path.isabs(path) != os.path.isabs(parsed.target):
                uri = path
        network_option = parsed.options.get("network")
        if parsed.scheme == "picamera2" and network_option:
            # the .rpk a picamera2: URI names follows the file as source.imx500_network does
            network_path = self._path(network_option, "source.uri")
            if network_path != network_option:
                options = urlencode({**parsed.options, "network": network_path}, safe="/")
                uri = f"picamera2:{parsed.target}?{options}"
        if model.backend == "imx500" and not (
            parsed.scheme == "picamera2" and (src.imx500_network or parsed.options.get("network"))
        ):
            # each frame failed inference instead ("the frame carries no on-sensor output tensors"), the
            # whole of a video long, and the run ended 3 with all of them lost
            raise self.fail(
                "source.uri",
                "the imx500 backend takes its results from the AI Camera's sensor: needs a picamera2: source "
                "with a network (source.imx500_network or ?network=)",
                src.uri,
            )
        if (config.zones or config.lines) and not config.tracker.enabled:
            what = "zones" if config.zones else "lines"
            raise self.fail(what, "count tracks: needs tracker.enabled: true")
        network = src.imx500_network and self._path(src.imx500_network, "source.imx500_network")
        cache = model.engine_cache_dir and Path(
            self._path(str(model.engine_cache_dir), "model.engine_cache_dir")
        )
        state = config.pipeline.state_dir
        state = state and Path(self._path(str(state), "pipeline.state_dir"))
        return replace(
            config,
            pipeline=replace(config.pipeline, state_dir=state),
            source=replace(src, uri=uri, imx500_network=network),
            model=replace(
                model, path=Path(self._path(str(model.path), "model.path")), engine_cache_dir=cache
            ),
        )

    def _path(self, value: str, key: str) -> str:
        path = Path(value).expanduser()
        if path.is_absolute() or key in self.origins or not self.resolve:
            return str(path)
        return os.path.normpath(self.base / path)


# --- JSON Schema --------------------------------------------------------------------------------------


def _object_schema(cls: type[Any]) -> dict[str, Any]:
    hints = type_hints(cls)
    props: dict[str, Any] = {}
    required: list[str] = []
    for f in fields(cls):
        prop = _type_schema(hints[f.name], f.metadata)
        if f.metadata.get("doc"):
            prop["description"] = f.metadata["doc"]
        if f.default is not MISSING:
            prop["default"] = list(f.default) if isinstance(f.default, tuple) else f.default
        elif f.default_factory is MISSING and not is_dataclass(hints[f.name]) and cls is not PipelineConfig:
            required.append(f.name)
        props[f.name] = prop
    schema: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
    if cls.__doc__:
        schema["description"] = cls.__doc__.strip().splitlines()[0]
    if required:
        schema["required"] = required
    return schema


def _type_schema(hint: Any, meta: Mapping[str, Any]) -> dict[str, Any]:
    args = get_args(hint)
    if get_origin(hint) in (Union, types.UnionType):
        inner = _type_schema(next(a for a in args if a is not type(None)), meta)
        return {"anyOf": [inner, {"type": "null"}]}
    if hint is SemanticTuning:  # null: every key the card's (the loader reads a null section as empty)
        return {"anyOf": [_object_schema(hint), {"type": "null"}]}
    if is_dataclass(hint):
        return _object_schema(hint)  # type: ignore[arg-type]
    if hint == Points:
        return {
            "type": "array",
            "items": {
                "type": "array",
                "items": {"type": "number", "minimum": 0, "maximum": 1},
                "minItems": 2,
                "maxItems": 2,
            },
        }
    if get_origin(hint) is dict:
        return {
            "type": "object",
            "propertyNames": {"pattern": NAME_PATTERN},
            "additionalProperties": _object_schema(get_args(hint)[1]),
        }
    if hint is SinksConfig:
        from edgeseg.sinks import SINKS

        props = {name: {**_object_schema(s.config), "description": s.doc} for name, s in SINKS.items()}
        return {"type": "object", "properties": props, "additionalProperties": False}
    if args == (str, ...):
        return {"type": "array", "items": {"type": "string"}}
    if len(args) == 4:
        return {
            "type": "array",
            "items": {"type": "number", "minimum": 0, "maximum": 1},
            "minItems": 4,
            "maxItems": 4,
        }
    schema: dict[str, Any] = {
        "type": {bool: "boolean", int: "integer", float: "number", str: "string", Path: "string"}[hint]
    }
    for key, word in (("gt", "exclusiveMinimum"), ("ge", "minimum"), ("le", "maximum")):
        if meta.get(key) is not None:
            schema[word] = meta[key]
    choices = meta.get("choices")
    if choices is not None:
        schema["enum"] = list(choices() if callable(choices) else choices)
    if meta.get("pattern") is not None:
        schema["pattern"] = meta["pattern"]
    return schema
