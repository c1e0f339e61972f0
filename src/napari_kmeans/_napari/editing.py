"""Edits of a k-means labels layer: update after painting, merge, split, and undo.

Every edit goes through :func:`commit`, the one place that writes the labels, the model (in the
labels' metadata), the colormap, the features table and the recolored layer together. Before an
edit, :func:`snapshot` keeps what :func:`restore` needs to put every one of them back.
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
from .edit_target import Target
from .inputs import InputError
from .layers import KEY, colormap, display_colors, feature_table


def parse_clusters(text: str) -> list[int]:
    """Label values from text such as ``"2, 3"``, ``"2 3"`` or ``"2-4"`` (sorted, unique).

    >>> parse_clusters("4, 2-3 2")
    [2, 3, 4]
    """
    values = set()
    for part in filter(None, re.split(r"[,;\s]+", text.strip())):
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if match is None:
            raise InputError(
                f"clusters: '{part}' is not a label value; write label values such as '2, 3' "
                "or '2-4', or select rows in the table."
            )
        lo, hi = int(match[1]), int(match[2] or match[1])
        values.update(range(min(lo, hi), max(lo, hi) + 1))
    return sorted(values)


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


def commit(target: Target, labels, model: KMeansModel, what: str, *, recount=False) -> None:
    """Write ``labels`` and ``model`` to the target's layers, with everything that follows.

    Colours are the model's for labels 1..k, and the mean source colour for painted labels above
    k; with ``recount`` every label gets the mean source colour of its pixels (and the model
    takes them). ``what`` is recorded in ``metadata['kmeans']['edits']``.
    """
    planes = target.planes()
    image = planes.assembled()
    colors, counts = edit.label_stats(image, labels, model)
    k = model.n_clusters
    if recount:
        model = dataclasses.replace(model, colors=colors[:k].copy())
    else:
        colors[:k] = model.colors
    layer = target.labels
    layer.colormap = colormap(display_colors(colors, target.source, target.extras))
    _set_labels(layer, target.expand(labels))
    layer.features = feature_table(colors, counts, target.names())
    layer.metadata = _metadata(layer, model, what)
    if target.recolored is not None:
        target.recolored.data = target.expand(_recolored(planes, model, colors, labels))
        target.recolored.metadata = _metadata(target.recolored, model, what)


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


def update_from_labels(target: Target) -> str:
    """Recount after painting: counts, fractions and mean colour of every label."""
    model = target.model()
    labels = target.label_data()
    commit(target, labels, model, "update from labels", recount=True)
    n, k = int(labels.max(initial=0)), model.n_clusters
    text = f"updated {max(n, k)} labels from the painted data"
    return text + (f"; labels {k + 1}..{n} are painted beyond k = {k}" if n > k else "")


def merge_clusters(target: Target, clusters: list[int]) -> str:
    """Merge ``clusters`` into one (labels stay ordered and contiguous)."""
    model, labels = edit.merge(target.model(), target.label_data(), clusters)
    commit(target, labels, model, f"merge {clusters}")
    return f"merged clusters {clusters}: {model.n_clusters} clusters"


def split_cluster(target: Target, clusters: list[int], n: int, seed: int) -> tuple[str, list]:
    """Split the one cluster in ``clusters`` into ``n``; returns a message and the warnings."""
    if len(clusters) != 1:
        raise InputError(f"Split takes one cluster, got {clusters or 'none'}; type one label.")
    model, labels = target.model(), target.label_data()
    planes = target.planes()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        model, labels = edit.split(model, planes.assembled(), labels, clusters[0], n, seed=seed)
    commit(target, labels, model, f"split {clusters[0]} into {n} (seed {seed})")
    notes = [str(w.message) for w in caught]
    return f"split cluster {clusters[0]}: {model.n_clusters} clusters", notes


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
    """Put the snapshot back (the recolored layer too, while it is in the viewer)."""
    from napari.utils.colormaps import DirectLabelColormap

    layer = snap.labels
    if layer not in viewer.layers:
        raise InputError(f"'{layer.name}' was removed; there is nothing to undo.")
    layer.colormap = DirectLabelColormap(color_dict=snap.colors)
    _set_labels(layer, snap.label_data.copy())
    layer.features = snap.features.copy()
    layer.metadata = copy.deepcopy(snap.metadata)
    if snap.recolored is not None and snap.recolored in viewer.layers:
        snap.recolored.data = snap.recolored_data.copy()
        snap.recolored.metadata = copy.deepcopy(snap.recolored_metadata)
