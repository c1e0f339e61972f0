"""Scribbled seeds: classes a person paints, which become the first clusters of a fit.

``seeds`` is an integer array of the image's spatial shape: 0 for unseeded pixels, 1..m for
seed classes (m <= k). Cluster i (1-based, i <= m) starts at the mean feature of the valid
pixels seeded i; the other k - m clusters start by k-means++ on the weighted values, their
first distances taken to the seeded centres; then weighted Lloyd runs (seeded Lloyd, also for
single-channel data, whose exact solver cannot take seeds: ``exact`` is then False). With
``pin_seeds`` the seeded centres stay at their seed means, and only the free ones move.

The seed means are a per-chunk step + merge + finish, like the other reductions: class counts
and sums of a chunk (:func:`class_sums`), added (:func:`merge_sums`), divided
(:func:`finish_means`); the dask path runs the same step on every block.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import features as ft
from .lloyd import assign, lloyd, weighted_subsample

RESTART_POINTS = 1 << 15  # restarts run on a weighted subsample of at most this many points
FINAL_SAMPLE = 1 << 17  # a refining sample this large gives the final centres (see lloyd.kmeans)


class SeedMeans(NamedTuple):
    """The seed classes' means: ``features`` (m, n_features) in the fit's feature space,
    ``colors`` (m, n_channels) in the input's units, ``counts`` (m,) valid seeded pixels."""

    features: np.ndarray
    colors: np.ndarray
    counts: np.ndarray

    @property
    def n_classes(self) -> int:
        return int(self.counts.shape[0])


def check_seeds(seeds, spatial_shape, n_clusters=None):
    """``seeds`` validated against the image's spatial shape (numpy, or dask left lazy).

    Raises TypeError for non-integer seeds, ValueError for a wrong shape, negative values
    (numpy only; dask seeds are checked block by block) or more classes than ``n_clusters``.
    """
    if not hasattr(seeds, "dtype") or not hasattr(seeds, "shape"):
        seeds = np.asarray(seeds)
    dtype = np.dtype(seeds.dtype)
    if dtype.kind not in "biu":
        raise TypeError(
            f"seeds must be integers (0 = unseeded, 1..m = seed classes), got dtype {dtype}; "
            "give a labels image, e.g. seeds.astype(np.uint8)."
        )
    if tuple(seeds.shape) != tuple(spatial_shape):
        raise ValueError(
            f"seeds have shape {tuple(seeds.shape)}, but the image's pixels are laid out as "
            f"{tuple(spatial_shape)}; give seeds with the image's shape without its channel axis."
        )
    if isinstance(seeds, np.ndarray) and seeds.size:
        check_values(seeds, n_clusters)
    return seeds


def check_values(seeds: np.ndarray, n_clusters=None) -> int:
    """The number of seed classes m (the largest value); raises for negatives or m > k."""
    if seeds.dtype.kind == "b":
        return int(seeds.any())
    lo, hi = (int(seeds.min()), int(seeds.max())) if seeds.size else (0, 0)
    if lo < 0:
        raise ValueError(
            f"seeds hold negative values (down to {lo}); use 0 for unseeded pixels and 1..m "
            "for the seed classes."
        )
    if n_clusters is not None and hi > n_clusters:
        raise_k = f"raise n_clusters to at least {hi}, or " if hi <= ft.MAX_CLUSTERS else ""
        raise ValueError(
            f"the seeds ask for {hi} seed classes (values up to {hi}; classes are numbered 1..m "
            f"without gaps), more than n_clusters={n_clusters}; {raise_k}use fewer seed classes, "
            "numbered without gaps (skimage.segmentation.relabel_sequential)."
        )
    return hi


def class_sums(pixels, valid, seeds, *, spec, dtype, source=None):
    """Per-chunk step: ``(counts, feature sums, input sums)`` of each seed class 1..m.

    ``pixels`` (n, n_channels) as laid out (feature channels for a recipe, then ``source`` the
    input's own values, else the pixels themselves), ``valid`` (n,) or None, ``seeds`` (n,).
    Invalid pixels under seeds are ignored.
    """
    seeds = np.asarray(seeds).reshape(-1)
    m = check_values(seeds)
    sel = seeds > 0
    if valid is not None:
        sel &= valid
    idx = seeds[sel].astype(np.intp) - 1
    source = pixels if source is None else source
    feats = ft.to_features(pixels[sel], spec, dtype)
    values = source[sel].astype(np.float64)
    counts = np.bincount(idx, minlength=m).astype(np.int64)
    fsums = _sums(idx, feats, m)
    csums = _sums(idx, values, m)
    return counts, fsums, csums


def _sums(idx, values, m):
    out = np.zeros((m, values.shape[1]))
    for c in range(values.shape[1]):
        out[:, c] = np.bincount(idx, weights=values[:, c], minlength=m)
    return out


def merge_sums(a, b):
    """Merge step: two chunks' ``class_sums``, padded to the larger number of classes."""
    m = max(a[0].shape[0], b[0].shape[0])
    return tuple(_pad(x, m) + _pad(y, m) for x, y in zip(a, b, strict=True))


def _pad(x, m):
    if x.shape[0] == m:
        return x
    return np.concatenate([x, np.zeros((m - x.shape[0], *x.shape[1:]), x.dtype)])


def finish_means(sums, n_clusters) -> SeedMeans | None:
    """Finish step: the classes' means, or None without any seed.

    Raises ValueError when there are more classes than ``n_clusters`` or a class 1..m has no
    valid pixel (its seeds are all masked, non-finite or missing).
    """
    counts, fsums, csums = sums
    m = counts.shape[0]
    if m == 0:
        return None
    if m > n_clusters:
        check_values(np.array([m]), n_clusters)
    empty = np.flatnonzero(counts == 0) + 1
    if empty.size:
        raise ValueError(
            f"seed class {int(empty[0])} has no valid pixel (seed classes found: 1..{m}; "
            "classes must be numbered 1..m without gaps, and their pixels must not all be "
            "masked, non-finite or transparent); paint that class on valid pixels or renumber "
            "the seeds (skimage.segmentation.relabel_sequential)."
        )
    w = counts[:, None].astype(np.float64)
    return SeedMeans(fsums / w, csums / w, counts)


def check_pinned(pin_seeds: bool, seeds, seeded: bool) -> None:
    """Refuse ``pin_seeds`` without seed classes to pin (the one home of this rule).

    ``seeds`` as given (None: not given), ``seeded`` whether they mark any pixel. Raises
    ValueError naming what was found and the fix.
    """
    if not pin_seeds or seeded:
        return
    found = (
        "no seeds were given (seeds=None)" if seeds is None else "the seeds mark no pixel (all 0)"
    )
    raise ValueError(
        f"pin_seeds=True holds the seeded clusters' centres at their scribbles' means, but "
        f"{found}; pass seeds= (an integer image: 1..m on scribbled pixels, 0 elsewhere) or "
        "drop pin_seeds."
    )


def seed_means(prep: ft.Prepared, seeds, n_clusters, source: ft.Prepared | None = None):
    """The :class:`SeedMeans` of an in-memory laid-out image (None when nothing is seeded)."""
    seeds = check_seeds(np.asarray(seeds), prep.spatial_shape, n_clusters)
    src = None if source is None else source.pixels
    sums = class_sums(prep.pixels, prep.valid, seeds, spec=prep.spec, dtype=prep.dtype, source=src)
    return finish_means(sums, n_clusters)


# -- the seeded fit ---------------------------------------------------------------------------


def seeded_kmeans(
    points, weights, fixed, k, *, pinned=False, n_init=4, max_iter=300, tol=1e-4, seed=0,
    progress=None,
):  # fmt: skip
    """Weighted k-means whose first ``m = len(fixed)`` centres start at ``fixed``.

    The other ``k - m`` start by greedy k-means++ with the distances to ``fixed`` counted from
    the start; the best of ``n_init`` such starts (on a weighted subsample of at most
    ``RESTART_POINTS`` points) is refined by Lloyd on samples 8x larger each, then on all
    points, unless the last sample had ``FINAL_SAMPLE`` points (then its centres are final, as
    in :func:`napari_kmeans.lloyd.kmeans`). ``pinned`` keeps the first
    ``m`` centres fixed throughout. Returns ``(centers, idx, d2, n_iter)``.
    """
    rng = np.random.default_rng(seed)
    points = np.asarray(points, np.float64)
    fixed = np.asarray(fixed, np.float64)
    m = fixed.shape[0]
    sub_p, sub_w = weighted_subsample(points, weights, RESTART_POINTS, rng)
    tol_abs = tol * _mean_variance(sub_p, sub_w)
    n_pin = m if pinned else 0
    best, n_iter = None, 0
    runs = n_init if k > m else 1
    for i in range(runs):
        ft.tick(progress, 0.5 * i / runs, f"seeded k-means, restart {i + 1} of {runs}")
        start = np.concatenate([fixed, _plusplus_rest(sub_p, sub_w, fixed, k - m, rng)])
        res = _lloyd(sub_p, sub_w, start, n_pin, max_iter, tol_abs)
        n_iter += res[3]
        if best is None or res[4] < best[4]:
            best = res
    centers, size, n = best[0], RESTART_POINTS, points.shape[0]
    while sub_p.shape[0] < n:  # coarse to fine, as lloyd.kmeans: 8x larger samples, then all
        size *= 8
        if size * 2 < n:
            sub_p, sub_w = weighted_subsample(points, weights, size, rng)
        elif sub_p.shape[0] >= FINAL_SAMPLE:  # centres from so large a sample are final
            break
        else:
            sub_p, sub_w = points, weights
        ft.tick(progress, 0.5 + 0.5 * min(size / n, 1.0), f"refining on {sub_p.shape[0]} points")
        centers, _, _, it, _ = _lloyd(sub_p, sub_w, centers, n_pin, max_iter, tol_abs)
        n_iter += it
    idx, d2 = assign(points, centers)
    return centers, idx, d2, n_iter


def _mean_variance(points, weights) -> float:
    mean = weights @ points / weights.sum()
    return float(np.mean(weights @ (points - mean) ** 2 / weights.sum()))


def _plusplus_rest(points, weights, fixed, n, rng):
    """``n`` more centres by greedy weighted k-means++, given the centres ``fixed``."""
    out = np.empty((n, points.shape[1]))
    if n == 0:
        return out
    closest = _min_sqdist(points, fixed) if fixed.shape[0] else None
    trials = 2 + int(np.log(n + fixed.shape[0]))
    for c in range(n):
        if closest is None:  # no centre yet: the first by weight alone
            cdf = np.cumsum(weights)
        else:
            cdf = np.cumsum(weights * closest)
        if cdf[-1] <= 0:  # every point sits on a centre: any points
            out[c:] = points[rng.integers(0, points.shape[0], n - c)]
            break
        picks = np.minimum(np.searchsorted(cdf, rng.random(trials) * cdf[-1]), points.shape[0] - 1)
        cand = [_min_sqdist(points, points[p : p + 1]) for p in picks]
        if closest is not None:
            cand = [np.minimum(closest, d) for d in cand]
        best = int(np.argmin([weights @ d for d in cand]))
        out[c] = points[picks[best]]
        closest = cand[best]
    return out


def _min_sqdist(points, centers):
    return assign(points, centers)[1]


def _lloyd(points, weights, centers, n_pin, max_iter, tol_abs):
    """Weighted Lloyd with the first ``n_pin`` centres held; empty free clusters move to the
    points of largest weighted squared distance. ``(centers, idx, d2, n_iter, inertia)``.
    Without pinned centres this is :func:`napari_kmeans.lloyd.lloyd` (incremental sums)."""
    if n_pin == 0:
        res = lloyd(points, weights, centers.astype(points.dtype), max_iter=max_iter,
                    tol_abs=tol_abs)  # fmt: skip
        return res.centers.astype(np.float64), res.labels, res.dist, res.n_iter, res.inertia
    centers = centers.astype(np.float64, copy=True)
    k, prev, n_iter = centers.shape[0], None, 0
    wpoints = points * weights[:, None]
    while n_iter < max_iter:
        n_iter += 1
        idx, d2 = assign(points, centers)
        if prev is not None and np.array_equal(idx, prev):
            break
        prev = idx
        mass = np.bincount(idx, weights=weights, minlength=k)
        new = centers.copy()
        filled = mass > 0
        sums = _sums(idx, wpoints, k)
        new[filled] = sums[filled] / mass[filled, None]
        new[:n_pin] = centers[:n_pin]
        empty = np.flatnonzero(~filled)
        empty = empty[empty >= n_pin]
        if empty.size:
            far = np.argsort(-(weights * d2), kind="stable")[: empty.size]
            new[empty[: far.size]] = points[far]
            prev = None
        shift = float(((new - centers) ** 2).sum())
        centers = new
        if shift <= tol_abs and not empty.size:
            break
    idx, d2 = assign(points, centers)
    return centers, idx, d2, n_iter, float(weights @ d2)
