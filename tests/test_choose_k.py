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


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"n_init": 0}, ValueError, r"n_init must be at least 1, got 0"),  # was AttributeError
        ({"n_init": 10**9}, ValueError, r"n_init must be at most 1000"),
        ({"n_init": 1.5}, TypeError, r"n_init must be an integer, got 1\.5"),
        ({"seed": -1}, ValueError, r"seed must be at least 0, got -1"),
        ({"seed": "0"}, TypeError, r"seed must be an integer, got '0'"),
        ({"k_max": 5000}, ValueError, r"k_max must be at most 1000, got 5000"),
        ({"progress": 3}, TypeError, r"progress must be a callable"),
    ],
)
def test_inertia_curve_validates_its_arguments(kwargs, error, match):
    rgb = np.random.default_rng(0).integers(0, 256, (10, 10, 3)).astype(np.uint8)
    kwargs = {"k_max": 4, **kwargs}
    with pytest.raises(error, match=match):
        inertia_curve(rgb, **kwargs)


@pytest.mark.parametrize(
    ("ks", "inertias"), [([], []), ([2, 3, 4], [1.0, 0.5]), ([[2, 3]], [[1.0, 0.5]])]
)
def test_elbow_refuses_empty_or_mismatched_curves(ks, inertias):
    with pytest.raises(ValueError, match=r"elbow needs ks and inertias of the same length"):
        elbow(ks, inertias)


@pytest.mark.parametrize("kind", ["gray", "rgb"])
def test_inertia_curve_reports_progress_and_can_be_cancelled(kind):
    """How Suggest k shows progress and stops on Cancel."""
    rng = np.random.default_rng(1)
    shape = (80, 90) if kind == "gray" else (80, 90, 3)
    image = rng.integers(0, 256, shape).astype(np.uint8)
    calls = []
    _ks, inertias = inertia_curve(image, 8, progress=lambda f, step: calls.append((f, step)))
    fractions = [f for f, _ in calls]
    assert fractions == sorted(fractions) and fractions[0] >= 0 and fractions[-1] == 1.0
    assert any("k = 8" in step for _, step in calls) or kind == "gray"
    np.testing.assert_array_equal(inertias, inertia_curve(image, 8)[1])

    class Stop(Exception):
        pass

    def stop(fraction, step):
        if fraction > 0.3:
            raise Stop(step)

    with pytest.raises(Stop):
        inertia_curve(image, 8, progress=stop)
