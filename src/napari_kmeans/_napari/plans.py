"""Which computation a click starts: in memory, or lazy (dask-backed and multiscale layers).

Each function checks the chosen layers (raising :class:`~.inputs.InputError` with a message for
the user) and returns ``(worker function, job, info, *arguments)`` for the widget to run.
"""

from __future__ import annotations

from . import lazy_outputs, model_io, reuse
from .inputs import build_job
from .runner import Params, run


def for_run(
    viewer, source, params: Params, *, extras=(), mask=None, current_slice=False, fit_slice=False
) -> tuple:
    """A k-means run on ``source`` (fitting on the slice on screen when ``fit_slice``)."""
    if lazy_outputs.lazy_mode(source, current_slice):
        job, info = lazy_outputs.build_lazy_job(
            viewer, source, params, extras=extras, mask=mask, fit_slice=fit_slice
        )
        return lazy_outputs.run, job, info
    if fit_slice:
        job, info = reuse.fit_on_slice_job(viewer, source, params, extras=extras, mask=mask)
    else:
        job, info = build_job(
            viewer, source, params, extras=extras, mask=mask, current_slice=current_slice
        )
    return run, job, info


def for_apply(viewer, source, model, origin: str, *, extras=(), mask=None, current_slice=False):
    """Label ``source`` with ``model`` (from ``origin``), after checking that it fits."""
    if lazy_outputs.lazy_mode(source, current_slice):
        job, info = lazy_outputs.build_lazy_job(
            viewer, source, reuse.params_of(model), extras=extras, mask=mask, model=model,
            origin=origin,
        )  # fmt: skip
        model_io.check_fits(model, job.full, info.source.name)
        return lazy_outputs.run, job, info
    job, info = reuse.apply_job(
        viewer, source, model, origin, extras=extras, mask=mask, current_slice=current_slice
    )
    model_io.check_fits(model, job.full, info.source.name)
    return reuse.apply, job, info, model
