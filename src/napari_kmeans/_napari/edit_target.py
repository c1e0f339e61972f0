"""A k-means Labels layer and everything an edit needs from it: source pixels, model, recolored.

The labels layer's ``metadata['kmeans']`` says where it came from (source layer, extra channels,
slice, run id shared with its recolored layer, model). :func:`resolve` finds those layers in the
viewer (the widget's own record of its runs first, so that renaming the source does not lose it)
and checks that they still fit the labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from napari.layers import Image, Labels

from ..model import KMeansModel
from .inputs import InputError, is_lazy, levels
from .layers import KEY, fingerprint
from .runner import Planes


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


def _recolored(viewer, meta, tracked):
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
        "Click 'Compute into memory' (Edit, export and reuse) first, then edit them."
    )


def resolve(viewer, layer, outputs=(), *, allow_lazy=False) -> Target:
    """The :class:`Target` of k-means labels ``layer``; ``outputs`` are the widget's runs.

    Raises
    ------
    InputError
        When ``layer`` is not a k-means labels layer of the viewer, is lazy (dask-backed or
        multiscale) unless ``allow_lazy``, or its source is gone or no longer has the labels'
        shape.
    """
    if layer is None or layer not in viewer.layers or not is_kmeans_labels(layer):
        raise InputError(
            "No k-means labels layer chosen: run k-means (or apply a model), then choose its "
            "labels layer under 'k-means labels'."
        )
    if is_lazy(layer) and not allow_lazy:
        raise lazy_refusal(layer)
    meta = layer.metadata[KEY]
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
    target = Target(layer, _recolored(viewer, meta, tracked), source, extras, index)
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
