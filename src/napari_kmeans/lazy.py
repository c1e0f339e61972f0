"""k-means segmentation of dask arrays: images larger than memory, on one machine or a cluster.

The functions here give the same results as the in-memory engine (exactly for integer data) while
reading the image one block at a time:

- **fit**: integer data that compress (8-bit with up to three channels, 16-bit and float16 gray)
  are fitted from a histogram of pixel codes, summed over blocks; other single-channel data from
  their distinct values, merged over blocks, while there are few enough of them, else from a
  fixed grid over the value range refined on the pixels near the cuts (as in memory);
  everything else from the same seeded, order-independent sample as :mod:`napari_kmeans.sampling`,
  drawn block by block. Then :func:`napari_kmeans.fitting.fit_support` fits the model, as in
  memory.
- **predict**: ``blockwise`` labelling by the model's kernel (a look-up table per block, or
  chunked nearest centre), returning dask arrays that are computed only when asked for.

The block-wise mechanics (layout of blocks, reductions, labelling and recolouring graphs) are in
:mod:`napari_kmeans.blocks`; this module composes them with the fit. Reductions run through
``dask.compute``, so a ``dask.distributed`` client, when one is active, runs them on its cluster.
dask is imported only when one of these functions is called: importing :mod:`napari_kmeans` does
not import dask.
"""

from __future__ import annotations

import functools
from dataclasses import replace
from typing import NamedTuple

import numpy as np

from . import blocks, matching, sampling
from . import features as ft
from . import lazy_features as lf
from . import seeds as sd
from .blocks import (
    FLOAT_DISTINCT_MAX_PIXELS,
    LazyImage,
    as_dask_image,
    is_dask,
    lay_out_blocks,
    support_of_blocks,
)
from .compress import Support
from .fitting import Segmentation, fit_support, support_stats
from .params import Params, make_params
from .recipe import order_by_input

DISTINCT_CAP = sampling.DISTINCT_CAP  # most distinct values kept (the in-memory engine's rule)

__all__ = [
    "DISTINCT_CAP",
    "FLOAT_DISTINCT_MAX_PIXELS",
    "LazyFit",
    "LazyImage",
    "Support",
    "as_dask_image",
    "confidence_lazy",
    "fit_lazy",
    "is_dask",
    "lay_out_blocks",
    "predict_lazy",
    "recolor_lazy",
    "segment_lazy",
    "support_of_blocks",
]


class LazyFit(NamedTuple):
    """Result of :func:`fit_lazy`.

    ``counts`` and ``inertia`` are known (not None) when the support covers every pixel value:
    they then cost no further pass over the data. ``layout`` is the laid-out dask image.
    """

    model: object  # the fitted KMeansModel
    n_iter: int
    exact: bool
    counts: np.ndarray | None
    inertia: float | None
    layout: LazyImage


def fit_lazy(
    image, params: Params, *, channel_axis=None, rgb=None, mask=None, seeds=None, match_to=None,
    progress=None,
) -> LazyFit:  # fmt: skip
    """Fit a model to a dask image from block-wise reductions (one to three passes; about four
    with a feature recipe, see :func:`fit_lazy_features`).

    Parameters
    ----------
    image : dask array (or ndarray)
        As for :func:`napari_kmeans.segment`.
    params : Params
        The clustering settings.
    channel_axis, rgb, mask, seeds, match_to
        As for :func:`napari_kmeans.segment` (``seeds`` may be a dask array: the seed classes'
        means are one more reduction over the blocks).
    progress : callable, optional
        ``progress(fraction, step)``, called between the reductions and during the fit.

    Returns
    -------
    LazyFit
        ``(model, n_iter, exact, counts, inertia, layout)``; counts and inertia are None when
        the fit used a sample (:func:`segment_lazy` then counts in one more pass).
    """
    params = make_params(params)  # a Params (None: the defaults), not k
    progress = ft.checked_progress(progress)
    image = as_dask_image(image)
    spec = ft.make_spec(image, channel_axis=channel_axis, rgb=rgb, color_space=params.color_space)
    laid = lay_out_blocks(image, spec, mask)
    if match_to is not None:
        matching.reference_model(match_to)  # refuse a wrong type before the passes
    means = None if seeds is None else seed_means_of_blocks(laid, seeds, params.n_clusters)
    sd.check_pinned(params.pin_seeds, seeds, means is not None)
    ft.tick(progress, 0.0, "reading blocks")
    if not params.recipe.is_plain:
        if means is not None:
            raise ValueError(
                "seeds with a feature recipe (smoothing, texture, filters or position) are not "
                "supported on dask arrays yet; segment the image in memory (np.asarray(image)) "
                "or a region of it, or use seeds with pixel values."
            )
        fitted = fit_lazy_features(laid, params, progress)
        return fitted if match_to is None else _matched_fit(fitted, match_to)
    found = support_of_blocks(laid, params.seed)
    reduce = functools.partial(blocks.reduce_blocks, laid)
    res = fit_support(
        found, spec, laid.dtype, params, ft.part(progress, 0.6, 1.0), reduce, seeds=means
    )
    model = res.model if match_to is None else matching.match_model(res.model, match_to)
    counts = inertia = None
    exact = res.exact
    if params.recipe.cleans:  # raw values, cleaned labels: counts come after the clean-up
        model, exact = replace(model, recipe=params.recipe), False
    elif found.covers_all:  # every distinct value with its count: no further pass over the data
        counts, inertia = support_stats(model, found, laid.dtype)
    return LazyFit(model, res.n_iter, exact, counts, inertia, laid)


def _seed_step(block, mask_block, seed_block, *, spec, dtype):
    pixels, valid = ft.layout(block, spec, mask_block)
    return sd.class_sums(pixels, valid, seed_block, spec=spec, dtype=dtype)


def seed_means_of_blocks(laid: LazyImage, seeds, n_clusters):
    """The :class:`~napari_kmeans.seeds.SeedMeans` of a laid-out dask image: the seeds'
    per-block class sums (``seeds.class_sums``), merged, finished. None when nothing is seeded."""
    import dask

    da = blocks.dask_array_module()
    seeds = sd.check_seeds(seeds, laid.spatial_shape, n_clusters)
    chunks = laid.spatial_chunks
    seeds = seeds.rechunk(chunks) if is_dask(seeds) else da.from_array(seeds, chunks)
    step = dask.delayed(_seed_step, pure=True)
    join = dask.delayed(sd.merge_sums, pure=True)
    parts = [
        step(img, msk, sb, spec=laid.spec, dtype=laid.dtype)
        for (img, msk), sb in zip(laid.blocks(), seeds.to_delayed().ravel(), strict=True)
    ]
    while len(parts) > 1:
        parts = [join(*parts[i : i + 2]) if i + 1 < len(parts) else parts[i]
                 for i in range(0, len(parts), 2)]  # fmt: skip
    return sd.finish_means(dask.compute(parts[0])[0], n_clusters)


def _confidence_block(block, mask_block=None, *, model, spec, image_dtype, chunk_size):
    pixels, valid = ft.layout(block, spec, mask_block)
    conf = model.confidence_pixels(pixels, valid, image_dtype, chunk_size=chunk_size)
    return conf.reshape(ft.spatial_shape_of(block.shape, spec))


def confidence_lazy(model, image, *, mask=None, rgb=None, chunk_size=None):
    """:meth:`KMeansModel.confidence` for dask arrays: a lazy float32 image in 0..1.

    The image's spatial shape and chunks; NaN on masked and invalid pixels. An in-memory
    ``mask`` that leaves no pixel is refused (ValueError), as in memory; a dask mask, NaN or
    transparency that leave none give NaN everywhere (see :func:`predict_lazy`). For a model with
    a feature recipe, in its feature space (the features computed block by block with overlap,
    as for :func:`predict_lazy`); the clean-up is not part of it, as in memory.
    """
    chunk_size = ft.check_chunk_size(chunk_size)
    image = as_dask_image(image)
    laid = lay_out_blocks(image, model.check_image(image, rgb=rgb), mask)
    if model.uses_recipe:
        conf = lf.confidence_with_recipe(model, laid, chunk_size)
        if conf is not None:
            return conf
        model = replace(model, recipe=None)  # clean-up only: raw values
    index, spatial = laid.index()
    args = [laid.pixels, index]
    if laid.mask is not None:
        args += [laid.mask, spatial]
    return blocks.dask_array_module().blockwise(
        _confidence_block, spatial, *args, dtype=np.float32, concatenate=True, model=model,
        spec=laid.spec, image_dtype=laid.dtype, chunk_size=chunk_size,
    )  # fmt: skip


def _matched_fit(fitted: LazyFit, match_to) -> LazyFit:
    """``fitted`` with its labels renumbered to match ``match_to``'s IDs (counts follow)."""
    lut = matching.match_labels(fitted.model, match_to)
    model = matching.relabel_model(fitted.model, lut, match_to)
    counts = fitted.counts
    if counts is not None:
        moved = np.zeros(model.n_clusters, np.int64)
        moved[lut[1 : len(counts) + 1] - 1] = counts
        counts = moved
    return fitted._replace(model=model, counts=counts)


def fit_lazy_features(laid: LazyImage, params: Params, progress=None) -> LazyFit:
    """:func:`fit_lazy` with a feature recipe (smoothing, texture, filters, position).

    Passes over the blocks, each computing the features with overlap
    (:mod:`napari_kmeans.lazy_features`): the standardiser's statistics (for derived
    features), the support of the standardised features (as in memory: distinct values, grid
    or the seeded sample), the fit, then one labelling pass that sums each cluster's input
    values to order and colour the clusters. ``inertia`` (in feature space) is known; counts
    too, unless the labels are cleaned.
    """
    progress = ft.checked_progress(progress)
    ft.tick(progress, 0.05, "standardising features")
    recipe = lf.fitted_recipe(laid, params.recipe)
    feats = lf.features_of(laid, recipe)
    ft.tick(progress, 0.3, "reading features")
    found = feats.support(params.seed)
    res = fit_support(found, feats.spec, feats.dtype, params, ft.part(progress, 0.5, 0.8),
                      feats.reduce)  # fmt: skip
    ft.tick(progress, 0.8, "ordering clusters")
    counts, sums, inertia = feats.colour_sums(res.model)
    model, lut = order_by_input(res.model, counts, sums, laid.spec, laid.dtype, recipe)
    counts = None if recipe.cleans else counts[np.argsort(lut[1:])]
    exact = res.exact and not recipe.cleans
    return LazyFit(model, res.n_iter, exact, counts, inertia, laid)


def _recipe_labels(model, laid, chunk_size, counts, inertia, progress):
    """Lazy labels of a model with a recipe, with the counts (after the clean-up) and the
    inertia (in feature space, before it) that the fit did not give."""
    labels = lf.labels_with_recipe(model, laid, chunk_size)
    if inertia is None:  # clean-up of raw values: the inertia of the raw labels
        ft.tick(progress, 0.0, "measuring inertia")
        inertia = blocks.stats_of_blocks(replace(model, recipe=None), laid, chunk_size)[1]
    if counts is None:
        ft.tick(progress, 0.5, "counting pixels per cluster (after the clean-up)")
        da = blocks.dask_array_module()
        found = da.bincount(labels.ravel(), minlength=model.n_clusters + 1).compute()
        counts = found[1 : model.n_clusters + 1].astype(np.int64)
    return labels, counts, inertia


def predict_lazy(model, image, *, mask=None, chunk_size=None, rgb=None):
    """Label a dask image with a fitted model, lazily: :meth:`KMeansModel.predict` for dask.

    Parameters
    ----------
    model : KMeansModel
        A fitted model.
    image : dask array (or ndarray)
        An image with the channel layout the model was fitted on.
    mask : ndarray or dask array of bool, optional
        Pixels to label (the image's shape without its channel axis); others get 0.
    chunk_size : int, optional
        Pixels per assignment step inside a block, for data that do not compress.
    rgb : bool or None, optional
        Whether the image is known to be RGB(A); see :meth:`KMeansModel.check_image`.

    Returns
    -------
    labels : dask array
        The image's spatial shape and chunks, the model's label dtype; nothing is computed yet.
        Blocks with no valid pixel are 0. An in-memory ``mask`` that leaves no pixel is
        refused, as by ``predict``; a dask mask, NaN or transparency that leave none give
        zeros, since telling so would read the whole image before any block.

    Raises
    ------
    ValueError
        When an in-memory ``mask`` leaves no pixel, or the image does not fit the model.

    Examples
    --------
    >>> import dask.array as da, numpy as np
    >>> from napari_kmeans import segment
    >>> model = segment(np.array([0, 10, 200, 210], dtype=np.uint8), 2).model
    >>> labels = predict_lazy(model, da.from_array(np.array([5, 250, 0], np.uint8), chunks=2))
    >>> labels.compute()
    array([1, 2, 1], dtype=uint8)
    """
    if getattr(model, "uses_recipe", False):  # features with overlap, clean-up
        return lf.predict_with_recipe(model, image, mask=mask, chunk_size=chunk_size, rgb=rgb)
    return blocks.predict_blocks(model, image, mask=mask, chunk_size=chunk_size, rgb=rgb)


def recolor_lazy(model, image, labels, *, rgb=None):
    """:meth:`KMeansModel.recolor` for dask arrays: a lazy image painted with cluster colours.

    Returns a dask array with the shape, dtype and spatial chunks of ``image`` (its channel axis
    in one chunk). ``rgb`` declares the image's layout (see :meth:`KMeansModel.check_image`).
    """
    return blocks.recolor_blocks(model, image, labels, rgb=rgb)


def segment_lazy(
    image, n_clusters=5, *, channel_axis=None, rgb=None, color_space="rgb", mask=None, seed=0,
    n_init=4, max_iter=300, tol=1e-4, chunk_size=None, smoothing=0.0, features="values",
    spatial_weight=0.0, majority=0, min_size=0, seeds=None, pin_seeds=False, match_to=None,
    progress=None, params=None,
) -> Segmentation:  # fmt: skip
    """:func:`napari_kmeans.segment` for dask arrays: fit by reductions, label lazily.

    Parameters are those of :func:`napari_kmeans.segment`, the feature recipe and clean-up
    (``smoothing``, ``features``, ``spatial_weight``, ``majority``, ``min_size``) included:
    features are computed block by block with the overlap they need
    (:mod:`napari_kmeans.lazy_features`; see ``docs/large-data.md`` for what is exact).
    ``image`` and ``mask`` may be dask arrays (numpy arrays are wrapped). The model is fitted now, reading the image block by block
    (one pass for data that compress; up to three passes for others, plus one for ``counts`` and
    ``inertia`` when the fit used a sample). Labels and the recoloured image are returned as dask
    arrays that are computed only when asked for. ``progress(fraction, step)`` is called between
    the reductions and during the fit (not inside a ``dask.compute``); raising from it cancels.

    ``seeds`` (numpy or dask, chunked like the image's spatial axes or not), ``pin_seeds`` and
    ``match_to`` are as for :func:`napari_kmeans.segment`; the seed classes' means are one more
    reduction over the blocks.

    Returns
    -------
    Segmentation
        As :func:`napari_kmeans.segment`, with ``labels`` and ``recolored`` dask arrays chunked
        like the image. For integer data, and for any data with at most 262144 valid pixels or
        (single-channel) at most ``DISTINCT_CAP`` distinct values, every field equals the
        in-memory result; for larger float data the model is fitted on the same kind of sample
        but may differ slightly. The result is the same for any chunking of the image.

    Raises
    ------
    TypeError, ValueError
        As :func:`napari_kmeans.segment`; also for dask arrays with unknown chunk sizes.

    Examples
    --------
    >>> import dask.array as da, numpy as np
    >>> image = da.from_array(np.array([[0, 10, 200], [210, 0, 10]], np.uint8), chunks=(1, 2))
    >>> result = segment_lazy(image, 2)
    >>> result.labels
    dask.array<block_labels, shape=(2, 3), dtype=uint8, chunksize=(1, 2), chunktype=numpy.ndarray>
    >>> result.labels.compute()
    array([[1, 1, 2],
           [2, 1, 1]], dtype=uint8)
    >>> result.centers.ravel(), result.inertia, result.counts
    (array([  5., 205.]), 150.0, array([4, 2]))
    """
    image = as_dask_image(image)
    params = make_params(
        params, n_clusters=n_clusters, color_space=color_space, seed=seed, n_init=n_init,
        max_iter=max_iter, tol=tol, chunk_size=chunk_size, smoothing=smoothing,
        features=features, spatial_weight=spatial_weight, majority=majority, min_size=min_size,
        pin_seeds=pin_seeds,
    )  # fmt: skip
    progress = ft.checked_progress(progress)
    fitted = fit_lazy(
        image, params, channel_axis=channel_axis, rgb=rgb, mask=mask, seeds=seeds,
        match_to=match_to, progress=ft.part(progress, 0.0, 0.8),
    )  # fmt: skip
    model, laid = fitted.model, fitted.layout
    counts, inertia = fitted.counts, fitted.inertia
    if model.uses_recipe:
        labels, counts, inertia = _recipe_labels(model, laid, params.chunk_size, counts, inertia,
                                                 ft.part(progress, 0.8, 1.0))  # fmt: skip
    else:
        if counts is None:
            ft.tick(progress, 0.8, "counting pixels per cluster")
            counts, inertia = blocks.stats_of_blocks(model, laid, params.chunk_size)
        labels = blocks.labels_of_blocks(model, laid, params.chunk_size)
    ft.tick(progress, 1.0, "done")
    return Segmentation(
        labels=labels,
        centers=model.colors.copy(),
        recolored=recolor_lazy(model, image, labels),
        inertia=inertia,
        n_iter=int(fitted.n_iter),
        counts=counts,
        exact=fitted.exact,
        model=model,
    )
