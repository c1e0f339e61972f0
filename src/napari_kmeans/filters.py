"""Feature channels: what each pixel is clustered on besides (or instead of) its raw values.

Smoothing, texture (Gabor filter-bank energies) and a filter bank of classic pixel features
(Gaussian, gradient magnitude, Laplacian of Gaussian, local standard deviation, Hessian and
structure-tensor eigenvalues), computed with scipy.ndimage and scikit-image, in float32, one
channel after another so that memory stays about (number of features + 2) x the image's float32
size. Texture is computed per 2-D plane (the last two axes) for volumes; the other filters work
in 2-D or 3-D, with a sigma per spatial axis for anisotropic data. Texture's tiles and coarse
grids are anchored to the image, so that a block told where it sits (:class:`Region`) gets the
whole image's values on its own pixels (the dask path).

Derived features are standardised (mean 0, variance 1 per feature) with statistics that a model
keeps (:class:`Standardiser`), so another image is described on the same scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Real

import numpy as np
from scipy import ndimage as ndi

from .threads import map_ordered

FILTERS = ("gaussian", "gradient", "log", "std", "hessian", "structure")
TEXTURE_FREQUENCIES = (0.05, 0.1, 0.2, 0.35)  # cycles per pixel
TEXTURE_ORIENTATIONS = 4
CHUNK_ROWS = 1 << 14  # rows per step of the standardiser (float64 temporaries in cache)
TEXTURE_WINDOW = 3.0  # wavelengths: energies are averaged over a Gaussian this wide ...
TEXTURE_MIN_WINDOW = 12.0  # ... and at least this many pixels (measured on texture mosaics)


def check_sigma(sigma, n_axes: int, name: str = "smoothing") -> tuple[float, ...]:
    """``sigma`` as one non-negative float per spatial axis (a number applies to every axis).

    >>> check_sigma(2, 3)
    (2.0, 2.0, 2.0)
    >>> check_sigma((1, 3, 3), 3)
    (1.0, 3.0, 3.0)
    """
    if isinstance(sigma, Real) and not isinstance(sigma, bool):
        values = (float(sigma),) * n_axes
    elif isinstance(sigma, Sequence) and not isinstance(sigma, str):
        if len(sigma) != n_axes:
            raise ValueError(
                f"{name} has {len(sigma)} values but the image has {n_axes} spatial axes; give "
                f"one number, or one per spatial axis ({n_axes})."
            )
        if not all(isinstance(s, Real) and not isinstance(s, bool) for s in sigma):
            raise TypeError(f"{name} must be numbers, got {sigma!r}.")
        values = tuple(float(s) for s in sigma)
    else:
        raise TypeError(f"{name} must be a number or one number per spatial axis, got {sigma!r}.")
    if not all(np.isfinite(v) and v >= 0 for v in values):
        raise ValueError(f"{name} must be finite and >= 0 (in pixels), got {sigma!r}.")
    return values


def check_filters(filters) -> tuple[tuple[str, float], ...]:
    """A filter list as ``((name, scale), ...)``, each name one of :data:`FILTERS`.

    >>> check_filters([("gaussian", 1), ("gradient", 2.0)])
    (('gaussian', 1.0), ('gradient', 2.0))
    """
    if isinstance(filters, str) or not isinstance(filters, Sequence) or not filters:
        raise TypeError(
            f"features must be 'values', 'texture' or a non-empty list of (filter, scale) "
            f"pairs, got {filters!r}; filters: {', '.join(FILTERS)}."
        )
    out = []
    for item in filters:
        if not (isinstance(item, Sequence) and len(item) == 2 and isinstance(item[0], str)):
            raise TypeError(f"each filter must be a (name, scale) pair, got {item!r}.")
        name, scale = item
        if name not in FILTERS:
            raise ValueError(f"unknown filter {name!r}; choose among {', '.join(FILTERS)}.")
        if isinstance(scale, bool) or not isinstance(scale, Real) or not (0 < scale < 1000):
            raise ValueError(
                f"the scale of {name!r} must be a number of pixels > 0, got {scale!r}."
            )
        out.append((name, float(scale)))
    return tuple(out)


def smooth(channel: np.ndarray, sigma) -> np.ndarray:
    """A channel (spatial axes only) smoothed with a Gaussian of ``sigma`` pixels per axis."""
    sigma = check_sigma(sigma, channel.ndim)
    data = np.asarray(channel, dtype=np.float32)
    return ndi.gaussian_filter(data, sigma) if any(sigma) else data.copy()


def filter_channel(channel: np.ndarray, name: str, scale: float, spacing=None):
    """The feature maps of one filter at one scale (a list: eigenvalue filters give several).

    ``spacing`` (one factor per axis, e.g. (3, 1, 1) for z sampled 3x coarser) divides the scale
    along each axis, so that the filter has the same physical size on every axis.
    """
    data = np.asarray(channel, dtype=np.float32)
    factors = np.ones(data.ndim) if spacing is None else np.asarray(spacing, float)
    sigma = tuple(scale / factors)
    if name == "gaussian":
        return [ndi.gaussian_filter(data, sigma)]
    if name == "gradient":
        return [ndi.gaussian_gradient_magnitude(data, sigma)]
    if name == "log":
        return [ndi.gaussian_laplace(data, sigma)]
    if name == "std":
        mean = ndi.gaussian_filter(data, sigma)
        square = ndi.gaussian_filter(data * data, sigma)
        return [np.sqrt(np.maximum(square - mean * mean, 0.0))]
    if name == "hessian":
        from skimage.feature import hessian_matrix, hessian_matrix_eigvals

        h = hessian_matrix(data, sigma=sigma, order="rc", use_gaussian_derivatives=False)
        return [e.astype(np.float32) for e in hessian_matrix_eigvals(h)]
    if name == "structure":
        from skimage.feature import structure_tensor, structure_tensor_eigenvalues

        st = structure_tensor(data, sigma=sigma, order="rc")
        return [e.astype(np.float32) for e in structure_tensor_eigenvalues(st)]
    raise ValueError(f"unknown filter {name!r}; choose among {', '.join(FILTERS)}.")


TEXTURE_TILE = 512  # planes are transformed in tiles of about this many pixels a side, at most
_ALIGN = 12  # tiles start on multiples of 12 pixels; the energies' grid steps are 12 / q pixels
_PREFACTOR = np.sqrt(np.log(2) / 2) * 3 / np.pi  # skimage.filters.gabor_kernel's envelope x f


@dataclass(frozen=True)
class Region:
    """Where a block of an image sits, so that filters give on its pixels the values of the
    whole image (the dask path's blocks, grown by the recipe's reach).

    ``start``: the image index of the block's first pixel on each axis; ``shape``: the image's
    shape; ``inner``: the block's pixels to compute (one slice per axis, in the block). A block
    is padded only where it ends at the image's edge (as the whole image is); elsewhere it must
    hold the neighbours' pixels that the filters read.
    """

    start: tuple
    shape: tuple
    inner: tuple

    @classmethod
    def whole(cls, shape) -> Region:
        return cls((0,) * len(shape), tuple(shape), tuple(slice(0, n) for n in shape))

    def span(self, axis: int, length: int) -> tuple[int, int, int, int, int]:
        """``(first, end, size, inner first, inner end)`` of the block on ``axis`` (negative
        from the last), in image coordinates; ``length`` is the block's length there."""
        first = self.start[axis]
        lo, hi, _ = self.inner[axis].indices(length)
        return first, first + length, self.shape[axis], first + lo, first + hi


def _check_reads(name: str, needed: tuple[int, int], block: tuple[int, int], size: int):
    """A block must hold the pixels ``needed`` (image coordinates) that are inside the image."""
    lo, hi = max(needed[0], 0), min(needed[1], size)
    if lo < block[0] or hi > block[1]:
        raise ValueError(
            f"{name} of this block reads pixels {lo}..{hi} of the image but the block holds "
            f"{block[0]}..{block[1]}: grow blocks by Recipe.depth."
        )


def gabor_energies(channel: np.ndarray, frequencies=TEXTURE_FREQUENCIES,
                   n_orientations: int = TEXTURE_ORIENTATIONS) -> list[np.ndarray]:  # fmt: skip
    """Local energy of Gabor filters over frequencies x orientations (Jain & Farrokhnia 1991).

    For each filter: the magnitude of the complex response, averaged over a Gaussian window of
    three wavelengths (at least 12 pixels), log-compressed (``log1p``). Volumes are filtered
    plane by plane (the last two axes). Returns one float32 map per filter: the
    :class:`CoarseMap` of :func:`gabor_maps`, interpolated to every pixel.
    """
    return [m.full() for m in gabor_maps(channel, frequencies, n_orientations)]


@dataclass(frozen=True)
class _Tiling:
    """The tiles of one axis of ``size`` pixels: cores of ``core`` pixels from pixel 0, each
    transformed with ``margin`` pixels of its neighbours before it, as ``length`` pixels (its
    FFT length, the same for every tile). Beyond the image's edges the pixels are its mirror
    image (``np.pad`` "reflect") over ``pad`` pixels, zeros further."""

    size: int
    core: int
    count: int
    margin: int
    length: int
    pad: int

    @classmethod
    def of(cls, size: int, margin: int) -> _Tiling:
        from scipy import fft

        tiles = -(-size // TEXTURE_TILE)
        core = _ALIGN * -(-size // (_ALIGN * tiles))  # about equal tiles on multiples of 12
        length = _ALIGN * fft.next_fast_len(-(-(core + 2 * margin + _ALIGN) // _ALIGN))
        return cls(size, core, -(-size // core), margin, length, margin + _ALIGN)

    def tile(self, position: int) -> int:
        return min(max(position, 0) // self.core, self.count - 1)

    def window(self, t: int) -> tuple[int, int]:
        start = t * self.core - self.margin
        return start, start + self.length


@dataclass(frozen=True)
class _Grid:
    """The coarse grid of one filter on one axis: points every ``12 / q`` pixels from pixel
    0 to the first at or after the last pixel (``last``); the window's radius in points."""

    q: int
    last: int
    radius: int

    def position(self, pixels: np.ndarray) -> np.ndarray:
        return pixels * float(self.q) / _ALIGN  # float64, the same numbers on every path

    def left(self, pixels: np.ndarray) -> np.ndarray:
        where = np.floor(self.position(pixels)).astype(np.intp)
        return np.clip(where, 0, self.last - 1)

    def owned(self, tiling: _Tiling, t: int) -> tuple[int, int]:
        """Grid points (first, last) that tile ``t`` gives: those in its core, and all the
        remaining ones for the last tile."""
        first = t * tiling.core * self.q // _ALIGN
        if t == tiling.count - 1:
            return first, self.last
        return first, (t + 1) * tiling.core * self.q // _ALIGN - 1


def _filters(frequencies, n_orientations):
    """``(frequency, theta, envelope sigma, q, window in pixels)`` of each Gabor filter."""
    out = []
    for frequency in frequencies:
        sigma = _PREFACTOR / frequency
        q = max(1, int(np.ceil(_ALIGN / (1.3 * sigma))))  # steps of 12 / q: 1.3 sigmas at most
        window = max(TEXTURE_WINDOW / frequency, TEXTURE_MIN_WINDOW)
        for i in range(n_orientations):
            out.append((frequency, np.pi * i / n_orientations, sigma, q, window))
    return out


def _margin(frequencies) -> int:
    """Neighbours' pixels around a tile: five envelope sigmas of the lowest frequency."""
    return _ALIGN * int(np.ceil(5 * _PREFACTOR / min(frequencies) / _ALIGN))


def gabor_reach(size=None, frequencies=TEXTURE_FREQUENCIES) -> int:
    """Pixels on either side of a block that :func:`gabor_maps` reads to give the whole
    plane's energies on it, along an axis of ``size`` pixels (None: the largest for any size).

    A pixel's energy is interpolated from grid points within the energy window's reach; each
    grid point comes from the tile that owns it, and that tile is transformed whole.
    """
    tiling = _Tiling.of(TEXTURE_TILE if size is None else int(size), _margin(frequencies))
    reach = 0.0
    for _, _, _, q, window in _filters(frequencies, 1):
        step = _ALIGN / q
        reach = max(reach, step * (2 + int(4.0 * window / step + 0.5)))
    return int(np.ceil(reach)) + tiling.length - tiling.margin


def gabor_maps(channel: np.ndarray, frequencies=TEXTURE_FREQUENCIES,
               n_orientations: int = TEXTURE_ORIENTATIONS,
               region: Region | None = None) -> list[CoarseMap]:  # fmt: skip
    """The energies of :func:`gabor_energies` on their coarse grids (:class:`CoarseMap`).

    Each plane is cut in tiles anchored to the image (:data:`TEXTURE_TILE` pixels a side at
    most, about equal), each tile transformed once with five envelope sigmas of its
    neighbours' pixels around it (an FFT shared by every filter; the image is mirrored at its
    edges). A filter's transfer function (the Fourier transform of
    ``skimage.filters.gabor_kernel``) is a Gaussian centred on its frequency, negligible (below
    ``exp(-4.5)``) beyond three of its standard deviations: only the box of frequencies within
    them is kept, folded onto as many frequencies as a grid of points every ``12 / q`` pixels
    has, and its inverse FFT gives the response's magnitude exactly at those points (the
    response shifted to frequency 0, sampled there). The grid is anchored to the image's
    pixel 0, and each grid point comes from the tile whose core holds it. The window and the
    log are applied on that grid; the map is interpolated (linearly) to the pixels only when
    they are read: the energy is smooth on the scale of its window, which spans several grid
    steps. Low frequencies cost little this way (the lowest filter's grid is 12 times coarser
    than the image on each axis), and no full-size map is made.

    With a ``region`` (the block's place in its image), the block's own pixels get the whole
    image's energies, bit for bit: the same tiles are transformed (the block must hold the
    pixels of :func:`gabor_reach` around its own), the same grid points smoothed.
    """
    data = np.asarray(channel, dtype=np.float32)
    region = Region.whole(data.shape) if region is None else region
    lead = data.shape[:-2]
    planes = data[(*region.inner[:-2], slice(None), slice(None))].reshape(-1, *data.shape[-2:])
    spans = [region.span(a, data.shape[a]) for a in (-2, -1)]
    filters = _filters(frequencies, n_orientations)
    tilings = [_Tiling.of(span[2], _margin(frequencies)) for span in spans]
    grids, needed, reads = _plan(filters, spans)
    tiles = _tiles_needed(tilings, grids, needed)
    boxes = [_gabor_box(f, theta, sigma, q, tilings) for f, theta, sigma, q, _ in filters]
    energies = [[] for _ in filters]
    for plane in planes:
        padded, origin = _padded_plane(plane, spans, tilings)
        coarse = [np.empty([b - a + 1 for a, b in p], np.float32) for p in needed]
        for tr in tiles[0]:
            for tc in tiles[1]:
                spectrum = _tile_spectrum(padded, origin, tilings, (tr, tc), spans)
                for m, box in enumerate(boxes):
                    _tile_energy(spectrum, box, tilings, (tr, tc), grids[m], needed[m], coarse[m])
        for m, (_, _, _, q, window) in enumerate(filters):
            energy = ndi.gaussian_filter(coarse[m], window * q / _ALIGN, mode="reflect")
            (r0, r1), (c0, c1) = reads[m]
            (n0, _), (m0, _) = needed[m]
            energy = energy[r0 - n0 : r1 - n0 + 1, c0 - m0 : c1 - m0 + 1]
            energies[m].append(np.log1p(energy))
    shape = tuple(len(range(*s.indices(n))) for s, n in zip(region.inner[:-2], lead, strict=True))
    shape += tuple(hi - lo for _, _, _, lo, hi in spans)
    return [CoarseMap(energies[m], _interpolation(spans, grids[m], reads[m]), shape)
            for m in range(len(filters))]  # fmt: skip


def _plan(filters, spans):
    """Per filter: its grid on each axis, the grid points to compute (those the block's pixels
    are interpolated from, and the window's radius around them) and those kept."""
    grids, needed, reads = [], [], []
    for _, _, _, q, window in filters:
        axes, points, kept = [], [], []
        for _, _, size, lo, hi in spans:
            grid = _Grid(q, max(-(-(size - 1) * q // _ALIGN), 1),
                         int(4.0 * window * q / _ALIGN + 0.5))  # fmt: skip
            left = grid.left(np.array([lo, hi - 1]))
            axes.append(grid)
            kept.append((int(left[0]), int(left[1]) + 1))
            points.append((max(0, kept[-1][0] - grid.radius),
                           min(grid.last, kept[-1][1] + grid.radius)))  # fmt: skip
        grids.append(axes)
        needed.append(points)
        reads.append(kept)
    return grids, needed, reads


def _tiles_needed(tilings, grids, needed):
    """Per axis: the range of tiles that own a grid point to compute."""
    out = []
    for a, tiling in enumerate(tilings):
        pairs = list(zip(needed, grids, strict=True))
        first = min(tiling.tile(p[a][0] * _ALIGN // g[a].q) for p, g in pairs)
        last = max(tiling.tile(p[a][1] * _ALIGN // g[a].q) for p, g in pairs)
        out.append(range(first, last + 1))
    return out


def _interpolation(spans, grids, reads):
    """Per axis: the left grid point (among those kept) and weight of each of the block's
    pixels, computed from image coordinates (the same numbers on every block)."""
    out = []
    for (_, _, _, lo, hi), grid, (first, _) in zip(spans, grids, reads, strict=True):
        pixels = np.arange(lo, hi)
        left = grid.left(pixels)
        out.append((left - first, (grid.position(pixels) - left).astype(np.float32)))
    return out


def _padded_plane(plane, spans, tilings):
    """The block's plane mirrored where it ends at the image's edges, and the image index of
    its first pixel on each axis."""
    pad, origin = [], []
    for (first, end, size, _, _), tiling in zip(spans, tilings, strict=True):
        before = tiling.pad if first == 0 else 0
        pad.append((before, tiling.pad if end == size else 0))
        origin.append(first - before)
    return np.pad(plane, pad, mode="reflect"), origin


def _tile_spectrum(padded, origin, tilings, tile, spans):
    """The FFT of one tile (its window of the mirrored image, zeros beyond the mirror)."""
    from scipy import fft

    cut = []
    for a, (tiling, t, o) in enumerate(zip(tilings, tile, origin, strict=True)):
        start, stop = tiling.window(t)
        first, end, size, _, _ = spans[a]
        _check_reads("the texture", (start, stop), (first, end), size)
        stop = min(stop, size + tiling.pad)  # zeros beyond the mirror: the FFT's own padding
        cut.append(slice(start - o, stop - o))
    shape = tuple(t.length for t in tilings)
    return fft.fft2(padded[tuple(cut)], shape, workers=-1).astype(np.complex64, copy=False)


def _gabor_box(frequency, theta, sigma, q, tilings):
    """Per axis: ``(spectrum bins, first bin, grid size, transfer)`` of one filter's box, the
    bins within three standard deviations of its centre, and the 2-D transfer on the box."""
    reach = 3 / (2 * np.pi * sigma)  # three standard deviations of the transfer function
    centre = (frequency * np.sin(theta), frequency * np.cos(theta))  # (rows, columns)
    axes = []
    for c, tiling in zip(centre, tilings, strict=True):
        n = tiling.length
        bins = np.arange(int(np.ceil((c - reach) * n)), int(np.floor((c + reach) * n)) + 1)
        transfer = np.exp(-2 * np.pi**2 * sigma**2 * (bins / n - c) ** 2)
        axes.append((bins % n, int(bins[0]), n * q // _ALIGN, transfer))
    transfer = (axes[0][3][:, None] * axes[1][3][None, :]).astype(np.float32)
    return axes, transfer


def _fold(spectrum, box) -> np.ndarray:
    """One filter's box of ``spectrum`` times its transfer, its bins summed modulo the grid's
    size on each axis: the spectrum of the response sampled at the grid's points."""
    axes, transfer = box
    out = np.zeros([size for _, _, size, _ in axes], np.complex64)
    parts = []
    for bins, first, size, _ in axes:  # runs of consecutive bins that land on consecutive ones
        runs, at = [], 0
        while at < bins.size:
            to = (first + at) % size
            take = min(size - to, bins.size - at)
            runs.append((slice(at, at + take), slice(to, to + take)))
            at += take
        parts.append(runs)
    for rsrc, rdst in parts[0]:
        for csrc, cdst in parts[1]:
            values = spectrum[np.ix_(axes[0][0][rsrc], axes[1][0][csrc])]
            values *= transfer[rsrc, csrc]
            out[rdst, cdst] += values
    return out


def _tile_energy(spectrum, box, tilings, tile, grids, needed, out):
    """One filter's response magnitude at the needed grid points that ``tile`` owns, into
    ``out`` (the needed points)."""
    from scipy import fft

    src, dst = [], []
    for tiling, t, grid, (lo, hi) in zip(tilings, tile, grids, needed, strict=True):
        own = grid.owned(tiling, t)
        a, b = max(own[0], lo), min(own[1], hi)
        if a > b:
            return
        zero = (t * tiling.core - tiling.margin) * grid.q // _ALIGN  # the tile's first point
        src.append(slice(a - zero, b - zero + 1))
        dst.append(slice(a - lo, b - lo + 1))
    response = fft.ifft2(_fold(spectrum, box), workers=-1, overwrite_x=True)[tuple(src)]
    energy = np.abs(response).astype(np.float32, copy=False)
    energy *= np.float32((grids[0].q / _ALIGN) * (grids[1].q / _ALIGN))  # the inverse FFT's 1/n
    out[tuple(dst)] = energy


def smooth_wide_reach(sigma: float) -> int:
    """Pixels on either side of a block that :func:`smooth_wide` reads along the plane's
    axes to give the whole plane's values on it."""
    step = max(1, int(sigma // 4)) | 1
    rest = np.sqrt(max(sigma**2 - (step**2 - 1) / 12, 0.0)) / step
    return max(step * (3 + int(4.0 * rest + 0.5)), int(4.0 * sigma + 0.5))


def smooth_wide(channel: np.ndarray, sigma: float, region: Region | None = None):
    """A Gaussian of ``sigma`` pixels (at least 8) on every axis, kept on a coarser grid.

    Each plane (the last two axes) is averaged over blocks of ``step`` x ``step`` pixels (odd,
    about sigma / 4) anchored to the image, and the block means are smoothed by the rest of the
    Gaussian (the variance of the block subtracted), after mirroring four sigmas of pixels at
    the plane's edges (as ``gaussian_filter`` does); the other axes at full resolution. Read as
    a :class:`CoarseMap` (linear interpolation): within about 1 % of the image's range of
    ``smooth(channel, sigma)``, for a fraction of the work. Planes smaller than four blocks are
    smoothed as they are (an array). With a ``region``, the block's own pixels get the whole
    image's values, bit for bit (the block holds :func:`smooth_wide_reach` pixels around them).
    """
    data = np.asarray(channel, dtype=np.float32)
    region = Region.whole(data.shape) if region is None else region
    step = max(1, int(sigma // 4)) | 1
    if data.ndim < 2 or min(region.shape[-2:]) < 4 * step:
        return smooth(data, sigma)[region.inner]
    margin = step * int(np.ceil(4 * sigma / step))  # mirrored pixels, as gaussian_filter's
    rest = np.sqrt(max(sigma**2 - (step**2 - 1) / 12, 0.0)) / step
    radius = int(4.0 * rest + 0.5)
    cut, pad, grid, kept = [], [], [], []
    for a in (-2, -1):
        first, end, size, lo, hi = region.span(a, data.shape[a])
        last = -(-(size + 2 * margin) // step) - 1  # the last block (mirror, then its rest)
        where = (np.arange(lo, hi) + margin - (step - 1) // 2) / step
        left = np.clip(np.floor(where).astype(np.intp), 0, last - 1)
        k0 = max(0, int(left[0]) - radius)
        k1 = min(last, int(left[-1]) + 1 + radius)
        start, stop = -margin + k0 * step, -margin + (k1 + 1) * step  # image pixels read
        _check_reads("smooth_wide", (start, stop), (first, end), size)
        pad.append((max(-start, 0), max(stop - size, 0)))
        cut.append(slice(max(start, 0) - first, min(stop, size) - first))
        grid.append((left - int(left[0]), (where - left).astype(np.float32)))
        kept.append(slice(int(left[0]) - k0, int(left[-1]) + 2 - k0))
    padded = np.pad(data[(..., *cut)], [(0, 0)] * (data.ndim - 2) + pad, mode="symmetric")
    rows, cols = (n // step for n in padded.shape[-2:])
    blocks = padded.reshape(*padded.shape[:-2], rows, step, cols, step)
    small = blocks[..., 0].copy()  # sums in a fixed order: the same numbers on every block
    for j in range(1, step):
        small += blocks[..., j]
    total = small[..., 0, :].copy()
    for i in range(1, step):
        total += small[..., i, :]
    total /= np.float32(step * step)
    small = ndi.gaussian_filter(total, [sigma] * (data.ndim - 2) + [rest, rest])
    small = small[(*region.inner[:-2], kept[0], kept[1])]
    shape = small.shape[:-2] + tuple(len(g[0]) for g in grid)
    planes = list(small.reshape(-1, *small.shape[-2:]))
    return CoarseMap(planes, grid, shape)


class CoarseMap:
    """A map of 2-D planes kept on coarse grids, interpolated linearly to pixels when read.

    ``planes`` holds each plane's grid; ``grid`` the interpolation (left grid points and
    weights) of the rows and of the columns; ``shape`` the map's full shape (the last two axes
    the plane's). ``m[start:stop]`` gives the pixels ``start`` to ``stop`` of the flattened map
    (each row interpolated from its own two grid rows: the values do not depend on the runs
    read); :meth:`full` the whole map.
    """

    def __init__(self, planes, grid, shape):
        self.planes, self.grid, self.shape = planes, grid, tuple(shape)
        self.size = int(np.prod(self.shape))

    def __getitem__(self, run: slice) -> np.ndarray:
        start, stop, _ = run.indices(self.size)
        rows, cols = self.shape[-2:]
        (rlo, rw), (clo, cw) = self.grid
        out = np.empty(max(stop - start, 0), np.float32)
        at = start
        while at < stop:  # row by row range within one plane at a time
            p, pix = divmod(at, rows * cols)
            r0, r1 = pix // cols, min(rows, -(-(pix + stop - at) // cols))
            grid = self.planes[p]
            top = grid[rlo[r0:r1]]
            part = grid[rlo[r0:r1] + 1] - top  # rows first, on the coarse columns
            part *= rw[r0:r1, None]
            part += top
            # then the columns: the steps between grid columns taken on the grid (the same
            # numbers as between the pixels' two grid columns), one gather each
            wide = np.take(np.subtract(part[:, 1:], part[:, :-1]), clo, axis=1)
            wide *= cw
            wide += np.take(part, clo, axis=1)
            flat = wide.reshape(-1)[pix - r0 * cols :]
            take = min(flat.size, stop - at)
            out[at - start : at - start + take] = flat[:take]
            at += take
        return out

    def full(self) -> np.ndarray:
        return self[0 : self.size].reshape(self.shape)


def flat_map(feature):
    """A feature map (an array or a :class:`CoarseMap`) as a flat sequence to slice runs of."""
    return feature if isinstance(feature, CoarseMap) else np.asarray(feature).reshape(-1)


@dataclass(frozen=True)
class Standardiser:
    """Mean and standard deviation of each feature: features -> (features - mean) / std."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, features: np.ndarray, valid=None, threads: int = 1) -> Standardiser:
        """Statistics of ``(n, f)`` features over the ``valid`` rows (all when None).

        One pass over cache-sized row slices in float64: sums of the deviations from the first
        valid row and of their squares (so that a constant feature has exactly no variance and
        large offsets do not cancel), no float64 copy of the whole table. With ``threads``, the
        slices' sums are computed side by side and added in slice order: the same numbers.
        """
        n, f = features.shape
        total, square, count = np.zeros(f), np.zeros(f), 0
        if valid is None:
            pilot = features[0].astype(np.float64) if n else None
        else:
            pilot = features[int(np.argmax(valid))].astype(np.float64) if valid.any() else None
        if pilot is None:
            return cls(np.zeros(f), np.ones(f))

        def sums(s):
            rows = features[s : s + CHUNK_ROWS]
            if valid is not None:
                rows = rows[valid[s : s + CHUNK_ROWS]]
            if rows.shape[0] == 0:
                return None
            dev = rows.astype(np.float64)
            dev -= pilot
            return dev.sum(axis=0), np.einsum("ij,ij->j", dev, dev), rows.shape[0]

        for found in map_ordered(sums, range(0, n, CHUNK_ROWS), threads):
            if found is not None:
                total += found[0]
                square += found[1]
                count += found[2]
        shift = total / count
        std = np.sqrt(np.maximum(square / count - shift * shift, 0.0))
        std[~(std > 0)] = 1.0  # a constant feature stays 0 rather than dividing by 0
        return cls(pilot + shift, std)

    def apply(self, features: np.ndarray, inplace: bool = False, threads: int = 1) -> np.ndarray:
        """``(features - mean) / std`` as float32, in float32 by cache-sized row slices (into
        ``features`` itself when ``inplace`` and it is float32; ``threads`` at a time)."""
        reuse = inplace and features.dtype == np.float32
        out = features if reuse else np.empty(features.shape, np.float32)
        mean = self.mean.astype(np.float32)
        scale = (1.0 / self.std).astype(np.float32)

        def scaled(s):
            part = out[s : s + CHUNK_ROWS]
            np.subtract(features[s : s + CHUNK_ROWS], mean, out=part, casting="unsafe")
            part *= scale

        for _ in map_ordered(scaled, range(0, features.shape[0], CHUNK_ROWS), threads):
            pass
        return out

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, data) -> Standardiser:
        try:
            mean = np.array(data["mean"], dtype=np.float64)
            std = np.array(data["std"], dtype=np.float64)
        except (KeyError, TypeError, ValueError):
            raise ValueError("the standardisation must have 'mean' and 'std' lists.") from None
        if mean.shape != std.shape or mean.ndim != 1 or not np.all(std > 0):
            raise ValueError("the standardisation's 'mean' and 'std' must match, std > 0.")
        return cls(mean, std)
