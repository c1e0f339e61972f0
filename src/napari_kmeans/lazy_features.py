"""Feature recipes on dask arrays: the features with overlap, their statistics, and the clean-up.

The in-memory rules are applied to blocks grown by the reach of the recipe
(:meth:`Recipe.depth <napari_kmeans.recipe.Recipe.depth>`), so that a pixel's features see the
same neighbours as in memory: ``dask.array.overlap`` with ``boundary="none"`` (blocks at the
image's edges are not padded: the filters meet the image's edge exactly as in memory), the
recipe's own :meth:`~napari_kmeans.recipe.Recipe.channels` on each grown block, the growth
trimmed off again. Pixel positions (``spatial_weight``) are the block's global coordinates.
Axes whose chunks are thinner than the reach are rechunked first.

Invalid pixels are filled with the mean of the valid ones (a lazy reduction) before filtering,
as in memory. The standardiser's statistics are summed block by block
(:func:`napari_kmeans.recipe.feature_moments`); labelling uses the model's kernel on each block
of features; the majority filter runs with an overlap of its radius (exact) and the minimum
region size with an overlap of ``5 * min_size`` pixels, at most 64 (see
``docs/large-data.md``).

This module does not import :mod:`napari_kmeans.model` (which imports it for ``predict`` on
dask): models are passed in. dask is imported only when a function here is called.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from . import cleanup
from . import features as ft
from .blocks import (
    LazyImage,
    as_dask_image,
    dask_array_module,
    labels_of_blocks,
    lay_out_blocks,
    reduce_blocks,
)
from .recipe import Recipe, feature_moments, merge_moments


def _grown_chunks(chunks, depth):
    """Chunks of one axis with every chunk at least ``depth`` long (neighbours merged); one
    chunk when the axis is no longer than ``depth`` (its blocks then need no overlap)."""
    from dask.array.overlap import ensure_minimum_chunksize

    if sum(chunks) <= depth:
        return (sum(chunks),)
    if depth == 0 or min(chunks) >= depth:
        return chunks
    return ensure_minimum_chunksize(depth, chunks)


def _with_overlap(array, depths, fn, dtype, n_out=None):
    """``fn`` on the blocks of ``array`` grown by ``depths`` (one per leading axis; a trailing
    channel axis, when ``n_out`` is given, is kept whole and becomes ``n_out`` long)."""
    da = dask_array_module()
    from dask.array.overlap import overlap, trim_internal

    n_spatial = len(depths)
    chunks = [_grown_chunks(c, d) for c, d in zip(array.chunks[:n_spatial], depths, strict=True)]
    # an axis no longer than the reach is one block: every pixel sees the whole axis
    depths = [0 if d >= n else d for d, n in zip(depths, array.shape, strict=False)]
    if n_out is not None:
        chunks.append((array.shape[-1],))
    array = array.rechunk(tuple(chunks))
    axes = {i: int(d) for i, d in enumerate(depths)}
    if n_out is not None:
        axes[n_spatial] = 0
    grown = overlap(array, axes, {i: "none" for i in axes})
    out_chunks = grown.chunks[:n_spatial] + (((n_out,),) if n_out is not None else ())
    done = da.map_blocks(fn, grown, dtype=dtype, chunks=out_chunks)
    return trim_internal(done, axes, boundary={i: "none" for i in axes})


def _block_input(block, rest, spec, image_dtype, has_mask):
    """``(features float32 (n, C), valid or None, spatial shape)`` of one block's input."""
    pixels, valid = ft.layout(block, spec, rest[0] if has_mask else None)
    base = ft.to_features(pixels, spec, image_dtype).astype(np.float32)
    return base, valid, ft.spatial_shape_of(block.shape, spec)


def _block_sums(block, *rest, spec, image_dtype, has_mask):
    """Sums of the valid input features of one block and their count (float64)."""
    base, valid, shape = _block_input(block, rest, spec, image_dtype, has_mask)
    rows = base if valid is None else base[valid]
    out = np.append(rows.sum(axis=0, dtype=np.float64), rows.shape[0])
    return out.reshape((1,) * len(shape) + (-1,))


def _block_base(block, *rest, spec, image_dtype, has_mask, has_fill):
    """Input features (float32, channels last) of one block, invalid pixels filled."""
    base, valid, shape = _block_input(block, rest, spec, image_dtype, has_mask)
    if valid is not None and has_fill:
        base[~valid] = rest[-1].astype(np.float32)
    return base.reshape(*shape, base.shape[-1])


def _block_valid(block, *rest, spec, has_mask):
    _, valid = ft.layout(block, spec, rest[0] if has_mask else None)
    shape = ft.spatial_shape_of(block.shape, spec)
    return np.ones(shape, bool) if valid is None else valid.reshape(shape)


def _may_be_invalid(lazy: LazyImage) -> bool:
    """Whether some pixel may be invalid: a mask, float values, or an alpha channel."""
    alpha = lazy.spec.rgb and lazy.pixels.shape[lazy.axis] == 4
    return lazy.mask is not None or lazy.dtype.kind == "f" or alpha


def base_blocks(lazy: LazyImage):
    """``(base, valid)``: lazy ``(spatial..., C)`` float32 input features, invalid pixels
    filled with the mean of the valid ones (the rule of
    :func:`napari_kmeans.recipe.recipe_features`), and the lazy valid pixels (mask, finite
    values, alpha: the rule of :func:`napari_kmeans.features.layout`).

    The mean comes from a first reduction of per-block sums (small arrays), so that no block of
    features is held while it is summed: each block of ``base`` is computed when it is used.
    """
    da = dask_array_module()
    index, spatial = lazy.index()
    has_mask = lazy.mask is not None
    args = [lazy.pixels, index] + ([lazy.mask, spatial] if has_mask else [])
    probe = np.zeros((1, lazy.spec.n_channels), lazy.dtype)
    c = ft.to_features(probe, lazy.spec, lazy.dtype).shape[1]
    kw = {"spec": lazy.spec, "concatenate": True}
    valid = da.blockwise(_block_valid, spatial, *args, dtype=bool, has_mask=has_mask, **kw)
    fill = []
    if _may_be_invalid(lazy):
        ones = {letter: 1 for letter in spatial}
        extra = {"new_axes": {"z": c + 1}, "adjust_chunks": ones} if lazy.axis is None else {
            "adjust_chunks": {**ones, "z": c + 1}}  # fmt: skip
        sums = da.blockwise(
            _block_sums, spatial + "z", *args, dtype=np.float64, image_dtype=lazy.dtype,
            has_mask=has_mask, **kw, **extra,
        ).sum(axis=tuple(range(len(spatial))))  # fmt: skip
        fill = [sums[:c] / da.maximum(sums[c], 1), "Z"]  # "Z": every block gets it whole
    extra = {"new_axes": {"z": c}} if lazy.axis is None else {"adjust_chunks": {"z": c}}
    base = da.blockwise(
        _block_base, spatial + "z", *args, *fill, dtype=np.float32, image_dtype=lazy.dtype,
        has_mask=has_mask, has_fill=bool(fill), **kw, **extra,
    )  # fmt: skip
    return base, valid


def _block_channels(block, *, recipe):
    return recipe.channels(block)


def _block_positions(block, block_info=None, *, n_spatial):
    """Global pixel coordinates of a block (float32, one map per spatial axis)."""
    where = block_info[None]["array-location"][:n_spatial]
    grids = np.meshgrid(*[np.arange(a, b, dtype=np.float32) for a, b in where], indexing="ij")
    return np.stack(grids, axis=-1)


def _block_standardised(block, *, recipe):
    flat = block.reshape(-1, block.shape[-1])
    return recipe.standardise(flat, inplace=True).reshape(block.shape)


def feature_blocks(lazy: LazyImage, recipe: Recipe, *, standardise: bool = True):
    """``(features, valid)``: the recipe's lazy ``(spatial..., F)`` float32 features of
    ``lazy`` (standardised with the recipe's statistics when ``standardise``) and the lazy
    boolean valid pixels, chunked alike."""
    da = dask_array_module()
    base, valid = base_blocks(lazy)
    n_spatial = base.ndim - 1
    plain = replace(recipe, spatial_weight=0.0, standardiser=None)
    probe = np.zeros((16,) * n_spatial + (base.shape[-1],), np.float32)
    n_out = plain.channels(probe).shape[-1]  # how many maps the recipe makes
    depth = recipe.depth(n_spatial, base.shape[:-1])
    feats = _with_overlap(base, depth, _fn(_block_channels, recipe=plain),
                          np.float32, n_out)  # fmt: skip
    if recipe.spatial_weight > 0:
        where = feats[..., :1]
        pos = da.map_blocks(
            _block_positions, where, dtype=np.float32, n_spatial=n_spatial,
            chunks=(*where.chunks[:-1], (n_spatial,)),
        )  # fmt: skip
        feats = da.concatenate([feats, pos], axis=-1).rechunk({n_spatial: -1})
    valid = valid.rechunk(feats.chunks[:-1])
    if standardise and recipe.derives:
        feats = feats.map_blocks(_block_standardised, dtype=np.float32, recipe=recipe)
    return feats, valid


def _fn(fn, **kwargs):
    import functools

    return functools.partial(fn, **kwargs)


def as_lazy_image(feats, valid) -> LazyImage:
    """Features ``(spatial..., F)`` as a :class:`LazyImage` of float32 pixels (one channel:
    no channel axis), masked by ``valid``."""
    n = feats.shape[-1]
    spec = ft.FeatureSpec(None if n == 1 else -1, False, "rgb", n)
    pixels = feats[..., 0] if n == 1 else feats
    return LazyImage(spec, pixels, valid, np.dtype(np.float32))


def feature_moments_of(lazy: LazyImage, recipe: Recipe):
    """:func:`napari_kmeans.recipe.feature_moments` of ``lazy``'s valid features (not
    standardised), summed over the blocks: one pass."""
    feats, valid = feature_blocks(lazy, recipe, standardise=False)
    return reduce_blocks(as_lazy_image(feats, valid), _moments_step, merge_moments)


def fitted_recipe(lazy: LazyImage, recipe: Recipe) -> Recipe:
    """``recipe`` with the standardisation of ``lazy``'s features: one pass over the blocks."""
    if not recipe.derives:
        return recipe
    positions = len(lazy.spatial_shape) if recipe.spatial_weight > 0 else 0
    return recipe.fitted_from_moments(feature_moments_of(lazy, recipe), positions)


def _moments_step(values):
    return feature_moments(values.reshape(values.shape[0], -1))


def features_of(lazy: LazyImage, recipe: Recipe) -> LazyImage:
    """The standardised features of ``lazy`` by a fitted ``recipe``, as a :class:`LazyImage`
    (raw values when the recipe is plain: only clean-up)."""
    if recipe.is_plain:
        return lazy
    return as_lazy_image(*feature_blocks(lazy, recipe))


def joined_with_source(feats: LazyImage, source: LazyImage) -> LazyImage:
    """Features and the input's values side by side (float64 channels ``F + C``): one pass
    then labels the features and sums the input values of each cluster (the model's colours)."""
    da = dask_array_module()
    f = feats.pixels if feats.axis is not None else feats.pixels[..., None]
    index, spatial = source.index()
    n_src = source.spec.n_channels
    kw = {"new_axes": {"z": n_src}} if source.axis is None else {"adjust_chunks": {"z": n_src}}
    values = da.blockwise(
        _block_source, spatial + "z", source.pixels, index, dtype=np.float64,
        concatenate=True, spec=source.spec, **kw,
    )  # fmt: skip
    values = values.rechunk((*f.chunks[:-1], (n_src,)))
    joined = da.concatenate([f.astype(np.float64), values], axis=-1).rechunk({f.ndim - 1: -1})
    n = joined.shape[-1]
    return LazyImage(ft.FeatureSpec(-1, False, "rgb", n), joined, feats.mask, np.dtype(np.float64))


def _block_source(block, *, spec):
    pixels, _ = ft.layout(block, spec, None)
    return pixels.astype(np.float64).reshape(*ft.spatial_shape_of(block.shape, spec), -1)


def _colour_step(values, *, model, n_features):
    feats = np.ascontiguousarray(values[:, :n_features], dtype=np.float32)
    labelled = model.label_pixels(feats, None, np.dtype(np.float32))
    k = model.n_clusters
    idx = labelled.labels.astype(np.intp)  # 1..k
    src = values[:, n_features:]
    sums = np.stack([np.bincount(idx, weights=src[:, c], minlength=k + 1)[1:]
                     for c in range(src.shape[1])], axis=1)  # fmt: skip
    return labelled.counts.astype(np.int64), sums, float(labelled.inertia)


def _add3(a, b):
    return a[0] + b[0], a[1] + b[1], a[2] + b[2]


def colour_sums(feature_model, feats: LazyImage, source: LazyImage):
    """``(counts, sums of the input values, inertia)`` per cluster of ``feature_model`` (a model
    of the features): the pass that orders and colours a model fitted on features."""
    joined = joined_with_source(feats, source)
    n_features = feats.spec.n_channels
    return reduce_blocks(joined, _colour_step, _add3, model=feature_model, n_features=n_features)


# -- labels and clean-up ----------------------------------------------------------------------


def labels_with_recipe(model, lazy: LazyImage, chunk_size=None):
    """Lazy labels of ``lazy`` by a model with a recipe: its features, nearest centre, clean-up
    (:meth:`KMeansModel.label_with_recipe` block by block), chunked like ``lazy``'s pixels."""
    recipe = model.recipe
    if recipe.is_plain:
        labels = labels_of_blocks(replace(model, recipe=None), lazy, chunk_size)
    else:
        labels = labels_of_blocks(model.feature_model(), features_of(lazy, recipe), chunk_size)
    return clean_blocks(labels, recipe).rechunk(lazy.spatial_chunks)


def predict_with_recipe(model, image, *, mask=None, chunk_size=None, rgb=None):
    """:func:`napari_kmeans.lazy.predict_lazy` for a model with a recipe: lazy labels of a dask
    ``image`` by its features computed with overlap, nearest centre and clean-up."""
    chunk_size = ft.check_chunk_size(chunk_size)
    image = as_dask_image(image)
    spec = model.check_image(image, rgb=rgb)
    return labels_with_recipe(model, lay_out_blocks(image, spec, mask), chunk_size)


def clean_blocks(labels, recipe: Recipe):
    """The recipe's clean-up of lazy ``labels``: the majority filter with an overlap of its
    radius (exactly as in memory), then the minimum region size with the overlap of
    :meth:`Recipe.clean_depth` (as in memory inside each grown block)."""
    radius, reach = recipe.clean_depth()
    if radius:
        fn = _fn(cleanup.majority, radius=radius)
        labels = _with_overlap(labels, (radius,) * labels.ndim, fn, labels.dtype)
    if reach:
        fn = _fn(cleanup.remove_small_regions, min_size=recipe.min_size)
        labels = _with_overlap(labels, (reach,) * labels.ndim, fn, labels.dtype)
    return labels
