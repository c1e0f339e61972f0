"""Reusing a model: label an image with a given model, or fit on one slice and label them all.

Both give a :class:`~.runner.Job` and a :class:`ReuseInfo` that the widget runs and publishes as
it does a normal run; with a given model the run only labels and recolours (no fit), so the same
colour always gets the same label.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields

import numpy as np

from ..model import KMeansModel
from .inputs import RunInfo, build_job
from .runner import Job, Outcome, Params, Progress, failure, label_by_blocks


@dataclass(frozen=True)
class ReuseInfo(RunInfo):
    """A :class:`RunInfo` that also records a model fitted on one slice, or applied."""

    fit_slice: dict | None = None  # {axis: index}: fitted on that slice, every slice labelled
    model_from: str | None = None  # "layer '...'" or "file '...'": the model applied


def _extend(info: RunInfo, **kwargs) -> ReuseInfo:
    return ReuseInfo(**{f.name: getattr(info, f.name) for f in fields(RunInfo)}, **kwargs)


def fit_on_slice_job(viewer, source, params: Params, *, extras=(), mask=None):
    """Fit on the slice on screen, label the whole data with that model.

    For a timelapse or a stack: every frame is labelled by one model fitted on the current frame.
    """
    whole, info = build_job(viewer, source, params, extras=extras, mask=mask)
    part, part_info = build_job(
        viewer, source, params, extras=extras, mask=mask, current_slice=True
    )
    fit = part.fit if part.fit is not None else part.full
    return Job(whole.full, params, fit), _extend(info, fit_slice=part_info.slice_index)


def params_of(model: KMeansModel) -> Params:
    """Settings recorded for a run that applies ``model``."""
    return Params(n_clusters=model.n_clusters, color_space=model.spec.color_space, seed=model.seed)


def apply_job(viewer, source, model: KMeansModel, origin: str, **kwargs):
    """A job labelling ``source`` (with ``extras``/``mask``/``current_slice``) by ``model``."""
    job, info = build_job(viewer, source, params_of(model), **kwargs)
    return Job(job.full, job.params), _extend(info, model_from=origin)


def apply(job: Job, model: KMeansModel, stop=None):
    """Label and recolour ``job.full`` with ``model`` (a generator, as :func:`runner.run`)."""
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
