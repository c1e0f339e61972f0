"""Tests of pixel compression: codes, distinct values with counts, and the label look-up."""

from __future__ import annotations

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from napari_kmeans import compress as cp
from napari_kmeans.compress import Codec, codec_for, compress, lookup


@pytest.mark.parametrize(
    ("dtype", "n_channels", "bits"),
    [
        (np.uint8, 1, 8),
        (np.uint8, 2, 8),
        (np.uint8, 3, 8),
        (np.int8, 3, 8),
        (np.bool_, 1, 8),
        (np.bool_, 3, 8),
        (np.uint16, 1, 16),
        (np.int16, 1, 16),
        (np.float16, 1, 16),
    ],
)
def test_codec_for_compressible(dtype, n_channels, bits):
    codec = codec_for(dtype, n_channels)
    assert codec is not None and codec.bits == bits and codec.n_channels == n_channels
    assert codec.n_codes == 1 << (bits * n_channels)


@pytest.mark.parametrize(
    ("dtype", "n_channels"),
    [
        (np.uint8, 4),
        (np.uint16, 2),
        (np.uint16, 3),
        (np.float16, 3),
        (np.int32, 1),
        (np.uint32, 1),
        (np.float32, 1),
        (np.float64, 3),
    ],
)
def test_codec_for_incompressible(dtype, n_channels):
    assert codec_for(dtype, n_channels) is None


CODEC_CASES = [
    (np.uint8, 1),
    (np.uint8, 2),
    (np.uint8, 3),
    (np.int8, 1),
    (np.int8, 2),
    (np.int8, 3),
    (np.uint16, 1),
    (np.int16, 1),
    (np.float16, 1),
]


@st.composite
def pixel_arrays(draw):
    dtype, c = draw(st.sampled_from(CODEC_CASES))
    n = draw(st.integers(1, 50))
    pixels = draw(hnp.arrays(np.dtype(dtype), (n, c)))
    if draw(st.booleans()):  # a non-contiguous view (a channel-first image, moved)
        pixels = np.asfortranarray(pixels)
    return pixels


@settings(max_examples=80, deadline=None)
@given(pixel_arrays())
def test_encode_decode_round_trip(pixels):
    codec = codec_for(pixels.dtype, pixels.shape[1])
    codes = codec.encode(pixels)
    assert codes.shape == (pixels.shape[0],)
    assert codes.dtype.kind in "ui"
    assert int(codes.min()) >= 0 and int(codes.max()) < codec.n_codes
    back = codec.decode(codes)
    assert back.dtype == pixels.dtype and back.shape == pixels.shape
    unsigned = np.dtype(f"u{pixels.dtype.itemsize}")
    bits_in = pixels.view(unsigned)
    if pixels.dtype.kind == "f":  # -0.0 is encoded as +0.0 (one value, one code)
        bits_in = np.where(bits_in == 0x8000, 0, bits_in)
    np.testing.assert_array_equal(back.view(unsigned), bits_in)
    # equal pixels <-> equal codes
    same_pixel = (bits_in[:, None, :] == bits_in[None, :, :]).all(axis=2)
    np.testing.assert_array_equal(codes[:, None] == codes[None, :], same_pixel)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.uint16, np.int16])
def test_single_channel_codes_follow_value_order(dtype):
    info = np.iinfo(dtype)
    values = np.array([info.min, -1 if info.min < 0 else 1, 0, 5, info.max], dtype)[:, None]
    codes = codec_for(dtype, 1).encode(values)
    np.testing.assert_array_equal(np.argsort(codes, kind="stable"), np.argsort(values[:, 0]))


def test_rgb_codes_are_little_endian_packed():
    px = np.array([[1, 2, 3], [255, 0, 0], [0, 0, 255]], np.uint8)
    codes = codec_for(np.uint8, 3).encode(px)
    np.testing.assert_array_equal(codes, [1 | 2 << 8 | 3 << 16, 255, 255 << 16])
    two = codec_for(np.uint8, 2).encode(px[:, :2].copy())
    np.testing.assert_array_equal(two, [1 | 2 << 8, 255, 0])


@pytest.mark.parametrize("n", [1, 2, 17])
def test_pack_contiguous_and_strided_agree(n):
    rng = np.random.default_rng(n)
    image = rng.integers(0, 256, (n, 4), dtype=np.uint8)
    rgb_view = image[:, :3]  # strided rows (RGBA with alpha dropped)
    codec = codec_for(np.uint8, 3)
    np.testing.assert_array_equal(codec.encode(rgb_view), codec.encode(rgb_view.copy()))


def test_float16_signed_zero_and_nonfinite():
    px = np.array([[-0.0], [0.0], [np.nan], [np.inf], [1.5], [-np.inf]], np.float16)
    comp = compress(px, ~np.isnan(px[:, 0]) & np.isfinite(px[:, 0]))
    np.testing.assert_array_equal(comp.values[:, 0], [0.0, 1.5])
    np.testing.assert_array_equal(comp.counts, [2, 1])
    # even without a valid mask, NaN/inf never become distinct values
    comp = compress(px, None)
    assert np.isfinite(comp.values).all()


def reference(pixels, valid):
    rows = pixels if valid is None else pixels[valid]
    return np.unique(rows, axis=0, return_counts=True)


@pytest.mark.parametrize(
    ("dtype", "c", "n"),
    [
        (np.uint8, 1, 10),  # few pixels: the sorting path
        (np.uint8, 1, 1000),  # the histogram path
        (np.bool_, 1, 200),
        (np.uint8, 3, 5000),
        (np.int8, 2, 300),
        (np.uint16, 1, 100),
        (np.uint16, 1, 70000),
        (np.int16, 1, 70000),
    ],
)
@pytest.mark.parametrize("masked", [False, True])
def test_compress_matches_unique(dtype, c, n, masked):
    rng = np.random.default_rng(n + c)
    if dtype == np.bool_:
        pixels = rng.random((n, c)) < 0.3
        px = pixels.view(np.uint8)
    else:
        info = np.iinfo(dtype)
        pixels = rng.integers(info.min, int(info.max) + 1, (n, c)).astype(dtype)
        px = pixels
    valid = rng.random(n) < 0.7 if masked else None
    comp = compress(px, valid)
    values, counts = reference(px, valid)
    order = np.lexsort(comp.values.T[::-1])
    np.testing.assert_array_equal(comp.values[order], values)
    np.testing.assert_array_equal(comp.counts[order], counts)
    assert comp.codes.shape == (n,)
    np.testing.assert_array_equal(comp.codec.decode(comp.codes), px)
    assert (np.diff(comp.distinct.astype(np.int64)) > 0).all()


def test_compress_histogram_in_chunks(monkeypatch):
    rng = np.random.default_rng(1)
    px = rng.integers(0, 256, (1000, 1)).astype(np.uint8)
    valid = rng.random(1000) < 0.5
    whole = compress(px, valid)
    monkeypatch.setattr(cp, "HIST_CHUNK", 37)
    chunked = compress(px, valid)
    np.testing.assert_array_equal(whole.distinct, chunked.distinct)
    np.testing.assert_array_equal(whole.counts, chunked.counts)


@pytest.mark.parametrize(
    ("dtype", "c"), [(np.float32, 1), (np.uint16, 3), (np.uint8, 4), (np.int32, 1)]
)
def test_compress_returns_none_when_not_compressible(dtype, c):
    assert compress(np.zeros((5, c), dtype), None) is None


def test_compress_does_not_modify_pixels():
    px = np.random.default_rng(2).integers(-128, 128, (300, 3)).astype(np.int8)
    before = px.copy()
    compress(px, None)
    np.testing.assert_array_equal(px, before)


def test_lookup_fills_invalid_and_ignores_chunking(monkeypatch):
    lut = np.array([5, 6, 7, 8], np.uint8)
    codes = np.array([0, 3, 3, 1, 2, 0, 1], np.uint16)
    valid = np.array([1, 1, 0, 1, 1, 0, 1], bool)
    expected = np.where(valid, lut[codes], 0)
    np.testing.assert_array_equal(lookup(lut, codes, valid), expected)
    np.testing.assert_array_equal(lookup(lut, codes, None), lut[codes])
    monkeypatch.setattr(cp, "CHUNK", 2)
    np.testing.assert_array_equal(lookup(lut, codes, valid), expected)
    np.testing.assert_array_equal(lookup(lut, codes, valid, fill=9), np.where(valid, lut[codes], 9))


def test_codec_is_a_frozen_value():
    a, b = Codec(np.dtype(np.uint8), 3, 8), codec_for(np.uint8, 3)
    assert a == b
    with pytest.raises(AttributeError):
        a.bits = 4


# -- the grid of single-channel data that do not compress (issue 11) ------------------------------


def test_grid_counts_are_exact_and_independent_of_order_and_chunking():
    rng = np.random.default_rng(11)
    values = rng.gamma(2.0, 50.0, 300_000).astype(np.float32)
    grid = cp.Grid(float(values.min()), float(values.max()), bins=1 << 10)
    whole = cp.grid_counts(values, grid)
    assert whole[0].sum() == values.size
    shuffled = rng.permutation(values)
    parts = [cp.grid_counts(p, grid) for p in np.array_split(shuffled, 7)]
    merged = parts[0]
    for p in parts[1:]:
        merged = cp.merge_grid(merged, p)
    np.testing.assert_array_equal(merged[0], whole[0])
    np.testing.assert_array_equal(merged[1], whole[1])
    # each bin's mean is that of its pixels, to the fixed-point resolution (range / 2**30)
    support = cp.grid_support(grid, *whole, values.size)
    idx = grid.bin_of(grid.fixed(values))
    means = np.bincount(idx, weights=values, minlength=grid.bins)[support.distinct]
    means /= support.weights
    np.testing.assert_allclose(support.values[:, 0], means, rtol=0, atol=2 * 2**-30 * 600)


def test_grid_band_gathers_exactly_the_pixels_of_the_bins():
    rng = np.random.default_rng(12)
    values = rng.normal(0, 1, 200_000)
    grid = cp.Grid(float(values.min()), float(values.max()), bins=256)
    bins = np.array([3, 100, 101, 102, 200])
    found, counts = cp.grid_band(values, grid, bins)
    inside = np.isin(grid.bin_of(grid.fixed(values)), bins)
    want, want_counts = np.unique(values[inside], return_counts=True)
    np.testing.assert_array_equal(found, want)
    np.testing.assert_array_equal(counts, want_counts)


def test_bin_values_tell_one_value_per_bin():
    values = np.repeat(np.linspace(0, 1, 256, dtype=np.float32), 7)
    grid = cp.Grid(0.0, 1.0, bins=1 << 14)
    rep, single = cp.merge_bin_values(
        cp.bin_values(values[::2], grid), cp.bin_values(values[1::2], grid)
    )
    assert single
    np.testing.assert_array_equal(np.sort(rep[~np.isnan(rep)]), np.unique(values))
    assert not cp.bin_values(values + np.float32(1e-3) * (np.arange(values.size) % 2), grid)[1]
