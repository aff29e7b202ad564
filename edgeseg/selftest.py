"""``edgeseg selftest [PIPELINE]``: does this device's inference path give the right answers?

For a pipeline whose model runs here (``onnxruntime``, ``tensorrt``): the configured backend is loaded (on a
Jetson the TensorRT engine is built or loaded from the cache), run on ``--frames`` synthetic frames, and
compared with onnxruntime on the CPU on the same input tensors: the largest output difference relative to the
output's range, and PQ and mean mask IoU of the decoded instances. For an ``imx500`` pipeline (AI Camera): the
network is uploaded (its progress shown), ``--frames`` frames with on-sensor results are captured, and each
frame's outputs are decoded as the card says (the head's checks of the output kind's shape, the classes, the
values) and each frame's network crop checked against the image's ScalerCrop.

One report, ending ``PASS`` or ``FAIL`` (exit status 1).
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeseg.backends import Backend, InferenceOptions, create_backend
from edgeseg.config import PipelineConfig
from edgeseg.errors import InputError, ModelError, SourceGoneError
from edgeseg.evaluate import PQAccumulator
from edgeseg.frame import Frame
from edgeseg.instances import Instances
from edgeseg.metrics import above, iou_pairs, match_pairs
from edgeseg.model import Model, inference_options

DEFAULT_FRAMES = 20
RELATIVE_TOLERANCE = {False: 1e-3, True: 2e-2}  # of the output's range, by fp16
CLASS_MAP_TOLERANCE = 0.01  # share of a class map's pixels whose class may differ (near-ties)
MIN_QUALITY = 0.9  # PQ and mean mask IoU of the decoded instances against onnxruntime's
ROI_TOLERANCE = 2e-3  # normalized: a few pixels of integer rounding in picamera2's crops
BackendFactory = Callable[[Any, InferenceOptions], Backend]


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def add(self, line: str, ok: bool = True) -> None:
        self.lines.append(line if ok else f"{line}  <- FAIL")
        if not ok:
            self.failures.append(line)

    @property
    def passed(self) -> bool:
        return not self.failures

    def text(self) -> str:
        return "\n".join([*self.lines, "PASS" if self.passed else "FAIL"])


def synthetic_frames(n: int, width: int = 640, height: int = 480) -> Iterator[Frame]:
    from edgeseg.synthetic import PartsScene

    scene = PartsScene(width, height, seed=7)
    for i in range(n):
        yield Frame(i, scene.frame(i * 5).image, time.monotonic_ns(), time.time())


def check_backend(
    config: PipelineConfig, frames: int, backend_factory: BackendFactory = create_backend
) -> Report:
    """The configured backend against onnxruntime on the CPU, on the same preprocessed frames."""
    options = inference_options(config)
    started = time.monotonic()
    model = Model.load(config.model.path, InferenceOptions())  # the CPU reference
    candidate = backend_factory(model.card, options)
    load_s = time.monotonic() - started
    report = Report()
    try:
        report.add(
            f"model {model.card.name} ({config.model.path}): {candidate.description} "
            f"against {model.backend.description}, loaded in {load_s:.1f} s"
        )
        diff, scale = dict.fromkeys(model.card.output.names, 0.0), dict.fromkeys(model.card.output.names, 0.0)
        # a class map is compared by the pixels whose class differs (a near-tie may flip in reduced precision)
        ids = model.card.output.name if model.card.output.kind == "class_map" else None
        differ = total = 0
        times: list[float] = []
        pairs: list[tuple[Instances, Instances]] = []
        for frame in synthetic_frames(frames):
            prepared = model.preprocess(frame)
            t0 = time.perf_counter()
            got = candidate.run(prepared)
            times.append(time.perf_counter() - t0)
            want = model.infer(prepared)
            for name in diff:
                a, b = np.asarray(got[name], np.float64), np.asarray(want[name], np.float64)
                if a.shape != b.shape:
                    report.add(f"output {name}: shape {a.shape}, onnxruntime gives {b.shape}", ok=False)
                    return report
                if name == ids:
                    differ, total = differ + int(np.count_nonzero(a != b)), total + b.size
                    continue
                diff[name] = max(diff[name], float(np.max(np.abs(a - b))))
                scale[name] = max(scale[name], float(np.max(b) - np.min(b)))
            pairs.append((model.decode(got, prepared), model.decode(want, prepared)))
        tolerance = RELATIVE_TOLERANCE[options.fp16]
        for name in diff:
            if name == ids:
                share = differ / max(total, 1)
                report.add(
                    f"output {name}: {share:.2%} of pixels differ ({differ} of {total}; tolerance "
                    f"{CLASS_MAP_TOLERANCE:.0%})",
                    ok=share <= CLASS_MAP_TOLERANCE,
                )
                continue
            relative = diff[name] / max(scale[name], 1e-12)
            report.add(
                f"output {name}: max |diff| {diff[name]:.3g} = {relative:.2e} of its range {scale[name]:.3g} "
                f"(tolerance {tolerance:g})",
                ok=relative <= tolerance,
            )
        _compare_instances(report, pairs)
        ms = np.array(times) * 1000
        report.add(
            f"{len(times)} frames: inference {np.median(ms):.2f} ms median, {np.max(ms):.2f} ms max "
            f"({candidate.description})"
        )
    finally:
        candidate.close()
        model.close()
    return report


def _compare_instances(report: Report, pairs: list[tuple[Instances, Instances]]) -> None:
    """PQ over all frames averaged over the classes, as ``edgeseg eval`` and panopticapi have it (pooled, a
    class the backend lost entirely hid behind the others), and the mean IoU of the matched pairs."""
    acc = PQAccumulator()
    ious: list[float] = []
    for got, want in pairs:
        overlaps = iou_pairs(got, want, acc.iou_threshold)
        acc.add(got, want, overlaps)
        ious += match_pairs(above(overlaps, acc.iou_threshold), len(got), len(want)).iou.tolist()
    pq = acc.result()
    assert pq is not None  # run() checks for a frame at least
    mean_iou = sum(ious) / len(ious) if ious else float(not pq.fp + pq.fn)
    report.add(
        f"instances: PQ {pq.pq:.3f} (class mean), mean mask IoU {mean_iou:.3f} against onnxruntime's "
        f"({pq.tp} matched, {pq.fp} extra, {pq.fn} missed; minimum {MIN_QUALITY:g})",
        ok=pq.pq >= MIN_QUALITY and mean_iou >= MIN_QUALITY,
    )


def check_imx500(
    config: PipelineConfig,
    frames: int,
    modules: Callable[[bool], Any] | None = None,
    timeout_s: float | None = None,
) -> Report:
    """Upload the network, capture frames with on-sensor results, check their shapes and network crops.
    ``timeout_s``: how long the upload may take, the source's own limit (``UPLOAD_TIMEOUT_S``) by default."""
    from edgeseg.sources import parse_uri

    # (here, not at the top: every command loads this module, and picamera2's source brings subprocess)
    from edgeseg.sources.picamera2 import UPLOAD_TIMEOUT_S, Picamera2Source

    timeout_s = UPLOAD_TIMEOUT_S if timeout_s is None else timeout_s

    model = Model.load(config.model.path, inference_options(config))
    source = Picamera2Source.from_uri(parse_uri(config.source.uri), config.source)
    if modules is not None:
        source._modules_factory = modules
    report = Report()
    states: list[str] = []
    done = threading.Event()

    def watch() -> None:
        """The upload holds read() for minutes: show its progress as it goes, and end it at the deadline (the
        source holds back every frame until a result comes, so a network that never gives one would hold
        read() for ever; closed, read() returns None)."""
        while True:
            state = source.stats.state
            if state not in states:
                states.append(state)
                print(f"  {state}", flush=True)
            left = started + timeout_s - time.monotonic()
            if left <= 0:
                source.close()
                return
            if done.wait(min(1.0, left)):
                return

    started = time.monotonic()
    watcher = threading.Thread(target=watch, name="edgeseg-selftest-upload", daemon=True)
    gone: str | None = None
    try:
        source.open()
        watcher.start()
        got = _first_frames(source, frames, started + timeout_s)
    except SourceGoneError as e:  # the source's own limit on the upload came first
        got, gone = [], str(e)
    finally:
        done.set()
        source.close()
    upload = [s for s in states if s.startswith("uploading")]
    report.add(
        f"network {source.network} on {source.uri}: {'first' if got else 'no'} result after "
        f"{time.monotonic() - started:.1f} s ({' -> '.join(upload) or 'already loaded'})"
    )
    if len(got) < frames:
        report.add(
            gone or f"{len(got)} of {frames} frames with on-sensor results in {timeout_s:g} s", ok=False
        )
        return report
    counts = _check_tensors(report, model, got)
    _check_crops(report, source.inference_crop, got)
    if not report.passed:
        return report
    report.add(f"{frames} frames decoded: {sum(counts)} instances ({max(counts)} at most in one frame)")
    return report


def _first_frames(source: Any, frames: int, deadline: float) -> list[Frame]:
    got: list[Frame] = []
    while len(got) < frames and time.monotonic() < deadline:
        frame = source.read()
        if frame is None:
            break
        if frame.tensors is not None:
            got.append(frame)
    return got


def _check_tensors(report: Report, model: Model, frames: list[Frame]) -> list[int]:
    """Each frame's outputs decoded as the pipeline decodes them: the checks are the backend's and the head's
    (the shapes the card's output kind takes, at any resolution: logits ``[1, C, h, w]`` with ``C`` the
    classes, a class map ``[1, h, w]``, …; class ids in range, no NaN). The instances of each frame."""
    name, kind = model.card.output.name, model.card.output.kind
    shapes = {str(f.tensors[name].shape) if f.tensors and name in f.tensors else "none" for f in frames}
    line = f"output {name}: shapes {sorted(shapes)} ({kind})"
    counts: list[int] = []
    errors: list[str] = []
    for f in frames:
        prepared = model.preprocess(f)
        try:
            counts.append(len(model.decode(model.infer(prepared), prepared)))
        except ModelError as e:
            errors.append(str(e))
    if errors:
        report.add(f"{line}: {errors[0]} ({len(errors)} of {len(frames)} frames)", ok=False)
    else:
        report.add(f"{line}, as the card's head takes them")
    return counts


def _check_crops(report: Report, crop: tuple[float, float, float, float], frames: list[Frame]) -> None:
    """Each frame's network crop must be the inference crop seen through that frame's ScalerCrop."""
    from edgeseg.sources.picamera2 import IMX500_SENSOR_WH

    sw, sh = IMX500_SENSOR_WH
    worst = 0.0
    for f in frames:
        cx, cy, cw, ch = f.roi  # the ScalerCrop over the pixel array
        x, y, w, h = crop[0] / sw, crop[1] / sh, crop[2] / sw, crop[3] / sh
        expected = ((x - cx) / cw, (y - cy) / ch, w / cw, h / ch)
        if f.tensor_roi is None:
            worst = float("inf")
            continue
        worst = max(worst, *(abs(a - b) for a, b in zip(f.tensor_roi, expected, strict=True)))
    inside = all(
        f.tensor_roi is not None
        and min(f.tensor_roi) >= 0
        and f.tensor_roi[0] + f.tensor_roi[2] <= 1 + 1e-9
        and f.tensor_roi[1] + f.tensor_roi[3] <= 1 + 1e-9
        for f in frames
    )
    report.add(
        f"network crop {tuple(round(v) for v in crop)} (sensor px) inside the image and mapped within "
        f"{worst:.1e} of the ScalerCrop (tolerance {ROI_TOLERANCE:g})",
        ok=inside and worst <= ROI_TOLERANCE,
    )


def run(config: PipelineConfig, frames: int, **fakes: Any) -> Report:
    """The self-test the pipeline's backend calls for (``fakes``: stand-ins for tests)."""
    if frames < 1:
        raise InputError(f"--frames must be >= 1 (got {frames})")
    if config.model.backend == "imx500":
        return check_imx500(config, frames, **fakes)
    return check_backend(config, frames, **fakes)


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "selftest",
        help="check this device's inference against onnxruntime (Jetson) or the AI Camera's results",
        description="Run the pipeline's model on this device and check it: TensorRT (or any backend) against "
        "onnxruntime on the CPU on the same frames (output difference, PQ and mask IoU of the instances, "
        "timing); on an AI Camera, upload the network, capture frames and check the output shapes and the "
        "network's crop. Ends with PASS, or FAIL and exit status 1.",
    )
    from edgeseg.cliconfig import add_pipeline_args

    add_pipeline_args(p)
    p.add_argument(
        "--frames", type=int, default=DEFAULT_FRAMES, metavar="N", help=f"frames (default {DEFAULT_FRAMES})"
    )


def command(args: argparse.Namespace) -> int:
    from edgeseg.cliconfig import load_cli_config

    config = load_cli_config(args)
    given = [flag for flag in ("--source", "--roi") if getattr(args, flag[2:])]
    if given and config.model.backend != "imx500":
        # check_backend compares the backends on synthetic frames: a source or region asked for would be
        # ignored, and the PASS taken for one on the user's own frames
        raise InputError(
            f"{given[0]}: the self-test of a pipeline on {config.model.backend} runs on synthetic frames "
            "(--source and --roi are for an imx500 pipeline's camera)"
        )
    report = run(config, args.frames)
    print(report.text())
    return 0 if report.passed else 1
