"""Clean-up of labels: majority filter and minimum region size, with their post-conditions."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_kmeans.cleanup import majority, remove_small_regions


def speckled(shape=(60, 80), k=3, noise=0.15, seed=0):
    """Blocks of labels 1..k with a share ``noise`` of pixels flipped to another label."""
    rng = np.random.default_rng(seed)
    truth = (np.indices(shape)[-1] * k // shape[-1] + 1).astype(np.uint8)
    flip = rng.random(shape) < noise
    noisy = truth.copy()
    noisy[flip] = rng.integers(1, k + 1, flip.sum())
    return truth, noisy


@pytest.mark.parametrize("shape", [(60, 80), (12, 30, 40)])
def test_majority_removes_speckle_and_keeps_zero(shape):
    truth, noisy = speckled(shape)
    noisy[tuple(slice(0, 4) for _ in shape)] = 0  # masked pixels
    out = majority(noisy, 2)
    assert (out[noisy == 0] == 0).all() and (out[noisy > 0] > 0).all()
    inner = tuple(slice(4, None) for _ in shape)
    assert (out[inner] == truth[inner]).mean() > 0.97
    assert (noisy[inner] == truth[inner]).mean() < 0.93
    assert out.dtype == noisy.dtype and set(np.unique(out)) <= set(np.unique(noisy))


def test_majority_ties_keep_the_pixel_and_radius_zero_copies():
    labels = np.array([[1, 2]], np.uint8)
    np.testing.assert_array_equal(majority(labels, 1), labels)
    out = majority(labels, 0)
    np.testing.assert_array_equal(out, labels)
    assert out is not labels


@pytest.mark.parametrize("shape", [(60, 80), (12, 30, 40)])
@pytest.mark.parametrize("min_size", [2, 5, 40])
def test_no_region_is_smaller_than_min_size_after(shape, min_size):
    _, noisy = speckled(shape, noise=0.2, seed=1)
    out = remove_small_regions(noisy, min_size)
    structure = ndi.generate_binary_structure(len(shape), 1)
    for value in np.unique(out[out > 0]):
        regions, _ = ndi.label(out == value, structure=structure)
        sizes = np.bincount(regions.ravel())[1:]
        whole = (out == value).sum()
        assert sizes.min() >= min(min_size, whole), (value, sizes.min())
    changed = out != noisy
    assert changed.any() and (out[noisy == 0] == 0).all()


def test_a_small_region_takes_the_neighbour_with_the_longest_border():
    labels = np.array([[1, 1, 1, 1], [1, 3, 3, 2], [1, 1, 2, 2]], np.uint8)
    # the 3s share 4 faces with label 1 and 2 faces with label 2
    out = remove_small_regions(labels, 3)
    assert (out[1, 1:3] == 1).all()
    labels = np.array([[2, 2, 2, 2], [1, 3, 3, 2], [1, 1, 2, 2]], np.uint8)
    # now they share 4 faces with label 2 and 2 faces with label 1
    out = remove_small_regions(labels, 3)
    assert (out[1, 1:3] == 2).all()


def test_a_region_with_only_masked_neighbours_is_kept():
    labels = np.zeros((5, 5), np.uint8)
    labels[2, 2] = 4
    labels[0, :] = 1
    out = remove_small_regions(labels, 3)
    assert out[2, 2] == 4


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: majority(np.zeros((3, 3)), 1), TypeError, "integer array, got dtype float64"),
        (lambda: majority(np.zeros((3, 3), int), -1), ValueError, "radius"),
        (lambda: remove_small_regions(np.full((2, 2), -1), 2), ValueError, "found -1"),
        (lambda: remove_small_regions(np.zeros((), int), 2), ValueError, "0-d"),
    ],
)
def test_bad_arguments_say_what_and_how(call, error, match):
    with pytest.raises(error, match=match):
        call()
