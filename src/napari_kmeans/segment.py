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

import dataclasses
import functools
from dataclasses import dataclass, replace

import numpy as np

from . import blocks, lazy, lazy_features, matching
from . import features as ft
from . import seeds as sd
from .compress import Support, codec_for, compress
from .fitting import Fit, Segmentation, WeightedFit, fit_support, fit_weighted
from .model import KMeansModel, Labelling
from .params import Params, make_params
from .recipe import (
    Recipe,
    feature_moments,
    feature_table,
    merge_moments,
    order_by_input,
    recipe_features,
)
from .sampling import draw_sample, gray_support, pool_supports, reduce_chunks, sample_size
from .threads import THREADS

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
    "segment_frames",
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
    size = sample_size(pixels.spec.n_channels)
    return draw_sample(reduce, pixels.n_valid, seed, size, progress=progress)


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


def fit_prepared(
    prepared: PreparedImage, params=None, *, seeds=None, match_to=None, progress=None
) -> FittedImage:
    """Stage 2 of :func:`segment`: fit a model to a :class:`PreparedImage`.

    ``params`` is a :class:`~napari_kmeans.params.Params` (default: the defaults). Its
    ``color_space`` and ``seed`` should be those the image was prepared with. ``seeds`` and
    ``match_to`` are as for :func:`segment`.
    """
    params = make_params(params)
    _check_prepared_with(prepared, params)
    pixels = prepared.pixels
    means = None
    if seeds is not None:
        means = sd.seed_means(pixels, seeds, params.n_clusters, prepared.source)
    sd.check_pinned(params.pin_seeds, seeds, means is not None)
    res = fit_support(
        prepared.support, prepared.spec, pixels.dtype, params, ft.checked_progress(progress),
        reduce=reduce_chunks(pixels.pixels, pixels.valid), seeds=means,
    )  # fmt: skip
    recipe = prepared.recipe
    if prepared.source is not None:
        fitted = _fitted_with_recipe(prepared, res, params.chunk_size, means, params.pin_seeds)
    else:
        model = res.model if recipe is None else replace(res.model, recipe=recipe)
        exact = res.exact and (recipe is None or not recipe.cleans)
        fitted = FittedImage(model, res.n_iter, exact, prepared, res.idx, res.d2)
    return fitted if match_to is None else _matched(fitted, match_to)


def _check_prepared_with(prepared: PreparedImage, params) -> None:
    """Raise if ``params`` ask for another colour space, features or clean-up than
    ``prepared`` was made with (stage 1 used them; the fit cannot change them)."""
    had = prepared.recipe if prepared.recipe is not None else Recipe()
    wanted = params.recipe
    space = (prepared.pixels if prepared.source is None else prepared.source).spec.color_space
    differ = [] if params.color_space == space else [
        f"color_space={params.color_space!r} (prepared: {space!r})"]  # fmt: skip
    differ += [
        f"{name}={getattr(wanted, name)!r} (prepared: {getattr(had, name)!r})"
        for name in ("smoothing", "features", "spatial_weight", "majority", "min_size")
        if getattr(wanted, name) != getattr(had, name)
    ]
    if differ:
        raise ValueError(
            f"the image was prepared with other settings: {'; '.join(differ)}; prepare it "
            "again with these (prepare_image(image, params=...)), or fit with those it was "
            "prepared with."
        )


def _matched(fitted: FittedImage, match_to) -> FittedImage:
    """``fitted`` with its labels renumbered to match ``match_to``'s IDs."""
    model = fitted.model
    lut = matching.match_labels(model, match_to)
    new = matching.relabel_model(model, lut, match_to)
    if new is model:
        return fitted
    idx = lut[fitted.idx + 1] - 1
    done = fitted.labelling
    if done is not None:
        labels = lut.astype(new.label_dtype)[done.labels]
        counts = np.bincount(labels.ravel(), minlength=new.n_clusters + 1)[1:].astype(np.int64)
        done = Labelling(labels, done.inertia, counts)
    return replace(fitted, model=new, idx=idx, labelling=done)


def _fitted_with_recipe(prepared: PreparedImage, res, chunk_size, seeds=None, pinned=False):
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
    m = 0 if seeds is None else seeds.n_classes  # seeded clusters keep their place, first
    if m:
        unfilled = (counts[:m] == 0) | pinned
        colors[:m][unfilled] = seeds.colors[unfilled]
    order = m + np.argsort(ft.luminance(colors[m:], source.spec), kind="stable")
    order = np.concatenate([np.arange(m), order]).astype(np.intp)
    rank = np.empty(k, np.intp)
    rank[order] = np.arange(k)
    lut = np.concatenate([[0], rank + 1]).astype(labels.dtype)
    recipe = prepared.recipe
    model = KMeansModel(
        res.model.centers[order], colors[order], source.spec, prepared.image.dtype.name,
        res.model.seed, recipe=recipe, seed_means=res.model.seed_means,
        pinned=res.model.pinned,
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
    spatial_weight=0.0, majority=0, min_size=0, seeds=None, pin_seeds=False, match_to=None,
    progress=None, params=None,
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
    seeds : ndarray or dask array of int, optional
        Scribbled seed classes, the image's spatial shape: 0 unseeded, 1..m (m <= k) a class.
        Cluster i starts at the mean feature of the valid pixels seeded i and gives label i;
        the other k - m clusters start by k-means++ and get labels m+1..k, dark to bright.
        Seeded fits use seeded Lloyd (``exact`` False), single-channel data too. See
        :mod:`napari_kmeans.seeds`.
    pin_seeds : bool, optional
        Keep the seeded centres at their seed means (their colours, in ``centers``, are the
        seeds' mean input values); the free clusters still move. Refused (ValueError) without
        ``seeds`` or with seeds that mark no pixel.
    match_to : KMeansModel or Segmentation, optional
        An earlier model (or result): labels are renumbered to its IDs by minimum total
        distance between the clusters' colours; unmatched new clusters get the next free IDs,
        earlier IDs left unmatched are absent (labels need not be contiguous). Seed classes
        keep their IDs. See :func:`napari_kmeans.matching.match_model`.
    params : Params, optional
        All the settings above (``n_clusters`` to ``chunk_size``, ``pin_seeds``) as one
        validated object; keywords left at their defaults defer to it.
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
        pin_seeds=pin_seeds,
    )  # fmt: skip
    if blocks.is_dask(image) or blocks.is_dask(mask):  # out of core: dask arrays in, dask out
        return lazy.segment_lazy(
            image, channel_axis=channel_axis, rgb=rgb, mask=mask, params=params,
            seeds=seeds, match_to=match_to, progress=progress,
        )  # fmt: skip
    progress = ft.checked_progress(progress)
    source_dtype = image.image.dtype if isinstance(image, PreparedImage) else None
    if isinstance(image, np.ndarray):
        source_dtype = image.dtype
    fitted = _fitted(
        image, params, channel_axis, rgb, mask, ft.part(progress, 0.0, 0.8), seeds, match_to
    )
    labels, inertia, counts = fitted.label(
        chunk_size=params.chunk_size, progress=ft.part(progress, 0.8, 0.95)
    )
    ft.tick(progress, 0.95, "recolouring")
    model, source, n_iter, exact = fitted.model, fitted.prepared.image, fitted.n_iter, fitted.exact
    del fitted  # the laid-out pixels (a feature table, for a recipe) are not needed any more
    recolored = model.recolor(source, labels, threads=THREADS)
    if source_dtype is not None and recolored.dtype != source_dtype:  # big-endian input
        recolored = recolored.astype(source_dtype)
    ft.tick(progress, 1.0, "done")
    return Segmentation(
        labels=labels,
        centers=model.colors.copy(),
        recolored=recolored,
        inertia=inertia,
        n_iter=n_iter,
        counts=counts,
        exact=exact,
        model=model,
    )


def _fitted(
    image, params, channel_axis, rgb, mask, progress, seeds=None, match_to=None
) -> FittedImage:
    """Stages 1 and 2 on an in-memory image (a :class:`PreparedImage` skips stage 1)."""
    if isinstance(image, PreparedImage):
        given = [
            n
            for n, v in (("channel_axis", channel_axis), ("rgb", rgb), ("mask", mask))
            if v is not None
        ]
        if given:
            raise ValueError(
                f"{' and '.join(given)} cannot change a PreparedImage, whose pixels are laid out "
                "already; give them to prepare_image, or segment the image itself."
            )
        prepared = image
    else:
        prepared = prepare_image(
            image, channel_axis=channel_axis, rgb=rgb, mask=mask, params=params,
            progress=ft.part(progress, 0.0, 0.2),
        )  # fmt: skip
    if match_to is not None:
        matching.reference_model(match_to)  # refuse a wrong type before fitting
    if seeds is not None and blocks.is_dask(seeds):
        seeds = np.asarray(seeds)
    return fit_prepared(
        prepared, params, seeds=seeds, match_to=match_to, progress=ft.part(progress, 0.2, 1.0)
    )


def fit(
    image, n_clusters=5, *, channel_axis=None, rgb=None, color_space="rgb", mask=None, seed=0,
    n_init=4, max_iter=300, tol=1e-4, smoothing=0.0, features="values", spatial_weight=0.0,
    majority=0, min_size=0, seeds=None, pin_seeds=False, match_to=None, progress=None,
    params=None,
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
        As for :func:`segment`; so are ``seeds``, ``pin_seeds`` and ``match_to``.
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
        spatial_weight=spatial_weight, majority=majority, min_size=min_size, pin_seeds=pin_seeds,
    )  # fmt: skip
    progress = ft.checked_progress(progress)
    if blocks.is_dask(image) or blocks.is_dask(mask):
        found = lazy.fit_lazy(
            image, params, channel_axis=channel_axis, rgb=rgb, mask=mask, seeds=seeds,
            match_to=match_to, progress=progress,
        )  # fmt: skip
        result = Fit(found.model, found.n_iter, found.exact)
    else:
        result = _fitted(image, params, channel_axis, rgb, mask, progress, seeds, match_to).fit
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
        One mask per image (as for :func:`segment`; None for an image without one), or None.
        Each is taken right after its image; masks beyond the last image are not read.
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
    sd.check_pinned(params.pin_seeds, None, False)  # fit_many takes no seeds
    if not params.recipe.is_plain:
        return _fit_many_features(images, masks, params, channel_axis, rgb, progress)
    supports, layout = [], None
    for i, (image, mask) in enumerate(_with_masks(images, masks), 1):
        spec, dtype, found = _of_image(i, _support_of, image, mask, params, channel_axis, rgb)
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
    if params.recipe.cleans:  # raw values, cleaned labels
        return Fit(replace(res.model, recipe=params.recipe), res.n_iter, False)
    return Fit(res.model, res.n_iter, res.exact)


def _with_masks(images, masks):
    """``(image, mask)`` of :func:`fit_many`, one at a time, each mask taken right after its
    image (so that a generator may make it then); ``masks`` must not run out before the images
    (masks beyond the last image are not read)."""
    if masks is None:
        yield from ((image, None) for image in images)
        return
    masks = iter(masks)
    for n, image in enumerate(images, 1):
        mask = next(masks, _NONE_LEFT)
        if mask is _NONE_LEFT:
            raise ValueError(
                f"masks has {n - 1} mask(s) but there are more images (image {n} has none); "
                "give one mask, or None, per image."
            )
        yield image, mask


_NONE_LEFT = object()


def _of_image(i, step, *args):
    """``step(*args)`` on image ``i`` of :func:`fit_many`; a ValueError names the image."""
    try:
        return step(*args)
    except ValueError as err:
        raise ValueError(f"image {i} of fit_many: {err}") from err


def _fit_many_features(images, masks, params, channel_axis, rgb, progress) -> Fit:
    """:func:`fit_many` with a feature recipe: three passes over the images (kept in a list, each
    mask taken right after its image), each image's features computed in its pass (numpy, or
    dask block by block): the statistics
    of the standardisation over all images together, the pooled support of the standardised
    features, then each cluster's input values (its colour and the dark-to-bright order)."""
    pairs = list(_with_masks(images, masks))
    if not pairs:
        raise ValueError("fit_many needs at least one image.")
    laid = [
        _of_image(i, _laid_out, image, mask, params, channel_axis, rgb)
        for i, (image, mask) in enumerate(pairs, 1)
    ]
    first = (laid[0].spec, laid[0].dtype, len(laid[0].spatial_shape))
    for i, one in enumerate(laid[1:], 2):
        if (one.spec, one.dtype, len(one.spatial_shape)) != first:
            raise ValueError(
                f"fitting several images together needs images of one dtype, channel layout "
                f"and number of dimensions: image 1 is {laid[0].dtype} with "
                f"{laid[0].spec.n_channels} channel(s) and shape {laid[0].spatial_shape}, image "
                f"{i} is {one.dtype} with {one.spec.n_channels} and shape {one.spatial_shape}; "
                "segment them separately."
            )
    progress = ft.checked_progress(progress)
    recipe = params.recipe
    if recipe.derives:
        ft.tick(progress, 0.0, "standardising features")
        each = [_of_image(i, _moments_of, one, recipe) for i, one in enumerate(laid, 1)]
        moments = functools.reduce(merge_moments, each)
        n_positions = len(laid[0].spatial_shape) if recipe.spatial_weight > 0 else 0
        recipe = recipe.fitted_from_moments(moments, n_positions)
    ft.tick(progress, 0.2, "reading features")
    supports = [
        _of_image(i, _feature_support, one, recipe, params.seed) for i, one in enumerate(laid, 1)
    ]
    n = supports[0].values.shape[1]
    spec = ft.FeatureSpec(None if n == 1 else -1, False, "rgb", n)
    pooled = pool_supports(supports, None, params.seed)
    res = fit_support(pooled, spec, np.dtype(np.float32), params, ft.part(progress, 0.4, 0.8))
    ft.tick(progress, 0.8, "ordering clusters")
    parts = [_colour_sums(res.model, one, recipe) for one in laid]
    counts, sums = sum(p[0] for p in parts), sum(p[1] for p in parts)
    model, _ = order_by_input(res.model, counts, sums, laid[0].spec, laid[0].dtype, recipe)
    return Fit(model, res.n_iter, res.exact and not recipe.cleans)


def _laid_out(image, mask, params, channel_axis, rgb):
    """An image laid out for :func:`_fit_many_features`: a dask ``LazyImage`` or a
    ``features.Prepared``."""
    if blocks.is_dask(image) or blocks.is_dask(mask):
        image = blocks.as_dask_image(image)
        spec = ft.make_spec(
            image, channel_axis=channel_axis, rgb=rgb, color_space=params.color_space
        )
        return blocks.lay_out_blocks(image, spec, mask)
    image = ft.as_image(image)
    spec = ft.make_spec(image, channel_axis=channel_axis, rgb=rgb, color_space=params.color_space)
    return ft.prepare(image, spec, mask)


def _moments_of(laid, recipe):
    if isinstance(laid, blocks.LazyImage):
        return lazy_features.feature_moments_of(laid, recipe)
    table = feature_table(recipe, laid)
    return feature_moments(table if laid.valid is None else table[laid.valid])


def _feature_support(laid, recipe, seed):
    if isinstance(laid, blocks.LazyImage):
        return lazy_features.features_of(laid, recipe).support(seed)
    return image_support(recipe_features(recipe, laid)[0], seed)


def _colour_sums(feature_model, laid, recipe):
    """``(counts, sums of input values)`` per cluster of a model of the features."""
    if isinstance(laid, blocks.LazyImage):
        return lazy_features.features_of(laid, recipe).colour_sums(feature_model)[:2]
    feats = recipe_features(recipe, laid)[0]
    labels = feature_model.label_prepared(feats).labels
    return ft.cluster_sums(labels, laid.pixels, feature_model.n_clusters)


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


# -- timelapses: one fit per frame, IDs matched frame to frame ---------------------------------------


@dataclass(frozen=True, eq=False)
class FramesSegmentation:
    """Result of :func:`segment_frames`: ``labels`` and ``recolored`` with the time axis
    where the input had it, and each frame's :class:`Segmentation` in ``frames``."""

    labels: np.ndarray
    recolored: np.ndarray
    frames: tuple

    @property
    def models(self) -> list:
        return [f.model for f in self.frames]


def segment_frames(
    image, n_clusters=5, *, time_axis=0, match=True, match_to=None, mask=None, seeds=None,
    channel_axis=None, progress=None, **kwargs,
) -> FramesSegmentation:  # fmt: skip
    """Segment a timelapse frame by frame, each frame's label IDs matched to the previous one's.

    Each frame is fitted on its own (its own centres: classes may drift in brightness), then its
    labels are matched (:func:`napari_kmeans.matching.match_model`) to the previous frame's
    model, so that a label means the same class through time. With seeds given per frame, the
    first frame with a scribble goes first and the matching runs forward from it, then backward
    to the first frame. A frame the mask leaves empty gets label 0.

    Parameters
    ----------
    image : ndarray
        The timelapse, frames along ``time_axis`` (an in-memory array; a dask array is read
        one frame at a time).
    n_clusters : int
        k for every frame.
    time_axis : int, optional
        Axis of the frames (not the channel axis).
    match : bool, optional
        Match each frame's IDs to the previous frame's (False: each frame ordered on its own).
    match_to : KMeansModel or Segmentation, optional
        A model the first frame is matched to.
    mask, seeds : ndarray, optional
        The image's spatial shape including the time axis (or one frame's, applied to every
        frame). A frame without seeds is fitted unseeded and, with ``match``, matched to the
        previous frame like any other: the seed classes' IDs carry on through time.
    channel_axis : int, optional
        As for :func:`segment`, counted in the whole image (a negative axis counts from the end).
    progress : callable, optional
        ``progress(fraction, step)`` over all frames.
    **kwargs
        Other settings of :func:`segment` (``rgb``, ``color_space``, ``seed``, ``pin_seeds``,
        features, clean-up...).

    Returns
    -------
    FramesSegmentation
        ``labels`` (one dtype for all frames), ``recolored``, and ``frames``.

    Examples
    --------
    >>> import numpy as np
    >>> movie = np.array([[0, 0, 90, 200], [0, 0, 150, 100]], np.uint8)  # 2 frames
    >>> segment_frames(movie, 3).labels  # the 200 -> 150 class keeps ID 3
    array([[1, 1, 2, 3],
           [1, 1, 3, 2]], dtype=uint8)
    """
    if not isinstance(match, bool | np.bool_):
        raise TypeError(f"match must be True or False, got {match!r} ({type(match).__name__}).")
    if not blocks.is_dask(image):
        image = ft.as_image(image)  # lists, dtypes, empty images
    ndim = image.ndim
    t_ax = ft.check_int("time_axis", time_axis, -ndim, ndim - 1) % ndim
    if channel_axis is None:
        ch = None
    else:
        ch = ft.check_int("channel_axis", channel_axis, -ndim, ndim - 1) % ndim
    if ch == t_ax:
        raise ValueError(f"time_axis and channel_axis are both {t_ax}; give different axes.")
    _check_timelapse(image, t_ax, ch, mask=mask, seeds=seeds)
    frame_ch = None if ch is None else (ch - (ch > t_ax)) - (ndim - 1)  # negative, per frame
    # the time axis among the spatial axes (masks, seeds, labels)
    t_sp = t_ax - (ch is not None and ch < t_ax)
    n = image.shape[t_ax]
    progress = ft.checked_progress(progress)
    # the first frame with scribbles goes first: its seed classes fix the IDs, which are then
    # matched forward to the last frame and backward to the first
    start = _first_seeded(seeds, n, t_sp, ndim, ch)
    settings = {name: kwargs.pop(name) for name in list(kwargs) if name in _SETTINGS}
    params = make_params(kwargs.pop("params", None), n_clusters=n_clusters, **settings)
    sd.check_pinned(params.pin_seeds, seeds, seeds is not None and bool(np.any(seeds)))
    free = params.replace(pin_seeds=False)  # frames without a scribble: nothing to pin
    order = [*range(start, n), *range(start - 1, -1, -1)]
    frames, previous, empty = [None] * n, match_to, []
    fitted_at = {}
    for i, t in enumerate(order):
        if match and t == start - 1:  # going backward: from the first frame fitted
            previous = fitted_at.get(start, match_to)
        frame = np.asarray(np.take(image, t, axis=t_ax))
        frame_mask = _frame_of(mask, t, t_sp, ndim, ch)
        if frame_mask is not None and not np.any(frame_mask):
            empty.append(t)  # masked out entirely: label 0, as a mask gives elsewhere
            frames[t] = frame
            continue
        frame_seeds = _frame_of(seeds, t, t_sp, ndim, ch)
        seeded = frame_seeds is not None and bool(np.any(frame_seeds))
        r = segment(
            frame, channel_axis=frame_ch, mask=frame_mask, seeds=frame_seeds,
            match_to=previous, progress=ft.part(progress, i / n, (i + 1) / n),
            params=params if seeded else free, **kwargs,
        )  # fmt: skip
        frames[t] = r
        fitted_at[t] = r.model
        if match:
            previous = r.model
    if len(empty) == n:
        raise ValueError(
            "the mask leaves no pixel in any frame; paint the mask over the objects to segment."
        )
    for t in empty:  # the model of the nearest fitted frame before (else after) it
        model = next(f.model for f in [*frames[t::-1], *frames[t:]] if hasattr(f, "model"))
        frame = frames[t]
        shape = frame.shape if frame_ch is None else np.delete(frame.shape, frame_ch)
        labels = np.zeros(tuple(shape), model.label_dtype)
        frames[t] = Segmentation(
            labels=labels, centers=model.colors.copy(), recolored=frame.copy(), inertia=0.0,
            n_iter=0, counts=np.zeros(model.n_clusters, np.int64), exact=False, model=model,
        )  # fmt: skip
    dtype = np.result_type(*[f.labels.dtype for f in frames])
    labels = np.stack([f.labels.astype(dtype) for f in frames], axis=t_sp)
    recolored = np.stack([f.recolored for f in frames], axis=t_ax)
    return FramesSegmentation(labels, recolored, tuple(frames))


_SETTINGS = frozenset(field.name for field in dataclasses.fields(Params))


def _check_timelapse(image, t_ax, ch, **per_pixel):
    """Raise if ``image`` has no frame or no spatial axis, or a per-pixel array given for the
    whole timelapse (``mask``, ``seeds``) has another shape than its pixels."""
    shape = tuple(image.shape)
    spatial = shape if ch is None else shape[:ch] + shape[ch + 1 :]
    if len(spatial) < 2:
        raise ValueError(
            f"segment_frames needs frames along time_axis with at least one spatial axis each, "
            f"got an image of shape {shape}"
            + ("" if ch is None else f" with its channels on axis {ch}")
            + "; segment a single image with segment()."
        )
    if shape[t_ax] == 0:
        raise ValueError(
            f"the image has no frames (axis {t_ax} of shape {shape} has length 0); give at "
            "least one frame."
        )
    t_sp = t_ax - (ch is not None and ch < t_ax)  # the time axis among the spatial axes
    frame = spatial[:t_sp] + spatial[t_sp + 1 :]
    for name, array in per_pixel.items():
        if array is not None and np.ndim(array) == len(spatial) and np.shape(array) != spatial:
            raise ValueError(
                f"{name} has shape {np.shape(array)} but the timelapse's pixels are laid out as "
                f"{spatial} (image shape {shape}); give {name} of that shape, or of one frame's "
                f"shape {frame} for every frame."
            )


def _first_seeded(seeds, n, t_sp, ndim, ch) -> int:
    """The first frame with a scribble when ``seeds`` are given per frame, else 0."""
    if seeds is None or np.ndim(seeds) != ndim - (ch is not None):
        return 0
    for t in range(n):
        if np.any(np.take(seeds, t, axis=t_sp)):
            return t
    return 0


def _frame_of(array, t, t_sp, ndim, ch):
    """Frame ``t`` of a per-pixel array given for the whole timelapse, or the array itself
    when it has one frame's dimensions."""
    if array is None:
        return None
    spatial_ndim = ndim - (ch is not None)
    if np.ndim(array) == spatial_ndim:
        return np.asarray(np.take(array, t, axis=t_sp))
    return array
