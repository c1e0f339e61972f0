"""New layers and files made from a k-means labels layer: instances, cluster masks, CSV tables.

The new layers sit exactly on the labels layer (same scale, translate, rotate, shear, affine,
units and axis labels); the labels layer itself is never changed here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import edit
from .inputs import InputError
from .layers import KEY


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


def _present(labels: np.ndarray, clusters, name: str) -> list[int]:
    present = set(np.unique(labels[labels > 0]).tolist())
    missing = [c for c in clusters if c not in present]
    if missing:
        raise InputError(
            f"'{name}' has no pixel with label(s) {missing}; its labels are "
            f"{sorted(present) or 'none'}."
        )
    return list(clusters)


def add_instances(viewer, layer, clusters=(), min_size=1):
    """Connected components of ``clusters`` (all when empty) as a new Labels layer.

    Components smaller than ``min_size`` pixels (voxels) are dropped. Components touch through
    faces, edges or corners (full connectivity, in 2-D and 3-D alike).
    """
    labels = np.asarray(layer.data)
    chosen = _present(labels, clusters, layer.name) if clusters else None
    inst, cluster_of = edit.instances(labels, chosen, min_size=int(min_size))
    sizes = np.bincount(inst.ravel(), minlength=cluster_of.size + 1)[1:]
    n = cluster_of.size
    what = "all clusters" if chosen is None else f"cluster(s) {chosen}"
    return viewer.add_labels(
        inst, name=f"{layer.name} instances", **placement_of(layer),
        features={"index": np.arange(1, n + 1), "instance": np.arange(1, n + 1),
                  "cluster": cluster_of, "size": sizes},
        metadata={KEY: {"role": "instances", "labels": layer.name, "clusters": chosen,
                        "min_size": int(min_size), "n_instances": n, "of": what}},
    )  # fmt: skip


def add_mask(viewer, layer, clusters):
    """A binary Labels layer, 1 where ``layer`` has one of ``clusters``."""
    if not clusters:
        raise InputError("Mask layer: type the cluster label(s) to export, e.g. '2'.")
    labels = np.asarray(layer.data)
    chosen = _present(labels, clusters, layer.name)
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
    layer.features.to_csv(path, index=False)
    return path
