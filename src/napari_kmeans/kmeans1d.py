"""Exact, globally optimal k-means for one-dimensional weighted data.

In one dimension the clusters of an optimal k-means solution are intervals of the sorted values,
so the optimum can be found by dynamic programming over the sorted distinct values (Wang & Song
2011). ``D[m][j]``, the least sum of squares of the first ``j`` values split into ``m`` clusters,
obeys ``D[m][j] = min_i D[m-1][i] + cost(i, j)``, where ``cost(i, j)`` is the sum of squares of
values ``i..j-1`` about their mean (O(1) from prefix sums). The optimal split ``i`` is monotone in
``j`` (the cost is a Monge array, Grønlund et al. 2017), so each row is solved by divide and
conquer in O(n log n); here every level of that recursion is one vectorized numpy pass, giving
O(k n log n) work in O(k log n) numpy calls.

When there are too many distinct values for that to be quick, :func:`kmeans_1d` solves the problem
exactly on quantile groups of the values and then runs one-dimensional Lloyd iterations on all
values, which cost O(k log n) each thanks to the prefix sums; the result is then flagged as not
proven optimal.

References
----------
.. [1] H. Wang and M. Song, "Ckmeans.1d.dp: Optimal k-means clustering in one dimension by dynamic
       programming", The R Journal 3(2), 2011.
.. [2] A. Grønlund, K. G. Larsen, A. Mathiasen, J. S. Nielsen, S. Schneider and M. Song, "Fast
       exact k-means, k-medians and Bregman divergence clustering in 1D", arXiv:1701.07204, 2017.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EXACT_MAX_DISTINCT = 1 << 20  # beyond this many distinct values: quantile groups + 1-D Lloyd
_GROUPS = 1 << 16


@dataclass(frozen=True)
class Result1D:
    centers: np.ndarray  # (k,) ascending
    bounds: np.ndarray  # (k + 1,) cluster c holds sorted values bounds[c]:bounds[c + 1]
    inertia: float
    exact: bool
    n_iter: int


class _Prefix:
    """Prefix sums of weights, weighted values and weighted squares (values centred first)."""

    def __init__(self, x, w):
        shift = np.dot(w, x) / w.sum()
        y = x - shift
        zero = np.zeros(1)
        self.W = np.concatenate([zero, np.cumsum(w)])
        self.S = np.concatenate([zero, np.cumsum(w * y)])
        self.Q = np.concatenate([zero, np.cumsum(w * y * y)])
        self.shift = shift

    def cost(self, i, j):
        """Sum of squares about their mean of values ``i..j-1`` (``j > i``), vectorized."""
        s = self.S[j] - self.S[i]
        return np.maximum(self.Q[j] - self.Q[i] - s * s / (self.W[j] - self.W[i]), 0.0)

    def means(self, bounds):
        lo, hi = bounds[:-1], bounds[1:]
        return (self.S[hi] - self.S[lo]) / (self.W[hi] - self.W[lo]) + self.shift


def _solve_row(prev, pre, jlo, jhi, ilo):
    """``D[j] = min_{ilo <= i < j} prev[i] + cost(i, j)`` for ``j`` in ``[jlo, jhi]``.

    Divide and conquer on the monotone argmin, one numpy pass per recursion level. Returns the
    row ``D`` (inf outside the range) and the leftmost optimal ``i`` for each ``j``.
    Within a level, ``prev[i] + cost(i, j) = A[i] + Q[j] - (S[j] - S[i])**2 / (W[j] - W[i])``
    with ``A = prev - Q``; ``Q[j]`` is the same for every candidate of a ``j`` and is added after
    the minimum.
    """
    n1 = prev.size
    a = prev - pre.Q
    D = np.full(n1, np.inf)
    opt = np.zeros(n1, np.int64)
    lo_j = np.array([jlo])
    hi_j = np.array([jhi])
    lo_i = np.array([ilo])
    hi_i = np.array([jhi - 1])
    while lo_j.size:
        mid = (lo_j + hi_j) // 2
        length = np.minimum(hi_i, mid - 1) - lo_i + 1
        ends = np.cumsum(length)
        starts = ends - length
        seg = np.repeat(np.arange(mid.size), length)
        i = np.arange(ends[-1]) + np.repeat(lo_i - starts, length)
        ds = pre.S[mid][seg] - pre.S[i]
        val = a[i] - ds * ds / (pre.W[mid][seg] - pre.W[i])
        best_val = np.minimum.reduceat(val, starts)
        best = np.minimum.reduceat(np.where(val <= best_val[seg], i, n1), starts)
        D[mid] = best_val + pre.Q[mid]
        opt[mid] = best
        left = lo_j < mid
        right = mid < hi_j
        lo_j, hi_j, lo_i, hi_i = (
            np.concatenate([lo_j[left], mid[right] + 1]),
            np.concatenate([mid[left] - 1, hi_j[right]]),
            np.concatenate([lo_i[left], best[right]]),
            np.concatenate([best[left], hi_i[right]]),
        )
    return D, opt


def kmeans_1d_exact(x, w, k) -> Result1D:
    """Globally optimal weighted k-means of sorted distinct values ``x`` with weights ``w``.

    Parameters
    ----------
    x : (n,) ndarray
        Sorted, strictly increasing values.
    w : (n,) ndarray
        Positive weights (pixel counts).
    k : int
        Number of clusters, ``1 <= k <= n``.

    Returns
    -------
    Result1D
        Centers (ascending), the cluster bounds in ``x``, the inertia, ``exact=True``.

    Examples
    --------
    >>> r = kmeans_1d_exact(np.array([0., 1., 10., 11.]), np.ones(4), 2)
    >>> r.centers, r.inertia
    (array([ 0.5, 10.5]), 1.0)
    """
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    n = x.size
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}] for {n} distinct values, got {k}.")
    pre = _Prefix(x, w)
    bounds = np.empty(k + 1, np.int64)
    bounds[0], bounds[k] = 0, n
    if k > 1:
        prev = np.full(n + 1, np.inf)
        j = np.arange(1, n - k + 2)
        prev[j] = pre.cost(np.zeros_like(j), j)
        opts = []
        for m in range(2, k):
            prev, opt = _solve_row(prev, pre, m, n - (k - m), m - 1)
            opts.append(opt)
        i = np.arange(k - 1, n)
        last = prev[i] + pre.cost(i, np.full_like(i, n))
        bounds[k - 1] = i[np.argmin(last)]
        for m in range(k - 1, 1, -1):
            bounds[m - 1] = opts[m - 2][bounds[m]]
    starts = bounds[:-1]  # clusters are non-empty: bounds strictly increase
    centers = np.add.reduceat(w * x, starts) / np.add.reduceat(w, starts)  # exact means
    inertia = float(sum(_segment_ss(x, w, bounds, centers)))
    return Result1D(centers, bounds, inertia, True, 0)


def _segment_ss(x, w, bounds, centers):
    """Per-cluster weighted sums of squares, computed directly from the values (not prefix sums)."""
    lab = np.repeat(np.arange(centers.size), np.diff(bounds))
    return np.bincount(lab, weights=w * (x - centers[lab]) ** 2, minlength=centers.size)


def _lloyd_1d(x, w, centers, max_iter):
    """Lloyd iterations on sorted values; each costs O(k log n) through prefix sums."""
    pre = _Prefix(x, w)
    n_iter = 0
    bounds = None
    for n_iter in range(1, max_iter + 1):  # noqa: B007
        thresholds = (centers[:-1] + centers[1:]) / 2
        inner = np.searchsorted(x, thresholds, side="right")
        new_bounds = np.concatenate([[0], inner, [x.size]])
        if bounds is not None and np.array_equal(new_bounds, bounds):
            break
        bounds = new_bounds
        filled = np.diff(bounds) > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            centers = np.sort(np.where(filled, pre.means(bounds), centers))
    return centers, bounds, n_iter


def kmeans_1d(x, w, k, *, max_iter=300) -> Result1D:
    """Weighted 1-D k-means: exact when ``x`` has at most ``EXACT_MAX_DISTINCT`` values.

    Beyond that, the exact solution on ``2**16`` consecutive quantile groups seeds Lloyd
    iterations on every value; the result has ``exact=False``.
    """
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    if x.size <= EXACT_MAX_DISTINCT:
        return kmeans_1d_exact(x, w, k)
    edges = np.linspace(0, x.size, _GROUPS + 1).astype(np.int64)[:-1]
    gw = np.add.reduceat(w, edges)
    gx = np.add.reduceat(w * x, edges) / gw
    seed = kmeans_1d_exact(gx, gw, k)
    centers, bounds, n_iter = _lloyd_1d(x, w, seed.centers, max_iter)
    keep = np.diff(bounds) > 0
    centers = centers[keep]
    bounds = np.concatenate([[0], bounds[1:][keep]])
    inertia = float(_segment_ss(x, w, bounds, centers).sum())
    return Result1D(centers, bounds, inertia, False, n_iter)


def inertia_curve_1d(x, w, k_max) -> np.ndarray:
    """Optimal inertia for every k in ``1..min(k_max, n)``, from one dynamic programme.

    Row m of the programme holds the best cost of the first j values in m clusters, so computing
    each row for every j (not only those a single k needs) yields the whole curve at the cost of
    one ``k_max`` solve. Beyond ``EXACT_MAX_DISTINCT`` values, the quantile groups of
    :func:`kmeans_1d` are used (an upper-bound estimate).
    """
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    if x.size > EXACT_MAX_DISTINCT:
        edges = np.linspace(0, x.size, _GROUPS + 1).astype(np.int64)[:-1]
        gw = np.add.reduceat(w, edges)
        x, w = np.add.reduceat(w * x, edges) / gw, gw
    n = x.size
    pre = _Prefix(x, w)
    j = np.arange(1, n + 1)
    prev = np.concatenate([[np.inf], pre.cost(np.zeros_like(j), j)])
    out = [prev[n]]
    for m in range(2, min(k_max, n) + 1):
        prev, _ = _solve_row(prev, pre, m, n, m - 1)
        out.append(max(prev[n], 0.0))
    return np.array(out)


def thresholds(centers: np.ndarray) -> np.ndarray:
    """Decision thresholds between sorted 1-D centers: midpoints of neighbours."""
    centers = np.asarray(centers, np.float64)
    return (centers[:-1] + centers[1:]) / 2


def assign_1d(values: np.ndarray, thr: np.ndarray) -> np.ndarray:
    """Index of the nearest center for each value (ties go to the lower center)."""
    return np.searchsorted(thr, values, side="left")
