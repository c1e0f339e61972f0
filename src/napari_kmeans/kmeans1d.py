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

from .features import part, tick

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
    """Prefix sums of weights, weighted values and weighted squares, for O(1) cluster costs.

    ``cost(i, j) = Q[j] - Q[i] - (S[j] - S[i])**2 / (W[j] - W[i])`` cancels badly when the
    values are far from where the sums are anchored, relative to their spacing: a fill value of
    1e9 next to data spread over tens would leave the costs of the clusters inside the data with
    rounding errors larger than their differences. So the sorted values are cut into regions at
    huge gaps (more than ``_GAP`` times the median spacing; at most ``_MAX_REGIONS`` regions) and
    each region gets sums anchored at its first value; ``cost(i, j)`` uses the sums of the region
    of ``i``. A cluster that crosses a huge gap has a huge cost, which stays accurate relatively.
    """

    def __init__(self, x, w):
        n = x.size
        self.W = np.concatenate([[0.0], np.cumsum(w)])
        starts = _region_starts(x)
        self.region = np.repeat(np.arange(starts.size), np.diff(np.append(starts, n + 1)))
        self.S = np.empty((starts.size, n + 1))
        self.Q = np.empty((starts.size, n + 1))
        for r, start in enumerate(starts):
            # anchored at the region's first value, summing from there on (0 before it)
            y = x - (x[start] if starts.size > 1 else np.einsum("i,i->", w, x) / w.sum())
            wy = np.where(np.arange(n) >= start, w * y, 0.0)
            self.S[r] = np.concatenate([[0.0], np.cumsum(wy)])
            self.Q[r] = np.concatenate([[0.0], np.cumsum(wy * y)])

    def cost(self, i, j):
        """Sum of squares about their mean of values ``i..j-1`` (``j > i``), vectorized."""
        r = self.region[i]
        s = self.S[r, j] - self.S[r, i]
        return np.maximum(self.Q[r, j] - self.Q[r, i] - s * s / (self.W[j] - self.W[i]), 0.0)


_GAP = 1e4
_MAX_REGIONS = 8


def _region_starts(x):
    """Indices where a region of well-conditioned prefix sums starts (always 0 first)."""
    gaps = np.diff(x)
    if gaps.size < 2:
        return np.zeros(1, np.int64)
    huge = np.flatnonzero(gaps > _GAP * np.median(gaps))
    if huge.size >= _MAX_REGIONS:
        huge = np.sort(huge[np.argsort(gaps[huge], kind="stable")[-(_MAX_REGIONS - 1) :]])
    return np.concatenate([[0], huge + 1]).astype(np.int64)


def _solve_row(prev, pre, jlo, jhi, ilo):
    """``D[j] = min_{ilo <= i < j} prev[i] + cost(i, j)`` for ``j`` in ``[jlo, jhi]``.

    Divide and conquer on the monotone argmin, one numpy pass per recursion level. Returns the
    row ``D`` (inf outside the range) and the leftmost optimal ``i`` for each ``j``.
    Within a level, ``prev[i] + cost(i, j) = A[i] + Q[j] - (S[j] - S[i])**2 / (W[j] - W[i])``
    with ``A = prev - Q``; ``Q[j]`` is the same for every candidate of a ``j`` and is added after
    the minimum.
    """
    n1 = prev.size
    D = np.full(n1, np.inf)
    opt = np.zeros(n1, np.int64)
    lo_j = np.array([jlo])
    hi_j = np.array([jhi])
    lo_i = np.array([ilo])
    hi_i = np.array([jhi - 1])
    single = pre.S.shape[0] == 1
    a = prev - pre.Q[0] if single else None
    while lo_j.size:
        mid = (lo_j + hi_j) // 2
        length = np.minimum(hi_i, mid - 1) - lo_i + 1
        ends = np.cumsum(length)
        starts = ends - length
        seg = np.repeat(np.arange(mid.size), length)
        i = np.arange(ends[-1]) + np.repeat(lo_i - starts, length)
        if single:  # Q[j] is common to a segment's candidates: added after the minimum
            ds = pre.S[0, mid][seg] - pre.S[0, i]
            val = a[i] - ds * ds / (pre.W[mid][seg] - pre.W[i])
        else:
            val = prev[i] + pre.cost(i, mid[seg])
        best_val = np.minimum.reduceat(val, starts)
        best = np.minimum.reduceat(np.where(val <= best_val[seg], i, n1), starts)
        D[mid] = best_val + pre.Q[0, mid] if single else best_val
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


def kmeans_1d_exact(x, w, k, progress=None) -> Result1D:
    """Globally optimal weighted k-means of sorted distinct values ``x`` with weights ``w``.

    Parameters
    ----------
    x : (n,) ndarray
        Sorted, strictly increasing values.
    w : (n,) ndarray
        Positive weights (pixel counts).
    k : int
        Number of clusters, ``1 <= k <= n``.
    progress : callable, optional
        ``progress(fraction, step)``, called before each level of the dynamic programme.

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
            tick(progress, (m - 1) / k, f"exact 1-D k-means, level {m} of {k}")
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


def _lloyd_1d(x, w, centers, max_iter, progress=None):
    """Lloyd iterations on sorted values; each costs O(k log n) through prefix sums."""
    cw = np.concatenate([[0.0], np.cumsum(w)])
    cwx = np.concatenate([[0.0], np.cumsum(w * (x - x[0]))])
    n_iter = 0
    bounds = None
    for n_iter in range(1, max_iter + 1):
        tick(progress, (n_iter - 1) / max_iter, f"1-D Lloyd iteration {n_iter}")
        inner = np.searchsorted(x, thresholds(centers), side="right")
        new_bounds = np.concatenate([[0], inner, [x.size]])
        if bounds is not None and np.array_equal(new_bounds, bounds):
            break
        bounds = new_bounds
        lo, hi = bounds[:-1], bounds[1:]
        with np.errstate(invalid="ignore", divide="ignore"):
            means = (cwx[hi] - cwx[lo]) / (cw[hi] - cw[lo]) + x[0]
        centers = np.sort(np.where(hi > lo, means, centers))
    return centers, bounds, n_iter


def lloyd_1d(x, w, centers, *, max_iter=300, progress=None) -> Result1D:
    """1-D Lloyd from ``centers`` on sorted values ``x`` with weights ``w`` (threshold
    assignment, O(k log n) per iteration); clusters left empty are dropped. ``exact=False``."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    centers, bounds, n_iter = _lloyd_1d(x, w, np.sort(centers), max_iter, progress)
    keep = np.diff(bounds) > 0
    centers = centers[keep]
    bounds = np.concatenate([[0], bounds[1:][keep]])
    inertia = float(_segment_ss(x, w, bounds, centers).sum())
    return Result1D(centers, bounds, inertia, False, n_iter)


def kmeans_1d(x, w, k, *, max_iter=300, progress=None) -> Result1D:
    """Weighted 1-D k-means: exact when ``x`` has at most ``EXACT_MAX_DISTINCT`` values.

    Beyond that, the exact solution on ``2**16`` consecutive quantile groups seeds Lloyd
    iterations on every value; the result has ``exact=False``. ``progress(fraction, step)`` is
    called between levels and iterations.
    """
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    if x.size <= EXACT_MAX_DISTINCT:
        return kmeans_1d_exact(x, w, k, progress)
    edges = np.linspace(0, x.size, _GROUPS + 1).astype(np.int64)[:-1]
    gw = np.add.reduceat(w, edges)
    gx = np.add.reduceat(w * x, edges) / gw
    seed = kmeans_1d_exact(gx, gw, k, part(progress, 0.0, 0.5))
    centers, bounds, n_iter = _lloyd_1d(x, w, seed.centers, max_iter, part(progress, 0.5, 1.0))
    keep = np.diff(bounds) > 0
    centers = centers[keep]
    bounds = np.concatenate([[0], bounds[1:][keep]])
    inertia = float(_segment_ss(x, w, bounds, centers).sum())
    return Result1D(centers, bounds, inertia, False, n_iter)


def inertia_curve_1d(x, w, k_max, progress=None) -> np.ndarray:
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
    top = min(k_max, n)
    for m in range(2, top + 1):
        tick(progress, (m - 2) / max(top - 1, 1), f"inertia for k = {m}")
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


def label_1d(values, centers, *, stats=True):
    """Nearest of ascending ``centers`` for finite ``values``: ``(index, counts, inertia)``.

    The same rule as :func:`assign_1d` (a value on a midpoint goes to the lower centre), by one
    comparison per threshold (faster than a binary search for a few centres); ``index`` is the
    smallest unsigned dtype that holds it. ``counts`` and ``inertia`` (the sum of squared
    distances, float64) are None unless ``stats``.
    """
    values = np.asarray(values).reshape(-1)
    thr = thresholds(centers)
    idx = np.zeros(values.size, np.uint8 if thr.size < 255 else np.intp)
    above = np.empty(values.size, bool)
    n_above = []
    for t in thr:
        # the same answer as comparing in float64, like assign_1d, without the cast
        np.greater(values, _below(np.float64(t), values.dtype), out=above)
        idx += above
        if stats:
            n_above.append(np.count_nonzero(above))
    if not stats:
        return idx, None, None
    counts = -np.diff(np.array([values.size, *n_above, 0], np.int64))
    centers = np.asarray(centers, np.float64)
    inertia = 0.0
    for s in range(0, values.size, _STEP):  # bounded float64 and intp temporaries
        d = np.subtract(values[s : s + _STEP], np.take(centers, idx[s : s + _STEP]))
        inertia += float(np.einsum("i,i->", d, d))  # no BLAS call (see lloyd.dot)
    return idx, counts, inertia


_STEP = 1 << 16  # cache-sized float64 and intp temporaries


def _below(t: np.float64, dtype):
    """The threshold to compare values of ``dtype`` with: for float32 or float16 values, the
    largest number of that dtype <= ``t`` (``v > t`` exactly when ``v`` > it); else ``t``."""
    dtype = np.dtype(dtype)
    if dtype.kind != "f" or dtype.itemsize >= 8 or not np.isfinite(t):
        return t
    with np.errstate(over="ignore"):
        low = dtype.type(t)
    if np.isinf(low) or low > t:  # rounded up (or overflowed): step down to the value below
        low = np.nextafter(low, dtype.type(-np.inf))
    return low
