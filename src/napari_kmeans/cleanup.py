"""Clean-up of labels after clustering: a majority (mode) filter and a minimum region size.

Both work on label images of any dimension (2-D, 3-D), leave label 0 (masked or invalid pixels)
untouched, and never invent a label value: a pixel only ever takes a label that a neighbour has.
They are deterministic: the same labels give the same result, whatever the memory layout.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from .features import check_int


def _check_labels(labels, name: str = "labels") -> np.ndarray:
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise TypeError(
            f"{name} must be an integer array, got dtype {labels.dtype}; pass the labels of a "
            "segmentation (e.g. result.labels)."
        )
    if labels.ndim < 1:
        raise ValueError(f"{name} must have at least one dimension, got a 0-d array.")
    if labels.size and labels.min() < 0:
        raise ValueError(f"{name} must be >= 0, found {int(labels.min())}.")
    return labels


def majority(labels, radius: int = 1) -> np.ndarray:
    """Each labelled pixel takes the most frequent label within ``radius`` (a mode filter).

    The neighbourhood is a ball of ``radius`` pixels (in every dimension of ``labels``); pixels
    with label 0 are neither changed nor counted. Ties go to the pixel's own label, then to the
    smaller label, so the result is deterministic.

    Parameters
    ----------
    labels : (M, N[, P]) ndarray of int
        Labels 0..k (0 = masked).
    radius : int
        Radius of the neighbourhood in pixels; 0 returns a copy.

    Returns
    -------
    ndarray
        The filtered labels, same shape and dtype.

    Examples
    --------
    >>> labels = np.array([[1, 1, 1], [1, 2, 1], [1, 1, 1]], np.uint8)
    >>> majority(labels, 1)
    array([[1, 1, 1],
           [1, 1, 1],
           [1, 1, 1]], dtype=uint8)
    """
    labels = _check_labels(labels)
    radius = check_int("radius", radius, 0, 1000)
    out = labels.copy()
    if radius == 0 or not labels.size:
        return out
    values = np.unique(labels[labels > 0])
    if values.size < 2:
        return out
    grid = np.indices((2 * radius + 1,) * labels.ndim) - radius
    ball = (grid**2).sum(axis=0) <= radius**2
    best = np.zeros(labels.shape, np.float32)
    for value in values:  # counts of each label in the ball, one label at a time (bounded memory)
        count = ndi.correlate((labels == value).astype(np.float32), ball.astype(np.float32),
                              mode="constant")  # fmt: skip
        count[labels == value] += 0.5  # ties: the pixel keeps its own label
        better = count > best  # strict: on other ties the smaller label (seen first) stays
        out[better] = value
        best[better] = count[better]
    out[labels == 0] = 0
    return out


def remove_small_regions(labels, min_size: int) -> np.ndarray:
    """Merge every region smaller than ``min_size`` pixels into the neighbour it borders most.

    A region is a face-connected set of pixels with one label. A small region takes the label
    of the adjacent region with which it shares the longest border (ties: the larger region,
    then the smaller label), smallest regions first, until no region is smaller than
    ``min_size`` (unless a whole label, or a region with no labelled neighbour, is smaller:
    those are kept). Label 0 is never changed and never given.

    Examples
    --------
    >>> labels = np.array([[1, 1, 1, 2], [1, 3, 1, 2], [1, 1, 1, 2]], np.uint8)
    >>> remove_small_regions(labels, 2)
    array([[1, 1, 1, 2],
           [1, 1, 1, 2],
           [1, 1, 1, 2]], dtype=uint8)
    """
    labels = _check_labels(labels)
    min_size = check_int("min_size", min_size, 0)
    out = labels.copy()
    if min_size <= 1 or not labels.size:
        return out
    structure = ndi.generate_binary_structure(labels.ndim, 1)
    for _ in range(10_000):  # each pass merges small regions into larger ones: it ends
        regions, sizes, label_of = _regions(out, structure)
        small = np.flatnonzero((sizes < min_size) & (label_of > 0))
        if small.size == 0:
            break
        target = _best_neighbours(out, regions, sizes, label_of, small)
        into = target[small]
        # merge only towards a larger region (ties: the higher id): no two regions swap
        moved = (into > 0) & ((sizes[into] > sizes[small]) | (
            (sizes[into] == sizes[small]) & (into > small)))  # fmt: skip
        if not moved.any():
            break
        lut = label_of.copy()
        lut[small[moved]] = label_of[into[moved]]
        out = lut[regions].astype(labels.dtype)
    return out


def _regions(labels, structure):
    """Face-connected regions: region ids (0 for label 0), sizes and the label of each."""
    regions = np.zeros(labels.shape, np.int64)
    label_of = [0]
    offset = 0
    for value in np.unique(labels[labels > 0]):
        found, n = ndi.label(labels == value, structure=structure)
        inside = found > 0
        regions[inside] = found[inside] + offset
        label_of.extend([int(value)] * n)
        offset += n
    sizes = np.bincount(regions.ravel(), minlength=offset + 1)
    sizes[0] = 0
    return regions, sizes, np.asarray(label_of, np.int64)


def _best_neighbours(labels, regions, sizes, label_of, small):
    """For each small region, the neighbouring region with the longest border (0: none)."""
    n = sizes.size
    pairs = []
    for axis in range(labels.ndim):  # every face between two pixels of different regions
        a = np.moveaxis(regions, axis, 0)
        left, right = a[:-1].ravel(), a[1:].ravel()
        cross = (left != right) & (left > 0) & (right > 0)
        pairs.append(np.stack([left[cross], right[cross]]))
        pairs.append(np.stack([right[cross], left[cross]]))
    both = np.concatenate(pairs, axis=1)
    keep = np.isin(both[0], small)
    src, dst = both[0][keep], both[1][keep]
    target = np.zeros(n, np.int64)
    if src.size == 0:
        return target
    codes, length = np.unique(src * n + dst, return_counts=True)  # border length per pair
    s, d = np.divmod(codes, n)
    # best: longest border, then the larger neighbour, then the smaller label
    order = np.lexsort((label_of[d], -sizes[d], -length, s))
    s, d = s[order], d[order]
    first = np.r_[True, s[1:] != s[:-1]]
    target[s[first]] = d[first]
    return target
