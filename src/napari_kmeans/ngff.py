"""OME-Zarr (NGFF 0.4 on zarr format 2, 0.5 on zarr format 3): reading an image's axes and
scales, writing images and labels as NGFF multiscale pyramids.

The JSON is small and written here with zarr itself (no extra dependency); the tests read it
back with ome-zarr-models, which validates it against the NGFF schemas. Levels are written
block by block from dask arrays: level 0 from the lazy result, each lower level by
nearest-neighbour sampling of level 0 read back from disk, so the segmentation runs once and
labels stay labels. No napari, no Qt; zarr and dask are imported only when needed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .microscopy import AxesInfo, ngff_unit

LABELS_NAME = "kmeans"  # the name of the labels --into-image writes in an image's labels/ group
MIN_LEVEL_SIZE = 256  # a new pyramid halves y and x until both are at most this


@dataclass(frozen=True)
class NgffImage:
    """An OME-Zarr image group: its version, zarr format, axes and levels."""

    version: str  # "0.4" or "0.5"
    zarr_format: int
    axes: AxesInfo  # of the full-resolution level (its scale and translation)
    paths: tuple[str, ...]  # the levels' array paths, full resolution first
    scales: tuple[tuple[float, ...], ...]  # each level's scale
    name: str | None = None
    shapes: tuple[tuple[int, ...], ...] | None = None  # each level's shape, when all are found


def _multiscales(attrs):
    """``(multiscales, version)`` of a group's attributes, or ``(None, None)``."""
    ome = attrs.get("ome")
    if isinstance(ome, dict) and "multiscales" in ome:
        return ome["multiscales"], str(ome.get("version", "0.5"))
    multiscales = attrs.get("multiscales")
    if multiscales is None:
        return None, None
    try:
        version = str(multiscales[0].get("version", "0.4"))
    except (LookupError, AttributeError, TypeError):
        version = "0.4"
    return multiscales, version


def _transforms(transforms, ndim):
    scale, translation = [1.0] * ndim, None
    for t in transforms if isinstance(transforms, list) else []:
        if not isinstance(t, dict):
            continue
        for kind in ("scale", "translation"):
            values = t.get(kind)
            if t.get("type") != kind or not isinstance(values, list) or len(values) != ndim:
                continue
            if not all(isinstance(v, int | float) for v in values):
                continue
            if kind == "scale":
                scale = [float(v) for v in values]
            else:
                translation = [float(v) for v in values]
    return scale, translation


def _axes(entries, ndim):
    names, types, units = [], [], []
    for i, entry in enumerate(entries if isinstance(entries, list) else []):
        if isinstance(entry, str):  # NGFF 0.3: names only
            entry = {"name": entry}
        if not isinstance(entry, dict):
            return None
        name = str(entry.get("name", f"dim_{i}")).lower()
        kind = entry.get("type")
        if kind is None and name in ("c", "t", "z", "y", "x"):
            kind = {"c": "channel", "t": "time"}.get(name, "space")
        names.append(name)
        types.append(kind if kind in ("channel", "time", "space") else None)
        units.append(ngff_unit(entry.get("unit")))  # units NGFF does not name are dropped
    if len(names) != ndim:
        return None
    return names, types, units


def read_image_metadata(group, ndim: int) -> tuple[dict | None, NgffImage | None]:
    """``(first multiscale entry, NgffImage)`` of a zarr group, or ``(None, None)`` when it
    holds no multiscale image; the image is None too when its axes do not match ``ndim``."""
    multiscales, version = _multiscales(group.attrs.asdict())
    if not isinstance(multiscales, list) or not multiscales or not isinstance(multiscales[0], dict):
        return None, None
    entry = multiscales[0]
    datasets = [d for d in entry.get("datasets") or [] if isinstance(d, dict)]
    found = _axes(entry.get("axes"), ndim)
    if found is None or not datasets:
        return entry, None
    names, types, units = found
    # world = outer scale * (scale * index + translation) + outer translation
    outer, outer_t = _transforms(entry.get("coordinateTransformations"), ndim)
    scales = []
    for d in datasets:
        s, _ = _transforms(d.get("coordinateTransformations"), ndim)
        scales.append(tuple(a * b for a, b in zip(s, outer, strict=True)))
    _, translation = _transforms(datasets[0].get("coordinateTransformations"), ndim)
    if translation is not None:  # the full resolution's own, in the world's units
        translation = [a * b for a, b in zip(translation, outer, strict=True)]
    if outer_t is not None:
        translation = [a + b for a, b in zip(translation or [0.0] * ndim, outer_t, strict=True)]
    axes = AxesInfo(
        names=tuple(names),
        types=tuple(types),
        scale=scales[0],
        units=tuple(units),
        translation=None if translation is None else tuple(translation),
        source=f"NGFF {version}",
    )
    paths = tuple(str(d.get("path")) for d in datasets)
    try:
        shapes = tuple(tuple(group[p].shape) for p in paths)
    except Exception:  # a level missing or not an array: the writer makes its own shapes
        shapes = None
    image = NgffImage(
        version="0.5" if version.startswith("0.5") else "0.4",
        zarr_format=group.metadata.zarr_format,
        axes=axes,
        paths=paths,
        scales=tuple(scales),
        name=entry.get("name"),
        shapes=shapes,
    )
    return entry, image


# -- writing ----------------------------------------------------------------------------------


def _axes_json(axes: AxesInfo) -> list[dict]:
    out = []
    for name, kind, unit in zip(axes.names, axes.types, axes.units, strict=True):
        entry = {"name": name}
        if kind is not None:
            entry["type"] = kind
        if unit is not None and kind in ("space", "time"):
            entry["unit"] = unit
        out.append(entry)
    return out


def level_shapes(shape, axes: AxesInfo, ratios=None, shapes=None):
    """The shapes of the pyramid's levels and their scale factors per axis.

    ``ratios``: the input's levels' scales relative to its full resolution (mirrored so that
    the outputs overlay each level); None makes a new pyramid, halving the spatial y and x
    axes until both are at most :data:`MIN_LEVEL_SIZE`. ``shapes``: the input's levels'
    shapes, one per ratio (an odd size halves to either side); else the size over the ratio.
    """
    if ratios is not None and shapes is not None and len(shapes) == len(ratios):
        return [(tuple(int(n) for n in s), tuple(r)) for s, r in zip(shapes, ratios, strict=True)]
    spatial = [i for i, (n, t) in enumerate(zip(axes.names, axes.types, strict=True))
               if t == "space" and n in ("y", "x")]  # fmt: skip
    if ratios is None:
        ratios, factor = [(1.0,) * len(shape)], 1
        while spatial and max(shape[i] // factor for i in spatial) > MIN_LEVEL_SIZE:
            factor *= 2
            ratios.append(tuple(float(factor) if i in spatial else 1.0 for i in range(len(shape))))
    levels = []
    for ratio in ratios:
        level = tuple(max(1, round(n / r)) for n, r in zip(shape, ratio, strict=True))
        levels.append((level, tuple(ratio)))
    return levels


def _nearest(data, shape):
    """``data`` sampled to ``shape`` by nearest neighbour (pixel centres), lazily."""
    for axis, (n_in, n_out) in enumerate(zip(data.shape, shape, strict=True)):
        if n_in != n_out:
            index = np.minimum(((np.arange(n_out) + 0.5) * n_in / n_out).astype(np.intp), n_in - 1)
            data = data[(slice(None),) * axis + (index,)]
    return data


def _create(group, path, shape, dtype, chunks, names, zarr_format):
    options = {"dimension_names": list(names)} if zarr_format == 3 else {}
    return group.create_array(
        path, shape=shape, dtype=dtype, chunks=chunks, fill_value=0, **options
    )  # zarr's default compressor (zstd)


@dataclass(frozen=True)
class Pending:
    """A multiscale group created with its metadata, its levels still to be written."""

    data: object  # the full-resolution dask array, chunked like the zarr arrays
    arrays: tuple  # the levels' zarr arrays, full resolution first


def create_multiscale(
    path, data, axes: AxesInfo, *, version="0.4", ratios=None, shapes=None, name=None,
    label_meta=None, extra_attrs=None,
) -> Pending:  # fmt: skip
    """Create the NGFF multiscale group of ``data`` (a dask array) at ``path``: its arrays
    and metadata; :func:`write_levels` then writes the pixels.

    ``ratios`` and ``shapes``: the levels to mirror (see :func:`level_shapes`).
    ``version`` "0.4" writes zarr format 2, "0.5" zarr format 3. ``label_meta`` (the
    ``image-label`` dict) makes it a labels image. ``extra_attrs`` are added to the group's
    attributes (napari-kmeans marks its outputs there).
    """
    import dask.array as da
    import zarr

    zarr_format = 3 if version == "0.5" else 2
    group = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    data = data if hasattr(data, "dask") else da.asarray(data)
    chunks = tuple(int(c) for c in data.chunksize)
    arrays, datasets = [], []
    for i, (shape, ratio) in enumerate(level_shapes(data.shape, axes, ratios, shapes)):
        level_chunks = tuple(min(c, n) for c, n in zip(chunks, shape, strict=True))
        arrays.append(
            _create(group, str(i), shape, data.dtype, level_chunks, axes.names, zarr_format)
        )
        scale = [s * r for s, r in zip(axes.scale, ratio, strict=True)]
        transforms = [{"type": "scale", "scale": scale}]
        if axes.translation is not None:  # the centre of a level's first pixel
            shift = [
                t + (r - 1) * s / 2
                for t, s, r in zip(axes.translation, axes.scale, ratio, strict=True)
            ]
            transforms.append({"type": "translation", "translation": shift})
        datasets.append({"path": str(i), "coordinateTransformations": transforms})
    multiscale = {"axes": _axes_json(axes), "datasets": datasets}
    if name:
        multiscale["name"] = name
    attrs = dict(extra_attrs or {})
    if version == "0.5":
        ome = {"version": "0.5", "multiscales": [multiscale]}
        if label_meta is not None:
            ome["image-label"] = label_meta
        attrs["ome"] = ome
    else:
        multiscale["version"] = "0.4"
        attrs["multiscales"] = [multiscale]
        if label_meta is not None:
            attrs["image-label"] = {"version": "0.4", **label_meta}
    group.attrs.update(attrs)
    return Pending(data.rechunk(arrays[0].chunks), tuple(arrays))


def write_levels(pending) -> None:
    """Write the pixels of several :func:`create_multiscale` groups: every full resolution in
    one dask computation (labels and recoloured image share their labelling), then each lower
    level by nearest-neighbour sampling of the full resolution read back from disk."""
    import dask.array as da

    da.store([p.data for p in pending], [p.arrays[0] for p in pending], lock=False)
    for p in pending:
        full = da.from_zarr(p.arrays[0])
        for array in p.arrays[1:]:
            da.store(_nearest(full, array.shape).rechunk(array.chunks), array, lock=False)


def write_multiscale(path, data, axes: AxesInfo, **options) -> None:
    """:func:`create_multiscale` and :func:`write_levels` for one image."""
    write_levels([create_multiscale(path, data, axes, **options)])


def validate(path, version: str, *, labels: bool):
    """Check the group at ``path`` against the NGFF schemas with ome-zarr-models (when it is
    installed); raises RuntimeError naming what is invalid (a bug of the writer)."""
    try:
        if version == "0.5":
            from ome_zarr_models.v05.image import Image
            from ome_zarr_models.v05.image_label import ImageLabel
        else:
            from ome_zarr_models.v04.image import Image
            from ome_zarr_models.v04.image_label import ImageLabel
    except ImportError:
        return
    import zarr
    from pydantic import ValidationError

    try:
        (ImageLabel if labels else Image).from_zarr(zarr.open_group(str(path), mode="r"))
    except ValidationError as err:  # not other errors: a library mismatch skips the check
        text = str(err).strip().splitlines()
        raise RuntimeError(
            f"the NGFF {version} metadata written to {path} is not valid: "
            f"{text[0] if text else type(err).__name__}"
        ) from None


def display_colors(model) -> np.ndarray:
    """(k, 4) uint8 RGBA of the clusters for ``image-label``: RGB models' own colours; for
    other images the first three channels of the colours (one channel: gray levels), each
    stretched over the clusters' range so that the darkest is black and the brightest full."""
    colors = np.asarray(model.colors, dtype=np.float64)
    k = colors.shape[0]
    if model.spec.rgb:
        rgb = colors[:, :3]
        kind = np.dtype(model.dtype)
        top = 1.0 if kind.kind == "f" else float(np.iinfo(kind).max) if kind.kind in "iu" else 1.0
        rgb = np.clip(rgb / top, 0, 1)
    else:
        low, high = colors.min(axis=0), colors.max(axis=0)
        span = np.where(high > low, high - low, 1.0)
        scaled = (colors - low) / span
        rgb = scaled[:, [0, 0, 0]] if scaled.shape[1] == 1 else np.zeros((k, 3))
        if scaled.shape[1] > 1:
            rgb[:, : min(3, scaled.shape[1])] = scaled[:, :3]
    rgba = np.concatenate([np.round(rgb * 255), np.full((k, 1), 255.0)], axis=1)
    return np.nan_to_num(rgba).astype(np.uint8)


def label_metadata(model, *, source="../../") -> dict:
    """The ``image-label`` metadata of a model's labels (without "version"): each label's colour
    and, as properties, its cluster centre (colour in the input's units) per channel."""
    rgba = display_colors(model)
    colors = [{"label-value": i + 1, "rgba": [int(v) for v in c]} for i, c in enumerate(rgba)]
    properties = [
        {"label-value": i + 1, "center": [float(v) for v in np.atleast_1d(c)]}
        for i, c in enumerate(np.asarray(model.colors, dtype=np.float64))
    ]
    meta = {"colors": colors, "properties": properties}
    if source:
        meta["source"] = {"image": source}
    return meta


def create_labels_group(root, zarr_format: int):
    """Create the empty ``root/labels`` group (``--into-image`` on an image without labels)."""
    import zarr

    zarr.open_group(str(root / "labels"), mode="w-", zarr_format=zarr_format)


def add_to_labels_group(root, name: str, version: str):
    """List ``name`` in the ``root/labels`` group's ``labels`` (the only attribute of the input
    store ``--into-image`` changes)."""
    import zarr

    labels = zarr.open_group(str(root / "labels"), mode="r+")
    attrs = labels.attrs.asdict()
    if version == "0.5":
        ome = dict(attrs.get("ome") or {"version": "0.5"})
        names = list(ome.get("labels") or [])
        if name not in names:
            ome["labels"] = [*names, name]
            labels.attrs["ome"] = ome
    else:
        names = list(attrs.get("labels") or [])
        if name not in names:
            labels.attrs["labels"] = [*names, name]
