"""Feature channels: what each pixel is clustered on besides (or instead of) its raw values.

Smoothing, texture (Gabor filter-bank energies) and a filter bank of classic pixel features
(Gaussian, gradient magnitude, Laplacian of Gaussian, local standard deviation, Hessian and
structure-tensor eigenvalues), computed with scipy.ndimage and scikit-image, in float32, one
channel after another so that memory stays about (number of features + 2) x the image's float32
size. Texture is computed per 2-D plane (the last two axes) for volumes; the other filters work
in 2-D or 3-D, with a sigma per spatial axis for anisotropic data.

Derived features are standardised (mean 0, variance 1 per feature) with statistics that a model
keeps (:class:`Standardiser`), so another image is described on the same scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Real

import numpy as np
from scipy import ndimage as ndi

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


def gabor_energies(channel: np.ndarray, frequencies=TEXTURE_FREQUENCIES,
                   n_orientations: int = TEXTURE_ORIENTATIONS) -> list[np.ndarray]:  # fmt: skip
    """Local energy of Gabor filters over frequencies x orientations (Jain & Farrokhnia 1991).

    For each filter: the magnitude of the complex response, averaged over a Gaussian window of
    three wavelengths (at least 12 pixels), log-compressed (``log1p``). Volumes are filtered
    plane by plane (the last two axes). Returns one float32 map per filter: the
    :class:`CoarseMap` of :func:`gabor_maps`, interpolated to every pixel.
    """
    return [m.full() for m in gabor_maps(channel, frequencies, n_orientations)]


def gabor_maps(channel: np.ndarray, frequencies=TEXTURE_FREQUENCIES,
               n_orientations: int = TEXTURE_ORIENTATIONS) -> list[CoarseMap]:  # fmt: skip
    """The energies of :func:`gabor_energies` on their coarse grids (:class:`CoarseMap`).

    Each plane is transformed once (an FFT of the reflect-padded plane, shared by every filter).
    A filter's transfer function (the Fourier transform of ``skimage.filters.gabor_kernel``) is
    a Gaussian centred on its frequency, negligible (below ``exp(-4.5)``) beyond three of its
    standard deviations: only the box of frequencies within them is kept, and its inverse FFT,
    of the box's size, gives the response's magnitude exactly on a grid as much coarser as the
    box is smaller than the spectrum (the response shifted to frequency 0 is band-limited to the
    box). The window and the log are applied on that grid; the map is interpolated (linearly)
    to the pixels only when they are read: the energy is smooth on the scale of its window,
    which spans several grid steps. Low frequencies cost little this way (the lowest filter's
    grid is about 12 times coarser than the image on each axis), and no full-size map is made.
    """
    from scipy import fft

    data = np.asarray(channel, dtype=np.float32)
    planes = data.reshape(-1, *data.shape[-2:])
    rows, cols = planes.shape[1:]
    # the envelope's sigma of skimage.filters.gabor_kernel(frequency) (bandwidth 1 octave)
    prefactor = np.sqrt(np.log(2) / 2) * 3 / np.pi
    half = int(np.ceil(3 * prefactor / min(frequencies)))  # reflect padding: 3 sigma
    shape = (fft.next_fast_len(rows + 2 * half), fft.next_fast_len(cols + 2 * half))
    filters = []  # (window in pixels, row bins, column bins, transfer on the box)
    for frequency in frequencies:
        sigma = prefactor / frequency
        reach = 3 / (2 * np.pi * sigma)  # three standard deviations of the transfer function
        window = max(TEXTURE_WINDOW / frequency, TEXTURE_MIN_WINDOW)
        for i in range(n_orientations):
            theta = np.pi * i / n_orientations
            centre = (frequency * np.sin(theta), frequency * np.cos(theta))  # (rows, columns)
            bins = [_box(c, reach, n) for c, n in zip(centre, shape, strict=True)]
            fy, fx = (
                np.fft.fftfreq(n)[b].astype(np.float32) for n, b in zip(shape, bins, strict=True)
            )
            d2 = (fx[None, :] - centre[1]) ** 2 + (fy[:, None] - centre[0]) ** 2
            transfer = np.exp(-2 * np.pi**2 * sigma**2 * d2).astype(np.float32)
            filters.append((window, *bins, transfer))
    crops, grids = [], []
    for _, rbins, cbins, _ in filters:  # the grid points around the plane, and the weights
        crop, grid = [], []
        for n, size in zip((rows, cols), (rbins.size, cbins.size), strict=True):
            step = shape[len(crop)] / size
            first = int(np.floor(half / step))  # one grid point before the first pixel ...
            last = int(np.ceil((half + n - 1) / step)) + 1  # ... to one after the last
            crop.append(slice(first, last + 1))
            grid.append(_linear(half - first * step, step, n, last - first + 1))
        crops.append(([shape[0] / rbins.size, shape[1] / cbins.size], tuple(crop)))
        grids.append(grid)
    energies = [[] for _ in filters]
    for plane in planes:
        padded = np.pad(plane, half, mode="reflect")
        spectrum = fft.fft2(padded, shape, workers=-1).astype(np.complex64, copy=False)
        for m, (window, rbins, cbins, transfer) in enumerate(filters):
            box = spectrum[np.ix_(rbins, cbins)]
            box *= transfer
            steps, crop = crops[m]
            response = fft.ifft2(box, workers=-1, overwrite_x=True)[crop]
            energy = np.abs(response).astype(np.float32, copy=False)
            energy *= np.float32(box.size / spectrum.size)  # the inverse FFT's normalisation
            energy = ndi.gaussian_filter(energy, [window / s for s in steps], mode="reflect")
            energies[m].append(np.log1p(energy, out=energy))
    return [CoarseMap(e, g, data.shape) for e, g in zip(energies, grids, strict=True)]


def smooth_wide(channel: np.ndarray, sigma: float):
    """A Gaussian of ``sigma`` pixels (at least 8) on every axis, kept on a coarser grid.

    Each plane (the last two axes) is averaged over blocks of ``step`` x ``step`` pixels (odd,
    about sigma / 4), and the block means are smoothed by the rest of the Gaussian (the
    variance of the block subtracted), after mirroring four sigmas of pixels at the plane's
    edges (as ``gaussian_filter`` does); the other axes at full resolution. Read as a :class:`CoarseMap` (linear interpolation): within about
    1 % of the image's range of ``smooth(channel, sigma)``, for a fraction of the work. Planes
    smaller than four blocks are smoothed as they are (an array).
    """
    data = np.asarray(channel, dtype=np.float32)
    step = max(1, int(sigma // 4)) | 1
    rows, cols = data.shape[-2:]
    if data.ndim < 2 or min(rows, cols) < 4 * step:
        return smooth(data, sigma)
    margin = step * int(np.ceil(4 * sigma / step))  # mirrored pixels, as gaussian_filter's
    size = [-(-(n + 2 * margin) // step) for n in (rows, cols)]
    ends = zip(size, (rows, cols), strict=True)
    pad = [(0, 0)] * (data.ndim - 2) + [(margin, m * step - n - margin) for m, n in ends]
    padded = np.pad(data, pad, mode="symmetric")
    blocks = padded.reshape(*data.shape[:-2], size[0], step, size[1], step)
    small = blocks.mean(axis=(-3, -1), dtype=np.float32)
    rest = np.sqrt(max(sigma**2 - (step**2 - 1) / 12, 0.0)) / step
    small = ndi.gaussian_filter(small, [sigma] * (data.ndim - 2) + [rest, rest])
    planes = list(small.reshape(-1, *size))
    origin = margin - (step - 1) / 2  # the first block's centre is pixel -origin
    grid = [_linear(origin, step, n, m) for n, m in zip((rows, cols), size, strict=True)]
    return CoarseMap(planes, grid, data.shape)


def _box(centre: float, reach: float, n: int) -> np.ndarray:
    """The FFT bins (of ``n``) within ``reach`` cycles per pixel of ``centre``, as many as an
    FFT of fast length needs, in FFT order about the centre's bin (so that the inverse FFT of
    the box is the response shifted to frequency 0, sampled every ``n / size`` pixels)."""
    from scipy import fft

    size = min(fft.next_fast_len(int(np.ceil(2 * reach * n)) + 1), n)
    offsets = np.fft.fftfreq(size, 1 / size).astype(np.intp)
    return (round(centre * n) + offsets) % n


def _linear(origin: float, step: float, n: int, size: int):
    """Linear interpolation at pixels ``origin + arange(n)`` (in pixels from the first grid
    point) of ``size`` grid points ``step`` pixels apart: left points and weights."""
    where = (np.arange(n) + origin) / step
    lo = np.clip(np.floor(where).astype(np.intp), 0, size - 2)  # beyond the ends: extrapolate
    return lo, (where - lo).astype(np.float32)


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
            left = part[:, clo]
            wide = part[:, clo + 1]
            wide -= left
            wide *= cw
            wide += left
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
    def fit(cls, features: np.ndarray, valid=None) -> Standardiser:
        """Statistics of ``(n, f)`` features over the ``valid`` rows (all when None).

        One pass over cache-sized row slices in float64: sums of the deviations from the first
        valid row and of their squares (so that a constant feature has exactly no variance and
        large offsets do not cancel), no float64 copy of the whole table.
        """
        n, f = features.shape
        total, square, count = np.zeros(f), np.zeros(f), 0
        pilot = None
        for s in range(0, n, CHUNK_ROWS):
            rows = features[s : s + CHUNK_ROWS]
            if valid is not None:
                rows = rows[valid[s : s + CHUNK_ROWS]]
            if rows.shape[0] == 0:
                continue
            if pilot is None:
                pilot = rows[0].astype(np.float64)
            dev = rows.astype(np.float64)
            dev -= pilot
            total += dev.sum(axis=0)
            square += np.einsum("ij,ij->j", dev, dev)
            count += rows.shape[0]
        if pilot is None:
            return cls(np.zeros(f), np.ones(f))
        shift = total / count
        std = np.sqrt(np.maximum(square / count - shift * shift, 0.0))
        std[~(std > 0)] = 1.0  # a constant feature stays 0 rather than dividing by 0
        return cls(pilot + shift, std)

    def apply(self, features: np.ndarray, inplace: bool = False) -> np.ndarray:
        """``(features - mean) / std`` as float32, in float32 by cache-sized row slices (into
        ``features`` itself when ``inplace`` and it is float32)."""
        reuse = inplace and features.dtype == np.float32
        out = features if reuse else np.empty(features.shape, np.float32)
        mean = self.mean.astype(np.float32)
        scale = (1.0 / self.std).astype(np.float32)
        for s in range(0, features.shape[0], CHUNK_ROWS):
            part = out[s : s + CHUNK_ROWS]
            np.subtract(features[s : s + CHUNK_ROWS], mean, out=part, casting="unsafe")
            part *= scale
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
