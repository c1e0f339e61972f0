"""Axes, channels and pixel sizes of microscopy files: OME-TIFF, ImageJ hyperstacks, TIFF.

What a file says of its layout is an :class:`AxesInfo`: one name per axis of the array
(``"t"``, ``"c"``, ``"z"``, ``"y"``, ``"x"``, ``"s"`` for a TIFF's samples, ``"q"`` for an axis
of unknown meaning), its physical size and unit, and whether its samples are RGB(A).
:func:`channel_layout` turns it into the engine's ``channel_axis`` and ``rgb``, refusing an
ambiguous layout with a message naming the axes found. :func:`read_tiff` reads a TIFF with
tifffile (lazily as a dask array above :data:`LAZY_TIFF_BYTES`), :func:`write_ome_tiff` writes
an array, numpy or dask (page by page), as OME-TIFF with axes and physical sizes.

OME-Zarr (NGFF) metadata is read and written by :mod:`napari_kmeans.ngff`. tifffile and dask
are imported only when needed; no napari, no Qt.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace

import numpy as np

#: TIFF inputs larger than this (bytes of the decoded image) are read lazily, as dask arrays
LAZY_TIFF_BYTES = 256 << 20

AXIS_TYPES = {"t": "time", "c": "channel", "s": "channel", "z": "space", "y": "space", "x": "space"}
# units as NGFF names them (UDUNITS-2), from the symbols OME-XML writes (and back)
_OME_UNITS = {
    "angstrom": "Å", "picometer": "pm", "nanometer": "nm", "micrometer": "µm",
    "millimeter": "mm", "centimeter": "cm", "decimeter": "dm", "meter": "m", "kilometer": "km",
    "inch": "in", "foot": "ft", "yard": "yd", "mile": "mi", "picosecond": "ps",
    "nanosecond": "ns", "microsecond": "µs", "millisecond": "ms", "second": "s",
    "minute": "min", "hour": "h", "day": "d",
}  # fmt: skip
# and from what ImageJ and others write; looked up as written, then in lower case
_UNITS = {
    **{symbol: name for name, symbol in _OME_UNITS.items()},
    **{name: name for name in _OME_UNITS},
    "\\u00b5m": "micrometer", "um": "micrometer", "micron": "micrometer",
    "microns": "micrometer", "å": "angstrom", "us": "microsecond", "sec": "second",
}  # fmt: skip
_GREEK_MU = str.maketrans({"\u03bc": "\u00b5"})  # "μm" (Greek mu) is "µm" (micro sign)


def ngff_unit(unit) -> str | None:
    """``unit`` as NGFF names it ("µm" -> "micrometer"), or None when unknown or absent."""
    if not isinstance(unit, str) or not unit.strip():
        return None
    unit = unit.strip().translate(_GREEK_MU)
    return _UNITS.get(unit, _UNITS.get(unit.lower()))


@dataclass(frozen=True)
class AxesInfo:
    """What a file says of its array's axes.

    Attributes
    ----------
    names : tuple of str
        One lower-case name per axis ("t", "c", "z", "y", "x", "s", "q", or NGFF's own names).
    types : tuple of str or None
        "time", "channel", "space" or None (unknown) per axis.
    scale : tuple of float
        Physical size of a pixel along each axis (1.0 where the file says nothing).
    units : tuple of str or None
        NGFF unit name per axis ("micrometer", "second"), None where unknown.
    translation : tuple of float or None
        Position of the first pixel (NGFF), None when the file gives none.
    rgb : bool or None
        True when the file declares its samples RGB(A) (TIFF photometric), else None.
    source : str
        Where this came from: "OME-XML", "ImageJ", "TIFF", "NGFF 0.4", "NGFF 0.5".
    """

    names: tuple[str, ...]
    types: tuple[str | None, ...]
    scale: tuple[float, ...]
    units: tuple[str | None, ...]
    translation: tuple[float, ...] | None = None
    rgb: bool | None = None
    source: str = ""

    @property
    def described(self) -> str:
        """The axes as a message names them, e.g. ``CZYX``, or ``c, z, y, x`` for long names."""
        if all(len(n) == 1 for n in self.names):
            return "".join(self.names).upper()
        return ", ".join(self.names)

    def without(self, axis: int | None) -> AxesInfo:
        """The axes of an array with ``axis`` removed (labels have no channel axis)."""
        if axis is None:
            return self
        axis = axis % len(self.names)

        def drop(values):
            return None if values is None else tuple(v for i, v in enumerate(values) if i != axis)

        return replace(
            self,
            names=drop(self.names),
            types=drop(self.types),
            scale=drop(self.scale),
            units=drop(self.units),
            translation=drop(self.translation),
            rgb=None,
        )

    def channel_axes(self) -> list[int]:
        return [i for i, t in enumerate(self.types) if t == "channel"]


def axes_from_letters(letters: str, *, scale=None, units=None, rgb=None, source="TIFF"):
    """An :class:`AxesInfo` of tifffile's axes letters (``"TZCYX"``, ``"QSYX"``)."""
    names = tuple(letters.lower())
    n = len(names)
    return AxesInfo(
        names=names,
        types=tuple(AXIS_TYPES.get(a) for a in names),
        scale=tuple(scale) if scale is not None else (1.0,) * n,
        units=tuple(units) if units is not None else (None,) * n,
        rgb=rgb,
        source=source,
    )


def channel_layout(info: AxesInfo | None, shape, *, channel_axis=None, rgb=None):
    """``(channel_axis, rgb)`` for the engine, from the file's axes unless given.

    ``channel_axis`` and ``rgb`` given by the user win. Otherwise the channel axis is the file's
    C (or S, a TIFF's samples) axis; ``rgb`` is True only when the file declares RGB samples,
    and ``rgb=False`` on declared RGB samples reads them as gray planes (a TIFF z-stack of 3
    planes that its writer stored as RGB).
    Raises ValueError when the file has two axes holding channels (e.g. C and S both longer
    than 1), naming the axes found.
    """
    if channel_axis is not None or info is None:
        return channel_axis, rgb
    found = info.channel_axes()
    if len(found) > 1:  # a channel axis of length 1 (C=1 of an RGB OME-TIFF) yields
        longer = [i for i in found if shape[i] > 1]
        found = longer if len(longer) == 1 else found
    if len(found) > 1:
        which = " and ".join(f"{info.names[i].upper()} (axis {i}, {shape[i]})" for i in found)
        raise ValueError(
            f"the file's axes are {info.described} (shape {tuple(shape)}, from {info.source}): "
            f"{which} both hold channels, so which one to cluster is ambiguous; pass "
            "--channel-axis AXIS (and --rgb if its channels are RGB)."
        )
    if not found:
        return None, (rgb if rgb is not None else False)
    axis = found[0]
    if rgb is False and info.names[axis] == "s" and info.rgb:
        return None, False  # --no-rgb on RGB samples: gray planes (e.g. a 3-plane z-stack)
    if rgb is None:
        rgb = bool(info.rgb) and info.names[axis] == "s" and shape[axis] in (3, 4)
    return axis, rgb


# -- TIFF -------------------------------------------------------------------------------------


def _ome_sizes(tif, letters: str):
    import tifffile

    try:
        pixels = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]
        pixels = (pixels[0] if isinstance(pixels, list) else pixels)["Pixels"]
    except (KeyError, IndexError, TypeError, ValueError):
        return None, None
    scale, units = [], []
    for a in letters:
        key = {"X": "PhysicalSizeX", "Y": "PhysicalSizeY", "Z": "PhysicalSizeZ"}.get(a)
        if a == "T":
            key = "TimeIncrement"
        value = pixels.get(key) if key else None
        ok = isinstance(value, int | float) and value > 0
        default = "s" if a == "T" else "µm"
        scale.append(float(value) if ok else 1.0)
        units.append(ngff_unit(pixels.get(f"{key}Unit", default)) if ok else None)
    return scale, units


def _imagej_sizes(tif, letters: str):
    meta = tif.imagej_metadata or {}
    unit = ngff_unit(meta.get("unit"))
    page = tif.pages.first
    try:
        rx, ry = page.get_resolution()
    except Exception:
        rx = ry = 0
    sizes = {}
    if unit is not None and rx and ry:
        sizes.update(X=(1 / rx, unit), Y=(1 / ry, unit))
        if isinstance(meta.get("spacing"), int | float) and meta["spacing"] > 0:
            sizes["Z"] = (float(meta["spacing"]), unit)
    if isinstance(meta.get("finterval"), int | float) and meta["finterval"] > 0:
        sizes["T"] = (float(meta["finterval"]), "second")
    return _sizes_per_axis(sizes, letters)


def _tag_sizes(tif, letters: str):
    import tifffile

    page = tif.pages.first
    sizes = {}
    if page.resolutionunit == tifffile.RESUNIT.CENTIMETER:
        rx, ry = page.get_resolution()
        if rx and ry:
            sizes.update(X=(1e4 / rx, "micrometer"), Y=(1e4 / ry, "micrometer"))
    return _sizes_per_axis(sizes, letters)


def _sizes_per_axis(sizes: dict, letters: str):
    scale = [float(sizes[a][0]) if a in sizes else 1.0 for a in letters]
    units = [sizes[a][1] if a in sizes else None for a in letters]
    return scale, units


def tiff_axes(tif) -> AxesInfo:
    """The axes of the first series of an open ``tifffile.TiffFile``, with its pixel sizes."""
    import tifffile

    series = tif.series[0]
    letters = series.axes.upper()
    page = tif.pages.first
    rgb = (
        True if page.photometric in (tifffile.PHOTOMETRIC.RGB, tifffile.PHOTOMETRIC.YCBCR) else None
    )
    if tif.is_ome:
        scale, units = _ome_sizes(tif, letters)
        source = "OME-XML"
    elif tif.is_imagej:
        scale, units = _imagej_sizes(tif, letters)
        source = "ImageJ"
    else:
        scale, units = _tag_sizes(tif, letters)
        source = "TIFF"
    return axes_from_letters(letters, scale=scale, units=units, rgb=rgb, source=source)


def read_tiff(path, *, lazy_bytes: int | None = None, as_dask=None):
    """``(image, axes)`` of a TIFF's first series (a warning says when there are more): an
    ndarray, or a dask array for an image larger than ``lazy_bytes`` (default
    :data:`LAZY_TIFF_BYTES`) read page by page (in memory when dask or zarr is not installed).
    ``as_dask`` makes that dask array of the series' zarr array (default ``da.from_zarr``)."""
    import tifffile

    lazy_bytes = LAZY_TIFF_BYTES if lazy_bytes is None else lazy_bytes
    try:
        import dask.array as da
        import zarr
    except ImportError:  # without the [dask] extra: in memory
        lazy_bytes = None
    with tifffile.TiffFile(path) as tif:
        info = tiff_axes(tif)
        series = tif.series[0]
        if len(tif.series) > 1:
            warnings.warn(
                f"the file holds {len(tif.series)} image series (e.g. positions); only the "
                f"first ({series.axes}, shape {series.shape}) is segmented; save the others "
                "as files of their own to segment them.",
                stacklevel=2,
            )
        if lazy_bytes is None or series.nbytes <= lazy_bytes:
            return series.asarray(), info

    store = tifffile.imread(path, aszarr=True, series=0, level=0)
    return (as_dask or da.from_zarr)(zarr.open_array(store, mode="r")), info


def _ome_metadata(info: AxesInfo) -> dict:
    meta = {"axes": info.described}
    for name, size, unit in zip(info.names, info.scale, info.units, strict=True):
        if unit is None or name not in "xyzt":
            continue
        key = "TimeIncrement" if name == "t" else f"PhysicalSize{name.upper()}"
        meta[key] = float(size)
        meta[f"{key}Unit"] = _OME_UNITS.get(unit, unit)
    return meta


def _pages(data, n_page_dims: int):
    """The pages (trailing ``n_page_dims`` axes) of ``data`` in order; a dask array is
    computed one chunk of its last leading axis at a time (bounded memory)."""
    lead = data.ndim - n_page_dims
    if not hasattr(data, "dask") or lead == 0:
        data = np.asarray(data)
        for index in np.ndindex(data.shape[:lead]):
            yield data[index]
        return
    for outer in np.ndindex(data.shape[: lead - 1]):
        start = 0
        for size in data.chunks[lead - 1]:
            block = np.asarray(data[(*outer, slice(start, start + size))])
            start += size
            yield from block


# pixel types OME-XML can describe (no float16, int64, uint64)
_OME_DTYPES = {
    np.dtype(t) for t in ("bool", "i1", "u1", "i2", "u2", "i4", "u4", "f4", "f8", "c8", "c16")
}
_MICROMETERS = {"nanometer": 1e-3, "micrometer": 1.0, "millimeter": 1e3, "centimeter": 1e4}


def _resolution_tags(info: AxesInfo) -> dict:
    """tifffile's ``resolution`` (pixels per centimetre) of ``info``'s x and y sizes, or {}."""
    sizes = dict(zip(info.names, zip(info.scale, info.units, strict=True), strict=True))
    if any(sizes.get(a, (0, None))[1] not in _MICROMETERS for a in "xy"):
        return {}
    import tifffile

    per_cm = [1e4 / (sizes[a][0] * _MICROMETERS[sizes[a][1]]) for a in "xy"]
    return {"resolution": tuple(per_cm), "resolutionunit": tifffile.RESUNIT.CENTIMETER}


def write_ome_tiff(path, data, info: AxesInfo, *, rgb: bool = False):
    """Write ``data`` (numpy or dask) as a zlib-compressed OME-TIFF with ``info``'s axes and
    physical sizes; RGB samples (an ``s`` axis) as photometric RGB, interleaved or planar as
    in ``info``. A dask array is written page by page. A dtype OME-XML cannot describe
    (float16, int64, uint64) is written as a TIFF with tifffile's axes and the x and y pixel
    sizes in its resolution tags."""
    import tifffile

    names = info.names
    if len(names) != data.ndim or not all(len(n) == 1 for n in names):
        raise ValueError(f"cannot write axes {names} for an array of shape {data.shape}")
    options = {"compression": "zlib", "photometric": "minisblack"}
    n_page = 2
    if rgb and "s" in names:
        options["photometric"] = "rgb"
        contig = names[-1] == "s"
        options["planarconfig"] = "contig" if contig else "separate"
        n_page = 3
    elif "s" in names[:-2]:  # samples read as planes (--no-rgb): planes of unknown kind
        info = replace(info, names=tuple("q" if n == "s" else n for n in names))
    elif names[-1] == "s":  # samples read as planes, still stored as samples of each pixel
        options["planarconfig"] = "contig"
        n_page = 3
    if np.dtype(data.dtype) in _OME_DTYPES:
        options.update(ome=True, metadata=_ome_metadata(info))
    else:
        options.update(ome=False, metadata={"axes": info.described}, **_resolution_tags(info))
    tifffile.imwrite(path, _pages(data, n_page), shape=data.shape, dtype=data.dtype, **options)
