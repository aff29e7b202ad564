"""Typed pipeline configuration: a YAML file, then ``EDGESEG__…`` environment variables, then ``--set``.

Defaults, value ranges and descriptions live in one place: the dataclass fields below. The loader validates
against them and :func:`config_json_schema` turns them into a JSON Schema (``pipelines/schema.json``, for
editor completion), so the two cannot drift apart.

Every error is one :class:`~edgeseg.errors.ConfigError` line that starts with the key path and names what
is allowed, e.g. ``sinks.jsonl.mask_format: must be one of rle, polygon, none (got 'bmp')``; an override's
origin is added in brackets. Unknown keys are errors (with a "did you mean").

Paths: relative paths written in the YAML file (``model.path``, ``model.engine_cache_dir``,
``source.imx500_network``, a file ``source.uri``) are relative to the YAML file's folder; relative paths
given by ``--set`` or the environment are relative to the current directory. Output paths (``sinks.*.path``)
are kept as written (relative to the directory the pipeline runs in).
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
import types
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from edgeseg.errors import ConfigError, EdgesegError, InputError
from edgeseg.fields import meta as _m
from edgeseg.geometry import validate_roi
from edgeseg.semantic import SemanticParams
from edgeseg.sources.spec import SourceConfig as SourceConfig  # re-exported for callers of edgeseg.config
from edgeseg.yamlfile import read_yaml

PIPELINES_DIR = Path(__file__).resolve().parents[1] / "pipelines"
DEFAULT_PIPELINE = PIPELINES_DIR / "demo.yaml"
ENV_PREFIX = "EDGESEG__"
S = TypeVar("S")


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
    threads: int = field(default=0, metadata=_m("Intra-op threads (0: runtime default).", ge=0))
    fp16: bool = field(default=False, metadata=_m("TensorRT: build FP16 engines."))
    engine_cache_dir: Path | None = field(
        default=None, metadata=_m("TensorRT engine cache (null: state dir).")
    )


@dataclass(frozen=True)
class PostprocessConfig:
    """Decoding and post-processing of the raw outputs."""

    score_threshold: float | None = field(
        default=None, metadata=_m("Min score (null: model card).", ge=0, le=1)
    )
    iou_threshold: float = field(default=0.7, metadata=_m("NMS IoU threshold (yolo-seg).", gt=0, le=1))
    max_det: int = field(default=300, metadata=_m("Most instances per frame.", ge=1))
    semantic: SemanticParams | None = field(
        default=None, metadata=_m("Semantic -> instances (null: model card).")
    )
    polygon_tolerance: float = field(default=1.0, metadata=_m("Polygon simplification in pixels.", ge=0))


@dataclass(frozen=True)
class RuntimeConfig:
    """The threaded pipeline itself."""

    queue_size: int = field(default=2, metadata=_m("Frames buffered between stages.", ge=1))
    max_frames: int | None = field(
        default=None, metadata=_m("Stop after this many frames (null: no limit).", ge=1)
    )
    stats_interval_s: float = field(default=5.0, metadata=_m("Seconds between stats reports.", gt=0))
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
            path, keys are lower-cased); ``None`` = ``os.environ``.

    Raises:
        ConfigError: one line starting with the key path (or the file) and naming the allowed values, and
            where the key came from in brackets (the file, ``--set``, ``--source``, ``env EDGESEG__...``).
    """
    file = Path(path) if path is not None else DEFAULT_PIPELINE
    raw = read_yaml(file, "pipeline file", ConfigError)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{file}: must be a mapping of sections (got {type(raw).__name__})")
    origins: dict[str, str] = {}
    environ = os.environ if env is None else env
    for name in sorted(environ):
        if name.startswith(ENV_PREFIX) and len(name) > len(ENV_PREFIX):
            key = ".".join(part.lower() for part in name[len(ENV_PREFIX) :].split("__"))
            _set(raw, key, _parse_value(environ[name]), f"env {name}", origins)
    for item in overrides:
        override = item if isinstance(item, Override) else Override(item)
        key, sep, value = override.text.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f"{override.origin} {override.text!r}: expected key.path=value (e.g. source.uri=v4l2:0)"
            )
        _set(raw, key.strip(), _parse_value(value), override.origin, origins)
    raw.setdefault("name", file.stem)
    shown = _shown(file)
    loader = _Loader(file.resolve().parent, origins, shown)
    return loader.check(loader.build(PipelineConfig, raw, ""))


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


def _parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _set(raw: dict[str, Any], key: str, value: Any, origin: str, origins: dict[str, str]) -> None:
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


def _describe(value: Any) -> str:
    return repr(value) if isinstance(value, str) else json.dumps(value, default=str)


class _Loader:
    def __init__(self, base: Path, origins: Mapping[str, str], file: str = "") -> None:
        self.base = base
        self.origins = origins
        self.file = file

    def fail(self, key: str, message: str, value: Any = MISSING) -> ConfigError:
        got = "" if value is MISSING else f" (got {_describe(value)})"
        # an override names its key or a key below it; an unknown section is named by the override inside it
        origin = next(
            (
                o
                for k, o in self.origins.items()
                if key == k or key.startswith(k + ".") or k.startswith(key + ".")
            ),
            self.file,
        )
        return ConfigError(f"{key}: {message}{got}" + (f" [{origin}]" if origin else ""))

    def build(self, cls: type[Any], data: Any, prefix: str) -> Any:
        if not isinstance(data, dict):
            raise self.fail(
                prefix.rstrip(".") or "(top level)", "must be a section of key: value pairs", data
            )
        known = {f.name: f for f in fields(cls)}
        self._check_keys(data, known, prefix, getattr(cls, "__secrets__", {}))
        if cls is SemanticParams:
            return self._semantic(data, prefix)
        hints = get_type_hints(cls)
        values: dict[str, Any] = {}
        for name, f in known.items():
            key = f"{prefix}{name}"
            if name in data:
                values[name] = self.convert(hints[name], data[name], key, f.metadata)
            elif f.default is MISSING and f.default_factory is MISSING:
                if not is_dataclass(hints[name]):
                    raise self.fail(key, f"required ({f.metadata.get('doc', '')})")
                values[name] = self.build(hints[name], {}, key + ".")
        return cls(**values)

    def _check_keys(
        self, data: Mapping[Any, Any], known: Mapping[str, Any], prefix: str, secrets: Mapping[str, str]
    ) -> None:
        for key in data:
            if key in secrets:
                # the value itself is never echoed: it may be a password
                raise self.fail(f"{prefix}{key}", secrets[key])
            if key not in known:
                close = difflib.get_close_matches(str(key), known, n=1)
                hint = f"did you mean {close[0]}? " if close else ""
                raise self.fail(f"{prefix}{key}", f"unknown key; {hint}(allowed: {', '.join(known)})")

    def _sinks(self, data: Any, key: str) -> SinksConfig:
        from edgeseg.sinks import SINKS

        data = {} if data is None else data
        if not isinstance(data, dict):
            raise self.fail(key, "must be a section of key: value pairs", data)
        self._check_keys(data, SINKS, key + ".", {})
        return SinksConfig(
            {
                name: self.build(spec.config, data.get(name) or {}, f"{key}.{name}.")
                for name, spec in SINKS.items()
            }
        )

    def convert(self, hint: Any, value: Any, key: str, meta: Mapping[str, Any]) -> Any:
        if hint is SinksConfig:
            return self._sinks(value, key)
        args = get_args(hint)
        if get_origin(hint) in (Union, types.UnionType):
            if value is None:
                return None
            hint = next(a for a in args if a is not type(None))
            args = get_args(hint)
        if is_dataclass(hint):
            return self.build(hint, value if value is not None else {}, key + ".")  # type: ignore[arg-type]
        if hint is bool:
            if not isinstance(value, bool):
                raise self.fail(key, "must be true or false", value)
            return value
        if hint is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise self.fail(key, "must be an integer", value)
        elif hint is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise self.fail(key, "must be a number", value)
            self._constrain(key, value, meta)
            return float(value)
        elif hint in (str, Path):
            if not isinstance(value, str):
                raise self.fail(key, "must be a string", value)
            if hint is Path and not value.strip():
                raise self.fail(key, "must be a path", value)
        elif args == (str, ...):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise self.fail(key, "must be a list of strings", value)
            return tuple(value)
        elif len(args) == 4:  # Roi
            try:
                return validate_roi(value)
            except InputError:
                raise self.fail(
                    key, "must be [left, top, width, height] inside the frame, normalized 0..1", value
                ) from None
        self._constrain(key, value, meta)
        return Path(value) if hint is Path else value

    def _constrain(self, key: str, value: Any, meta: Mapping[str, Any]) -> None:
        gt, ge, le = meta.get("gt"), meta.get("ge"), meta.get("le")
        if isinstance(value, (int, float)):
            if ge is not None and le is not None and not ge <= value <= le:
                raise self.fail(key, f"must be in [{ge:g}, {le:g}]", value)
            if gt is not None and le is not None and not gt < value <= le:
                raise self.fail(key, f"must be in ({gt:g}, {le:g}]", value)
            if gt is not None and not value > gt:
                raise self.fail(key, f"must be > {gt:g}", value)
            if ge is not None and not value >= ge:
                raise self.fail(key, f"must be >= {ge:g}", value)
        choices = meta.get("choices")
        if callable(choices):
            choices = choices()
        if choices is not None and value not in choices:
            raise self.fail(key, f"must be one of {', '.join(choices)}", value)
        pattern = meta.get("pattern")
        if pattern is not None and isinstance(value, str) and not re.search(pattern, value):
            raise self.fail(key, "must not be empty" if pattern == r"\S" else f"must match {pattern}", value)

    def _semantic(self, data: dict[str, Any], prefix: str) -> SemanticParams:
        try:
            return SemanticParams(**data)
        except (InputError, TypeError) as e:
            # SemanticParams validates itself ("SemanticParams.<field>: …"); keep its words, add our key path.
            message = str(e)
            if message.startswith("SemanticParams."):
                key, _, rest = message[len("SemanticParams.") :].partition(": ")
                raise self.fail(f"{prefix}{key}", rest) from None
            raise self.fail(prefix.rstrip("."), message) from None

    def check(self, config: PipelineConfig) -> PipelineConfig:
        """Cross-field rules; paths resolved against the YAML folder (see the module docstring)."""
        src, model = config.source, config.model
        if (src.width is None) != (src.height is None):
            missing, given = ("height", "width") if src.height is None else ("width", "height")
            raise self.fail(
                f"source.{missing}", f"required when source.{given} is set (give both or neither)"
            )
        if src.reconnect_max_s < src.reconnect_initial_s:
            raise self.fail(
                "source.reconnect_max_s", f"must be >= reconnect_initial_s ({src.reconnect_initial_s:g})"
            )
        from edgeseg.sources import parse_uri

        try:
            parsed = parse_uri(src.uri)
        except EdgesegError as e:
            raise self.fail("source.uri", str(e)) from None
        uri = src.uri
        if parsed.scheme == "file" and not uri.startswith("file:"):
            uri = self._path(uri, "source.uri")
        network = src.imx500_network and self._path(src.imx500_network, "source.imx500_network")
        cache = model.engine_cache_dir and Path(
            self._path(str(model.engine_cache_dir), "model.engine_cache_dir")
        )
        return replace(
            config,
            source=replace(src, uri=uri, imx500_network=network),
            model=replace(
                model, path=Path(self._path(str(model.path), "model.path")), engine_cache_dir=cache
            ),
        )

    def _path(self, value: str, key: str) -> str:
        path = Path(value).expanduser()
        if path.is_absolute() or key in self.origins:
            return str(path)
        return os.path.normpath(self.base / path)


# --- JSON Schema --------------------------------------------------------------------------------------


def _object_schema(cls: type[Any]) -> dict[str, Any]:
    hints = get_type_hints(cls)
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
    if cls.__doc__ and cls is not SemanticParams:
        schema["description"] = cls.__doc__.strip().splitlines()[0]
    if required:
        schema["required"] = required
    return schema


def _type_schema(hint: Any, meta: Mapping[str, Any]) -> dict[str, Any]:
    args = get_args(hint)
    if get_origin(hint) in (Union, types.UnionType):
        inner = _type_schema(next(a for a in args if a is not type(None)), meta)
        return {"anyOf": [inner, {"type": "null"}]}
    if is_dataclass(hint):
        return _object_schema(hint)  # type: ignore[arg-type]
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
