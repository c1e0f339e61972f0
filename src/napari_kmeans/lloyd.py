"""Weighted Lloyd k-means with greedy k-means++ seeding, for multi-channel features.

Points carry weights (pixel counts of distinct colours, or sample weights), so an image with
millions of pixels but a hundred thousand distinct colours costs a hundred thousand points per
iteration. Nearest-centre assignment computes direct differences (scipy's ``vq``, or numpy
calls that release the GIL, one centre at a time over slices of points; no ``(n, k)``
temporary); centre updates are weighted ``np.bincount`` sums.

The robustness details follow scikit-learn's ``KMeans``: greedy k-means++ with ``2 + log k`` local
trials, a tolerance relative to the data's mean variance, strict convergence when no label
changes, empty clusters moved to the points of largest weighted squared distance, and a final assignment
step so that labels and centres always agree.

References
----------
.. [1] S. Lloyd, "Least squares quantization in PCM", IEEE Trans. Inf. Theory 28(2), 1982.
.. [2] D. Arthur and S. Vassilvitskii, "k-means++: the advantages of careful seeding", SODA 2007.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .features import part, tick


@dataclass(frozen=True)
class LloydResult:
    centers: np.ndarray  # (k, d)
    labels: np.ndarray  # (n,) index of each point's centre
    inertia: float
    n_iter: int
    dist: np.ndarray  # (n,) squared distance of each point to its centre


def dot(a: np.ndarray, b: np.ndarray) -> float:
    """``a @ b`` of two vectors, without a BLAS call: a threaded BLAS wakes its threads for
    vectors of more than a few thousand elements, which on a busy machine costs milliseconds
    per call (measured: 12-18 ms for 16k-64k elements, against 30 us here)."""
    return float(np.einsum("i,i->", a, b))


PROGRESS_ROWS = 1 << 20  # with a progress callback, assignment reports every this many points


def assign(points: np.ndarray, centers: np.ndarray, progress=None):
    """Nearest centre of each point (first one on ties) and the squared distance to it.

    Rows are independent, so the result does not depend on how points are chunked. Up to four
    features, the differences are computed directly in the points' float dtype, by
    :func:`scipy.cluster.vq.vq` (compiled) or, for float32 points or up to two features, by
    :func:`_nearest_few` with the same arithmetic, so the same labels (numpy calls that release
    the GIL, so that chunks can be labelled in threads; as fast as vq on one thread for these,
    1.5-2x slower for three or four float64 features, which stay with vq). From five on, the
    distances are computed in float64 over slices of points of any float dtype
    (:func:`_two_nearest`).
    Integer points are compared in float64, as their features would be. With ``progress``, many
    points are assigned in slices with a report after each (the same result).
    """
    n = points.shape[0]
    if progress is not None and n > PROGRESS_ROWS:
        labels, dist = np.empty(n, np.intp), np.empty(n)
        for s in range(0, n, PROGRESS_ROWS):
            tick(progress, s / n, "assigning points to centres")
            part_labels, dist[s : s + PROGRESS_ROWS] = assign(
                points[s : s + PROGRESS_ROWS], centers
            )
            labels[s : s + PROGRESS_ROWS] = part_labels
        return labels, dist
    d = points.shape[1]
    if d < 5 and (d <= 2 or points.dtype == np.float32):
        return _nearest_few(points, centers)  # as fast as vq here, and in threads faster
    if points.dtype.kind != "f":  # integer values: float64, as features are
        points = points.astype(np.float64)
    if d < 5:
        from scipy.cluster.vq import vq  # imported here: scipy.cluster takes ~0.5 s to import

        labels, dist = vq(points, centers.astype(points.dtype, copy=False), check_finite=False)
        dist = dist.astype(np.float64, copy=False)
        return labels, np.multiply(dist, dist, out=dist)
    best, _, labels = _two_nearest(points, centers, second=False)
    return labels, best


_FEW_ROWS = 1 << 14  # points per slice of _nearest_few: a few arrays of 64-128 kB each


def _nearest_few(points, centers):
    """Nearest centre (first one on ties) and squared distance, for up to four features.

    Over slices of ``_FEW_ROWS`` points, channel by channel: for each centre the sum of
    squared differences in the points' dtype (float32 or float64), compared with the best so
    far. Distances are returned as float64.
    """
    n, d = points.shape
    dtype = points.dtype if points.dtype in (np.float32, np.float64) else np.dtype(np.float64)
    c = np.asarray(centers).astype(dtype)
    labels = np.zeros(n, np.intp)
    dist = np.empty(n)
    m = min(n, _FEW_ROWS)
    best, cur, tmp = np.empty(m, dtype), np.empty(m, dtype), np.empty(m, dtype)
    closer = np.empty(m, bool)
    for s in range(0, n, _FEW_ROWS):
        e = min(n, s + _FEW_ROWS)
        cols = [np.ascontiguousarray(points[s:e, j], dtype=dtype) for j in range(d)]
        lab = labels[s:e]
        b, x, t, lt = best[: e - s], cur[: e - s], tmp[: e - s], closer[: e - s]
        for j in range(c.shape[0]):
            out = b if j == 0 else x
            np.subtract(cols[0], c[j, 0], out=out)
            np.multiply(out, out, out=out)
            for f in range(1, d):
                np.subtract(cols[f], c[j, f], out=t)
                np.multiply(t, t, out=t)
                np.add(out, t, out=out)
            if j:
                np.less(x, b, out=lt)
                np.copyto(lab, j, where=lt)
                np.minimum(b, x, out=b)
        dist[s:e] = b
    return labels, dist


def _two_nearest(points, centers, second=True):
    """Squared distances to the nearest and second-nearest centres, and the nearest's index.

    Over slices of ``_ROWS`` points, each by :func:`scipy.spatial.distance.cdist` (direct
    differences in float64, every point-centre pair on its own: a row's result does not depend
    on the slicing), so that temporaries are a few MB and never ``(n, k)``. Ties go to the first
    centre. Without ``second``, the second-nearest distances are None.
    """
    from scipy.spatial.distance import cdist

    n = points.shape[0]
    best = np.empty(n)
    nxt = np.empty(n) if second else None
    labels = np.empty(n, np.intp)
    centers = np.asarray(centers, np.float64)
    for s in range(0, n, _ROWS):
        d = cdist(np.asarray(points[s : s + _ROWS], np.float64), centers, "sqeuclidean")
        labels[s : s + _ROWS] = d.argmin(axis=1)
        if second and d.shape[1] > 1:
            d.partition(1, axis=1)
            best[s : s + _ROWS], nxt[s : s + _ROWS] = d[:, 0], d[:, 1]
        else:
            best[s : s + _ROWS] = d.min(axis=1)
            if second:
                nxt[s : s + _ROWS] = np.inf
    return best, nxt, labels


_ROWS = 1 << 14  # points per slice of _two_nearest: (rows, d) float64 copies of ~2 MB


def _sqdist(points, centers):
    """Squared distances ``(n, m)`` from points to a few centres (m small)."""
    diff = points[:, None, :] - centers[None, :, :]
    return np.einsum("nmd,nmd->nm", diff, diff, dtype=np.float64)


def kmeans_plusplus(points, weights, k, rng) -> np.ndarray:
    """Greedy weighted k-means++ seeding: ``k`` rows of ``points``.

    Each new centre is the best, by total weighted potential, of ``2 + int(log k)`` candidates
    drawn with probability proportional to weight times squared distance to the nearest centre.
    """
    n = points.shape[0]
    n_trials = 2 + int(np.log(k))
    centers = np.empty((k, points.shape[1]), points.dtype)
    first = min(int(np.searchsorted(np.cumsum(weights), rng.random() * weights.sum())), n - 1)
    centers[0] = points[first]
    closest = _sqdist(points, centers[:1])[:, 0]
    for c in range(1, k):
        cdf = np.cumsum(weights * closest)
        if cdf[-1] <= 0:  # every point coincides with a centre: take any remaining point
            centers[c:] = points[rng.integers(0, n, k - c)]
            break
        picks = np.searchsorted(cdf, rng.random(n_trials) * cdf[-1])
        picks = np.minimum(picks, n - 1)
        d = np.minimum(closest[:, None], _sqdist(points, points[picks]))
        pots = np.einsum("i,ij->j", weights, d)
        best = int(np.argmin(pots))
        centers[c] = points[picks[best]]
        closest = d[:, best]
    return centers


def _cluster_sums(points, weights, labels, k, rows=None):
    """Weighted sums ``(k, d)``, masses ``(k,)`` and point counts ``(k,)`` of each cluster (of
    the points ``rows`` only when given: ``weights`` and ``labels`` are then theirs).

    The integer counts, unlike the float masses, stay exact under incremental updates, so they
    are what tells an empty cluster. Each column is taken and weighted as it is summed (no
    weighted copy of the points).
    """
    mass = np.bincount(labels, weights=weights, minlength=k)
    sums = np.stack(
        [
            np.bincount(
                labels,
                weights=(points[:, c] if rows is None else points[rows, c]) * weights,
                minlength=k,
            )
            for c in range(points.shape[1])
        ],
        axis=1,
    )
    return sums, mass, np.bincount(labels, minlength=k)


def lloyd(
    points, weights, centers, *, max_iter=300, tol_abs=0.0, progress=None, give_up_above=None,
) -> LloydResult:  # fmt: skip
    """Weighted Lloyd iterations from ``centers`` until no label changes or the shift is tiny.

    ``tol_abs`` bounds the squared centre shift (summed over centres) below which iterations stop;
    :func:`kmeans` sets it to ``tol`` times the data's mean variance, as scikit-learn does. Cluster
    sums are updated incrementally from the points whose label changed, so late iterations cost
    one assignment pass. Empty clusters move to the points with the largest weighted squared
    distance to their centre. A final assignment step makes labels and centres consistent.

    ``give_up_above`` (a swap trial's bar, the inertia to beat) stops the run after an
    assignment whose inertia is so far above it that, going down by the last iteration's
    decrease for every iteration left, it would not get below: labels and centres are then
    those of that assignment (consistent), and the inertia is above the bar.
    """
    k = centers.shape[0]
    labels = None
    sums = mass = npts = None
    before = None  # the last assignment's inertia, with give_up_above
    n_iter = 0
    for n_iter in range(1, max_iter + 1):
        tick(progress, (n_iter - 1) / max_iter, f"Lloyd iteration {n_iter}")
        new_labels, dist = assign(points, centers)
        if give_up_above is not None:
            now = dot(weights, dist)
            if n_iter > 1 and now - give_up_above > (before - now) * (max_iter - n_iter + 1):
                return LloydResult(centers, new_labels, now, n_iter, dist)
            before = now
        if labels is None:
            sums, mass, npts = _cluster_sums(points, weights, new_labels, k)
        else:
            moved = np.flatnonzero(new_labels != labels)
            if moved.size == 0:  # converged: centres are the means of these very labels
                return LloydResult(centers, labels, dot(weights, dist), n_iter, dist)
            moved_weights = weights[moved]
            old = _cluster_sums(points, moved_weights, labels[moved], k, moved)
            new = _cluster_sums(points, moved_weights, new_labels[moved], k, moved)
            sums += new[0] - old[0]
            mass += new[1] - old[1]
            npts += new[2] - old[2]
        labels = new_labels
        new = centers.astype(np.float64, copy=True)
        filled = npts > 0
        new[filled] = sums[filled] / mass[filled, None]
        empty = np.flatnonzero(~filled)
        if empty.size:  # relocate, then recount from scratch next time
            far = np.argsort(-(weights * dist), kind="stable")[: empty.size]
            new[empty[: far.size]] = points[far]
            labels = None
        new = new.astype(points.dtype, copy=False)
        shift = float(((new.astype(np.float64) - centers) ** 2).sum())
        centers = new
        if shift <= tol_abs:
            break
    labels, dist = assign(points, centers)
    return LloydResult(centers, labels, dot(weights, dist), n_iter, dist)


def _mean_variance(points, weights) -> float:
    total = weights.sum()
    mean = (points * weights[:, None]).sum(axis=0) / total
    var = np.einsum("i,ij->j", weights, (points - mean) ** 2) / total
    return float(np.mean(var))


def weighted_subsample(points, weights, size, rng, cdf=None):
    """About ``size`` points drawn with probability proportional to weight, duplicates merged.

    Systematic sampling: ``size`` evenly spaced positions (one random offset) along the
    cumulative weights ``cdf`` (computed when not given). The positions are sorted, which keeps
    the search cache-friendly, and the sample is more even than independent draws. Weights are
    rescaled to the same total.
    """
    if points.shape[0] <= size:
        return points, weights
    if cdf is None:
        cdf = np.cumsum(weights, dtype=np.float64)
    step = cdf[-1] / size
    idx = np.searchsorted(cdf, (np.arange(size) + rng.random()) * step, side="right")
    idx = np.minimum(idx, points.shape[0] - 1)  # sorted: merge repeats without sorting again
    first = np.flatnonzero(np.diff(idx, prepend=-1))
    counts = np.diff(np.append(first, idx.size))
    return points[idx[first]], counts * step


SWAP_MIN_K = 8  # swap search for k above this
SWAPS = (24, 4)  # swap trials on the restart sample, then on the next (8x larger) stage
SWAP_ITER = 30  # Lloyd iterations per swap trial
FEW_K_SWAPS = 2  # swap trials on the second stage for k up to SWAP_MIN_K


def improve_by_swaps(
    points, weights, res, trials, rng, *, max_iter=300, tol_abs=0.0, progress=None
):
    """Local search over centre swaps: move the least useful centre to a new place, keep if better.

    Lloyd stops at a local optimum where a centre can be stuck between clusters, or two centres
    share one cluster while another cluster has none. Each trial moves the centre whose removal
    costs least (the increase in inertia if its points went to their second-nearest centre) to
    a point drawn with probability proportional to weight times squared distance (as k-means++
    does), runs Lloyd, and keeps the result if the inertia went down (Kanungo et al. 2004).
    A trial that cannot get below the best inertia is given up early (``give_up_above``).
    """
    k = res.centers.shape[0]
    if k < 2:
        return res
    best = res
    for t in range(trials):
        tick(progress, t / trials, f"swap search, trial {t + 1} of {trials}")
        first, second, _ = _two_nearest(points, best.centers)
        loss = np.bincount(best.labels, weights=weights * (second - first), minlength=k)
        cdf = np.cumsum(weights * first)
        if cdf[-1] <= 0:
            break
        pick = min(int(np.searchsorted(cdf, rng.random() * cdf[-1])), points.shape[0] - 1)
        start = best.centers.astype(np.float64, copy=True)
        start[int(np.argmin(loss))] = points[pick]
        cand = lloyd(
            points, weights, start.astype(points.dtype), max_iter=max_iter, tol_abs=tol_abs,
            give_up_above=best.inertia,
        )  # fmt: skip
        if cand.inertia < best.inertia:
            best = cand
    return best


def _with_rare_points(points, weights, sub_p, sub_w, m, rng):
    """Add ``m`` uniformly drawn points (with their own weights) to a subsample.

    When a few points hold almost all the weight, a weight-proportional sample has fewer
    distinct points than clusters; the rare points still need centres to be found.
    """
    extra = np.sort(rng.choice(points.shape[0], size=m, replace=False))
    both = np.concatenate([sub_p, points[extra]])
    _, first = np.unique(both, axis=0, return_index=True)
    first = np.sort(first)
    return both[first], np.concatenate([sub_w, weights[extra]])[first]


def kmeans(
    points, weights, k, *, n_init=4, max_iter=300, tol=1e-4, seed=0, progress=None
) -> LloydResult:
    """Best of ``n_init`` k-means++ / Lloyd runs on a small sample, refined coarse to fine.

    The restarts run on a weighted subsample of ``clip(256 k, 4096, 32768)`` points, where they
    are cheap. For ``k > 8`` the best restart is then improved by a search over centre swaps
    (:func:`improve_by_swaps`), there and on the next stage; for fewer clusters only by
    ``FEW_K_SWAPS`` trials on the next stage. The result is refined by Lloyd on
    subsamples eight times larger each, then on all points, each stage starting from the previous
    stage's centres. When the stage before the last had at least ``2**17`` distinct points, the
    last stage only assigns all points to its centres: their sampling error then costs about
    ``d k / 2**17`` of the inertia (0.02 % for RGB and k = 8), less than a full pass would gain.

    ``progress(fraction, step)``, if given, is called between restarts, Lloyd iterations, swap
    trials and stages; an exception raised by it stops the computation and propagates.
    """
    rng = np.random.default_rng(seed)
    n = points.shape[0]
    cdf = np.cumsum(weights, dtype=np.float64)
    size = int(np.clip(256 * k, 4096, 1 << 15))
    sub_p, sub_w = weighted_subsample(points, weights, size, rng, cdf)
    if sub_p.shape[0] < 4 * k < n:  # a few heavy points took the whole sample: add rare ones
        sub_p, sub_w = _with_rare_points(points, weights, sub_p, sub_w, 4 * k, rng)
    tol_abs = tol * _mean_variance(sub_p, sub_w)  # the sample's variance is close enough
    best = None
    for i in range(n_init):
        run = part(progress, 0.4 * i / n_init, 0.4 * (i + 1) / n_init)
        tick(run, 0.0, f"k-means++ seeding, restart {i + 1} of {n_init}")
        start = kmeans_plusplus(sub_p, sub_w, k, rng)
        res = lloyd(sub_p, sub_w, start, max_iter=max_iter, tol_abs=tol_abs, progress=run)
        if best is None or res.inertia < best.inertia:
            best = res
    # Many clusters have many more poor local optima than restarts can avoid: search swaps on the
    # restart sample, then a few on the next stage (see docs/algorithm.md). Few clusters need
    # only two trials on the next stage: restarts on a few thousand points can all settle in one
    # poor optimum that a swap on the larger stage escapes (float RGB 4 MP, k = 8: 1.1 % lower).
    swaps = SWAPS if k > SWAP_MIN_K else (0, FEW_K_SWAPS)
    trial_iter = min(max_iter, SWAP_ITER)
    if swaps[0]:
        best = improve_by_swaps(
            sub_p, sub_w, best, swaps[0], rng, max_iter=trial_iter, tol_abs=tol_abs,
            progress=part(progress, 0.4, 0.5),
        )  # fmt: skip
    res, n_iter = best, best.n_iter
    stage = 0
    while sub_p is not points:
        size *= 8
        # stage j (0-based) reports in [1 - 2**-(j+1), 1 - 2**-(j+2)]: later stages are larger
        this = part(progress, 1 - 0.5 ** (stage + 1), 1 - 0.5 ** (stage + 2))
        tick(this, 0.0, f"refining on {min(size, n)} points")
        if size * 2 < n:
            sub_p, sub_w = weighted_subsample(points, weights, size, rng, cdf)
        elif sub_p.shape[0] >= 1 << 17:  # centres from so large a sample are final: assign
            labels, dist = assign(points, res.centers, progress=this)
            return LloydResult(res.centers, labels, dot(weights, dist), n_iter, dist)
        else:
            sub_p, sub_w = points, weights
        res = lloyd(sub_p, sub_w, res.centers, max_iter=max_iter, tol_abs=tol_abs, progress=this)
        stage += 1
        if swaps[1] and stage == 1:
            res = improve_by_swaps(
                sub_p, sub_w, res, swaps[1], rng, max_iter=trial_iter, tol_abs=tol_abs,
                progress=this,
            )  # fmt: skip
        n_iter += res.n_iter
    return LloydResult(res.centers, res.labels, res.inertia, n_iter, res.dist)
