"""Feature recipes on dask arrays: the features with overlap, their statistics, and the clean-up.

The in-memory rules are applied to blocks grown by the reach of the recipe
(:meth:`Recipe.depth <napari_kmeans.recipe.Recipe.depth>`), so that a pixel's features see the
same neighbours as in memory: ``dask.array.overlap`` with ``boundary="none"`` (blocks at the
image's edges are not padded: the filters meet the image's edge exactly as in memory), the
recipe's own :meth:`~napari_kmeans.recipe.Recipe.channels` of each grown block's own pixels,
told where the block sits (:class:`napari_kmeans.filters.Region`: texture's tiles and grids
are the image's), all in the task that uses the features (:class:`FeatureBlocks`). Pixel positions (``spatial_weight``) are the block's global coordinates.
Axes whose chunks are thinner than the reach are rechunked first.

Invalid pixels are filled with the mean of the valid ones before filtering, as in memory (that
mean is computed first, when some pixel may be invalid). The standardiser's statistics are summed block by block
(:func:`napari_kmeans.recipe.feature_moments`); labelling uses the model's kernel on each block
of features; the majority filter runs with an overlap of its radius (exact) and the minimum
region size with an overlap of ``5 * min_size`` pixels, at most 64 (see
``docs/large-data.md``).

This module does not import :mod:`napari_kmeans.model` (which imports it for ``predict`` on
dask): models are passed in. dask is imported only when a function here is called.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace

import numpy as np

from . import cleanup, sampling
from . import features as ft
from . import filters as fl
from .blocks import (
    LazyImage,
    as_dask_image,
    dask_array_module,
    delayed_arrays,
    labels_of_blocks,
    lay_out_blocks,
    merged,
    no_pixel_left,
)
from .recipe import Recipe, feature_moments, input_features, merge_moments


def _grown_chunks(chunks, depth):
    """Chunks of one axis with every chunk at least ``depth`` long (neighbours merged); one
    chunk when the axis is no longer than ``depth`` (its blocks then need no overlap)."""
    from dask.array.overlap import ensure_minimum_chunksize

    if sum(chunks) <= depth:
        return (sum(chunks),)
    if depth == 0 or min(chunks) >= depth:
        return chunks
    return ensure_minimum_chunksize(depth, chunks)


def _with_overlap(array, depths, fn, dtype):
    """``fn`` on the blocks of ``array`` grown by ``depths`` (one per axis), trimmed back."""
    da = dask_array_module()
    from dask.array.overlap import overlap, trim_internal

    chunks = tuple(_grown_chunks(c, d) for c, d in zip(array.chunks, depths, strict=True))
    # an axis no longer than the reach is one block: every pixel sees the whole axis
    sizes = zip(depths, array.shape, strict=True)
    axes = {i: 0 if d >= n else int(d) for i, (d, n) in enumerate(sizes)}
    grown = overlap(array.rechunk(chunks), axes, {i: "none" for i in axes})
    done = da.map_blocks(fn, grown, dtype=dtype)
    return trim_internal(done, axes, boundary={i: "none" for i in axes})


def _block_input(block, rest, spec, image_dtype, has_mask):
    """``(features float32 (n, C), valid or None, spatial shape)`` of one block's input."""
    pixels, valid = ft.layout(block, spec, rest[0] if has_mask else None)
    return input_features(pixels, spec, image_dtype), valid, ft.spatial_shape_of(block.shape, spec)


def _block_sums(block, *rest, spec, image_dtype, has_mask):
    """Sums of the valid input features of one block and their count (float64)."""
    base, valid, shape = _block_input(block, rest, spec, image_dtype, has_mask)
    rows = base if valid is None else base[valid]
    out = np.append(rows.sum(axis=0, dtype=np.float64), rows.shape[0])
    return out.reshape((1,) * len(shape) + (-1,))


def _block_table(block, *rest, spec, image_dtype, has_mask, fill):
    """Input features (float32, channels last) of one block, invalid pixels filled, and the
    valid pixels (1.0, else 0.0) as a last channel."""
    base, valid, shape = _block_input(block, rest, spec, image_dtype, has_mask)
    table = np.ones((base.shape[0], base.shape[1] + 1), np.float32)
    table[:, :-1] = base
    if valid is not None:
        table[~valid, -1] = 0.0
        if fill is not None:
            table[~valid, :-1] = fill.astype(np.float32)
    return table.reshape(*shape, table.shape[-1])


def _may_be_invalid(lazy: LazyImage) -> bool:
    """Whether some pixel may be invalid: a mask, float values, or an alpha channel."""
    alpha = lazy.spec.rgb and lazy.pixels.shape[lazy.axis] == 4
    return lazy.mask is not None or lazy.dtype.kind == "f" or alpha


def input_table(lazy: LazyImage):
    """Lazy ``(spatial..., C + 1)`` float32: the input features of ``lazy`` with invalid
    pixels filled with the mean of the valid ones (the rule of
    :func:`napari_kmeans.recipe.recipe_features`), and the valid pixels (mask, finite values,
    alpha: the rule of :func:`napari_kmeans.features.layout`) as 1.0 in the last channel.

    The mean is computed now, from per-block sums (one pass over the input, only when some
    pixel may be invalid: a mask, float data or an alpha channel): in the same graph, every
    block read for the sums would be held until the mean is known.
    """
    da = dask_array_module()

    index, spatial = lazy.index()
    has_mask = lazy.mask is not None
    args = [lazy.pixels, index] + ([lazy.mask, spatial] if has_mask else [])
    probe = np.zeros((1, lazy.spec.n_channels), lazy.dtype)
    c = ft.to_features(probe, lazy.spec, lazy.dtype).shape[1]
    kw = {"spec": lazy.spec, "image_dtype": lazy.dtype, "has_mask": has_mask}
    if _may_be_invalid(lazy):
        ones = {letter: 1 for letter in spatial}
        extra = {"new_axes": {"z": c + 1}, "adjust_chunks": ones} if lazy.axis is None else {
            "adjust_chunks": {**ones, "z": c + 1}}  # fmt: skip
        sums = da.blockwise(
            _block_sums, spatial + "z", *args, dtype=np.float64, concatenate=True, **kw,
            **extra,
        ).sum(axis=tuple(range(len(spatial)))).compute()  # fmt: skip
        fill = sums[:c] / max(sums[c], 1.0)
    else:
        fill = None
    extra = {"new_axes": {"z": c + 1}} if lazy.axis is None else {"adjust_chunks": {"z": c + 1}}
    return da.blockwise(
        _block_table, spatial + "z", *args, dtype=np.float32, concatenate=True, fill=fill,
        **kw, **extra,
    )  # fmt: skip


@dataclass(frozen=True)
class Geometry:
    """Where the grown blocks sit: the blocks' own (interior) chunks, their growth per axis
    (0 where an axis is whole) and the recipe that makes their maps (no positions)."""

    chunks: tuple
    depth: tuple
    maps: Recipe
    positions: bool

    def interior(self, loc) -> tuple:
        """Slices of a grown block's interior (its own pixels), from its block index."""
        out = []
        for axis, i in enumerate(loc):
            lo = self.depth[axis] if i > 0 else 0  # boundary "none": no growth at the edges
            out.append(slice(lo, lo + self.chunks[axis][i]))
        return tuple(out)

    def start(self, loc) -> tuple:
        return tuple(int(sum(self.chunks[a][:i])) for a, i in enumerate(loc))

    def region(self, loc) -> fl.Region:
        """Where a grown block sits in the image (for the recipe's maps)."""
        start = tuple(s - (d if i > 0 else 0) for s, d, i in
                      zip(self.start(loc), self.depth, loc, strict=True))  # fmt: skip
        shape = tuple(int(sum(c)) for c in self.chunks)
        return fl.Region(start, shape, self.interior(loc))


def block_features(block, loc, geo: Geometry, recipe: Recipe, standardise: bool):
    """``(features (n, F) float32, valid (n,) bool, shape)`` of one block's own pixels, from
    its grown block of filled input features (the valid pixels as the last channel)."""
    inner = geo.interior(loc)
    maps = geo.maps.channels(block[..., :-1], geo.region(loc))
    shape = maps.shape[:-1]
    if geo.positions:  # global coordinates of the block's pixels
        start = geo.start(loc)
        grids = np.indices(shape, dtype=np.float32)
        grids += np.asarray(start, np.float32).reshape((-1,) + (1,) * len(shape))
        maps = np.concatenate([maps, np.moveaxis(grids, 0, -1)], axis=-1)
    flat = np.ascontiguousarray(maps.reshape(-1, maps.shape[-1]))
    if standardise:
        flat = recipe.standardise(flat, inplace=True)
    return flat, block[..., -1][inner].reshape(-1) > 0, shape


def _step_on_features(block, *source, loc, geo, recipe, standardise, step, source_spec=None,
                      **kwargs):  # fmt: skip
    """``step`` on one block's valid features (and its input values when given)."""
    feats, valid, _ = block_features(block, loc, geo, recipe, standardise)
    if not source:
        return step(feats[valid], **kwargs)
    pixels = ft.layout(source[0], source_spec, None)[0]
    return step(feats[valid], pixels[valid], **kwargs)


def _labels_of_block(block, block_info=None, *, geo, recipe, model, chunk_size):
    loc = block_info[0]["chunk-location"][:-1]
    feats, valid, shape = block_features(block, loc, geo, recipe, True)
    labelled = model.label_pixels(feats, valid, np.dtype(np.float32), chunk_size=chunk_size,
                                  stats=False)  # fmt: skip
    return labelled.labels.reshape(shape)


def _confidence_of_block(block, block_info=None, *, geo, recipe, model, chunk_size):
    loc = block_info[0]["chunk-location"][:-1]
    feats, valid, shape = block_features(block, loc, geo, recipe, True)
    conf = model.confidence_pixels(feats, valid, np.dtype(np.float32), chunk_size=chunk_size)
    return conf.reshape(shape)


@dataclass(frozen=True)
class FeatureBlocks:
    """A dask image's features by a recipe, block by block: each task computes the features of
    one grown block and uses them at once (a step of a reduction, or labels), so that no block
    of features outlives its task.

    ``grown`` is the dask array of the filled input features with the valid pixels as a last
    channel, its blocks grown by the recipe's depth; ``source`` the input laid out with the
    blocks' own chunks (for the input values of each cluster).
    """

    grown: object
    geo: Geometry
    recipe: Recipe
    standardise: bool
    source: LazyImage
    n_features: int

    @property
    def spec(self) -> ft.FeatureSpec:
        n = self.n_features
        return ft.FeatureSpec(None if n == 1 else -1, False, "rgb", n)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.float32)

    def _tasks(self, step, with_source, kwargs):
        import dask

        on = dask.delayed(_step_on_features, pure=True)
        grown = self.grown.to_delayed()
        source = self.source.pixels.to_delayed() if with_source else None
        fixed = dict(geo=self.geo, recipe=self.recipe, standardise=self.standardise, step=step)
        if with_source:
            fixed["source_spec"] = self.source.spec
        parts = []
        for loc in np.ndindex(*grown.shape[:-1]):
            args = [grown[(*loc, 0)]]
            if with_source:
                at = list(loc)
                if self.source.axis is not None:
                    at.insert(self.source.axis, 0)
                args.append(source[tuple(at)])
            parts.append(on(*args, loc=loc, **fixed, **kwargs))
        return parts

    def reduce(self, step, merge, **kwargs):
        """``step(valid feature values, **kwargs)`` on every block, merged by ``merge``: the
        ``reduce`` of :mod:`napari_kmeans.sampling` (as :func:`blocks.reduce_blocks`)."""
        return merged(self._tasks(step, False, delayed_arrays(kwargs)), merge)

    def support(self, seed: int):
        """The weighted features to fit on, by the in-memory rules (as
        :func:`napari_kmeans.blocks.support_of_blocks` for float32 data)."""
        n_pixels = self.source.n_pixels
        if self.n_features == 1:
            found = sampling.gray_support(self.reduce, self.dtype, n_pixels, seed)
        else:
            size = sampling.sample_size(self.n_features)
            found = sampling.draw_sample(self.reduce, n_pixels, seed, size)
        if found.n_valid == 0:
            raise no_pixel_left(self.source)
        return found

    def colour_sums(self, feature_model):
        """``(counts, sums of the input values, inertia)`` per cluster of ``feature_model`` (a
        model of these features): the pass that orders and colours a fit on features."""
        tasks = self._tasks(_colour_step, True, delayed_arrays({"model": feature_model}))
        state, inertia = merged(tasks, _merge_colour)
        counts, sums = ft.finish_sums(state)
        return counts, sums, inertia

    def labels(self, feature_model, chunk_size=None):
        """Lazy labels by ``feature_model``, chunked like the blocks' own pixels."""
        return dask_array_module().map_blocks(
            _labels_of_block, self.grown, dtype=feature_model.label_dtype,
            chunks=self.geo.chunks, drop_axis=self.grown.ndim - 1, geo=self.geo,
            recipe=self.recipe, model=feature_model, chunk_size=chunk_size,
        )  # fmt: skip

    def confidence(self, feature_model, chunk_size=None):
        """Lazy confidence (:meth:`KMeansModel.confidence_pixels`) by ``feature_model``,
        chunked like the blocks' own pixels."""
        return dask_array_module().map_blocks(
            _confidence_of_block, self.grown, dtype=np.float32, chunks=self.geo.chunks,
            drop_axis=self.grown.ndim - 1, geo=self.geo, recipe=self.recipe,
            model=feature_model, chunk_size=chunk_size,
        )  # fmt: skip


def features_of(lazy: LazyImage, recipe: Recipe, *, standardise: bool = True) -> FeatureBlocks:
    """The features of ``lazy`` by ``recipe`` (not plain), standardised with its statistics
    when ``standardise`` (the recipe must then be fitted, for derived features)."""
    from dask.array.overlap import overlap

    table = input_table(lazy)
    n_spatial = table.ndim - 1
    depth = recipe.depth(n_spatial, table.shape[:-1])
    chunks = tuple(_grown_chunks(c, d) for c, d in zip(table.chunks[:-1], depth, strict=True))
    depth = tuple(0 if d >= n else d for d, n in zip(depth, table.shape, strict=False))
    table = table.rechunk((*chunks, (table.shape[-1],)))
    axes = {i: d for i, d in enumerate(depth)} | {n_spatial: 0}
    grown = overlap(table, axes, {i: "none" for i in axes})
    maps = replace(recipe, spatial_weight=0.0, standardiser=None)
    probe = np.zeros((16,) * n_spatial + (table.shape[-1] - 1,), np.float32)
    n_features = maps.channels(probe).shape[-1] + (n_spatial if recipe.spatial_weight > 0 else 0)
    geo = Geometry(chunks, depth, maps, recipe.spatial_weight > 0)
    source = LazyImage(lazy.spec, lazy.pixels.rechunk(_with_channel(chunks, lazy)), None,
                       lazy.dtype)  # fmt: skip
    use = standardise and recipe.derives
    if use:  # refused now, not when a block is computed (napari drawing it, far from here)
        recipe.check_n_features(n_features)
    return FeatureBlocks(grown, geo, recipe, use, source, n_features)


def _with_channel(chunks, lazy: LazyImage):
    """Spatial ``chunks`` with the channel axis of ``lazy`` (whole) put back in its place."""
    out = list(chunks)
    if lazy.axis is not None:
        out.insert(lazy.axis, (lazy.pixels.shape[lazy.axis],))
    return tuple(out)


def feature_moments_of(lazy: LazyImage, recipe: Recipe):
    """:func:`napari_kmeans.recipe.feature_moments` of ``lazy``'s valid features (not
    standardised), merged over the blocks: one pass."""
    return features_of(lazy, recipe, standardise=False).reduce(_moments_step, merge_moments)


def fitted_recipe(lazy: LazyImage, recipe: Recipe) -> Recipe:
    """``recipe`` with the standardisation of ``lazy``'s features: one pass over the blocks."""
    if not recipe.derives:
        return recipe
    positions = len(lazy.spatial_shape) if recipe.spatial_weight > 0 else 0
    return recipe.fitted_from_moments(feature_moments_of(lazy, recipe), positions)


def _moments_step(values):
    return feature_moments(values)


def _colour_step(values, source, *, model):
    """``(exact sums of the input values (features.sums_step), inertia)`` of one block's
    valid pixels, by cluster of ``model``."""
    labelled = model.label_pixels(values, None, np.dtype(np.float32))
    state = ft.sums_step(labelled.labels, source, model.n_clusters)  # labels 1..k
    return state, float(labelled.inertia)


def _merge_colour(a, b):
    return ft.merge_sums(a[0], b[0]), a[1] + b[1]


# -- labels and clean-up ----------------------------------------------------------------------


def labels_with_recipe(model, lazy: LazyImage, chunk_size=None):
    """Lazy labels of ``lazy`` by a model with a recipe: its features, nearest centre, clean-up
    (:meth:`KMeansModel.label_with_recipe` block by block), chunked like ``lazy``'s pixels."""
    recipe = model.recipe
    if recipe.is_plain:
        labels = labels_of_blocks(replace(model, recipe=None), lazy, chunk_size)
    else:
        labels = features_of(lazy, recipe).labels(model.feature_model(), chunk_size)
    return clean_blocks(labels, recipe).rechunk(lazy.spatial_chunks)


def confidence_with_recipe(model, lazy: LazyImage, chunk_size=None):
    """Lazy confidence of ``lazy`` by a model with a recipe, as in memory: in its feature space
    (features computed with overlap), without the clean-up; chunked like ``lazy``'s pixels."""
    if model.recipe.is_plain:
        return None  # clean-up only: the confidence of the raw values
    conf = features_of(lazy, model.recipe).confidence(model.feature_model(), chunk_size)
    return conf.rechunk(lazy.spatial_chunks)


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
        fn = functools.partial(cleanup.majority, radius=radius)
        labels = _with_overlap(labels, (radius,) * labels.ndim, fn, labels.dtype)
    if reach:
        fn = functools.partial(cleanup.remove_small_regions, min_size=recipe.min_size)
        labels = _with_overlap(labels, (reach,) * labels.ndim, fn, labels.dtype)
    return labels
