"""Choosing k: the inertia curve and its elbow."""

import numpy as np
import pytest

from napari_kmeans import segment
from napari_kmeans.choose_k import elbow, inertia_curve


def test_gray_curve_is_exact_and_non_increasing():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (50, 50)).astype(np.uint8)
    ks, inertias = inertia_curve(img, 6)
    assert ks.tolist() == [2, 3, 4, 5, 6]
    assert np.all(np.diff(inertias) <= 0)
    for k, inertia in zip(ks, inertias, strict=True):
        assert inertia == pytest.approx(segment(img, int(k)).inertia, rel=1e-9)


def test_rgb_elbow_finds_three_blobs():
    rng = np.random.default_rng(0)
    centers = np.array([[30, 30, 30], [200, 40, 40], [40, 40, 220]])
    img = centers[rng.integers(0, 3, (60, 60))] + rng.normal(0, 4, (60, 60, 3))
    img = np.clip(img, 0, 255).astype(np.uint8)
    ks, inertias = inertia_curve(img, 8)
    assert ks.size == 7
    assert elbow(ks, inertias) == 3


def test_curve_stops_at_number_of_distinct_values():
    img = np.array([[0, 1, 2]], np.uint8)
    ks, inertias = inertia_curve(img, 10)
    assert ks.tolist() == [2, 3]
    assert inertias[-1] == 0


def test_elbow_degenerate():
    assert elbow([2, 3], [5.0, 1.0]) == 2
    assert elbow([2, 3, 4], [1.0, 1.0, 1.0]) == 2


def test_bad_k_range():
    with pytest.raises(ValueError, match="k_max must be at least"):
        inertia_curve(np.zeros((4, 4), np.uint8), 1)
