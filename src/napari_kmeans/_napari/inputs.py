"""From the widget's choices (layers) to a :class:`~.runner.Job` of plain arrays, checking them.

Everything that can be wrong with the chosen layers is found here, on the main thread and before a
worker starts, and raised as :class:`InputError` with a message for a notification.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from napari.layers import Image, Labels, Shapes

from ..lazy import is_dask
from .runner import Job, Params, Planes

FIT_PIXELS = 1 << 18  # multiscale data are fitted on the coarsest level with at least this many


class InputError(ValueError):
    """The chosen layers or settings cannot be segmented; the message says why and what to do."""


@dataclass(frozen=True)
class RunInfo:
    """What a run was made from, for the output layers and their metadata."""

    source: Image
    extras: tuple
    mask: Labels | Shapes | None
    params: Params
    slice_index: dict | None  # {layer axis: index} for the current-slice scope, else None
    fit_level: int | None  # pyramid level fitted on (multiscale data), else None

    @property
    def layers(self) -> tuple:
        return (self.source, *self.extras, *([self.mask] if self.mask is not None else []))


def levels(layer) -> list:
    """The layer's data as a list of resolution levels (one level unless multiscale)."""
    return list(layer.data) if layer.multiscale else [layer.data]


def is_lazy(layer) -> bool:
    """Whether ``layer`` holds a multiscale pyramid or a dask array (read only on demand)."""
    return bool(getattr(layer, "multiscale", False)) or is_dask(getattr(layer, "data", None))


def _spatial(shape, rgb) -> tuple[int, ...]:
    return tuple(shape[:-1]) if rgb else tuple(shape)


def check_source(viewer, source) -> None:
    if source is None:
        raise InputError(
            "No image layer to segment: open an image (or File > Open Sample > napari k-means) "
            "and choose it under 'image'."
        )
    if source not in viewer.layers or not isinstance(source, Image):
        raise InputError(f"'{source}' is not an image layer of this viewer; choose another one.")


def check_extras(source, extras) -> tuple:
    extras = tuple(e for e in extras if e is not source)
    if extras and source.rgb:
        raise InputError(
            f"'{source.name}' is RGB: it already has its colour channels, and extra channels "
            "are for single-channel layers. Clear 'extra channels' or pick a grayscale layer."
        )
    want = [d.shape for d in levels(source)]
    for extra in extras:
        if not isinstance(extra, Image) or extra.rgb:
            raise InputError(f"extra channel '{extra.name}' must be a single-channel image layer.")
        got = [d.shape for d in levels(extra)]
        if got != want:
            raise InputError(
                f"extra channel '{extra.name}' has shape {got[0] if len(got) == 1 else got}, but "
                f"'{source.name}' has {want[0] if len(want) == 1 else want}; extra channels must "
                "have the same shape (and pyramid levels). Deselect it."
            )
    return extras


def slice_index(viewer, source) -> dict:
    """{layer axis: index} of the slice on screen, for the layer's axes that are not displayed."""
    offset = viewer.dims.ndim - source.ndim
    shown = {a - offset for a in viewer.dims.displayed}
    point = source.world_to_data(viewer.dims.point)
    shape = _spatial(levels(source)[0].shape, source.rgb)
    index = {}
    for axis in range(source.ndim):
        if axis in shown:
            continue
        i = int(np.round(point[axis]))
        if not 0 <= i < shape[axis]:
            raise InputError(
                f"the current slice is outside '{source.name}' (axis {axis} at {i}, size "
                f"{shape[axis]}); move the slider onto the layer or choose scope 'whole data'."
            )
        index[axis] = i
    return index


def mask_array(viewer, layer, source, shape: tuple[int, ...], *, lazy=False):
    """Boolean mask of the source's spatial ``shape`` from a Labels/Shapes layer.

    Pixels with a label > 0 (negative labels are outside), or inside a shape, are in. With
    ``lazy`` the mask is a dask array computed block by block as it is needed, so that a mask
    over a huge (multiscale) image is never rasterised whole on the main thread.
    """
    if layer not in viewer.layers:
        raise InputError(f"mask layer '{layer}' is no longer in the viewer; choose another one.")
    if isinstance(layer, Shapes):
        if lazy:
            return lazy_shapes_mask(viewer, layer, source, shape)
        return shapes_mask(viewer, layer, source, shape)
    if not isinstance(layer, Labels):
        raise InputError(f"mask '{layer.name}' must be a Labels or Shapes layer.")
    data = levels(layer)[0]
    if tuple(data.shape) != shape:
        raise InputError(
            f"mask '{layer.name}' has shape {tuple(data.shape)}, but the pixels of "
            f"'{source.name}' are laid out as {shape}; use a Labels layer of that shape "
            "(in napari: select the image, then Layers > New Labels Layer) or a Shapes layer."
        )
    if lazy:
        import dask.array as da

        return da.asarray(data) > 0
    return np.asarray(data) > 0


def _shape_vertices(viewer, shapes, source, nd: int) -> list[np.ndarray]:
    """Each shape's vertices in the source's pixel coordinates (last ``nd`` axes)."""
    point = np.asarray(viewer.dims.point, dtype=float)
    vertices = []
    for shape_vertices in shapes.data:
        pixels = []
        for vertex in shape_vertices:
            world = np.asarray(shapes.data_to_world(vertex), dtype=float)
            world = np.concatenate([point[: max(0, point.size - world.size)], world])
            pixels.append(np.asarray(source.world_to_data(world))[-nd:])
        vertices.append(np.array(pixels))
    return vertices


def shapes_mask(viewer, shapes, source, shape: tuple[int, ...]) -> np.ndarray:
    """Rasterise ``shapes`` onto the source's pixel grid (through world coordinates)."""
    if shapes.nshapes == 0:
        raise InputError(f"mask '{shapes.name}' has no shapes; draw one, or set mask to none.")
    nd = min(shapes.ndim, len(shape))
    vertices = _shape_vertices(viewer, shapes, source, nd)
    plane = Shapes(vertices, shape_type=shapes.shape_type, ndim=nd).to_labels(
        labels_shape=shape[-nd:]
    )
    return np.broadcast_to(plane > 0, shape)


def _polygon(vertices: np.ndarray, kind: str) -> np.ndarray:
    """A shape's outline as polygon vertices (2-D): ellipses by 64 points on their outline."""
    if kind == "ellipse":  # napari gives the 4 corners of its (possibly rotated) bounding box
        centre = vertices.mean(axis=0)
        u, v = (vertices[1] - vertices[0]) / 2, (vertices[3] - vertices[0]) / 2
        t = np.linspace(0, 2 * np.pi, 64, endpoint=False)[:, None]
        return centre + np.cos(t) * u + np.sin(t) * v
    return vertices


def _raster_block(block_shape, offset, polygons):
    from skimage.draw import polygon2mask

    out = np.zeros(block_shape, bool)
    for poly in polygons:
        local = poly - offset
        lo, hi = local.min(axis=0), local.max(axis=0)
        if np.any(hi < -1) or np.any(lo > np.asarray(block_shape)):
            continue  # the shape does not reach this block
        out |= polygon2mask(block_shape, local)
    return out


def lazy_shapes_mask(viewer, shapes, source, shape: tuple[int, ...]):
    """:func:`shapes_mask` as a dask array rasterised block by block (areas of polygons,
    rectangles and ellipses, 2-D shapes broadcast over the leading axes)."""
    import dask.array as da

    if shapes.nshapes == 0:
        raise InputError(f"mask '{shapes.name}' has no shapes; draw one, or set mask to none.")
    kinds = set(shapes.shape_type)
    if not kinds <= {"polygon", "rectangle", "ellipse"} or shapes.ndim > 2:
        raise InputError(
            f"mask '{shapes.name}' has {', '.join(sorted(kinds))} shapes of {shapes.ndim} "
            "dimensions; masks of lazy (dask or multiscale) images take 2-D rectangles, "
            "ellipses and polygons: draw those, or use a Labels layer as the mask."
        )
    vertices = _shape_vertices(viewer, shapes, source, 2)
    polygons = [_polygon(v, k) for v, k in zip(vertices, shapes.shape_type, strict=True)]
    plane_shape = shape[-2:]
    chunks = tuple(min(n, 1024) for n in plane_shape)

    def block(block_info=None):
        info = block_info[None]
        offset = np.array([lo for lo, _ in info["array-location"]], float)
        return _raster_block(info["chunk-shape"], offset, polygons)

    plane = da.map_blocks(block, chunks=da.core.normalize_chunks(chunks, plane_shape), dtype=bool)
    return da.broadcast_to(plane, shape)


def _downsample(mask, shape: tuple[int, ...]):
    """Nearest-neighbour ``mask`` (numpy or dask) at another level's ``shape``."""
    if mask is None or tuple(mask.shape) == tuple(shape):
        return mask
    for axis, (n, m) in enumerate(zip(shape, mask.shape, strict=True)):
        if n != m:
            grid = np.arange(n) * m // n
            mask = mask[(slice(None),) * axis + (grid,)]
    return mask


def _planes(source, extras, level, index, mask) -> Planes:
    """One level of the inputs, restricted to the slice ``index`` (level-0 indices)."""
    base = _spatial(levels(source)[0].shape, source.rgb)
    here = _spatial(levels(source)[level].shape, source.rgb)
    key = tuple(
        index[a] * here[a] // base[a] if index and a in index else slice(None)
        for a in range(len(here))
    )
    image = levels(source)[level][key]
    extra = tuple(levels(e)[level][key] for e in extras)
    shape = _spatial(image.shape, source.rgb)
    return Planes(image, source.rgb, extra, _downsample(mask, shape))


def _fit_level(source, index) -> int | None:
    """Coarsest pyramid level with at least FIT_PIXELS pixels, or None to fit on level 0."""
    if not source.multiscale:
        return None
    best = None
    for level, data in enumerate(levels(source)[1:], start=1):
        shape = _spatial(data.shape, source.rgb)
        n = math.prod(n for a, n in enumerate(shape) if not index or a not in index)
        if n >= FIT_PIXELS:
            best = level
    return best


def checked_layers(viewer, source, extras, mask, *, lazy=False):
    """Check the source, extra channels and mask layers; ``(extras, spatial shape, mask)``.

    The shape is the full-resolution level's without its colour axis; the mask is an array of
    that shape (a dask array with ``lazy``), or None.
    """
    check_source(viewer, source)
    extras = check_extras(source, extras)
    shape0 = _spatial(levels(source)[0].shape, source.rgb)
    mask_full = None if mask is None else mask_array(viewer, mask, source, shape0, lazy=lazy)
    return extras, shape0, mask_full


def build_job(viewer, source, params: Params, *, extras=(), mask=None, current_slice=False):
    """Check the chosen layers and gather them as a :class:`Job`; returns ``(job, info)``.

    Raises
    ------
    InputError
        With a message for the user when the layers cannot be segmented together.
    """
    extras, shape0, mask_full = checked_layers(viewer, source, extras, mask)
    index = slice_index(viewer, source) if current_slice else None
    index = index or None
    if index is not None and mask_full is not None:
        mask_full = mask_full[tuple(index.get(a, slice(None)) for a in range(len(shape0)))]
    full = _planes(source, extras, 0, index, mask_full)
    level = _fit_level(source, index)
    fit = None if level is None else _planes(source, extras, level, index, mask_full)
    info = RunInfo(source, extras, mask, params, index, level)
    return Job(full, params, fit), info
