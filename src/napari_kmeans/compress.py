"""Compression of pixels into weighted distinct values.

Integer images whose values fit in at most 24 bits per pixel (8-bit gray, 8-bit RGB, up to three
8-bit channels, 16-bit gray) and float16 gray images have few possible values. Each pixel is
encoded as one integer *code*; a histogram of the codes (``np.bincount``) gives every distinct value
with its pixel count. The solvers then run on these weighted points, whose number does not grow
with the image, and labels go back to every pixel through one look-up table indexed by code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# pixels per chunk for passes over the whole image (labelling, look-ups): a 4-channel chunk in
# float64 is 16 MB
CHUNK = 1 << 19
HIST_CHUNK = 1 << 24  # pixels per bincount call: fewer calls, each allocating n_codes counters


@dataclass(frozen=True)
class Codec:
    """Maps a pixel's channel values to an integer code in ``[0, n_codes)`` and back."""

    dtype: np.dtype  # dtype of the pixel values (bool already viewed as uint8)
    n_channels: int
    bits: int  # bits per channel

    @property
    def n_codes(self) -> int:
        return 1 << (self.bits * self.n_channels)

    def encode(self, pixels: np.ndarray) -> np.ndarray:
        """Codes for ``(n, n_channels)`` pixels: uint16 for one 16-bit channel, else intp.

        Several 8-bit channels are packed little-endian: ``ch0 | ch1 << 8 | ch2 << 16``.
        """
        unsigned = np.dtype(f"u{self.dtype.itemsize}")
        if self.n_channels == 1:
            codes = pixels[:, 0].view(unsigned)
            if self.dtype.kind == "f":  # -0.0 and +0.0 are one value: give them one code
                return np.where(codes == 0x8000, np.uint16(0), codes)
            if self.dtype.kind == "i":
                codes = codes ^ self._sign()
            # 8-bit codes become intp once here: np.bincount and np.take would each convert them
            # (16-bit codes stay 2 bytes a pixel, converted chunk by chunk, to bound memory)
            return codes.astype(np.intp) if self.bits == 8 else codes
        codes = _pack_bytes(pixels.view(np.uint8))
        if self.dtype.kind == "i":
            codes ^= self._sign()
        return codes

    def _sign(self):
        """The sign bit of every channel: XOR with it maps signed values to ordered codes."""
        one = sum(1 << (self.bits * c + self.bits - 1) for c in range(self.n_channels))
        return np.dtype(np.uint32 if self.n_channels > 1 else f"u{self.dtype.itemsize}").type(one)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Pixel values ``(m, n_channels)`` for the given codes."""
        codes = np.asarray(codes)
        if self.dtype.kind == "i":
            codes = codes ^ self._sign()
        unsigned = np.dtype(f"u{self.dtype.itemsize}")
        out = np.empty((codes.size, self.n_channels), unsigned)
        for c in range(self.n_channels):
            out[:, c] = (codes >> (self.bits * c)) & ((1 << self.bits) - 1)
        return out.view(self.dtype)


def _pack_bytes(px: np.ndarray) -> np.ndarray:
    """Pack ``(n, c)`` bytes (c = 2 or 3) into intp codes, ``px[:, 0]`` in the lowest byte."""
    n, c = px.shape
    mask = (1 << (8 * c)) - 1
    if px.flags.c_contiguous and n >= 2:
        # Read 4 bytes at every pixel start (an unaligned, overlapping uint32 view of the rows)
        # and mask off the bytes of the next pixel: one pass, no per-channel temporaries.
        rows = np.ndarray((n - 1,), dtype="<u4", buffer=px.reshape(-1), strides=(c,))
        out = np.empty(n, np.intp)  # intp: what np.bincount and np.take index with
        np.bitwise_and(rows, mask, out=out[:-1])
        out[-1] = sum(int(px[-1, i]) << (8 * i) for i in range(c))
        return out
    out = px[:, c - 1].astype(np.intp)
    for i in range(c - 2, -1, -1):
        out <<= 8
        out |= px[:, i]
    return out


def codec_for(dtype, n_channels: int) -> Codec | None:
    """The codec for pixels of this dtype and channel count, or None if they do not compress."""
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        dtype = np.dtype(np.uint8)
    if dtype.kind in "ui" and dtype.itemsize == 1 and n_channels <= 3:
        return Codec(dtype, n_channels, 8)
    if dtype.kind in "uif" and dtype.itemsize == 2 and n_channels == 1:
        return Codec(dtype, 1, 16)
    return None


@dataclass(frozen=True, eq=False)
class Support:
    """Weighted pixel values to fit a model on, from the in-memory path or the dask path alike.

    Attributes
    ----------
    values : (m, n_channels) ndarray
        Pixel values in the pixels' dtype (bool viewed as uint8): every distinct valid value, or
        a sample.
    weights : (m,) ndarray of float64
        Pixels each value stands for (exact counts unless sampled).
    covers_all : bool
        True when ``values`` are all the distinct valid values with exact counts.
    n_valid : int
        Valid pixels.
    codec : Codec or None
        Set when the values were found through codes: ``distinct`` are then their codes.
    distinct : (m,) ndarray or None
        Code of each value (sorted), when ``codec`` is set.
    codes : (n_pixels,) ndarray or None
        Every pixel's code, kept by the in-memory path to label through one look-up table;
        None on dask (each block encodes its own pixels).
    grid : Grid or None
        Set for single-channel data summarised on a grid (:func:`grid_support`): ``values``
        are the means of the occupied bins, ``distinct`` their bin indices.
    """

    values: np.ndarray
    weights: np.ndarray
    covers_all: bool
    n_valid: int
    codec: Codec | None = None
    distinct: np.ndarray | None = None
    codes: np.ndarray | None = None
    grid: Grid | None = None

    @property
    def counts(self) -> np.ndarray:
        """Pixel counts as int64 (meaningful when ``covers_all``)."""
        return self.weights.astype(np.int64)


Compressed = Support  # the in-memory name of a support found through codes


# -- per-chunk steps, merges and finishes (the in-memory path runs them on its chunks, the dask
#    path on its blocks; both merge with the same functions) ------------------------------------


def count_codes(codes: np.ndarray, valid: np.ndarray | None, n_codes: int):
    """Step: ``(distinct codes, counts)`` of the valid pixels of one chunk.

    A histogram (``np.bincount`` over ``HIST_CHUNK`` codes at a time) when there are enough
    pixels for the ``n_codes`` counters; sorting (``np.unique``) otherwise.
    """
    if codes.size * 4 < n_codes:  # few pixels for many possible codes: sorting is cheaper
        return np.unique(codes if valid is None else codes[valid], return_counts=True)
    hist = None
    for s in range(0, codes.size, HIST_CHUNK):
        part = codes[s : s + HIST_CHUNK]
        if valid is not None:
            part = part[valid[s : s + HIST_CHUNK]]
        counts = np.bincount(part, minlength=n_codes)
        if hist is None:
            hist = counts
        else:
            hist += counts
    distinct = np.flatnonzero(hist.astype(bool))
    return distinct, hist[distinct]


def distinct_values(values: np.ndarray, cap: int):
    """Step: ``(distinct values, counts)`` of one chunk of single-channel valid values, or None
    when there are more than ``cap``. Integers of a small range are counted by a histogram."""
    values = values.reshape(-1)
    if values.dtype.kind in "iu" and values.size:
        lo, hi = values.min(), values.max()
        if int(hi) - int(lo) < max(values.size, 1 << 16):  # small range: a histogram is cheaper
            hist = np.bincount(np.subtract(values, lo, dtype=values.dtype).astype(np.intp))
            offsets = np.flatnonzero(hist)
            found = offsets.astype(values.dtype) + lo, hist[offsets]
            return found if offsets.size <= cap else None
    uniq, counts = np.unique(values, return_counts=True)
    return (uniq, counts) if uniq.size <= cap else None


def count_values(values: np.ndarray, codec: Codec):
    """Step: ``(distinct codes, counts)`` of one chunk of valid pixel values."""
    return count_codes(codec.encode(values), None, codec.n_codes)


def present_codes(codes: np.ndarray, valid: np.ndarray | None, n_codes: int) -> np.ndarray:
    """The distinct codes among the valid pixels (sorted), without counting them."""
    present = np.zeros(n_codes, bool)
    for s in range(0, codes.size, CHUNK):
        part = codes[s : s + CHUNK]
        present[part if valid is None else part[valid[s : s + CHUNK]]] = True
    return np.flatnonzero(present)


def merge_counts(a, b):
    """Merge two ``(distinct keys, counts)`` groupings (keys 1-D, or rows of a 2-D array)."""
    keys = np.concatenate([a[0], b[0]])
    counts = np.concatenate([a[1], b[1]])
    uniq, inv = np.unique(keys, axis=0 if keys.ndim == 2 else None, return_inverse=True)
    summed = np.bincount(inv.reshape(-1), weights=counts, minlength=uniq.shape[0])
    return uniq, summed.astype(np.int64)


def merge_distinct(a, b, *, cap):
    """Merge two :func:`distinct_values` results (None: more than ``cap`` values)."""
    if a is None or b is None:
        return None
    merged = merge_counts(a, b)
    return merged if merged[0].size <= cap else None


def codes_support(codec: Codec, distinct, counts, codes=None) -> Support:
    """Finish: the support of merged :func:`count_codes` results (non-finite float16 dropped)."""
    values = codec.decode(distinct)
    if values.dtype.kind == "f":  # float16: drop NaN/inf codes (they are masked already)
        keep = np.isfinite(values).all(axis=1)
        distinct, values, counts = distinct[keep], values[keep], counts[keep]
    counts = np.asarray(counts)
    return Support(
        values, counts.astype(np.float64), True, int(counts.sum()), codec, distinct, codes
    )


def distinct_support(found) -> Support | None:
    """Finish: the support of merged :func:`distinct_values` results (None stays None)."""
    if found is None:
        return None
    values, counts = found
    return Support(values[:, None], counts.astype(np.float64), True, int(counts.sum()))


def compress(pixels: np.ndarray, valid: np.ndarray | None) -> Support | None:
    """Compress ``(n, n_channels)`` pixels, or return None if their dtype does not compress.

    The support keeps every pixel's code (``codes``) to label through a look-up table.
    """
    codec = codec_for(pixels.dtype, pixels.shape[1])
    if codec is None:
        return None
    codes = codec.encode(pixels)
    distinct, counts = count_codes(codes, valid, codec.n_codes)
    return codes_support(codec, distinct, counts, codes)


def lookup(lut: np.ndarray, codes: np.ndarray, valid: np.ndarray | None, fill=0) -> np.ndarray:
    """``lut[codes]`` in chunks (bounded temporary memory), with ``fill`` where not ``valid``."""
    out = np.empty(codes.shape, lut.dtype)
    for s in range(0, codes.size, CHUNK):
        np.take(lut, codes[s : s + CHUNK], out=out[s : s + CHUNK])
    if valid is not None:
        out[~valid] = fill
    return out


# -- a fine grid over the value range of single-channel data that do not compress ---------------
#
# Sorting every pixel to find the distinct values costs O(n log n) time and several copies of
# the image. Instead, a global min/max reduction fixes a grid of GRID_BINS equal bins over the
# range; one pass counts the pixels of each bin and sums their fixed-point values. Sums of
# integers are exact, so the bins' means do not depend on the pixel order or the chunking. The
# fit (kmeans1d.refine_grid) solves the exact 1-D problem on the bins and refines it on the
# pixels near the cuts (gathered by grid_band).

GRID_MIN_PIXELS = 1 << 20  # single-channel data with more valid pixels than this use the grid
GRID_BINS = 1 << 14  # bins of the grid (the exact DP runs on the occupied ones)
GRID_CHUNK = 1 << 20  # pixels per step: float64 and intp temporaries of 8 MB each
_FIXED_BITS = 30  # fixed-point values: range / 2**30 per unit, so a chunk's sums stay < 2**53


@dataclass(frozen=True)
class Grid:
    """``bins`` equal bins over ``[lo, hi]``, the valid range of the data (float64)."""

    lo: float
    hi: float
    bins: int = GRID_BINS

    @property
    def scale(self) -> float:
        """Fixed-point units per input unit."""
        return float(1 << _FIXED_BITS) / (self.hi - self.lo) if self.hi > self.lo else 0.0

    def fixed(self, values: np.ndarray) -> np.ndarray:
        """Integer-valued float64 ``rint((v - lo) * scale)`` in ``[0, 2**30]``, per pixel."""
        r = np.subtract(values.reshape(-1), self.lo, dtype=np.float64)
        r *= self.scale
        return np.rint(r, out=r)

    def bin_of(self, fixed: np.ndarray) -> np.ndarray:
        """The bin (intp) of fixed-point values: exact, as it shifts integer-valued floats."""
        idx = np.empty(fixed.shape, np.intp)
        np.multiply(fixed, self.bins / float(1 << _FIXED_BITS), out=idx, casting="unsafe")
        return np.minimum(idx, self.bins - 1, out=idx)

    def value(self, fixed) -> np.ndarray:
        """Input values (float64) of fixed-point values (means of them, for instance)."""
        scale = self.scale
        return self.lo + (np.asarray(fixed, np.float64) / scale if scale else 0.0)


def value_range(values: np.ndarray):
    """Step: ``(n, min, max)`` of one chunk of valid single-channel values."""
    if values.size == 0:
        return 0, np.inf, -np.inf
    return values.shape[0], float(values.min()), float(values.max())


def merge_ranges(a, b):
    """Merge two :func:`value_range` results."""
    return a[0] + b[0], min(a[1], b[1]), max(a[2], b[2])


def grid_counts(values: np.ndarray, grid: Grid):
    """Step: ``(counts, fixed-point sums)`` per bin of ``grid`` (int64) for one chunk.

    Sums are of integers below ``2**30`` over at most ``GRID_CHUNK`` pixels per call: exact in
    float64, then int64, so merged sums are exact whatever the chunking.
    """
    counts = np.zeros(grid.bins, np.int64)
    sums = np.zeros(grid.bins, np.int64)
    flat = values.reshape(-1)
    for s in range(0, flat.size, GRID_CHUNK):
        r = grid.fixed(flat[s : s + GRID_CHUNK])
        idx = grid.bin_of(r)
        counts += np.bincount(idx, minlength=grid.bins)
        sums += np.bincount(idx, weights=r, minlength=grid.bins).astype(np.int64)
    return counts, sums


def merge_grid(a, b):
    """Merge two :func:`grid_counts` results."""
    return a[0] + b[0], a[1] + b[1]


def bin_values(values: np.ndarray, grid: Grid):
    """Step: ``(value of each bin or NaN, whether every bin holds one value)`` for one chunk.

    A bin's value is that of any of its pixels (-0.0 read as 0.0); the flag is True when all the
    chunk's pixels of each bin share it. Used when few bins are occupied: the data then may
    have few distinct values, which the grid then holds exactly.
    """
    rep = np.full(grid.bins, np.nan)
    single = True
    flat = values.reshape(-1)
    for s in range(0, flat.size, GRID_CHUNK):
        part = flat[s : s + GRID_CHUNK].astype(np.float64)
        part += 0.0
        idx = grid.bin_of(grid.fixed(part))
        seen = rep[idx]
        fresh = np.isnan(seen)
        rep[idx[fresh]] = part[fresh]
        single = single and bool(np.array_equal(rep[idx], part))
    return rep, single


def merge_bin_values(a, b):
    """Merge two :func:`bin_values` results."""
    both = ~np.isnan(a[0]) & ~np.isnan(b[0])
    same = a[1] and b[1] and np.array_equal(a[0][both], b[0][both])
    return np.where(np.isnan(a[0]), b[0], a[0]), same


def grid_band(values: np.ndarray, grid: Grid, bins: np.ndarray):
    """Step: ``(distinct values, counts)`` of one chunk's pixels that fall in the given bins.

    ``bins`` are sorted bin indices. Pixels are preselected by value, a little wider than the
    bins, then kept by their bin as :meth:`Grid.bin_of` computes it (the histogram's rule).
    """
    flat = values.reshape(-1)
    runs = np.split(bins, np.flatnonzero(np.diff(bins) > 1) + 1)
    width = (grid.hi - grid.lo) / grid.bins
    pick = np.zeros(flat.size, bool)
    for run in runs:
        a = grid.lo + (run[0] - 0.5) * width
        b = grid.lo + (run[-1] + 1.5) * width
        pick |= (flat >= np.float64(a)) & (flat <= np.float64(b))
    cand = flat[pick]
    keep = np.isin(grid.bin_of(grid.fixed(cand)), bins)
    return np.unique(cand[keep].astype(np.float64) + 0.0, return_counts=True)


def grid_support(grid: Grid, counts, sums, n_valid: int) -> Support:
    """Finish: the occupied bins as weighted points at their means (``grid`` set)."""
    occupied = np.flatnonzero(counts)
    mean = grid.value(sums[occupied] / counts[occupied])
    return Support(
        mean[:, None], counts[occupied].astype(np.float64), False, n_valid, grid=grid,
        distinct=occupied,
    )  # fmt: skip
