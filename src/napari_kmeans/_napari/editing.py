"""Edits of a k-means labels layer: update after painting, merge, split, and undo.

An edit is planned on the main thread (:func:`plan` copies what it reads), computed in a worker
(:func:`compute`, which never touches a layer), then written by :func:`commit`, the one place that
writes the labels, the model (in the labels' metadata), the colormap, the features table and the
recolored layer together, after checking that nothing changed meanwhile. :func:`commit` returns a
:class:`Snapshot` that :func:`restore` puts back, only while the labels are as the edit left them.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import warnings
from dataclasses import dataclass

import numpy as np

from .. import edit
from .. import features as ft
from ..model import KMeansModel
from . import runner
from .edit_target import Target
from .inputs import InputError
from .layers import KEY, colormap, digest, display_colors, feature_table
from .runner import Progress


def parse_clusters(text: str, highest: int | None = None) -> list[int]:
    """Label values from text such as ``"2, 3"``, ``"2 3"`` or ``"2-4"`` (sorted, unique).

    With ``highest`` (the largest label the layer holds), a range reaching above it is refused
    before it is expanded, so a typo such as ``1-10000000`` costs nothing.

    >>> parse_clusters("4, 2-3 2")
    [2, 3, 4]
    >>> parse_clusters("1-10000000", highest=5)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    napari_kmeans._napari.inputs.InputError: clusters: 10000000 is above the highest label, 5; ...
    """
    values = set()
    for part in filter(None, re.split(r"[,;\s]+", text.strip())):
        match = re.fullmatch(r"(\d{1,12})(?:-(\d{1,12}))?", part)
        if match is None:
            raise InputError(
                f"clusters: '{shorten(part)}' is not a label value; write label values such as "
                "'2, 3' or '2-4', or select rows in the table."
            )
        lo, hi = sorted((int(match[1]), int(match[2] or match[1])))
        if highest is not None and hi > highest and hi > lo:
            raise InputError(
                f"clusters: {hi} is above the highest label, {highest}; type labels from 1 to "
                f"{highest}, or select rows in the table."
            )
        if hi - lo > 100_000:
            raise InputError(f"clusters: the range {lo}-{hi} is too long; type fewer labels.")
        values.update(range(lo, hi + 1))
    return sorted(values)


def shorten(text: str, limit: int = 60) -> str:
    """``text`` cut to ``limit`` characters (with an ellipsis), for messages.

    >>> shorten("x" * 100, 10)
    'xxxxxxxxx…'
    """
    text = str(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def labels_bound(layer) -> int:
    """The largest label value a k-means labels layer holds (its k for lazy labels)."""
    k = int(layer.metadata.get(KEY, {}).get("n_clusters") or 0)
    data = layer.data
    if getattr(layer, "multiscale", False) or not isinstance(data, np.ndarray):
        return k
    return max(k, int(data.max(initial=0)))


def _recolored(planes, model: KMeansModel, colors, labels) -> np.ndarray:
    """The source recoloured with ``colors`` (one per label 1..n), extra channels dropped."""
    palette = dataclasses.replace(model, colors=colors)  # recolor only reads the colours
    out = palette.recolor(planes.assembled(), labels)
    if not planes.extras:
        return out
    source = np.asarray(planes.image)
    return ft.cast_colors(out[..., 0], source.dtype) if out.dtype != source.dtype else out[..., 0]


def _metadata(layer, model: KMeansModel, what: str) -> dict:
    meta = copy.deepcopy(dict(layer.metadata))
    entry = meta.setdefault(KEY, {})
    entry["model"] = model.to_dict()
    entry["n_clusters"] = model.n_clusters
    entry["edits"] = [*entry.get("edits", []), what]
    return meta


# -- an edit: planned on the main thread, computed in a worker, written on the main thread -------


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


def plan(target: Target, what: str, change=None, *, recount=False) -> EditJob:
    """An :class:`EditJob` for ``target`` (main thread: reads the layers, copies the labels)."""
    labels = np.array(target.label_data(), copy=True)
    return EditJob(
        target, what, labels, target.model(), target.planes(), digest(target.labels.data),
        change, recount,
    )  # fmt: skip


def compute(job: EditJob, stop=None):
    """Compute ``job`` (a worker generator yielding :class:`Progress`); returns :class:`Edited`.

    Nothing is written to a layer here; every failure becomes ``Edited(error=...)``.
    """
    try:
        tick = Progress(0.05, job.what)
        yield tick
        return (yield from runner._in_thread(tick, _compute, job, progress=runner.stopper(stop)))
    except Exception as err:  # every failure is reported, never a raw traceback
        return Edited(error=runner.failure(err))


def _compute(job: EditJob, progress=None) -> Edited:
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
        recolored = _recolored(job.planes, model, colors, labels)
    return Edited(labels, model, colors, counts, recolored, notes)


def commit(job: EditJob, edited: Edited, viewer) -> Snapshot:
    """Write an edit's result to its layers, all together; returns the :class:`Snapshot` to undo.

    Raises
    ------
    InputError
        When the labels changed (painting, a re-run) or a layer left the viewer while the edit
        was computed: nothing is written, so nothing done meanwhile is lost.
    """
    target = job.target
    layer = target.labels
    if any(part not in viewer.layers for part in job.layers):
        raise InputError(f"a layer of '{layer.name}' left the viewer during the edit; not done.")
    if digest(layer.data) != job.written:
        raise InputError(
            f"'{layer.name}' changed while the edit was computed (painting or a re-run); "
            "nothing was changed. Ask for the edit again."
        )
    before = snapshot(target)
    layer.colormap = colormap(display_colors(edited.colors, target.source, target.extras))
    _set_labels(layer, target.expand(edited.labels))
    layer.features = feature_table(edited.colors, edited.counts, target.names())
    layer.metadata = _metadata(layer, edited.model, job.what)
    if target.recolored is not None and edited.recolored is not None:
        target.recolored.data = target.expand(edited.recolored)
        target.recolored.metadata = _metadata(target.recolored, edited.model, job.what)
    return dataclasses.replace(before, after=digest(layer.data), run=layer.metadata[KEY].get("run"))


def _set_labels(layer, data: np.ndarray) -> None:
    """Replace the layer's labels when they change (Update leaves them, and napari's undo).

    napari's labels undo would replay old paint strokes onto relabelled data: they are dropped.
    """
    current = layer.data
    if (
        current.shape == data.shape
        and current.dtype == data.dtype
        and np.array_equal(current, data)
    ):
        return
    layer.data = data
    reset = getattr(layer, "_reset_history", None)
    if reset is not None:
        reset()


def update_job(target: Target) -> EditJob:
    """Recount after painting: counts, fractions and mean colour of every label."""
    return plan(target, "update from labels", recount=True)


def update_message(edited: Edited, k: int) -> str:
    n = int(edited.labels.max(initial=0))
    text = f"updated {max(n, k)} labels from the painted data"
    return text + (
        f"; labels {k + 1} to {n} are painted beyond k = {k}"
        if n > k + 1
        else (f"; label {n} is painted beyond k = {k}" if n == k + 1 else "")
    )


def merge_job(target: Target, clusters: list[int]) -> EditJob:
    """Merge ``clusters`` into one (labels stay ordered and contiguous)."""

    def change(model, labels, planes, progress):
        return edit.merge(model, labels, clusters)

    return plan(target, f"merge {clusters}", change)


def split_job(target: Target, clusters: list[int], n: int, seed: int, n_init: int) -> EditJob:
    """Split the one cluster in ``clusters`` into ``n`` sub-clusters."""
    if len(clusters) != 1:
        raise InputError(f"Split takes one cluster, got {clusters or 'none'}; type one label.")

    def change(model, labels, planes, progress):
        return edit.split(
            model, planes.assembled(), labels, clusters[0], n, seed=seed, n_init=n_init,
            progress=progress,
        )  # fmt: skip

    return plan(target, f"split {clusters[0]} into {n} (seed {seed})", change)


@dataclass(frozen=True)
class Snapshot:
    """Everything :func:`commit` changes, as it was before an edit."""

    labels: object
    label_data: np.ndarray
    colors: dict
    features: object
    metadata: dict
    recolored: object
    recolored_data: np.ndarray | None
    recolored_metadata: dict | None
    after: bytes | None = None  # digest of the labels the edit wrote: Undo only while unchanged
    run: str | None = None  # the run the edited labels belong to (a re-run replaces it)


def snapshot(target: Target) -> Snapshot:
    rec = target.recolored
    return Snapshot(
        target.labels, np.array(target.labels.data, copy=True),
        dict(target.labels.colormap.color_dict), target.labels.features.copy(),
        copy.deepcopy(dict(target.labels.metadata)), rec,
        None if rec is None else np.array(rec.data, copy=True),
        None if rec is None else copy.deepcopy(dict(rec.metadata)),
    )  # fmt: skip


def restore(snap: Snapshot, viewer) -> None:
    """Put the snapshot back (the recolored layer too, while it is in the viewer).

    Raises
    ------
    InputError
        When the labels layer is gone, or changed since the edit (painting, a re-run in place):
        undoing would silently discard that work, so nothing is changed.
    """
    from napari.utils.colormaps import DirectLabelColormap

    layer = snap.labels
    if layer not in viewer.layers:
        raise InputError(f"'{layer.name}' was removed; there is nothing to undo.")
    if snap.run is not None and layer.metadata.get(KEY, {}).get("run") != snap.run:
        raise InputError(
            f"'{layer.name}' was re-run since the last edit; Undo would bring back the old run "
            "and lose the new one, so nothing was changed."
        )
    if snap.after is not None and digest(layer.data) != snap.after:
        raise InputError(
            f"'{layer.name}' was painted (or changed) after the last edit; Undo would discard "
            "those strokes, so nothing was changed. Undo painting with napari's own undo "
            "(Ctrl/Cmd-Z on the labels layer) first."
        )
    layer.colormap = DirectLabelColormap(color_dict=snap.colors)
    _set_labels(layer, snap.label_data.copy())
    layer.features = snap.features.copy()
    layer.metadata = copy.deepcopy(snap.metadata)
    if snap.recolored is not None and snap.recolored in viewer.layers:
        snap.recolored.data = snap.recolored_data.copy()
        snap.recolored.metadata = copy.deepcopy(snap.recolored_metadata)
