"""Order-independent, seeded samples of pixels that do not compress.

A sample drawn by pixel position would change when the pixels are permuted or chunked
differently. Here a pixel is kept according to a seeded 64-bit hash of its *value*: every copy of
a value is kept or dropped together, so the sample depends only on the multiset of values and the
seed. A value kept this way stands for its copies with weight ``1 / p``.

A value repeated many times (a saturated colour, a fill value) would then be all in or all out,
which is too coarse. Such values are found first, from hash-bucket counts, and enter the sample
with their exact pixel counts instead.
"""

from __future__ import annotations

import numpy as np

from .compress import CHUNK
from .features import tick

SAMPLE_SIZE = 1 << 17  # expected number of sampled pixels for images that do not compress
# Single-channel images are fitted on all their distinct values up to this many, beyond on the
# sample (in memory and on dask alike, so that both give the same result).
DISTINCT_CAP = 1 << 22
_BUCKET_BITS = 20
_MIX = np.uint64(0x9E3779B97F4A7C15)
_MIX2 = np.uint64(0xBF58476D1CE4E5B9)


def hash_values(pixels: np.ndarray, seed: int) -> np.ndarray:
    """A seeded 64-bit hash of each row of ``pixels`` (of its bytes, eight at a time)."""
    n = pixels.shape[0]
    row = np.ascontiguousarray(pixels).view(np.uint8).reshape(n, -1)
    if row.shape[1] % 8:
        row = np.concatenate([row, np.zeros((n, 8 - row.shape[1] % 8), np.uint8)], axis=1)
    words = row.view(np.uint64)
    h = np.full(n, np.uint64((seed * 0x2545F4914F6CDD1D + 1) % (1 << 64)))
    with np.errstate(over="ignore"):
        for w in range(words.shape[1]):
            h ^= words[:, w]
            h *= _MIX
            h ^= h >> np.uint64(31)
        h *= _MIX2
        h ^= h >> np.uint64(29)
    return h


def _chunks(pixels, valid):
    for s in range(0, pixels.shape[0], CHUNK):
        part = pixels[s : s + CHUNK]
        yield (part if valid is None else part[valid[s : s + CHUNK]])


def _group(values, hashes):
    """Distinct rows of ``values`` (ordered by hash, which is canonical) and their counts.

    Equal rows have equal hashes; two different rows sharing a 64-bit hash would be merged,
    which for the at most a few hundred thousand sampled rows has a probability below 1e-8.
    """
    _, first, counts = np.unique(hashes, return_index=True, return_counts=True)
    return values[first], counts


def _heavy_values(pixels, valid, seed, hot, shift, heavy_min):
    """Values seen at least ``heavy_min`` times among pixels in hot hash buckets.

    Counted chunk by chunk (distinct hashes per chunk, merged at the end) so that an image made
    mostly of one value is never copied whole. Returns values, exact counts and hashes.
    """
    vals, hashes, counts = [], [], []
    for part in _chunks(pixels, valid):
        h = hash_values(part, seed)
        sel = np.flatnonzero(hot[(h >> shift).astype(np.intp)])
        uh, first, c = np.unique(h[sel], return_index=True, return_counts=True)
        vals.append(part[sel[first]])
        hashes.append(uh)
        counts.append(c)
    hashes = np.concatenate(hashes)
    uh, first, inverse = np.unique(hashes, return_index=True, return_inverse=True)
    total = np.bincount(inverse, weights=np.concatenate(counts))
    big = total >= heavy_min
    return np.concatenate(vals)[first[big]], total[big], uh[big]


def hash_sample(pixels, valid, n_valid, seed, size=SAMPLE_SIZE, progress=None):
    """A weighted sample ``(values, weights)`` of the valid pixels; weights sum to about n_valid.

    When there are at most ``size`` valid pixels, all of them are returned, grouped, with exact
    counts, and the third return value is True (the sample is the whole image).
    ``progress(fraction, step)`` is called after each chunk of pixels.
    """
    if n_valid <= size:
        vals = np.concatenate(list(_chunks(pixels, valid)))
        vals, counts = _group(vals, hash_values(vals, seed))
        return vals, counts.astype(np.float64), True
    p = size / n_valid
    threshold = np.uint64(min(int(p * 2.0**64), (1 << 64) - 1))
    n_buckets = 1 << _BUCKET_BITS
    heavy_min = max(16, int(4 / p))
    shift = np.uint64(64 - _BUCKET_BITS)

    kept, kept_h = [], []
    buckets = np.zeros(n_buckets, np.int64)
    for i, part in enumerate(_chunks(pixels, valid)):
        tick(progress, 0.8 * i * CHUNK / pixels.shape[0], "sampling pixels")
        h = hash_values(part, seed)
        buckets += np.bincount((h >> shift).astype(np.intp), minlength=n_buckets)
        sel = h < threshold
        kept.append(part[sel])
        kept_h.append(h[sel])
    kept = np.concatenate(kept)
    kept_h = np.concatenate(kept_h)

    hot = buckets >= heavy_min
    heavy_vals = np.zeros((0, pixels.shape[1]), pixels.dtype)
    heavy_counts = np.zeros(0, np.float64)
    if hot.any():
        tick(progress, 0.8, "counting frequent values")
        heavy_vals, heavy_counts, heavy_h = _heavy_values(
            pixels, valid, seed, hot, shift, heavy_min
        )
        drop = np.isin(kept_h, heavy_h)
        kept = kept[~drop]
        kept_h = kept_h[~drop]
    vals, counts = _group(kept, kept_h)
    values = np.concatenate([vals, heavy_vals])
    weights = np.concatenate([counts / p, heavy_counts])
    return values, weights, False
