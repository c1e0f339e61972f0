"""Tests of the exact one-dimensional k-means (dynamic programming) and its Lloyd fallback."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from napari_kmeans import kmeans1d
from napari_kmeans.kmeans1d import (
    assign_1d,
    inertia_curve_1d,
    kmeans_1d,
    kmeans_1d_exact,
    label_1d,
    thresholds,
)


def partition_cost(x, w, bounds):
    """Weighted sum of squares of the intervals ``x[bounds[c]:bounds[c + 1]]`` about their means."""
    total = 0.0
    for lo, hi in itertools.pairwise(bounds):
        mean = np.dot(w[lo:hi], x[lo:hi]) / w[lo:hi].sum()
        total += np.dot(w[lo:hi], (x[lo:hi] - mean) ** 2)
    return total


def brute_force(x, w, k):
    """Least cost over every split of the sorted values into k non-empty intervals."""
    return min(
        partition_cost(x, w, (0, *cuts, x.size))
        for cuts in itertools.combinations(range(1, x.size), k - 1)
    )


def reference_dp(x, w, k):
    """The textbook O(k n^2) dynamic programme (Wang & Song 2011), vectorized over splits."""
    W = np.concatenate([[0], np.cumsum(w)])
    S = np.concatenate([[0], np.cumsum(w * x)])
    Q = np.concatenate([[0], np.cumsum(w * x * x)])
    n = x.size

    def cost(i, j):  # values i..j-1
        s = S[j] - S[i]
        return Q[j] - Q[i] - s * s / (W[j] - W[i])

    D = np.full(n + 1, np.inf)
    D[1:] = cost(np.zeros(n, int), np.arange(1, n + 1))
    for _ in range(2, k + 1):
        new = np.full(n + 1, np.inf)
        for j in range(2, n + 1):
            i = np.arange(1, j)
            new[j] = np.min(D[i] + cost(i, np.full_like(i, j)))
        D = new
    return D[n]


def check_result(x, w, k, res):
    """Centres are the interval means, ascending; bounds split x into k non-empty intervals."""
    assert res.centers.shape == (k,) and res.bounds.shape == (k + 1,)
    assert res.bounds[0] == 0 and res.bounds[-1] == x.size
    assert (np.diff(res.bounds) > 0).all()
    assert (np.diff(res.centers) > 0).all()
    for c in range(k):
        lo, hi = res.bounds[c], res.bounds[c + 1]
        mean = np.dot(w[lo:hi], x[lo:hi]) / w[lo:hi].sum()
        assert res.centers[c] == pytest.approx(mean, rel=1e-9, abs=1e-9)
    assert res.inertia == pytest.approx(partition_cost(x, w, res.bounds), rel=1e-9, abs=1e-9)


def test_docstring_example():
    res = kmeans_1d_exact(np.array([0.0, 1.0, 10.0, 11.0]), np.ones(4), 2)
    np.testing.assert_allclose(res.centers, [0.5, 10.5])
    np.testing.assert_array_equal(res.bounds, [0, 2, 4])
    assert res.inertia == pytest.approx(1.0) and res.exact and res.n_iter == 0


def test_hand_computed_weighted():
    # 0 (x3), 1 (x1) | 10 (x1), 12 (x1) | 100 (x2)
    x = np.array([0.0, 1.0, 10.0, 12.0, 100.0])
    w = np.array([3.0, 1.0, 1.0, 1.0, 2.0])
    res = kmeans_1d_exact(x, w, 3)
    np.testing.assert_array_equal(res.bounds, [0, 2, 4, 5])
    np.testing.assert_allclose(res.centers, [0.25, 11.0, 100.0])
    # 3 * 0.25^2 + 0.75^2 + 1 + 1 = 2.75
    assert res.inertia == pytest.approx(2.75)


def test_one_cluster_is_mean_and_variance():
    x = np.array([1.0, 2.0, 4.0])
    w = np.array([1.0, 2.0, 1.0])
    res = kmeans_1d_exact(x, w, 1)
    np.testing.assert_allclose(res.centers, [2.25])
    assert res.inertia == pytest.approx(1.5625 + 2 * 0.0625 + 3.0625)


def test_k_equals_n_is_zero_inertia():
    x = np.array([-3.0, 0.5, 7.0, 8.0])
    res = kmeans_1d_exact(x, np.array([1.0, 5.0, 2.0, 1.0]), 4)
    np.testing.assert_allclose(res.centers, x, rtol=1e-15)
    assert res.inertia == pytest.approx(0.0, abs=1e-20)


@pytest.mark.parametrize("k", [0, -1, 5])
def test_k_out_of_range(k):
    with pytest.raises(ValueError, match=r"k must be in \[1, 4\] for 4 distinct values"):
        kmeans_1d_exact(np.arange(4.0), np.ones(4), k)


@st.composite
def weighted_values(draw, max_n=10):
    values = draw(st.lists(st.integers(-500, 500), min_size=1, max_size=max_n, unique=True))
    x = np.sort(np.array(values, np.float64)) / draw(st.sampled_from([1.0, 3.0, 0.01]))
    w = np.array(draw(st.lists(st.integers(1, 50), min_size=x.size, max_size=x.size)), float)
    k = draw(st.integers(1, x.size))
    return x, w, k


@settings(max_examples=150, deadline=None)
@given(weighted_values())
def test_exact_equals_brute_force(data):
    x, w, k = data
    res = kmeans_1d_exact(x, w, k)
    check_result(x, w, k, res)
    assert res.inertia == pytest.approx(brute_force(x, w, k), rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("k", [2, 3, 5, 8])
@pytest.mark.parametrize("n", [50, 257])
def test_exact_equals_reference_dp_larger(n, k):
    rng = np.random.default_rng(n * k)
    # clustered values with heavy tails: many near-ties among split points
    x = np.unique(np.round(rng.standard_t(2, n) * 40 + rng.integers(0, 4, n) * 300, 2))
    w = rng.integers(1, 100, x.size).astype(float)
    res = kmeans_1d_exact(x, w, k)
    check_result(x, w, k, res)
    assert res.inertia == pytest.approx(reference_dp(x, w, k), rel=1e-9)


def test_large_offset_keeps_precision():
    """Values far from zero (16-bit-like offsets, or 1e8) must not lose the small differences."""
    x = 1e8 + np.array([0.0, 1.0, 2.0, 10.0, 11.0, 12.0])
    res = kmeans_1d_exact(x, np.ones(6), 2)
    np.testing.assert_array_equal(res.bounds, [0, 3, 6])
    np.testing.assert_allclose(res.centers, 1e8 + np.array([1.0, 11.0]))
    assert res.inertia == pytest.approx(4.0, rel=1e-9)


@pytest.mark.parametrize("offset", [1e6, 1e9, 1e12])
def test_exact_with_two_far_apart_modes(offset):
    """Tight groups of values far from the overall mean (a fill value such as 1e9 or -3.4e38
    next to real data): the optimum inside each mode must still be found."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        a = np.unique(rng.integers(0, 60, 6))
        b = np.unique(rng.integers(0, 60, 6))
        x = np.concatenate([-offset + a, offset + b]).astype(float)
        w = rng.integers(1, 5, x.size).astype(float)
        res = kmeans_1d_exact(x, w, 4)
        best = brute_force(x, w, 4)
        assert res.inertia == pytest.approx(best, rel=1e-9), (x + offset * np.sign(-x), w)


def test_equal_weight_ties_pick_a_valid_optimum():
    # symmetric: {0, 1} {2} or {0} {1, 2} are both optimal with inertia 0.5
    x = np.array([0.0, 1.0, 2.0])
    res = kmeans_1d_exact(x, np.ones(3), 2)
    assert res.inertia == pytest.approx(0.5)
    check_result(x, np.ones(3), 2, res)


def test_kmeans_1d_is_exact_below_the_limit():
    x = np.arange(20.0) ** 2
    w = np.ones(20)
    a, b = kmeans_1d(x, w, 4), kmeans_1d_exact(x, w, 4)
    assert a.exact
    np.testing.assert_array_equal(a.bounds, b.bounds)


def test_kmeans_1d_fallback_beyond_the_limit(monkeypatch):
    """Many distinct values: quantile groups seed 1-D Lloyd; the result is flagged not exact."""
    monkeypatch.setattr(kmeans1d, "EXACT_MAX_DISTINCT", 100)
    monkeypatch.setattr(kmeans1d, "_GROUPS", 16)
    rng = np.random.default_rng(3)
    x = np.unique(np.concatenate([rng.normal(m, 1.0, 100) for m in (0, 20, 45)]))
    w = rng.integers(1, 5, x.size).astype(float)
    res = kmeans_1d(x, w, 3)
    assert not res.exact and res.n_iter >= 1
    check_result(x, w, 3, res)
    assert res.inertia == pytest.approx(kmeans_1d_exact(x, w, 3).inertia, rel=1e-9)
    # a Lloyd fixed point: every value is nearest to its own centre
    idx = np.repeat(np.arange(3), np.diff(res.bounds))
    np.testing.assert_array_equal(assign_1d(x, thresholds(res.centers)), idx)


@pytest.mark.parametrize("k_max", [1, 4, 9])
def test_inertia_curve_matches_single_solves(k_max):
    rng = np.random.default_rng(k_max)
    x = np.unique(rng.integers(0, 1000, 60)).astype(float)
    w = rng.integers(1, 9, x.size).astype(float)
    curve = inertia_curve_1d(x, w, k_max)
    expected = [kmeans_1d_exact(x, w, k).inertia for k in range(1, k_max + 1)]
    np.testing.assert_allclose(curve, expected, rtol=1e-9, atol=1e-9)
    assert (np.diff(curve) <= 1e-9).all()


def test_inertia_curve_stops_at_n():
    curve = inertia_curve_1d(np.array([1.0, 5.0]), np.ones(2), 5)
    np.testing.assert_allclose(curve, [8.0, 0.0])


def test_thresholds_and_assign():
    centers = np.array([1.0, 2.0, 10.0])
    np.testing.assert_array_equal(thresholds(centers), [1.5, 6.0])
    values = np.array([-5.0, 1.0, 1.5, 1.5001, 6.0, 6.1, 99.0])
    # ties (exactly on a threshold) go to the lower centre
    np.testing.assert_array_equal(assign_1d(values, thresholds(centers)), [0, 0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(assign_1d(values, thresholds(np.array([3.0]))), [0] * 7)


@settings(max_examples=60, deadline=None)
@given(
    centers=st.lists(st.integers(-1000, 1000), min_size=1, max_size=8, unique=True),
    values=st.lists(st.integers(-1500, 1500), min_size=1, max_size=40),
)
def test_assign_is_nearest_centre(centers, values):
    c = np.sort(np.array(centers, float)) / 4
    v = np.array(values, float) / 3
    idx = assign_1d(v, thresholds(c))
    d = np.abs(v[:, None] - c[None, :])
    np.testing.assert_allclose(d[np.arange(v.size), idx], d.min(axis=1), atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_label_1d_compares_like_float64(dtype):
    """label_1d compares float32/float16 values with a threshold of their own dtype; the labels
    are those of the float64 comparison (assign_1d), also on values next to the thresholds."""
    rng = np.random.default_rng(0)
    centers = np.sort(rng.normal(0, 50, 6)).astype(np.float64)
    thr = (centers[1:] + centers[:-1]) / 2
    near = np.concatenate([thr, np.nextafter(thr, np.inf), np.nextafter(thr, -np.inf)])
    values = np.concatenate([rng.normal(0, 80, 5000), near, [np.inf, -np.inf, 0.0]])
    values = values.astype(dtype)
    values = np.concatenate([values, np.nextafter(values, dtype(np.inf)).astype(dtype)])
    idx, counts, _ = label_1d(values, centers)
    expected = assign_1d(values.astype(np.float64), thr)
    np.testing.assert_array_equal(idx, expected)
    np.testing.assert_array_equal(counts, np.bincount(expected, minlength=6))
