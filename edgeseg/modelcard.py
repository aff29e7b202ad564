"""Model cards: what a model expects as input, what it outputs and how to decode it.

A card is a small YAML file (schema below) found, for a model file ``<dir>/<stem>.onnx``, at

1. ``<dir>/<stem>.yaml`` beside the model,
2. ``models/cards/<stem>.yaml`` bundled with edgeseg (cards for well-known third-party models),
3. else it is derived from the ONNX metadata that Ultralytics exports carry (``task``, ``names``, ``imgsz``).

An IMX500 network package (``.rpk``) runs on the camera's sensor, not here: its card is looked up in 1. and 2.
whether or not the file is on this machine (a pipeline for the AI Camera loads on a machine without it), and
an ``.rpk`` without a card is an error (it has no ONNX metadata to derive one from).

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
    contact: 4                     # semantic only, optional: the class of pixels where parts touch
    # or, with a class_map output: output: {..., contact: touching}, a 0/1 map of where parts touch (the
    # pixels keep their class in the map)
    semantic: {erosion_kernel: 3, ...}                                 # SemanticParams defaults
    yolo_seg: {score_threshold: 0.25, iou_threshold: 0.7, max_det: 300}  # yolo-seg defaults

Left out of a card: ``input.std`` is [1, 1, 1] for a uint8 input, else [255, 255, 255]; ``output.layout`` is
the input's; a yolo-seg ``output.name``/``protos`` are ``output0``/``output1``; ``name`` is the stem of the
model file the card was found for.

Cards are checked by :class:`edgeseg.validate.Validator` against the fields' rules, like the pipeline YAML.
Errors name the card and the key path: ``demo.yaml: input.layout: must be one of nchw, nhwc (got 'nhcw')``.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from edgeseg import floatconv
from edgeseg.errors import ModelError
from edgeseg.fields import meta as _m
from edgeseg.semantic import CONTACT_PARAMS, TOUCHING_PARAMS, SemanticParams
from edgeseg.validate import FieldError, Validator
from edgeseg.yamlfile import read_yaml

Task = Literal["semantic", "yolo-seg"]
Layout = Literal["nchw", "nhwc"]
Color = Literal["rgb", "bgr"]
DType = Literal["float32", "float16", "uint8"]
Resize = Literal["stretch", "letterbox"]
OutputKind = Literal["logits", "probabilities", "sigmoid", "class_map"]

TASKS: tuple[str, ...] = ("semantic", "yolo-seg")
# package data: in a checkout edgeseg/models is a link to the top-level models/ (resolved: messages show that)
BUNDLED_CARDS = (Path(__file__).resolve().parent / "models").resolve() / "cards"


@dataclass(frozen=True)
class InputSpec:
    """The model's one input tensor: ``(1, 3, height, width)`` (nchw) or ``(1, height, width, 3)`` (nhwc)."""

    name: str = field(metadata=_m("Input tensor name.", pattern=r"\S"))
    width: int = field(metadata=_m("Input width (px).", ge=1))
    height: int = field(metadata=_m("Input height (px).", ge=1))
    layout: Layout = field(default="nchw", metadata=_m("Where the channel axis is."))
    color: Color = field(default="rgb", metadata=_m("Channel order."))
    dtype: DType = field(default="float32", metadata=_m("Tensor element type."))
    resize: Resize = field(default="stretch", metadata=_m("How a frame is fitted to the input."))
    pad_value: float = field(default=114.0, metadata=_m("Letterbox padding (0..255).", ge=0, le=255))
    mean: tuple[float, float, float] = field(default=(0.0, 0.0, 0.0), metadata=_m("Subtracted per channel."))
    std: tuple[float, float, float] = field(
        default=(255.0, 255.0, 255.0), metadata=_m("Divided by, per channel.", gt=0)
    )

    def __post_init__(self) -> None:
        if self.dtype == "uint8" and (self.mean != (0.0, 0.0, 0.0) or self.std != (1.0, 1.0, 1.0)):
            raise FieldError("mean", "a uint8 input takes raw pixels: mean must be [0,0,0] and std [1,1,1]")

    @property
    def shape(self) -> tuple[int, int, int, int]:
        if self.layout == "nchw":
            return (1, 3, self.height, self.width)
        return (1, self.height, self.width, 3)


@dataclass(frozen=True)
class OutputSpec:
    """The output tensor(s) the head reads.

    ``name`` is the semantic map (or, for yolo-seg, the ``[1, 4+nc+nm, A]`` detections); ``protos`` the
    yolo-seg ``[1, nm, h, w]`` prototypes; ``confidence`` a class map's per-pixel probability, same shape;
    ``contact`` a class map's contact map, same shape, 0/1: where a part touches another (the pixels keep
    their class). ``layout`` says where a semantic map's channel axis is.
    """

    name: str = field(metadata=_m("Output tensor name.", pattern=r"\S"))
    kind: OutputKind = field(default="logits", metadata=_m("What a semantic map holds."))
    layout: Layout = field(default="nchw", metadata=_m("Where a semantic map's channel axis is."))
    protos: str | None = field(default=None, metadata=_m("yolo-seg prototypes tensor name.", pattern=r"\S"))
    confidence: str | None = field(
        default=None,
        metadata=_m(
            "class_map: the tensor with each pixel's class probability (scores instances).", pattern=r"\S"
        ),
    )
    contact: str | None = field(
        default=None,
        metadata=_m(
            "class_map: the tensor marking where parts touch (0/1; splits instances).", pattern=r"\S"
        ),
    )

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *(n for n in (self.protos, self.confidence, self.contact) if n is not None))


@dataclass(frozen=True)
class YoloSegDefaults:
    score_threshold: float = field(default=0.25, metadata=_m("Detection score threshold.", ge=0, le=1))
    iou_threshold: float = field(default=0.7, metadata=_m("NMS IoU threshold.", ge=0, le=1))
    max_det: int = field(default=300, metadata=_m("Most detections kept.", ge=1))


@dataclass(frozen=True)
class ModelCard:
    """A validated model card; ``file`` is the resolved model path (``None`` for on-sensor networks)."""

    name: str = field(metadata=_m("Model name.", pattern=r"\S"))
    task: Task = field(metadata=_m("semantic | yolo-seg."))
    input: InputSpec = field(metadata=_m("The input tensor."))
    output: OutputSpec = field(metadata=_m("The output tensor(s)."))
    classes: tuple[str, ...] = field(metadata=_m("Class names, by class id.", ge=1))
    file: Path | None = field(default=None, metadata=_m("Model file, relative to the card."))
    background: int = field(default=0, metadata=_m("Background class id (semantic).", ge=0))
    contact: int | None = field(
        default=None,
        metadata=_m("Class id of the pixels where parts touch, if the model draws them (semantic).", ge=0),
    )
    semantic: SemanticParams = field(default_factory=SemanticParams)
    yolo_seg: YoloSegDefaults = field(default_factory=YoloSegDefaults)
    source: str = ""  # where the card came from, for messages; not a key of the card

    @property
    def never_instances(self) -> frozenset[int]:
        """The class ids no instance has: a semantic model's background and contact classes."""
        if self.task != "semantic":
            return frozenset()
        return frozenset(c for c in (self.background, self.contact) if c is not None)

    @property
    def split_params(self) -> tuple[str, ...] | None:
        """The semantic parameters that still apply when the model draws where parts touch (a contact class
        or map: nothing is split by distance reliefs); None when all do."""
        if self.contact is not None:
            return CONTACT_PARAMS
        if self.output.contact is not None:
            return TOUCHING_PARAMS
        return None

    def __post_init__(self) -> None:
        n = len(self.classes)
        if self.task == "semantic" and self.background >= n:
            raise FieldError("background", f"must index classes (0..{n - 1})", self.background)
        if self.contact is not None and (self.task != "semantic" or self.output.kind == "sigmoid"):
            raise FieldError("contact", "only a semantic model with a class per channel or id has one")
        if self.contact is not None and not (self.contact < n and self.contact != self.background):
            raise FieldError(
                "contact", f"must index classes (0..{n - 1}) other than the background", self.contact
            )
        if self.task == "semantic" and self.output.kind == "sigmoid" and n != 2:
            raise FieldError("classes", "a sigmoid output has 2 classes (background, object)", self.classes)
        if self.task != "yolo-seg" and self.output.protos is not None:
            raise FieldError("output.protos", "only a yolo-seg model has prototypes", self.output.protos)
        if self.task == "yolo-seg" and self.output.protos is None:
            raise FieldError("output.protos", "required (a yolo-seg model has prototypes)")
        if self.output.contact is not None and (self.output.kind != "class_map" or self.contact is not None):
            raise FieldError(
                "output.contact",
                "only a class_map output has a contact map, and not beside a contact class",
                self.output.contact,
            )
        if self.output.confidence is not None and self.output.kind != "class_map":
            raise FieldError(
                "output.confidence",
                "only a class_map output has a separate confidence",
                self.output.confidence,
            )


class _CardValidator(Validator):
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, message: str, value: Any = MISSING) -> ModelError:
        return ModelError(f"{self.source}: {FieldError(key, message, value).text()}")

    def check_keys(
        self, data: Mapping[Any, Any], known: Mapping[str, Any], prefix: str, secrets: Mapping[str, str]
    ) -> None:
        if not prefix:  # ModelCard.source is set by the loader, not by the card
            known = {k: f for k, f in known.items() if k != "source"}
        super().check_keys(data, known, prefix, secrets)


def _with_defaults(doc: Any, model_file: Path | None) -> Any:
    """The card document with the defaults that depend on other keys filled in (see the module docstring)."""
    if not isinstance(doc, Mapping):
        return doc  # the validator reports it
    top = dict(doc)
    if model_file is not None:
        top.setdefault("name", model_file.stem)
    inp, out = top.get("input"), top.get("output")
    inp = inp if isinstance(inp, Mapping) else {}
    if inp.get("dtype") == "uint8" and "std" not in inp:
        top["input"] = {**inp, "std": [1, 1, 1]}
    if isinstance(out, Mapping):
        out = dict(out)
        if "layout" in inp:
            out.setdefault("layout", inp["layout"])
        if top.get("task") == "yolo-seg":
            out.setdefault("name", "output0")
            out.setdefault("protos", "output1")
        top["output"] = out
    return top


def parse_card(
    doc: Any, source: str, base_dir: Path | None = None, model_file: Path | None = None
) -> ModelCard:
    """Validate a card document (as loaded from YAML).

    ``base_dir`` resolves a relative ``file``; ``model_file``, when given, is the model the card was found
    for and wins over ``file``. Raises :class:`ModelError` naming ``source`` and the key path.
    """
    card = _CardValidator(source).build(ModelCard, _with_defaults(doc, model_file))
    file = model_file
    if file is None and card.file is not None:
        file = card.file if base_dir is None else base_dir / card.file  # an absolute card.file stays
    return replace(card, file=file, source=source)


def load_card_file(path: str | Path, model_file: Path | None = None) -> ModelCard:
    """Read and validate a card YAML file."""
    p = Path(path)
    doc = read_yaml(p, "model card", ModelError)
    return parse_card(doc, str(p), p.parent, model_file)


def find_card(model_path: str | Path, cards_dir: Path = BUNDLED_CARDS) -> ModelCard:
    """The card for a model file or a card YAML path (search order in the module docstring).

    Raises :class:`ModelError` when the model file is missing, or when no card exists and the ONNX file
    carries no Ultralytics metadata.
    """
    p = Path(model_path)
    try:
        p.exists()  # (raises for a name the file system cannot hold, where is_dir below would)
    except OSError as exc:  # a name longer than the file system takes: "File name too long", a traceback
        raise ModelError(f"model path {p}: {exc.strerror or exc}") from None
    if p.suffix.lower() in (".yaml", ".yml"):
        card = load_card_file(p)
        if card.file is None:
            card = replace(card, file=_locate_model(p.with_suffix(".onnx").name, p.parent))
        return card
    if p.is_dir():
        raise ModelError(f"model path {p} is a folder: give a model file (.onnx, .rpk) or a card .yaml")
    on_sensor = p.suffix.lower() == ".rpk"
    if not on_sensor and not p.is_file():
        raise ModelError(f"model file not found: {p}")
    for candidate in (p.with_suffix(".yaml"), p.with_suffix(".yml"), cards_dir / f"{p.stem}.yaml"):
        if os.path.isfile(candidate):  # (not Path.is_file: a longer suffix can make a name too long)
            return load_card_file(candidate, model_file=p)
    if on_sensor:
        raise ModelError(
            f"no model card for the IMX500 network {p}: put {p.stem}.yaml beside it or in {cards_dir} "
            "(input size, output kind and classes; see models/cards/imx500_network_deeplabv3plus.yaml)"
        )
    return card_from_onnx_metadata(p)


def _locate_model(filename: str, card_dir: Path) -> Path | None:
    """A card without ``file`` (as in models/cards) names its model by its stem: look beside the card, then in
    the shared assets (``$EDGESEG_ASSETS/models``). ``None`` when neither has it (an on-sensor network needs
    no file; file backends report the missing file)."""
    checkout = Path(__file__).resolve().parents[1]
    assets = Path(os.environ.get("EDGESEG_ASSETS", checkout.parent / "shared" / "assets")) / "models"
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
        if not isinstance(names, (dict, list, tuple)):  # a string's characters are no class names
            raise TypeError(f"names must be a dict or list (got {type(names).__name__})")
        classes = [str(names[i]) for i in range(len(names))]
        height, width = (int(imgsz[0]), int(imgsz[1])) if isinstance(imgsz, (list, tuple)) else (imgsz, imgsz)
    # the text is the file's: an imgsz of 1e400 is inf to int(), and an expression nested thousands deep
    # ("-" * 100000 + "1") exhausts the parser's recursion or memory limit
    except (KeyError, ValueError, SyntaxError, TypeError, IndexError, OverflowError, RecursionError,
            MemoryError) as exc:  # fmt: skip
        raise ModelError(
            f"{source}: unreadable Ultralytics 'names'/'imgsz': {str(exc) or type(exc).__name__}"
        ) from None
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
    # one thread, named: left at 0, onnxruntime makes a pool of one thread a core and pins each, which the
    # service's SystemCallFilter= (~@resources: sched_setaffinity) refuses with an error line in the journal
    options.intra_op_num_threads = 1
    cpu = ["CPUExecutionProvider"]
    try:
        try:
            session = ort.InferenceSession(str(path), options, providers=cpu)
        except ort.capi.onnxruntime_pybind11_state.NotImplemented:
            # int8 ConvInteger has a kernel from onnxruntime 1.24 (microsoft/onnxruntime#26585), the last
            # release for Python 3.10 being 1.23: the backends run such a model with its convolutions made
            # float, and so is it read here (the metadata and inputs pass through unchanged)
            model, count = floatconv.float_convs_of(path)
            if not count:
                raise
            session = ort.InferenceSession(model, options, providers=cpu)
    except Exception as exc:  # onnxruntime raises its own exception types for every parse failure
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, ort.capi.onnxruntime_pybind11_state.NotImplemented):
            # a valid model with an operator (or a type of one) this release has no kernel for
            raise ModelError(
                f"model file {path}: onnxruntime {ort.__version__} cannot run one of its operators "
                f"(a newer onnxruntime may): {first}"
            ) from None
        raise ModelError(
            f"model file {path} is not a valid ONNX model (corrupt or truncated): {first}"
        ) from None
    meta = dict(session.get_modelmeta().custom_metadata_map)
    return meta, [i.name for i in session.get_inputs()]


def file_sha256(path: Path) -> str:
    """The hex sha256 of a model file (engine cache keys, the MQTT ``info`` message), read in 1 MiB blocks."""
    # imported here: hashlib loads OpenSSL's libcrypto, 3.6 MB of resident memory, which a run that hashes
    # nothing (no MQTT, no TensorRT engine) need not carry
    import hashlib

    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _size(dim: object) -> int | None:
    """A dimension's size, None where it is dynamic (onnxruntime gives its name or None, TensorRT -1)."""
    return dim if isinstance(dim, int) and dim >= 0 else None


def check_yolo_seg_outputs(
    card: ModelCard, det: Sequence[object] | None, protos: Sequence[object] | None, model: str
) -> None:
    """Raise ModelError (``{model}: output 'output0' has shape …, expected …``) unless outputs of these
    shapes decode: ``[1, 4 + nc + nm, A]`` and prototypes ``[1, nm, h, w]``, with nm, h and w at least 1.
    A dynamic dimension fits any size, a shape of None (its rank unknown too) any shape: the backends check
    a model's declared shapes at load (a detection model, or a card whose classes are not the model's,
    failed every frame), the head each frame's tensors."""
    p = None if protos is None else [_size(d) for d in protos]
    if p is not None and (len(p) != 4 or p[0] not in (1, None) or 0 in p[1:]):
        # (h or w 0 failed in the mask crop with "index -1 is out of bounds"; nm 0 made every mask empty)
        raise ModelError(
            f"{model}: output {str(card.output.protos)!r} has shape {protos}, expected [1, nm, h, w] "
            "(nm, h, w >= 1)"
        )
    if det is None:
        return
    nc, nm = len(card.classes), None if p is None else p[1]
    d = [_size(x) for x in det]
    rows = d[1] if len(d) == 3 else None
    if nm is None:
        rows_fit = rows is None or rows > 4 + nc
        expected = f"[1, 4 + {nc} + nm, A] (4 box + {nc} classes + nm >= 1 mask coefficients)"
    else:
        rows_fit = rows is None or rows == 4 + nc + nm
        expected = f"[1, {4 + nc + nm}, A] (4 box + {nc} classes + {nm} mask coefficients)"
    if len(d) != 3 or d[0] not in (1, None) or not rows_fit:
        raise ModelError(f"{model}: output {card.output.name!r} has shape {det}, expected {expected}")
