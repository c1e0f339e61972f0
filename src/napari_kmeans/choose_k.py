"""Choosing k: inertia for a range of k, computed once on the compressed pixels, and its elbow."""

from __future__ import annotations

import numpy as np

from . import blocks, lazy_features
from . import features as ft
from .kmeans1d import inertia_curve_1d
from .lloyd import kmeans
from .params import check_k_range, make_params
from .segment import prepare_image


def inertia_curve(
    image, k_max=10, *, k_min=2, channel_axis=None, rgb=None, color_space="rgb", mask=None,
    seed=0, n_init=None, progress=None, params=None,
):  # fmt: skip
    """Inertia of k-means for every k in ``k_min..k_max``.

    The image is compressed (or sampled) once; each k is then fitted on the weighted distinct
    values, exactly for single-channel data. Inertias of sampled images are scaled estimates.
    The pixels are described by the recipe of ``params`` (smoothing, texture, filters,
    position), as the fit describes them; a dask image is read block by block, its features
    computed with overlap (:mod:`napari_kmeans.lazy_features`), as :func:`fit` would.

    Parameters
    ----------
    image, channel_axis, rgb, color_space, mask, seed, n_init
        As for :func:`napari_kmeans.segment` (``n_init`` restarts for each k; default 2, or
        those of ``params``).
    params : Params, optional
        ``color_space``, ``seed`` and ``n_init`` as one validated object (its ``n_clusters``
        is not used: the curve runs over ``k_min..k_max``).
    k_max : int
        Largest k of the curve (at most 1000).
    k_min : int, optional
        Smallest k of the curve.
    progress : callable, optional
        ``progress(fraction, step)``, called before each k and during each fit, with the
        fraction done (in [0, 1], never decreasing) and the step; raise from it to cancel (the
        exception propagates unchanged). Results are the same with or without it.

    Raises
    ------
    TypeError, ValueError
        For arguments out of range (each error names the parameter), or an image with fewer
        distinct values than ``k_min``.

    Returns
    -------
    ks : (n,) ndarray of int
    inertias : (n,) ndarray of float
        Non-increasing for exact (single-channel) data.

    Examples
    --------
    >>> import numpy as np
    >>> image = np.repeat(np.array([0, 10, 100, 110, 200, 210], dtype=np.uint8), 10)
    >>> ks, inertias = inertia_curve(image, 4)
    >>> ks, inertias
    (array([2, 3, 4]), array([101500.,   1500.,   1000.]))
    >>> elbow(ks, inertias)
    3
    """
    progress = ft.checked_progress(progress)
    ft.tick(progress, 0.0, "reading pixels")
    k_min, k_max = check_k_range(k_min, k_max)
    if n_init is None:  # the curve's own default, which yields to params
        n_init = 2 if params is None else getattr(params, "n_init", 2)
    params = make_params(params, color_space=color_space, seed=seed, n_init=n_init)
    n_init, seed = params.n_init, params.seed
    if blocks.is_dask(image) or blocks.is_dask(mask):
        spec, dtype, support = _lazy_support(image, params, channel_axis, rgb, mask)
    else:
        prepared = prepare_image(
            ft.as_image(image), channel_axis=channel_axis, rgb=rgb, mask=mask, params=params,
            progress=ft.part(progress, 0.0, 0.1),
        )  # fmt: skip
        spec, dtype, support = prepared.spec, prepared.pixels.dtype, prepared.support
    values, weights = support.values, support.weights
    feats = ft.to_features(values, spec, dtype)
    k_max = min(k_max, values.shape[0])
    if k_max < k_min:
        raise ValueError(
            f"the image has only {values.shape[0]} distinct value"
            f"{'s' if values.shape[0] != 1 else ''}, fewer than the smallest k of the curve "
            f"(k_min={k_min}): there is no curve to draw; pass a smaller k_min."
        )
    ks = np.arange(k_min, k_max + 1)
    if feats.shape[1] == 1:
        order = np.argsort(feats[:, 0], kind="stable")
        inertias = inertia_curve_1d(
            feats[order, 0], weights[order], k_max, ft.part(progress, 0.1, 1.0)
        )[k_min - 1 :]
    else:
        inertias = []
        for i, k in enumerate(ks):
            each = ft.part(progress, 0.1 + 0.9 * i / ks.size, 0.1 + 0.9 * (i + 1) / ks.size)
            ft.tick(each, 0.0, f"k-means for k = {k}")
            inertias.append(
                kmeans(feats, weights, int(k), n_init=n_init, seed=seed, progress=each).inertia
            )
    ft.tick(progress, 1.0, "done")
    return ks, np.array(inertias, dtype=np.float64)


def _lazy_support(image, params, channel_axis, rgb, mask):
    """``(spec, dtype, support)`` of a dask image's pixels or recipe features, block by block
    (as :func:`napari_kmeans.lazy.fit_lazy` finds them)."""
    image = blocks.as_dask_image(image)
    spec = ft.make_spec(image, channel_axis=channel_axis, rgb=rgb, color_space=params.color_space)
    laid = blocks.lay_out_blocks(image, spec, mask)
    if params.recipe.is_plain:
        return laid.spec, laid.dtype, blocks.support_of_blocks(laid, params.seed)
    feats = lazy_features.features_of(laid, lazy_features.fitted_recipe(laid, params.recipe))
    return feats.spec, feats.dtype, feats.support(params.seed)


def elbow(ks, inertias) -> int:
    """The k where the inertia curve bends most (the point farthest below the chord).

    Both axes are scaled to [0, 1]; the elbow maximises the gap between the straight line from
    the first to the last point and the curve (the "kneedle" criterion of Satopää et al. 2011).
    ``ks`` must increase and the inertias be finite (a ValueError otherwise).
    """
    ks = np.asarray(ks, dtype=np.float64)
    y = np.asarray(inertias, dtype=np.float64)
    if ks.ndim != 1 or ks.size == 0 or y.shape != ks.shape:
        raise ValueError(
            f"elbow needs ks and inertias of the same length, at least one point each, got "
            f"shapes {ks.shape} and {y.shape}; pass the two arrays inertia_curve returns."
        )
    if np.any(np.diff(ks) <= 0) or not np.all(np.isfinite(ks)):
        raise ValueError(
            f"elbow needs ks in increasing order, each once, got {_listed(ks)}; sort the curve "
            "by k (np.argsort(ks)) and keep one inertia per k."
        )
    if not np.all(np.isfinite(y)):
        raise ValueError(
            f"elbow needs finite inertias, got {_listed(y)}; pass the inertias inertia_curve "
            "returns."
        )
    if ks.size < 3 or y[0] == y[-1]:
        return int(ks[0])
    x = (ks - ks[0]) / (ks[-1] - ks[0])
    yn = (y - y[-1]) / (y[0] - y[-1])
    return int(ks[np.argmax((1 - x) - yn)])


def _listed(values) -> str:
    """Numbers as a short list for a message (integers without a decimal point)."""
    return "[" + ", ".join(f"{v:g}" for v in values[:20]) + (", ...]" if values.size > 20 else "]")
