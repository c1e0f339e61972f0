"""Every creation or rewrite of a k-means layer, in one place.

``"<source> k-means labels"`` is a Labels layer coloured with the cluster colours
(``DirectLabelColormap``, 0 transparent) with one ``features`` row per cluster and every setting
in ``metadata['kmeans']``; ``"<source> k-means recolored"`` is the source with each pixel painted
with its cluster's colour. Both sit exactly on the source (same scale, translate, rotate, shear,
affine, units and axis labels). A re-run updates them in place only while they are untouched
(:class:`Outputs`). Lazy runs give layers holding dask arrays, multiscale for a multiscale
source, with unknown counts (NaN) until computed into memory (:func:`install_computed`). Derived
layers (instances, cluster masks) and the CSV export of the features table are made here too.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import uuid
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from napari.layers import Image, Labels
from napari.utils.colormaps import DirectLabelColormap
from napari.utils.transforms import Affine

from .. import features as ft
from .._version import __version__
from ..lazy import is_dask
from ..model import KMeansModel
from .jobs import (
    Computed,
    ComputeInfo,
    InputError,
    Instances,
    InstancesJob,
    Outcome,
    RunInfo,
    levels,
    present_labels,
    size_text,
    spatial,
)

KEY = "kmeans"  # metadata key of the output layers


LAZY_NOTE = (
    "lazy output: computed as you browse; pixel counts and fractions are unknown (NaN in the "
    "features table) until 'Compute into memory'; the inertia stays unknown"
)


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
    sliced: bool = False  # a current-slice result (it never replaces a whole-data one)
    preview: bool = False  # a live preview: the next preview or Run replaces it while untouched
    beneath: Outputs | None = None  # a result of another scope kept (hidden) under this preview
    memory: KMeansModel | None = None  # every label seen for the source, with its colour

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


def _expanded(array: np.ndarray, info: RunInfo) -> np.ndarray:
    """Put back the sliced axes (length 1) so the layer keeps the source's dimensionality."""
    if not info.slice_index:
        return array
    return np.expand_dims(array, axis=tuple(sorted(info.slice_index)))


def _layer_kwargs(outcome: Outcome, info: RunInfo, run_id: str, style: Style) -> tuple:
    """The keyword arguments of the labels layer and of the recoloured layer (their placement
    and metadata made once: a live preview makes them on every change)."""
    src = info.source
    place = placement(info)
    meta = metadata(outcome, info, "labels", run_id, style)
    names = channel_names(info)
    labels = {
        **place, "metadata": meta, "features": outcome_table(outcome, names),
        "colormap": _colormap(*_colormap_key(
            outcome.model.n_clusters, style, outcome.counts, brightness=brightness(outcome.model)
        )),
    }  # fmt: skip
    recolored = {**place, "metadata": {KEY: {**copy.deepcopy(meta[KEY]), "role": "recolored"}}}
    if not src.rgb:  # shown as the source is: its colormap, limits and blending
        recolored.update(
            colormap=src.colormap, contrast_limits=src.contrast_limits, gamma=src.gamma,
            blending=src.blending,
        )  # fmt: skip
    elif outcome.lazy:  # napari would compute the data to find contrast limits
        recolored.update(contrast_limits=src.contrast_limits)
    return labels, recolored


def remember(memory: KMeansModel | None, model: KMeansModel) -> KMeansModel:
    """The labels and colours of ``model``, with those of earlier runs' labels it lacks
    (``memory``): matching a re-run to it gives a class back its number when k goes down and
    up again. The matching reads the labels' colours only (:mod:`napari_kmeans.matching`)."""
    if memory is None or memory.spec != model.spec or memory.dtype != model.dtype:
        return model
    k = max(memory.n_clusters, model.n_clusters)
    colors = np.zeros((k, model.colors.shape[1]))
    old, new = memory.present_labels, model.present_labels
    colors[old - 1] = memory.colors[old - 1]
    colors[new - 1] = model.colors[new - 1]
    ids = np.union1d(old, new)
    return KMeansModel(
        centers=colors[ids - 1], colors=colors, spec=model.spec, dtype=model.dtype,
        seed=model.seed, center_labels=ids,
    )  # fmt: skip


def brightness(model: KMeansModel) -> np.ndarray:
    """Each label's brightness as the engine orders clusters (luminance of its colour; NaN for
    an absent label): label 1 is not the darkest once IDs follow seeds or an earlier run."""
    values = np.asarray(ft.luminance(np.asarray(model.colors, dtype=float), model.spec), float)
    absent = np.setdiff1d(np.arange(1, model.n_clusters + 1), model.present_labels)
    values[absent - 1] = np.nan
    return values


def _lock(layer) -> None:
    """Lazy labels cannot be painted (the paint would go into a dask graph): not editable."""
    if is_dask(layer.data):
        layer.editable = False


def _new_layers(outcome: Outcome, info: RunInfo, labels, recolored, kw: tuple, style: Style):
    multiscale = isinstance(labels, list)
    name = info.source.name
    image = Image(
        recolored, name=f"{name} k-means recolored", rgb=info.source.rgb,
        multiscale=multiscale, visible=style.show_recolored, **kw[1],
    )  # fmt: skip
    layer = Labels(
        labels, name=f"{name} k-means labels", multiscale=multiscale,
        **{key: _own(value) for key, value in kw[0].items()},
    )  # fmt: skip
    return layer, image


def _normalized(values, layer) -> np.ndarray:
    """``values`` as the layer displays them: 0..1 through its contrast limits and gamma."""
    lo, hi = layer.contrast_limits
    scaled = (np.asarray(values, dtype=float) - lo) / ((hi - lo) or 1.0)
    return np.clip(scaled, 0.0, 1.0) ** layer.gamma


def _same(old, new) -> bool:
    """Whether a layer attribute already holds ``new`` (setting it again redraws the layer)."""
    if old is new:
        return True
    if isinstance(new, np.ndarray) or isinstance(old, np.ndarray):
        old, new = np.asarray(old), np.asarray(new)
        return old.shape == new.shape and bool(np.array_equal(old, new))
    if isinstance(new, DirectLabelColormap):
        if (
            not isinstance(old, DirectLabelColormap)
            or old.color_dict.keys() != new.color_dict.keys()
        ):
            return False
        return all(np.array_equal(v, new.color_dict[key]) for key, v in old.color_dict.items())
    try:
        return bool(old == new)
    except (TypeError, ValueError):
        return False


def _update(layer, data, kwargs: dict) -> None:
    """Set a layer's data and the attributes in ``kwargs`` that changed (transforms first):
    each setting redraws the layer, which a live preview pays for on every change."""
    layer.data = data
    for name, value in kwargs.items():
        if name in ("metadata", "features") or not _same(getattr(layer, name), value):
            setattr(layer, name, _own(value))


def channel_names(info: RunInfo) -> list[str]:
    """A name per clustered channel, for the features table's ``center_*`` columns."""
    if info.source.rgb:
        return ["red", "green", "blue"]
    if not info.extras:
        return ["value"]
    return [layer.name for layer in (info.source, *info.extras)]


# 20 colours that are easy to tell apart (after Sasha Trubetskoy's list), then golden-angle hues
PALETTE = np.array([
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (67, 99, 216), (245, 130, 49),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (188, 246, 12), (250, 190, 190),
    (0, 128, 128), (230, 190, 255), (154, 99, 36), (255, 250, 200), (128, 0, 0),
    (170, 255, 195), (128, 128, 0), (255, 216, 177), (0, 0, 117), (128, 128, 128),
]) / 255  # fmt: skip
SPARE_LABELS = 16  # labels painted beyond k (napari's "new label") get a colour at once
COLORED = 64  # labels 1..COLORED always have a colour (the widget's largest k)
UNNAMED = "#d9d9d9"  # any other label value


@dataclass(frozen=True)
class Style:
    """How a labels layer shows its clusters (chosen in the widget, kept in its metadata)."""

    background: str = "none"  # the transparent cluster: none, darkest, brightest or largest
    show_recolored: bool = False  # the recoloured image is visible when it is made

    def as_dict(self) -> dict:
        return {"background": self.background, "show_recolored": self.show_recolored}


def style_of(layer) -> Style:
    """The :class:`Style` recorded in a k-means layer's metadata (the default if none)."""
    entry = (layer.metadata.get(KEY) or {}).get("style") or {}
    return Style(entry.get("background", "none"), bool(entry.get("show_recolored", False)))


def palette(n: int) -> np.ndarray:
    """(n, 3) distinct colours in 0..1 for labels 1..n.

    >>> palette(22)[[0, 20]].round(2)
    array([[0.9 , 0.1 , 0.29],
           [0.32, 0.8 , 0.51]])
    """
    if n <= len(PALETTE):
        return PALETTE[:n]
    import colorsys

    hues = (np.arange(n - len(PALETTE)) * 0.381966 + 0.4) % 1.0
    extra = np.array([colorsys.hsv_to_rgb(h, 0.6, 0.8) for h in hues])
    return np.concatenate([PALETTE, extra])


def transparent_label(style: Style, k: int, counts=None, brightness=None) -> int | None:
    """The label ``style`` leaves transparent among 1..k: labels go dark to bright, unless
    ``brightness`` (one per label, NaN for an absent label) says otherwise (kept label IDs)."""
    if style.background in ("darkest", "brightest") and brightness is not None:
        values = np.asarray(brightness, dtype=float)[:k]
        if not np.isfinite(values).any():
            return None
        pick = np.nanargmin if style.background == "darkest" else np.nanargmax
        return int(pick(values)) + 1
    if style.background == "darkest":
        return 1
    if style.background == "brightest":
        return k
    if style.background == "largest" and counts is not None and len(counts):
        counts = np.asarray(counts, dtype=float)[:k]
        return (
            int(np.argmax(np.nan_to_num(counts, nan=-1.0))) + 1
            if np.isfinite(counts).any()
            else None
        )
    return None


def labels_colormap(
    k: int, style: Style = Style(), counts=None, n_labels=None, brightness=None
) -> DirectLabelColormap:
    """Distinct colours for labels 1..k (and painted labels up to ``n_labels``), 0 and the
    style's background cluster transparent. The clusters' own colours stay in the recoloured
    image and the table's swatches (``metadata['kmeans']['cluster_colors']``)."""
    return _own(_colormap(*_colormap_key(k, style, counts, n_labels, brightness)))


def _colormap_key(k: int, style: Style, counts=None, n_labels=None, brightness=None) -> tuple:
    """How many labels the colormap colours, and the one it leaves transparent."""
    # at least COLORED labels: the same colormap for every k, so a re-run or a live preview
    # with another k does not rebuild it (a label keeps its colour whatever k is)
    n = max(k, n_labels or 0, COLORED) + SPARE_LABELS
    return n, transparent_label(style, k, counts, brightness)


@functools.lru_cache(maxsize=16)
def _colormap(n: int, hidden: int | None) -> DirectLabelColormap:
    """The colormap of labels 1..n, ``hidden`` transparent, made once (making one takes a
    millisecond or two, which a live preview would pay on every change). Shared: a layer is
    given its own copy (:func:`_own`), which napari's controls may change in place."""
    colors = {0: "transparent", None: UNNAMED}
    colors.update({i + 1: (*map(float, c), 1.0) for i, c in enumerate(palette(n))})
    if hidden is not None:
        colors[hidden] = "transparent"
    return DirectLabelColormap(color_dict=colors)


def _own(value):
    """``value`` to set on a layer: a copy of a (shared) labels colormap, else itself."""
    if not isinstance(value, DirectLabelColormap):
        return value
    # pydantic 2 (napari >= 0.6) names it model_copy; napari 0.5's models have copy
    copy = getattr(value, "model_copy", None) or value.copy
    return copy(deep=True)


def digest(data) -> bytes:
    """A hash of the labels' values, to notice edits (painting, filling, erasing).

    Lazy data (a dask array, or a list of pyramid levels) are not computed: a dask array is
    hashed by its name, which any change of its values (``__setitem__``) replaces. SHA-1 (not
    for security): three times as fast as BLAKE2 here, and a live preview hashes its labels
    twice per change (4 MB for a 2048 x 2048 slice).
    """
    h = hashlib.sha1(usedforsecurity=False)
    for level in data if isinstance(data, Sequence) else [data]:
        if is_dask(level):
            h.update(f"dask {level.name} {level.shape} {level.dtype.str}".encode())
            continue
        array = np.ascontiguousarray(level)
        h.update(str((array.shape, array.dtype.str)).encode())
        h.update(memoryview(array).cast("B"))
    return h.digest()


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


def explained_share(outcome) -> float | None:
    """The share of the data's variation the clusters explain: between / (between + within).

    ``within`` is the inertia; ``between`` the pixel-weighted squared distance of the centres
    (in feature space) to their mean. None when the counts or the inertia are unknown (lazy).

    >>> from types import SimpleNamespace as NS
    >>> model = NS(centers=np.array([[0.0], [10.0]]))
    >>> explained_share(NS(model=model, counts=np.array([2, 2]), inertia=0.0))
    1.0
    >>> explained_share(NS(model=model, counts=np.array([2, 2]), inertia=100.0))
    0.5
    """
    counts, inertia, model = outcome.counts, outcome.inertia, outcome.model
    if counts is None or inertia is None or model is None:
        return None
    centers = np.asarray(model.centers, dtype=float)
    counts = np.asarray(counts, dtype=float)
    # counts are by label, and label IDs may be kept ones: each centre's label picks its count
    labels = np.asarray(getattr(model, "labels_of_centers", np.arange(1, centers.shape[0] + 1)))
    if np.unique(labels).size != labels.size or labels.max(initial=0) > counts.size:
        return None  # several centres for a label (a split): no centre per label
    counts = counts[labels - 1]
    if counts.sum() <= 0:
        return None
    mean = counts @ centers / counts.sum()
    between = float(counts @ ((centers - mean) ** 2).sum(axis=1))
    total = between + float(inertia)
    return 1.0 if total <= 0 else between / total


def outcome_table(outcome: Outcome, names: list[str]) -> dict:
    """One row per cluster: label, centre per channel, pixel count, fraction of labelled pixels."""
    return feature_table(outcome.model.colors, outcome.counts, names)


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


def label_colors(colors: np.ndarray, info: RunInfo) -> np.ndarray:
    """(k, 3) display colours in 0..1 of the clusters' colours ``colors`` (input units).

    RGB: the colour itself through the source's contrast limits (``colors / 255`` for uint8 with
    the default limits). Other data: each channel through its layer's colormap, summed as additive
    blending shows them.
    """
    return display_colors(colors, info.source, info.extras)


def _listed(value):
    """Tuples as lists (nested too), so that the metadata reads as JSON does."""
    return [_listed(v) for v in value] if isinstance(value, tuple | list) else value


def metadata(
    outcome: Outcome, info: RunInfo, role: str, run_id: str | None = None, style: Style = Style()
) -> dict:
    """Everything needed to know (and redo) how the layer was made.

    ``run_id`` is shared by the two layers of one run (it links the labels to their recolored
    layer for edits). A model fitted on one slice and applied to all (``info.fit_slice``) or
    applied from another layer or file (``info.model_from``) is recorded too.
    """
    params = {name: _listed(value) for name, value in dataclasses.asdict(info.params).items()}
    params.update(
        scope="current slice" if info.slice_index else "whole data",
        slice={str(a): i for a, i in (info.slice_index or {}).items()} or None,
        extra_channels=[layer.name for layer in info.extras],
        mask=None if info.mask is None else info.mask.name,
        fit_level=info.fit_level,
    )
    if getattr(info, "each_frame", False):
        params["fit_on"] = "each frame"
    fit_slice = getattr(info, "fit_slice", None)
    if fit_slice:
        params["fit_slice"] = {str(a): i for a, i in fit_slice.items()}
    extra = {}
    if getattr(info, "model_from", None):
        extra["model_from"] = info.model_from
    extra.update(mode_entries(outcome))
    if info.preview:
        extra["preview"] = True
    if info.level:
        params["level"] = info.level
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
            "largest_label": outcome.model.n_clusters,
            "inertia": outcome.inertia,
            "explained": explained_share(outcome),
            "n_iter": outcome.n_iter,
            "exact": outcome.exact,
            "seconds": outcome.seconds,
            "model": outcome.model.to_dict(),
            "cluster_colors": label_colors(outcome.model.colors, info).tolist(),
            "style": style.as_dict(),
            "version": __version__,
        }
    }


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
    scale = np.asarray(src.scale, dtype=float)
    if info.level:  # a pyramid level: its pixels are larger by the level's downsampling
        base = spatial(levels(src)[0].shape, src.rgb)
        here = spatial(levels(src)[info.level].shape, src.rgb)
        scale = scale * np.asarray(base, dtype=float) / np.asarray(here, dtype=float)
    if info.slice_index:
        offset = np.zeros(src.ndim)
        for axis, i in info.slice_index.items():
            offset[axis] = i
        data2physical = Affine(
            scale=src.scale, translate=src.translate, rotate=src.rotate, shear=src.shear
        )
        translate = np.asarray(data2physical(offset), dtype=float)
    return {
        "scale": scale,
        "translate": translate,
        "rotate": np.asarray(src.rotate),
        "shear": np.asarray(src.shear),
        "affine": src.affine.affine_matrix,
        "units": src.units,
        "axis_labels": src.axis_labels,
    }


def publish(viewer, outcome: Outcome, info: RunInfo, previous: Outputs | None, style=Style()):
    """Show a run's result: update ``previous`` in place while untouched, else add new layers.

    ``previous`` is updated only while its layers are unedited and unrenamed and it has the
    same scope (a current-slice run never replaces a whole-data result, nor the reverse); a
    live preview (``previous.preview``) is replaced by the next preview or run of either scope.
    Lazy outcomes (dask arrays, or lists of levels for a multiscale source) give lazy layers.
    Unedited ``previous`` layers of the other kind (multiscale or not, or with other
    dimensions) are replaced, in place.
    When new layers are added beside kept ones, the kept ones are hidden, so that one result
    shows at a time.

    Returns
    -------
    outputs : Outputs
        The layers now holding the result.
    how : {'added', 'updated', 'edited', 'other scope'}
        'edited' when ``previous`` had been edited or renamed, 'other scope' when it holds a
        result of another scope: new layers were added instead.
    """
    labels = _expanded(outcome.labels, info)
    recolored = _expanded(outcome.recolored, info)
    multiscale = isinstance(labels, list)
    kw = _layer_kwargs(outcome, info, uuid.uuid4().hex, style)
    source = weakref.ref(info.source)
    sliced = bool(info.slice_index)
    same_scope = previous is not None and (previous.sliced == sliced or previous.preview)
    if same_scope and previous.unedited(viewer):
        if (
            previous.labels.multiscale == multiscale == previous.recolored.multiscale
            and _ndim(previous.labels) == _ndim(labels, multiscale)
            and _ndim(previous.recolored) == _ndim(recolored, multiscale)
        ):
            _update(previous.recolored, recolored, kw[1])
            _update(previous.labels, labels, kw[0])
            _lock(previous.labels)
            previous.written = digest(labels)
            previous.sliced, previous.preview = sliced, info.preview
            return previous, "updated"
        layer, image = _new_layers(outcome, info, labels, recolored, kw, style)
        swap(viewer, previous.recolored, image)
        swap(viewer, previous.labels, layer)
        _lock(layer)
        made = Outputs(source, layer, image, digest(labels), sliced=sliced, preview=info.preview)
        return made, "updated"
    how = "added"
    if previous is not None and previous.labels in viewer.layers:
        if not same_scope:
            how = "other scope"
        elif previous.edited(viewer):
            how = "edited"
        for kept in (previous.labels, previous.recolored):
            kept.visible = False  # one result shows at a time; the kept one is a click away
    layer, image = _new_layers(outcome, info, labels, recolored, kw, style)
    viewer.add_layer(image)
    viewer.add_layer(layer)
    _lock(layer)
    return Outputs(source, layer, image, digest(labels), sliced=sliced, preview=info.preview), how


def publish_confidence(viewer, outcome: Outcome, info: RunInfo, made: Outputs):
    """Show the run's confidence image (when it was asked for) as '<source> k-means confidence'
    over the labels: updated in place while it is the one this widget made for the source, else
    added. Without one, an earlier confidence image of the source no longer matches the labels:
    it is hidden and marked stale. Returns the layer, or None."""
    name = f"{info.source.name} k-means confidence"
    old = next((layer for layer in viewer.layers if layer.name == name), None)
    mine = old is not None and (old.metadata.get(KEY) or {}).get("role") == "confidence"
    if outcome.confidence is None:
        if mine:
            old.visible = False
            old.metadata = {KEY: {**old.metadata[KEY], "stale": True}}
        return None
    data = _expanded(outcome.confidence, info)
    multiscale = isinstance(data, list)
    meta = {KEY: {
        "role": "confidence", "source": info.source.name, "preview": info.preview,
        "run": made.labels.metadata[KEY]["run"],
        "definition": "(d2 - d1) / (d2 + d1): d1, d2 the distances to the nearest centre of the "
        "pixel's label and of any other label; NaN off the mask",
    }}  # fmt: skip
    kwargs = {**placement(info), "metadata": meta}
    if mine and old.multiscale == multiscale:
        _update(old, data, kwargs)
        old.visible = True
        return old
    layer = Image(
        data, name=name, colormap="magma", contrast_limits=(0.0, 1.0), multiscale=multiscale,
        visible=True, **kwargs,
    )  # fmt: skip
    viewer.add_layer(layer)
    return layer


def _ndim(data, multiscale=None) -> int:
    """Dimensions of a layer's data, or of ``data`` (of the first level when multiscale)."""
    if multiscale is None:  # a layer
        data, multiscale = data.data, data.multiscale
    return np.ndim(data[0] if multiscale else data)


def swap(viewer, old, new) -> None:
    """Put layer ``new`` where ``old`` is in the layer list, under its name; ``old`` leaves.

    napari cannot turn a layer from multiscale to single-scale (or back) by setting its data,
    and napari 0.5 fails to redraw a layer whose data gained or lost a dimension.
    """
    index = list(viewer.layers).index(old)
    name = old.name
    viewer.layers.remove(old)
    new.name = name
    viewer.layers.insert(index, new)


def placement_of(layer) -> dict:
    """The spatial transform of ``layer``, for a new layer on top of it."""
    return {
        "scale": np.asarray(layer.scale),
        "translate": np.asarray(layer.translate),
        "rotate": np.asarray(layer.rotate),
        "shear": np.asarray(layer.shear),
        "affine": layer.affine.affine_matrix,
        "units": layer.units,
        "axis_labels": layer.axis_labels,
    }


def add_instances_layer(viewer, job: InstancesJob, found: Instances):
    """The instances as a new Labels layer on top of the labels layer."""
    n = found.cluster_of.size
    layer = job.layer
    what = "all clusters" if found.chosen is None else f"cluster(s) {found.chosen}"
    return viewer.add_labels(
        found.labels, name=f"{layer.name} instances", **placement_of(layer),
        features={"index": np.arange(1, n + 1), "instance": np.arange(1, n + 1),
                  "cluster": found.cluster_of, "size": found.sizes},
        metadata={KEY: {"role": "instances", "labels": layer.name, "clusters": found.chosen,
                        "min_size": job.min_size, "n_instances": n, "of": what}},
    )  # fmt: skip


def add_seeds_layer(viewer, source) -> Labels:
    """An empty Labels layer '<source> seeds' with the source's spatial shape and placement,
    for scribbling seed classes (label 1 selected). Its metadata marks it as seeds (never
    offered as a mask)."""
    shape = spatial(levels(source)[0].shape, source.rgb)
    layer = Labels(
        np.zeros(shape, dtype=np.uint8), name=f"{source.name} seeds",
        metadata={KEY: {"role": "seeds", "source": source.name}},
        **{k: v for k, v in placement(RunInfo(source, (), None, None, None, None)).items()},
    )  # fmt: skip
    layer.selected_label = 1
    layer.brush_size = max(3, round(min(shape[-2:]) / 100))
    viewer.add_layer(layer)
    return layer


def add_mask(viewer, layer, clusters):
    """A binary Labels layer, 1 where ``layer`` has one of ``clusters``."""
    if not clusters:
        raise InputError("Mask layer: type the cluster label(s) to export, e.g. '2'.")
    labels = np.asarray(layer.data)
    chosen = present_labels(labels, clusters, layer.name)
    mask = np.isin(labels, chosen).astype(np.uint8)
    text = ", ".join(map(str, chosen))
    return viewer.add_labels(
        mask, name=f"{layer.name} mask {text}", **placement_of(layer),
        metadata={KEY: {"role": "mask", "labels": layer.name, "clusters": chosen}},
    )  # fmt: skip


def write_features_csv(layer, path) -> Path:
    """Write ``layer.features`` to ``path`` as CSV (one row per label, a header row)."""
    path = Path(path)
    if layer is None:
        raise InputError("No labels layer chosen: choose one under 'k-means labels'.")
    if layer.features.empty:
        raise InputError(f"'{layer.name}' has no features table to export.")
    try:
        layer.features.to_csv(path, index=False)
    except OSError as err:
        raise InputError(f"could not write '{path}': {err.strerror or err}.") from None
    return path


def _counted_table(layer, counts: np.ndarray):
    """The layer's features table with the pixel count and fraction of each label filled in."""
    table = layer.features.copy()
    if "label" not in table or table.empty:
        return table
    labels = table["label"].to_numpy(dtype=np.int64)
    found = np.zeros(labels.size, np.int64)
    inside = labels < counts.size
    found[inside] = counts[labels[inside]]
    table["count"] = found
    table["fraction"] = found / max(int(counts[1:].sum()), 1)
    return table


def _image_layer(old, data, meta):
    return Image(
        data, name=old.name, rgb=old.rgb, colormap=old.colormap,
        contrast_limits=old.contrast_limits, gamma=old.gamma, opacity=old.opacity,
        blending=old.blending, visible=old.visible, metadata=meta, **placement_of(old),
    )  # fmt: skip


def _labels_layer(old, data, meta, features):
    return Labels(
        data, name=old.name, colormap=old.colormap, features=features, metadata=meta,
        opacity=old.opacity, blending=old.blending, visible=old.visible, **placement_of(old),
    )  # fmt: skip


def _memory_metadata(layer, counts_known: bool) -> dict:
    meta = copy.deepcopy(dict(layer.metadata))
    entry = meta.setdefault(KEY, {})
    entry.update(mode="in memory", computed_into_memory=True)
    if counts_known and entry.get("inertia") is None:
        entry["note"] = "computed into memory: pixel counts are known; the inertia stays unknown"
    elif counts_known:
        entry.pop("note", None)
    return meta


def install_computed(viewer, done: Computed, info: ComputeInfo):
    """Put the computed arrays in the layers (new single-scale layers for a pyramid).

    Returns the labels layer and the recoloured layer (None when it was not computed).
    """
    target = info.target
    old = target.labels
    features = _counted_table(old, done.counts)
    meta = _memory_metadata(old, counts_known=True)
    if old.multiscale:
        labels = _labels_layer(old, done.labels, meta, features)
        swap(viewer, old, labels)
    else:
        labels = old
        labels.data = done.labels
        labels.features, labels.metadata = features, meta
    rec = target.recolored if done.recolored is not None else None
    if rec is not None:
        rec_meta = _memory_metadata(rec, counts_known=True)
        if rec.multiscale:
            new = _image_layer(rec, done.recolored, rec_meta)
            swap(viewer, rec, new)
            rec = new
        else:
            rec.data, rec.metadata = done.recolored, rec_meta
    return labels, rec


def retarget(outputs, labels, recolored) -> None:
    """Point the widget's record of a run at the layers :func:`install_computed` left."""
    outputs.labels, outputs.written = labels, digest(labels.data)
    if recolored is not None:
        outputs.recolored = recolored


def computed_summary(done: Computed, labels) -> str:
    """The result line after computing ``labels`` into memory."""
    size = done.labels.nbytes + (0 if done.recolored is None else done.recolored.nbytes)
    return (
        f"computed '{labels.name}' into memory ({size_text(size)}, {done.seconds:.2f} s): "
        "its labels can now be edited"
    )


def edit_metadata(layer, model: KMeansModel, what: str, shown=None) -> dict:
    """The layer's metadata after an edit: the new model, k, the edit, the clusters' colours."""
    meta = copy.deepcopy(dict(layer.metadata))
    entry = meta.setdefault(KEY, {})
    entry["model"] = model.to_dict()
    entry["n_clusters"] = int(model.present_labels.size)
    entry["largest_label"] = model.n_clusters
    entry["explained"] = entry["inertia"] = None  # the run's numbers no longer apply
    if shown is not None:
        entry["cluster_colors"] = np.asarray(shown, dtype=float).tolist()
    entry["edits"] = [*entry.get("edits", []), what]
    return meta


def summary(layer) -> str:
    """One line under the clusters table: how much of the variation the clusters explain, next
    to the raw inertia (empty when they are unknown: lazy outputs, or after an edit)."""
    meta = (getattr(layer, "metadata", None) or {}).get(KEY) or {}
    share, inertia = meta.get("explained"), meta.get("inertia")
    if share is None or inertia is None:
        return ""
    k = meta.get("n_clusters")
    return (
        f"{k} clusters explain {share:.1%} of the variation (1 − inertia / total sum of squares;"
        f" inertia {inertia:.4g})"
    )


def set_labels(layer, data: np.ndarray) -> None:
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
