"""Tests of the order-independent hash sample used for pixels that do not compress."""

from __future__ import annotations

import numpy as np
import pytest

from napari_kmeans import sampling
from napari_kmeans.sampling import hash_sample, hash_values


def sort_rows(values, weights):
    order = np.lexsort(values.T[::-1])
    return values[order], weights[order]


def distinct_pixels(n, c, dtype, seed):
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return rng.normal(0, 1, (n, c)).astype(dtype)
    return rng.integers(0, np.iinfo(dtype).max, (n, c)).astype(dtype)


# -- hash_values --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "c"), [(np.uint16, 3), (np.float32, 4), (np.float64, 2), (np.int32, 1)]
)
def test_hash_is_a_function_of_the_row(dtype, c):
    px = distinct_pixels(2000, c, dtype, 0)
    px = np.concatenate([px, px[:500]])  # repeated rows
    h = hash_values(px, 3)
    assert h.dtype == np.uint64 and h.shape == (2500,)
    np.testing.assert_array_equal(h[2000:], h[:500])
    assert np.unique(h[:2000]).size == 2000  # distinct rows, distinct hashes
    np.testing.assert_array_equal(hash_values(px[::7], 3), h[::7])  # row by row
    np.testing.assert_array_equal(hash_values(np.asfortranarray(px), 3), h)


def _padded_bytes_hash(pixels, seed):
    """The hash as documented: each row's bytes, zero-padded to a multiple of 8, as
    little-endian 64-bit words mixed into the seeded state (a reference implementation)."""
    n = pixels.shape[0]
    row = np.ascontiguousarray(pixels).view(np.uint8).reshape(n, -1)
    if row.shape[1] % 8:
        row = np.concatenate([row, np.zeros((n, 8 - row.shape[1] % 8), np.uint8)], axis=1)
    words = row.view("<u8")
    h = np.full(n, np.uint64((seed * 0x2545F4914F6CDD1D + 1) % (1 << 64)))
    with np.errstate(over="ignore"):
        for w in range(words.shape[1]):
            h ^= words[:, w]
            h *= sampling._MIX
            h ^= h >> np.uint64(31)
        h *= sampling._MIX2
        h ^= h >> np.uint64(29)
    return h


@pytest.mark.parametrize(
    "dtype", ["u1", "i1", "?", "u2", "i2", "f2", ">u2", "f4", ">f4", "u4", "f8", "i8"]
)
@pytest.mark.parametrize("c", [1, 2, 3, 4, 5, 9])
def test_hash_reads_the_padded_row_bytes(dtype, c):
    """The words are assembled from the channels without the padded copy: same hashes."""
    rng = np.random.default_rng(c)
    px = (rng.random((300, c)) * 200 - 50).astype(dtype)
    for arr in (px, np.asfortranarray(px), px[::3]):
        np.testing.assert_array_equal(hash_values(arr, 5), _padded_bytes_hash(arr, 5))


def test_hash_depends_on_the_seed():
    px = distinct_pixels(100, 3, np.float32, 1)
    assert (hash_values(px, 0) != hash_values(px, 1)).mean() > 0.99


def test_hash_bits_look_uniform():
    px = np.arange(20000, dtype=np.uint16).reshape(-1, 2)  # very regular input
    h = hash_values(px, 0)
    top = (h >> np.uint64(60)).astype(int)
    counts = np.bincount(top, minlength=16)
    assert counts.min() > 0.7 * 10000 / 16 and counts.max() < 1.3 * 10000 / 16


# -- hash_sample --------------------------------------------------------------------------------


def test_small_images_are_taken_whole():
    rng = np.random.default_rng(2)
    px = rng.integers(0, 5, (300, 2)).astype(np.int32)
    valid = rng.random(300) < 0.8
    values, weights, whole = hash_sample(px, valid, int(valid.sum()), seed=0)
    assert whole
    expected, counts = np.unique(px[valid], axis=0, return_counts=True)
    got, w = sort_rows(values, weights)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(w, counts)


def big_image(n=40_000, seed=3):
    """Mostly distinct float32 RGB values plus one value repeated on a quarter of the pixels."""
    px = distinct_pixels(n, 3, np.float32, seed)
    px[: n // 4] = (0.25, 0.5, 0.75)
    return px


def test_sample_of_a_large_image():
    px = big_image()
    valid = np.ones(px.shape[0], bool)
    valid[-1000:] = False
    px[-1000:] = 99.0  # invalid pixels must never be sampled
    n_valid = int(valid.sum())
    values, weights, whole = hash_sample(px, valid, n_valid, seed=0, size=2000)
    assert not whole
    assert not (values == 99.0).any()
    rows = {tuple(r) for r in px[valid]}
    assert all(tuple(r) in rows for r in values)
    assert np.unique(values, axis=0).shape[0] == values.shape[0]  # grouped
    # the repeated value enters with its exact count; the others stand for ~1/p pixels each
    heavy = (values == (0.25, 0.5, 0.75)).all(axis=1)
    assert heavy.sum() == 1 and weights[heavy][0] == px.shape[0] // 4
    assert weights.sum() == pytest.approx(n_valid, rel=0.1)
    assert 0.6 * 2000 < values.shape[0] < 1.4 * 2000


def test_sample_ignores_pixel_order_and_chunking(monkeypatch):
    px = big_image()
    valid = np.random.default_rng(4).random(px.shape[0]) < 0.9
    n_valid = int(valid.sum())
    ref = sort_rows(*hash_sample(px, valid, n_valid, seed=5, size=3000)[:2])
    perm = np.random.default_rng(6).permutation(px.shape[0])
    shuffled = sort_rows(*hash_sample(px[perm], valid[perm], n_valid, seed=5, size=3000)[:2])
    np.testing.assert_array_equal(shuffled[0], ref[0])
    np.testing.assert_allclose(shuffled[1], ref[1], rtol=1e-12)
    monkeypatch.setattr(sampling, "CHUNK", 777)
    chunked = sort_rows(*hash_sample(px, valid, n_valid, seed=5, size=3000)[:2])
    np.testing.assert_array_equal(chunked[0], ref[0])
    np.testing.assert_allclose(chunked[1], ref[1], rtol=1e-12)


def test_sample_in_threads_is_the_same(monkeypatch):
    """Chunks sampled by several threads, merged in order, give the one-thread sample."""
    px = big_image()
    valid = np.random.default_rng(7).random(px.shape[0]) < 0.9
    n_valid = int(valid.sum())
    monkeypatch.setattr(sampling, "CHUNK", 999)
    monkeypatch.setattr(sampling, "THREADS", 1)
    ref = hash_sample(px, valid, n_valid, seed=5, size=3000)
    monkeypatch.setattr(sampling, "THREADS", 2)
    got = hash_sample(px, valid, n_valid, seed=5, size=3000)
    np.testing.assert_array_equal(got[0], ref[0])
    np.testing.assert_array_equal(got[1], ref[1])


def test_sample_depends_on_the_seed():
    px = big_image()
    a = hash_sample(px, None, px.shape[0], seed=0, size=2000)[0]
    b = hash_sample(px, None, px.shape[0], seed=1, size=2000)[0]
    common = {tuple(r) for r in a} & {tuple(r) for r in b}
    assert len(common) < 0.5 * min(a.shape[0], b.shape[0])


def test_sample_does_not_modify_pixels():
    px = big_image(n=5000)
    before = px.copy()
    hash_sample(px, None, px.shape[0], seed=0, size=500)
    np.testing.assert_array_equal(px, before)


# -- gray_support: distinct values, the grid or the sample (issue 11) ---------------------------


def _reduce_over(values, n_parts):
    parts = np.array_split(values.reshape(-1, 1), n_parts)

    def reduce(step, merge, **kwargs):
        found = None
        for p in parts:
            one = step(p, **kwargs)
            found = one if found is None else merge(found, one)
        return found

    return reduce


def test_gray_support_on_a_grid_is_independent_of_order_and_chunking():
    rng = np.random.default_rng(21)
    values = rng.gamma(3.0, 20.0, sampling.GRID_MIN_PIXELS + 5000).astype(np.float32)
    a = sampling.gray_support(_reduce_over(values, 1), values.dtype, values.size, 0)
    b = sampling.gray_support(
        _reduce_over(rng.permutation(values), 9), values.dtype, values.size, 0
    )
    assert a.grid is not None and b.grid == a.grid and not a.covers_all
    np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_array_equal(a.weights, b.weights)
    assert a.weights.sum() == values.size


def test_gray_support_keeps_few_float_values_exact():
    """img_as_float of 8-bit data: 256 values, one per bin, are the distinct values."""
    rng = np.random.default_rng(22)
    values = (rng.integers(0, 256, sampling.GRID_MIN_PIXELS + 1) / 255).astype(np.float32)
    found = sampling.gray_support(_reduce_over(values, 3), values.dtype, values.size, 0)
    assert found.covers_all and found.grid is None
    want, counts = np.unique(values, return_counts=True)
    np.testing.assert_array_equal(found.values[:, 0], want)
    np.testing.assert_array_equal(found.weights, counts)


def test_gray_support_with_far_outliers_uses_the_distinct_values():
    rng = np.random.default_rng(23)
    values = rng.normal(0, 1, sampling.GRID_MIN_PIXELS + 10).astype(np.float32)
    values[:3] = 1e30  # one bin would hold all the ordinary data
    found = sampling.gray_support(_reduce_over(values, 2), values.dtype, values.size, 0)
    assert found.grid is None and found.covers_all


# -- by_hash: counting through a table ----------------------------------------------------------


@pytest.mark.parametrize("bits", [4, 10])
def test_by_hash_table_equals_sorting(monkeypatch, bits):
    """Rows counted through the hash table (small tables force collisions and several rounds)
    group exactly as sorting does, whatever the row order."""
    monkeypatch.setattr(sampling, "_TABLE_BITS", bits)
    monkeypatch.setattr(sampling, "_TABLE_SIZE", 1 << bits)
    monkeypatch.setattr(sampling, "_TABLE_MIN", 64)
    rng = np.random.default_rng(bits)
    frequent = rng.integers(0, 1000, (8, 2)).astype(np.uint16)
    rows = np.concatenate([frequent[rng.integers(0, 8, 5000)], rng.integers(0, 60000, (300, 2))])
    rows = rows.astype(np.uint16)
    h = hash_values(rows, 1)
    uh, first, counts = np.unique(h, return_index=True, return_counts=True)
    rounds = []
    table_round = sampling._table_round
    monkeypatch.setattr(sampling, "_table_round", lambda *a: rounds.append(1) or table_round(*a))
    for perm in (np.arange(h.size), rng.permutation(h.size)):
        got = sampling.by_hash(rows[perm], h[perm])
        np.testing.assert_array_equal(got[0], uh)
        np.testing.assert_array_equal(got[1], rows[first])
        np.testing.assert_array_equal(got[2], counts)
    assert rounds  # the table was used


def test_merge_hashed_equals_grouping_everything():
    """Merging two groupings (sorted distinct hashes, rows, counts) groups their union."""
    rng = np.random.default_rng(8)
    rows = rng.integers(0, 30, (3000, 2)).astype(np.uint8)
    h = hash_values(rows, 2)
    a, b = sampling.by_hash(rows[:1000], h[:1000]), sampling.by_hash(rows[1000:], h[1000:])
    uh, first, counts = np.unique(h, return_index=True, return_counts=True)
    for got in (sampling.merge_hashed(a, b), sampling.merge_hashed(b, a)):
        np.testing.assert_array_equal(got[0], uh)
        np.testing.assert_array_equal(got[1], rows[first])
        np.testing.assert_array_equal(got[2], counts)
    empty = sampling.by_hash(rows[:0], h[:0])
    for got in (sampling.merge_hashed(a, empty), sampling.merge_hashed(empty, a)):
        np.testing.assert_array_equal(got[0], a[0])
        np.testing.assert_array_equal(got[2], a[2])


def test_values_enter_with_their_exact_count_from_heavy_min_copies():
    """From ``heavy_min(p)`` = 16 / p copies a value is counted exactly; rarer values are in or
    out whole, standing for 1 / p pixels a copy (or absent)."""
    from napari_kmeans.sampling import heavy_min

    n, size = 200_000, 2000
    p = size / n
    assert heavy_min(p) == 1600
    px = distinct_pixels(n, 3, np.float32, seed=5)
    px[:1600] = (0.25, 0.5, 0.75)  # exactly heavy_min copies
    px[1600:3199] = (0.125, 0.25, 0.375)  # one copy fewer
    for seed in range(4):
        values, weights, _ = hash_sample(px, None, n, seed=seed, size=size)
        at = (values == (0.25, 0.5, 0.75)).all(axis=1)
        assert at.sum() == 1 and weights[at][0] == 1600
        below = (values == (0.125, 0.25, 0.375)).all(axis=1)
        assert below.sum() <= 1
        if below.any():
            assert weights[below][0] == pytest.approx(1599 / p)
