"""The engine calls of one widget run, as a generator a worker thread can stop between steps.

Nothing here imports napari or Qt: a :class:`Job` holds plain arrays (numpy, or anything
``np.asarray`` turns into one, such as dask), and :func:`run` yields :class:`Progress` and returns
an :class:`Outcome`. The widget runs it in a ``napari.qt.threading`` generator worker.

The steps are: fit the model (on a lower resolution level for multiscale data), then label and
recolour the full-resolution image slab by slab with the model. The labels, centres
and inertia are those of :func:`napari_kmeans.segment` on the same data.
"""

from __future__ import annotations

import math
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from .. import features as ft
from ..model import KMeansModel, label_dtype
from ..segment import _fit_image, fit

SLAB_PIXELS = 1 << 20  # pixels labelled between two checks for cancel
POLL_SECONDS = 0.1  # how often a long fit step yields (so that cancel is honoured quickly)
BUG_URL = "https://github.com/napari-kmeans/napari-kmeans/issues"


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
class Params:
    """The clustering settings chosen in the widget."""

    n_clusters: int = 5
    color_space: str = "rgb"
    seed: int = 0
    n_init: int = 4
    max_iter: int = 300
    tol: float = 1e-4

    def as_dict(self) -> dict:
        return dict(self.__dict__)


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

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        shape = tuple(self.image.shape)
        return shape[:-1] if self.rgb else shape

    def materialized(self) -> Planes:
        """The same planes as numpy arrays in their own dtypes (computes dask arrays)."""
        mask = None if self.mask is None else np.asarray(self.mask)
        return Planes(
            np.asarray(self.image), self.rgb, tuple(np.asarray(e) for e in self.extras), mask
        )

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


@dataclass(frozen=True)
class Job:
    """A run: full-resolution planes, optional lower resolution planes to fit on, settings."""

    full: Planes
    params: Params
    fit: Planes | None = None


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

    @property
    def n_clusters(self) -> int:
        return 0 if self.model is None else self.model.n_clusters


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


def _engine_args(planes: Planes, params: Params) -> dict:
    return dict(
        color_space=params.color_space, mask=planes.mask, seed=params.seed,
        n_init=params.n_init, max_iter=params.max_iter, tol=params.tol, **planes.layout(),
    )  # fmt: skip


def _with_notes(func, *args, **kwargs):
    """``(func(*args, **kwargs), notes)``; notes are the engine's UserWarnings as text."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        value = func(*args, **kwargs)
    notes = tuple(str(w.message) for w in caught if issubclass(w.category, UserWarning))
    return value, notes


def fit_model(planes: Planes, params: Params, progress=None):
    """Fit a model to ``planes`` as :func:`napari_kmeans.segment` does.

    Returns ``(model, n_iter, exact, notes)``; ``notes`` are the engine's warnings as text.
    ``progress`` is the engine's callback (a :func:`stopper` stops the fit).
    """
    image = ft.as_image(planes.assembled())
    args = _engine_args(planes, params)
    fitted, notes = _with_notes(fit, image, params.n_clusters, progress=progress, **args)
    return fitted.model, fitted.n_iter, fitted.exact, notes


def fit_planes(planes: Planes, params: Params, progress=None):
    """The first half of :func:`napari_kmeans.segment` on in-memory planes.

    Returns the fitted state (image, prepared pixels, compressed codes, model, ...) and notes;
    :func:`label_fitted` finishes the job exactly as ``segment`` does.
    """
    image = ft.as_image(planes.assembled())
    args = _engine_args(planes, params)
    return _with_notes(_fit_image, image, params.n_clusters, progress=progress, **args)


def label_fitted(fitted):
    """Labels (spatial shape), inertia and counts of a :func:`fit_planes` result."""
    labels, inertia, counts = fitted.model.label_prepared(
        fitted.prep,
        fitted.compressed,
        distinct=(fitted.idx, fitted.d2) if fitted.compressed else None,
    )
    return labels.reshape(fitted.prep.spatial_shape), inertia, counts


def _in_thread(tick: Progress, func, *args, **kwargs) -> Iterator[Progress]:
    """Run ``func(*args, **kwargs)`` in a helper thread, yielding ``tick`` every POLL_SECONDS.

    A worker stopped at one of these yields no longer waits; the helper stops too when ``func``
    was given a :func:`stopper` as its ``progress`` (its result is dropped either way). Returns
    the function's result, or raises its exception.
    """
    box: dict = {}

    def target():
        try:
            box["value"] = func(*args, **kwargs)
        except BaseException as err:  # handed back to the caller below
            box["error"] = err

    thread = threading.Thread(target=target, name="napari-kmeans fit", daemon=True)
    thread.start()
    reporter = kwargs.get("progress")
    while thread.is_alive():
        thread.join(POLL_SECONDS)
        if thread.is_alive():
            if isinstance(reporter, Stopper) and reporter.fraction > tick.fraction:
                tick = Progress(reporter.fraction, tick.text)
            yield tick
    if "error" in box:
        raise box["error"]
    return box["value"]


def _label_block(model: KMeansModel, planes: Planes):
    """Labels (spatial shape) and inertia of one block."""
    image = planes.assembled()
    if planes.mask is not None and not planes.mask.any():
        return np.zeros(planes.spatial_shape, label_dtype(model.n_clusters)), 0.0
    try:
        prep = ft.prepare(image, model.spec, planes.mask)
    except ValueError:  # no valid pixel in this block (all masked, NaN or transparent)
        return np.zeros(planes.spatial_shape, label_dtype(model.n_clusters)), 0.0
    labelled = model.label_prepared(prep)  # (labels, inertia[, counts])
    return labelled[0].reshape(prep.spatial_shape), float(labelled[1])


def _recolor_block(model: KMeansModel, planes: Planes, labels: np.ndarray) -> np.ndarray:
    """The source image of one block recoloured (extra channels dropped again)."""
    image = planes.assembled()
    out = model.recolor(image, labels)
    if not planes.extras:
        return out
    source = np.asarray(planes.image)
    return ft.cast_colors(out[..., 0], source.dtype) if out.dtype != source.dtype else out[..., 0]


def run(job: Job, stop: threading.Event | None = None) -> Iterator[Progress]:
    """Fit, label and recolour ``job``, yielding :class:`Progress`; returns an :class:`Outcome`.

    Every failure (bad input such as all pixels NaN, running out of memory, a bug) is returned as
    ``Outcome(error=...)`` with a message from :func:`failure` rather than raised, so that the
    widget can show it. Setting ``stop`` stops the fit in its helper thread too.
    """
    start = time.perf_counter()
    try:
        yield Progress(0.0, "reading data")
        if job.fit is None:
            return (yield from _run_in_memory(job, start, stop))
        fit_planes = job.fit.materialized()
        tick = Progress(0.05, "fitting")
        yield tick
        model, n_iter, _, notes = yield from _in_thread(
            tick, fit_model, fit_planes, job.params, progress=stopper(stop, 0.05, 0.3)
        )
        labels, recolored, inertia = yield from label_by_blocks(job.full, model)
    except Exception as err:  # every failure is reported, never a raw traceback
        return Outcome(error=failure(err), seconds=time.perf_counter() - start)
    counts = np.bincount(labels.ravel(), minlength=model.n_clusters + 1)[1:]
    return Outcome(
        labels=labels, recolored=recolored, model=model, inertia=inertia, n_iter=n_iter,
        exact=False, counts=counts, seconds=time.perf_counter() - start, notes=notes,
    )  # fmt: skip


def _run_in_memory(job: Job, start: float, stop=None):
    """Fit, label, recolour the whole image as :func:`segment` does (compressing it once)."""
    full = job.full.materialized()
    tick = Progress(0.05, "fitting")
    yield tick
    fitted, notes = yield from _in_thread(
        tick, fit_planes, full, job.params, progress=stopper(stop, 0.05, 0.6)
    )
    tick = Progress(0.6, "labelling")
    yield tick
    labels, inertia, counts = yield from _in_thread(tick, label_fitted, fitted)
    tick = Progress(0.85, "recolouring")
    yield tick
    recolored = yield from _in_thread(tick, fitted.model.recolor, fitted.image, labels)
    if full.extras:  # drop the extra channels again: the recoloured layer is the source's shape
        source = np.asarray(full.image)
        recolored = recolored[..., 0]
        if recolored.dtype != source.dtype:
            recolored = ft.cast_colors(recolored, source.dtype)
    return Outcome(
        labels=labels, recolored=recolored, model=fitted.model, inertia=inertia,
        n_iter=fitted.n_iter, exact=fitted.exact, counts=counts,
        seconds=time.perf_counter() - start, notes=notes,
    )  # fmt: skip


def label_by_blocks(full: Planes, model: KMeansModel):
    """Label and recolour ``full`` slab by slab (a multiscale level may not fit in memory)."""
    labels = np.zeros(full.spatial_shape, label_dtype(model.n_clusters))
    recolored = None
    inertia = 0.0
    index = list(blocks(full.spatial_shape))
    for i, where in enumerate(index):
        yield Progress(0.3 + 0.7 * i / len(index), "labelling")
        block = full.block(where)  # read once (a dask block is computed here)
        labels[where], part = _label_block(model, block)
        inertia += part
        painted = _recolor_block(model, block, labels[where])
        if recolored is None:
            recolored = np.empty(tuple(full.image.shape), painted.dtype)
        recolored[where] = painted
    return labels, recolored, inertia
