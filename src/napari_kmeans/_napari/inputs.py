"""From the widget's choices (layers) to jobs of plain arrays, checking everything first.

Everything that can be wrong with the chosen layers is found here, on the main thread and before
a worker starts, and raised as :class:`~.jobs.InputError` with a message for a notification.
:func:`for_run` and :func:`for_apply` choose the computation a click starts: in memory, or lazy
(dask-backed and multiscale layers, whose outputs are computed as you browse).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import os

import numpy as np
from napari.layers import Image, Labels, Shapes

from .. import lazy
from ..model import KMeansModel
from .editing import Target, resolve
from .jobs import (
    ComputeInfo,
    ComputeJob,
    InputError,
    Job,
    LazyJob,
    Params,
    Planes,
    RunInfo,
    extend_info,
    is_lazy,
    levels,
    size_text,
    spatial,
)
from .outputs import KEY
from .workers import (
    level_factors,
    run_apply,
    run_frames,
    run_lazy,
    run_segment,
)

FIT_PIXELS = 1 << 18  # multiscale data are fitted on the coarsest level with at least this many


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
    shape = spatial(levels(source)[0].shape, source.rgb)
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
    data = _labels_of_shape(
        layer, source, shape, "mask", "use a Labels layer of that shape (in napari: select the "
        "image, then Layers > New Labels Layer) or a Shapes layer.",
        "use a Shapes mask, which is placed through world coordinates", lazy,
    )  # fmt: skip
    return data > 0


def _numbers(values) -> str:
    return "(" + ", ".join(f"{float(v):g}" for v in values) + ")"


def _only_scaled(layer) -> bool:
    """``layer`` has no rotate, shear or affine: its scale and translate say where it is."""
    n = layer.ndim
    return (
        np.allclose(layer.rotate, np.eye(n)) and np.allclose(layer.shear, 0)
        and np.allclose(layer.affine.affine_matrix, np.eye(n + 1))
    )  # fmt: skip


def _check_placed_like(layer, source, what: str, other: str) -> None:
    """Raise :class:`InputError` (naming ``what`` it is and the ``other`` way) unless each pixel
    of ``layer`` lies on the pixel of ``source`` of the same index (it is read pixel by pixel)."""
    corners = np.vstack([np.zeros(source.ndim), np.eye(source.ndim)])  # origin and unit steps
    mine = np.array([layer.data_to_world(p) for p in corners], dtype=float)
    theirs = np.array([source.data_to_world(p) for p in corners], dtype=float)
    if np.allclose(mine, theirs, rtol=1e-6, atol=1e-6 * float(np.min(np.abs(source.scale)))):
        return
    if _only_scaled(layer) and _only_scaled(source):
        found = (
            f"is placed at scale {_numbers(layer.scale)}, translate {_numbers(layer.translate)}, "
            f"but '{source.name}' at scale {_numbers(source.scale)}, translate "
            f"{_numbers(source.translate)}"
        )
    else:
        found = f"is placed differently from '{source.name}' (rotated, sheared or given an affine)"
    raise InputError(
        f"{what} '{layer.name}' {found}: each of its pixels would stand for the image pixel of "
        f"the same index, not the one it is drawn over. Give it the scale and translate of "
        f"'{source.name}' (and its rotate, shear and affine), or {other}."
    )


def _labels_of_shape(layer, source, shape, what: str, fix: str, other: str, lazy: bool):
    """The full-resolution data of Labels ``layer`` (dask with ``lazy``), checked to have the
    source's spatial ``shape`` (else an InputError naming ``what`` it is and the ``fix``) and
    placement (else one naming the ``other`` way)."""
    data = levels(layer)[0]
    if tuple(data.shape) != shape:
        raise InputError(
            f"{what} '{layer.name}' has shape {tuple(data.shape)}, but the pixels of "
            f"'{source.name}' are laid out as {shape}; {fix}"
        )
    _check_placed_like(layer, source, what, other)
    if lazy:
        import dask.array as da

        return da.asarray(data)
    return np.asarray(data)


def seeds_array(viewer, layer, source, shape: tuple[int, ...], *, lazy=False):
    """The seed classes (0: unseeded) of Labels ``layer``, of the source's spatial ``shape``."""
    if layer not in viewer.layers:
        raise InputError(f"seeds layer '{layer}' is no longer in the viewer; choose another one.")
    if not isinstance(layer, Labels):
        raise InputError(f"seeds '{layer.name}' must be a Labels layer of scribbles.")
    fix = "make a seeds layer of that shape with 'New' next to the seeds choice."
    other = "make a seeds layer placed as the image with 'New' next to the seeds choice"
    data = _labels_of_shape(layer, source, shape, "seeds", fix, other, lazy)
    return data if lazy else data.copy()  # strokes painted while the run computes stay out


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


def _downsample_seeds(seeds, shape: tuple[int, ...]):
    """``seeds`` at another level's ``shape`` keeping every stroke: each seeded pixel marks the
    coarse pixel it falls in (nearest-neighbour sampling would lose strokes thinner than the
    level's step). A dask array is read into memory here."""
    if seeds is None or tuple(seeds.shape) == tuple(shape):
        return seeds
    seeds = np.asarray(seeds)
    where = np.nonzero(seeds)
    out = np.zeros(shape, seeds.dtype)
    coarse = tuple(c * n // m for c, n, m in zip(where, shape, seeds.shape, strict=True))
    out[coarse] = seeds[where]
    return out


def _planes(source, extras, level, index, mask, seeds=None) -> Planes:
    """One level of the inputs, restricted to the slice ``index`` (level-0 indices); ``mask``
    and ``seeds`` are already restricted to it, at full resolution."""
    base = spatial(levels(source)[0].shape, source.rgb)
    here = spatial(levels(source)[level].shape, source.rgb)
    key = tuple(
        index[a] * here[a] // base[a] if index and a in index else slice(None)
        for a in range(len(here))
    )
    image = levels(source)[level][key]
    extra = tuple(levels(e)[level][key] for e in extras)
    shape = spatial(image.shape, source.rgb)
    full_shape = tuple(n for a, n in enumerate(base) if not index or a not in index)
    return Planes(
        image,
        source.rgb,
        extra,
        _downsample(mask, shape),
        _downsample_seeds(seeds, shape),
        full_shape,
    )


def _fit_level(source, index) -> int | None:
    """Coarsest pyramid level with at least FIT_PIXELS pixels, or None to fit on level 0."""
    if not source.multiscale:
        return None
    best = None
    for level, data in enumerate(levels(source)[1:], start=1):
        shape = spatial(data.shape, source.rgb)
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
    shape0 = spatial(levels(source)[0].shape, source.rgb)
    mask_full = None if mask is None else mask_array(viewer, mask, source, shape0, lazy=lazy)
    return extras, shape0, mask_full


def build_job(
    viewer, source, params: Params, *, extras=(), mask=None, current_slice=False, level=0,
    preview=False, seeds=None, match_to=None, confidence=False, kept=None,
):  # fmt: skip
    """Check the chosen layers and gather them as a :class:`Job`; returns ``(job, info)``.

    ``level`` > 0 (a multiscale image) reads that pyramid level instead of the full resolution
    (a preview of the level on screen); ``preview`` marks the outputs as a live preview.
    ``seeds`` is a Labels layer of scribbles, ``match_to`` the model whose label IDs to keep,
    ``confidence`` asks for the confidence image too; ``kept`` (a live preview's
    :class:`~.jobs.Kept`) keeps the laid-out pixels from one preview to the next.

    Raises
    ------
    InputError
        With a message for the user when the layers cannot be segmented together.
    """
    extras, shape0, mask_full = checked_layers(viewer, source, extras, mask, lazy=level > 0)
    index = slice_index(viewer, source) if current_slice else None
    index = index or None
    seeds_full = None if seeds is None else seeds_array(viewer, seeds, source, shape0)
    if index is not None:
        where = tuple(index.get(a, slice(None)) for a in range(len(shape0)))
        mask_full = None if mask_full is None else mask_full[where]
        seeds_full = None if seeds_full is None else seeds_full[where]
    full = _planes(source, extras, level, index, mask_full, seeds_full)
    fit_level = None if level else _fit_level(source, index)
    fit = (
        None if fit_level is None
        else _planes(source, extras, fit_level, index, mask_full, seeds_full)
    )  # fmt: skip
    info = RunInfo(source, extras, mask, params, index, fit_level, level, preview)
    factors = None
    if level:  # a coarser level on screen: the recipe at its scale (sigma in its pixels)
        factors = level_factors(full.full_shape, full.spatial_shape)
    return Job(full, params, fit, match_to, confidence, factors, kept), info


def for_preview(viewer, source, params: Params, **kwargs) -> tuple:
    """A live preview: the slice on screen, at the pyramid level on screen for a multiscale
    image, read into memory and segmented there (``run_segment``); ``kwargs`` as for
    :func:`build_job`."""
    level = int(source.data_level) if getattr(source, "multiscale", False) else 0
    job, info = build_job(
        viewer, source, params, current_slice=True, level=level, preview=True, **kwargs
    )
    return run_segment, job, info


def _check_slice_fit(params: Params, part: Planes, whole: Planes) -> None:
    """A model fitted on a slice labels the whole data: positions (spatial weight) cannot."""
    if params.spatial_weight > 0 and len(part.spatial_shape) < len(whole.spatial_shape):
        raise InputError(
            f"spatial weight {params.spatial_weight:g} adds each pixel's position on the slice's "
            "axes, which a model fitted on one slice cannot give the other slices: set spatial "
            "weight to 0, fit on all of the scope, or choose scope 'current slice'."
        )


def fit_on_slice_job(viewer, source, params: Params, *, extras=(), mask=None, **kwargs):
    """Fit on the slice on screen, label the whole data with that model.

    For a timelapse or a stack: every frame is labelled by one model fitted on the current frame.
    """
    whole, info = build_job(viewer, source, params, extras=extras, mask=mask, **kwargs)
    part, part_info = build_job(
        viewer, source, params, extras=extras, mask=mask, current_slice=True, **kwargs
    )
    _check_slice_fit(params, part.full, whole.full)
    fit = part.fit if part.fit is not None else part.full
    job = Job(whole.full, params, fit, whole.match_to, whole.confidence)
    return job, extend_info(info, fit_slice=part_info.slice_index)


def model_of(labels, source, extras, params: Params) -> KMeansModel | None:
    """The model recorded in k-means ``labels`` (a layer), when a run on ``source`` (+
    ``extras``) with ``params`` can match its label IDs to it (the same channels and colour
    space, values in the model's units: ``KMeansModel.compares_with``); None otherwise."""
    meta = labels.metadata.get(KEY) or {}
    try:
        model = KMeansModel.from_dict(meta["model"])
    except (KeyError, TypeError, ValueError):
        return None
    channels = levels(source)[0].shape[-1] if source.rgb else 1 + len(extras)
    spec = model.spec
    same = (spec.rgb, spec.n_channels, spec.color_space) == (
        bool(source.rgb),
        int(channels),
        params.color_space,
    )
    dtype = levels(source)[0].dtype
    return model if same and model.compares_with(dtype) else None


def params_of(model: KMeansModel) -> Params:
    """Settings recorded for a run that applies ``model``."""
    return Params(n_clusters=model.n_clusters, color_space=model.spec.color_space, seed=model.seed)


def apply_job(viewer, source, model: KMeansModel, origin: str, **kwargs):
    """A job labelling ``source`` (with ``extras``/``mask``/``current_slice``) by ``model``."""
    job, info = build_job(viewer, source, params_of(model), **kwargs)
    return Job(job.full, job.params), extend_info(info, model_from=origin)


TILE = 1024  # chunk side (last two spatial axes) when a numpy pyramid level is wrapped in dask


LAZY_TEXT = "outputs are computed as you browse; Compute into memory to edit"


def lazy_mode(source, current_slice: bool = False) -> bool:
    """Whether a run on ``source`` gives lazy output layers.

    True for dask-backed and multiscale image layers (when dask is installed) segmented whole;
    the current-slice scope reads the slice into memory.
    """
    return (
        source is not None and is_lazy(source) and not current_slice
        and importlib.util.find_spec("dask") is not None
    )  # fmt: skip


def mode_text(source, current_slice: bool = False) -> str:
    """The widget's line saying how a run on ``source`` will be computed."""
    if source is None:
        return "mode: no image chosen"
    if lazy_mode(source, current_slice):
        kind = f"multiscale, {len(levels(source))} levels" if source.multiscale else "dask"
        return f"mode: lazy ({kind}) — {LAZY_TEXT}"
    if is_lazy(source) and current_slice:
        return "mode: in memory (the current slice is read into memory)"
    if is_lazy(source):
        return "mode: in memory (install dask for lazy outputs)"
    return "mode: in memory"


def _as_dask(array, rgb: bool):
    """``array`` as a dask array; numpy levels are wrapped (nothing is copied or hashed)."""
    if lazy.is_dask(array):
        return array
    import dask.array as da

    spatial = array.ndim - 1 if rgb else array.ndim
    chunks = [1] * max(spatial - 2, 0) + [min(n, TILE) for n in array.shape[:spatial][-2:]]
    chunks += [-1] if rgb else []
    return da.from_array(array, chunks=tuple(chunks), name=False)


def _level_planes(source, extras, level: int, mask) -> Planes:
    image = _as_dask(levels(source)[level], source.rgb)
    extra = tuple(_as_dask(levels(e)[level], False) for e in extras)
    return Planes(image, source.rgb, extra, _downsample(mask, spatial(image.shape, source.rgb)))


def build_lazy_job(
    viewer, source, params: Params, *, extras=(), mask=None, fit_slice=False, model=None,
    origin=None, seeds=None, match_to=None, confidence=False,
):  # fmt: skip
    """Check the chosen layers and gather a :class:`LazyJob`; returns ``(job, info)``.

    ``fit_slice`` fits on the slice on screen; ``model`` (applied from ``origin``) skips the fit.
    ``seeds``, ``match_to`` and ``confidence`` are as for :func:`build_job`.

    Raises
    ------
    InputError
        With a message for the user when the layers cannot be segmented together.
    """
    extras, shape0, mask_full = checked_layers(viewer, source, extras, mask, lazy=True)
    seeds_full = (
        None if seeds is None or model is not None
        else seeds_array(viewer, seeds, source, shape0, lazy=True)
    )  # fmt: skip
    n_levels = len(levels(source))
    planes = tuple(_level_planes(source, extras, i, mask_full) for i in range(n_levels))
    if seeds_full is not None:  # the block-wise fit reads the seeds at full resolution
        planes = (dataclasses.replace(planes[0], seeds=seeds_full), *planes[1:])
    fit = level = sliced = None
    if model is None and fit_slice:
        part, part_info = build_job(
            viewer, source, params, extras=extras, mask=mask, current_slice=True, seeds=seeds
        )
        _check_slice_fit(params, part.full, planes[0])
        fit = part.fit if part.fit is not None else part.full
        level, sliced = part_info.fit_level, part_info.slice_index
    elif model is None:
        level = _fit_level(source, None)
        fit = (
            None if level is None
            else _planes(source, extras, level, None, mask_full, seeds_full)
        )  # fmt: skip
    info = RunInfo(source, extras, mask, params, None, level)
    if model is not None:
        info = extend_info(info, model_from=origin)
    elif fit_slice:
        info = extend_info(info, fit_slice=sliced)
    job = LazyJob(planes, params, fit, model, source.multiscale, match_to, confidence)
    return job, info


SAFE_FRACTION = 0.5  # at most this share of the available memory is used


def available_bytes() -> int | None:
    """Memory available to this process now (psutil, /proc/meminfo or sysconf), or None."""
    try:
        import psutil
    except ImportError:
        pass
    else:
        return int(psutil.virtual_memory().available)
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None


def _nbytes(array) -> int:
    return math.prod(array.shape) * np.dtype(array.dtype).itemsize


def needed_bytes(target: Target) -> dict:
    """Bytes by part: full-resolution labels, recoloured image, and source pixels not in memory.

    Edits read the source (and extra channels) at full resolution: a dask-backed source is
    counted too.
    """
    parts = {"labels": _nbytes(levels(target.labels)[0])}
    if target.recolored is not None and is_lazy(target.recolored):
        parts["recolored image"] = _nbytes(levels(target.recolored)[0])
    lazy_sources = [layer for layer in (target.source, *target.extras) if is_lazy(layer)]
    if lazy_sources:
        parts["source pixels"] = sum(_nbytes(levels(layer)[0]) for layer in lazy_sources)
    return parts


def compute_plan(viewer, layer, outputs=()) -> tuple[ComputeJob, ComputeInfo]:
    """Check that lazy labels ``layer`` can be computed into memory; ``(job, info)``.

    Raises
    ------
    InputError
        When ``layer`` is not lazy k-means labels, its source is gone, or the result would take
        more than ``SAFE_FRACTION`` of the available memory.
    """
    target = resolve(viewer, layer, outputs, allow_lazy=True)
    if not is_lazy(layer):
        raise InputError(f"'{layer.name}' is already in memory: it can be edited as it is.")
    parts = needed_bytes(target)
    need, have = sum(parts.values()), available_bytes()
    if have is not None and need > SAFE_FRACTION * have:
        detail = ", ".join(f"{name} {size_text(n)}" for name, n in parts.items())
        raise InputError(
            f"'{layer.name}' does not fit in memory: computing it needs about {size_text(need)} "
            f"({detail}), more than {SAFE_FRACTION:.0%} of the {size_text(have)} available. Nothing "
            "was changed; keep browsing it lazily, or segment a smaller region or the current "
            "slice (scope) to edit."
        )
    rec = target.recolored
    recolored = levels(rec)[0] if rec is not None and is_lazy(rec) else None
    return ComputeJob(levels(layer)[0], recolored), ComputeInfo(target)


CURVE_PIXELS = 1 << 20  # lazy data: the curve is computed on about this many pixels


def subsample(planes: Planes, target: int = CURVE_PIXELS) -> Planes:
    """Every s-th pixel along each spatial axis, so that about ``target`` pixels are left.

    Lazy (dask) planes stay lazy: only the kept pixels are read, in the worker.
    """
    shape = planes.spatial_shape
    n = int(np.prod(shape))
    if n <= target:
        return planes
    step = int(np.ceil((n / target) ** (1 / len(shape))))
    index = tuple(slice(None, None, step) for _ in shape)
    mask = None if planes.mask is None else planes.mask[index]
    return Planes(planes.image[index], planes.rgb, tuple(e[index] for e in planes.extras), mask)


def curve_planes(viewer, source, params, *, extras, mask, current_slice) -> Planes:
    """The pixels the curve is computed on (main thread): in memory, or a lazy subsample.

    Lazy (dask or multiscale) sources are never read whole: the curve uses the level Run fits
    on, or every s-th pixel of the data.
    """
    if lazy_mode(source, current_slice):
        job, _ = build_lazy_job(viewer, source, params, extras=extras, mask=mask)
        return subsample(job.fit if job.fit is not None else job.full)
    job, _ = build_job(
        viewer, source, params, extras=extras, mask=mask, current_slice=current_slice
    )
    return job.fit if job.fit is not None else job.full


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


def for_run(
    viewer, source, params: Params, *, extras=(), mask=None, current_slice=False, fit_slice=False,
    each_frame=False, **kwargs,
) -> tuple:  # fmt: skip
    """A k-means run on ``source`` (fitting on the slice on screen when ``fit_slice``, on each
    frame of the first axis when ``each_frame``); ``kwargs`` (seeds, match_to, confidence) as
    for :func:`build_job`."""
    if each_frame:
        if lazy_mode(source, current_slice):
            raise InputError(
                f"'{source.name}' is lazy (dask or multiscale): fitting each frame needs it in "
                "memory. Choose 'fit on: all of the scope' or 'current slice only', or open the "
                "data in memory."
            )
        job, info = build_job(viewer, source, params, extras=extras, mask=mask, **kwargs)
        return run_frames, job, extend_info(info, each_frame=True)
    if lazy_mode(source, current_slice):
        job, info = build_lazy_job(
            viewer, source, params, extras=extras, mask=mask, fit_slice=fit_slice, **kwargs
        )
        return run_lazy, job, info
    if fit_slice:
        job, info = fit_on_slice_job(viewer, source, params, extras=extras, mask=mask, **kwargs)
    else:
        job, info = build_job(
            viewer, source, params, extras=extras, mask=mask, current_slice=current_slice,
            **kwargs,
        )  # fmt: skip
    return run_segment, job, info


def for_apply(viewer, source, model, origin: str, *, extras=(), mask=None, current_slice=False):
    """Label ``source`` with ``model`` (from ``origin``), after checking that it fits."""
    if lazy_mode(source, current_slice):
        job, info = build_lazy_job(
            viewer, source, params_of(model), extras=extras, mask=mask, model=model,
            origin=origin,
        )  # fmt: skip
        check_fits(model, job.full, info.source.name)
        return run_lazy, job, info
    job, info = apply_job(
        viewer, source, model, origin, extras=extras, mask=mask, current_slice=current_slice
    )
    check_fits(model, job.full, info.source.name)
    return run_apply, job, info, model
