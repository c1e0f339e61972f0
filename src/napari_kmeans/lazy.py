"""k-means segmentation of dask arrays: images larger than memory, on one machine or a cluster.

The functions here give the same results as the in-memory engine (exactly for integer data) while
reading the image one block at a time:

- **fit**: integer data that compress (8-bit with up to three channels, 16-bit and float16 gray)
  are fitted from a histogram of pixel codes, summed over blocks; other single-channel data from
  their distinct values, merged over blocks, while there are at most ``DISTINCT_CAP`` of them;
  everything else from the same seeded, order-independent sample as :mod:`napari_kmeans.sampling`,
  drawn block by block. Then :func:`napari_kmeans.segment.fit_weighted` fits the model.
- **predict**: ``map_blocks``-style labelling (a look-up table per block, or chunked nearest
  centre), returning dask arrays that are computed only when asked for.

Reductions run through ``dask.compute``, so a ``dask.distributed`` client, when one is active,
runs them on its cluster. dask is imported only when one of these functions is called: importing
:mod:`napari_kmeans` does not import dask.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np

from . import features as ft
from . import sampling
from .compress import CHUNK, codec_for, lookup
from .sampling import _BUCKET_BITS, SAMPLE_SIZE, hash_values

DISTINCT_CAP = sampling.DISTINCT_CAP  # most distinct values kept (the in-memory engine's rule)
FLOAT_DISTINCT_MAX_PIXELS = 1 << 24  # float gray data larger than this are sampled at once
_N_BUCKETS = 1 << _BUCKET_BITS
_SHIFT = np.uint64(64 - _BUCKET_BITS)
_INDEX = "abcdefghijklmnopqrstuvwxy"  # blockwise indices of the spatial axes ("z": channels)


def is_dask(obj) -> bool:
    """Whether ``obj`` is a dask array (checked without importing dask)."""
    mod = sys.modules.get("dask.array")
    return mod is not None and isinstance(obj, mod.Array)


def _da():
    try:
        import dask.array as da
    except ImportError:  # pragma: no cover - dask is in the [dask] extra
        raise ImportError(
            "napari_kmeans.lazy needs dask: pip install 'napari-kmeans[dask]'."
        ) from None
    return da


# -- the image, laid out for block-wise work ------------------------------------------------------


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
        return tuple(n for i, n in enumerate(self.pixels.shape) if i != self.axis)

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
    da = _da()
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


def lay_out(image, spec: ft.FeatureSpec, mask=None) -> LazyImage:
    """Put the channel axis of a dask ``image`` in one chunk and align ``mask`` with it."""
    da = _da()
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
    mask = mask.rechunk(chunks) if is_dask(mask) else da.from_array(mask, chunks)
    return LazyImage(spec, image, ft.mask_inside(mask), lazy.dtype)


def _layout_block(block, mask_block, spec):
    """``(pixels (n, n_channels), valid or None)`` of one block: the rules of ``ft.prepare``.

    Unlike ``prepare`` this accepts a block in which no pixel is valid.
    """
    alpha = None
    if spec.channel_axis is None:
        pixels = block.reshape(-1, 1)
    else:
        block = np.moveaxis(block, spec.channel_axis, -1)
        if spec.rgb and block.shape[-1] == 4:
            alpha = block[..., 3].reshape(-1)
            block = block[..., :3]
        pixels = block.reshape(-1, spec.n_channels)
    if pixels.dtype.kind == "b":
        pixels = pixels.view(np.uint8)
    valid = None if mask_block is None else mask_block.reshape(-1).astype(bool)
    if pixels.dtype.kind == "f":
        finite = np.isfinite(pixels).all(axis=1)
        if not finite.all():
            valid = finite if valid is None else valid & finite
    if alpha is not None:  # as features.prepare: alpha 0 or non-finite is transparent
        opaque = (alpha != 0) & (np.isfinite(alpha) if alpha.dtype.kind == "f" else True)
        if not opaque.all():
            valid = opaque if valid is None else valid & opaque
    return pixels, valid


def _valid_pixels(block, mask_block, spec):
    pixels, valid = _layout_block(block, mask_block, spec)
    return pixels if valid is None else pixels[valid]


def _reduce(lazy: LazyImage, per_block, combine, join_kwargs=None, **kwargs):
    """``per_block(block, mask_block, **kwargs)`` on every block, combined pairwise, computed.

    ``combine(a, b, **join_kwargs)`` merges two results. The work runs wherever ``dask.compute``
    sends it: the active ``dask.distributed`` client if there is one, else local threads.
    """
    import dask

    step = dask.delayed(per_block, pure=True)
    join = dask.delayed(combine, pure=True)
    join_kwargs = join_kwargs or {}
    parts = [step(img, msk, **kwargs) for img, msk in lazy.blocks()]
    while len(parts) > 1:
        parts = [join(*parts[i : i + 2], **join_kwargs) if i + 1 < len(parts) else parts[i]
                 for i in range(0, len(parts), 2)]  # fmt: skip
    return dask.compute(parts[0])[0]


def _no_pixel_left(lazy: LazyImage):
    return ValueError(
        f"no pixel is left to cluster: all {lazy.n_pixels} pixels are masked, non-finite "
        "(NaN or inf) or fully transparent; check the mask and the image's values."
    )


# -- what to fit on: weighted distinct values, or a sample ----------------------------------------


@dataclass(frozen=True)
class Support:
    """Weighted pixel values to fit a model on.

    ``values`` is ``(m, n_channels)`` in the pixels' dtype (bool viewed as uint8), ``weights`` the
    number of pixels each stands for; ``covers_all`` is True when they are all the distinct valid
    values with exact counts (not a sample); ``n_valid`` counts the valid pixels.
    """

    values: np.ndarray
    weights: np.ndarray
    covers_all: bool
    n_valid: int


def _merge(a, b):
    """Merge two ``(distinct keys, counts)`` groupings (keys 1-D, or rows of a 2-D array)."""
    keys = np.concatenate([a[0], b[0]])
    counts = np.concatenate([a[1], b[1]])
    uniq, inv = np.unique(keys, axis=0 if keys.ndim == 2 else None, return_inverse=True)
    summed = np.bincount(inv.reshape(-1), weights=counts, minlength=uniq.shape[0])
    return uniq, summed.astype(np.int64)


def _hist_block(block, mask_block, *, spec, codec):
    """Distinct codes of a block's valid pixels, with counts."""
    codes = codec.encode(_valid_pixels(block, mask_block, spec))
    if codec.n_codes > 1 << 16:
        return np.unique(codes, return_counts=True)
    hist = np.zeros(codec.n_codes, np.int64)
    for s in range(0, codes.size, CHUNK):
        hist += np.bincount(codes[s : s + CHUNK], minlength=codec.n_codes)
    distinct = np.flatnonzero(hist)
    return distinct, hist[distinct]


def _hist_support(lazy: LazyImage, codec) -> Support:
    distinct, counts = _reduce(lazy, _hist_block, _merge, spec=lazy.spec, codec=codec)
    values = codec.decode(distinct)
    if values.dtype.kind == "f":  # float16: non-finite codes are masked already
        keep = np.isfinite(values).all(axis=1)
        values, counts = values[keep], counts[keep]
    return Support(values, counts.astype(np.float64), True, int(counts.sum()))


def _distinct_block(block, mask_block, *, spec, cap):
    """Distinct values of a single-channel block with counts, or None if more than ``cap``."""
    v = _valid_pixels(block, mask_block, spec)[:, 0]
    if v.dtype.kind in "iu" and v.size:
        lo, hi = v.min(), v.max()
        if int(hi) - int(lo) < max(v.size, 1 << 16):  # small range: a histogram is cheaper
            hist = np.bincount(np.subtract(v, lo, dtype=v.dtype).astype(np.intp))
            offsets = np.flatnonzero(hist)
            return offsets.astype(v.dtype) + lo, hist[offsets]
    uniq, counts = np.unique(v, return_counts=True)
    return (uniq, counts) if uniq.size <= cap else None


def _join_distinct(a, b, *, cap):
    if a is None or b is None:
        return None
    merged = _merge(a, b)
    return merged if merged[0].size <= cap else None


def _distinct_support(lazy: LazyImage, cap) -> Support | None:
    found = _reduce(lazy, _distinct_block, _join_distinct, {"cap": cap}, spec=lazy.spec, cap=cap)
    if found is None:
        return None
    values, counts = found
    return Support(values[:, None], counts.astype(np.float64), True, int(counts.sum()))


def _threshold(p):
    """Hashes below this are sampled (the rule of ``sampling.hash_sample``)."""
    return np.uint64(min(int(p * 2.0**64), (1 << 64) - 1))


def _by_hash(px, h):
    """Distinct rows of ``px`` keyed by their hashes ``h``: ``(hashes, rows, counts)``, by hash."""
    uh, first, counts = np.unique(h, return_index=True, return_counts=True)
    return uh, px[first], counts


def _join_hashed(a, b):
    """Merge two :func:`_by_hash` groupings (None for nothing)."""
    if a is None:
        return b
    h = np.concatenate([a[0], b[0]])
    uh, first, inv = np.unique(h, return_index=True, return_inverse=True)
    counts = np.bincount(inv.reshape(-1), weights=np.concatenate([a[2], b[2]]), minlength=uh.size)
    return uh, np.concatenate([a[1], b[1]])[first], counts.astype(np.int64)


def _sample_block(block, mask_block, *, spec, seed, keep, buckets, hot=None):
    """One block's share of the sample: ``(n_valid, bucket counts, kept, heavy candidates)``.

    ``keep`` is "all" (every valid value), a hash threshold, or None (no values); ``buckets``
    asks for hash-bucket counts; ``hot`` (a boolean per bucket) for the values in hot buckets.
    """
    px = _valid_pixels(block, mask_block, spec)
    h = hash_values(px, seed)
    top = (h >> _SHIFT).astype(np.intp) if buckets or hot is not None else None
    counts = np.bincount(top, minlength=_N_BUCKETS) if buckets else None
    kept = cand = None
    if keep is not None:
        sel = slice(None) if isinstance(keep, str) else h < keep
        kept = _by_hash(px[sel], h[sel])
    if hot is not None:
        sel = hot[top]
        cand = _by_hash(px[sel], h[sel])
    return px.shape[0], counts, kept, cand


def _join_sample(a, b):
    buckets = None if a[1] is None else a[1] + b[1]
    kept = None if a[2] is None else _join_hashed(a[2], b[2])
    cand = None if a[3] is None else _join_hashed(a[3], b[3])
    return a[0] + b[0], buckets, kept, cand


def _sample_support(lazy: LazyImage, seed: int, size=SAMPLE_SIZE) -> Support:
    """The sample :func:`napari_kmeans.sampling.hash_sample` draws, drawn block by block.

    One pass when every pixel is valid and no value is very frequent; up to three otherwise.
    """
    import dask

    n_total = lazy.n_pixels
    opts = {"spec": lazy.spec, "seed": seed}
    keep = "all" if n_total <= size else _threshold(size / n_total)
    n, buckets, kept, _ = _reduce(
        lazy, _sample_block, _join_sample, keep=keep, buckets=n_total > size, **opts
    )
    if n == 0:
        raise _no_pixel_left(lazy)
    if n <= size:
        if not isinstance(keep, str):
            kept = _reduce(lazy, _sample_block, _join_sample, keep="all", buckets=False, **opts)[2]
        return Support(kept[1], kept[2].astype(np.float64), True, n)
    p = size / n
    heavy_min = max(16, int(4 / p))
    hot = buckets >= heavy_min
    cand = None
    if n != n_total or hot.any():  # masked pixels changed the rate, or some values are frequent
        again = _threshold(p) if n != n_total else None
        hot_arg = dask.delayed(hot) if hot.any() else None
        _, _, kept2, cand = _reduce(
            lazy, _sample_block, _join_sample, keep=again, buckets=False, hot=hot_arg, **opts
        )
        kept = kept if again is None else kept2
    uh, values, counts = kept
    heavy_vals = np.zeros((0, values.shape[1]), values.dtype)
    heavy_counts = np.zeros(0, np.float64)
    if cand is not None:
        big = cand[2] >= heavy_min
        heavy_vals, heavy_counts = cand[1][big], cand[2][big].astype(np.float64)
        drop = np.isin(uh, cand[0][big])
        values, counts = values[~drop], counts[~drop]
    values = np.concatenate([values, heavy_vals])
    weights = np.concatenate([counts / p, heavy_counts])
    return Support(values, weights, False, n)


def support(lazy: LazyImage, seed: int = 0, *, distinct_cap: int | None = None) -> Support:
    """Weighted values to fit ``lazy`` on: a histogram, distinct values, or a seeded sample.

    ``distinct_cap`` defaults to :data:`napari_kmeans.sampling.DISTINCT_CAP`, the rule of the
    in-memory engine: up to that many distinct values are all kept, beyond the sample is used.

    Raises
    ------
    ValueError
        When no pixel is valid.
    """
    if distinct_cap is None:
        distinct_cap = sampling.DISTINCT_CAP
    codec = codec_for(np.uint8 if lazy.dtype.kind == "b" else lazy.dtype, lazy.spec.n_channels)
    if codec is not None:
        found = _hist_support(lazy, codec)
    elif lazy.spec.n_channels == 1 and (
        lazy.dtype.kind in "iu" or lazy.n_pixels <= FLOAT_DISTINCT_MAX_PIXELS
    ):
        found = _distinct_support(lazy, distinct_cap) or _sample_support(lazy, seed)
    else:
        found = _sample_support(lazy, seed)
    if found.n_valid == 0:
        raise _no_pixel_left(lazy)
    return found


# -- labelling and recolouring, block by block ----------------------------------------------------


def label_pixels(model, pixels, valid, dtype, chunk_size=None) -> np.ndarray:
    """Labels (1..k, 0 where not ``valid``) of ``(n, n_channels)`` pixels of input ``dtype``.

    Pixels that compress are labelled through a look-up table over the codes present; others
    by nearest centre in chunks of ``chunk_size`` pixels. Either way each pixel's label depends
    only on its value, so blocks give the same labels as the whole image.
    """
    from .model import label_dtype

    ldtype = label_dtype(model.n_clusters)
    codec = codec_for(pixels.dtype, pixels.shape[1])
    if codec is not None:
        codes = codec.encode(pixels)
        present = np.zeros(codec.n_codes, bool)
        for s in range(0, codes.size, CHUNK):
            ok = codes[s : s + CHUNK]
            present[ok if valid is None else ok[valid[s : s + CHUNK]]] = True
        distinct = np.flatnonzero(present)
        lut = np.zeros(codec.n_codes, ldtype)
        lut[distinct] = model.assign_values(codec.decode(distinct), dtype)[0] + 1
        return lookup(lut, codes, valid)
    chunk = ft.check_chunk_size(chunk_size) or CHUNK
    out = np.zeros(pixels.shape[0], ldtype)
    for s in range(0, pixels.shape[0], chunk):
        part = pixels[s : s + chunk]
        ok = None if valid is None else valid[s : s + chunk]
        idx = model.assign_values(part if ok is None else part[ok], dtype)[0] + 1
        if ok is None:
            out[s : s + chunk] = idx
        else:
            out[s : s + chunk][ok] = idx
    return out


def _label_block(block, mask_block=None, *, model, spec, image_dtype, chunk_size):
    pixels, valid = _layout_block(block, mask_block, spec)
    shape = block.shape
    if spec.channel_axis is not None:
        shape = (
            shape[: spec.channel_axis % block.ndim] + shape[spec.channel_axis % block.ndim + 1 :]
        )
    return label_pixels(model, pixels, valid, image_dtype, chunk_size).reshape(shape)


def _labels(model, lazy: LazyImage, chunk_size=None):
    """Lazy labels of ``lazy`` (a dask array chunked like its spatial axes)."""
    from .model import label_dtype

    index, spatial = lazy.index()
    args = [lazy.pixels, index]
    if lazy.mask is not None:
        args += [lazy.mask, spatial]
    return _da().blockwise(
        _label_block, spatial, *args,
        dtype=label_dtype(model.n_clusters), concatenate=True, model=model, spec=lazy.spec,
        image_dtype=lazy.dtype, chunk_size=chunk_size,
    )  # fmt: skip


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
        Blocks with no valid pixel are 0 (``predict`` raises instead, for a whole image).

    Examples
    --------
    >>> import dask.array as da, numpy as np
    >>> from napari_kmeans import segment
    >>> model = segment(np.array([0, 10, 200, 210], dtype=np.uint8), 2).model
    >>> labels = predict_lazy(model, da.from_array(np.array([5, 250, 0], np.uint8), chunks=2))
    >>> labels.compute()
    array([1, 2, 1], dtype=uint8)
    """
    chunk_size = ft.check_chunk_size(chunk_size)
    image = as_dask_image(image)
    spec = model.check_image(image, rgb=rgb)
    return _labels(model, lay_out(image, spec, mask), chunk_size)


def _recolor_block(block, labels_block, *, model):
    return model.recolor(block, labels_block)


def recolor_lazy(model, image, labels, *, rgb=None):
    """:meth:`KMeansModel.recolor` for dask arrays: a lazy image painted with cluster colours.

    Returns a dask array with the shape, dtype and spatial chunks of ``image`` (its channel axis
    in one chunk). ``rgb`` declares the image's layout (see :meth:`KMeansModel.check_image`).
    """
    da = _da()
    image = as_dask_image(image)
    lazy = lay_out(image, model.check_image(image, rgb=rgb))
    if tuple(labels.shape) != lazy.spatial_shape:
        raise ValueError(
            f"labels shape {tuple(labels.shape)} != the image's spatial shape "
            f"{lazy.spatial_shape} (image shape {tuple(image.shape)})."
        )
    chunks = lazy.spatial_chunks
    labels = labels.rechunk(chunks) if is_dask(labels) else da.from_array(labels, chunks)
    index, spatial = lazy.index()
    return da.blockwise(
        _recolor_block, index, lazy.pixels, index, labels, spatial, dtype=image.dtype, model=model
    )


# -- segment ----------------------------------------------------------------------------------------


def _stats_block(block, mask_block, *, model, spec, image_dtype, chunk_size):
    """Pixels per cluster and summed squared distance of one block."""
    px = _valid_pixels(block, mask_block, spec)
    counts = np.zeros(model.n_clusters, np.int64)
    inertia = 0.0
    chunk = int(chunk_size or CHUNK)
    for s in range(0, px.shape[0], chunk):
        idx, d2 = model.assign_values(px[s : s + chunk], image_dtype)
        counts += np.bincount(idx, minlength=model.n_clusters)
        inertia += float(d2.sum())
    return counts, inertia


def _add(a, b):
    return a[0] + b[0], a[1] + b[1]


def _stats(model, lazy: LazyImage, found: Support, chunk_size):
    """``(counts, inertia)``: from the support when it holds every value, else one more pass."""
    if found.covers_all:
        idx, d2 = model.assign_values(found.values, lazy.dtype)
        counts = np.bincount(idx, weights=found.weights, minlength=model.n_clusters)
        return counts.astype(np.int64), float(found.weights @ d2)
    return _reduce(
        lazy, _stats_block, _add,
        model=model, spec=lazy.spec, image_dtype=lazy.dtype, chunk_size=chunk_size,
    )  # fmt: skip


def segment_lazy(
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
):
    """:func:`napari_kmeans.segment` for dask arrays: fit by reductions, label lazily.

    Parameters are those of :func:`napari_kmeans.segment`; ``image`` and ``mask`` may be dask
    arrays (numpy arrays are wrapped). The model is fitted now, reading the image block by block
    (one pass for data that compress; up to three passes for others, plus one for ``counts`` and
    ``inertia`` when the fit used a sample). Labels and the recoloured image are returned as dask
    arrays that are computed only when asked for. ``progress(fraction, step)`` is called between
    the reductions and during the fit (not inside a ``dask.compute``); raising from it cancels.

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
    dask.array<label_block, shape=(2, 3), dtype=uint8, chunksize=(1, 2), chunktype=numpy.ndarray>
    >>> result.labels.compute()
    array([[1, 1, 2],
           [2, 1, 1]], dtype=uint8)
    >>> result.centers.ravel(), result.inertia, result.counts
    (array([  5., 205.]), 150.0, array([4, 2]))
    """
    from .segment import Segmentation, fit_weighted

    image = as_dask_image(image)
    k, n_init, max_iter, tol, seed = ft.check_fit_args(
        n_clusters, n_init=n_init, max_iter=max_iter, tol=tol, seed=seed
    )
    chunk_size = ft.check_chunk_size(chunk_size)
    progress = ft.checked_progress(progress)
    spec = ft.make_spec(image, channel_axis=channel_axis, rgb=rgb, color_space=color_space)
    lazy = lay_out(image, spec, mask)
    ft.tick(progress, 0.0, "reading blocks")
    found = support(lazy, seed)
    model, _, _, n_iter, exact = fit_weighted(
        found.values, found.weights, spec, lazy.dtype, k,
        n_init=n_init, max_iter=max_iter, tol=tol, seed=seed, covers_all=found.covers_all,
        progress=ft.part(progress, 0.5, 0.8),
    )  # fmt: skip
    ft.tick(progress, 0.8, "counting pixels per cluster")
    counts, inertia = _stats(model, lazy, found, chunk_size)
    ft.tick(progress, 1.0, "done")
    labels = _labels(model, lazy, chunk_size)
    return Segmentation(
        labels=labels,
        centers=model.colors.copy(),
        recolored=recolor_lazy(model, image, labels),
        inertia=inertia,
        n_iter=int(n_iter),
        counts=counts,
        exact=exact,
        model=model,
    )
