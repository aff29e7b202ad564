"""Train the bundled demo model ``models/demo-parts.onnx`` on ``edgeseg.synthetic`` conveyor scenes.

Dev-time only. PyTorch lives in its own venv (CPU wheel):

    python3 -m venv .venv-train
    .venv-train/bin/pip install torch==2.13.0 onnx onnxruntime numpy opencv-python-headless pyyaml lap
    .venv-train/bin/python scripts/train_demo_model.py            # ~40 min on 2 idle cores (8000 steps)

The model before the contact map (below; git 111e2a5) is that run continued four times from its weights
(``--init``: a fresh schedule, more scenes, a lower rate at the end), as its card says; each run adds ~25 min.
With the post-processing tuned by this script (``min_score`` in the search since the fifth run; the fourth
run's weights tuned that way with ``--steps 0``, which trains nothing, gave test PQ 0.830 and hold-out 0.827
where its own card had 0.818 and 0.819), the test PQ went 0.801 -> 0.791 -> 0.802 -> 0.818 -> 0.836 and the
hold-out PQ 0.793 -> 0.815 -> 0.820 -> 0.819 -> 0.826 (mIoU 0.918 -> 0.934 and 0.914 -> 0.925):

    .venv-train/bin/python scripts/train_demo_model.py --checkpoint /tmp/w1.pt --out /tmp/m1
    .venv-train/bin/python scripts/train_demo_model.py --init /tmp/w1.pt --scenes 320 --steps 6000 --lr 1e-3 \
        --checkpoint /tmp/w2.pt --out /tmp/m2
    .venv-train/bin/python scripts/train_demo_model.py --init /tmp/w2.pt --scenes 480 --steps 6000 --lr 1e-3 \
        --checkpoint /tmp/w3.pt --out /tmp/m3
    .venv-train/bin/python scripts/train_demo_model.py --init /tmp/w3.pt --scenes 640 --steps 6000 --lr 1e-3 \
        --checkpoint /tmp/w4.pt --out /tmp/m4
    .venv-train/bin/python scripts/train_demo_model.py --init /tmp/w4.pt --scenes 800 --frames 6 \
        --steps 6000 --lr 5e-4 --checkpoint /tmp/w5.pt

The checkpoints are not kept. To go on from the bundled model, start from its ONNX file (``--init
models/demo-parts.onnx``): the weights are read back from it (``load_exported``). ``--export-only`` writes
them again with this script's graph and nothing else (the bundled file was last written so, when the class
id came to be computed without Where; its outputs did not change on any of 180 test, validation and hold-out
frames):

    .venv-train/bin/python scripts/train_demo_model.py --contact-map --init models/demo-parts.onnx \
        --export-only --out models

``--contact-map`` adds a second output, a contact map: the pixels with two different parts within
CONTACT_RADIUS (the belt between them included), drawn by a small branch on the class head's inputs
(ContactBranch) and cut at a logit searched on the validation scenes, which the graph applies (a uint8 0/1
map). The class map stays the net's own, and the card declares the map (``output.contact``): decoding splits a
component only where the map leaves two or more cores (edgeseg.semantic.cores), in about 0.4x the time of the
split by distance reliefs (scripts/bench_demo_model.py). The bundled model is the fourth of the runs below,
from the model without the map: validation PQ 0.8163 -> 0.8261 -> 0.8274 -> 0.8329, hold-out 0.7998 -> 0.8137
-> 0.8171 -> 0.8229 (~40 min in all on 2 CPU threads; test PQ 0.8446, mIoU 0.9299). In those runs, ``--init``
an ONNX file keeps the batch norms it folded in inference mode (in training mode a fine-tune starts from
another function and loses ~0.015 mIoU); ``--freeze-norms`` keeps them so in the runs that follow. The
model before the map is in git, at 111e2a5:

    git show 111e2a5:models/demo-parts.onnx > /tmp/parts.onnx
    .venv-train/bin/python scripts/train_demo_model.py --contact-map --init /tmp/parts.onnx \
        --branch-only --scenes 600 --frames 2 --steps 3000 --batch 16 --crop 192 --lr 2e-3 \
        --checkpoint /tmp/c1.pt --out /tmp/c1
    .venv-train/bin/python scripts/train_demo_model.py --contact-map --init /tmp/c1.pt --freeze-norms \
        --scenes 400 --frames 4 --steps 3000 --crop 256 --lr 3e-4 --checkpoint /tmp/c2.pt --out /tmp/c2
    .venv-train/bin/python scripts/train_demo_model.py --contact-map --init /tmp/c2.pt --freeze-norms \
        --scenes 600 --frames 3 --steps 5000 --crop 256 --lr 2e-4 --checkpoint /tmp/c3.pt --out /tmp/c3
    .venv-train/bin/python scripts/train_demo_model.py --contact-map --init /tmp/c3.pt --freeze-norms \
        --scenes 800 --frames 3 --steps 4000 --crop 256 --lr 1e-4 --checkpoint /tmp/c4.pt --out /tmp/c4

``--device cuda`` trains on a GPU (rendering, the grid search and the export stay on the CPU). The bundled
weights continued so on an H200 (2026-12-04: ``--contact-map --init models/demo-parts.onnx --freeze-norms
--scenes 1500 --frames 3 --steps 6000 --batch 32``, ``--crop 256 --lr 2e-4`` and ``--crop 320 --lr 1e-4``,
5-6.5 min of training each) came no further: validation mIoU 0.9295 and 0.9298 where they start at 0.9299,
and the first's PQ 0.8295 against 0.8329 (hold-out 0.8193). Six times the last run's crops taught this net
nothing more (its size, it seems, more than its training holds it there), so the bundled file stays.

A contact *class* instead (a part's own pixels near another part taken out of the class map, which the card
then declares as ``contact``) was tried from the same weights and dropped: hold-out PQ 0.807 against 0.826,
because gaps in its bands merge touching parts and its pixels are lost to the parts' classes.

Data: ``--scenes`` training scenes with seeds 1000, 1001, ... (``--frames`` frames each, indices 37 + 211 k),
rendered at 640x480, the model's input size. Never trained on: the validation scenes (seeds 100..163, frame
300: per-epoch figures, and the grid search of the card's ``semantic`` post-processing), the hold-out scenes
(seeds 200..229, frame 400: the unbiased figures in the card) and the test scenes (seeds 0..9, frame 250:
tests/test_demo_model.py).

The net is a small U-Net that runs every layer at a quarter of the resolution or less: a stride-4 stem reads
each 4x4 block of pixels (pixel unshuffle and a linear layer in one), and each block's 4x4 logits come back
from 64 channels there (pixel shuffle), from the block's features plus a linear function of its own pixels, so
part boundaries still land on the right frame pixel, which the watershed that splits touching parts depends
on. Decoder stages add (rather than concatenate) the coarser stage's features, projected before they are
upsampled. The ONNX file takes the frame's bytes (uint8 RGB planes: no float conversion on the host) and
returns the class map (uint8) and each pixel's class probability, computed in the graph as on the IMX500; the
argmax and probability are taken per 4x4 block before the pixels are put in place, because onnxruntime's
softmax and argmax over the class axis of a full-resolution tensor cost more than the whole net. The model
before this design (logits at full resolution, 4x the inference time) is kept in models/reference/ for
scripts/bench_demo_model.py. Loss: pixel-weighted cross-entropy (class boundaries and the belt between
touching parts weigh more) plus soft Dice over the part classes, on random crops with flips and photometric
jitter. Tensors are channels-last, which makes oneDNN's CPU convolutions ~1.7x faster here. The card is
written beside the ONNX file in the schema ``edgeseg.modelcard`` loads; the last stdout line is one JSON
object of the figures.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import torch
import torch.nn.functional as F  # noqa: N812
from numpy.typing import NDArray
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgeseg.evaluate import PQAccumulator  # noqa: E402
from edgeseg.instances import Instances  # noqa: E402
from edgeseg.semantic import SemanticParams, semantic_to_instances  # noqa: E402
from edgeseg.synthetic import CLASS_NAMES, PartsScene, SyntheticFrame  # noqa: E402

WIDTH, HEIGHT = 640, 480  # frames and model input
TRAIN_SEED0 = 1000
VAL_SEEDS = tuple(range(100, 164))  # 64 frames: the grid search of the post-processing picks by PQ on them
VAL_INDEX = 300
HOLDOUT_SEEDS = tuple(range(200, 230))  # untouched by training and tuning: unbiased figures for the card
HOLDOUT_INDEX = 400
CONTACT_RADIUS = 2  # --contact-map: pixels with two different parts this near are where parts touch
CONTACT_POS_WEIGHT = 3.0  # --contact-map: its pixels are ~4% of a frame; the loss weighs them up
CONTACT_THRESHOLDS = (
    -1.5,
    -1.0,
    -0.5,
    0.0,
)  # --contact-map: the logit above which a pixel is contact, searched
PIXEL_FEATURES = 32  # hidden units of the per-block network that places boundaries inside a block
BYTE_SCALE = 1.0 / 255.0  # the deployed model reads bytes; the net was trained on [0, 1]
STRIDE = 32  # input sides must be multiples of this (a stride-4 stem, three stride-2 stages)
SIZE_THRESHOLDS = (40, 60, 80, 100, 120)  # --contact-map: the smallest part kept, searched
MIN_SCORES = (0.5, 0.6, 0.7, 0.75, 0.8, 0.82, 0.84, 0.86, 0.88, 0.9, 0.91, 0.92, 0.93, 0.94, 0.95)


def render(seed: int, indices: tuple[int, ...]) -> list[SyntheticFrame]:
    scene = PartsScene(WIDTH, HEIGHT, seed=seed)
    return [scene.frame(i) for i in indices]


def render_many(jobs: list[tuple[int, tuple[int, ...]]], workers: int) -> list[SyntheticFrame]:
    with ProcessPoolExecutor(workers) as pool:
        return [f for chunk in pool.map(render, *zip(*jobs, strict=True)) for f in chunk]


def planes(bgr: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """What the deployed model reads: ``(H, W, 3)`` BGR -> ``(1, 3, H, W)`` RGB uint8 (the card's input)."""
    return np.ascontiguousarray(bgr[:, :, ::-1].transpose(2, 0, 1)[None])


def to_input(bgr: NDArray[np.uint8]) -> NDArray[np.float32]:
    """The card's preprocessing: ``(H, W, 3)`` BGR uint8 -> ``(1, 3, H, W)`` RGB float32 in [0, 1]."""
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    return (rgb.transpose(2, 0, 1)[None] / np.float32(255)).astype(np.float32)


def cbr(cin: int, cout: int, stride: int = 1, k: int = 3) -> nn.Sequential:
    conv = nn.Conv2d(cin, cout, k, stride, k // 2, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class DSBlock(nn.Module):
    """Residual depthwise 3x3 (optionally dilated) + pointwise 1x1."""

    def __init__(self, c: int, dilation: int = 1) -> None:
        super().__init__()
        self.dw = nn.Conv2d(c, c, 3, 1, dilation, dilation, groups=c, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.pw = nn.Conv2d(c, c, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.bn2(self.pw(F.relu(self.bn1(self.dw(x))))))


class Merge(nn.Module):
    """A decoder stage: the coarser features, projected to the finer stage's width *before* the bilinear
    upsampling (the two commute; the projection then runs on a quarter of the pixels), added to the finer
    features' own projection (a sum, not a concatenation: no copy), then a residual block."""

    def __init__(self, coarse: int, fine: int) -> None:
        super().__init__()
        self.proj_coarse = nn.Conv2d(coarse, fine, 1, bias=False)
        self.proj_fine = nn.Conv2d(fine, fine, 1, bias=False)
        self.bn = nn.BatchNorm2d(fine)
        self.block = DSBlock(fine)

    def forward(self, coarse: torch.Tensor, fine: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(self.proj_coarse(coarse), fine.shape[2:], mode="bilinear", align_corners=False)
        out: torch.Tensor = self.block(F.relu(self.bn(up + self.proj_fine(fine))))
        return out


class ContactBranch(nn.Module):
    """--contact-map: the logit of each pixel lying where two parts touch, ``(N, 16, H/4, W/4)`` per 4x4
    block, from what the class head reads: the block's features through two residual blocks (dilations 1
    and 2: a contact band runs along a boundary between parts, a few blocks long), plus a linear function of
    the pixels' features, as the class head has."""

    def __init__(self, c0: int) -> None:
        super().__init__()
        self.proj = cbr(c0, c0, k=1)
        self.blocks = nn.Sequential(DSBlock(c0), DSBlock(c0, 2))
        self.head = nn.Conv2d(c0, 16, 1)
        self.pixels = nn.Conv2d(PIXEL_FEATURES, 16, 1, bias=False)

    def forward(self, block: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.blocks(self.proj(block))) + self.pixels(pixels)
        return out


class PartsNet(nn.Module):
    """``(N, 3, H, W)`` RGB in [0, 1] -> ``(N, classes, H, W)`` class logits, and with ``contact_map`` each
    pixel's contact logit ``(N, H, W)``; H and W multiples of 32.

    Every layer runs at a quarter of the resolution or less. The stem reads each ``4x4`` block of pixels
    (a stride-4 convolution: pixel unshuffle and a linear layer in one), and each block's ``4x4`` logits
    come back from 64 channels there (pixel shuffle): a block's pixels are told apart by the features of
    the block plus a linear function of its own pixels (``skip``)."""

    def __init__(
        self, classes: int, contact_map: bool = False, c0: int = 24, c1: int = 32, c2: int = 48, c3: int = 64
    ) -> None:
        super().__init__()
        self.c0 = c0
        self.classes = classes
        self.stem = nn.Conv2d(3, c0 + PIXEL_FEATURES, 4, 4, bias=False)
        self.e0 = nn.Sequential(nn.BatchNorm2d(c0), nn.ReLU(inplace=True), DSBlock(c0))
        self.e1 = nn.Sequential(cbr(c0, c1, 2), DSBlock(c1))
        self.e2 = nn.Sequential(cbr(c1, c2, 2), DSBlock(c2), DSBlock(c2))
        self.e3 = nn.Sequential(cbr(c2, c3, 2), DSBlock(c3), DSBlock(c3, 2), DSBlock(c3, 4))
        self.d2 = Merge(c3, c2)
        self.d1 = Merge(c2, c1)
        self.d0 = Merge(c1, c0)
        self.context = nn.Conv2d(c0, PIXEL_FEATURES, 1)  # what the block's surroundings say to its pixels
        self.pixels = nn.Conv2d(PIXEL_FEATURES, classes * 16, 1, bias=False)
        self.head = nn.Conv2d(c0, classes * 16, 1)  # 4x4 sub-pixels of each class
        # made last: load_exported pairs the file's folded convolutions with the modules in this order
        self.contact = ContactBranch(c0) if contact_map else None
        self.frozen_norms: tuple[nn.BatchNorm2d, ...] = ()  # kept in inference mode by train()

    def train(self, mode: bool = True) -> PartsNet:
        super().train(mode)
        for norm in self.frozen_norms:
            norm.eval()
        return self

    def features(self, own: torch.Tensor, pixel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What the head reads, from the stem's two parts (the block's own features, ``c0`` channels, and
        its pixels', ``PIXEL_FEATURES``): the block's features in context, and its pixels' features. Each
        sub-pixel's logits are the block's, plus a small per-block network over the block's own pixels and
        its context (nonlinear: where in the block a boundary runs depends on the pixels' colours)."""
        e0 = self.e0(own)
        e1 = self.e1(e0)
        e2 = self.e2(e1)
        e3 = self.e3(e2)
        d2 = self.d2(e3, e2)
        d1 = self.d1(d2, e1)
        d0 = self.d0(d1, e0)
        return d0, F.relu(pixel + self.context(d0))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        stem = self.stem(x)
        block, pixels = self.features(stem[:, : self.c0], stem[:, self.c0 :])
        logits = F.pixel_shuffle(self.head(block) + self.pixels(pixels), 4)
        if self.contact is None:
            return logits, None
        return logits, F.pixel_shuffle(self.contact(block, pixels), 4)[:, 0]


class Deployed(nn.Module):
    """What the ONNX file computes: RGB uint8 ``(1, 3, H, W)`` (the host only splits the camera's bytes
    into planes) -> the class id of each pixel, uint8 ``(1, 1, H, W)``, the probability of that class,
    float32 ``(1, 1, H, W)``, and with a contact branch the contact map, uint8 0/1 ``(1, 1, H, W)`` (its
    logit above ``threshold``, which is folded into the branch's bias). The argmax happens in the graph, as
    on the IMX500, so decoding starts from a class map. It is taken on each block's logits, before the pixels
    are put back in place: onnxruntime's softmax and argmax over the class axis of a full-resolution tensor
    cost more than the whole net."""

    def __init__(self, net: PartsNet, threshold: float = 0.0) -> None:
        super().__init__()
        self.net = net
        self.threshold = threshold

    def forward(self, rgb: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # The byte scale is folded into the stem's weights (no pass over the frame), and the stem is two
        # convolutions, one per part, rather than one sliced: onnxruntime then fuses each with what follows
        # in its blocked layout instead of converting the stem's output back for the slice (-20% here).
        weight = self.net.stem.weight * BYTE_SCALE
        c0 = self.net.c0
        x = rgb.float()
        own = F.conv2d(x, weight[:c0], stride=4)
        pixel = F.conv2d(x, weight[c0:], stride=4)
        block, pixels = self.net.features(own, pixel)
        # The head too is one pair of convolutions per class rather than one sliced: no 64-channel tensor
        # at a quarter of the resolution (4.9 MB) is made and copied out in four slices (onnxruntime's arena
        # after the first runs: 12.2 MB instead of 19.8; same speed)
        head, skip = self.net.head, self.net.pixels
        per_class = [
            F.conv2d(block, head.weight[16 * k : 16 * (k + 1)], head.bias[16 * k : 16 * (k + 1)])
            + F.conv2d(pixels, skip.weight[16 * k : 16 * (k + 1)])
            for k in range(self.net.classes)
        ]
        # elementwise over the classes' planes: onnxruntime's reductions over a non-last axis are slow
        top = per_class[0]
        for lg in per_class[1:]:
            top = torch.maximum(top, lg)
        total = torch.exp(per_class[0] - top)
        for lg in per_class[1:]:
            total = total + torch.exp(lg - top)
        conf = torch.reciprocal(total)
        # The first class at the maximum, as argmax takes: with below_k 1 where class k is under the
        # maximum, 0 at it, the id is below_0 * (1 + below_1 * (1 + ... * (1 + below_{C-2}))), in float.
        # (it was a chain of Where, which onnxruntime runs as a generic broadcasting loop: the whole model,
        # same outputs, takes 0.96-0.98x the time without it on 2 x86-64 cores)
        ids_f = (per_class[-2] < top).float()
        for lg in reversed(per_class[:-2]):
            ids_f = (lg < top).float() * (ids_f + 1.0)
        ids = ids_f.to(torch.uint8)
        out = (F.pixel_shuffle(ids, 4), F.pixel_shuffle(conf, 4))
        branch = self.net.contact
        if branch is None:
            return out
        # made after the class head's convolutions: load_exported finds the branch's by that order
        features = branch.blocks(branch.proj(block))
        logit = F.conv2d(features, branch.head.weight, branch.head.bias - self.threshold)
        logit = logit + branch.pixels(pixels)
        return (*out, F.pixel_shuffle((logit > 0).to(torch.uint8), 4))


def load_exported(model: PartsNet, path: Path) -> bool:
    """Set ``model``'s weights to those of an ONNX file this script exported, for ``--init`` where the
    weights (``--checkpoint``) are gone: the exporter folds each batch norm that follows a convolution into
    it, so those convolutions take the folded weights and bias and their norms become identities. Every
    other tensor keeps its own name in the file, and every weight of ``model`` must come from the file, but
    for a contact branch the file does not have (the model before the map: the branch keeps its
    initialization). Return whether the branch came from the file. A branch from the file keeps the
    threshold the file applies in its bias (a fine-tune starts at that operating point)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    tensors = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in graph.initializer}
    named = {k[len("net.") :]: v for k, v in tensors.items() if k.startswith("net.")}
    # the stem: the convolutions that read the bytes, with the byte scale folded in (see Deployed)
    as_float = {n.output[0] for n in graph.node if n.op_type == "Cast" and n.input[0] == graph.input[0].name}
    stem = [n for n in graph.node if n.op_type == "Conv" and n.input[0] in as_float]
    halves = [tensors[n.input[1]] for n in stem]  # the block's own features first, then its pixels'
    if halves:  # files written before the stem was split keep it whole, as net.stem.weight
        named["stem.weight"] = torch.cat(halves) / BYTE_SCALE
    # after the context's convolution: the head, one pair per class (see Deployed), those reading the
    # block's features (the context's input) first (files written before the head was split keep it whole),
    # then a contact branch's: its folded ones, and its head, whose bias has the threshold in it
    convs = [n for n in graph.node if n.op_type == "Conv"]
    context = next((k for k, n in enumerate(convs) if n.input[1] == "net.context.weight"), len(convs))
    unnamed = [n for n in convs[context + 1 :] if not n.input[1].startswith("net.")]
    head, branch = unnamed[: 2 * model.classes], unnamed[2 * model.classes :]
    by_class = [n for n in head if n.input[0] == convs[context].input[0]]
    per_pixel = [n for n in head if n not in by_class]
    if head:
        named["head.weight"] = torch.cat([tensors[n.input[1]] for n in by_class])
        named["head.bias"] = torch.cat([tensors[n.input[2]] for n in by_class])
        named["pixels.weight"] = torch.cat([tensors[n.input[1]] for n in per_pixel])
    branch_head = [n for n in convs if n.input[1] == "net.contact.head.weight"]
    if branch_head:
        named["contact.head.bias"] = tensors[branch_head[0].input[2]]
    # the folded pairs, in the order the convolutions run, which is the order the modules were made in
    folded = [
        (tensors[n.input[1]], tensors[n.input[2]])
        for n in convs[:context] + branch
        if n.input[0] not in as_float and not n.input[1].startswith("net.")
    ]
    pairs: list[tuple[str, nn.Conv2d, str, nn.BatchNorm2d]] = []
    for name, module in model.named_modules():
        if isinstance(module, DSBlock):
            pairs += [(f"{name}.dw", module.dw, f"{name}.bn1", module.bn1)]
            pairs += [(f"{name}.pw", module.pw, f"{name}.bn2", module.bn2)]
        elif isinstance(module, nn.Sequential) and isinstance(module[0], nn.Conv2d):
            pairs += [(f"{name}.0", module[0], f"{name}.1", module[1])]
    state = model.state_dict()
    wanted = {k for k in state if not k.endswith("num_batches_tracked")}  # training bookkeeping, not weights
    has_branch = bool(branch_head)
    if model.contact is not None and not has_branch:  # the branch starts from its initialization
        pairs = [p for p in pairs if not p[0].startswith("contact.")]
        wanted = {k for k in wanted if not k.startswith("contact.")}
    from_pairs = {f"{c}.weight" for c, _, _, _ in pairs} | {
        f"{n}.{k}" for _, _, n, _ in pairs for k in ("weight", "bias", "running_mean", "running_var")
    }
    own_first = not halves or (len(halves) == 2 and halves[0].shape[0] == model.c0)
    if has_branch and model.contact is None:
        raise SystemExit(f"{path}: has a contact map (--contact-map)")
    if len(pairs) != len(folded) or set(named) | from_pairs != wanted or not own_first:
        raise SystemExit(f"{path}: not a model this script exported (its tensors do not fit PartsNet)")
    with torch.no_grad():
        for (_, conv, _, norm), (weight, bias) in zip(pairs, folded, strict=True):
            conv.weight.copy_(weight)
            norm.weight.fill_(1.0)
            norm.bias.copy_(bias)
            norm.running_mean.zero_()
            norm.running_var.fill_(1.0 - norm.eps)
    model.load_state_dict({**state, **named})
    return has_branch


def weights(frame: SyntheticFrame) -> NDArray[np.uint8]:
    """Class-loss weight of each pixel: 1, +2 next to a class boundary, +8 on belt between two nearby parts.

    Instances come from the class map, so the pixels that decide PQ are the boundaries and, above all, the
    thin strips of belt between touching parts: filled in, two parts become one.
    """
    edge = cv2.morphologyEx(frame.class_map, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
    gap = (frame.instance_map == 0) & frame.between_parts(3)
    return (1 + 2 * edge + 8 * gap).astype(np.uint8)


def touching(frame: SyntheticFrame) -> NDArray[np.uint8]:
    """--contact-map: the contact map the branch learns, 0/1."""
    return frame.between_parts(CONTACT_RADIUS).astype(np.uint8)


def batch(
    images: NDArray[np.uint8],
    labels: tuple[NDArray[np.uint8], ...],
    rng: np.random.Generator,
    size: int,
    crop: int,
    device: str = "cpu",
) -> tuple[torch.Tensor, list[NDArray[np.uint8]]]:
    """Random ``crop``-square crops with flips and photometric jitter: inputs ``(N, 3, c, c)`` on ``device``
    (channels last in memory), and the same crops of each of ``labels``' per-pixel maps, ``(N, c, c)``.

    The crops travel as bytes and are jittered where they land (in float32: on the CPU, float64 arithmetic
    on the crops cost more than a training step on a GPU)."""
    crops: list[NDArray[np.uint8]] = []
    ys: list[list[NDArray[np.uint8]]] = [[] for _ in labels]
    gain, offset = np.empty((size, 3), np.float32), np.empty(size, np.float32)
    for i, k in enumerate(rng.integers(len(images), size=size)):
        y0, x0 = int(rng.integers(HEIGHT - crop + 1)), int(rng.integers(WIDTH - crop + 1))
        win = (k, slice(y0, y0 + crop), slice(x0, x0 + crop))
        img, maps = images[win][..., ::-1], [m[win] for m in labels]  # BGR -> RGB
        if rng.random() < 0.5:
            img, maps = img[:, ::-1], [m[:, ::-1] for m in maps]
        if rng.random() < 0.5:
            img, maps = img[::-1], [m[::-1] for m in maps]
        gain[i] = rng.uniform(0.8, 1.2) * rng.uniform(0.95, 1.05, 3)
        offset[i] = rng.uniform(-15, 15)
        crops.append(img)
        for out, m in zip(ys, maps, strict=True):
            out.append(m)
    x = torch.from_numpy(np.stack(crops)).to(device).float()
    x = (
        x * torch.from_numpy(gain).to(device)[:, None, None]
        + torch.from_numpy(offset).to(device)[:, None, None, None]
    )
    x = x.clamp_(0, 255) / 255.0
    return x.permute(0, 3, 1, 2), [np.stack(m) for m in ys]  # NHWC memory = channels last


def soft_dice(prob: torch.Tensor, target: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    inter = (prob * target).sum(dims)
    return 1 - (2 * inter + 1) / (prob.sum(dims) + target.sum(dims) + 1)


def loss_fn(
    out: tuple[torch.Tensor, torch.Tensor | None],
    target: torch.Tensor,
    weight: torch.Tensor,
    contact: torch.Tensor | None,
) -> torch.Tensor:
    """Pixel-weighted cross-entropy plus soft Dice over the part classes; with a contact map, its binary
    cross-entropy (the contact pixels weighed up) plus its soft Dice."""
    logits, contact_logits = out
    ce = (F.cross_entropy(logits, target, reduction="none") * weight).sum() / weight.sum()
    prob = F.softmax(logits, 1)[:, 1:]
    tgt = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2)[:, 1:].float()
    loss = ce + soft_dice(prob, tgt, (0, 2, 3)).mean()
    if contact_logits is None or contact is None:
        return loss
    pos = torch.tensor(CONTACT_POS_WEIGHT, device=contact_logits.device)
    bce = F.binary_cross_entropy_with_logits(contact_logits, contact, pos_weight=pos)
    return loss + bce + soft_dice(torch.sigmoid(contact_logits), contact, (0, 1, 2))


@dataclass(frozen=True)
class Prediction:
    """What the deployed model gives for a frame (its contact map as logits: the threshold is searched)."""

    classes: NDArray[np.uint8]
    confidence: NDArray[np.float32]
    contact: NDArray[np.float32] | None

    def decode(self, params: SemanticParams, threshold: float) -> Instances:
        touch = None if self.contact is None else self.contact > threshold
        return semantic_to_instances(self.classes, params, 0, confidence=self.confidence, touching=touch)


def predict(model: PartsNet, frames: list[SyntheticFrame]) -> list[Prediction]:
    model.eval()
    dev = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for f in frames:
            logits, contact = model(torch.from_numpy(to_input(f.image)).to(dev))
            conf, classes = (t.cpu() for t in F.softmax(logits[0], 0).max(0))
            touch = None if contact is None else contact[0].cpu().numpy()
            out.append(Prediction(classes.numpy().astype(np.uint8), conf.numpy(), touch))
    model.train()
    return out


def iou(pairs: list[tuple[NDArray[np.uint8], NDArray[np.uint8]]], n: int) -> NDArray[np.float64]:
    """IoU of each of ``n`` classes over ``(truth, predicted)`` class maps."""
    conf = np.zeros(n * n, np.int64)
    for truth, pred in pairs:
        conf += np.bincount(truth.ravel().astype(np.int64) * n + pred.ravel(), minlength=conf.size)
    c = conf.reshape(n, n)
    tp = np.diag(c).astype(np.float64)
    out: NDArray[np.float64] = tp / (c.sum(0) + c.sum(1) - tp)
    return out


def panoptic(
    frames: list[SyntheticFrame], preds: list[Prediction], params: SemanticParams, threshold: float
) -> float:
    """Panoptic quality over all frames (matches summed per class, then PQ), at frame resolution."""
    acc = PQAccumulator()
    for f, pred in zip(frames, preds, strict=True):
        acc.add(pred.decode(params, threshold), f.instances())
    res = acc.result()
    return 0.0 if res is None else res.pq


def class_iou(frames: list[SyntheticFrame], preds: list[Prediction]) -> NDArray[np.float64]:
    """IoU of the background and each part class, at frame resolution."""
    return iou([(f.class_map, p.classes) for f, p in zip(frames, preds, strict=True)], len(CLASS_NAMES))


def tune(frames: list[SyntheticFrame], preds: list[Prediction]) -> tuple[SemanticParams, float, float]:
    """The ``semantic`` post-processing parameters, and with a contact map the threshold of its logit, with
    the best PQ on the validation frames: ``(params, threshold, PQ)``."""
    grid: Iterable[tuple[SemanticParams, float]] = (
        (
            (SemanticParams(size_threshold=st, min_score=ms, rods=True), th)
            for th, st, ms in itertools.product(CONTACT_THRESHOLDS, SIZE_THRESHOLDS, (0.9, 0.92, 0.94))
        )
        if preds[0].contact is not None
        else (
            (
                SemanticParams(
                    erosion_kernel=ek,
                    erosion_iteration=ei,
                    dist_threshold=dt,
                    size_threshold=st,
                    saddle_ratio=sr,
                    rods=True,  # bolts are straight rods that cross
                ),
                0.0,
            )
            for ek, ei, dt, st, sr in itertools.product(
                (3, 5), (1, 2, 3), (0.2, 0.3, 0.4), (40, 60), (0.7, 0.8, 0.9)
            )
        )
    )
    best = (SemanticParams(), 0.0, -1.0)
    for p, th in grid:
        pq = panoptic(frames, preds, p, th)
        if pq > best[2]:
            best = (p, th, pq)
    # then the score below which an instance is dropped, for those parameters: the model's fragments (a
    # sliver of a neighbour's class along a boundary, a part cut in two) are the pixels it is least sure of
    for ms in MIN_SCORES:
        p = replace(best[0], min_score=ms)
        pq = panoptic(frames, preds, p, best[1])
        if pq > best[2]:
            best = (p, best[1], pq)
    return best


CARD = """\
# Demo model for the synthetic:parts source (nuts, washers, bolts on a conveyor), trained by
#   {command}
# {trained_on}, validated on
# held-out seeds {val_seeds} (frame {val_index}); tests/test_demo_model.py tests seeds 0..9.
# Validation at 640x480: mIoU {miou:.4f} (IoU background, nut, washer, bolt: {per_class});
# PQ {pq:.4f} with the semantic parameters below (grid-searched on these validation seeds, so optimistic).
# Hold-out (seeds {holdout_seeds}, frame {holdout_index}): mIoU {holdout_miou:.4f}, PQ {holdout_pq:.4f}.
# Training took {train_s:.0f} s on {threads} CPU threads; {params} parameters.
name: demo-parts
file: demo-parts.onnx
task: semantic
input:  # bytes: the graph scales them
  name: image
  width: {w}
  height: {h}
  layout: nchw
  color: rgb
  dtype: uint8
  resize: stretch
  pad_value: 114
output:  # the argmax and its probability are computed in the graph
  name: classes
  kind: class_map
  confidence: confidence
{contact}classes: [{classes}]
background: 0
{semantic}"""
CONTACT = """\
  contact: contact  # where parts touch, 0/1: its logit above {threshold} (in the graph)
"""
SPLIT = """\
semantic:
  erosion_kernel: {sp.erosion_kernel}
  erosion_iteration: {sp.erosion_iteration}
  dilate_kernel: {sp.dilate_kernel}
  dilate_iteration: {sp.dilate_iteration}
  dist_threshold: {sp.dist_threshold}
  size_threshold: {sp.size_threshold}
  saddle_ratio: {sp.saddle_ratio}
  min_score: {sp.min_score}
  rods: {rods}
"""
TOUCHING = """\
semantic:  # a part is split only where the contact map leaves two or more cores
  size_threshold: {sp.size_threshold}
  min_score: {sp.min_score}
  rods: {rods}
"""


def export(
    model: PartsNet, path: Path, frames: list[SyntheticFrame], threshold: float
) -> tuple[float, float]:
    """Write the ONNX file; return the fractions of pixels whose class, and whose contact, onnxruntime and
    torch disagree on over ``frames`` (only pixels with two near-equal top logits, or a contact logit at the
    threshold, may differ)."""
    model.eval()
    deployed = Deployed(model, threshold).eval()
    names = ["classes", "confidence"] + ([] if model.contact is None else ["contact"])
    x = torch.from_numpy(planes(frames[0].image))
    torch.onnx.export(
        deployed, (x,), str(path), input_names=["image"], output_names=names, opset_version=17, dynamo=False
    )
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    maps = [0] + ([] if model.contact is None else [2])  # the integer outputs (not the confidence)
    differ = np.zeros(2)
    for f in frames:
        with torch.no_grad():
            ref = deployed(torch.from_numpy(planes(f.image)))
        got = sess.run(None, {"image": planes(f.image)})
        differ[: len(maps)] += [int((got[k] != ref[k].numpy()).sum()) for k in maps]
    differ /= len(frames) * HEIGHT * WIDTH
    return float(differ[0]), float(differ[1])


def write_onnx(model: PartsNet, out: Path, frames: list[SyntheticFrame], threshold: float) -> Path:
    """Export ``model`` to ``out/demo-parts.onnx`` (see :func:`export`), say how far onnxruntime's maps are
    from torch's on ``frames``, and stop where they differ on more than 1e-4 of the pixels."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "demo-parts.onnx"
    differ, differ_contact = export(model, path, frames, threshold)
    print(
        f"exported {path} ({path.stat().st_size} bytes); ORT and torch differ on {differ:.1e} of the pixels'"
        f" classes and {differ_contact:.1e} of their contact"
    )
    if max(differ, differ_contact) > 1e-4:
        raise SystemExit(
            f"onnxruntime's maps differ from torch's on {max(differ, differ_contact):.1e} of the pixels"
        )
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--scenes", type=int, default=160, help="training scenes (seeds 1000, 1001, ...)")
    ap.add_argument("--frames", type=int, default=8, help="frames per training scene")
    ap.add_argument("--steps", type=int, default=8000, help="optimizer steps (0: tune --init)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--crop", type=int, default=320, help=f"square training crop (multiple of {STRIDE})")
    ap.add_argument("--lr", type=float, default=4e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--device",
        default="cpu",
        help="torch device to train on (cuda: a GPU); rendering, the grid search and export stay on the CPU",
    )
    ap.add_argument("--out", type=Path, default=REPO / "models")
    ap.add_argument("--checkpoint", type=Path, help="also save the trained weights (torch state_dict) here")
    ap.add_argument(
        "--init",
        type=Path,
        help="start from these weights (a --checkpoint file, or an ONNX file this script wrote)",
    )
    ap.add_argument(
        "--contact-map",
        action="store_true",
        help="also learn where parts touch, as a map of its own (the card's output.contact)",
    )
    ap.add_argument(
        "--branch-only",
        action="store_true",
        help="--contact-map: train only the contact branch, the rest of the net as --init has it",
    )
    ap.add_argument(
        "--export-only",
        action="store_true",
        help="write the ONNX file of --init's weights with this script's graph (no training, no tuning, no "
        "card: the one there stays true where the outputs are the same)",
    )
    ap.add_argument(
        "--freeze-norms",
        action="store_true",
        help="keep the batch norms of the --init weights in inference mode (always so from an ONNX file)",
    )
    args = ap.parse_args()
    if args.crop % STRIDE:
        ap.error(f"--crop must be a multiple of {STRIDE}")
    if args.steps < 0 or (args.steps == 0 and args.init is None):
        ap.error("--steps must be > 0, or 0 with --init (no training: tune and export those weights)")
    if args.export_only and (args.init is None or args.init.suffix != ".onnx"):
        ap.error("--export-only needs --init, an ONNX file this script wrote")
    if args.export_only:
        args.steps = 0  # nothing is trained, or rendered to train on
    if args.branch_only and not (args.contact_map and args.init):
        ap.error("--branch-only needs --contact-map and --init (the net it trains a branch for)")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)

    t0 = time.perf_counter()
    idx = tuple(37 + 211 * k for k in range(args.frames))
    scenes = args.scenes if args.steps else 0  # --steps 0 trains nothing, so renders nothing to train on
    train = render_many([(TRAIN_SEED0 + s, idx) for s in range(scenes)], args.threads)
    images = np.array([f.image for f in train], np.uint8).reshape(-1, HEIGHT, WIDTH, 3)
    labels = tuple(
        np.array([make(f) for f in train], np.uint8).reshape(-1, HEIGHT, WIDTH)
        for make in ((lambda f: f.class_map), weights, *((touching,) if args.contact_map else ()))
    )
    del train  # the instance maps are not needed any more; they would double the memory
    val = render_many([(s, (VAL_INDEX,)) for s in VAL_SEEDS], args.threads)
    render_s = time.perf_counter() - t0
    print(f"rendered {len(images)} training + {len(val)} validation frames in {render_s:.0f} s", flush=True)

    model = PartsNet(len(CLASS_NAMES), args.contact_map).to(
        memory_format=torch.channels_last
    )  # ~1.7x faster convolutions on CPU
    if args.init is not None:
        fresh_branch = False  # a contact branch --init does not give keeps its norms in training mode
        if args.init.suffix == ".onnx":
            fresh_branch = not load_exported(model, args.init) and model.contact is not None
        else:
            model.load_state_dict(torch.load(args.init, weights_only=True))
        if args.freeze_norms or args.init.suffix == ".onnx":
            model.frozen_norms = tuple(
                m
                for name, m in model.named_modules()
                if isinstance(m, nn.BatchNorm2d) and not (fresh_branch and name.startswith("contact."))
            )
        if args.branch_only and model.contact is not None:
            branch = {id(q) for q in model.contact.parameters()}
            for q in model.parameters():
                q.requires_grad_(id(q) in branch)
    if args.export_only:
        write_onnx(model, args.out, val, 0.0)  # (the file's contact threshold is in its branch's bias)
        return
    model.to(args.device)
    model.train()
    params = sum(p.numel() for p in model.parameters())
    trained = [q for q in model.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(trained, lr=args.lr, weight_decay=1e-4)
    total = max(args.steps, 1)  # OneCycleLR refuses 0 steps
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=total, pct_start=0.15)
    steps_per_epoch = max(1, len(images) // args.batch)
    t1 = time.perf_counter()
    losses: list[float] = []
    for step in range(1, args.steps + 1):
        x, crops = batch(images, labels, rng, args.batch, args.crop, args.device)
        y = torch.from_numpy(crops[0].astype(np.int64)).to(args.device)
        w = torch.from_numpy(crops[1].astype(np.float32)).to(args.device)
        contact = torch.from_numpy(crops[2].astype(np.float32)).to(args.device) if args.contact_map else None
        loss = loss_fn(model(x), y, w, contact)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if step % steps_per_epoch == 0 or step == args.steps:
            preds = predict(model, val)
            miou = float(class_iou(val, preds).mean())
            loss_mean = np.mean(losses[-steps_per_epoch:])
            print(
                f"epoch {step / steps_per_epoch:5.2f}  step {step:5d}  loss {loss_mean:.4f}"
                f"  val mIoU {miou:.4f}  {time.perf_counter() - t1:6.0f} s",
                flush=True,
            )
    train_s = time.perf_counter() - t1
    if args.checkpoint is not None:
        torch.save(model.state_dict(), args.checkpoint)
    val_preds = predict(model, val)
    semantic, threshold, pq = tune(val, val_preds)
    per_class = class_iou(val, val_preds)
    at = f", contact logit > {threshold}" if args.contact_map else ""
    print(f"validation: mIoU {per_class.mean():.4f}, PQ {pq:.4f} with {semantic}{at}")
    holdout = render_many([(s, (HOLDOUT_INDEX,)) for s in HOLDOUT_SEEDS], args.threads)
    holdout_preds = predict(model, holdout)
    holdout_miou = float(class_iou(holdout, holdout_preds).mean())
    holdout_pq = panoptic(holdout, holdout_preds, semantic, threshold)
    print(f"hold-out: mIoU {holdout_miou:.4f}, PQ {holdout_pq:.4f}")

    onnx_path = write_onnx(model.cpu(), args.out, val, threshold)
    onnx_bytes = onnx_path.stat().st_size
    card = CARD.format(
        command=" ".join(["scripts/train_demo_model.py", *sys.argv[1:]]),
        trained_on=(
            f"on edgeseg.synthetic.PartsScene seeds {TRAIN_SEED0}..{TRAIN_SEED0 + args.scenes - 1}"
            f" ({args.frames} frames each, 640x480)"
            if args.steps
            else "not trained by this run (--steps 0: only tuned)"
        ),
        val_seeds=f"{VAL_SEEDS[0]}..{VAL_SEEDS[-1]}",
        val_index=VAL_INDEX,
        miou=per_class.mean(),
        per_class=", ".join(f"{v:.4f}" for v in per_class),
        pq=pq,
        holdout_seeds=f"{HOLDOUT_SEEDS[0]}..{HOLDOUT_SEEDS[-1]}",
        holdout_index=HOLDOUT_INDEX,
        holdout_miou=holdout_miou,
        holdout_pq=holdout_pq,
        train_s=train_s,
        threads=args.threads,
        params=params,
        w=WIDTH,
        h=HEIGHT,
        contact=CONTACT.format(threshold=threshold) if args.contact_map else "",
        classes=", ".join(CLASS_NAMES),
        semantic=(TOUCHING if args.contact_map else SPLIT).format(
            sp=semantic, rods=str(semantic.rods).lower()
        ),
    )
    (args.out / "demo-parts.yaml").write_text(card)
    print(f"wrote {args.out / 'demo-parts.yaml'}")
    figures = {
        "miou": round(float(per_class.mean()), 4),
        "per_class_iou": [round(float(v), 4) for v in per_class],
        "pq": round(pq, 4),
        "holdout_miou": round(holdout_miou, 4),
        "holdout_pq": round(holdout_pq, 4),
        "contact_threshold": threshold if args.contact_map else None,
        "train_s": round(train_s, 1),
        "render_s": round(render_s, 1),
        "onnx_bytes": onnx_bytes,
        "params": params,
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
