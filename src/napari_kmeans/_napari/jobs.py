"""What a widget action is made of: parameters, input planes, jobs, progress and results.

Plain data, no napari and no Qt: :mod:`.inputs` builds jobs from layers on the main thread, the
generators of :mod:`.workers` compute them in a worker thread, and :mod:`.outputs` turns their
results into layers. Also here: :class:`InputError` (the message of every refused input), the
cancellation callback the engine calls (:class:`Stopper`) and :func:`failure`, which says what
went wrong in plain words.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING

import numpy as np

from ..lazy import is_dask
from ..model import KMeansModel
from ..params import Params

if TYPE_CHECKING:  # annotations only
    from napari.layers import Image, Labels, Shapes

    from .editing import Target


class InputError(ValueError):
    """The chosen layers or settings cannot be segmented; the message says why and what to do."""


def levels(layer) -> list:
    """The layer's data as a list of resolution levels (one level unless multiscale)."""
    return list(layer.data) if layer.multiscale else [layer.data]


def is_lazy(layer) -> bool:
    """Whether ``layer`` holds a multiscale pyramid or a dask array (read only on demand)."""
    return bool(getattr(layer, "multiscale", False)) or is_dask(getattr(layer, "data", None))


def spatial(shape, rgb) -> tuple[int, ...]:
    return tuple(shape[:-1]) if rgb else tuple(shape)


@dataclass(frozen=True)
class RunInfo:
    """What a run was made from, for the output layers and their metadata."""

    source: Image
    extras: tuple
    mask: Labels | Shapes | None
    params: Params
    slice_index: dict | None  # {layer axis: index} for the current-slice scope, else None
    fit_level: int | None  # pyramid level fitted on (multiscale data), else None
    level: int = 0  # pyramid level the outputs hold (a preview of a multiscale image), else 0
    preview: bool = False  # a live preview of what is on screen (Run makes the result)

    @property
    def layers(self) -> tuple:
        return (self.source, *self.extras, *([self.mask] if self.mask is not None else []))


BUG_URL = "https://github.com/napari-kmeans/napari-kmeans/issues"


SLAB_PIXELS = 1 << 20  # pixels labelled between two checks for cancel


POLL_SECONDS = 0.1  # how often a long fit step yields (so that cancel is honoured quickly)


class Cancelled(Exception):
    """Raised inside the engine, through its ``progress`` callback, once a run is cancelled."""


class Stopper:
    """The engine's ``progress`` callback for work that setting ``stop`` cancels.

    The engine calls it every fraction of a second; once ``stop`` is set it raises
    :class:`Cancelled`, which stops the computation in its own thread (not only the worker). The
    fraction it was last given, mapped onto ``start..end``, is what :func:`_in_thread` reports.
    """

    def __init__(self, stop: threading.Event | None, start: float = 0.0, end: float = 1.0):
        self.stop, self.start, self.end = stop, start, end
        self.fraction = start

    def __call__(self, fraction=None, step=None) -> None:
        if self.stop is not None and self.stop.is_set():
            raise Cancelled("cancelled")
        if fraction is not None:
            done = min(max(float(fraction), 0.0), 1.0)
            self.fraction = self.start + (self.end - self.start) * done


def stopper(stop: threading.Event | None, start: float = 0.0, end: float = 1.0) -> Stopper:
    """A :class:`Stopper` for ``stop`` reporting progress within ``start..end``."""
    return Stopper(stop, start, end)


def failure(err: BaseException) -> str:
    """What to tell the person when a worker's computation raised ``err``.

    Bad input (ValueError, TypeError) is said as the engine says it; running out of memory and
    unreadable data are said plainly; anything else is a bug, with where to report it.
    """
    if isinstance(err, MemoryError):
        return (
            "not enough memory for this computation. Try the 'current slice' scope, a mask, "
            "fewer clusters, or open the data lazily (dask or multiscale) so that it is read "
            "block by block."
        )
    if isinstance(err, ValueError | TypeError):
        return str(err)
    if isinstance(err, OSError):
        return f"the data could not be read ({err}); check that the file is still there."
    return (
        f"unexpected error ({type(err).__name__}: {err}). This is a bug in napari-kmeans; "
        f"nothing was changed. Please report it at {BUG_URL} with the steps that led to it."
    )


@dataclass(frozen=True)
class Planes:
    """One resolution of the input: the image, extra channel images and a mask.

    ``image`` is the source's data (spatial axes, then the colour axis when ``rgb``); every array
    in ``extras`` and ``mask`` has the image's spatial shape.
    """

    image: object
    rgb: bool = False
    extras: tuple = ()
    mask: np.ndarray | None = None
    seeds: np.ndarray | None = None  # scribbled seed classes 1..m (0: none), spatial shape
    # the full resolution's spatial shape on the same axes (a slice: its axes only), when these
    # planes may be a coarser pyramid level: what the recipe's scale is measured against
    full_shape: tuple[int, ...] | None = None

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        shape = tuple(self.image.shape)
        return shape[:-1] if self.rgb else shape

    def materialized(self) -> Planes:
        """The same planes as numpy arrays in their own dtypes (computes dask arrays)."""
        mask = None if self.mask is None else np.asarray(self.mask)
        seeds = None if self.seeds is None else np.asarray(self.seeds)
        return Planes(
            np.asarray(self.image), self.rgb, tuple(np.asarray(e) for e in self.extras), mask,
            seeds, self.full_shape,
        )  # fmt: skip

    def block(self, index: tuple) -> Planes:
        """The planes restricted to ``index`` (a tuple of slices over the spatial axes)."""
        mask = None if self.mask is None else np.asarray(self.mask[index])
        extras = tuple(np.asarray(e[index]) for e in self.extras)
        return Planes(np.asarray(self.image[index]), self.rgb, extras, mask)

    def assembled(self) -> np.ndarray:
        """The array the engine clusters: the image, with extra channels stacked last."""
        if not self.extras:
            return np.asarray(self.image)
        return np.stack([np.asarray(self.image), *map(np.asarray, self.extras)], axis=-1)

    def layout(self) -> dict:
        """``channel_axis`` and ``rgb`` arguments for the engine."""
        if self.rgb:
            return {"channel_axis": -1, "rgb": True}
        if self.extras:
            return {"channel_axis": -1, "rgb": False}
        return {"channel_axis": None, "rgb": False}


class Kept:
    """The laid-out pixels of a widget's last live preview (stage 1 of ``segment``: layout and
    compression), kept for its next preview: a change of k, restarts or seeds fits again
    without laying the same pixels out again. One ``(key, prepared)`` pair, replaced whole (the
    worker of a stale preview may still write it)."""

    def __init__(self):
        self._pair = (None, None)
        self._cleared = 0  # times forgotten: what a worker laid out before then is not kept
        self._lock = threading.Lock()

    def get(self, key):
        """The prepared image kept under ``key``, or None."""
        kept, prepared = self._pair
        return prepared if kept is not None and kept == key else None

    def ticket(self) -> int:
        """To give to :meth:`put` when the laying out starts."""
        return self._cleared

    def put(self, key, prepared, ticket: int | None = None) -> None:
        """Keep ``prepared`` under ``key``, unless it was forgotten since ``ticket`` (then
        the preview that laid it out was turned off or lost a layer while at it)."""
        with self._lock:
            if ticket is None or ticket == self._cleared:
                self._pair = (key, prepared)

    def clear(self) -> None:
        """Forget it (the preview is off, or a layer left: keep no removed image alive)."""
        with self._lock:
            self._cleared += 1
            self._pair = (None, None)


@dataclass(frozen=True)
class Job:
    """A run: full-resolution planes, optional lower resolution planes to fit on, settings."""

    full: Planes
    params: Params
    fit: Planes | None = None
    match_to: KMeansModel | None = None  # the last run's model: its label IDs are kept
    confidence: bool = False  # also compute the per-pixel confidence
    # full-resolution pixels per pixel of ``full`` (a coarser pyramid level previewed): fitted
    # and labelled with the recipe at that scale, the model keeps the full-resolution recipe
    factors: tuple[float, ...] | None = None
    kept: Kept | None = None  # a live preview's: the last preview's laid-out pixels


@dataclass(frozen=True)
class Progress:
    """What a run yields: the fraction done and what it is doing."""

    fraction: float
    text: str


@dataclass(frozen=True)
class Outcome:
    """A finished run: everything the layers are built from, or an error message."""

    labels: np.ndarray | None = None
    recolored: np.ndarray | None = None
    model: KMeansModel | None = None
    inertia: float | None = 0.0  # None when unknown (lazy outputs)
    n_iter: int = 0
    exact: bool = False
    counts: np.ndarray | None = None  # None when unknown (lazy outputs)
    seconds: float = 0.0
    error: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    lazy: bool = False  # labels and recolored are dask arrays (lists of them: one per level)
    confidence: object = None  # per-pixel confidence 0..1 (float32; dask when lazy), if asked

    @property
    def n_clusters(self) -> int:
        """The number of clusters (labels kept from an earlier run may leave IDs absent: the
        largest label is ``model.n_clusters``)."""
        return 0 if self.model is None else int(self.model.present_labels.size)


def blocks(shape: tuple[int, ...], target: int = SLAB_PIXELS) -> Iterator[tuple[slice, ...]]:
    """Index tuples covering ``shape`` in C order, each of about ``target`` elements or fewer.

    >>> [b for b in blocks((5, 4), 8)]
    [(slice(0, 2, None),), (slice(2, 4, None),), (slice(4, 5, None),)]
    """
    per = math.prod(shape[1:])
    if per <= target or len(shape) == 1:
        step = max(1, target // max(per, 1))
        for start in range(0, shape[0], step):
            yield (slice(start, min(start + step, shape[0])),)
        return
    for i in range(shape[0]):
        for rest in blocks(shape[1:], target):
            yield (slice(i, i + 1), *rest)


@dataclass(frozen=True)
class ReuseInfo(RunInfo):
    """A :class:`RunInfo` that also records a model fitted on one slice, or applied."""

    fit_slice: dict | None = None  # {axis: index}: fitted on that slice, every slice labelled
    model_from: str | None = None  # "layer '...'" or "file '...'": the model applied
    each_frame: bool = False  # every frame (first axis) fitted on its own, IDs matched


def extend_info(info: RunInfo, **kwargs) -> ReuseInfo:
    return ReuseInfo(**{f.name: getattr(info, f.name) for f in fields(RunInfo)}, **kwargs)


@dataclass(frozen=True)
class LazyJob:
    """A lazy run: every pyramid level as dask planes, and what to fit on (or the model).

    ``fit`` holds planes to fit on in memory (a lower pyramid level, or the slice on screen); when
    it is None and no ``model`` is given, the model is fitted on ``levels[0]`` block by block.
    """

    levels: tuple[Planes, ...]
    params: Params
    fit: Planes | None = None
    model: KMeansModel | None = None
    multiscale: bool = False
    match_to: KMeansModel | None = None  # the last run's model: its label IDs are kept
    confidence: bool = False  # also build the lazy per-pixel confidence

    @property
    def full(self) -> Planes:
        """The full-resolution planes."""
        return self.levels[0]


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


def size_text(n: float) -> str:
    for unit in ("bytes", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover


@dataclass(frozen=True)
class EditJob:
    """What an edit computes from: the labels, model and source pixels, as they were asked."""

    target: Target
    what: str  # recorded in metadata['kmeans']['edits'], e.g. "merge [2, 3]"
    labels: np.ndarray  # a copy of the labels (slice axes dropped) when the edit was asked
    model: KMeansModel
    planes: object  # the source pixels (Planes, in memory)
    written: bytes  # digest of the labels layer's data when the edit was asked
    change: object  # (model, labels, progress) -> (model, labels, notes); None for Update
    recount: bool = False

    @property
    def source(self):
        return self.target.labels  # the progress bar names the labels layer

    @property
    def layers(self) -> tuple:
        t = self.target
        return (t.labels, *([t.recolored] if t.recolored is not None else []), t.source, *t.extras)


@dataclass(frozen=True)
class Edited:
    """An edit's result, ready to write to the layers; or an error message."""

    labels: np.ndarray | None = None
    model: KMeansModel | None = None
    colors: np.ndarray | None = None
    counts: np.ndarray | None = None
    recolored: np.ndarray | None = None
    notes: tuple[str, ...] = ()
    error: str | None = None
    moves: dict = field(default_factory=dict)  # {old label: [new labels]} where they changed


@dataclass(frozen=True)
class InstancesJob:
    """Connected pieces to find: a copy of the labels, the clusters (all when empty)."""

    layer: object  # the k-means labels layer
    labels: np.ndarray
    clusters: tuple
    min_size: int

    @property
    def source(self):
        return self.layer

    @property
    def layers(self) -> tuple:
        return (self.layer,)


@dataclass(frozen=True)
class Instances:
    """Instance labels, the cluster of each instance and its size; or an error message."""

    labels: np.ndarray | None = None
    cluster_of: np.ndarray | None = None
    sizes: np.ndarray | None = None
    chosen: list | None = None
    error: str | None = None


@dataclass(frozen=True)
class Curve:
    """Inertia for each k, the share of the variation it explains, and the elbow; or an error."""

    ks: np.ndarray | None = None
    inertias: np.ndarray | None = None
    elbow: int | None = None
    error: str | None = None
    explained: np.ndarray | None = None  # 1 - inertia / total sum of squares, for each k


def present_labels(labels: np.ndarray, clusters, name: str) -> list[int]:
    present = set(np.unique(labels[labels > 0]).tolist())
    missing = [c for c in clusters if c not in present]
    if missing:
        raise InputError(
            f"'{name}' has no pixel with label(s) {missing}; its labels are "
            f"{sorted(present) or 'none'}."
        )
    return list(clusters)
