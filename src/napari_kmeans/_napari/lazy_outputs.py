"""Lazy mode: output layers for dask-backed and multiscale image layers, computed as you browse.

When the chosen image layer holds a dask array or a multiscale pyramid (and the scope is the
whole data), a run never reads the full resolution at once. The model is fitted in the worker
(on a lower pyramid level or on the slice on screen, in memory; or from block-wise reductions over
the dask array with :func:`napari_kmeans.lazy.support`), and the output layers hold dask arrays,
``model.predict(level)`` and ``model.recolor(level, labels)`` for every pyramid level, which napari
computes chunk by chunk for what is on screen. :mod:`.into_memory` computes them when they fit.

Nothing here imports Qt; dask is imported only when a lazy job is built.
"""

from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .. import features as ft
from .. import lazy
from ..model import KMeansModel
from ..segment import fit_weighted
from . import runner
from .inputs import (
    RunInfo,
    _downsample,
    _fit_level,
    _planes,
    _spatial,
    build_job,
    checked_layers,
    is_lazy,
    levels,
)
from .reuse import _extend
from .runner import Outcome, Params, Planes, Progress

TILE = 1024  # chunk side (last two spatial axes) when a numpy pyramid level is wrapped in dask

LAZY_TEXT = "outputs are computed as you browse; Compute into memory to edit"


def lazy_mode(source, current_slice: bool = False) -> bool:
    """Whether a run on ``source`` gives lazy output layers.

    True for dask-backed and multiscale image layers (when dask is installed) segmented whole;
    the current-slice scope reads the slice into memory.
    """
    return (
        source is not None and is_lazy(source) and not current_slice
        and importlib.util.find_spec("dask") is not None
    )  # fmt: skip


def mode_text(source, current_slice: bool = False) -> str:
    """The widget's line saying how a run on ``source`` will be computed."""
    if source is None:
        return "mode: no image chosen"
    if lazy_mode(source, current_slice):
        kind = f"multiscale, {len(levels(source))} levels" if source.multiscale else "dask"
        return f"mode: lazy ({kind}) — {LAZY_TEXT}"
    if is_lazy(source) and current_slice:
        return "mode: in memory (the current slice is read into memory)"
    if is_lazy(source):
        return "mode: in memory (install dask for lazy outputs)"
    return "mode: in memory"


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

    @property
    def full(self) -> Planes:
        """The full-resolution planes."""
        return self.levels[0]


def _as_dask(array, rgb: bool):
    """``array`` as a dask array; numpy levels are wrapped (nothing is copied or hashed)."""
    if lazy.is_dask(array):
        return array
    import dask.array as da

    spatial = array.ndim - 1 if rgb else array.ndim
    chunks = [1] * max(spatial - 2, 0) + [min(n, TILE) for n in array.shape[:spatial][-2:]]
    chunks += [-1] if rgb else []
    return da.from_array(array, chunks=tuple(chunks), name=False)


def _level_planes(source, extras, level: int, mask) -> Planes:
    image = _as_dask(levels(source)[level], source.rgb)
    extra = tuple(_as_dask(levels(e)[level], False) for e in extras)
    return Planes(image, source.rgb, extra, _downsample(mask, _spatial(image.shape, source.rgb)))


def build_lazy_job(
    viewer, source, params: Params, *, extras=(), mask=None, fit_slice=False, model=None,
    origin=None,
):  # fmt: skip
    """Check the chosen layers and gather a :class:`LazyJob`; returns ``(job, info)``.

    ``fit_slice`` fits on the slice on screen; ``model`` (applied from ``origin``) skips the fit.

    Raises
    ------
    InputError
        With a message for the user when the layers cannot be segmented together.
    """
    extras, _, mask_full = checked_layers(viewer, source, extras, mask, lazy=True)
    n_levels = len(levels(source))
    planes = tuple(_level_planes(source, extras, i, mask_full) for i in range(n_levels))
    fit = level = sliced = None
    if model is None and fit_slice:
        part, part_info = build_job(
            viewer, source, params, extras=extras, mask=mask, current_slice=True
        )
        fit = part.fit if part.fit is not None else part.full
        level, sliced = part_info.fit_level, part_info.slice_index
    elif model is None:
        level = _fit_level(source, None)
        fit = None if level is None else _planes(source, extras, level, None, mask_full)
    info = RunInfo(source, extras, mask, params, None, level)
    if model is not None:
        info = _extend(info, model_from=origin)
    elif fit_slice:
        info = _extend(info, fit_slice=sliced)
    return LazyJob(planes, params, fit, model, source.multiscale), info


# -- the worker ------------------------------------------------------------------------------


def assembled(planes: Planes):
    """The dask array the engine clusters: the image, with extra channels stacked last."""
    if not planes.extras:
        return planes.image
    import dask.array as da

    return da.stack([planes.image, *planes.extras], axis=-1)


class LazyFit(NamedTuple):
    """A model fitted block by block; ``counts`` and ``inertia`` are None when unknown."""

    model: KMeansModel
    n_iter: int
    exact: bool
    counts: np.ndarray | None
    inertia: float | None


def _fit_blockwise(planes: Planes, params: Params, progress=None) -> LazyFit:
    image = lazy.as_dask_image(assembled(planes))
    spec = ft.make_spec(image, color_space=params.color_space, **planes.layout())
    laid = lazy.lay_out(image, spec, planes.mask)
    found = lazy.support(laid, params.seed)
    res = fit_weighted(
        found.values, found.weights, spec, laid.dtype, params.n_clusters, n_init=params.n_init,
        max_iter=params.max_iter, tol=params.tol, seed=params.seed, covers_all=found.covers_all,
        progress=progress,
    )  # fmt: skip
    counts = inertia = None
    if found.covers_all:  # every distinct value with its count: no further pass over the data
        counts, inertia = lazy._stats(res.model, laid, found, None)
    return LazyFit(res.model, res.n_iter, res.exact, counts, inertia)


def fit_lazy(planes: Planes, params: Params, progress=None):
    """Fit a model to dask ``planes`` from block-wise reductions, as ``segment`` does on dask.

    Returns ``(LazyFit, notes)``; ``notes`` are the engine's warnings as text. ``progress`` is
    the engine's callback (a :func:`~.runner.stopper` stops the fit).
    """
    return runner._with_notes(_fit_blockwise, planes, params, progress)


def _fit_in_memory(planes: Planes, params: Params, progress=None):
    return runner.fit_model(planes.materialized(), params, progress)


def lazy_levels(model: KMeansModel, planes: tuple[Planes, ...]):
    """``(labels, recolored)``: a list of dask arrays each, one per level; nothing is computed."""
    labels, recolored = [], []
    for level in planes:
        image = assembled(level)
        found = model.predict(image, mask=level.mask)
        painted = model.recolor(image, found)
        if level.extras:  # drop the extra channels again: the recolored layer is the source's
            painted = painted[..., 0]
            dtype = level.image.dtype
            if painted.dtype != dtype:
                painted = painted.map_blocks(ft.cast_colors, dtype, dtype=dtype)
        labels.append(found)
        recolored.append(painted)
    return labels, recolored


def run(job: LazyJob, stop=None):
    """Fit (unless a model is given) and build the lazy outputs, yielding :class:`Progress`.

    Returns an :class:`Outcome` with ``lazy=True`` whose ``labels`` and ``recolored`` are dask
    arrays (lists of them, one per level, for a multiscale source); ``counts`` and ``inertia``
    are None when knowing them would need a pass over the full-resolution data.
    """
    start = time.perf_counter()
    counts = inertia = None
    n_iter, exact, notes = 0, False, ()
    try:
        yield Progress(0.0, "reading data")
        if job.model is not None:
            model = job.model
        elif job.fit is not None:
            tick = Progress(0.05, "fitting")
            yield tick
            model, n_iter, _, notes = yield from runner._in_thread(
                tick, _fit_in_memory, job.fit, job.params, progress=runner.stopper(stop, 0.05, 0.9)
            )
        else:
            tick = Progress(0.05, "fitting (reading the data block by block)")
            yield tick
            fitted, notes = yield from runner._in_thread(
                tick, fit_lazy, job.full, job.params, progress=runner.stopper(stop, 0.05, 0.9)
            )
            model, n_iter, exact, counts, inertia = fitted
        yield Progress(0.95, "building lazy outputs")
        labels, recolored = lazy_levels(model, job.levels)
    except Exception as err:  # every failure is reported, never a raw traceback
        return Outcome(error=runner.failure(err), seconds=time.perf_counter() - start)
    if not job.multiscale:
        labels, recolored = labels[0], recolored[0]
    return Outcome(
        labels=labels, recolored=recolored, model=model, inertia=inertia, n_iter=int(n_iter),
        exact=bool(exact), counts=counts, seconds=time.perf_counter() - start, notes=notes,
        lazy=True,
    )  # fmt: skip
