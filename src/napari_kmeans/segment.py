"""``segment``: k-means segmentation of an image's pixels, the engine's front door.

Its stages are public, so that the widget, the command line and scripts compose them instead of
re-implementing them:

- :func:`prepare_image`: lay the pixels out (channels, mask, non-finite, alpha) and find the
  weighted values to fit on (its :class:`~napari_kmeans.compress.Support`);
- :func:`fit_prepared` (or :func:`fit`, for any image, numpy or dask, and :func:`fit_many`, for
  several images together): the model;
- :meth:`FittedImage.label` (or ``model.predict``): labels, inertia and counts;
- ``model.recolor``: the recoloured image.

:func:`segment` runs them in that order; :func:`napari_kmeans.lazy.segment_lazy` does the same
on dask arrays, block by block.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from . import blocks, lazy
from . import features as ft
from .compress import Support, codec_for, compress
from .fitting import Fit, Segmentation, WeightedFit, fit_support, fit_weighted
from .model import KMeansModel, Labelling
from .params import make_params
from .recipe import Recipe, recipe_features, refuse_on_dask
from .sampling import draw_sample, gray_support, pool_supports, reduce_chunks

__all__ = [
    "Fit",
    "FittedImage",
    "PreparedImage",
    "Segmentation",
    "WeightedFit",
    "fit",
    "fit_many",
    "fit_prepared",
    "fit_weighted",
    "prepare_image",
    "segment",
]


# -- stage 1: the pixels and what to fit on ------------------------------------------------------


@dataclass(frozen=True, eq=False)
class PreparedImage:
    """An in-memory image laid out for clustering, with the weighted values to fit on.

    Attributes
    ----------
    image : ndarray
        The image (native byte order; the caller's array when it already was).
    pixels : napari_kmeans.features.Prepared
        The pixel layout: ``(n_pixels, n_channels)`` values, valid pixels, spatial shape, spec.
    support : napari_kmeans.compress.Support
        Weighted distinct values (with every pixel's code for data that compress), or a sample.
    """

    image: np.ndarray
    pixels: ft.Prepared
    support: Support
    recipe: Recipe | None = None  # the fitted recipe, when the features are not the raw values
    source: ft.Prepared | None = None  # then: the input's own layout (pixels in its units)

    @property
    def spec(self) -> ft.FeatureSpec:
        return self.pixels.spec

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return self.pixels.spatial_shape


def image_support(pixels: ft.Prepared, seed: int, progress=None) -> Support:
    """The weighted values to fit a laid-out image on, by the rules the dask path shares.

    Codes counted (``compress.compress``, keeping every pixel's code) for data that compress;
    else, for single-channel data, :func:`napari_kmeans.sampling.gray_support` (distinct
    values, a grid over the range, or the sample); else the seeded sample of
    ``sampling.draw_sample``.
    """
    ft.tick(progress, 0.0, "compressing pixels")
    found = compress(pixels.pixels, pixels.valid)
    if found is not None:
        return found
    reduce = reduce_chunks(pixels.pixels, pixels.valid, progress)
    if pixels.spec.n_channels == 1:
        return gray_support(reduce, pixels.dtype, pixels.n_valid, seed, progress)
    return draw_sample(reduce, pixels.n_valid, seed, progress=progress)


def prepare_image(
    image, *, channel_axis=None, rgb=None, color_space="rgb", mask=None, seed=0, params=None,
    progress=None,
) -> PreparedImage:  # fmt: skip
    """Stage 1 of :func:`segment`: lay an in-memory image out and find what to fit on.

    Parameters
    ----------
    image, channel_axis, rgb, color_space, mask, seed, progress
        As for :func:`segment` (``seed`` chooses the sample of images that do not compress).
    params : Params, optional
        Settings (only ``color_space`` and ``seed`` are used here).

    Returns
    -------
    PreparedImage
        To give to :func:`fit_prepared` (or :func:`fit`, :func:`segment`).

    Raises
    ------
    TypeError, ValueError
        As :func:`segment`, for the image, the layout and the mask.
    """
    params = make_params(params, color_space=color_space, seed=seed)
    progress = ft.checked_progress(progress)
    ft.tick(progress, 0.0, "reading pixels")
    image = ft.as_image(image)
    spec = ft.make_spec(image, channel_axis=channel_axis, rgb=rgb, color_space=params.color_space)
    pixels = ft.prepare(image, spec, mask)
    recipe = params.recipe
    if recipe.is_plain:
        kept = recipe if recipe.cleans else None
        return PreparedImage(image, pixels, image_support(pixels, params.seed, progress), kept)
    ft.tick(progress, 0.05, "computing features")
    feats, fitted = recipe_features(recipe, pixels, fit=True)
    support = image_support(feats, params.seed, ft.part(progress, 0.3, 1.0))
    return PreparedImage(image, feats, support, fitted, source=pixels)


# -- stage 2: the model -------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class FittedImage:
    """A model fitted to a :class:`PreparedImage`, ready to label it without a second pass.

    ``idx`` and ``d2`` are the cluster (0-based) of each of ``prepared.support.values`` and its
    squared feature distance, from the fit: labelling through them saves one assignment.
    """

    model: KMeansModel
    n_iter: int
    exact: bool
    prepared: PreparedImage
    idx: np.ndarray
    d2: np.ndarray
    labelling: Labelling | None = None  # labels already made by the fit (recipe models)

    @property
    def fit(self) -> Fit:
        """``(model, n_iter, exact)``."""
        return Fit(self.model, self.n_iter, self.exact)

    def label(self, *, chunk_size=None, progress=None) -> Labelling:
        """Stage 3: ``(labels, inertia, counts)`` of the prepared image, labels in its spatial
        shape (0 for invalid pixels), by the model's labelling kernel."""
        if self.labelling is not None:
            return self.labelling
        prep, support = self.prepared.pixels, self.prepared.support
        labels, inertia, counts = self.model.label_prepared(
            prep, support, chunk_size, distinct=(self.idx, self.d2), progress=progress
        )
        labels = labels.reshape(prep.spatial_shape)
        if self.model.uses_recipe:  # clean-up of raw-value labels
            labels = self.model.recipe.clean(labels)
            counts = np.bincount(labels.ravel(), minlength=self.model.n_clusters + 1)[1:]
        return Labelling(labels, inertia, counts)


def fit_prepared(prepared: PreparedImage, params=None, *, progress=None) -> FittedImage:
    """Stage 2 of :func:`segment`: fit a model to a :class:`PreparedImage`.

    ``params`` is a :class:`~napari_kmeans.params.Params` (default: the defaults). Its
    ``color_space`` and ``seed`` should be those the image was prepared with.
    """
    params = make_params(params)
    pixels = prepared.pixels
    res = fit_support(
        prepared.support, prepared.spec, pixels.dtype, params, ft.checked_progress(progress),
        reduce=reduce_chunks(pixels.pixels, pixels.valid),
    )  # fmt: skip
    recipe = prepared.recipe
    if prepared.source is not None:
        return _fitted_with_recipe(prepared, res, params.chunk_size)
    model = res.model if recipe is None else replace(res.model, recipe=recipe)
    exact = res.exact and (recipe is None or not recipe.cleans)
    return FittedImage(model, res.n_iter, exact, prepared, res.idx, res.d2)


def _fitted_with_recipe(prepared: PreparedImage, res, chunk_size) -> FittedImage:
    """A fit on feature channels: the clusters ordered dark to bright by their pixels' mean
    *input* values, which become the model's colours (the centres stay in feature space)."""
    source, feats = prepared.source, prepared.pixels
    labelled = res.model.label_prepared(
        feats, prepared.support, chunk_size, distinct=(res.idx, res.d2)
    )
    labels, k = labelled.labels, res.model.n_clusters
    # label 0 (invalid pixels) is dropped: no masked copies of the pixels
    counts, sums = ft.cluster_sums(labels, source.pixels, k)
    counts = counts.astype(np.float64)
    mean = sums.sum(axis=0) / max(counts.sum(), 1.0)
    colors = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], mean)
    order = np.argsort(ft.luminance(colors, source.spec), kind="stable")
    rank = np.empty(k, np.intp)
    rank[order] = np.arange(k)
    lut = np.concatenate([[0], rank + 1]).astype(labels.dtype)
    recipe = prepared.recipe
    model = KMeansModel(
        res.model.centers[order], colors[order], source.spec, prepared.image.dtype.name,
        res.model.seed, recipe=recipe,
    )  # fmt: skip
    labels = recipe.clean(lut[labels].reshape(source.spatial_shape))
    if recipe.cleans:
        final = np.bincount(labels.ravel(), minlength=k + 1)[1:].astype(np.int64)
    else:  # the same labels, renumbered
        final = counts[order].astype(np.int64)
    exact = res.exact and not recipe.cleans
    done = Labelling(labels, labelled.inertia, final)
    return FittedImage(model, res.n_iter, exact, prepared, res.idx, res.d2, done)


def segment(
    image, n_clusters=5, *, channel_axis=None, rgb=None, color_space="rgb", mask=None, seed=0,
    n_init=4, max_iter=300, tol=1e-4, chunk_size=None, smoothing=0.0, features="values",
    spatial_weight=0.0, majority=0, min_size=0, progress=None, params=None,
) -> Segmentation:  # fmt: skip
    """Segment an image by k-means clustering of its pixel values.

    Parameters
    ----------
    image : (M, N[, ...][, C]) ndarray or dask array
        Grayscale, RGB(A) or multichannel image of any dimensionality; bool, integer or float.
        A dask array is processed out of core and gives dask ``labels`` and ``recolored``
        (see :mod:`napari_kmeans.lazy` and ``docs/large-data.md``).
        A :class:`PreparedImage` (from :func:`prepare_image`) is used as it is.
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
    params : Params, optional
        All the settings above (``n_clusters`` to ``chunk_size``) as one validated object;
        keywords left at their defaults defer to it.
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
    counts; other single-channel images with at most 1048576 valid pixels to their distinct
    values, larger ones to a grid of 16384 bins over their range (bin counts and exact sums,
    without sorting the pixels); other images are fitted on an order-independent sample of
    about 131072 pixels. Single-channel data are clustered exactly, by dynamic programming
    [2]_ [3]_, except on the grid: there the exact solution on the bins is refined by 1-D Lloyd
    on the pixels near the cuts (``exact`` False, inertia within 1.0001x of the optimum);
    multichannel data by weighted Lloyd [1]_ with greedy k-means++ seeding [4]_. See
    ``docs/algorithm.md``.

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
    params = make_params(
        params, n_clusters=n_clusters, color_space=color_space, seed=seed, n_init=n_init,
        max_iter=max_iter, tol=tol, chunk_size=chunk_size, smoothing=smoothing,
        features=features, spatial_weight=spatial_weight, majority=majority, min_size=min_size,
    )  # fmt: skip
    if blocks.is_dask(image) or blocks.is_dask(mask):  # out of core: dask arrays in, dask out
        refuse_on_dask(params.recipe)
        return lazy.segment_lazy(
            image, channel_axis=channel_axis, rgb=rgb, mask=mask, params=params,
            progress=progress,
        )  # fmt: skip
    progress = ft.checked_progress(progress)
    source_dtype = image.image.dtype if isinstance(image, PreparedImage) else None
    if isinstance(image, np.ndarray):
        source_dtype = image.dtype
    fitted = _fitted(image, params, channel_axis, rgb, mask, ft.part(progress, 0.0, 0.8))
    labels, inertia, counts = fitted.label(
        chunk_size=params.chunk_size, progress=ft.part(progress, 0.8, 0.95)
    )
    ft.tick(progress, 0.95, "recolouring")
    model = fitted.model
    recolored = model.recolor(fitted.prepared.image, labels)
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


def _fitted(image, params, channel_axis, rgb, mask, progress) -> FittedImage:
    """Stages 1 and 2 on an in-memory image (a :class:`PreparedImage` skips stage 1)."""
    if isinstance(image, PreparedImage):
        prepared = image
    else:
        prepared = prepare_image(
            image, channel_axis=channel_axis, rgb=rgb, mask=mask, params=params,
            progress=ft.part(progress, 0.0, 0.2),
        )  # fmt: skip
    return fit_prepared(prepared, params, progress=ft.part(progress, 0.2, 1.0))


def fit(
    image, n_clusters=5, *, channel_axis=None, rgb=None, color_space="rgb", mask=None, seed=0,
    n_init=4, max_iter=300, tol=1e-4, smoothing=0.0, features="values", spatial_weight=0.0,
    majority=0, min_size=0, progress=None, params=None,
) -> Fit:  # fmt: skip
    """Fit a :class:`KMeansModel` to an image without labelling it.

    Takes the same arguments as :func:`segment` and fits exactly as it does; use
    ``model.predict`` and ``model.recolor`` to apply the model, for instance slab by slab or to a
    higher-resolution version of the image.

    Parameters
    ----------
    image : ndarray, dask array or PreparedImage
        As for :func:`segment`. A dask array is fitted from block-wise reductions, as
        :func:`napari_kmeans.lazy.segment_lazy` does (see :func:`napari_kmeans.lazy.fit_lazy`,
        which also gives counts and inertia when they come for free).
    n_clusters, channel_axis, rgb, color_space, mask, seed, n_init, max_iter, tol, params
        As for :func:`segment`.
    progress : callable, optional
        As for :func:`segment`: ``progress(fraction, step)``, called regularly;
        raise from it to cancel.

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
    params = make_params(
        params, n_clusters=n_clusters, color_space=color_space, seed=seed, n_init=n_init,
        max_iter=max_iter, tol=tol, smoothing=smoothing, features=features,
        spatial_weight=spatial_weight, majority=majority, min_size=min_size,
    )  # fmt: skip
    progress = ft.checked_progress(progress)
    if blocks.is_dask(image) or blocks.is_dask(mask):
        refuse_on_dask(params.recipe)
        found = lazy.fit_lazy(
            image, params, channel_axis=channel_axis, rgb=rgb, mask=mask, progress=progress
        )
        result = Fit(found.model, found.n_iter, found.exact)
    else:
        result = _fitted(image, params, channel_axis, rgb, mask, progress).fit
    ft.tick(progress, 1.0, "done")
    return result


def fit_many(
    images, n_clusters=5, *, masks=None, channel_axis=None, rgb=None, color_space="rgb", seed=0,
    n_init=4, max_iter=300, tol=1e-4, progress=None, params=None,
) -> Fit:  # fmt: skip
    """Fit one model to the pixels of several images together.

    Each image is reduced to its support (distinct values with counts, or its sample), one at a
    time, so that only one image need be in memory: ``images`` may be a generator. The supports
    are pooled (equal values merged) and fitted as one image's would be: for images that compress
    the pooled histogram is exact, and ``fit_many([image])`` fits as :func:`fit` does.

    Parameters
    ----------
    images : iterable of ndarray or dask array
        Images of one dtype and channel layout.
    n_clusters, channel_axis, rgb, color_space, seed, n_init, max_iter, tol, params
        As for :func:`segment`; the layout settings apply to every image.
    masks : iterable of (ndarray or None), optional
        One mask per image (as for :func:`segment`), or None.
    progress : callable, optional
        ``progress(fraction, step)``, called during the final fit; raise from it to cancel.

    Returns
    -------
    Fit
        ``(model, n_iter, exact)``.

    Raises
    ------
    ValueError
        When the images differ in dtype or channel layout, or there is no image; and as
        :func:`segment` for each image.

    Examples
    --------
    >>> import numpy as np
    >>> a, b = np.array([0, 10], np.uint8), np.array([200, 210, 205], np.uint8)
    >>> fit_many([a, b], 2).model.colors.ravel()
    array([  5., 205.])
    """
    params = make_params(
        params, n_clusters=n_clusters, color_space=color_space, seed=seed, n_init=n_init,
        max_iter=max_iter, tol=tol,
    )  # fmt: skip
    recipe = params.recipe
    if not recipe.is_plain or recipe.cleans:
        raise ValueError(
            "fitting several images together with features (smoothing, texture, filters, "
            "position) or clean-up is not supported yet: each image would be standardised on "
            "its own scale. Fit on one image (fit, or --fit-on first) and apply its model."
        )
    masks = iter(masks) if masks is not None else None
    supports, layout = [], None
    for i, image in enumerate(images, 1):
        mask = next(masks, None) if masks is not None else None
        spec, dtype, found = _support_of(image, mask, params, channel_axis, rgb)
        if layout is not None and (spec, dtype) != layout:
            raise ValueError(
                f"fitting several images together needs images of one dtype and channel "
                f"layout: image 1 is {layout[1]} with {layout[0].n_channels} channel(s), image "
                f"{i} is {dtype} with {spec.n_channels}; segment them separately."
            )
        layout = spec, dtype
        supports.append(found)
    if layout is None:
        raise ValueError("fit_many needs at least one image.")
    spec, dtype = layout
    pooled = pool_supports(supports, codec_for(dtype, spec.n_channels), params.seed)
    res = fit_support(pooled, spec, dtype, params, ft.checked_progress(progress))
    return Fit(res.model, res.n_iter, res.exact)


def _support_of(image, mask, params, channel_axis, rgb):
    """``(spec, dtype, support)`` of one image, in memory or block by block."""
    if blocks.is_dask(image) or blocks.is_dask(mask):
        image = blocks.as_dask_image(image)
        spec = ft.make_spec(
            image, channel_axis=channel_axis, rgb=rgb, color_space=params.color_space
        )
        laid = blocks.lay_out_blocks(image, spec, mask)
        return spec, laid.dtype, blocks.support_of_blocks(laid, params.seed)
    prepared = prepare_image(image, channel_axis=channel_axis, rgb=rgb, mask=mask, params=params)
    return prepared.spec, prepared.pixels.dtype, prepared.support
