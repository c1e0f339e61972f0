"""Tests of weighted Lloyd k-means, greedy k-means++ seeding and weighted subsampling."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import napari_kmeans.lloyd as lloyd_module
from napari_kmeans.lloyd import (
    assign,
    kmeans,
    kmeans_plusplus,
    lloyd,
    weighted_subsample,
)


def sqdist(points, centers):
    p = np.asarray(points, np.float64)
    c = np.asarray(centers, np.float64)
    return ((p[:, None, :] - c[None, :, :]) ** 2).sum(axis=2)


def weighted_means(points, weights, labels, k):
    mass = np.bincount(labels, weights=weights, minlength=k)
    sums = np.stack([np.bincount(labels, weights=weights * p, minlength=k) for p in points.T], 1)
    return sums / mass[:, None], mass


def check_result(points, weights, k, res, *, rtol=1e-9, allow_empty=False):
    """Labels are nearest centres; inertia is the weighted sum of squares; no cluster is empty."""
    d2 = sqdist(points, res.centers)
    mine = d2[np.arange(points.shape[0]), res.labels]
    scale = 1e-5 if points.dtype == np.float32 else 1e-12
    assert (mine <= d2.min(axis=1) + scale * (1 + np.abs(points).max() ** 2)).all()
    assert res.inertia == pytest.approx(float(weights @ mine), rel=rtol, abs=1e-9)
    assert res.centers.shape == (k, points.shape[1])
    assert res.centers.dtype == points.dtype
    if not allow_empty:
        assert (np.bincount(res.labels, minlength=k) > 0).all(), "an empty cluster"


def blobs(n_per, centers, spread, rng, dtype=np.float64):
    centers = np.asarray(centers, float)
    pts = np.concatenate([c + rng.normal(0, spread, (n_per, centers.shape[1])) for c in centers])
    return pts.astype(dtype)


# -- assign -------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_assign_is_brute_force_argmin(dtype):
    rng = np.random.default_rng(0)
    points = rng.normal(0, 3, (500, 3)).astype(dtype)
    centers = rng.normal(0, 3, (7, 3)).astype(dtype)
    labels, d2 = assign(points, centers)
    full = sqdist(points, centers)
    np.testing.assert_array_equal(labels, full.argmin(axis=1))
    np.testing.assert_allclose(d2, full.min(axis=1), rtol=1e-5 if dtype == np.float32 else 1e-12)
    assert d2.dtype == np.float64


def test_assign_ties_go_to_the_first_centre():
    labels, d2 = assign(np.array([[0.0, 0.0], [2.0, 0.0]]), np.array([[1.0, 0.0], [-1.0, 0.0]]))
    np.testing.assert_array_equal(labels, [0, 0])
    np.testing.assert_allclose(d2, [1.0, 1.0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("d", [1, 2, 3, 4])
def test_assign_labels_as_scipy_vq(dtype, d):
    """The direct-difference kernel gives scipy's vq labels (the kernel it replaced), also on
    integer-valued data with exact ties, and distances within rounding of vq's."""
    from scipy.cluster.vq import vq

    rng = np.random.default_rng(d)
    points = rng.integers(0, 40, (5000, d)).astype(dtype)
    centers = rng.integers(0, 40, (6, d)).astype(dtype) + 0.5 * rng.integers(0, 2, (6, d))
    centers = centers.astype(dtype)
    ref, dist = vq(points, centers, check_finite=False)
    for labels, d2 in (assign(points, centers), lloyd_module._nearest_few(points, centers)):
        np.testing.assert_array_equal(labels, ref)
        np.testing.assert_allclose(d2, dist.astype(np.float64) ** 2, rtol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("d", [3, 4])
def test_numpy_kernel_gives_the_labels_of_vq(dtype, d):
    """The numpy kernel has vq's arithmetic: the same labels on many random points, and
    distances within rounding."""
    rng = np.random.default_rng(10 + d)
    points = rng.normal(0, 50, (200_000, d)).astype(dtype)
    centers = rng.normal(0, 30, (8, d)).astype(dtype)
    ref, ref_d2 = assign(points, centers)
    labels, d2 = lloyd_module._nearest_few(points, centers)
    np.testing.assert_array_equal(labels, ref)
    np.testing.assert_allclose(d2, ref_d2, rtol=1e-5 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32])
@pytest.mark.parametrize("d", [2, 3, 4, 5])
def test_assign_integer_points_as_their_float64_values(dtype, d):
    rng = np.random.default_rng(d)
    points = rng.integers(0, 200, (3000, d)).astype(dtype)
    centers = rng.uniform(0, 200, (5, d))
    got = assign(points, centers)
    ref = assign(points.astype(np.float64), centers)
    np.testing.assert_array_equal(got[0], ref[0])
    np.testing.assert_array_equal(got[1], ref[1])


def test_assign_does_not_depend_on_chunking():
    rng = np.random.default_rng(1)
    points = rng.random((1000, 4)).astype(np.float32)
    centers = rng.random((5, 4)).astype(np.float32)
    whole = assign(points, centers)
    parts = [assign(points[s : s + 137], centers) for s in range(0, 1000, 137)]
    np.testing.assert_array_equal(whole[0], np.concatenate([p[0] for p in parts]))
    np.testing.assert_array_equal(whole[1], np.concatenate([p[1] for p in parts]))


# -- seeding ------------------------------------------------------------------------------------


def test_kmeans_plusplus_picks_distinct_rows_of_the_data():
    rng = np.random.default_rng(2)
    points = blobs(50, [[0, 0], [10, 0], [0, 10], [10, 10]], 0.5, rng)
    centers = kmeans_plusplus(points, np.ones(200), 4, np.random.default_rng(0))
    assert centers.shape == (4, 2)
    rows = {tuple(p) for p in points}
    assert all(tuple(c) in rows for c in centers)
    # greedy k-means++ on four far-apart blobs puts one seed in each blob
    blob = (centers[:, 0] > 5).astype(int) + 2 * (centers[:, 1] > 5)
    assert sorted(blob) == [0, 1, 2, 3]


def test_kmeans_plusplus_is_seeded():
    rng = np.random.default_rng(3)
    points = rng.random((300, 3))
    w = rng.random(300)
    a = kmeans_plusplus(points, w, 6, np.random.default_rng(9))
    b = kmeans_plusplus(points, w, 6, np.random.default_rng(9))
    np.testing.assert_array_equal(a, b)


def test_kmeans_plusplus_never_picks_zero_weight_points():
    rng = np.random.default_rng(4)
    points = rng.random((400, 2))
    w = np.where(np.arange(400) % 2 == 0, 1.0, 0.0)
    for s in range(5):
        centers = kmeans_plusplus(points, w, 8, np.random.default_rng(s))
        picked = [np.flatnonzero((points == c).all(axis=1))[0] for c in centers]
        assert all(i % 2 == 0 for i in picked)


def test_kmeans_plusplus_with_fewer_distinct_points_than_k():
    points = np.array([[1.0, 1.0]] * 5 + [[4.0, 4.0]] * 5)
    centers = kmeans_plusplus(points, np.ones(10), 4, np.random.default_rng(0))
    assert centers.shape == (4, 2)
    assert {tuple(c) for c in centers} == {(1.0, 1.0), (4.0, 4.0)}


# -- lloyd --------------------------------------------------------------------------------------


def test_lloyd_scikit_learn_weighted_toy():
    # scikit-learn test_k_means.py: weights 3, 1, 1, 3; init (0, 0), (1, 1)
    points = np.array([[0, 0], [0.5, 0], [0.5, 1], [1, 1]])
    weights = np.array([3.0, 1.0, 1.0, 3.0])
    res = lloyd(points, weights, np.array([[0.0, 0.0], [1.0, 1.0]]))
    np.testing.assert_array_equal(res.labels, [0, 0, 1, 1])
    np.testing.assert_allclose(res.centers, [[0.125, 0], [0.875, 1]])
    assert res.inertia == pytest.approx(0.375)
    assert res.n_iter == 2


def test_lloyd_weights_equal_repeated_points():
    rng = np.random.default_rng(5)
    points = rng.normal(0, 1, (60, 2))
    counts = rng.integers(1, 6, 60)
    init = points[:4].copy()
    weighted = lloyd(points, counts.astype(float), init, tol_abs=0.0)
    repeated = lloyd(np.repeat(points, counts, axis=0), np.ones(counts.sum()), init, tol_abs=0.0)
    np.testing.assert_allclose(weighted.centers, repeated.centers, rtol=1e-10)
    assert weighted.inertia == pytest.approx(repeated.inertia, rel=1e-10)
    np.testing.assert_array_equal(np.repeat(weighted.labels, counts), repeated.labels)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lloyd_converged_centres_are_cluster_means(dtype):
    rng = np.random.default_rng(6)
    points = blobs(300, [[0, 0, 0], [3, 0, 1], [0, 4, 2], [5, 5, 5]], 1.0, rng, dtype)
    weights = rng.integers(1, 10, points.shape[0]).astype(float)
    res = lloyd(points, weights, points[[0, 300, 600, 900]].copy(), max_iter=500, tol_abs=0.0)
    assert res.n_iter < 500
    check_result(points, weights, 4, res, rtol=1e-5 if dtype == np.float32 else 1e-9)
    means, _ = weighted_means(points.astype(np.float64), weights, res.labels, 4)
    np.testing.assert_allclose(res.centers, means, rtol=1e-5 if dtype == np.float32 else 1e-9)


def test_lloyd_relocates_empty_clusters():
    rng = np.random.default_rng(7)
    points = blobs(40, [[0, 0], [10, 10]], 0.5, rng)
    init = np.array([[0.0, 0.0], [10.0, 10.0], [1000.0, 1000.0]])  # the third gets no point
    res = lloyd(points, np.ones(80), init)
    check_result(points, np.ones(80), 3, res)
    assert np.abs(res.centers).max() < 20


def test_lloyd_respects_max_iter():
    rng = np.random.default_rng(8)
    points = rng.random((500, 2))
    res = lloyd(points, np.ones(500), points[:10].copy(), max_iter=1)
    assert res.n_iter == 1
    # the final assignment still matches the centres
    check_result(points, np.ones(500), 10, res, allow_empty=True)


def test_lloyd_does_not_modify_its_inputs():
    rng = np.random.default_rng(9)
    points, weights = rng.random((100, 3)), rng.random(100)
    init = points[:5].copy()
    copies = points.copy(), weights.copy(), init.copy()
    lloyd(points, weights, init)
    for a, b in zip((points, weights, init), copies, strict=True):
        np.testing.assert_array_equal(a, b)


# -- kmeans -------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 60),
    d=st.integers(2, 4),
    k=st.integers(1, 6),
    seed=st.integers(0, 1000),
    dtype=st.sampled_from([np.float32, np.float64]),
)
def test_kmeans_properties(n, d, k, seed, dtype):
    rng = np.random.default_rng(seed)
    points = np.unique(np.round(rng.normal(0, 10, (n, d)), 1), axis=0).astype(dtype)
    k = min(k, points.shape[0])
    weights = rng.integers(1, 20, points.shape[0]).astype(float)
    res = kmeans(points, weights, k, seed=seed)
    check_result(points, weights, k, res, rtol=1e-5 if dtype == np.float32 else 1e-9)
    again = kmeans(points, weights, k, seed=seed)
    np.testing.assert_array_equal(res.labels, again.labels)
    np.testing.assert_array_equal(res.centers, again.centers)


def test_kmeans_finds_well_separated_blobs():
    rng = np.random.default_rng(10)
    truth = np.array([[0, 0, 0], [20, 0, 0], [0, 20, 0], [0, 0, 20], [20, 20, 20]], float)
    points = blobs(100, truth, 1.0, rng)
    res = kmeans(points, np.ones(500), 5, seed=1)
    check_result(points, np.ones(500), 5, res)
    nearest_truth = np.rint(res.centers / 20) * 20
    assert {tuple(c) for c in nearest_truth} == {tuple(c) for c in truth}
    np.testing.assert_allclose(res.centers, nearest_truth, atol=0.5)


def test_kmeans_coarse_to_fine_on_many_points():
    """More points than the restart sample: refinement stages end on all points."""
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(11)
    points = blobs(12_000, rng.normal(0, 5, (6, 3)), 1.5, rng)
    weights = rng.integers(1, 4, points.shape[0]).astype(float)
    res = kmeans(points, weights, 6, seed=2)
    check_result(points, weights, 6, res)
    sk = KMeans(6, n_init=1, random_state=2).fit(points, sample_weight=weights)
    assert res.inertia <= sk.inertia_ * 1.01


def test_kmeans_dominant_value_with_many_rare_ones():
    """One value holding almost all the weight, plus thousands of rare ones (a black background
    and a few sparse objects): the restart sample then holds fewer distinct points than k."""
    rng = np.random.default_rng(12)
    points = np.concatenate([np.zeros((1, 3)), rng.random((5000, 3))])
    weights = np.concatenate([[1e7], np.ones(5000)])
    res = kmeans(points, weights, 8, seed=0)
    check_result(points, weights, 8, res)


# -- weighted_subsample -------------------------------------------------------------------------


def test_subsample_small_input_is_returned_as_is():
    points, weights = np.arange(10.0)[:, None], np.ones(10)
    p, w = weighted_subsample(points, weights, 10, np.random.default_rng(0))
    assert p is points and w is weights


def test_subsample_keeps_total_weight_and_real_points():
    rng = np.random.default_rng(13)
    points = rng.random((5000, 2))
    weights = rng.integers(1, 100, 5000).astype(float)
    p, w = weighted_subsample(points, weights, 500, np.random.default_rng(1))
    assert p.shape[0] <= 500 and p.shape[0] == w.shape[0]
    assert w.sum() == pytest.approx(weights.sum(), rel=1e-12)
    rows = {tuple(r) for r in points}
    assert all(tuple(r) in rows for r in p)
    again = weighted_subsample(points, weights, 500, np.random.default_rng(1))
    np.testing.assert_array_equal(p, again[0])


def test_subsample_follows_the_weights():
    # one point has half the weight: it is sampled with about half the sample's weight
    points = np.arange(1001.0)[:, None]
    weights = np.concatenate([[1000.0], np.ones(1000)])
    p, w = weighted_subsample(points, weights, 100, np.random.default_rng(2))
    heavy = w[p[:, 0] == 0.0]
    assert heavy.size == 1 and heavy[0] == pytest.approx(1000.0, rel=0.05)


def test_swap_search_escapes_a_lloyd_local_optimum():
    """Three tight blobs; Lloyd started with two centres in one blob and one between the others
    is stuck; one swap moves the useless centre and reaches the optimum."""
    from napari_kmeans.lloyd import improve_by_swaps, lloyd

    rng = np.random.default_rng(0)
    blobs = np.array([[0.0, 0.0], [10.0, 0.0], [20.0, 0.0]])
    points = np.concatenate([b + rng.normal(0, 0.1, (50, 2)) for b in blobs])
    weights = np.ones(len(points))
    stuck = lloyd(points, weights, np.array([[-0.05, 0.0], [0.05, 0.0], [15.0, 0.0]]))
    assert stuck.inertia > 1000  # one centre serves two blobs
    fixed = improve_by_swaps(points, weights, stuck, 4, np.random.default_rng(1))
    np.testing.assert_allclose(np.sort(fixed.centers[:, 0]), blobs[:, 0], atol=0.1)
    assert fixed.inertia < 10


def test_lloyd_gives_up_a_run_that_cannot_reach_the_bar():
    """``give_up_above``: a slow run whose inertia stays far above the bar stops early; a run
    that gets below the bar is the same as without it."""
    from napari_kmeans.lloyd import lloyd

    rng = np.random.default_rng(3)
    points = np.sort(rng.random((4000, 1)) * 100, axis=0)
    points = np.concatenate([points, rng.normal(0, 1, (4000, 1))], axis=1)
    weights = np.ones(len(points))
    start = np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
    full = lloyd(points, weights, start, max_iter=60)
    assert full.n_iter > 10  # centres creep along the line
    hopeless = lloyd(points, weights, start, max_iter=60, give_up_above=full.inertia / 2)
    assert hopeless.n_iter < full.n_iter and hopeless.inertia > full.inertia / 2
    labels, _ = assign(points, hopeless.centers)
    np.testing.assert_array_equal(hopeless.labels, labels)  # labels of the returned centres
    reachable = lloyd(points, weights, start, max_iter=60, give_up_above=full.inertia * 1.001)
    np.testing.assert_array_equal(reachable.centers, full.centers)
    assert reachable.n_iter == full.n_iter


def test_assign_is_exact_for_many_features_far_from_the_origin():
    """scipy's vq switches to |x|^2 - 2x.c + |c|^2 from five features on, which cancels for data
    far from the origin; assign must still give the true nearest centre."""
    from napari_kmeans.lloyd import assign

    rng = np.random.default_rng(0)
    centers = 1e8 + rng.normal(0, 20, (6, 5))
    points = 1e8 + rng.normal(0, 20, (5000, 5))
    labels, d2 = assign(points, centers)
    exact = ((points[:, None, :] - centers[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(labels, exact.argmin(1))
    np.testing.assert_allclose(d2, exact.min(1), rtol=1e-9)
