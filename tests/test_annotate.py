"""``annotate`` draws a new image and leaves its inputs alone."""

from __future__ import annotations

import numpy as np
import pytest

from edgeseg.annotate import annotate
from edgeseg.errors import InputError
from edgeseg.instances import Instances


def scene() -> tuple[np.ndarray, Instances]:
    img = np.full((60, 80, 3), 100, np.uint8)
    disc = np.zeros((15, 15), bool)
    yy, xx = np.mgrid[0:15, 0:15]
    disc[(yy - 7) ** 2 + (xx - 7) ** 2 <= 49] = True
    inst = Instances.from_crops(
        (60, 80), [1, 2], [0.9, 0.8], [(10, 10), (50, 30)], [disc, np.ones((10, 20), bool)]
    )
    return img, inst


def test_annotate_returns_a_new_image_and_never_mutates_the_input() -> None:
    img, inst = scene()
    before = img.copy()
    out = annotate(img, inst, ("bg", "nut", "bolt"), hud=["12.0 fps"])
    assert out is not img
    assert np.array_equal(img, before)
    assert out.shape == img.shape
    assert out.dtype == np.uint8


def test_masks_are_blended_only_inside_the_instances() -> None:
    img, inst = scene()
    out = annotate(img, inst, labels=False, boxes="none")
    dense = inst.dense_masks().any(axis=0)
    assert (out[dense] != 100).any(axis=1).all()
    far = np.zeros_like(dense)
    far[45:, :40] = True  # away from both instances
    assert (out[far] == 100).all()


def test_ground_truth_adds_live_accuracy_to_the_hud() -> None:
    img, inst = scene()
    plain = annotate(img, inst, labels=False, boxes="none")
    with_truth = annotate(img, inst, labels=False, boxes="none", truth=inst)
    assert not np.array_equal(plain[:12], with_truth[:12])  # the HUD line is drawn in the top-left corner


def test_instances_of_another_frame_size_are_rejected() -> None:
    img, inst = scene()
    with pytest.raises(InputError, match="frame"):
        annotate(img[:30], inst)
