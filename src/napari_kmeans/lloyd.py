"""Weighted Lloyd k-means with greedy k-means++ seeding, for multi-channel features.

Points carry weights (pixel counts of distinct colours, or sample weights), so an image with
millions of pixels but a hundred thousand distinct colours costs a hundred thousand points per
iteration. Nearest-centre assignment uses :func:`scipy.cluster.vq.vq` (compiled, no
``(n, k)`` temporary); centre updates are weighted ``np.bincount`` sums.

The robustness details follow scikit-learn's ``KMeans``: greedy k-means++ with ``2 + log k`` local
trials, a tolerance relative to the data's mean variance, strict convergence when no label
changes, empty clusters moved to the points farthest from their centres, and a final assignment
step so that labels and centres always agree.

References
----------
.. [1] S. Lloyd, "Least squares quantization in PCM", IEEE Trans. Inf. Theory 28(2), 1982.
.. [2] D. Arthur and S. Vassilvitskii, "k-means++: the advantages of careful seeding", SODA 2007.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LloydResult:
    centers: np.ndarray  # (k, d)
    labels: np.ndarray  # (n,) index of each point's centre
    inertia: float
    n_iter: int


def assign(points: np.ndarray, centers: np.ndarray):
    """Nearest centre of each point (first one on ties) and the squared distance to it."""
    from scipy.cluster.vq import vq  # imported here: scipy.cluster takes ~0.5 s to import

    labels, dist = vq(points, centers.astype(points.dtype, copy=False), check_finite=False)
    dist = dist.astype(np.float64)
    return labels, dist * dist


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
        pots = weights @ d
        best = int(np.argmin(pots))
        centers[c] = points[picks[best]]
        closest = d[:, best]
    return centers


def _update(points, wpoints, weights, labels, dist, k, centers):
    """Weighted means of each cluster; empty clusters take the farthest points."""
    mass = np.bincount(labels, weights=weights, minlength=k)
    sums = np.stack(
        [np.bincount(labels, weights=wpoints[:, c], minlength=k) for c in range(points.shape[1])],
        axis=1,
    )
    new = centers.astype(np.float64, copy=True)
    filled = mass > 0
    new[filled] = sums[filled] / mass[filled, None]
    empty = np.flatnonzero(~filled)
    if empty.size:
        far = np.argsort(-(weights * dist), kind="stable")[: empty.size]
        new[empty] = points[far]
    return new.astype(points.dtype, copy=False)


def lloyd(points, weights, centers, *, max_iter=300, tol=1e-4) -> LloydResult:
    """Weighted Lloyd iterations from ``centers`` until no label changes or the shift is tiny.

    ``tol`` is relative to the mean per-feature variance of the weighted points, as in
    scikit-learn. A final assignment step makes labels and centres consistent.
    """
    k = centers.shape[0]
    wpoints = points * weights[:, None]
    tol_abs = tol * _mean_variance(points, weights)
    labels = None
    n_iter = 0
    for n_iter in range(1, max_iter + 1):  # noqa: B007
        new_labels, dist = assign(points, centers)
        if labels is not None and np.array_equal(new_labels, labels):
            break
        labels = new_labels
        new = _update(points, wpoints, weights, labels, dist, k, centers)
        shift = float(((new.astype(np.float64) - centers) ** 2).sum())
        centers = new
        if shift <= tol_abs:
            break
    labels, dist = assign(points, centers)
    return LloydResult(centers, labels, float(weights @ dist), n_iter)


def _mean_variance(points, weights) -> float:
    total = weights.sum()
    mean = (points * weights[:, None]).sum(axis=0) / total
    var = (weights @ (points - mean) ** 2) / total
    return float(np.mean(var))


def weighted_subsample(points, weights, size, rng):
    """At most about ``size`` points drawn with probability proportional to weight (merged)."""
    if points.shape[0] <= size:
        return points, weights
    cdf = np.cumsum(weights, dtype=np.float64)
    idx = np.searchsorted(cdf, rng.random(size) * cdf[-1], side="right")
    idx, counts = np.unique(np.minimum(idx, points.shape[0] - 1), return_counts=True)
    return points[idx], counts.astype(np.float64) * (cdf[-1] / size)


def kmeans(
    points, weights, k, *, n_init=4, max_iter=300, tol=1e-4, seed=0, seed_size=1 << 15
) -> LloydResult:
    """Best of ``n_init`` k-means++ / Lloyd runs, then refined on all points.

    The restarts run on a weighted subsample of at most ``seed_size`` points (all points when
    there are fewer); the best of them is refined by Lloyd on all points.
    """
    rng = np.random.default_rng(seed)
    sub_p, sub_w = weighted_subsample(points, weights, seed_size, rng)
    best = None
    for _ in range(n_init):
        start = kmeans_plusplus(sub_p, sub_w, k, rng)
        res = lloyd(sub_p, sub_w, start, max_iter=max_iter, tol=tol)
        if best is None or res.inertia < best.inertia:
            best = res
    if sub_p is points:
        return best
    final = lloyd(points, weights, best.centers, max_iter=max_iter, tol=tol)
    return LloydResult(final.centers, final.labels, final.inertia, best.n_iter + final.n_iter)
