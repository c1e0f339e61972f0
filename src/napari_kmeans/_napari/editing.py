"""Editing a k-means labels layer: its target layers, edits with undo, and model files.

:func:`resolve` finds a labels layer's source, extra channels and recolored layer (the widget's
own record of its runs first, else by name, checked by fingerprint). An edit is planned on the
main thread (:func:`plan_edit` copies what it reads), computed in a worker
(:func:`~.workers.run_edit`, which never touches a layer), then written by :func:`commit`, the one
place that writes the labels, the model (in the labels' metadata), the colormap, the features
table and the recolored layer together, after checking that nothing changed meanwhile.
:func:`commit` returns a :class:`Snapshot` that :func:`restore` puts back, only while the labels
are as the edit left them. Model files are read only as JSON, with a bound, and validated: nothing
in them is ever executed.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from napari.layers import Image, Labels

from .. import edit
from ..model import KMeansModel
from .jobs import Edited, EditJob, InputError, InstancesJob, Planes, is_lazy, levels
from .outputs import (
    KEY,
    brightness,
    digest,
    display_colors,
    edit_metadata,
    feature_table,
    fingerprint,
    labels_colormap,
    set_labels,
    style_of,
)


def is_kmeans_labels(layer) -> bool:
    """True for a Labels layer made by a k-means run (or by applying a model)."""
    meta = getattr(layer, "metadata", {}).get(KEY)
    return isinstance(layer, Labels) and isinstance(meta, dict) and meta.get("role") == "labels"


def kmeans_labels(viewer) -> list[Labels]:
    """The k-means labels layers of the viewer, in layer-list order."""
    return [layer for layer in viewer.layers if is_kmeans_labels(layer)]


@dataclass(frozen=True)
class Target:
    """A k-means labels layer with its source layers, recolored layer and model."""

    labels: Labels
    recolored: Image | None
    source: Image
    extras: tuple
    index: dict  # {axis: i} of the slice the labels were made from (length-1 axes); {} if none

    @property
    def meta(self) -> dict:
        return self.labels.metadata[KEY]

    def model(self) -> KMeansModel:
        """The model stored in the labels layer's metadata."""
        try:
            return KMeansModel.from_dict(self.meta.get("model"))
        except ValueError as err:
            raise InputError(f"'{self.labels.name}' holds no usable model: {err}") from None

    def key(self, ndim: int) -> tuple:
        return tuple(self.index.get(a, slice(None)) for a in range(ndim))

    def label_data(self) -> np.ndarray:
        """The labels as the engine sees them (the slice axes dropped)."""
        data = np.asarray(self.labels.data)
        return data[tuple(0 if a in self.index else slice(None) for a in range(data.ndim))]

    def expand(self, array: np.ndarray) -> np.ndarray:
        """Put back the slice axes (length 1) that :meth:`label_data` dropped."""
        return np.expand_dims(array, tuple(sorted(self.index))) if self.index else array

    def planes(self) -> Planes:
        """The source pixels (with the extra channels) that the labels label, in memory."""
        ndim = self.source.ndim
        key = self.key(ndim)
        image = levels(self.source)[0][key]
        extras = tuple(levels(e)[0][key] for e in self.extras)
        return Planes(image, self.source.rgb, extras).materialized()

    def names(self) -> list[str]:
        """The channel names of the features table's ``center_*`` columns."""
        if self.source.rgb:
            return ["red", "green", "blue"]
        if not self.extras:
            return ["value"]
        return [layer.name for layer in (self.source, *self.extras)]


def _by_name(viewer, name, what, owner, fingerprints):
    """The image layer called ``name``, when it holds the pixels ``owner`` was made from."""
    if not (name in viewer.layers and isinstance(viewer.layers[name], Image)):
        raise InputError(
            f"the {what} '{name}' that '{owner}' was made from is not in the viewer (removed or "
            "renamed): add it back (or rename it back) to edit these labels."
        )
    layer = viewer.layers[name]
    want = (fingerprints or {}).get(name)
    if want is not None and fingerprint(layer) != want:
        raise InputError(
            f"the {what} '{name}' in the viewer is not the image '{owner}' was made from (its "
            "pixels differ; the original was removed): edits would take the colours from the "
            "wrong image. Add the original image back, or run k-means on this one."
        )
    return layer


def _recolored_layer(viewer, meta, tracked):
    if tracked is not None and tracked.recolored in viewer.layers:
        return tracked.recolored
    run = meta.get("run")
    for layer in viewer.layers:
        other = layer.metadata.get(KEY) if isinstance(layer, Image) else None
        if (
            run
            and isinstance(other, dict)
            and other.get("role") == "recolored"
            and (other.get("run") == run)
        ):
            return layer
    return None


def lazy_refusal(layer) -> InputError:
    """The error of an edit asked of lazy labels (dask-backed or multiscale)."""
    return InputError(
        f"'{layer.name}' is lazy: its labels are computed as you browse and are not in memory. "
        "Click 'Compute into memory' (Edit tab) first, then edit them."
    )


def resolve(viewer, layer, outputs=(), *, allow_lazy=False) -> Target:
    """The :class:`Target` of k-means labels ``layer``; ``outputs`` are the widget's runs.

    Raises
    ------
    InputError
        When ``layer`` is not a k-means labels layer of the viewer, is a live preview, is lazy
        (dask-backed or multiscale) unless ``allow_lazy``, or its source is gone or no longer
        has the labels' shape.
    """
    if layer is None or layer not in viewer.layers or not is_kmeans_labels(layer):
        raise InputError(
            "No k-means labels layer chosen: run k-means (or apply a model), then choose its "
            "labels layer under 'k-means labels'."
        )
    meta = layer.metadata[KEY]
    if meta.get("preview"):
        raise InputError(
            f"'{layer.name}' is a live preview of what is on screen, not a result: press Run "
            "to segment the whole scope, then edit that result."
        )
    if is_lazy(layer) and not allow_lazy:
        raise lazy_refusal(layer)
    params = meta.get("parameters") or {}
    tracked = next((o for o in outputs if o.labels is layer), None)
    source = tracked.source() if tracked is not None else None
    prints = meta.get("fingerprints")
    if source is None or source not in viewer.layers:
        source = _by_name(viewer, meta.get("source"), "image", layer.name, prints)
    extras = tuple(
        _by_name(viewer, name, "extra channel", layer.name, prints)
        for name in params.get("extra_channels") or ()
    )
    index = {int(a): int(i) for a, i in (params.get("slice") or {}).items()}
    target = Target(layer, _recolored_layer(viewer, meta, tracked), source, extras, index)
    shape = tuple(n for a, n in enumerate(layer.data.shape) if a not in index)  # not computed
    want = levels(source)[0].shape
    want = tuple(want[:-1]) if source.rgb else tuple(want)
    want = tuple(n for a, n in enumerate(want) if a not in index)
    if shape != want:
        raise InputError(
            f"'{layer.name}' has shape {shape} but its image '{source.name}' has {want}: the "
            "image changed since the run. Re-run k-means on it."
        )
    return target


def parse_clusters(text: str, highest: int | None = None) -> list[int]:
    """Label values from text such as ``"2, 3"``, ``"2 3"`` or ``"2-4"`` (sorted, unique).

    With ``highest`` (the largest label the layer holds), a range reaching above it is refused
    before it is expanded, so a typo such as ``1-10000000`` costs nothing.

    >>> parse_clusters("4, 2-3 2")
    [2, 3, 4]
    >>> parse_clusters("1-10000000", highest=5)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    napari_kmeans._napari.jobs.InputError: clusters: 10000000 is above the highest label, 5; ...
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
    meta = layer.metadata.get(KEY, {})
    k = int(meta.get("largest_label") or meta.get("n_clusters") or 0)
    data = layer.data
    if getattr(layer, "multiscale", False) or not isinstance(data, np.ndarray):
        return k
    return max(k, int(data.max(initial=0)))


def plan_edit(target: Target, what: str, change=None, *, recount=False) -> EditJob:
    """An :class:`EditJob` for ``target`` (main thread: reads the layers, copies the labels)."""
    labels = np.array(target.label_data(), copy=True)
    return EditJob(
        target, what, labels, target.model(), target.planes(), digest(target.labels.data),
        change, recount,
    )  # fmt: skip


def moves_text(moves: dict) -> str:
    """Old-to-new label values after an edit, in words (empty when none moved).

    >>> moves_text({1: [1, 2], 2: [3], 3: [4]})
    'label 1 is now 1, 2; 2 is now 3; 3 is now 4'
    """
    parts = [f"{old} is now {', '.join(map(str, new))}" for old, new in sorted(moves.items())]
    return ("label " + "; ".join(parts)) if parts else ""


def _unchanged(job: EditJob, edited: Edited, layer) -> bool:
    """An Update that changes nothing (no painting since the run): no undo step."""
    same_labels = np.array_equal(edited.labels, job.labels)
    same_model = edited.model.to_dict() == job.model.to_dict()
    rows = layer.features
    same_counts = "count" in rows and np.array_equal(
        np.asarray(rows["count"], dtype=float), np.asarray(edited.counts, dtype=float)
    )
    return same_labels and same_model and same_counts


def commit(job: EditJob, edited: Edited, viewer) -> Snapshot | None:
    """Write an edit's result to its layers, all together; returns the :class:`Snapshot` to undo
    (None when the edit changed nothing, so that Undo has nothing to take back).

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
    if _unchanged(job, edited, layer):
        return None
    before = snapshot(target)
    k, shown = edited.model.n_clusters, display_colors(edited.colors, target.source, target.extras)
    layer.colormap = labels_colormap(
        k, style_of(layer), edited.counts, len(edited.colors), brightness(edited.model)
    )
    set_labels(layer, target.expand(edited.labels))
    layer.features = feature_table(edited.colors, edited.counts, target.names())
    layer.metadata = edit_metadata(layer, edited.model, job.what, shown)
    if target.recolored is not None and edited.recolored is not None:
        target.recolored.data = target.expand(edited.recolored)
        target.recolored.metadata = edit_metadata(target.recolored, edited.model, job.what, shown)
    return dataclasses.replace(before, after=digest(layer.data), run=layer.metadata[KEY].get("run"))


def update_job(target: Target) -> EditJob:
    """Recount after painting: counts, fractions and mean colour of every label."""
    return plan_edit(target, "update from labels", recount=True)


def update_message(edited: Edited, k: int) -> str:
    n = int(edited.labels.max(initial=0))
    text = f"updated {max(n, k)} labels from the painted data"
    return text + (
        f"; labels {k + 1} to {n} are painted beyond k = {k}"
        if n > k + 1
        else (f"; label {n} is painted beyond k = {k}" if n == k + 1 else "")
    )


def merge_job(target: Target, clusters: list[int], keep_ids: bool = False) -> EditJob:
    """Merge ``clusters`` into one (labels ordered and contiguous again, or with ``keep_ids``
    no other label moves: see :func:`napari_kmeans.edit.merge`)."""

    def change(model, labels, planes, progress):
        return edit.merge(model, labels, clusters, keep_ids=keep_ids)

    return plan_edit(target, f"merge {clusters}", change)


def split_job(
    target: Target, clusters: list[int], n: int, seed: int, n_init: int, keep_ids: bool = False
) -> EditJob:
    """Split the one cluster in ``clusters`` into ``n`` sub-clusters (``keep_ids``: see
    :func:`napari_kmeans.edit.split`)."""
    if len(clusters) != 1:
        raise InputError(f"Split takes one cluster, got {clusters or 'none'}; type one label.")

    def change(model, labels, planes, progress):
        return edit.split(
            model, planes.assembled(), labels, clusters[0], n, seed=seed, n_init=n_init,
            progress=progress, keep_ids=keep_ids,
        )  # fmt: skip

    return plan_edit(target, f"split {clusters[0]} into {n} (seed {seed})", change)


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
    set_labels(layer, snap.label_data.copy())
    layer.features = snap.features.copy()
    layer.metadata = copy.deepcopy(snap.metadata)
    if snap.recolored is not None and snap.recolored in viewer.layers:
        snap.recolored.data = snap.recolored_data.copy()
        snap.recolored.metadata = copy.deepcopy(snap.recolored_metadata)


def layer_model(layer) -> KMeansModel:
    """The model stored in a k-means labels layer's metadata."""
    if not is_kmeans_labels(layer):
        raise InputError(
            "No k-means labels layer chosen: run k-means first, then choose its labels layer "
            "under 'k-means labels'."
        )
    try:
        return KMeansModel.from_dict(layer.metadata[KEY].get("model"))
    except ValueError as err:
        raise InputError(f"'{layer.name}' holds no usable model: {err}") from None


def save_model(layer, path) -> Path:
    """Write the model of k-means labels ``layer`` to ``path`` as JSON."""
    model = layer_model(layer)
    path = Path(path)
    try:
        model.save(path, overwrite=True)  # the save dialog asked before replacing
    except OSError as err:
        raise InputError(f"could not write '{path}': {err.strerror or err}.") from None
    return path


def read_model(path) -> KMeansModel:
    """Read and validate a model file (JSON written by :func:`save_model` or ``to_json``).

    At most :data:`napari_kmeans.model.MAX_FILE_BYTES` are read, whatever the file is.
    """
    path = Path(path)
    if path.exists() and not path.is_file():  # a folder, a FIFO (would block), a device
        raise InputError(
            f"'{path}' is not a regular file: choose a *_model.json written by napari-kmeans."
        )
    try:
        return KMeansModel.load(path)
    except OSError as err:
        raise InputError(f"cannot read model file '{path}': {err.strerror or err}.") from None
    except ValueError as err:
        raise InputError(f"'{path.name}' was not loaded: {err}") from None


def instances_job(layer, clusters=(), min_size=1) -> InstancesJob:
    """What :func:`run_instances` needs, read on the main thread."""
    return InstancesJob(layer, np.array(layer.data, copy=True), tuple(clusters), int(min_size))
