"""The two output layers of a run: building them, and updating them in place while unedited.

``"<source> k-means labels"`` is a Labels layer coloured with the cluster colours
(``DirectLabelColormap``, 0 transparent) with one ``features`` row per cluster and every setting
in ``metadata['kmeans']``; ``"<source> k-means recolored"`` is the source with each pixel painted
with its cluster's colour. Both sit exactly on the source (same scale, translate, rotate, shear,
affine, units and axis labels).
"""

from __future__ import annotations

import hashlib
import uuid
import weakref
from dataclasses import dataclass

import numpy as np
from napari.layers import Image, Labels
from napari.utils.colormaps import DirectLabelColormap
from napari.utils.transforms import Affine

from .._version import __version__
from .inputs import RunInfo
from .runner import Outcome

KEY = "kmeans"  # metadata key of the output layers


def channel_names(info: RunInfo) -> list[str]:
    """A name per clustered channel, for the features table's ``center_*`` columns."""
    if info.source.rgb:
        return ["red", "green", "blue"]
    if not info.extras:
        return ["value"]
    return [layer.name for layer in (info.source, *info.extras)]


def _normalized(values, layer) -> np.ndarray:
    """``values`` as the layer displays them: 0..1 through its contrast limits and gamma."""
    lo, hi = layer.contrast_limits
    scaled = (np.asarray(values, dtype=float) - lo) / ((hi - lo) or 1.0)
    return np.clip(scaled, 0.0, 1.0) ** layer.gamma


def label_colors(colors: np.ndarray, info: RunInfo) -> np.ndarray:
    """(k, 3) display colours in 0..1 of the clusters' colours ``colors`` (input units).

    RGB: the colour itself through the source's contrast limits (``colors / 255`` for uint8 with
    the default limits). Other data: each channel through its layer's colormap, summed as additive
    blending shows them.
    """
    return display_colors(colors, info.source, info.extras)


def display_colors(colors: np.ndarray, source: Image, extras=()) -> np.ndarray:
    """(n, 3) display colours in 0..1 of colours ``colors`` of ``source`` (+ ``extras``) pixels."""
    colors = np.asarray(colors, dtype=float)
    if source.rgb:
        return _normalized(colors, source)
    layers = (source, *extras)
    rgb = sum(
        layer.colormap.map(_normalized(colors[:, c], layer))[:, :3]
        for c, layer in enumerate(layers)
    )
    return np.clip(rgb, 0.0, 1.0)


def colormap(rgb: np.ndarray) -> DirectLabelColormap:
    """Label i (1..k) in colour ``rgb[i - 1]``; 0 transparent."""
    colors = {0: "transparent", None: "black"}
    colors.update({i + 1: (*map(float, c), 1.0) for i, c in enumerate(rgb)})
    return DirectLabelColormap(color_dict=colors)


def features(outcome: Outcome, names: list[str]) -> dict:
    """One row per cluster: label, centre per channel, pixel count, fraction of labelled pixels."""
    return feature_table(outcome.model.colors, outcome.counts, names)


def feature_table(colors: np.ndarray, counts: np.ndarray, names: list[str]) -> dict:
    """Row i for label i + 1: label, colour per channel (``center_*``), count, fraction."""
    counts = np.asarray(counts, dtype=np.int64)
    n = counts.size
    table = {"index": np.arange(1, n + 1), "label": np.arange(1, n + 1)}
    for c, name in enumerate(names):
        table[f"center_{name}"] = np.asarray(colors)[:, c].astype(float)
    table["count"] = counts
    table["fraction"] = counts / max(int(counts.sum()), 1)
    return table


def metadata(outcome: Outcome, info: RunInfo, role: str, run_id: str | None = None) -> dict:
    """Everything needed to know (and redo) how the layer was made.

    ``run_id`` is shared by the two layers of one run (it links the labels to their recolored
    layer for edits). A model fitted on one slice and applied to all (``info.fit_slice``) or
    applied from another layer or file (``info.model_from``) is recorded too.
    """
    params = info.params.as_dict()
    params.update(
        scope="current slice" if info.slice_index else "whole data",
        slice={str(a): i for a, i in (info.slice_index or {}).items()} or None,
        extra_channels=[layer.name for layer in info.extras],
        mask=None if info.mask is None else info.mask.name,
        fit_level=info.fit_level,
    )
    fit_slice = getattr(info, "fit_slice", None)
    if fit_slice:
        params["fit_slice"] = {str(a): i for a, i in fit_slice.items()}
    extra = {}
    if getattr(info, "model_from", None):
        extra["model_from"] = info.model_from
    return {
        KEY: {
            **extra,
            "run": run_id,
            "role": role,
            "source": info.source.name,
            "parameters": params,
            "seed": info.params.seed,
            "n_clusters": outcome.n_clusters,
            "inertia": outcome.inertia,
            "n_iter": outcome.n_iter,
            "exact": outcome.exact,
            "seconds": outcome.seconds,
            "model": outcome.model.to_dict(),
            "version": __version__,
        }
    }


def placement(info: RunInfo) -> dict:
    """The source's spatial transform, shifted onto the slice for the current-slice scope."""
    src = info.source
    translate = np.asarray(src.translate, dtype=float)
    if info.slice_index:
        offset = np.zeros(src.ndim)
        for axis, i in info.slice_index.items():
            offset[axis] = i
        data2physical = Affine(
            scale=src.scale, translate=src.translate, rotate=src.rotate, shear=src.shear
        )
        translate = np.asarray(data2physical(offset), dtype=float)
    return {
        "scale": np.asarray(src.scale),
        "translate": translate,
        "rotate": np.asarray(src.rotate),
        "shear": np.asarray(src.shear),
        "affine": src.affine.affine_matrix,
        "units": src.units,
        "axis_labels": src.axis_labels,
    }


def _expanded(array: np.ndarray, info: RunInfo) -> np.ndarray:
    """Put back the sliced axes (length 1) so the layer keeps the source's dimensionality."""
    if not info.slice_index:
        return array
    return np.expand_dims(array, axis=tuple(sorted(info.slice_index)))


def digest(array: np.ndarray) -> bytes:
    """A hash of the labels' values, to notice edits (painting, filling, erasing)."""
    array = np.ascontiguousarray(array)
    h = hashlib.blake2b(str((array.shape, array.dtype.str)).encode(), digest_size=16)
    h.update(memoryview(array).cast("B"))
    return h.digest()


@dataclass
class Outputs:
    """The output layers of a source's last run, and the hash of the labels written to them."""

    source: weakref.ref
    labels: Labels
    recolored: Image
    written: bytes

    def unedited(self, viewer) -> bool:
        """Both layers are still in the viewer and the labels hold what the run wrote."""
        present = self.labels in viewer.layers and self.recolored in viewer.layers
        return present and digest(self.labels.data) == self.written

    def edited(self, viewer) -> bool:
        """The labels layer is in the viewer but its values were changed since the run."""
        return self.labels in viewer.layers and digest(self.labels.data) != self.written


def _layer_kwargs(outcome: Outcome, info: RunInfo, role: str, run_id: str) -> dict:
    src = info.source
    kwargs = {**placement(info), "metadata": metadata(outcome, info, role, run_id)}
    if role == "labels":
        names = channel_names(info)
        kwargs["colormap"] = colormap(label_colors(outcome.model.colors, info))
        kwargs["features"] = features(outcome, names)
    elif not src.rgb:
        kwargs.update(colormap=src.colormap, contrast_limits=src.contrast_limits, gamma=src.gamma)
    return kwargs


def _update(layer, data, kwargs: dict) -> None:
    """Set a layer's data and every attribute in ``kwargs`` (transforms first)."""
    layer.data = data
    for name, value in kwargs.items():
        setattr(layer, name, value)


def publish(viewer, outcome: Outcome, info: RunInfo, previous: Outputs | None):
    """Show a run's result: update ``previous`` in place while unedited, else add new layers.

    Returns
    -------
    outputs : Outputs
        The layers now holding the result.
    how : {'added', 'updated', 'edited'}
        'edited' when ``previous`` labels had been edited, so new layers were added instead.
    """
    labels = _expanded(outcome.labels, info)
    recolored = _expanded(outcome.recolored, info)
    run_id = uuid.uuid4().hex
    label_kw = _layer_kwargs(outcome, info, "labels", run_id)
    image_kw = _layer_kwargs(outcome, info, "recolored", run_id)
    name = info.source.name
    if previous is not None and previous.unedited(viewer):
        _update(previous.recolored, recolored, image_kw)
        _update(previous.labels, labels, label_kw)
        previous.written = digest(labels)
        return previous, "updated"
    how = "edited" if previous is not None and previous.edited(viewer) else "added"
    image_layer = viewer.add_image(
        recolored, name=f"{name} k-means recolored", rgb=info.source.rgb, **image_kw
    )
    labels_layer = viewer.add_labels(labels, name=f"{name} k-means labels", **label_kw)
    return Outputs(weakref.ref(info.source), labels_layer, image_layer, digest(labels)), how
