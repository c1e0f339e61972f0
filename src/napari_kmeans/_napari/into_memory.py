"""'Compute into memory': lazy k-means output layers become in-memory, editable layers.

:func:`plan` checks, on the main thread, that the full-resolution labels and recoloured image (and
the source pixels an edit reads) fit in a safe fraction of the available memory, and refuses
otherwise, changing nothing. :func:`compute` (a worker generator) computes them block by block
with progress; :func:`install` then replaces the layers' data with single-scale numpy arrays,
keeping their transforms, colours and metadata, and fills in the pixel counts.
"""

from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import dataclass, field

import numpy as np
from napari.layers import Image, Labels

from .derived import placement_of
from .edit_target import Target, resolve
from .inputs import InputError, is_lazy, levels
from .layers import KEY, digest, swap
from .runner import SLAB_PIXELS, Progress, failure

SAFE_FRACTION = 0.5  # at most this share of the available memory is used


def available_bytes() -> int | None:
    """Memory available to this process now (psutil, /proc/meminfo or sysconf), or None."""
    try:
        import psutil
    except ImportError:
        pass
    else:
        return int(psutil.virtual_memory().available)
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None


def _nbytes(array) -> int:
    return math.prod(array.shape) * np.dtype(array.dtype).itemsize


def needed_bytes(target: Target) -> dict:
    """Bytes by part: full-resolution labels, recoloured image, and source pixels not in memory.

    Edits read the source (and extra channels) at full resolution: a dask-backed source is
    counted too.
    """
    parts = {"labels": _nbytes(levels(target.labels)[0])}
    if target.recolored is not None and is_lazy(target.recolored):
        parts["recolored image"] = _nbytes(levels(target.recolored)[0])
    lazy_sources = [layer for layer in (target.source, *target.extras) if is_lazy(layer)]
    if lazy_sources:
        parts["source pixels"] = sum(_nbytes(levels(layer)[0]) for layer in lazy_sources)
    return parts


def _size(n: float) -> str:
    for unit in ("bytes", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover


@dataclass(frozen=True)
class ComputeJob:
    """The full-resolution lazy arrays to compute (``recolored`` None when it is not lazy)."""

    labels: object
    recolored: object | None


@dataclass(frozen=True)
class ComputeInfo:
    """What is computed, for the widget (progress text, layers that must stay in the viewer)."""

    target: Target

    @property
    def source(self):
        return self.target.labels  # the progress bar names the labels layer

    @property
    def labels(self):
        return self.target.labels

    @property
    def layers(self) -> tuple:
        t = self.target
        rec = () if t.recolored is None else (t.recolored,)
        return (t.labels, *rec, t.source, *t.extras)


@dataclass(frozen=True)
class Computed:
    """The computed arrays, the labels' pixel counts, or an error message."""

    labels: np.ndarray | None = None
    recolored: np.ndarray | None = None
    counts: np.ndarray | None = None
    seconds: float = 0.0
    error: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)


def plan(viewer, layer, outputs=()) -> tuple[ComputeJob, ComputeInfo]:
    """Check that lazy labels ``layer`` can be computed into memory; ``(job, info)``.

    Raises
    ------
    InputError
        When ``layer`` is not lazy k-means labels, its source is gone, or the result would take
        more than ``SAFE_FRACTION`` of the available memory.
    """
    target = resolve(viewer, layer, outputs, allow_lazy=True)
    if not is_lazy(layer):
        raise InputError(f"'{layer.name}' is already in memory: it can be edited as it is.")
    parts = needed_bytes(target)
    need, have = sum(parts.values()), available_bytes()
    if have is not None and need > SAFE_FRACTION * have:
        detail = ", ".join(f"{name} {_size(n)}" for name, n in parts.items())
        raise InputError(
            f"'{layer.name}' does not fit in memory: computing it needs about {_size(need)} "
            f"({detail}), more than {SAFE_FRACTION:.0%} of the {_size(have)} available. Nothing "
            "was changed; keep browsing it lazily, or segment a smaller region or the current "
            "slice (scope) to edit."
        )
    rec = target.recolored
    recolored = levels(rec)[0] if rec is not None and is_lazy(rec) else None
    return ComputeJob(levels(layer)[0], recolored), ComputeInfo(target)


def regions(chunks: tuple[tuple[int, ...], ...], target: int = SLAB_PIXELS):
    """Batches of chunk-aligned regions (tuples of slices) of about ``target`` pixels each.

    >>> [[r[0] for r in batch] for batch in regions(((2, 2, 1),), 4)]
    [[slice(0, 2, None), slice(2, 4, None)], [slice(4, 5, None)]]
    """
    starts = [np.concatenate([[0], np.cumsum(c)]) for c in chunks]
    batch, size = [], 0
    for index in np.ndindex(*(len(c) for c in chunks)):
        region = tuple(slice(int(s[i]), int(s[i + 1])) for s, i in zip(starts, index, strict=True))
        batch.append(region)
        size += math.prod(r.stop - r.start for r in region)
        if size >= target:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _compute_batch(job: ComputeJob, batch):
    import dask

    parts = [job.labels[r] for r in batch]
    if job.recolored is not None:
        parts += [job.recolored[r] for r in batch]
    return dask.compute(*parts)


def compute(job: ComputeJob, stop=None):
    """Compute the arrays block by block, yielding :class:`Progress`; returns :class:`Computed`.

    Labels and recoloured image are computed together, so each source block is read once.
    """
    start = time.perf_counter()
    labels = np.zeros(job.labels.shape, job.labels.dtype)
    recolored = None
    if job.recolored is not None:
        recolored = np.empty(job.recolored.shape, job.recolored.dtype)
    batches = list(regions(job.labels.chunks))
    try:
        for i, batch in enumerate(batches):
            yield Progress(i / len(batches), "computing into memory")
            values = _compute_batch(job, batch)
            for region, value in zip(batch, values[: len(batch)], strict=True):
                labels[region] = value
            for region, value in zip(batch, values[len(batch) :], strict=True):
                recolored[region] = value
    except Exception as err:  # every failure is reported, never a raw traceback
        return Computed(error=f"computing into memory failed: {failure(err)}")
    counts = np.bincount(labels.ravel(), minlength=1)
    return Computed(labels, recolored, counts, time.perf_counter() - start)


def _metadata(layer, counts_known: bool) -> dict:
    meta = copy.deepcopy(dict(layer.metadata))
    entry = meta.setdefault(KEY, {})
    entry.update(mode="in memory", computed_into_memory=True)
    if counts_known and entry.get("inertia") is None:
        entry["note"] = "computed into memory: pixel counts are known; the inertia stays unknown"
    elif counts_known:
        entry.pop("note", None)
    return meta


def _labels_layer(old, data, meta, features):
    return Labels(
        data, name=old.name, colormap=old.colormap, features=features, metadata=meta,
        opacity=old.opacity, blending=old.blending, visible=old.visible, **placement_of(old),
    )  # fmt: skip


def _image_layer(old, data, meta):
    return Image(
        data, name=old.name, rgb=old.rgb, colormap=old.colormap,
        contrast_limits=old.contrast_limits, gamma=old.gamma, opacity=old.opacity,
        blending=old.blending, visible=old.visible, metadata=meta, **placement_of(old),
    )  # fmt: skip


def _features(layer, counts: np.ndarray):
    """The layer's features table with the pixel count and fraction of each label filled in."""
    table = layer.features.copy()
    if "label" not in table or table.empty:
        return table
    labels = table["label"].to_numpy(dtype=np.int64)
    found = np.zeros(labels.size, np.int64)
    inside = labels < counts.size
    found[inside] = counts[labels[inside]]
    table["count"] = found
    table["fraction"] = found / max(int(counts[1:].sum()), 1)
    return table


def install(viewer, done: Computed, info: ComputeInfo):
    """Put the computed arrays in the layers (new single-scale layers for a pyramid).

    Returns the labels layer and the recoloured layer (None when it was not computed).
    """
    target = info.target
    old = target.labels
    features = _features(old, done.counts)
    meta = _metadata(old, counts_known=True)
    if old.multiscale:
        labels = _labels_layer(old, done.labels, meta, features)
        swap(viewer, old, labels)
    else:
        labels = old
        labels.data = done.labels
        labels.features, labels.metadata = features, meta
    rec = target.recolored if done.recolored is not None else None
    if rec is not None:
        rec_meta = _metadata(rec, counts_known=True)
        if rec.multiscale:
            new = _image_layer(rec, done.recolored, rec_meta)
            swap(viewer, rec, new)
            rec = new
        else:
            rec.data, rec.metadata = done.recolored, rec_meta
    return labels, rec


def retarget(outputs, labels, recolored) -> None:
    """Point the widget's record of a run at the layers :func:`install` left."""
    outputs.labels, outputs.written = labels, digest(labels.data)
    if recolored is not None:
        outputs.recolored = recolored


def summary(done: Computed, labels) -> str:
    """The result line after computing ``labels`` into memory."""
    size = done.labels.nbytes + (0 if done.recolored is None else done.recolored.nbytes)
    return (
        f"computed '{labels.name}' into memory ({_size(size)}, {done.seconds:.2f} s): "
        "its labels can now be edited"
    )
