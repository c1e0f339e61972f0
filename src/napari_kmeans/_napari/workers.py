"""The computations of the widget, as generators a ``napari`` worker thread runs.

Each ``run_*`` generator takes a job from :mod:`.jobs` (and a ``stop`` event that Cancel sets),
yields :class:`~.jobs.Progress` and returns a result object; every failure is returned as the
result's ``error`` (see :func:`~.jobs.failure`), never raised. Long engine steps run in a helper
thread (:func:`_in_thread`) given a :class:`~.jobs.Stopper` as their ``progress`` callback, so
that Cancel stops the computation itself. Nothing here imports napari or Qt.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import threading
import time
import warnings
from collections.abc import Iterator

import numpy as np

from .. import edit, lazy
from .. import features as ft
from ..choose_k import elbow, inertia_curve
from ..model import KMeansModel
from ..segment import fit, fit_prepared, prepare_image, segment_frames
from ..threads import THREADS
from .jobs import (
    POLL_SECONDS,
    SLAB_PIXELS,
    Computed,
    ComputeJob,
    Curve,
    Edited,
    EditJob,
    InputError,
    Instances,
    InstancesJob,
    Job,
    LazyJob,
    Outcome,
    Params,
    Planes,
    Progress,
    Stopper,
    blocks,
    failure,
    present_labels,
    stopper,
)


def _with_notes(func, *args, **kwargs):
    """``(func(*args, **kwargs), notes)``; notes are the engine's UserWarnings as text."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        value = func(*args, **kwargs)
    notes = tuple(str(w.message) for w in caught if issubclass(w.category, UserWarning))
    return value, notes


def fit_model(planes: Planes, params: Params, progress=None, match_to=None, full_shape=None):
    """Fit a model to ``planes`` (with their seeds) as :func:`napari_kmeans.segment` does,
    its label IDs matched to ``match_to``'s when given.

    ``full_shape`` is the full resolution's spatial shape when ``planes`` are a coarser pyramid
    level (``planes.full_shape``, on the planes' own axes, comes first when known): the recipe
    is then applied at the level's scale (:meth:`Recipe.at_level`) and the model keeps it at the
    full resolution's. Returns ``(model, n_iter, exact, notes)``;
    ``notes`` are the engine's warnings as text. ``progress`` is the engine's callback (a
    :func:`stopper` stops the fit).
    """
    image = ft.as_image(planes.assembled())
    layout = planes.layout()
    factors = level_factors(planes.full_shape or full_shape, planes.spatial_shape)
    fitted, notes = _with_notes(
        fit, image, params=params_at_level(params, factors), mask=planes.mask,
        seeds=planes.seeds, match_to=match_to, progress=progress, **layout,
    )  # fmt: skip
    return full_resolution_model(fitted.model, params, factors), fitted.n_iter, fitted.exact, notes


def full_resolution_model(model: KMeansModel, params: Params, factors) -> KMeansModel:
    """``model``, fitted on a pyramid level downsampled by ``factors`` with the recipe at that
    level's scale, with ``params``' full-resolution recipe (its statistics scaled back)."""
    if factors is None or model.recipe is None:
        return model
    back = model.recipe.at_level(tuple(1 / f for f in factors))
    recipe = dataclasses.replace(params.recipe, standardiser=back.standardiser)
    return dataclasses.replace(model, recipe=recipe)


def level_factors(full_shape, shape):
    """Full-resolution pixels per pixel of a pyramid level, per spatial axis (the trailing
    axes when ``shape`` is a slice), or None when it is the full resolution (or unknown)."""
    if full_shape is None:
        return None
    factors = tuple(a / b for a, b in zip(full_shape[len(full_shape) - len(shape) :], shape,
                                          strict=True))  # fmt: skip
    return None if all(f == 1 for f in factors) else factors


def params_at_level(params: Params, factors) -> Params:
    """``params`` with their recipe at a pyramid level's scale (:meth:`Recipe.at_level`)."""
    if factors is None:
        return params
    recipe = params.recipe.at_level(factors)
    return params.replace(smoothing=recipe.smoothing, features=recipe.features,
                          majority=recipe.majority, min_size=recipe.min_size)  # fmt: skip


def model_at_level(model: KMeansModel, full_shape, shape) -> KMeansModel:
    """``model`` with its recipe at the scale of a pyramid level of spatial ``shape``."""
    factors = level_factors(full_shape, shape)
    if factors is None or model.recipe is None:
        return model
    return dataclasses.replace(model, recipe=model.recipe.at_level(factors))


def fit_planes(planes: Planes, params: Params, progress=None, match_to=None, kept=None):
    """Stages 1 and 2 of :func:`napari_kmeans.segment` on in-memory planes (with their seeds,
    the label IDs matched to ``match_to``'s when given).

    ``kept`` (a live preview's :class:`~.jobs.Kept`) gives back stage 1 when the pixels, mask
    and the settings it uses are those of the last preview, and keeps it for the next.
    Returns ``(FittedImage, notes)``: its ``label()`` finishes the job exactly as ``segment``
    does, without laying the image out or assigning its values again.
    """

    def stages():
        image = ft.as_image(planes.assembled())
        ticket = None if kept is None else kept.ticket()  # a clear() from now on: not kept
        key = None if kept is None else preparation_key(image, planes, params)
        prepared = None if key is None else kept.get(key)
        if prepared is None:
            prepared = prepare_image(
                image, mask=planes.mask, params=params, progress=progress, **planes.layout()
            )
            if key is not None:
                kept.put(key, prepared, ticket)
        return fit_prepared(
            prepared, params, seeds=planes.seeds, match_to=match_to, progress=progress
        )

    return _with_notes(stages)


# the settings stage 1 (laying pixels out, compressing or sampling them) does not use
FIT_ONLY = ("n_clusters", "n_init", "max_iter", "tol", "pin_seeds", "chunk_size")


def preparation_key(image: np.ndarray, planes: Planes, params: Params) -> tuple:
    """What stage 1 of ``image`` (``planes`` assembled) depends on: its pixels and the mask's
    (hashed: a layer's data may be changed in place), the layout, and every setting but the
    fit's (:data:`FIT_ONLY`)."""
    h = hashlib.sha1(usedforsecurity=False)
    for array in (image, planes.mask):
        if array is None:
            h.update(b"none")
            continue
        array = np.ascontiguousarray(array)
        h.update(f"{array.shape} {array.dtype.str}".encode())
        h.update(memoryview(array).cast("B"))
    settings = {k: v for k, v in dataclasses.asdict(params).items() if k not in FIT_ONLY}
    return h.digest(), repr(sorted(planes.layout().items())), repr(sorted(settings.items()))


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


def _label_slab(model: KMeansModel, planes: Planes):
    """Labels (spatial shape) and inertia of one block (zeros where no pixel is valid)."""
    image = np.asarray(planes.assembled())
    inside = None if planes.mask is None else ft.mask_inside(planes.mask)
    pixels, valid = ft.layout(image, model.spec, inside)
    labelled = model.label_pixels(pixels, valid, image.dtype)
    return labelled.labels.reshape(planes.spatial_shape), float(labelled.inertia or 0.0)


def _recolor_slab(model: KMeansModel, planes: Planes, labels: np.ndarray) -> np.ndarray:
    """The source image of one block recoloured (extra channels dropped again)."""
    image = planes.assembled()
    out = model.recolor(image, labels)
    if not planes.extras:
        return out
    source = np.asarray(planes.image)
    return ft.cast_colors(out[..., 0], source.dtype) if out.dtype != source.dtype else out[..., 0]


def run_segment(job: Job, stop: threading.Event | None = None) -> Iterator[Progress]:
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
            tick, fit_model, fit_planes, job.params, progress=stopper(stop, 0.05, 0.3),
            match_to=job.match_to, full_shape=job.full.spatial_shape,
        )  # fmt: skip
        labels, recolored, inertia = yield from label_by_blocks(job.full, model)
        sure = (yield from confidence_of(job.full, model)) if job.confidence else None
    except Exception as err:  # every failure is reported, never a raw traceback
        return Outcome(error=failure(err), seconds=time.perf_counter() - start)
    counts = np.bincount(labels.ravel(), minlength=model.n_clusters + 1)[1:]
    return Outcome(
        labels=labels, recolored=recolored, model=model, inertia=inertia, n_iter=n_iter,
        exact=False, counts=counts, seconds=time.perf_counter() - start, notes=notes,
        confidence=sure,
    )  # fmt: skip


def _run_in_memory(job: Job, start: float, stop=None):
    """Fit, label, recolour the whole image as :func:`segment` does (compressing it once)."""
    full = job.full.materialized()
    tick = Progress(0.05, "fitting")
    yield tick
    kept = {} if job.kept is None else {"kept": job.kept}  # a live preview's stage 1
    fitted, notes = yield from _in_thread(
        tick, fit_planes, full, params_at_level(job.params, job.factors),
        progress=stopper(stop, 0.05, 0.6), match_to=job.match_to, **kept,
    )  # fmt: skip
    tick = Progress(0.6, "labelling")
    yield tick
    labels, inertia, counts = yield from _in_thread(tick, fitted.label)
    tick = Progress(0.85, "recolouring")
    yield tick
    recolored = yield from _in_thread(
        tick, fitted.model.recolor, fitted.prepared.image, labels, threads=THREADS
    )  # as segment does: chunks side by side
    if full.extras:  # drop the extra channels again: the recoloured layer is the source's shape
        source = np.asarray(full.image)
        recolored = recolored[..., 0]
        if recolored.dtype != source.dtype:
            recolored = ft.cast_colors(recolored, source.dtype)
    sure = (yield from confidence_of(full, fitted.model)) if job.confidence else None
    model = full_resolution_model(fitted.model, job.params, job.factors)
    return Outcome(
        labels=labels, recolored=recolored, model=model, inertia=inertia,
        n_iter=fitted.n_iter, exact=fitted.exact, counts=counts,
        seconds=time.perf_counter() - start, notes=notes, confidence=sure,
    )  # fmt: skip


def run_frames(job: Job, stop=None):
    """Fit each frame (first axis) on its own, IDs matched frame to frame (a generator, as
    :func:`run_segment`); the outcome's model is the last frame's."""
    start = time.perf_counter()
    try:
        yield Progress(0.0, "reading data")
        full = job.full.materialized()
        tick = Progress(0.02, "fitting each frame")
        yield tick
        image = ft.as_image(full.assembled())
        layout = full.layout()
        if layout["channel_axis"] is not None:
            layout["channel_axis"] = image.ndim - 1
        done, notes = yield from _in_thread(
            tick, _with_notes, segment_frames, image, params=job.params, time_axis=0,
            match_to=job.match_to, mask=full.mask, seeds=full.seeds,
            progress=stopper(stop, 0.02, 0.95), **layout,
        )  # fmt: skip
        recolored = done.recolored
        if full.extras:  # the recoloured layer is the source's shape
            source = np.asarray(full.image)
            recolored = ft.cast_colors(recolored[..., 0], source.dtype)
        model = done.frames[-1].model  # labels of earlier frames only keep their colours
        sure = None
        if job.confidence:  # each frame by its own model
            tick = Progress(0.95, "confidence")
            yield tick
            sure = yield from _in_thread(tick, _frames_confidence, full, done.frames)
    except Exception as err:  # every failure is reported, never a raw traceback
        return Outcome(error=failure(err), seconds=time.perf_counter() - start)
    labels = done.labels
    counts = np.bincount(labels.ravel(), minlength=model.n_clusters + 1)[1 : model.n_clusters + 1]
    inertia = sum(float(f.inertia) for f in done.frames)
    return Outcome(
        labels=labels, recolored=recolored, model=model, inertia=inertia,
        n_iter=max(int(f.n_iter) for f in done.frames), exact=False, counts=counts,
        seconds=time.perf_counter() - start, notes=notes, confidence=sure,
    )  # fmt: skip


def _frames_confidence(planes: Planes, frames) -> np.ndarray:
    """The confidence of each frame (first axis) by that frame's own model, stacked."""
    image = planes.assembled()
    mask = planes.mask
    return np.stack([
        frame.model.confidence(
            image[t], mask=None if mask is None else mask[t], rgb=planes.rgb
        )
        for t, frame in enumerate(frames)
    ])  # fmt: skip


def confidence_of(planes: Planes, model: KMeansModel):
    """The per-pixel confidence of ``model``'s labels of in-memory ``planes`` (a generator)."""
    tick = Progress(0.9, "confidence")
    yield tick
    image = planes.assembled()
    return (yield from _in_thread(tick, model.confidence, image, mask=planes.mask, rgb=planes.rgb))


def label_by_blocks(full: Planes, model: KMeansModel):
    """Label and recolour ``full`` slab by slab (a multiscale level may not fit in memory).

    A model with a feature recipe (smoothing, filters, clean-up) labels the whole image at once:
    its filters and clean-up look at neighbours across slab borders.
    """
    if model.uses_recipe:
        planes = full.materialized()
        tick = Progress(0.3, "labelling (features and clean-up)")
        yield tick
        labels = yield from _in_thread(tick, _predict_whole, model, planes)
        recolored = _recolor_slab(model, planes, labels)
        return labels, recolored, None  # the inertia of the features is not kept here
    labels = np.zeros(full.spatial_shape, model.label_dtype)
    recolored = None
    inertia = 0.0
    index = list(blocks(full.spatial_shape))
    for i, where in enumerate(index):
        yield Progress(0.3 + 0.7 * i / len(index), "labelling")
        block = full.block(where)  # read once (a dask block is computed here)
        labels[where], part = _label_slab(model, block)
        inertia += part
        painted = _recolor_slab(model, block, labels[where])
        if recolored is None:
            recolored = np.empty(tuple(full.image.shape), painted.dtype)
        recolored[where] = painted
    return labels, recolored, inertia


def _predict_whole(model: KMeansModel, planes: Planes) -> np.ndarray:
    return model.predict(planes.assembled(), mask=planes.mask)


def run_apply(job: Job, model: KMeansModel, stop=None):
    """Label and recolour ``job.full`` with ``model`` (a generator, as :func:`run_segment`)."""
    start = time.perf_counter()
    try:
        yield Progress(0.0, "reading data")
        labels, recolored, inertia = yield from label_by_blocks(job.full, model)
    except Exception as err:  # every failure is reported, never a raw traceback
        return Outcome(error=failure(err), seconds=time.perf_counter() - start)
    counts = np.bincount(labels.ravel(), minlength=model.n_clusters + 1)[1:]
    return Outcome(
        labels=labels, recolored=recolored, model=model, inertia=inertia, n_iter=0,
        exact=False, counts=counts, seconds=time.perf_counter() - start,
    )  # fmt: skip


def assembled_lazy(planes: Planes):
    """The dask array the engine clusters: the image, with extra channels stacked last."""
    if not planes.extras:
        return planes.image
    import dask.array as da

    return da.stack([planes.image, *planes.extras], axis=-1)


def fit_lazy(planes: Planes, params: Params, progress=None, match_to=None):
    """Fit a model to dask ``planes`` from block-wise reductions, as ``segment`` does on dask.

    Returns ``(LazyFit, notes)`` (:func:`napari_kmeans.lazy.fit_lazy`: counts and inertia are
    known when the fit saw every value with its count); ``notes`` are the engine's warnings as
    text. ``progress`` is the engine's callback (a :func:`~.jobs.stopper` stops the fit).
    """
    image = assembled_lazy(planes)
    layout = planes.layout()
    return _with_notes(
        lazy.fit_lazy, image, params, mask=planes.mask, seeds=planes.seeds, match_to=match_to,
        progress=progress, **layout,
    )  # fmt: skip


def _fit_in_memory(planes: Planes, params: Params, progress=None, match_to=None,
                   full_shape=None):  # fmt: skip
    return fit_model(planes.materialized(), params, progress, match_to, full_shape)


def lazy_confidence(model: KMeansModel, planes: tuple[Planes, ...]) -> list:
    """The confidence of ``model``'s labels, a lazy float32 array per level."""
    return [
        lazy.confidence_lazy(
            model_at_level(model, planes[0].spatial_shape, level.spatial_shape),
            assembled_lazy(level),
            mask=level.mask,
            rgb=level.rgb,
        )
        for level in planes
    ]


def lazy_levels(model: KMeansModel, planes: tuple[Planes, ...]):
    """``(labels, recolored)``: a list of dask arrays each, one per level; nothing is computed.
    Each level is labelled with the model's recipe at its scale (:func:`model_at_level`)."""
    labels, recolored = [], []
    for level in planes:
        image = assembled_lazy(level)
        found = model_at_level(model, planes[0].spatial_shape, level.spatial_shape).predict(
            image, mask=level.mask
        )
        painted = model.recolor(image, found)
        if level.extras:  # drop the extra channels again: the recolored layer is the source's
            painted = painted[..., 0]
            dtype = level.image.dtype
            if painted.dtype != dtype:
                painted = painted.map_blocks(ft.cast_colors, dtype, dtype=dtype)
        labels.append(found)
        recolored.append(painted)
    return labels, recolored


def run_lazy(job: LazyJob, stop=None):
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
            model, n_iter, _, notes = yield from _in_thread(
                tick, _fit_in_memory, job.fit, job.params, progress=stopper(stop, 0.05, 0.9),
                match_to=job.match_to, full_shape=job.levels[0].spatial_shape,
            )  # fmt: skip
        else:
            tick = Progress(0.05, "fitting (reading the data block by block)")
            yield tick
            fitted, notes = yield from _in_thread(
                tick, fit_lazy, job.full, job.params, progress=stopper(stop, 0.05, 0.9),
                match_to=job.match_to,
            )  # fmt: skip
            model, n_iter, exact, counts, inertia = fitted[:5]
        yield Progress(0.95, "building lazy outputs")
        labels, recolored = lazy_levels(model, job.levels)
        sure = lazy_confidence(model, job.levels) if job.confidence else None
    except Exception as err:  # every failure is reported, never a raw traceback
        return Outcome(error=failure(err), seconds=time.perf_counter() - start)
    if not job.multiscale:
        labels, recolored = labels[0], recolored[0]
        sure = None if sure is None else sure[0]
    return Outcome(
        labels=labels, recolored=recolored, model=model, inertia=inertia, n_iter=int(n_iter),
        exact=bool(exact), counts=counts, seconds=time.perf_counter() - start, notes=notes,
        lazy=True, confidence=sure,
    )  # fmt: skip


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


def run_compute(job: ComputeJob, stop=None):
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


def run_curve(planes: Planes, params: Params, k_max: int, stop=None):
    """The inertia curve of ``planes`` for k = 2..k_max (a worker generator).

    Yields :class:`~.runner.Progress`; setting ``stop`` stops the computation itself. Returns a
    :class:`Curve`, with every failure as its ``error``.
    """
    try:
        tick = Progress(0.0, "reading data")
        yield tick
        full = planes.materialized()
        tick = Progress(0.05, "inertia curve")
        yield tick
        ks, inertias = yield from _in_thread(
            tick, _curve, full, params, k_max, progress=stopper(stop, 0.05, 1.0)
        )
    except Exception as err:  # every failure is reported, never a raw traceback
        return Curve(error=failure(err))
    if ks.size < 2:
        return Curve(error="the image has a single distinct value: there is no k to suggest.")
    total, ks, inertias = inertias[0], ks[1:], inertias[1:]  # k = 1: the total variation
    explained = 1.0 - inertias / total if total > 0 else np.ones_like(inertias)
    return Curve(ks, inertias, elbow(ks, inertias), explained=explained)


def _curve(full: Planes, params: Params, k_max: int, progress=None):
    """Inertia for k = 1..k_max (k = 1 gives the total sum of squares), with the features and
    settings of a run (the same recipe: smoothing, texture, filters, position)."""
    return inertia_curve(
        full.assembled(), k_max, k_min=1, **full.layout(), mask=full.mask,
        n_init=params.n_init, params=params, progress=progress,
    )  # fmt: skip


def run_edit(job: EditJob, stop=None):
    """Compute ``job`` (a worker generator yielding :class:`Progress`); returns :class:`Edited`.

    Nothing is written to a layer here; every failure becomes ``Edited(error=...)``.
    """
    try:
        tick = Progress(0.05, job.what)
        yield tick
        return (yield from _in_thread(tick, _edit, job, progress=stopper(stop)))
    except Exception as err:  # every failure is reported, never a raw traceback
        return Edited(error=failure(err))


def _edit(job: EditJob, progress=None) -> Edited:
    model, labels, notes = job.model, job.labels, ()
    if job.change is not None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            model, labels = job.change(model, labels, job.planes, progress)
        notes = tuple(str(w.message) for w in caught)
    progress(0.7, "colours")
    colors, counts = edit.label_stats(job.planes.assembled(), labels, model)
    k = model.n_clusters
    if job.recount:
        model = dataclasses.replace(model, colors=colors[:k].copy())
    else:
        colors[:k] = model.colors
    recolored = None
    if job.target.recolored is not None:
        progress(0.85, "recolouring")
        recolored = recolor_source(job.planes, model, colors, labels)
    moved = label_moves(job.labels, labels) if job.change is not None else {}
    return Edited(labels, model, colors, counts, recolored, notes, moves=moved)


def label_moves(before: np.ndarray, after: np.ndarray) -> dict[int, list[int]]:
    """For each label whose pixels changed value, the labels they have now: ``{old: [new...]}``.

    >>> label_moves(np.array([1, 2, 2, 3]), np.array([1, 2, 3, 2]))
    {2: [2, 3], 3: [2]}
    """
    before, after = np.asarray(before).ravel(), np.asarray(after).ravel()
    n = int(max(before.max(initial=0), after.max(initial=0))) + 1
    if n > 4096:  # label values of other tools: not worth a table
        return {}
    pairs = np.flatnonzero(np.bincount(before.astype(np.intp) * n + after, minlength=n * n))
    moves: dict[int, list[int]] = {}
    for old, new in zip(*np.divmod(pairs, n), strict=True):
        if old > 0:
            moves.setdefault(int(old), []).append(int(new))
    return {old: new for old, new in moves.items() if new != [old]}


def recolor_source(planes, model: KMeansModel, colors, labels) -> np.ndarray:
    """The source recoloured with ``colors`` (one per label 1..n), extra channels dropped."""
    palette = dataclasses.replace(model, colors=colors)  # recolor only reads the colours
    out = palette.recolor(planes.assembled(), labels)
    if not planes.extras:
        return out
    source = np.asarray(planes.image)
    return ft.cast_colors(out[..., 0], source.dtype) if out.dtype != source.dtype else out[..., 0]


def run_instances(job: InstancesJob, stop=None):
    """Connected components (a worker generator); returns :class:`Instances`."""
    try:
        tick = Progress(0.05, "instances")
        yield tick
        return (yield from _in_thread(tick, _instances, job))
    except InputError as err:
        return Instances(error=str(err))
    except Exception as err:  # every failure is reported, never a raw traceback
        return Instances(error=failure(err))


def _instances(job: InstancesJob) -> Instances:
    chosen = present_labels(job.labels, job.clusters, job.layer.name) if job.clusters else None
    inst, cluster_of = edit.instances(job.labels, chosen, min_size=job.min_size)
    sizes = np.bincount(inst.ravel(), minlength=cluster_of.size + 1)[1:]
    return Instances(inst, cluster_of, sizes, chosen)
