"""Weighted points -> an ordered model: the fit shared by the in-memory and the dask paths.

Both paths reduce an image to a :class:`~napari_kmeans.compress.Support` (weighted distinct
values, or a sample) and hand it here: :func:`fit_support` runs the exact 1-D solver or weighted
Lloyd, orders the clusters dark to bright and returns the model with each value's cluster. The
result types of the engine's front doors (:class:`Fit`, :class:`Segmentation`) live here too, so
that :mod:`napari_kmeans.segment` and :mod:`napari_kmeans.lazy` both build them without
importing each other.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from . import features as ft
from .compress import grid_band, merge_counts
from .kmeans1d import assign_1d, kmeans_1d, lloyd_1d, thresholds
from .lloyd import dot, kmeans
from .model import KMeansModel
from .params import Params
from .seeds import SeedMeans, seeded_kmeans


@dataclass(frozen=True, eq=False)
class Segmentation:
    """Result of :func:`napari_kmeans.segment`.

    Attributes
    ----------
    labels : ndarray of unsigned int
        The image's spatial shape; 1..k, 1 the darkest cluster, 0 for masked or non-finite pixels.
        With ``seeds``, labels 1..m are the seed classes; with ``match_to``, the earlier run's
        IDs, which need not be contiguous (``model.present_labels``; ``centers`` and ``counts``
        then have a row for every ID up to the largest, absent ones with 0 pixels).
    centers : (k, n_channels) ndarray of float64
        Cluster centres in the input's units: the k-means centres for ``color_space='rgb'``
        (means of their pixels up to the convergence tolerance), each cluster's mean RGB for
        ``'lab'``.
    recolored : ndarray
        Shape and dtype of the input; every labelled pixel painted with its cluster's centre.
    inertia : float
        Sum over labelled pixels of the squared distance to their centre, in feature space.
    n_iter : int
        Lloyd iterations run (0 for the exact one-dimensional solver).
    counts : (k,) ndarray of int64
        Pixels per cluster.
    exact : bool
        True when the clustering is the proven global optimum of the k-means objective.
    model : KMeansModel
        The fitted model, to label other images the same way.
    """

    labels: np.ndarray
    centers: np.ndarray
    recolored: np.ndarray
    inertia: float
    n_iter: int
    counts: np.ndarray
    exact: bool
    model: KMeansModel

    @property
    def n_clusters(self) -> int:
        return int(self.centers.shape[0])


class Fit(NamedTuple):
    """Result of :func:`napari_kmeans.fit`: the model, Lloyd iterations, and whether it is the
    proven optimum."""

    model: KMeansModel
    n_iter: int
    exact: bool


class WeightedFit(NamedTuple):
    """Result of :func:`fit_weighted` and :func:`fit_support`."""

    model: KMeansModel
    idx: np.ndarray  # (m,) each value's cluster, 0-based in the model's order
    d2: np.ndarray  # (m,) each value's squared feature distance to its centre
    n_iter: int
    exact: bool


BAND_BINS = 2  # grid bins gathered on each side of the bin holding a cut
BAND_MAX_PIXELS = 1 << 22  # most pixels gathered around the cuts (else fewer bins, or none)


def fit_support(
    support, spec, dtype, params: Params, progress=None, reduce=None, seeds=None
) -> WeightedFit:
    """Fit a model to a :class:`~napari_kmeans.compress.Support` with the given settings.

    A grid support (single-channel data, ``support.grid`` set) is refined on the pixels near
    the cuts when ``reduce`` (as for :func:`napari_kmeans.sampling.draw_sample`) can read them.
    ``seeds`` (a :class:`~napari_kmeans.seeds.SeedMeans`) makes the fit seeded (see
    :func:`fit_seeded`).
    """
    if seeds is not None:
        return fit_seeded(support, spec, dtype, params, seeds, progress)
    if support.grid is not None and reduce is not None and support.values.shape[0] >= 2:
        return _fit_grid(support, spec, dtype, params, reduce, ft.checked_progress(progress))
    return fit_weighted(
        support.values, support.weights, spec, dtype, params.n_clusters,
        n_init=params.n_init, max_iter=params.max_iter, tol=params.tol, seed=params.seed,
        covers_all=support.covers_all, progress=progress,
    )  # fmt: skip


def fit_weighted(
    values, weights, spec, dtype, n_clusters, *, n_init=4, max_iter=300, tol=1e-4, seed=0,
    covers_all=True, progress=None,
) -> WeightedFit:  # fmt: skip
    """Fit a :class:`KMeansModel` to weighted pixel values.

    Parameters
    ----------
    values : (m, n_channels) ndarray
        Pixel values in the input dtype (distinct values, or a sample).
    weights : (m,) ndarray
        Pixel count each value stands for.
    spec : FeatureSpec
        Channel layout and colour space (see :func:`napari_kmeans.features.make_spec`).
    dtype : dtype
        The image's dtype.
    n_clusters : int
        Requested k; fewer (with a warning) when there are fewer distinct values.
    covers_all : bool
        Whether ``values`` are all of the image's distinct values (needed for ``exact``).
    progress : callable, optional
        As for :func:`napari_kmeans.segment`: ``progress(fraction, step)``, called regularly;
        raise from it to cancel.

    Returns
    -------
    WeightedFit
        ``model``; ``idx``, the cluster (0-based, in the model's order) of each value by nearest
        centre; ``d2``, its squared distance to that centre; ``n_iter``; ``exact``.
    """
    k = n_clusters
    n_distinct = values.shape[0]
    if n_distinct < k:
        where = "distinct values" if covers_all else "distinct values in its sample"
        warnings.warn(
            f"the image has only {n_distinct} {where}, fewer than n_clusters={k}; "
            f"making {n_distinct} cluster{'s' if n_distinct != 1 else ''}.",
            UserWarning,
            stacklevel=3,
        )
        k = n_distinct
    feats = ft.to_features(values, spec, dtype)
    centers, idx, d2, n_iter, exact = _solve(
        feats, weights, k, n_init=n_init, max_iter=max_iter, tol=tol, seed=seed,
        progress=ft.checked_progress(progress),
    )  # fmt: skip
    model, idx = _ordered_model(centers, idx, values, weights, spec, dtype, seed)
    if model.n_clusters < k:
        warnings.warn(
            f"{k - model.n_clusters} of the {k} clusters ended up with no pixel; "
            f"returning {model.n_clusters} clusters.",
            UserWarning,
            stacklevel=3,
        )
    return WeightedFit(model, idx, d2, int(n_iter), bool(exact and covers_all))


def fit_seeded(support, spec, dtype, params: Params, seeds: SeedMeans, progress=None):
    """Seeded weighted Lloyd on a support (any number of channels; never ``exact``).

    Cluster i < m starts at seed class i + 1's mean and gives label i + 1 (kept even when it
    ends up with no value); the free clusters follow, ordered dark to bright. With
    ``params.pin_seeds`` the seeded centres stay at the seed means and their colours are the
    seeds' mean input values.
    """
    m = seeds.n_classes
    k = max(m, min(params.n_clusters, m + support.values.shape[0]))
    feats = ft.to_features(support.values, spec, dtype)
    centers, idx, d2, n_iter = seeded_kmeans(
        feats, support.weights, seeds.features, k, pinned=params.pin_seeds,
        n_init=params.n_init, max_iter=params.max_iter, tol=params.tol, seed=params.seed,
        progress=ft.checked_progress(progress),
    )  # fmt: skip
    model, idx = _ordered_model(
        centers, idx, support.values, support.weights, spec, dtype, params.seed,
        seeds=seeds, pinned=params.pin_seeds,
    )  # fmt: skip
    if model.n_clusters < params.n_clusters:
        warnings.warn(
            f"{params.n_clusters - model.n_clusters} of the {params.n_clusters - m} unseeded "
            f"clusters found no pixel (too few distinct values); returning {model.n_clusters} "
            "clusters.",
            UserWarning,
            stacklevel=4,
        )
    return WeightedFit(model, idx, d2, int(n_iter), False)


def _fit_grid(support, spec, dtype, params, reduce, progress) -> WeightedFit:
    """Exact 1-D k-means on the occupied bins, then 1-D Lloyd on every pixel.

    The pixels of the bins around each cut (``BAND_BINS`` on each side) are gathered with their
    exact values; the other bins, which no cut crosses, stay points at their exact means. Lloyd
    with threshold assignment on that set is Lloyd on all pixels while the cuts stay inside
    the gathered bins.
    """
    grid, x, w = support.grid, support.values[:, 0], support.weights
    k = min(params.n_clusters, x.size)
    seed = kmeans_1d(x, w, k, max_iter=params.max_iter, progress=ft.part(progress, 0.0, 0.5))
    centers, n_iter = seed.centers, seed.n_iter
    pts, wts = x, w
    band = _band(support, centers) if k > 1 else None
    if band is not None:
        ft.tick(progress, 0.5, "refining on the pixels near the cuts")
        values, found = reduce(grid_band, merge_counts, grid=grid, bins=band)
        outside = ~np.isin(support.distinct, band)
        pts = np.concatenate([x[outside], values])
        order = np.argsort(pts, kind="stable")
        pts, wts = pts[order], np.concatenate([w[outside], found.astype(np.float64)])[order]
        res = lloyd_1d(
            pts, wts, centers, max_iter=params.max_iter, progress=ft.part(progress, 0.6, 1.0)
        )
        centers, n_iter = res.centers, n_iter + res.n_iter
    centers = centers.astype(np.float64)[:, None]
    idx = assign_1d(pts, thresholds(centers[:, 0]))
    model, _ = _ordered_model(centers, idx, pts[:, None], wts, spec, dtype, params.seed)
    idx, d2 = model.assign_values(support.values, dtype)
    return WeightedFit(model, idx, d2, int(n_iter), False)


def _band(support, centers):
    """The grid bins around the cuts between ``centers`` to gather pixels from, or None.

    ``BAND_BINS`` bins on each side of the bin holding a cut; only that bin when they hold
    more than ``BAND_MAX_PIXELS`` pixels; None when even those do.
    """
    grid = support.grid
    counts = np.zeros(grid.bins)
    counts[support.distinct] = support.weights
    cut_bins = grid.bin_of(grid.fixed(thresholds(centers)))
    for r in (BAND_BINS, 0):
        bins = np.unique((cut_bins[:, None] + np.arange(-r, r + 1)).clip(0, grid.bins - 1))
        if counts[bins].sum() <= BAND_MAX_PIXELS:
            return bins
    return None


def _solve(feats, weights, k, *, n_init, max_iter, tol, seed, progress=None):
    """Centres in feature space, each point's centre and squared distance to it, iterations,
    and whether the result is the proven optimum."""
    if feats.shape[1] == 1:
        order = np.argsort(feats[:, 0], kind="stable")
        res = kmeans_1d(feats[order, 0], weights[order], k, max_iter=max_iter, progress=progress)
        centers = res.centers.astype(feats.dtype)[:, None]
        idx = assign_1d(feats[:, 0], thresholds(centers[:, 0]))
        return centers, idx, (feats[:, 0] - centers[idx, 0]) ** 2, res.n_iter, res.exact
    res = kmeans(
        feats, weights, k, n_init=n_init, max_iter=max_iter, tol=tol, seed=seed, progress=progress
    )
    return res.centers.astype(feats.dtype), res.labels, res.dist, res.n_iter, False


def _ordered_model(centers, idx, values, weights, spec, dtype, seed, seeds=None, pinned=False):
    """Model with clusters ordered dark to bright, and ``idx`` renumbered to match.

    ``idx`` is each value's cluster. Colours (input units) are the centres themselves, except for
    CIELAB clustering where they are each cluster's weighted mean RGB. A cluster left with no
    pixel (possible only after the last reassignment) is dropped. With ``seeds`` the first
    ``seeds.n_classes`` clusters stay first, in their order, and are never dropped.
    """
    k = centers.shape[0]
    m = 0 if seeds is None else seeds.n_classes
    mass = np.bincount(idx, weights=weights, minlength=k)
    if spec.color_space == "lab":
        sums = [np.bincount(idx, weights=weights * v, minlength=k) for v in values.T.astype(float)]
        colors = np.stack(sums, axis=1) / np.maximum(mass, 1e-300)[:, None]
    else:
        colors = centers.astype(np.float64)
    if m and seeds.colors.shape[1] == colors.shape[1]:  # else feature centres (a recipe's fit
        # colours its clusters from their pixels' input values afterwards)
        unfilled = (mass[:m] <= 0) | pinned
        colors[:m][unfilled] = seeds.colors[unfilled]
    keep = m + np.flatnonzero(mass[m:] > 0)
    order = keep[np.lexsort((*colors[keep].T[::-1], ft.luminance(colors[keep], spec)))]
    order = np.concatenate([np.arange(m), order]).astype(np.intp)
    renumber = np.zeros(k, np.intp)
    renumber[order] = np.arange(order.size)
    extra = {} if seeds is None else {"seed_means": seeds.features, "pinned": bool(pinned)}
    model = KMeansModel(centers[order], colors[order], spec, np.dtype(dtype).name, seed, **extra)
    return model, renumber[idx]


def support_stats(model: KMeansModel, support, dtype):
    """``(counts, inertia)`` of an image from a support that covers all its values."""
    idx, d2 = model.assign_values(support.values, dtype)
    counts = np.bincount(idx, weights=support.weights, minlength=model.n_clusters)
    return counts.astype(np.int64), dot(support.weights, d2)
