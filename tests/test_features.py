"""Tests of the pixel layout: channel axis, RGB(A), masks, non-finite values, features, casting."""

from __future__ import annotations

import numpy as np
import pytest

from napari_kmeans import features as ft
from napari_kmeans.features import (
    FeatureSpec,
    as_image,
    cast_colors,
    luminance,
    make_spec,
    prepare,
    rgb_scale,
    to_features,
)

# -- make_spec ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "kwargs", "expected"),
    [
        ((5, 6), {}, FeatureSpec(None, False, "rgb", 1)),
        ((7,), {}, FeatureSpec(None, False, "rgb", 1)),
        ((5, 6, 3), {}, FeatureSpec(-1, True, "rgb", 3)),
        ((5, 6, 4), {}, FeatureSpec(-1, True, "rgb", 3)),
        ((2, 5, 6, 3), {}, FeatureSpec(-1, True, "rgb", 3)),
        ((5, 6, 3), {"rgb": False}, FeatureSpec(None, False, "rgb", 1)),
        ((5, 6, 5), {}, FeatureSpec(None, False, "rgb", 1)),
        ((6, 3), {}, FeatureSpec(None, False, "rgb", 1)),  # 2-D: never guessed as RGB
        ((6, 3), {"rgb": True}, FeatureSpec(-1, True, "rgb", 3)),
        ((3, 5, 6), {"channel_axis": 0}, FeatureSpec(-3, False, "rgb", 3)),
        ((3, 5, 6), {"channel_axis": 0, "rgb": True}, FeatureSpec(-3, True, "rgb", 3)),
        ((5, 2, 6), {"channel_axis": 1}, FeatureSpec(-2, False, "rgb", 2)),
        ((5, 6, 7), {"channel_axis": -1}, FeatureSpec(-1, False, "rgb", 7)),
        ((5, 6, 3), {"color_space": "lab"}, FeatureSpec(-1, True, "lab", 3)),
        ((4, 5, 6), {"channel_axis": np.int64(2)}, FeatureSpec(-1, False, "rgb", 6)),
    ],
)
def test_make_spec(shape, kwargs, expected):
    assert make_spec(np.zeros(shape, np.uint8), **kwargs) == expected


@pytest.mark.parametrize(
    ("shape", "kwargs", "error", "match"),
    [
        ((5, 6), {"channel_axis": 2}, ValueError, r"channel_axis=2 is out of range .* \[-2, 1\]"),
        ((5, 6), {"channel_axis": -3}, ValueError, r"out of range"),
        ((5, 6), {"channel_axis": "0"}, TypeError, r"channel_axis must be an integer or None"),
        ((5, 6), {"channel_axis": False}, TypeError, r"channel_axis must be an integer"),
        ((5, 6, 2), {"rgb": True}, ValueError, r"rgb=True needs 3 \(RGB\) or 4 \(RGBA\).* 2"),
        ((5, 6, 5), {"rgb": True}, ValueError, r"found 5 in an image of shape \(5, 6, 5\)"),
        ((5,), {"rgb": True}, ValueError, r"the image is 1-D \(shape \(5,\)\), but rgb=True"),
        ((5, 6), {"color_space": "lab"}, ValueError, r"color_space='lab' needs an RGB image"),
        ((5, 6, 3), {"color_space": "xyz"}, ValueError, r"color_space must be one of"),
        (
            (5, 6, 3),
            {"rgb": False, "channel_axis": -1, "color_space": "lab"},
            ValueError,
            r"read as 3-channel, non-RGB data",
        ),
    ],
)
def test_make_spec_errors(shape, kwargs, error, match):
    with pytest.raises(error, match=match):
        make_spec(np.zeros(shape, np.uint8), **kwargs)


def test_spec_is_independent_of_dimensionality():
    """A negative channel axis means the same for a 2-D slice and a 3-D stack."""
    a = make_spec(np.zeros((3, 5, 6)), channel_axis=0)
    b = make_spec(np.zeros((4, 3, 5, 6)), channel_axis=1)
    assert a == b


# -- as_image -----------------------------------------------------------------------------------


def test_as_image_accepts_lists_and_keeps_arrays():
    image = np.zeros((2, 2), np.uint16)
    assert as_image(image) is image
    np.testing.assert_array_equal(as_image([[1, 2], [3, 4]]), [[1, 2], [3, 4]])


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        (np.zeros((0,)), ValueError, r"image is empty \(shape \(0,\)\)"),
        (np.float32(2), ValueError, r"image is a scalar"),
        (np.zeros(3, np.complex128), TypeError, r"complex dtype complex128"),
        (np.array([None, 1]), TypeError, r"object/string dtype object"),
        (np.array(["ab"]), TypeError, r"object/string dtype <U2"),
        (np.array([b"ab"]), TypeError, r"object/string dtype"),
        (np.zeros(3, "V4"), TypeError, r"void .*dtype \|V4"),
        (
            np.array(["2024-01-01", "NaT"], "datetime64[s]"),
            TypeError,
            r"datetime64 dtype datetime64\[s\].*astype\('int64'\).*NaT",
        ),
        (
            np.array([5, 7], "timedelta64[ms]"),
            TypeError,
            r"timedelta64 dtype timedelta64\[ms\].*np\.timedelta64\(1, 's'\)",
        ),
    ],
)
def test_as_image_errors(value, error, match):
    with pytest.raises(error, match=match):
        as_image(value)


def test_as_image_names_the_argument():
    with pytest.raises(ValueError, match=r"^reference is empty"):
        as_image(np.zeros((2, 0)), name="reference")


# -- prepare ------------------------------------------------------------------------------------


def test_prepare_gray():
    image = np.arange(6, dtype=np.int16).reshape(2, 3)
    prep = prepare(image, make_spec(image))
    np.testing.assert_array_equal(prep.pixels, [[0], [1], [2], [3], [4], [5]])
    assert prep.valid is None and prep.n_valid == 6 and prep.spatial_shape == (2, 3)
    assert prep.dtype == np.int16


def test_prepare_channels_first_is_pixel_major():
    image = np.arange(2 * 2 * 3).reshape(3, 2, 2).astype(np.float32)  # channel_axis 0
    prep = prepare(image, make_spec(image, channel_axis=0))
    np.testing.assert_array_equal(prep.pixels, np.moveaxis(image, 0, -1).reshape(-1, 3))
    assert prep.spatial_shape == (2, 2)


def test_prepare_rgba_drops_alpha_and_masks_transparent():
    image = np.array([[[1, 2, 3, 255], [4, 5, 6, 0]], [[7, 8, 9, 1], [0, 0, 0, 0]]], np.uint8)
    prep = prepare(image, make_spec(image))
    np.testing.assert_array_equal(prep.pixels, [[1, 2, 3], [4, 5, 6], [7, 8, 9], [0, 0, 0]])
    np.testing.assert_array_equal(prep.valid, [True, False, True, False])
    assert prep.n_valid == 2


def test_prepare_nonfinite_in_any_channel_is_invalid():
    image = np.ones((2, 2, 3))
    image[0, 1, 2] = np.nan
    image[1, 0, 0] = -np.inf
    prep = prepare(image, make_spec(image))
    np.testing.assert_array_equal(prep.valid, [True, False, False, True])


def test_prepare_combines_mask_nan_and_alpha():
    image = np.ones((2, 3, 4), np.float32)
    image[0, 0, 0] = np.nan
    image[0, 1, 3] = 0
    mask = np.array([[1, 1, 1], [1, 0, 1]], np.uint8)
    prep = prepare(image, make_spec(image), mask)
    np.testing.assert_array_equal(prep.valid, [False, False, True, True, False, True])
    assert prep.n_valid == 3


def test_prepare_bool_is_viewed_as_uint8():
    image = np.array([[True, False]])
    prep = prepare(image, make_spec(image))
    assert prep.pixels.dtype == np.uint8 and prep.dtype == np.bool_
    np.testing.assert_array_equal(prep.pixels, [[1], [0]])


def test_prepare_does_not_copy_or_modify_the_image():
    image = np.random.default_rng(0).random((4, 5, 3))
    image.flags.writeable = False
    mask = np.ones((4, 5), bool)
    mask.flags.writeable = False
    prep = prepare(image, make_spec(image), mask)
    assert np.shares_memory(prep.pixels, image)  # a view: no copy of a big image
    assert prep.valid is not None and not np.shares_memory(prep.valid, mask)


@pytest.mark.parametrize(
    ("mask", "error", "match"),
    [
        (np.ones((4, 5, 3), bool), ValueError, r"mask has shape \(4, 5, 3\) .* \(4, 5\)"),
        (np.ones((5, 4), bool), ValueError, r"mask has shape \(5, 4\)"),
        (np.ones((4, 5), np.float32), TypeError, r"mask must be boolean or integer .* float32"),
        (np.zeros((4, 5), bool), ValueError, r"no pixel is left to cluster: all 20 pixels"),
    ],
)
def test_prepare_mask_errors(mask, error, match):
    image = np.zeros((4, 5, 3), np.uint8)
    with pytest.raises(error, match=match):
        prepare(image, make_spec(image), mask)


# -- features, dtypes, colours ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "scale"),
    [
        (np.bool_, 1.0),
        (np.uint8, 255.0),
        (np.uint16, 65535.0),
        (np.int16, 32767.0),
        (np.float32, 1.0),
    ],
)
def test_rgb_scale(dtype, scale):
    assert rgb_scale(dtype) == scale


def test_to_features_rgb_is_the_values():
    spec = FeatureSpec(-1, True, "rgb", 3)
    values = np.array([[1, 2, 3]], np.uint16)
    out = to_features(values, spec, np.uint16)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, [[1, 2, 3]])
    # float64 for every input: float32 squared distances would overflow for |x| > ~1e19
    f16 = to_features(values.astype(np.float16), spec, np.float16)
    assert f16.dtype == np.float64


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_to_features_lab_known_colours(dtype):
    top = rgb_scale(dtype)
    values = (np.array([[0, 0, 0], [1, 1, 1], [1, 0, 0]]) * top).astype(dtype)
    lab = to_features(values, FeatureSpec(-1, True, "lab", 3), dtype)
    np.testing.assert_allclose(lab[0], [0, 0, 0], atol=1e-6)
    np.testing.assert_allclose(lab[1], [100, 0, 0], atol=0.01)
    np.testing.assert_allclose(lab[2], [53.24, 80.09, 67.20], atol=0.01)  # sRGB red


def test_luminance_orders_colours():
    rgb = FeatureSpec(-1, True, "rgb", 3)
    colors = np.array([[0, 0, 255], [255, 0, 0], [0, 255, 0]], float)
    np.testing.assert_allclose(luminance(colors, rgb), [0.0722 * 255, 0.2126 * 255, 0.7152 * 255])
    multi = FeatureSpec(-1, False, "rgb", 2)
    np.testing.assert_allclose(luminance(np.array([[1.0, 3.0], [0.0, 0.0]]), multi), [2.0, 0.0])


@pytest.mark.parametrize(
    ("dtype", "colors", "expected"),
    [
        (np.uint8, [[-3.0], [12.5], [13.5], [254.6], [400.0]], [[0], [12], [14], [255], [255]]),
        (np.int8, [[-200.0], [-1.5], [127.4]], [[-128], [-2], [127]]),
        (np.uint16, [[70000.0], [0.49]], [[65535], [0]]),
        (np.bool_, [[0.49], [0.5], [0.9]], [[False], [True], [True]]),
        (np.float16, [[0.1], [70000.0]], np.array([[0.1], [np.inf]], np.float16)),
        (np.float32, [[0.1]], np.array([[0.1]], np.float32)),
        # 64-bit: float(max) rounds up to 2**64 / 2**63, whose cast would wrap around
        (
            np.uint64,
            [[2.0**64], [1e30], [-5.0], [2.0**63]],
            [[2**64 - 1], [2**64 - 1], [0], [2**63]],
        ),
        (
            np.int64,
            [[2.0**63], [-(2.0**63)], [-1e30], [-2.5]],
            [[2**63 - 1], [-(2**63)], [-(2**63)], [-2]],
        ),
        (np.int32, [[2.0**31], [-(2.0**31) - 7]], [[2**31 - 1], [-(2**31)]]),
    ],
)
def test_cast_colors(dtype, colors, expected):
    with np.errstate(over="ignore"):
        out = cast_colors(np.array(colors), dtype)
    assert out.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(out, expected)


def test_color_spaces_constant():
    assert ft.COLOR_SPACES == ("rgb", "lab")


def test_integer_masks_count_only_positive_values_as_inside():
    """A Labels layer used as mask: label > 0 is inside, as the docs say; negatives are outside."""
    image = np.arange(6, dtype=np.uint8).reshape(2, 3)
    spec = make_spec(image)
    mask = np.array([[1, -1, 0], [7, -5, 2]], np.int32)
    prep = ft.prepare(image, spec, mask)
    np.testing.assert_array_equal(prep.valid, [True, False, False, True, False, True])
    assert prep.n_valid == 3
    assert ft.prepare(image, spec, mask > 0).valid.tolist() == prep.valid.tolist()


@pytest.mark.parametrize(("dtype", "channels"), [(np.uint8, 1), (bool, 1), (np.uint16, 1),
                                                  (np.float32, 1), (np.uint8, 3)])  # fmt: skip
def test_cluster_sums_equal_the_direct_sums(dtype, channels):
    """cluster_sums (joint histogram for 8-bit, weighted counts otherwise, in slices) gives the
    counts and sums of labels 1..k, label 0 left out, whatever the slice boundaries."""
    from napari_kmeans.features import SUMS_STEP, cluster_sums

    rng = np.random.default_rng(0)
    n, k = 2 * SUMS_STEP + 123, 5
    labels = rng.integers(0, k + 1, n).astype(np.uint8)
    values = (rng.random((n, channels)) * 250).astype(dtype)
    counts, sums = cluster_sums(labels, values, k)
    for j in range(1, k + 1):
        assert counts[j - 1] == np.count_nonzero(labels == j)
        np.testing.assert_allclose(sums[j - 1], values[labels == j].sum(axis=0, dtype=float))
