"""``segment``: k-means segmentation of an image's pixels, the engine's front door."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from . import features as ft
from . import lazy, sampling
from .compress import compress
from .kmeans1d import assign_1d, kmeans_1d, thresholds
from .lloyd import kmeans
from .model import KMeansModel
from .sampling import hash_sample


@dataclass(frozen=True, eq=False)
class Segmentation:
    """Result of :func:`segment`.

    Attributes
    ----------
    labels : ndarray of unsigned int
        The image's spatial shape; 1..k, 1 the darkest cluster, 0 for masked or non-finite pixels.
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


def _support(prep: ft.Prepared, seed: int, progress=None):
    """Weighted points to fit on: ``(values, weights, compressed, covers_all)``."""
    ft.tick(progress, 0.0, "compressing pixels")
    comp = compress(prep.pixels, prep.valid)
    if comp is not None:
        return comp.values, comp.counts.astype(np.float64), comp, True
    if prep.spec.n_channels == 1:
        ft.tick(progress, 0.1, "finding distinct values")
        vals = prep.pixels[:, 0] if prep.valid is None else prep.pixels[prep.valid, 0]
        uniq, counts = np.unique(vals, return_counts=True)
        if uniq.size <= sampling.DISTINCT_CAP:  # else the sample, as the dask path does
            return uniq[:, None], counts.astype(np.float64), None, True
        del uniq, counts
    values, weights, whole = hash_sample(
        prep.pixels, prep.valid, prep.n_valid, seed, progress=progress
    )
    return values, weights, None, whole


def _fit(feats, weights, k, *, n_init, max_iter, tol, seed, progress=None):
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


def segment(
    image,
    n_clusters=5,
    *,
    channel_axis=None,
    rgb=None,
    color_space="rgb",
    mask=None,
    seed=0,
    n_init=4,
    max_iter=300,
    tol=1e-4,
    chunk_size=None,
    progress=None,
) -> Segmentation:
    """Segment an image by k-means clustering of its pixel values.

    Parameters
    ----------
    image : (M, N[, ...][, C]) ndarray or dask array
        Grayscale, RGB(A) or multichannel image of any dimensionality; bool, integer or float.
        A dask array is processed out of core and gives dask ``labels`` and ``recolored``
        (see :mod:`napari_kmeans.lazy` and ``docs/large-data.md``).
    n_clusters : int, optional
        Number of clusters k (labels 1..k).
    channel_axis : int or None, optional
        Axis of the channels; None for grayscale (or for RGB(A) detected on the last axis).
    rgb : bool or None, optional
        Whether the channels are RGB(A). None guesses: a last axis of length 3 or 4 in an image
        with at least 3 dimensions and no ``channel_axis``. Fully transparent pixels (alpha 0)
        are masked.
    color_space : {'rgb', 'lab'}, optional
        Cluster RGB colours as they are, or in CIELAB (perceptual distances). Centres and the
        recoloured image are in the input's RGB units either way.
    mask : ndarray of bool or int, optional
        Pixels to cluster (the image's shape without its channel axis): True, or for an integer
        mask (a labels image) a value > 0; others, negative values included, get label 0.
    seed : int, optional
        Seed for k-means++ and sampling. The same data, parameters and seed give the same labels,
        whatever the pixel order or ``chunk_size``.
    n_init : int, optional
        k-means++/Lloyd restarts for multichannel data (the best is kept). Restarts run on at most
        32768 weighted points, so they are cheap.
    max_iter : int, optional
        Maximum Lloyd iterations per run.
    tol : float, optional
        Convergence tolerance on the centre shift, relative to the data's mean variance.
    chunk_size : int, optional
        Pixels per chunk when labelling images that do not compress (bounds temporary memory).
    progress : callable, optional
        ``progress(fraction, step)``, called regularly during the work (between restarts, Lloyd
        iterations, coarse-to-fine stages, levels of the exact 1-D solver and chunks of pixels)
        with the fraction done (a float in [0, 1] that never decreases) and a short description
        of the step. To cancel, raise an exception from it: the computation stops there and the
        exception propagates unchanged. Results are the same with or without it.

    Returns
    -------
    Segmentation
        ``labels``, ``centers``, ``recolored``, ``inertia``, ``n_iter``, ``counts``, ``exact``
        and ``model``.

    Raises
    ------
    TypeError
        For complex, object, string, void, datetime64 or timedelta64 input, non-integer
        ``n_clusters``, ``seed``, ``n_init``, ``max_iter`` or ``chunk_size``, or an ``rgb`` that
        is not a bool or None.
    ValueError
        For an empty image, ``n_clusters`` outside 1..1000, ``n_init`` outside 1..1000,
        ``max_iter`` outside 1..100000, a mask of the wrong shape, a channel axis out of range,
        when no pixel is left after masking, or for float values spanning more than 1e100 in a
        channel (their squared distances would overflow: rescale the image).

    Warns
    -----
    UserWarning
        When the image has fewer distinct values than ``n_clusters``: that many clusters are made.

    Notes
    -----
    Integer images with at most 24 bits per pixel (8-bit gray, RGB, up to three 8-bit channels;
    16-bit gray) and float16 gray images are first reduced to their distinct values with pixel
    counts; other single-channel images to their distinct values by sorting (when there are at
    most 4194304 of them); other images are fitted on an order-independent sample of about
    131072 pixels. Single-channel data
    are clustered exactly, by dynamic programming [2]_ [3]_; multichannel data by weighted Lloyd
    [1]_ with greedy k-means++ seeding [4]_. See ``docs/algorithm.md``.

    References
    ----------
    .. [1] S. Lloyd, "Least squares quantization in PCM", IEEE Trans. Inf. Theory 28(2), 1982.
    .. [2] H. Wang and M. Song, "Ckmeans.1d.dp: Optimal k-means clustering in one dimension by
           dynamic programming", The R Journal 3(2), 2011.
    .. [3] A. Grønlund et al., "Fast exact k-means, k-medians and Bregman divergence clustering
           in 1D", arXiv:1701.07204, 2017.
    .. [4] D. Arthur and S. Vassilvitskii, "k-means++: the advantages of careful seeding", 2007.

    Examples
    --------
    >>> import numpy as np
    >>> from napari_kmeans import segment
    >>> image = np.array([[0, 10, 200], [210, 0, 10]], dtype=np.uint8)
    >>> result = segment(image, 2)
    >>> result.labels
    array([[1, 1, 2],
           [2, 1, 1]], dtype=uint8)
    >>> result.centers.ravel(), result.inertia, result.exact
    (array([  5., 205.]), 150.0, True)
    >>> result.recolored
    array([[  5,   5, 205],
           [205,   5,   5]], dtype=uint8)
    """
    if lazy.is_dask(image) or lazy.is_dask(mask):  # out of core: dask arrays in, dask arrays out
        return lazy.segment_lazy(
            image, n_clusters, channel_axis=channel_axis, rgb=rgb, color_space=color_space,
            mask=mask, seed=seed, n_init=n_init, max_iter=max_iter, tol=tol,
            chunk_size=chunk_size, progress=progress,
        )  # fmt: skip
    chunk_size = ft.check_chunk_size(chunk_size)
    progress = ft.checked_progress(progress)
    source_dtype = np.asarray(image).dtype if isinstance(image, np.ndarray) else None
    fitted = _fit_image(
        image, n_clusters, channel_axis=channel_axis, rgb=rgb, color_space=color_space,
        mask=mask, seed=seed, n_init=n_init, max_iter=max_iter, tol=tol,
        progress=ft.part(progress, 0.0, 0.8),
    )  # fmt: skip
    model, prep, comp = fitted.model, fitted.prep, fitted.compressed
    image = fitted.image
    labels, inertia, counts = model.label_prepared(
        prep, comp, chunk_size, distinct=(fitted.idx, fitted.d2) if comp is not None else None,
        progress=ft.part(progress, 0.8, 0.95),
    )  # fmt: skip
    labels = labels.reshape(prep.spatial_shape)
    ft.tick(progress, 0.95, "recolouring")
    recolored = model.recolor(image, labels)
    if source_dtype is not None and recolored.dtype != source_dtype:  # big-endian input
        recolored = recolored.astype(source_dtype)
    ft.tick(progress, 1.0, "done")
    return Segmentation(
        labels=labels,
        centers=model.colors.copy(),
        recolored=recolored,
        inertia=inertia,
        n_iter=fitted.n_iter,
        counts=counts,
        exact=fitted.exact,
        model=model,
    )


class Fit(NamedTuple):
    """Result of :func:`fit`: the model, Lloyd iterations, and whether it is the proven optimum."""

    model: KMeansModel
    n_iter: int
    exact: bool


def fit(
    image,
    n_clusters=5,
    *,
    channel_axis=None,
    rgb=None,
    color_space="rgb",
    mask=None,
    seed=0,
    n_init=4,
    max_iter=300,
    tol=1e-4,
    progress=None,
) -> Fit:
    """Fit a :class:`KMeansModel` to an image without labelling it.

    Takes the same arguments as :func:`segment` and fits exactly as it does; use
    ``model.predict`` and ``model.recolor`` to apply the model, for instance slab by slab or to a
    higher-resolution version of the image.

    Parameters
    ----------
    image, n_clusters, channel_axis, rgb, color_space, mask, seed, n_init, max_iter, tol
        As for :func:`segment`.
    progress : callable, optional
        ``progress(fraction, step)``, called regularly during the work (between restarts, Lloyd
        iterations, coarse-to-fine stages, levels of the exact 1-D solver and chunks of pixels)
        with the fraction done (a float in [0, 1] that never decreases) and a short description
        of the step. To cancel, raise an exception from it: the computation stops there and the
        exception propagates unchanged. Results are the same with or without it.


    Returns
    -------
    Fit
        ``(model, n_iter, exact)``.

    Examples
    --------
    >>> import numpy as np
    >>> model, n_iter, exact = fit(np.array([0, 10, 200, 210], dtype=np.uint8), 2)
    >>> model.predict(np.array([[3, 250]], dtype=np.uint8)), exact
    (array([[1, 2]], dtype=uint8), True)
    """
    progress = ft.checked_progress(progress)
    fitted = _fit_image(
        image, n_clusters, channel_axis=channel_axis, rgb=rgb, color_space=color_space,
        mask=mask, seed=seed, n_init=n_init, max_iter=max_iter, tol=tol, progress=progress,
    )  # fmt: skip
    ft.tick(progress, 1.0, "done")
    return Fit(fitted.model, fitted.n_iter, fitted.exact)


class _Fitted(NamedTuple):
    image: np.ndarray
    prep: ft.Prepared
    compressed: object
    model: KMeansModel
    idx: np.ndarray
    d2: np.ndarray
    n_iter: int
    exact: bool


def _fit_image(
    image, n_clusters, *, channel_axis, rgb, color_space, mask, seed, n_init, max_iter, tol,
    progress=None,
) -> _Fitted:  # fmt: skip
    """Validate the arguments, lay the image out, compress or sample it, and fit."""
    progress = ft.checked_progress(progress)
    ft.tick(progress, 0.0, "reading pixels")
    image = ft.as_image(image)
    k, n_init, max_iter, tol, seed = ft.check_fit_args(
        n_clusters, n_init=n_init, max_iter=max_iter, tol=tol, seed=seed
    )
    spec = ft.make_spec(image, channel_axis=channel_axis, rgb=rgb, color_space=color_space)
    prep = ft.prepare(image, spec, mask)
    values, weights, comp, covers_all = _support(prep, seed, ft.part(progress, 0.02, 0.2))
    res = fit_weighted(
        values, weights, spec, prep.dtype, k,
        n_init=n_init, max_iter=max_iter, tol=tol, seed=seed, covers_all=covers_all,
        progress=ft.part(progress, 0.2, 1.0),
    )  # fmt: skip
    return _Fitted(image, prep, comp, res.model, res.idx, res.d2, res.n_iter, res.exact)


def fit_weighted(
    values,
    weights,
    spec,
    dtype,
    n_clusters,
    *,
    n_init=4,
    max_iter=300,
    tol=1e-4,
    seed=0,
    covers_all=True,
    progress=None,
):
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
        ``progress(fraction, step)``, called regularly during the work (between restarts, Lloyd
        iterations, coarse-to-fine stages, levels of the exact 1-D solver and chunks of pixels)
        with the fraction done (a float in [0, 1] that never decreases) and a short description
        of the step. To cancel, raise an exception from it: the computation stops there and the
        exception propagates unchanged. Results are the same with or without it.

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
            f"making {n_distinct} clusters.",
            UserWarning,
            stacklevel=3,
        )
        k = n_distinct
    feats = ft.to_features(values, spec, dtype)
    centers, idx, d2, n_iter, exact = _fit(
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


class WeightedFit(NamedTuple):
    """Result of :func:`fit_weighted`."""

    model: KMeansModel
    idx: np.ndarray  # (m,) each value's cluster, 0-based in the model's order
    d2: np.ndarray  # (m,) each value's squared feature distance to its centre
    n_iter: int
    exact: bool


def _ordered_model(centers, idx, values, weights, spec, dtype, seed):
    """Model with clusters ordered dark to bright, and ``idx`` renumbered to match.

    ``idx`` is each value's cluster. Colours (input units) are the centres themselves, except for
    CIELAB clustering where they are each cluster's weighted mean RGB. A cluster left with no
    pixel (possible only after the last reassignment) is dropped.
    """
    k = centers.shape[0]
    mass = np.bincount(idx, weights=weights, minlength=k)
    if spec.color_space == "lab":
        sums = [np.bincount(idx, weights=weights * v, minlength=k) for v in values.T.astype(float)]
        colors = np.stack(sums, axis=1) / np.maximum(mass, 1e-300)[:, None]
    else:
        colors = centers.astype(np.float64)
    keep = np.flatnonzero(mass > 0)
    order = keep[np.lexsort((*colors[keep].T[::-1], ft.luminance(colors[keep], spec)))]
    renumber = np.zeros(k, np.intp)
    renumber[order] = np.arange(order.size)
    model = KMeansModel(centers[order], colors[order], spec, np.dtype(dtype).name, seed)
    return model, renumber[idx]
