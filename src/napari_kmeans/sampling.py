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

import functools

import numpy as np

from .compress import (
    GRID_MIN_PIXELS,
    Grid,
    Support,
    bin_values,
    distinct_support,
    distinct_values,
    grid_counts,
    grid_support,
    merge_bin_values,
    merge_distinct,
    merge_grid,
    merge_ranges,
    value_range,
)
from .features import tick
from .threads import THREADS, map_ordered

SAMPLE_SIZE = 1 << 17  # expected number of sampled pixels for images that do not compress
WIDE = 8  # beyond this many channels (feature stacks), the sample holds as many values as 8 do
CHUNK = 1 << 19  # pixels per sampling step: 64-bit hashes of 4 MB (half that in threads)
# Single-channel images are fitted on all their distinct values up to this many, beyond on the
# sample (in memory and on dask alike, so that both give the same result).
DISTINCT_CAP = 1 << 22
# With fewer occupied grid bins than this (values crowded by far outliers), the grid is too
# coarse: the distinct values are used as before (or the sample beyond DISTINCT_CAP).
GRID_MIN_OCCUPIED = 1 << 10
# hash buckets counted by the first pass: 512 kB of counters, cache-friendly; a frequent value
# (heavy_min copies) fills its bucket to at least 8 times the mean load, which a bucket of other
# values reaches very rarely (the sample does not depend on this: only how many pixels the
# second pass looks at, and whether it runs)
_BUCKET_BITS = 16
_N_BUCKETS = 1 << _BUCKET_BITS
_SHIFT = np.uint64(64 - _BUCKET_BITS)
_MIX = np.uint64(0x9E3779B97F4A7C15)
_MIX2 = np.uint64(0xBF58476D1CE4E5B9)


def hash_values(pixels: np.ndarray, seed: int) -> np.ndarray:
    """A seeded 64-bit hash of each row of ``pixels`` (of its bytes, eight at a time).

    A row's bytes, zero-padded to a multiple of 8, are read as little-endian 64-bit words. The
    words are assembled from the channels (shifted into place), without copying the padded rows.
    """
    n = pixels.shape[0]
    start = np.uint64((seed * 0x2545F4914F6CDD1D + 1) % (1 << 64))
    h = np.empty(n, np.uint64)
    # wide rows in slices that stay in cache while each word is read (rows are independent)
    step = n if pixels.shape[1] * pixels.dtype.itemsize <= 8 else _HASH_ROWS
    with np.errstate(over="ignore"):
        for s in range(0, n, step):
            part = h[s : s + step]
            part[...] = start
            for w in _words(pixels[s : s + step]):
                part ^= w
                part *= _MIX
                part ^= part >> np.uint64(31)
            part *= _MIX2
            part ^= part >> np.uint64(29)
    return h


_HASH_ROWS = 1 << 14  # rows per slice of hash_values for rows wider than 8 bytes


def _words(pixels: np.ndarray):
    """The 64-bit words of each row's bytes (zero-padded to a multiple of 8), one at a time.

    Channels of 8 bytes are words themselves; narrower channels are zero-extended and shifted
    into place: the words ``row.view("<u8")`` of the padded bytes, without the padded copy.
    """
    n, c = pixels.shape
    size = pixels.dtype.itemsize
    unsigned = np.dtype(f"<u{size}") if size in (1, 2, 4, 8) else None
    if unsigned is None:  # e.g. float128 or complex widths: fall back to the padded bytes
        row = np.ascontiguousarray(pixels).view(np.uint8).reshape(n, -1)
        if row.shape[1] % 8:
            row = np.concatenate([row, np.zeros((n, 8 - row.shape[1] % 8), np.uint8)], axis=1)
        yield from row.view("<u8").T
        return
    row_bytes = c * size
    if (pixels.flags.c_contiguous and row_bytes in (1, 2, 4)) or row_bytes % 8 == 0:
        whole = np.ascontiguousarray(pixels).view(f"<u{min(row_bytes, 8)}")
        for col in range(whole.shape[1]):
            yield whole[:, col].astype(np.uint64, copy=False)
        return
    per = 8 // size  # channels per word
    raw = pixels.view(unsigned)  # the bytes as they are in memory, read little-endian
    if per == 1:
        for ch in range(c):
            yield raw[:, ch].astype(np.uint64)
        return
    for start in range(0, c, per):
        word = raw[:, start].astype(np.uint64)
        for j in range(1, min(per, c - start)):
            part = raw[:, start + j].astype(np.uint64)
            part <<= np.uint64(8 * size * j)
            word |= part
        yield word


def threshold(p: float) -> np.uint64:
    """Values whose hash is below this are in a sample of rate ``p``."""
    return np.uint64(min(int(p * 2.0**64), (1 << 64) - 1))


def heavy_min(p: float) -> int:
    """Pixel count from which a value enters a sample of rate ``p`` with its exact count.

    ``16 / p`` copies: 16 expected copies in a sample drawn by position. Rarer values are in
    or out whole (weight ``1 / p``); counting them exactly too (from ``4 / p``) made the
    second pass group most pixels of 16-bit fluorescence (whose background values repeat a few
    hundred times each) for no measurable gain in inertia (benchmark case 11, four seeds).
    """
    return max(16, int(16 / p))


def by_hash(values: np.ndarray, hashes: np.ndarray):
    """Distinct rows of ``values`` keyed by their hashes: ``(hashes, rows, counts)``, by hash.

    Equal rows have equal hashes; two different rows sharing a 64-bit hash would be merged,
    which for the at most a few hundred thousand sampled rows has a probability below 1e-8.
    See :func:`group_hashes` for how they are counted; only the representative rows are copied.
    """
    uh, rep, counts = group_hashes(hashes)
    return uh, values[rep], counts


def group_hashes(hashes: np.ndarray, repeats=None):
    """``(distinct hashes, index of one row with each, counts)``, sorted by hash.

    Many rows with few distinct hashes (the frequent values) are counted through a table
    (:func:`_table_round`, no sort of every row); the rest are sorted (``np.unique``). Rows are
    followed by their index, so that the caller copies only one row per distinct hash.
    ``repeats`` says whether hashes repeat a lot (None: a look at the first ones tells); it
    changes only the speed.
    """
    parts = []
    pos = None  # index of each remaining hash among the given ones (None: all of them, in order)
    shift = 0
    # the table pays off when rows repeat a lot; a look at the first rows tells (speed only)
    if repeats is None and hashes.size > _TABLE_MIN:
        look = _TABLE_MIN // 4
        repeats = np.unique(hashes[:look]).size < look * 3 // 4
    while repeats and hashes.size > _TABLE_MIN and shift + _TABLE_BITS <= 64:
        (found, rep, counts), miss = _table_round(hashes, shift)
        parts.append((found, rep if pos is None else pos[rep], counts))
        hashes = hashes[miss]
        pos = miss if pos is None else pos[miss]
        shift += _TABLE_BITS
        if found.size > _TABLE_SIZE // 8:  # many distinct rows: sorting is cheaper now
            break
    uh, first, counts = np.unique(hashes, return_index=True, return_counts=True)
    first = first if pos is None else pos[first]
    if not parts:
        return uh, first, counts
    parts.append((uh, first, counts))
    keys = np.concatenate([q[0] for q in parts])
    order = np.argsort(keys)
    reps = np.concatenate([q[1] for q in parts])
    return keys[order], reps[order], np.concatenate([q[2] for q in parts])[order]


_TABLE_BITS = 18
_TABLE_SIZE = 1 << _TABLE_BITS
_TABLE_MIN = 1 << 16  # rows from which by_hash counts through a table before sorting the rest


def _table_round(hashes, shift):
    """One round of counting hashes through a table of ``_TABLE_SIZE`` slots.

    Each hash's slot is given by ``_TABLE_BITS`` of its bits from ``shift``; the table keeps
    one hash per slot, and the rows with that very hash are counted (``hit``). Rows whose slot
    went to another hash are left for the next round. Which hash keeps a slot may depend on the
    row order, but every row is counted exactly once in its own hash's group, so the grouping
    that results does not. Returns ``((hashes found, index of a row with each, counts), miss)``,
    ``miss`` the index of every row left for the next round.
    """
    mask = np.uint64(_TABLE_SIZE - 1)
    slot = np.right_shift(hashes, np.uint64(shift)) if shift else hashes.copy()
    slot &= mask
    slot = slot.view(np.intp)  # below 2**18: the same numbers
    table = np.zeros(_TABLE_SIZE, np.uint64)
    table[slot] = hashes
    hit = np.take(table, slot) == hashes
    counts = np.bincount(slot, minlength=_TABLE_SIZE)
    miss = np.flatnonzero(~hit)
    if miss.size:  # rows whose slot went to another hash are not counted here
        counts -= np.bincount(slot[miss], minlength=_TABLE_SIZE)
    # any row of a slot's hash stands for it: the last one written, as for the table above;
    # checked, as numpy does not promise which of repeated indices is written last
    rep = np.zeros(_TABLE_SIZE, np.intp)
    rep[slot] = np.arange(slot.size)
    used = np.flatnonzero(counts)
    rep = rep[used]
    if not np.array_equal(hashes[rep], table[used]):  # pragma: no cover (another write order)
        hits = np.flatnonzero(hit)
        rep = np.zeros(_TABLE_SIZE, np.intp)
        rep[slot[hits]] = hits
        rep = rep[used]
    return (table[used], rep, counts[used]), miss


def merge_hashed(a, b):
    """Merge two :func:`by_hash` groupings (None for nothing).

    Both are sorted by hash with distinct hashes: a stable sort of the two runs (linear) puts
    equal hashes side by side, ``a``'s first; their counts are added.
    """
    if a is None or b[0].size == 0:
        return b if a is None else a
    if a[0].size == 0:
        return b
    h = np.concatenate([a[0], b[0]])
    order = np.argsort(h, kind="stable")
    h = h[order]
    start = np.flatnonzero(np.concatenate([[True], h[1:] != h[:-1]]))
    counts = np.add.reduceat(np.concatenate([a[2], b[2]])[order], start)
    rows = np.concatenate([a[1], b[1]])[order[start]]
    return h[start], rows, np.asarray(counts, np.int64)


def sample_chunk(values, seed, *, keep, buckets, hot=None):
    """Step: one chunk's share of the sample, ``(n, bucket counts, kept, heavy candidates)``.

    ``values`` are the chunk's valid pixel values. ``keep`` is "all" (every value, grouped by
    hash), a hash threshold (the rows below it, not grouped: ``(hashes, rows, None)``), or None
    (no values); ``buckets`` asks for hash-bucket counts; ``hot`` (a boolean per bucket) for the
    values in hot buckets, grouped by hash.
    """
    h = hash_values(values, seed)
    kept = cand = counts = None
    if isinstance(keep, str):
        kept = by_hash(values, h)
    elif keep is not None:  # a few rows, grouped once all are in (see merge_kept, group_kept)
        sel = np.flatnonzero(h < keep)
        kept = h[sel], values[sel], None
    if buckets or hot is not None:  # the top bits, as intp (below 2**16: the same values)
        # in place when the hashes are not needed any more (one array less per chunk)
        top = np.right_shift(h, _SHIFT, out=h if hot is None else None).view(np.intp)
        if buckets:
            counts = np.bincount(top, minlength=_N_BUCKETS)
        if hot is not None:  # only the row of each distinct hash is copied, not every hot row
            sel = np.flatnonzero(hot[top])
            uh, rep, n_rows = group_hashes(h[sel], repeats=True)
            cand = uh, values[sel[rep]], n_rows
    return values.shape[0], counts, kept, cand


def merge_samples(a, b):
    """Merge two :func:`sample_chunk` results."""
    buckets = None if a[1] is None else a[1] + b[1]
    kept = None if a[2] is None else merge_kept(a[2], b[2])
    cand = None if a[3] is None else merge_hashed(a[3], b[3])
    return a[0] + b[0], buckets, kept, cand


def merge_kept(a, b):
    """Merge two kept parts: groupings by :func:`merge_hashed`, rows not grouped yet (the
    sampled rows, few) by putting them together."""
    if a[2] is not None:
        return merge_hashed(a, b)
    return np.concatenate([a[0], b[0]]), np.concatenate([a[1], b[1]]), None


def group_kept(kept):
    """The kept rows grouped by hash, ``(hashes, rows, counts)`` sorted by hash (as
    :func:`by_hash`): one sort of all the sampled rows, not one per chunk and merges."""
    if kept[2] is not None:
        return kept
    h, rows, _ = kept
    order = np.argsort(h)
    h = h[order]
    start = np.flatnonzero(np.concatenate([[True], h[1:] != h[:-1]]))
    counts = np.diff(np.append(start, h.size))
    return h[start], rows[order[start]], counts.astype(np.int64)


def finish_sample(kept, cand, p, n_valid) -> Support:
    """Finish: the weighted sample from the kept values (rate ``p``) and the heavy candidates.

    Values seen at least :func:`heavy_min` times enter with their exact counts, the others with
    weight ``1 / p``; kept values first, then heavy ones, each in hash order.
    """
    uh, values, counts = kept
    heavy_vals = np.zeros((0, values.shape[1]), values.dtype)
    heavy_counts = np.zeros(0, np.float64)
    if cand is not None:
        big = cand[2] >= heavy_min(p)
        heavy_vals, heavy_counts = cand[1][big], cand[2][big].astype(np.float64)
        drop = np.isin(uh, cand[0][big])
        values, counts = values[~drop], counts[~drop]
    values = np.concatenate([values, heavy_vals])
    weights = np.concatenate([counts / p, heavy_counts])
    return Support(values, weights, False, n_valid)


def sample_size(n_channels: int) -> int:
    """Expected sampled pixels for ``n_channels``: ``SAMPLE_SIZE``, fewer beyond ``WIDE``
    channels, so that a wide feature stack's sample (and its float64 copy for the fit) stays as
    small as an 8-channel one (the bound on memory of the texture features).

    >>> sample_size(3), sample_size(17)
    (131072, 61680)
    """
    return SAMPLE_SIZE if n_channels <= WIDE else SAMPLE_SIZE * WIDE // n_channels


def draw_sample(reduce, n_total, seed, size=SAMPLE_SIZE, progress=None) -> Support:
    """The seeded, order-independent sample, drawn through ``reduce``.

    ``reduce(step, merge, **kwargs)`` runs ``step(values, **kwargs)`` on every chunk of valid
    pixel values (in memory: slices of the image; on dask: blocks) and merges the results with
    ``merge``. ``n_total`` bounds the valid pixels (exact when known): one pass when it is exact
    and no value is very frequent; up to three otherwise. Returns a :class:`Support` with
    ``covers_all`` True when there are at most ``size`` valid pixels (then all of them, grouped).
    """
    opts = {"seed": seed}
    keep = "all" if n_total <= size else threshold(size / n_total)
    n, buckets, kept, _ = reduce(
        sample_chunk, merge_samples, keep=keep, buckets=n_total > size, **opts
    )
    if n == 0:
        return Support(np.zeros((0, 1)), np.zeros(0), True, 0)
    if n <= size:
        if not isinstance(keep, str):
            kept = reduce(sample_chunk, merge_samples, keep="all", buckets=False, **opts)[2]
        return Support(kept[1], kept[2].astype(np.float64), True, n)
    p = size / n
    hot = buckets >= heavy_min(p)
    cand = None
    if n != n_total or hot.any():  # masked pixels changed the rate, or some values are frequent
        tick(progress, 0.8, "counting frequent values")
        again = threshold(p) if n != n_total else None
        _, _, kept2, cand = reduce(
            sample_chunk, merge_samples, keep=again, buckets=False,
            hot=hot if hot.any() else None, **opts,
        )  # fmt: skip
        kept = kept if again is None else kept2
    return finish_sample(group_kept(kept), cand, p, n)


def chunks(pixels, valid, progress=None, step="sampling pixels", stop=1.0, rows=None):
    """The valid rows of ``pixels``, ``rows`` (default ``CHUNK``) at a time (``progress``
    ticks each)."""
    rows = rows or CHUNK
    for s in range(0, pixels.shape[0], rows):
        tick(progress, stop * s / pixels.shape[0], step)
        part = pixels[s : s + rows]
        yield (part if valid is None else part[valid[s : s + rows]])


def reduce_chunks(pixels, valid, progress=None, stop=0.8):
    """A ``reduce`` for :func:`draw_sample` over an in-memory image, chunk by chunk.

    For pixels of 8 bytes or more, the chunks' steps run in ``THREADS`` threads, on chunks of
    half the size, their results merged in chunk order. Narrower pixels stay on one thread: a
    step's temporaries (8-byte hashes and words per pixel) would then be large next to the
    image, and two steps at once would break the memory bound (peak <= 3x the input).
    """
    threads = THREADS if pixels.shape[1] * pixels.dtype.itemsize >= 8 else 1
    rows = max(1, CHUNK // threads)

    def reduce(step, merge, **kwargs):
        found = None
        parts = chunks(pixels, valid, progress, stop=stop, rows=rows)
        for one in map_ordered(lambda part: step(part, **kwargs), parts, threads):
            found = one if found is None else merge(found, one)
        return found

    return reduce


def hash_sample(pixels, valid, n_valid, seed, size=SAMPLE_SIZE, progress=None):
    """A weighted sample ``(values, weights)`` of the valid pixels; weights sum to about n_valid.

    When there are at most ``size`` valid pixels, all of them are returned, grouped, with exact
    counts, and the third return value is True (the sample is the whole image).
    ``progress(fraction, step)`` is called after each chunk of pixels.
    """
    found = draw_sample(reduce_chunks(pixels, valid, progress), n_valid, seed, size, progress)
    return found.values, found.weights, found.covers_all


def pool_supports(supports, codec, seed) -> Support:
    """One support from the supports of several images: equal values merged.

    Values are keyed by their code (``codec``, for data that compress) or by their hash, so that
    the pooled values come in the order a single image's support would have.
    """
    values = np.concatenate([s.values for s in supports])
    weights = np.concatenate([s.weights for s in supports])
    keys = codec.encode(values) if codec is not None else hash_values(values, seed)
    uniq, first, inv = np.unique(keys, return_index=True, return_inverse=True)
    pooled = np.bincount(inv.reshape(-1), weights=weights, minlength=uniq.size)
    return Support(
        values[first],
        pooled,
        all(s.covers_all for s in supports),
        sum(s.n_valid for s in supports),
    )


def gray_support(reduce, dtype, n_total, seed, progress=None, cap=None) -> Support:
    """The weighted values of single-channel data that do not compress, through ``reduce``.

    ``reduce`` is as for :func:`draw_sample`. A first pass finds the number of valid pixels and
    their range. Then:

    - at most ``GRID_MIN_PIXELS`` valid pixels, or integers spanning fewer than
      ``DISTINCT_CAP`` values: every distinct value with its count (exact);
    - else the grid of :class:`~napari_kmeans.compress.Grid` over the range: bin counts and
      exact fixed-point sums. When at most half the bins are occupied and each holds a single
      value, those are the distinct values with exact counts (the result is exact); else the
      occupied bins are the support (``grid`` set), unless fewer than ``GRID_MIN_OCCUPIED``
      are occupied (far outliers): then the distinct values, as below;
    - beyond ``cap`` (default ``DISTINCT_CAP``) distinct values, the seeded sample of
      :func:`draw_sample`.
    """
    dtype = np.dtype(dtype)
    cap = DISTINCT_CAP if cap is None else cap
    n, lo, hi = reduce(value_range, merge_ranges)
    if n == 0:
        return Support(np.zeros((0, 1)), np.zeros(0), True, 0)
    found = None
    if n > GRID_MIN_PIXELS and not (dtype.kind in "iu" and hi - lo < cap):
        tick(progress, 0.2, "counting values on a grid")
        grid = Grid(lo, hi)
        counts, sums = reduce(grid_counts, merge_grid, grid=grid)
        occupied = np.flatnonzero(counts)
        exact_values = dtype.kind == "f" or dtype.itemsize <= 4  # float64 holds them exactly
        if occupied.size <= grid.bins // 2 and exact_values:
            rep, single = reduce(bin_values, merge_bin_values, grid=grid)
            if single:  # one value per bin: the bins are the distinct values
                values = rep[occupied].astype(dtype)
                return Support(values[:, None], counts[occupied].astype(np.float64), True, n)
        if occupied.size >= GRID_MIN_OCCUPIED:
            return grid_support(grid, counts, sums, n)
    if found is None:
        tick(progress, 0.3, "finding distinct values")
        merge = functools.partial(merge_distinct, cap=cap)
        found = distinct_support(reduce(distinct_values, merge, cap=cap))
    if found is None:
        found = draw_sample(reduce, n_total, seed, progress=progress)
    return found
