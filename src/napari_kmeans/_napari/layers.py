"""The two output layers of a run: building them, and updating them in place while unedited.

``"<source> k-means labels"`` is a Labels layer coloured with the cluster colours
(``DirectLabelColormap``, 0 transparent) with one ``features`` row per cluster and every setting
in ``metadata['kmeans']``; ``"<source> k-means recolored"`` is the source with each pixel painted
with its cluster's colour. Both sit exactly on the source (same scale, translate, rotate, shear,
affine, units and axis labels). Lazy runs (:mod:`.lazy_outputs`) give layers holding dask arrays,
multiscale for a multiscale source, with unknown counts (NaN) until computed into memory.
"""

from __future__ import annotations

import hashlib
import uuid
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from napari.layers import Image, Labels
from napari.utils.colormaps import DirectLabelColormap
from napari.utils.transforms import Affine

from .._version import __version__
from ..lazy import is_dask
from .inputs import RunInfo, levels
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


def feature_table(colors: np.ndarray, counts: np.ndarray | None, names: list[str]) -> dict:
    """Row i for label i + 1: label, colour per channel (``center_*``), count, fraction.

    ``counts`` None (lazy outputs, not counted yet) gives NaN counts and fractions.
    """
    n = len(colors)
    table = {"index": np.arange(1, n + 1), "label": np.arange(1, n + 1)}
    for c, name in enumerate(names):
        table[f"center_{name}"] = np.asarray(colors)[:, c].astype(float)
    if counts is None:
        table["count"] = table["fraction"] = np.full(n, np.nan)
        return table
    counts = np.asarray(counts, dtype=np.int64)
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
    extra.update(mode_entries(outcome))
    return {
        KEY: {
            **extra,
            "run": run_id,
            "role": role,
            "source": info.source.name,
            "fingerprints": {
                layer.name: fingerprint(layer) for layer in (info.source, *info.extras)
            },
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


LAZY_NOTE = (
    "lazy output: computed as you browse; pixel counts and fractions are unknown (NaN in the "
    "features table) until 'Compute into memory'; the inertia stays unknown"
)


def mode_entries(outcome: Outcome) -> dict:
    """``mode`` ('lazy' or 'in memory'), and for lazy outputs their levels and what is unknown."""
    if not outcome.lazy:
        return {"mode": "in memory"}
    n = len(outcome.labels) if isinstance(outcome.labels, list) else 1
    entries = {"mode": "lazy", "levels": n}
    if outcome.counts is None:
        entries["note"] = LAZY_NOTE
    return entries


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


def fingerprint(layer) -> str:
    """A short hash of an image layer's full-resolution shape, dtype and a sample of its values.

    Edits look a removed source up by name; the fingerprint tells whether a layer of that name
    holds the same pixels. Lazy (dask) data are fingerprinted by shape and dtype only, so that
    nothing is computed.
    """
    data = levels(layer)[0]
    h = hashlib.blake2b(digest_size=8)
    h.update(str((tuple(data.shape), np.dtype(data.dtype).str)).encode())
    if isinstance(data, np.ndarray) and data.size:
        where = np.linspace(0, data.size - 1, min(data.size, 4096)).astype(np.intp)
        h.update(np.ascontiguousarray(data.flat[where]).tobytes())
    return h.hexdigest()


def digest(data) -> bytes:
    """A hash of the labels' values, to notice edits (painting, filling, erasing).

    Lazy data (a dask array, or a list of pyramid levels) are not computed: a dask array is
    hashed by its name, which any change of its values (``__setitem__``) replaces.
    """
    h = hashlib.blake2b(digest_size=16)
    for level in data if isinstance(data, Sequence) else [data]:
        if is_dask(level):
            h.update(f"dask {level.name} {level.shape} {level.dtype.str}".encode())
            continue
        array = np.ascontiguousarray(level)
        h.update(str((array.shape, array.dtype.str)).encode())
        h.update(memoryview(array).cast("B"))
    return h.digest()


@dataclass
class Outputs:
    """The output layers of a source's last run, the hash of the labels written to them and
    the names they were given.

    A re-run updates them in place only while they are untouched: the labels hold what the run
    wrote and neither layer was renamed (a renamed result is one the person chose to keep).
    """

    source: weakref.ref
    labels: Labels
    recolored: Image
    written: bytes
    names: tuple[str, str] = ("", "")

    def __post_init__(self):
        if self.names == ("", ""):
            self.names = (self.labels.name, self.recolored.name)

    def unedited(self, viewer) -> bool:
        """Both layers are still in the viewer, unrenamed, and the labels hold what was written."""
        present = self.labels in viewer.layers and self.recolored in viewer.layers
        renamed = (self.labels.name, self.recolored.name) != self.names
        return present and not renamed and digest(self.labels.data) == self.written

    def edited(self, viewer) -> bool:
        """The labels layer is in the viewer but was changed (values or name) since the run."""
        renamed = (self.labels.name, self.recolored.name) != self.names
        changed = renamed or digest(self.labels.data) != self.written
        return self.labels in viewer.layers and changed


def _layer_kwargs(outcome: Outcome, info: RunInfo, role: str, run_id: str) -> dict:
    src = info.source
    kwargs = {**placement(info), "metadata": metadata(outcome, info, role, run_id)}
    if role == "labels":
        names = channel_names(info)
        kwargs["colormap"] = colormap(label_colors(outcome.model.colors, info))
        kwargs["features"] = features(outcome, names)
    elif not src.rgb:
        kwargs.update(colormap=src.colormap, contrast_limits=src.contrast_limits, gamma=src.gamma)
    elif outcome.lazy:  # napari would compute the data to find contrast limits
        kwargs.update(contrast_limits=src.contrast_limits)
    return kwargs


def _update(layer, data, kwargs: dict) -> None:
    """Set a layer's data and every attribute in ``kwargs`` (transforms first)."""
    layer.data = data
    for name, value in kwargs.items():
        setattr(layer, name, value)


def swap(viewer, old, new) -> None:
    """Put layer ``new`` where ``old`` is in the layer list, under its name; ``old`` leaves.

    napari cannot turn a layer from multiscale to single-scale (or back) by setting its data.
    """
    index = list(viewer.layers).index(old)
    name = old.name
    viewer.layers.remove(old)
    new.name = name
    viewer.layers.insert(index, new)


def _lock(layer) -> None:
    """Lazy labels cannot be painted (the paint would go into a dask graph): not editable."""
    if is_dask(layer.data):
        layer.editable = False


def _new_layers(outcome: Outcome, info: RunInfo, labels, recolored, kw: tuple):
    multiscale = isinstance(labels, list)
    name = info.source.name
    image = Image(
        recolored, name=f"{name} k-means recolored", rgb=info.source.rgb,
        multiscale=multiscale, **kw[1],
    )  # fmt: skip
    layer = Labels(labels, name=f"{name} k-means labels", multiscale=multiscale, **kw[0])
    return layer, image


def publish(viewer, outcome: Outcome, info: RunInfo, previous: Outputs | None):
    """Show a run's result: update ``previous`` in place while unedited, else add new layers.

    Lazy outcomes (dask arrays, or lists of levels for a multiscale source) give lazy layers.
    Unedited ``previous`` layers of the other kind (multiscale or not) are replaced, in place.

    Returns
    -------
    outputs : Outputs
        The layers now holding the result.
    how : {'added', 'updated', 'edited'}
        'edited' when ``previous`` labels had been edited, so new layers were added instead.
    """
    labels = _expanded(outcome.labels, info)
    recolored = _expanded(outcome.recolored, info)
    multiscale = isinstance(labels, list)
    run_id = uuid.uuid4().hex
    kw = (
        _layer_kwargs(outcome, info, "labels", run_id),
        _layer_kwargs(outcome, info, "recolored", run_id),
    )
    source = weakref.ref(info.source)
    if previous is not None and previous.unedited(viewer):
        if previous.labels.multiscale == multiscale == previous.recolored.multiscale:
            _update(previous.recolored, recolored, kw[1])
            _update(previous.labels, labels, kw[0])
            _lock(previous.labels)
            previous.written = digest(labels)
            return previous, "updated"
        layer, image = _new_layers(outcome, info, labels, recolored, kw)
        swap(viewer, previous.recolored, image)
        swap(viewer, previous.labels, layer)
        _lock(layer)
        return Outputs(source, layer, image, digest(labels)), "updated"
    how = "edited" if previous is not None and previous.edited(viewer) else "added"
    layer, image = _new_layers(outcome, info, labels, recolored, kw)
    viewer.add_layer(image)
    viewer.add_layer(layer)
    _lock(layer)
    return Outputs(source, layer, image, digest(labels)), how
