"""Model cards: what a model expects as input, what it outputs and how to decode it.

A card is a small YAML file (schema below) found, for a model file ``<dir>/<stem>.onnx``, at

1. ``<dir>/<stem>.yaml`` beside the model,
2. ``models/cards/<stem>.yaml`` in the edgeseg source tree (cards for well-known third-party models),
3. else it is derived from the ONNX metadata that Ultralytics exports carry (``task``, ``names``, ``imgsz``).

Schema (``x_norm = (x - mean) / std`` with ``x`` in 0..255, per channel in the card's ``color`` order)::

    name: demo-parts
    file: demo-parts.onnx          # relative to the YAML; optional for cards found by the model's stem
    task: semantic                 # semantic | yolo-seg
    input: {name: image, width: 320, height: 240, layout: nchw, color: rgb, dtype: float32,
            resize: stretch, pad_value: 114, mean: [0, 0, 0], std: [255, 255, 255]}
    output: {name: logits, kind: logits, layout: nchw}  # logits | probabilities | sigmoid | class_map
    # yolo-seg instead: output: {name: output0, protos: output1}
    classes: [background, nut, washer, bolt]
    background: 0                  # semantic only
    semantic: {erosion_kernel: 3, ...}                                 # SemanticParams defaults
    yolo_seg: {score_threshold: 0.25, iou_threshold: 0.7, max_det: 300}  # yolo-seg defaults

Errors name the card and the key path: ``demo.yaml: input.layout: must be one of nchw, nhwc (got 'nhcw')``.
"""

from __future__ import annotations

import ast
import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, cast

from edgeseg.errors import InputError, ModelError
from edgeseg.semantic import SemanticParams
from edgeseg.yamlfile import read_yaml

Task = Literal["semantic", "yolo-seg"]
Layout = Literal["nchw", "nhwc"]
Color = Literal["rgb", "bgr"]
DType = Literal["float32", "float16", "uint8"]
Resize = Literal["stretch", "letterbox"]
OutputKind = Literal["logits", "probabilities", "sigmoid", "class_map"]

TASKS: tuple[str, ...] = ("semantic", "yolo-seg")
REPO_CARDS = Path(__file__).resolve().parents[1] / "models" / "cards"


@dataclass(frozen=True)
class InputSpec:
    """The model's one input tensor: ``(1, 3, height, width)`` (nchw) or ``(1, height, width, 3)`` (nhwc)."""

    name: str
    width: int
    height: int
    layout: Layout = "nchw"
    color: Color = "rgb"
    dtype: DType = "float32"
    resize: Resize = "stretch"
    pad_value: float = 114.0
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (255.0, 255.0, 255.0)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        if self.layout == "nchw":
            return (1, 3, self.height, self.width)
        return (1, self.height, self.width, 3)


@dataclass(frozen=True)
class OutputSpec:
    """The output tensor(s) the head reads.

    ``name`` is the semantic map (or, for yolo-seg, the ``[1, 4+nc+nm, A]`` detections); ``protos`` the
    yolo-seg ``[1, nm, h, w]`` prototypes. ``layout`` says where a semantic map's channel axis is.
    """

    name: str
    kind: OutputKind = "logits"
    layout: Layout = "nchw"
    protos: str | None = None

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name,) if self.protos is None else (self.name, self.protos)


@dataclass(frozen=True)
class YoloSegDefaults:
    score_threshold: float = 0.25
    iou_threshold: float = 0.7
    max_det: int = 300


@dataclass(frozen=True)
class ModelCard:
    """A validated model card; ``file`` is the resolved model path (``None`` for on-sensor networks)."""

    name: str
    task: Task
    input: InputSpec
    output: OutputSpec
    classes: tuple[str, ...]
    file: Path | None = None
    background: int = 0
    semantic: SemanticParams = field(default_factory=SemanticParams)
    yolo_seg: YoloSegDefaults = field(default_factory=YoloSegDefaults)
    source: str = ""  # where the card came from, for messages


# -- validation helpers -----------------------------------------------------------------------------


class _Reader:
    """Reads typed values out of a YAML mapping and reports errors with the card and key path."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, path: str, msg: str) -> ModelError:
        return ModelError(f"{self.source}: {path}: {msg}")

    def mapping(self, doc: Any, path: str, allowed: tuple[str, ...]) -> Mapping[str, Any]:
        if doc is None:
            return {}
        if not isinstance(doc, Mapping):
            raise self.fail(path or "<card>", f"must be a mapping, got {type(doc).__name__}")
        unknown = sorted(set(map(str, doc)) - set(allowed))
        if unknown:
            where = f"{path}.{unknown[0]}" if path else unknown[0]
            raise self.fail(where, f"unknown key (allowed: {', '.join(allowed)})")
        return doc

    def text(self, doc: Mapping[str, Any], key: str, path: str, default: str | None = None) -> str:
        value = doc.get(key, default)
        if not isinstance(value, str) or not value:
            raise self.fail(_join(path, key), f"must be a non-empty string (got {value!r})")
        return value

    def choice(
        self, doc: Mapping[str, Any], key: str, path: str, options: tuple[str, ...], default: str
    ) -> str:
        value = doc.get(key, default)
        if value not in options:
            raise self.fail(_join(path, key), f"must be one of {', '.join(options)} (got {value!r})")
        return str(value)

    def integer(
        self, doc: Mapping[str, Any], key: str, path: str, lo: int, default: int | None = None
    ) -> int:
        value = doc.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < lo:
            raise self.fail(_join(path, key), f"must be an integer >= {lo} (got {value!r})")
        return value

    def number(
        self, doc: Mapping[str, Any], key: str, path: str, lo: float, hi: float, default: float
    ) -> float:
        value = doc.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
            raise self.fail(_join(path, key), f"must be a number in [{lo}, {hi}] (got {value!r})")
        return float(value)

    def triple(
        self, doc: Mapping[str, Any], key: str, path: str, default: tuple[float, float, float], positive: bool
    ) -> tuple[float, float, float]:
        value = doc.get(key, default)
        ok = isinstance(value, (list, tuple)) and len(value) == 3
        ok = ok and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        if ok and positive:
            ok = all(v > 0 for v in value)
        if not ok:
            what = "3 positive numbers" if positive else "3 numbers"
            raise self.fail(_join(path, key), f"must be a list of {what} (got {value!r})")
        return (float(value[0]), float(value[1]), float(value[2]))


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


_TOP_KEYS = ("name", "file", "task", "input", "output", "classes", "background", "semantic", "yolo_seg")
_INPUT_KEYS = ("name", "width", "height", "layout", "color", "dtype", "resize", "pad_value", "mean", "std")
_OUTPUT_KEYS = ("name", "kind", "layout", "protos")


def parse_card(
    doc: Any, source: str, base_dir: Path | None = None, model_file: Path | None = None
) -> ModelCard:
    """Validate a card document (as loaded from YAML).

    ``base_dir`` resolves a relative ``file``; ``model_file``, when given, is the model the card was found
    for and wins over ``file``. Raises :class:`ModelError` naming ``source`` and the key path.
    """
    r = _Reader(source)
    if not isinstance(doc, Mapping):
        raise r.fail("<card>", f"must be a mapping, got {type(doc).__name__}")
    top = r.mapping(doc, "", _TOP_KEYS)
    task = r.choice(top, "task", "", TASKS, "")
    name = r.text(top, "name", "", default=(model_file.stem if model_file else None))

    inp = r.mapping(top.get("input"), "input", _INPUT_KEYS)
    if "input" not in top:
        raise r.fail("input", "is required")
    dtype = r.choice(inp, "dtype", "input", ("float32", "float16", "uint8"), "float32")
    default_std = (1.0, 1.0, 1.0) if dtype == "uint8" else (255.0, 255.0, 255.0)
    in_spec = InputSpec(
        name=r.text(inp, "name", "input"),
        width=r.integer(inp, "width", "input", 1),
        height=r.integer(inp, "height", "input", 1),
        layout=cast(Layout, r.choice(inp, "layout", "input", ("nchw", "nhwc"), "nchw")),
        color=cast(Color, r.choice(inp, "color", "input", ("rgb", "bgr"), "rgb")),
        dtype=cast(DType, dtype),
        resize=cast(Resize, r.choice(inp, "resize", "input", ("stretch", "letterbox"), "stretch")),
        pad_value=r.number(inp, "pad_value", "input", 0, 255, 114),
        mean=r.triple(inp, "mean", "input", (0.0, 0.0, 0.0), positive=False),
        std=r.triple(inp, "std", "input", default_std, positive=True),
    )
    if dtype == "uint8" and (in_spec.mean != (0.0, 0.0, 0.0) or in_spec.std != (1.0, 1.0, 1.0)):
        raise r.fail("input.mean", "a uint8 input takes raw pixels: mean must be [0,0,0] and std [1,1,1]")

    out = r.mapping(top.get("output"), "output", _OUTPUT_KEYS)
    if "output" not in top:
        raise r.fail("output", "is required")
    if task == "yolo-seg":
        out_spec = OutputSpec(
            name=r.text(out, "name", "output", "output0"),
            kind="logits",
            protos=r.text(out, "protos", "output", "output1"),
        )
    else:
        if "protos" in out:
            raise r.fail("output.protos", "only a yolo-seg model has prototypes")
        out_spec = OutputSpec(
            name=r.text(out, "name", "output"),
            kind=cast(
                OutputKind,
                r.choice(
                    out, "kind", "output", ("logits", "probabilities", "sigmoid", "class_map"), "logits"
                ),
            ),
            layout=cast(Layout, r.choice(out, "layout", "output", ("nchw", "nhwc"), in_spec.layout)),
        )

    classes_doc = top.get("classes")
    if (
        not isinstance(classes_doc, (list, tuple))
        or not classes_doc
        or not all(isinstance(c, str) and c for c in classes_doc)
    ):
        raise r.fail("classes", f"must be a non-empty list of class names (got {classes_doc!r})")
    classes = tuple(classes_doc)
    background = r.integer(top, "background", "", 0, 0)
    if task == "semantic":
        if background >= len(classes):
            raise r.fail("background", f"must index classes (0..{len(classes) - 1}), got {background}")
        if out_spec.kind == "sigmoid" and len(classes) != 2:
            raise r.fail(
                "classes", f"a sigmoid output has 2 classes (background, object), got {len(classes)}"
            )

    semantic = _semantic_params(r, top.get("semantic"))
    yd = r.mapping(top.get("yolo_seg"), "yolo_seg", ("score_threshold", "iou_threshold", "max_det"))
    yolo = YoloSegDefaults(
        score_threshold=r.number(yd, "score_threshold", "yolo_seg", 0, 1, 0.25),
        iou_threshold=r.number(yd, "iou_threshold", "yolo_seg", 0, 1, 0.7),
        max_det=r.integer(yd, "max_det", "yolo_seg", 1, 300),
    )

    file: Path | None = model_file
    if file is None and "file" in top:
        rel = Path(r.text(top, "file", ""))
        file = rel if rel.is_absolute() or base_dir is None else (base_dir / rel)
    return ModelCard(
        name=name,
        task=cast(Task, task),
        input=in_spec,
        output=out_spec,
        classes=classes,
        file=file,
        background=background,
        semantic=semantic,
        yolo_seg=yolo,
        source=source,
    )


def _semantic_params(r: _Reader, doc: Any) -> SemanticParams:
    if doc is None:
        return SemanticParams()
    if not isinstance(doc, Mapping):
        raise r.fail("semantic", f"must be a mapping, got {type(doc).__name__}")
    try:
        return SemanticParams(**{str(k): v for k, v in doc.items()})
    except TypeError as exc:  # unknown keyword
        raise r.fail("semantic", str(exc).replace("SemanticParams.__init__() ", "")) from None
    except InputError as exc:
        raise r.fail("semantic", str(exc)) from None


def load_card_file(path: str | Path, model_file: Path | None = None) -> ModelCard:
    """Read and validate a card YAML file."""
    p = Path(path)
    doc = read_yaml(p, "model card", ModelError)
    return parse_card(doc, str(p), p.parent, model_file)


def find_card(model_path: str | Path, cards_dir: Path = REPO_CARDS) -> ModelCard:
    """The card for a model file or a card YAML path (search order in the module docstring).

    Raises :class:`ModelError` when the model file is missing, or when no card exists and the ONNX file
    carries no Ultralytics metadata.
    """
    p = Path(model_path)
    if p.suffix.lower() in (".yaml", ".yml"):
        card = load_card_file(p)
        if card.file is None:
            card = replace(card, file=_locate_model(p.with_suffix(".onnx").name, p.parent))
        return card
    if p.is_dir():
        raise ModelError(f"model path {p} is a folder: give a model file (.onnx, .rpk) or a card .yaml")
    if not p.is_file():
        raise ModelError(f"model file not found: {p}")
    for candidate in (p.with_suffix(".yaml"), p.with_suffix(".yml"), cards_dir / f"{p.stem}.yaml"):
        if candidate.is_file():
            return load_card_file(candidate, model_file=p)
    return card_from_onnx_metadata(p)


def _locate_model(filename: str, card_dir: Path) -> Path | None:
    """A card without ``file`` (as in models/cards) names its model by its stem: look beside the card, then in
    the shared assets (``$EDGESEG_ASSETS/models``). ``None`` when neither has it (an on-sensor network needs
    no file; file backends report the missing file)."""
    assets = Path(os.environ.get("EDGESEG_ASSETS", REPO_CARDS.parents[2] / "shared" / "assets")) / "models"
    for folder in (card_dir, assets):
        if (folder / filename).is_file():
            return folder / filename
    return None


# -- ONNX metadata ----------------------------------------------------------------------------------


def card_from_onnx_metadata(path: Path) -> ModelCard:
    """A card for an Ultralytics segmentation export, from its ONNX ``metadata_props``.

    Ultralytics writes ``task: segment``, ``names`` (a Python dict literal), ``imgsz`` and ``stride``;
    its exports take RGB /255 NCHW float32 letterboxed with pad 114 on input ``images``.
    """
    meta, inputs = read_onnx_metadata(path)
    source = f"{path} (ONNX metadata)"
    if meta.get("task") != "segment":
        raise ModelError(
            f"no model card for {path}: put {path.stem}.yaml beside it (its ONNX metadata has no Ultralytics "
            f"'task: segment', got task={meta.get('task')!r})"
        )
    try:
        names = ast.literal_eval(meta["names"])
        imgsz = ast.literal_eval(meta["imgsz"])
        classes = [str(names[i]) for i in range(len(names))]
        height, width = (int(imgsz[0]), int(imgsz[1])) if isinstance(imgsz, (list, tuple)) else (imgsz, imgsz)
    except (KeyError, ValueError, SyntaxError, TypeError, IndexError) as exc:
        raise ModelError(f"{source}: unreadable Ultralytics 'names'/'imgsz': {exc}") from None
    doc = {
        "name": path.stem,
        "task": "yolo-seg",
        "input": {
            "name": inputs[0] if inputs else "images",
            "width": width,
            "height": height,
            "layout": "nchw",
            "color": "rgb",
            "dtype": "float32",
            "resize": "letterbox",
            "pad_value": 114,
            "mean": [0, 0, 0],
            "std": [255, 255, 255],
        },
        "output": {"name": "output0", "protos": "output1"},
        "classes": classes,
    }
    return parse_card(doc, source, model_file=path)


def read_onnx_metadata(path: Path) -> tuple[dict[str, str], list[str]]:
    """``metadata_props`` and graph input names of an ONNX file.

    Read through onnxruntime (a core dependency) rather than the ``onnx`` package; the session is made
    only when a model has no card, once at startup.
    """
    import onnxruntime as ort

    if not path.is_file():
        raise ModelError(f"cannot read model file {path}: no such file")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for every parse failure
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(
            f"model file {path} is not a valid ONNX model (corrupt or truncated): {first}"
        ) from None
    meta = dict(session.get_modelmeta().custom_metadata_map)
    return meta, [i.name for i in session.get_inputs()]


def file_sha256(path: Path) -> str:
    """The hex sha256 of a model file (engine cache keys, the MQTT ``info`` message), read in 1 MiB blocks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
