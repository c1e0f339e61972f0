"""Models as JSON files, and whether a model fits the image chosen in the widget.

A model file is read only as JSON and validated by :meth:`KMeansModel.from_json`: nothing in it is
ever executed (no pickle, no eval). Every failure is an :class:`InputError` whose message names
the file and what is wrong with it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..model import KMeansModel
from .edit_target import is_kmeans_labels
from .inputs import InputError
from .layers import KEY
from .runner import Planes


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
        model.save(path)
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


def _layout(spec) -> str:
    if spec.rgb:
        return "RGB(A) colour"
    if spec.channel_axis is None:
        return "single-channel"
    return f"{spec.n_channels}-channel (image + {spec.n_channels - 1} extra channels)"


def check_fits(model: KMeansModel, planes: Planes, name: str) -> None:
    """Raise :class:`InputError` unless ``model`` can label ``planes`` (layout and dtype)."""
    n_channels = 3 if planes.rgb else 1 + len(planes.extras)
    spec = model.spec
    same = spec.rgb == planes.rgb and (spec.rgb or spec.n_channels == n_channels)
    if not same:
        got = "RGB(A) colour" if planes.rgb else (
            "single-channel" if n_channels == 1 else f"{n_channels}-channel"
        )  # fmt: skip
        raise InputError(
            f"the model was fitted on {_layout(spec)} data, but '{name}' is {got}: choose an "
            "image (and extra channels) with the same channel layout."
        )
    corner = tuple(slice(0, 1) for _ in planes.spatial_shape)
    block = planes.block(corner)
    try:  # recolor checks the dtype and channel count without needing a valid pixel
        model.recolor(block.assembled(), np.zeros(block.spatial_shape, np.uint8))
    except ValueError as err:
        raise InputError(f"the model does not fit '{name}': {err}") from None
