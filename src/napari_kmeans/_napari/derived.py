"""New layers and files made from a k-means labels layer: instances, cluster masks, CSV tables.

The new layers sit exactly on the labels layer (same scale, translate, rotate, shear, affine,
units and axis labels); the labels layer itself is never changed here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import edit
from . import runner
from .inputs import InputError
from .layers import KEY
from .runner import Progress


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


@dataclass(frozen=True)
class InstancesJob:
    """Connected pieces to find: a copy of the labels, the clusters (all when empty)."""

    layer: object  # the k-means labels layer
    labels: np.ndarray
    clusters: tuple
    min_size: int

    @property
    def source(self):
        return self.layer

    @property
    def layers(self) -> tuple:
        return (self.layer,)


@dataclass(frozen=True)
class Instances:
    """Instance labels, the cluster of each instance and its size; or an error message."""

    labels: np.ndarray | None = None
    cluster_of: np.ndarray | None = None
    sizes: np.ndarray | None = None
    chosen: list | None = None
    error: str | None = None


def instances_job(layer, clusters=(), min_size=1) -> InstancesJob:
    """What :func:`compute_instances` needs, read on the main thread."""
    return InstancesJob(layer, np.array(layer.data, copy=True), tuple(clusters), int(min_size))


def compute_instances(job: InstancesJob, stop=None):
    """Connected components (a worker generator); returns :class:`Instances`."""
    try:
        tick = Progress(0.05, "instances")
        yield tick
        return (yield from runner._in_thread(tick, _instances, job))
    except InputError as err:
        return Instances(error=str(err))
    except Exception as err:  # every failure is reported, never a raw traceback
        return Instances(error=runner.failure(err))


def _instances(job: InstancesJob) -> Instances:
    chosen = _present(job.labels, job.clusters, job.layer.name) if job.clusters else None
    inst, cluster_of = edit.instances(job.labels, chosen, min_size=job.min_size)
    sizes = np.bincount(inst.ravel(), minlength=cluster_of.size + 1)[1:]
    return Instances(inst, cluster_of, sizes, chosen)


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


def add_instances(viewer, layer, clusters=(), min_size=1):
    """Connected components of ``clusters`` (all when empty) as a new Labels layer, at once.

    Components smaller than ``min_size`` pixels (voxels) are dropped. Components touch through
    faces, edges or corners (full connectivity, in 2-D and 3-D alike).
    """
    job = instances_job(layer, clusters, min_size)
    found = _instances(job)
    return add_instances_layer(viewer, job, found)


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
    try:
        layer.features.to_csv(path, index=False)
    except OSError as err:
        raise InputError(f"could not write '{path}': {err.strerror or err}.") from None
    return path
