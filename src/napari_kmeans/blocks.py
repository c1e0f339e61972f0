"""The dask mechanics: lay a dask image out for block-wise work, reduce over its blocks, label
and recolour block by block.

Nothing here re-expresses a per-pixel rule: each block is laid out by
:func:`napari_kmeans.features.layout`, its support is found by the per-chunk steps of
:mod:`napari_kmeans.compress` and :mod:`napari_kmeans.sampling` (merged with their merge
functions), and it is labelled by the model's kernel :meth:`KMeansModel.label_pixels`. The
model is passed in (this module does not import :mod:`napari_kmeans.model`, which imports it
to accept dask arrays in ``predict`` and ``recolor``).

Reductions run through ``dask.compute``, so a ``dask.distributed`` client, when one is active,
runs them on its cluster. dask is imported only when one of these functions is called.
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass

import numpy as np

from . import features as ft
from . import sampling
from .compress import GRID_MIN_PIXELS, Support, codec_for, codes_support, count_values, merge_counts

# Single-channel data with more valid pixels than this are summarised on a grid (as in memory).
FLOAT_DISTINCT_MAX_PIXELS = GRID_MIN_PIXELS
_INDEX = "abcdefghijklmnopqrstuvwxy"  # blockwise indices of the spatial axes ("z": channels)


def is_dask(obj) -> bool:
    """Whether ``obj`` is a dask array (checked without importing dask)."""
    mod = sys.modules.get("dask.array")
    return mod is not None and isinstance(obj, mod.Array)


def dask_array_module():
    """``dask.array``, or an ImportError naming the pip extra."""
    try:
        import dask.array as da
    except ImportError:  # pragma: no cover - dask is in the [dask] extra
        raise ImportError(
            "napari_kmeans.lazy needs dask: pip install 'napari-kmeans[dask]'."
        ) from None
    return da


@dataclass(frozen=True)
class LazyImage:
    """A dask image with its channel axis (if any) in one chunk, and its mask.

    ``mask`` is None or a boolean dask array chunked like the image's spatial axes.
    """

    spec: ft.FeatureSpec
    pixels: object
    mask: object
    dtype: np.dtype

    @property
    def axis(self):
        """The channel axis as a non-negative index, or None."""
        ax = self.spec.channel_axis
        return None if ax is None else ax % self.pixels.ndim

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return ft.spatial_shape_of(self.pixels.shape, self.spec)

    @property
    def spatial_chunks(self):
        return tuple(c for i, c in enumerate(self.pixels.chunks) if i != self.axis)

    @property
    def n_pixels(self) -> int:
        return int(np.prod(self.spatial_shape))

    def index(self):
        """blockwise indices: ``(image's, spatial axes')``, "z" for the channel axis."""
        spatial = _INDEX[: len(self.spatial_shape)]
        if self.axis is None:
            return spatial, spatial
        return spatial[: self.axis] + "z" + spatial[self.axis :], spatial

    def blocks(self):
        """Delayed ``(image block, mask block or None)`` pairs, one per block."""
        imgs = list(self.pixels.to_delayed().ravel())
        masks = [None] * len(imgs) if self.mask is None else list(self.mask.to_delayed().ravel())
        return list(zip(imgs, masks, strict=True))


def as_dask_image(image, name="image"):
    """``image`` as a dask array with a supported dtype (numpy input is wrapped), or raise."""
    da = dask_array_module()
    if not is_dask(image):
        image = da.from_array(ft.as_image(image, name))
    ft.check_real_dtype(image.dtype, name)
    if image.ndim == 0 or image.size == 0:
        raise ValueError(f"{name} is empty or a scalar (shape {image.shape}); give pixels.")
    if any(np.isnan(c) for chunks in image.chunks for c in chunks):
        raise ValueError(
            f"{name} has unknown chunk sizes; call {name}.compute_chunk_sizes() first."
        )
    return image


def lay_out_blocks(image, spec: ft.FeatureSpec, mask=None) -> LazyImage:
    """Put the channel axis of a dask ``image`` in one chunk and align ``mask`` with it.

    An in-memory ``mask`` that leaves no pixel is refused here, as in memory (ValueError). A
    dask mask, non-finite values and transparency are known only block by block: blocks
    without a valid pixel give 0 (labels) or NaN (confidence), since telling that the whole
    image has none would read all of it before any block could be shown.
    """
    da = dask_array_module()
    if spec.channel_axis is not None:
        image = image.rechunk({spec.channel_axis % image.ndim: -1})
    lazy = LazyImage(spec, image, None, np.dtype(image.dtype))
    if mask is None:
        return lazy
    if not is_dask(mask):
        mask = np.asarray(mask)
    spatial = lazy.spatial_shape
    if tuple(mask.shape) != spatial:
        raise ValueError(
            f"mask has shape {tuple(mask.shape)} but the image's pixels are laid out as {spatial} "
            f"(image shape {tuple(image.shape)}, channel axis {spec.channel_axis}); give a mask "
            "with the image's shape without its channel axis."
        )
    ft.check_mask_dtype(mask.dtype)
    chunks = lazy.spatial_chunks
    if is_dask(mask):
        return LazyImage(spec, image, ft.mask_inside(mask.rechunk(chunks)), lazy.dtype)
    inside = ft.mask_inside(mask)
    if not inside.any():
        raise no_pixel_left(lazy)
    return LazyImage(spec, image, da.from_array(inside, chunks), lazy.dtype)


def no_pixel_left(lazy: LazyImage) -> ValueError:
    return ValueError(
        f"no pixel is left to cluster: all {lazy.n_pixels} pixels are masked, non-finite "
        "(NaN or inf) or fully transparent; check the mask and the image's values."
    )


# -- reductions: a per-chunk step on every block's valid pixels, merged pairwise ---------------


def _step_on_block(block, mask_block, *, spec, step, **kwargs):
    """``step`` on the valid pixel values of one block (laid out by ``features.layout``)."""
    return step(ft.valid_pixels(*ft.layout(block, spec, mask_block)), **kwargs)


def reduce_blocks(lazy: LazyImage, step, merge, **kwargs):
    """``step(valid pixel values, **kwargs)`` on every block, merged pairwise, computed.

    ``merge(a, b)`` merges two results. Array arguments are sent once (as delayed objects), not
    with every block. The work runs wherever ``dask.compute`` sends it: the active
    ``dask.distributed`` client if there is one, else local threads.
    """
    import dask

    kwargs = delayed_arrays(kwargs)
    on_block = dask.delayed(_step_on_block, pure=True)
    parts = [on_block(img, msk, spec=lazy.spec, step=step, **kwargs) for img, msk in lazy.blocks()]
    return merged(parts, merge)


def delayed_arrays(kwargs: dict) -> dict:
    """``kwargs`` with arrays as delayed objects: sent once, not with every block."""
    import dask

    return {k: dask.delayed(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}


def merged(parts, merge):
    """Delayed per-block results merged pairwise by ``merge(a, b)``, computed."""
    import dask

    join = dask.delayed(merge, pure=True)
    while len(parts) > 1:
        parts = [join(*parts[i : i + 2]) if i + 1 < len(parts) else parts[i]
                 for i in range(0, len(parts), 2)]  # fmt: skip
    return dask.compute(parts[0])[0]


def support_of_blocks(lazy: LazyImage, seed: int = 0, *, distinct_cap=None) -> Support:
    """Weighted values to fit ``lazy`` on: a histogram, distinct values, a grid or a sample.

    The steps and merges of the in-memory engine, applied to blocks: codes counted by
    ``compress.count_values`` for data that compress; ``sampling.gray_support`` for other
    single-channel data (distinct values while there are at most ``distinct_cap``, default
    ``sampling.DISTINCT_CAP``, or the grid beyond ``GRID_MIN_PIXELS`` valid pixels); else the
    sample of ``sampling.draw_sample``.

    Raises
    ------
    ValueError
        When no pixel is valid.
    """
    codec = codec_for(lazy.dtype, lazy.spec.n_channels)
    reduce = functools.partial(reduce_blocks, lazy)
    if codec is not None:
        found = codes_support(codec, *reduce(count_values, merge_counts, codec=codec))
    elif lazy.spec.n_channels == 1:
        found = sampling.gray_support(reduce, lazy.dtype, lazy.n_pixels, seed, cap=distinct_cap)
    else:
        size = sampling.sample_size(lazy.spec.n_channels)
        found = sampling.draw_sample(reduce, lazy.n_pixels, seed, size)
    if found.n_valid == 0:
        raise no_pixel_left(lazy)
    return found


def _block_stats(values, *, model, image_dtype, chunk_size):
    labelled = model.label_pixels(values, None, image_dtype, chunk_size=chunk_size)
    return labelled.counts, labelled.inertia


def _add(a, b):
    return a[0] + b[0], a[1] + b[1]


def stats_of_blocks(model, lazy: LazyImage, chunk_size=None):
    """``(counts, inertia)`` of ``lazy`` labelled by ``model``: one pass over the blocks."""
    return reduce_blocks(
        lazy, _block_stats, _add, model=model, image_dtype=lazy.dtype, chunk_size=chunk_size
    )


# -- labelling and recolouring, block by block ----------------------------------------------------


def block_labels(block, mask_block=None, *, model, spec, image_dtype, chunk_size):
    """Labels of one block (its spatial shape), by the model's kernel."""
    pixels, valid = ft.layout(block, spec, mask_block)
    labels = model.label_pixels(
        pixels, valid, image_dtype, chunk_size=chunk_size, stats=False
    ).labels
    return labels.reshape(ft.spatial_shape_of(block.shape, spec))


def labels_of_blocks(model, lazy: LazyImage, chunk_size=None):
    """Lazy labels of ``lazy`` (a dask array chunked like its spatial axes)."""
    index, spatial = lazy.index()
    args = [lazy.pixels, index]
    if lazy.mask is not None:
        args += [lazy.mask, spatial]
    return dask_array_module().blockwise(
        block_labels, spatial, *args,
        dtype=model.label_dtype, concatenate=True, model=model, spec=lazy.spec,
        image_dtype=lazy.dtype, chunk_size=chunk_size,
    )  # fmt: skip


def predict_blocks(model, image, *, mask=None, chunk_size=None, rgb=None):
    """Lazy labels of a dask ``image`` by ``model`` (see :func:`napari_kmeans.lazy.predict_lazy`)."""
    chunk_size = ft.check_chunk_size(chunk_size)
    image = as_dask_image(image)
    spec = model.check_image(image, rgb=rgb)
    return labels_of_blocks(model, lay_out_blocks(image, spec, mask), chunk_size)


def block_recolored(block, labels_block, *, model):
    return model.recolor(block, labels_block)


def recolor_blocks(model, image, labels, *, rgb=None):
    """A lazy ``image`` painted with ``model``'s colours (see :func:`napari_kmeans.lazy.recolor_lazy`)."""
    da = dask_array_module()
    image = as_dask_image(image)
    lazy = lay_out_blocks(image, model.check_image(image, rgb=rgb))
    if tuple(labels.shape) != lazy.spatial_shape:
        raise ValueError(
            f"labels shape {tuple(labels.shape)} != the image's spatial shape "
            f"{lazy.spatial_shape} (image shape {tuple(image.shape)})."
        )
    chunks = lazy.spatial_chunks
    labels = labels.rechunk(chunks) if is_dask(labels) else da.from_array(labels, chunks)
    index, spatial = lazy.index()
    return da.blockwise(
        block_recolored, index, lazy.pixels, index, labels, spatial, dtype=image.dtype,
        model=model,
    )  # fmt: skip
