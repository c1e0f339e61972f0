"""Pixels -> feature vectors.

This module knows the channel layout of an image (grayscale, RGB, RGBA or any number of channels
along ``channel_axis``), which pixels take part (mask, non-finite values, fully transparent alpha)
and how a pixel's values become the feature vector that k-means works on (raw values, or CIELAB for
RGB). Everything else in the engine works on the ``(n_pixels, n_channels)`` array it produces.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np

COLOR_SPACES = ("rgb", "lab")

# Upper bounds of the fitting parameters: beyond them a run costs hours, not a better result.
MAX_CLUSTERS = 1000  # labels 1..k; instance ids of many objects: napari_kmeans.edit.instances
MAX_N_INIT = 1000
MAX_ITER = 100_000
_TOO_MANY = {
    "n_clusters": "a segmentation into more clusters is not useful; to number objects, "
    "use napari_kmeans.edit.instances",
    "k_max": "a segmentation into more clusters is not useful",
    "n_init": "restarts run on a small sample and the best rarely changes beyond 10",
    "max_iter": "Lloyd converges in far fewer iterations (tol stops it)",
}

# Rec. 709 luma weights, used to order colour clusters from dark to bright.
_LUMA = np.array([0.2126, 0.7152, 0.0722])


@dataclass(frozen=True)
class FeatureSpec:
    """How an image's pixels become feature vectors.

    Attributes
    ----------
    channel_axis : int or None
        Axis holding the channels, as a negative index (so that it means the same thing for images
        of another dimensionality), or None for single-channel images.
    rgb : bool
        True when the channels are red, green, blue (and possibly alpha).
    color_space : {'rgb', 'lab'}
        Feature space for RGB images: the raw values, or CIELAB.
    n_channels : int
        Channels that are clustered (3 for RGB and RGBA images: alpha only masks).
    """

    channel_axis: int | None
    rgb: bool
    color_space: str
    n_channels: int

    @property
    def n_features(self) -> int:
        return self.n_channels


@dataclass(frozen=True)
class Prepared:
    """An image laid out for clustering.

    ``pixels`` is ``(n_pixels, n_channels)`` in the input's dtype (bool is viewed as uint8), alpha
    removed; ``valid`` is a boolean vector (None when every pixel is valid); ``spatial_shape`` is the
    image shape without its channel axis; ``n_valid`` counts valid pixels.
    """

    spec: FeatureSpec
    pixels: np.ndarray
    valid: np.ndarray | None
    spatial_shape: tuple[int, ...]
    n_valid: int
    dtype: np.dtype


def check_int(name, value, minimum, maximum=None) -> int:
    """``value`` as an int in ``[minimum, maximum]``, or a TypeError/ValueError naming ``name``."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__}).")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}.")
    if maximum is not None and value > maximum:
        why = _TOO_MANY.get(name)
        raise ValueError(
            f"{name} must be at most {maximum}, got {value}" + (f"; {why}." if why else ".")
        )
    return int(value)


def check_chunk_size(chunk_size) -> int | None:
    """``chunk_size`` (pixels per labelling chunk) as a positive int, or None for the default."""
    return None if chunk_size is None else check_int("chunk_size", chunk_size, 1)


def check_fit_args(n_clusters, *, n_init, max_iter, tol, seed):
    """The fitting parameters every entry point takes, validated: ``(k, n_init, max_iter, tol,
    seed)``; raises TypeError or ValueError naming the parameter, the value and the bound."""
    k = check_int("n_clusters", n_clusters, 1, MAX_CLUSTERS)
    n_init = check_int("n_init", n_init, 1, MAX_N_INIT)
    max_iter = check_int("max_iter", max_iter, 1, MAX_ITER)
    seed = check_int("seed", seed, 0)
    if isinstance(tol, bool) or not isinstance(tol, Real) or not tol >= 0:
        raise ValueError(f"tol must be a non-negative number, got {tol!r}.")
    return k, n_init, max_iter, tol, seed


def check_real_dtype(dtype, name="image") -> None:
    """Raise a TypeError naming the dtype and the fix unless it is bool, integer or float."""
    dtype = np.dtype(dtype)
    if dtype.kind in "biuf":
        return
    if dtype.kind in "mM":
        kind = "datetime64" if dtype.kind == "M" else "timedelta64"
        raise TypeError(
            f"{name} has {kind} dtype {dtype}; k-means needs real numbers. Convert it first: "
            f"to integers with {name}.astype('int64') (NaT becomes -2**63: mask it with "
            f"mask=~np.isnat({name})), or to float seconds with "
            + (
                f"({name} - {name}.min()) / np.timedelta64(1, 's')."
                if dtype.kind == "M"
                else f"{name} / np.timedelta64(1, 's') (NaT becomes NaN, which is not clustered)."
            )
        )
    kind = {"c": "complex", "V": "void (raw bytes or structured)"}.get(dtype.kind, "object/string")
    raise TypeError(
        f"{name} has {kind} dtype {dtype}; k-means needs real numbers. Convert it first, e.g. "
        f"np.abs({name}) for complex data, {name}.astype(float) for numbers stored as objects "
        "or strings, or one numeric field of a structured array."
    )


class _Reporter:
    """A caller's ``progress(fraction, step)``, fed fractions clipped to [0, 1], never going back."""

    def __init__(self, fn):
        self.fn = fn
        self.last = 0.0

    def __call__(self, fraction, step):
        self.last = min(max(float(fraction), self.last), 1.0)
        self.fn(self.last, step)


def checked_progress(progress):
    """``progress`` ready to call (None stays None); TypeError if it is not callable."""
    if progress is None or isinstance(progress, _Reporter):
        return progress
    if not callable(progress):
        raise TypeError(
            f"progress must be a callable progress(fraction, step) or None, got {progress!r}."
        )
    return _Reporter(progress)


def part(progress, start, stop):
    """``progress`` for a sub-task whose fractions 0..1 map onto ``start..stop`` (None: None)."""
    if progress is None:
        return None
    return lambda fraction, step: progress(start + (stop - start) * fraction, step)


def tick(progress, fraction, step):
    """Report to ``progress`` if there is one: the engine's cooperative progress and cancel."""
    if progress is not None:
        progress(fraction, step)


def as_image(image, name="image") -> np.ndarray:
    """Return ``image`` as an ndarray with a supported dtype, or raise a helpful error."""
    if hasattr(image, "__array_function__") and type(image).__module__.startswith("dask"):
        raise TypeError(
            f"{name} is a dask array, which this function needs in memory; segment(), fit() "
            "and KMeansModel.predict() accept dask arrays (out of core), or call .compute() "
            "first."
        )
    if isinstance(image, np.ma.MaskedArray):
        raise TypeError(
            f"{name} is a numpy masked array; pass its data and its mask separately, e.g. "
            "segment(image.data, mask=~np.ma.getmaskarray(image))."
        )
    try:
        arr = np.asarray(image)
    except ValueError as err:  # numpy >= 1.24 refuses ragged nested sequences
        raise ValueError(
            f"{name} is a ragged nested list (rows of different lengths: {err}); give a "
            "rectangular array, e.g. pad the rows to one length."
        ) from None
    check_real_dtype(arr.dtype, name)
    if arr.size == 0:
        raise ValueError(
            f"{name} is empty (shape {arr.shape}); give an image with at least one pixel."
        )
    if arr.ndim == 0:
        raise ValueError(f"{name} is a scalar; give an array of pixels.")
    if not arr.dtype.isnative:  # big-endian data (FITS, some TIFFs): compute in native order
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr


def rgb_scale(dtype) -> float:
    """Value of full intensity for an RGB image of this dtype (used for CIELAB)."""
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        return 1.0
    if dtype.kind in "ui":
        return float(np.iinfo(dtype).max)
    return 1.0


def check_rgb(rgb):
    """``rgb`` as True, False or None; raises TypeError for anything else (``"yes"``, 1, ...)."""
    if rgb is None or isinstance(rgb, bool | np.bool_):
        return None if rgb is None else bool(rgb)
    raise TypeError(
        f"rgb must be True, False or None, got {rgb!r} ({type(rgb).__name__}); pass rgb=True "
        "for RGB(A) channels on the last axis, False for other data, None to guess."
    )


def check_color_space(color_space) -> str:
    """``color_space`` if it is one of :data:`COLOR_SPACES`, else a ValueError naming them."""
    if color_space not in COLOR_SPACES:
        raise ValueError(f"color_space must be one of {COLOR_SPACES}, got {color_space!r}.")
    return color_space


def make_spec(image: np.ndarray, *, channel_axis=None, rgb=None, color_space="rgb") -> FeatureSpec:
    """Work out the channel layout of ``image`` and check the settings against it."""
    rgb = check_rgb(rgb)
    color_space = check_color_space(color_space)
    ndim = image.ndim
    if channel_axis is not None:
        if isinstance(channel_axis, bool) or not isinstance(channel_axis, int | np.integer):
            raise TypeError(f"channel_axis must be an integer or None, got {channel_axis!r}.")
        if not -ndim <= channel_axis < ndim:
            raise ValueError(
                f"channel_axis={channel_axis} is out of range for an image with {ndim} dimensions "
                f"(shape {image.shape}); use an axis in [{-ndim}, {ndim - 1}] or None for grayscale."
            )
        channel_axis = int(channel_axis) % ndim - ndim
        if ndim < 2:
            raise ValueError(
                f"channel_axis={channel_axis + ndim} leaves no spatial axis: the image is 1-D "
                f"(shape {image.shape}); pass channel_axis=None for a 1-D grayscale signal, or "
                "add an axis (image[None]) for one pixel with these channels."
            )
    if rgb is None:
        rgb = channel_axis is None and ndim >= 3 and image.shape[-1] in (3, 4)
    if rgb:
        if ndim < 2:
            raise ValueError(
                f"the image is 1-D (shape {image.shape}), but rgb=True needs an image with "
                "spatial axes and 3 or 4 channels along one more axis (e.g. shape (M, N, 3)); "
                "pass rgb=False (or None) for a 1-D grayscale signal."
            )
        if channel_axis is None:
            channel_axis = -1
        n = image.shape[channel_axis]
        if n not in (3, 4) or ndim < 2:
            raise ValueError(
                f"rgb=True needs 3 (RGB) or 4 (RGBA) channels along axis {channel_axis}, "
                f"found {n} in an image of shape {image.shape}; pass rgb=False and channel_axis "
                "for other multichannel data."
            )
        n_channels = 3
    elif channel_axis is not None:
        n_channels = image.shape[channel_axis]
    else:
        n_channels = 1
    if color_space == "lab" and not rgb:
        raise ValueError(
            "color_space='lab' needs an RGB image (3 or 4 channels, rgb=True); "
            f"this image of shape {image.shape} was read as {n_channels}-channel, non-RGB data."
        )
    return FeatureSpec(channel_axis, bool(rgb), color_space, int(n_channels))


def check_mask_dtype(dtype) -> None:
    """Raise a TypeError unless masks of this dtype can be read (bool, or integer labels)."""
    if np.dtype(dtype).kind not in "biu":
        raise TypeError(
            f"mask must be boolean or integer (True or a label > 0 = use the pixel), got dtype "
            f"{dtype}; convert it first, e.g. mask > 0.5."
        )


def mask_inside(mask):
    """Pixels a mask selects (a new boolean array): bool masks as they are; integer masks
    (a labels layer) where the value is > 0, so negative values are outside."""
    if mask.dtype.kind == "b":
        return mask.astype(bool, copy=True)
    return mask > 0


def prepare(image: np.ndarray, spec: FeatureSpec, mask=None) -> Prepared:
    """Lay ``image`` out as ``(n_pixels, n_channels)`` and find the valid pixels.

    Invalid pixels are those outside ``mask``, those with any non-finite value and, for RGBA,
    those with alpha equal to 0 (the rule of :func:`layout`). ``image`` itself is never modified.
    Raises ValueError for a mask of the wrong shape or when no pixel is valid.
    """
    inside = None
    if mask is not None:
        mask = np.asarray(mask)
        spatial_shape = spatial_shape_of(image.shape, spec)
        if mask.shape != spatial_shape:
            raise ValueError(
                f"mask has shape {mask.shape} but the image's pixels are laid out as "
                f"{spatial_shape} (image shape {image.shape}, channel axis "
                f"{spec.channel_axis}); give a mask with the image's shape without its channel axis."
            )
        check_mask_dtype(mask.dtype)
        inside = mask_inside(mask)
    pixels, valid = layout(image, spec, inside)
    n_valid = pixels.shape[0] if valid is None else int(np.count_nonzero(valid))
    if n_valid == 0:
        raise ValueError(
            f"no pixel is left to cluster: all {pixels.shape[0]} pixels are masked, non-finite "
            "(NaN or inf) or fully transparent; check the mask and the image's values."
        )
    return Prepared(
        spec, pixels, valid, spatial_shape_of(image.shape, spec), n_valid, np.dtype(image.dtype)
    )


def spatial_shape_of(shape, spec: FeatureSpec) -> tuple[int, ...]:
    """An image's shape without its channel axis."""
    if spec.channel_axis is None:
        return tuple(shape)
    ax = spec.channel_axis % len(shape)
    return tuple(shape[:ax]) + tuple(shape[ax + 1 :])


def layout(image: np.ndarray, spec: FeatureSpec, inside=None):
    """``(pixels, valid)`` of an image or of one block of it: the one pixel-layout rule.

    ``pixels`` is ``(n, n_channels)`` in the image's dtype (bool viewed as uint8, alpha removed),
    a view where the layout allows; ``valid`` a boolean vector, or None when every pixel is
    valid. A pixel is invalid outside ``inside`` (a boolean mask of the spatial shape, already
    selected by :func:`mask_inside`), when any of its values is not finite, or for RGBA when its
    alpha is 0 or not finite. Both :func:`prepare` (a whole image) and the dask path (each block)
    use it; unlike ``prepare`` it accepts a block in which no pixel is valid.
    """
    alpha = None
    if spec.channel_axis is None:
        pixels = image.reshape(-1, 1)
    else:
        moved = np.moveaxis(image, spec.channel_axis, -1)
        if spec.rgb and moved.shape[-1] == 4:
            alpha = moved[..., 3].reshape(-1)
            moved = moved[..., :3]
        if moved.shape[-1] != spec.n_channels:
            raise ValueError(
                f"expected {spec.n_channels} channels along axis {spec.channel_axis}, "
                f"found {moved.shape[-1]} (image shape {image.shape})."
            )
        pixels = moved.reshape(-1, spec.n_channels)
    if pixels.dtype.kind == "b":
        pixels = pixels.view(np.uint8)
    valid = None if inside is None else np.asarray(inside, dtype=bool).reshape(-1)
    if pixels.dtype.kind == "f" and not _all_finite(pixels):
        finite = _finite_rows(pixels)
        valid = finite if valid is None else valid & finite
    if alpha is not None:
        opaque = (alpha != 0) & (np.isfinite(alpha) if alpha.dtype.kind == "f" else True)
        if not opaque.all():
            valid = opaque if valid is None else valid & opaque
    return pixels, valid


def valid_pixels(pixels: np.ndarray, valid) -> np.ndarray:
    """The rows of ``pixels`` that are ``valid`` (all of them when ``valid`` is None)."""
    return pixels if valid is None else pixels[valid]


def _all_finite(pixels: np.ndarray) -> bool:
    """Whether every value is finite: its minimum and maximum are (NaN propagates through both,
    an infinity shows in one); two vectorised reductions, no boolean array per value."""
    if pixels.size == 0:
        return True
    return bool(np.isfinite(pixels.min()) and np.isfinite(pixels.max()))


def _finite_rows(pixels: np.ndarray) -> np.ndarray:
    """Rows whose values are all finite (column by column: fast for a short channel axis)."""
    finite = np.isfinite(pixels[:, 0])
    for c in range(1, pixels.shape[1]):
        finite &= np.isfinite(pixels[:, c])
    return finite


def to_features(values: np.ndarray, spec: FeatureSpec, dtype, centers=None) -> np.ndarray:
    """Turn pixel values ``(n, n_channels)`` of the given input dtype into feature vectors.

    Float64 (or wider) values are checked to span at most ``MAX_SPREAD`` per channel, together
    with ``centers`` (the feature-space centres they will be compared with) when given: beyond
    that, squared distances and their weighted sums overflow float64.
    """
    if spec.color_space == "lab":
        from skimage.color import rgb2lab

        rgb = values.astype(np.float64) / rgb_scale(dtype)
        return rgb2lab(rgb[:, None, :]).reshape(-1, 3)
    # float64 always: float32 squared distances overflow beyond |x| ~ 1e19, and one precision
    # for every image keeps assignments identical between paths and chunkings.
    feats = values.astype(np.float64, copy=False)
    if values.dtype.kind == "f" and values.dtype.itemsize >= 8 and feats.size:
        _check_spread(feats, centers)
    return feats


MAX_SPREAD = 1e100  # squares 1e200: sums over 1e12 weighted points and 1e6 channels stay finite
MIN_SPREAD = 1e-100  # squares 1e-200: far from float64's smallest normal number (2.2e-308)


def _check_spread(feats, centers):
    """Raise when the values (and centres) of a channel span more than ``MAX_SPREAD``, or
    those of every channel less than ``MIN_SPREAD`` but not nothing."""
    lo, hi = feats.min(axis=0), feats.max(axis=0)
    if centers is not None and len(centers):
        lo = np.minimum(lo, np.min(centers, axis=0))
        hi = np.maximum(hi, np.max(centers, axis=0))
    with np.errstate(over="ignore", invalid="ignore"):
        spread = hi - lo
    bad = ~(spread <= MAX_SPREAD)
    if bad.any():
        c = int(np.flatnonzero(bad)[0])
        scale = max(abs(float(lo[c])), abs(float(hi[c])))
        where = f" in channel {c}" if feats.shape[1] > 1 else ""
        raise ValueError(
            f"the image's values span {float(spread[c]):.3g}{where} (from {float(lo[c]):.3g} to "
            f"{float(hi[c]):.3g}), more than the {MAX_SPREAD:.0e} k-means can handle: squared "
            f"distances overflow float64. Rescale the image first, e.g. image / "
            f"{10.0 ** np.floor(np.log10(scale)):.0e} (clustering is unchanged by a common "
            "scale), or np.log10 of positive data."
        )
    widest = float(spread.max())
    if 0 < widest < MIN_SPREAD:
        c = int(np.argmax(spread))
        scale = max(abs(float(lo[c])), abs(float(hi[c])))
        raise ValueError(
            f"the image's values span only {widest:.3g} (from {float(lo[c]):.3g} to "
            f"{float(hi[c]):.3g}), less than the {MIN_SPREAD:.0e} k-means can resolve: squared "
            f"distances underflow float64. Rescale the image first, e.g. image * "
            f"{10.0 ** -np.floor(np.log10(scale)):.0e} (clustering is unchanged by a common "
            "scale)."
        )


def luminance(colors: np.ndarray, spec: FeatureSpec) -> np.ndarray:
    """Brightness used to order clusters: Rec. 709 luma for RGB, mean over channels otherwise."""
    colors = np.asarray(colors, dtype=np.float64)
    if spec.rgb:
        return colors @ _LUMA
    return colors.mean(axis=1)


def cast_colors(colors: np.ndarray, dtype) -> np.ndarray:
    """Cast cluster colours (float, input units) to the input dtype: rounded and clipped."""
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        return colors >= 0.5
    if dtype.kind in "ui":
        # Clip in the integer domain: float(info.max) of a 64-bit dtype rounds up to 2**64 or
        # 2**63, whose cast would wrap around to 0 or -2**63.
        info = np.iinfo(dtype)
        r = np.rint(np.asarray(colors, np.float64))
        high, low = r >= float(info.max), r <= float(info.min)
        out = np.where(high | low, 0.0, r).astype(dtype)
        out[high] = info.max
        out[low] = info.min
        return out
    return colors.astype(dtype)


SUMS_STEP = 1 << 16  # pixels per step of cluster_sums (cache-sized temporaries)
PIECE_BITS = 18  # a 53-bit significand in 3 pieces: a bucket's sums stay exact to 2**35 pixels


def _exactly_summed(dtype) -> bool:
    """Whether float64 sums of these values are exact (and so independent of their order):
    bool and integers of up to 16 bits, for fewer than 2**37 pixels."""
    return dtype.kind == "b" or (dtype.kind in "ui" and dtype.itemsize <= 2)


def sums_step(labels: np.ndarray, values: np.ndarray, k: int):
    """Per-chunk step of per-cluster sums that do not depend on the order of the pixels.

    ``labels`` (n,) 0..k (0 is summed too, and dropped by :func:`finish_sums`), ``values``
    (n, c). Returns ``(counts, emin, parts)``: for values whose float64 sums are exact
    (``emin`` None) ``parts`` are the sums ``(k + 1, c)``; otherwise each value's significand
    is an integer (float32: one piece of 24 bits; others: three of 18 bits), summed exactly
    per (exponent, cluster, channel, piece) in ``parts`` ``(n_exponents, k + 1, c, pieces)``
    from exponent ``emin`` (exact up to 2**29, resp. 2**35, pixels per exponent).
    :func:`merge_sums` adds two steps; :func:`finish_sums` rounds the exact totals once.
    Non-finite values (invalid pixels, label 0) count as 0.
    """
    lab = labels.astype(np.intp, copy=False)
    counts = np.bincount(lab, minlength=k + 1).astype(np.int64)
    c = values.shape[1]
    if _exactly_summed(values.dtype):
        sums = np.zeros((k + 1, c))
        for ch in range(c):
            sums[:, ch] = np.bincount(lab, weights=values[:, ch], minlength=k + 1)
        return counts, None, sums
    single = values.dtype.kind == "f" and values.dtype.itemsize <= 4
    wide = single or values.dtype == np.float64
    split = [np.frexp(values[:, ch] if wide else values[:, ch].astype(np.float64))
             for ch in range(c)]  # fmt: skip
    for mant, exp in split:
        bad = ~np.isfinite(mant)
        if bad.any():  # NaN or inf (invalid pixels): C's frexp leaves their exponent unspecified
            mant[bad], exp[bad] = 0.0, 0
    emin = min(int(e.min(initial=0)) for _, e in split)
    n_e = max(int(e.max(initial=0)) for _, e in split) - emin + 1
    size = n_e * (k + 1)
    parts = np.zeros((n_e, k + 1, c, 1 if single else 3))
    for ch, (mant, exp) in enumerate(split):
        index = exp.astype(np.intp)
        index -= emin
        index *= k + 1
        index += lab
        if single:  # float32: the significand as one integer, |q| < 2**24
            pieces = [np.multiply(mant, 2.0**24, dtype=np.float64)]
        else:  # three integer pieces of a 53-bit significand (products by 2**j are exact)
            rest = mant * 2.0**53
            pieces = []
            for piece in (2, 1):
                top = np.trunc(rest * 2.0 ** (-PIECE_BITS * piece))
                rest -= top * 2.0 ** (PIECE_BITS * piece)
                pieces.insert(0, top)
            pieces.insert(0, rest)
        for j, q in enumerate(pieces):
            found = np.bincount(index, weights=q, minlength=size)
            parts[:, :, ch, j] = found.reshape(n_e, k + 1)
    return counts, emin, parts


def merge_sums(a, b):
    """Merge step of :func:`sums_step`: the two chunks' exact sums added."""
    counts = a[0] + b[0]
    if a[1] is None:
        return counts, None, a[2] + b[2]
    emin = min(a[1], b[1])
    n_e = max(a[1] + a[2].shape[0], b[1] + b[2].shape[0]) - emin
    parts = np.zeros((n_e, *a[2].shape[1:]))
    for _, e, p in (a, b):
        parts[e - emin : e - emin + p.shape[0]] += p
    return counts, emin, parts


def finish_sums(state):
    """Finish step of :func:`sums_step`: ``(counts (k,), sums (k, c))`` of labels 1..k, each
    sum the exact total rounded once (so the same for any chunking)."""
    counts, emin, parts = state
    if emin is None:
        return counts[1:], parts[1:]
    n_e, k1, c, pieces = parts.shape
    bits = 24 if pieces == 1 else 53  # the significand's integer: value = q * 2**(e - bits)
    scale = emin - bits + np.arange(n_e)[:, None] + PIECE_BITS * np.arange(pieces)[None, :]
    sums = np.zeros((k1 - 1, c))
    for label in range(1, k1):
        for ch in range(c):
            terms = parts[:, label, ch, :]
            nonzero = terms != 0
            sums[label - 1, ch] = math.fsum(np.ldexp(terms[nonzero], scale[nonzero]))
    return counts[1:], sums


def cluster_sums(labels: np.ndarray, values: np.ndarray, k: int):
    """Pixel counts ``(k,)`` and per-channel sums ``(k, c)`` (float64) of labels 1..k.

    ``labels`` are flat (0 for pixels left out, not counted), ``values`` the ``(n, c)`` pixel
    values. By slices of ``SUMS_STEP`` pixels; single-channel 8-bit or bool values by one joint
    histogram of (label, value) (integer counts, exact), others by :func:`sums_step`,
    :func:`merge_sums` and :func:`finish_sums`: the exact sums rounded once, so that the dask
    path, which runs the same steps on its blocks, gives the same colours to the last bit.
    """
    n, c = values.shape
    dtype = values.dtype
    joint = c == 1 and dtype.kind in "ub" and dtype.itemsize == 1 and k < 1 << 12
    span = 2 if dtype.kind == "b" else 1 << (8 * dtype.itemsize)
    counts = np.zeros(k + 1, np.int64)
    sums = np.zeros((k + 1, c))
    hist = np.zeros((k + 1) * span, np.int64) if joint else None
    state = None
    for s in range(0, n, SUMS_STEP):
        lab = labels[s : s + SUMS_STEP].astype(np.intp)
        if joint:
            lab *= span
            lab += values[s : s + SUMS_STEP, 0]
            hist += np.bincount(lab, minlength=hist.size)
            continue
        step = sums_step(lab, values[s : s + SUMS_STEP], k)
        state = step if state is None else merge_sums(state, step)
    if joint:
        table = hist.reshape(k + 1, span)
        counts = table.sum(axis=1)
        sums[:, 0] = table @ np.arange(span, dtype=np.float64)
        return counts[1:], sums[1:]
    if state is None:  # no pixel
        return counts[1:], sums[1:]
    return finish_sums(state)
