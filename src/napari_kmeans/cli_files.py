"""Files of the ``napari-kmeans segment`` command: naming, checking, reading and writing them.

Promises kept here: no output is, holds or lies inside an input; ``--overwrite`` replaces only
outputs napari-kmeans wrote; the outputs of one input appear together or not at all (written to
a hidden folder, then moved into place). Readers and writers (tifffile, imageio, zarr, dask) are
imported only when needed. :mod:`napari_kmeans.cli` parses the arguments and runs the batch.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import signal
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import microscopy, ngff
from ._version import __version__
from .ngff import LABELS_NAME

EXIT_OK = 0
EXIT_INTERNAL = 1  # an unexpected error (a bug): one line with where to report it
EXIT_USAGE = 2  # bad or conflicting arguments (argparse's own code too); outputs clash with inputs
EXIT_OUT_DIR = 3  # the output folder cannot be created, is not a folder, or is not writable
EXIT_UNREADABLE = 4  # an input or the --model file is missing, of an unknown kind, or unreadable
EXIT_EXISTS = 5  # outputs exist (no --overwrite, or not written by napari-kmeans); nothing written
EXIT_FAILED = 6  # an image could not be segmented (e.g. it does not match the model)
EXIT_WRITE = 7  # an input's outputs could not be written (e.g. disk full); old outputs kept
EXIT_MISSING = 8  # a package the command needs is not installed
EXIT_SIGINT = 130  # interrupted by Ctrl+C (128 + SIGINT)
EXIT_SIGTERM = 143  # terminated by SIGTERM (128 + SIGTERM)

BUG_TRACKER = "https://github.com/napari-kmeans/napari-kmeans/issues"
MARK = "napari_kmeans"  # attribute of the zarr outputs: --overwrite replaces only folders with it
TRACEBACK_ENV = "NAPARI_KMEANS_TRACEBACK"  # set to 1 to print the traceback of unexpected errors

FORMATS = {".tif": "tiff", ".tiff": "tiff", ".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg"}
RECOLORED_EXT = {"tiff": ".tif", "png": ".png", "jpeg": ".png"}  # JPEG is lossy: write PNG
# modules each kind of input needs (labels are TIFF files, except for zarr), and their pip extra
NEEDS = {
    "tiff": [("tifffile", "cli")],
    "png": [("imageio", "cli"), ("tifffile", "cli")],
    "jpeg": [("imageio", "cli"), ("tifffile", "cli")],
    "zarr": [("zarr", "dask"), ("dask.array", "dask")],
}


class CliError(Exception):
    """An error with a message for the user and an exit code."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


class NotRestored(CliError):
    """The previous outputs could not be put back: they are left in the hidden folder."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl+C so that the same clean-up runs."""


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


# -- inputs and outputs -----------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One input and the outputs it gives."""

    path: Path
    kind: str  # "tiff", "png", "jpeg" or "zarr"
    labels: Path
    recolored: Path
    model: Path
    into_image: bool = False  # labels written into the input OME-Zarr's labels/ group

    @property
    def outputs(self) -> tuple[Path, Path, Path]:
        return self.labels, self.recolored, self.model


def zarr_root(path: Path) -> Path | None:
    """The outermost ``.zarr`` folder that is or holds ``path``, or None."""
    found = None
    for p in (path, *path.parents):
        if p.suffix.lower() == ".zarr":
            found = p
    return found


def kind_of(path: Path) -> str | None:
    suffix = path.suffix.lower()
    if suffix in FORMATS:
        return FORMATS[suffix]
    return "zarr" if zarr_root(path) is not None else None


def _stem(path: Path, kind: str) -> str:
    root = zarr_root(path) if kind == "zarr" else None
    base = root if root is not None else path
    stem = base.name[: -len(base.suffix)] if base.suffix else base.name
    if stem.lower().endswith(".ome") and len(stem) > 4:  # cells.ome.tif, cells.ome.zarr -> cells
        stem = stem[:-4]
    if root is not None and root != path:  # an array inside a zarr group: scan.zarr/0 -> scan_0
        stem = "_".join([stem, *path.relative_to(root).parts])
    return stem


def _job(path: Path, out: Path, into_image: bool = False) -> Job:
    kind = kind_of(path)
    stem = _stem(path, kind)
    if kind == "zarr":
        labels, recolored = out / f"{stem}_labels.zarr", out / f"{stem}_recolored.zarr"
        if into_image:
            labels = path / "labels" / LABELS_NAME
    else:
        labels, recolored = (
            out / f"{stem}_labels.tif",
            out / f"{stem}_recolored{RECOLORED_EXT[kind]}",
        )
    return Job(path, kind, labels, recolored, out / f"{stem}_model.json", into_image)


def _check_into_image(paths):
    """``--into-image`` needs every input to be an OME-Zarr image group (exit 2 otherwise)."""
    import zarr

    for path in paths:
        entry = None
        if kind_of(path) == "zarr" and zarr_root(path) == path:
            try:
                group = zarr.open_group(str(path), mode="r")
                entry, _ = ngff.read_image_metadata(group, ndim=0)
            except Exception:
                entry = None
        if entry is None:
            raise CliError(
                EXIT_USAGE,
                f"--into-image writes labels into an OME-Zarr image's labels/ group, but {path} "
                "is not an OME-Zarr image (a .zarr folder with multiscales metadata); drop "
                "--into-image to write the labels to --out.",
            )
        why = _labels_group_problem(path / "labels")
        if why:
            raise CliError(
                EXIT_USAGE,
                f"--into-image adds labels to the input's labels group, but {path / 'labels'} "
                f"{why}; nothing was written. Repair or move it, or drop --into-image to write "
                "the labels to --out.",
            )


def _labels_group_problem(path: Path) -> str | None:
    """Why the existing ``labels`` entry of an image cannot take more labels, or None."""
    import zarr

    if not os.path.lexists(path):
        return None
    try:
        group = zarr.open_group(str(path), mode="r")
    except Exception:
        return "is not a zarr group (an array, a file or a plain folder)"
    attrs = group.attrs.asdict()
    ome = attrs.get("ome")
    names = ome.get("labels") if isinstance(ome, dict) else attrs.get("labels")
    if names is not None and not (
        isinstance(names, list) and all(isinstance(n, str) for n in names)
    ):
        return f"lists its labels as {names!r}, not as a list of names"
    return None


def _check_out_dir(out: Path):
    if not out.exists():  # made by make_out_dir() once every check has passed
        base = next((p for p in out.absolute().parents if p.exists()), None)
        if base is None or not base.is_dir() or not os.access(base, os.W_OK | os.X_OK):
            raise CliError(
                EXIT_OUT_DIR,
                f"cannot create the output folder {out}: {base} is not a writable folder.",
            )
        return
    if not out.is_dir():
        raise CliError(EXIT_OUT_DIR, f"--out {out} is not a folder; give a folder for the outputs.")
    if not os.access(out, os.W_OK | os.X_OK):
        raise CliError(EXIT_OUT_DIR, f"output folder {out} is not writable.")


def _check_inputs(paths):
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise CliError(EXIT_UNREADABLE, f"no such file: {', '.join(map(str, missing))}.")
    unknown = [p for p in paths if kind_of(p) is None]
    if unknown:
        raise CliError(
            EXIT_UNREADABLE,
            f"cannot read {', '.join(map(str, unknown))}: unknown kind of file; give TIFF (.tif, "
            ".tiff), PNG (.png), JPEG (.jpg, .jpeg) or zarr (.zarr) images.",
        )
    odd = [p for p in paths if not (p.is_dir() if kind_of(p) == "zarr" else p.is_file())]
    if odd:
        raise CliError(
            EXIT_UNREADABLE,
            f"cannot read {', '.join(map(str, odd))}: not a regular file (or, for zarr, not a "
            "folder); give image files, or zarr folders.",
        )


def _check_modules(jobs):
    """Exit 8, naming the pip extra, when a reader or writer the inputs need is missing."""
    needs = {need for job in jobs for need in NEEDS[job.kind]}
    missing = []
    for name, extra in sorted(needs):
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append((name.split(".")[0], extra))
    if missing:
        names = sorted({name for name, _ in missing})
        extras = ",".join(sorted({extra for _, extra in missing}))
        raise CliError(
            EXIT_MISSING,
            f"these inputs need {', '.join(names)}, which {'is' if len(names) == 1 else 'are'} "
            f'not installed; install it with: pip install "napari-kmeans[{extras}]"',
        )


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _check_overlap(jobs, other_inputs):
    """Exit 2 when an output is, holds or lies inside an input (symbolic links followed);
    ``other_inputs``: the files read besides the images (``--model``, ``--seeds``)."""
    protected = [(job.path, zarr_root(job.path) or job.path) for job in jobs]
    protected += [(p, zarr_root(p) or p) for p in other_inputs if p is not None]
    protected = [(given, p.resolve()) for given, p in protected]
    for job in jobs:
        for out in job.outputs:
            if job.into_image and out == job.labels:
                continue  # the one write allowed inside an input: its labels/ group
            real = out.resolve()
            for given, inp in protected:
                if real == inp or _same_file(out, inp):
                    problem = f"would replace the input {given}"
                elif inp in real.parents:
                    problem = f"would be written inside the input {given}"
                elif real in inp.parents:
                    problem = f"would replace a folder holding the input {given}"
                else:
                    continue
                raise CliError(
                    EXIT_USAGE,
                    f"the output {out} {problem}; nothing was written. Choose an --out folder "
                    "where no output is, holds or lies inside an input (e.g. an empty folder).",
                )


def _is_our_zarr(path: Path) -> bool:
    """True for a zarr array or group carrying the attribute napari-kmeans puts on its outputs."""
    try:
        import zarr

        return isinstance(zarr.open(str(path), mode="r").attrs.get(MARK), dict)
    except Exception:
        return False


def _not_ours(job: Job, path: Path) -> str | None:
    """Why ``--overwrite`` must not replace the existing ``path``, or None."""
    if path.suffix == ".zarr" or (job.into_image and path == job.labels):
        if not _is_our_zarr(path):
            return f"is not a zarr array or group it wrote (no '{MARK}' attribute)"
    elif path.is_dir() and not path.is_symlink():
        return "is a folder, where it writes a file"
    return None


def _check_existing(jobs, overwrite):
    existing = [p for job in jobs for p in job.outputs if os.path.lexists(p)]
    if existing and not overwrite:
        names = ", ".join(str(p) for p in existing[:5]) + (" ..." if len(existing) > 5 else "")
        raise CliError(
            EXIT_EXISTS,
            f"{len(existing)} output(s) already exist: {names}; nothing was written. "
            "Pass --overwrite to replace them, or choose another --out folder.",
        )
    for job in jobs:
        for path in job.outputs:
            why = _not_ours(job, path) if os.path.lexists(path) else None
            if why:
                raise CliError(
                    EXIT_EXISTS,
                    f"{path} {why}: --overwrite replaces only outputs napari-kmeans wrote, and "
                    "it did not write this one; nothing was written. Move or delete it yourself, "
                    "or choose another --out folder.",
                )


def plan(args) -> list[Job]:
    """Check everything about the files that can be checked before any work, and name every
    output; :func:`make_out_dir` then creates ``--out``."""
    _check_out_dir(args.out)
    _check_inputs(args.inputs)
    into_image = bool(getattr(args, "into_image", False))
    jobs = [_job(p, args.out, into_image) for p in args.inputs]
    _check_modules(jobs)
    if into_image:
        _check_into_image(args.inputs)
    seen: dict[Path, Path] = {}
    for job in jobs:
        for out in job.outputs:  # resolved: one zarr given twice writes one labels/kmeans
            real = out.resolve()
            if real in seen:
                raise CliError(
                    EXIT_USAGE,
                    f"{seen[real]} and {job.path} would write the same outputs ({out}, ...); "
                    "rename one or run them with different --out folders.",
                )
            seen[real] = job.path
    _check_overlap(jobs, [args.model, getattr(args, "seeds", None)])
    _check_existing(jobs, args.overwrite)
    return jobs


def make_out_dir(out: Path):
    """Create the output folder, once every check has passed (exit 3 when it cannot be)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CliError(
            EXIT_OUT_DIR, f"cannot create the output folder {out}: {err.strerror or err}."
        ) from None


# -- reading ----------------------------------------------------------------------------------


def _image_inside(group, limit: int = 1000) -> str | None:
    """The path of the first group with multiscale metadata, or array, under ``group``
    (breadth first, at most ``limit`` groups looked at), or None."""
    queue = [("", group)]
    for _ in range(limit):
        if not queue:
            return None
        prefix, node = queue.pop(0)
        for name, child in sorted(node.members(), key=lambda m: m[0]):
            child_path = f"{prefix}{name}"
            attrs = child.attrs.asdict()
            ome = attrs.get("ome")
            if (
                not hasattr(child, "members")
                or "multiscales" in attrs
                or (isinstance(ome, dict) and "multiscales" in ome)
            ):  # an array, or an image group
                return child_path
            queue.append((f"{child_path}/", child))
    return None


class _Guarded:
    """A zarr array (of a zarr input or a large TIFF) whose blocks that cannot be read or
    decoded (a damaged chunk or page, read lazily while segmenting) raise a :class:`CliError`
    naming the input (exit 4), not a bug's error."""

    def __init__(self, array, path: Path):
        self.array, self.path = array, path
        self.shape, self.dtype, self.ndim = array.shape, array.dtype, array.ndim

    def __getitem__(self, key):
        try:
            return self.array[key]
        except Exception as err:
            where = ", ".join(f"{k.start}:{k.stop}" if isinstance(k, slice) else str(k)
                              for k in (key if isinstance(key, tuple) else (key,)))  # fmt: skip
            raise CliError(
                EXIT_UNREADABLE,
                f"cannot read {self.path}: its block [{where}] cannot be read or decoded "
                f"({type(err).__name__}: {first_line(err)}); the file is damaged, copy it "
                "again from its source.",
            ) from None


def _lazy(array, path: Path):
    """The dask array of a zarr array, chunked like it, its read errors named."""
    import dask.array as da
    from dask.base import tokenize

    name = "napari-kmeans-input-" + tokenize(str(path), array.path, array.shape, str(array.dtype))
    return da.from_array(_Guarded(array, path), chunks=array.chunks, name=name, asarray=True)


def _open_zarr(path: Path):
    """``(dask array, NgffImage or None)`` of a zarr array or group."""
    import zarr

    node = zarr.open(str(path), mode="r")
    if isinstance(node, zarr.Array):
        return _lazy(node, path), None
    arrays = sorted(node.array_keys())
    inner = None if arrays else _image_inside(node)
    if arrays:
        hint = f"give the path of one of its arrays, e.g. {path / arrays[0]}."
    elif inner is not None:  # e.g. an HCS plate: plate.zarr/A/1/0
        hint = f"give the path of an image inside it, e.g. {path / inner}."
    else:
        hint = "it holds no array; give a zarr image or array."
    ome = node.attrs.get("ome")
    multiscales = node.attrs.get("multiscales")
    if multiscales is None and isinstance(ome, dict):
        multiscales = ome.get("multiscales")
    name = "0"
    if multiscales is not None:
        try:
            name = multiscales[0]["datasets"][0]["path"]
            if not isinstance(name, str):
                raise TypeError(name)
        except (LookupError, TypeError):
            raise CliError(
                EXIT_UNREADABLE,
                f"cannot read {path}: malformed multiscale metadata (multiscales[0].datasets[0]"
                f".path should name its full-resolution array); {hint}",
            ) from None
    if name not in arrays:
        what = (
            f"whose multiscale metadata names a missing array '{name}'"
            if multiscales is not None
            else "with no multiscale image and no array '0'"
        )
        raise CliError(
            EXIT_UNREADABLE,
            f"{path} is a zarr group {what} (arrays: {', '.join(arrays) or 'none'}); {hint}",
        )
    array = node[name]
    image = None
    if multiscales is not None:
        _, image = ngff.read_image_metadata(node, array.ndim)
        if image is not None and image.paths[0] != name:
            image = None
    return _lazy(array, path), image


@dataclass(frozen=True)
class Opened:
    """An input as read: the image (an ndarray, or a dask array for zarr and large TIFF),
    whether it is known to be RGB(A) (True), single-channel (False) or unknown (None), the
    axes its file declares (None when it declares none) and, for OME-Zarr, its multiscales."""

    image: object
    rgb: bool | None
    axes: microscopy.AxesInfo | None = None
    ngff: ngff.NgffImage | None = None


def _read_tiff(path: Path) -> Opened:
    image, axes = microscopy.read_tiff(path, as_dask=lambda array: _lazy(array, path))
    colour = bool(axes.rgb)
    rgb = True if colour and image.ndim >= 2 and image.shape[-1] in (3, 4) else None
    if len(axes.names) != image.ndim:
        axes = None
    return Opened(image, rgb, axes)


def open_image(job: Job) -> Opened:
    """Read ``job``'s input with what its file says of its axes (see :class:`Opened`)."""
    if job.kind != "zarr" and job.path.stat().st_size == 0:
        raise CliError(
            EXIT_UNREADABLE,
            f"cannot read {job.path}: the file is empty (0 bytes); give a {job.kind.upper()} image.",
        )
    try:
        if job.kind == "tiff":
            return _read_tiff(job.path)
        if job.kind in ("png", "jpeg"):
            import imageio.v3 as iio

            image = iio.imread(job.path)
            if job.kind == "jpeg" and image.ndim == 3 and image.shape[-1] == 4:
                image = iio.imread(job.path, mode="RGB")  # CMYK (JPEG has no alpha): not RGBA
            rgb = {2: False, 3: image.shape[-1] in (3, 4) or None}.get(image.ndim)
            return Opened(image, rgb)
        image, found = _open_zarr(job.path)
        return Opened(image, None, None if found is None else found.axes, found)
    except (CliError, MemoryError):
        raise
    except Exception as err:
        raise CliError(
            EXIT_UNREADABLE, f"cannot read {job.path} as {job.kind.upper()}: {first_line(err)}"
        ) from None


def split_alpha(job, image, rgb, single_channel):
    """``(image, rgb, alpha)``: a gray + alpha PNG becomes its gray plane and its alpha."""
    is_gray_alpha = job.kind == "png" and image.ndim == 3 and image.shape[-1] == 2
    if is_gray_alpha and single_channel:
        return image[..., 0], False, image[..., 1]
    return image, rgb, None


# -- writing: to a hidden folder, then into place together ------------------------------------


@contextlib.contextmanager
def _signals_deferred():
    """Hold Ctrl+C and SIGTERM back (they arrive just after) while outputs are moved."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(
        signal, "pthread_sigmask"
    ):  # Windows: no signal masks
        yield
        return
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def _write_tiff(path: Path, data, *, rgb: bool):
    import tifffile

    data = np.asarray(data)
    options = {"photometric": "rgb" if rgb else "minisblack", "compression": "zlib"}
    if data.ndim < 2:  # tifffile writes no 1-D page: one row, with the true shape in its metadata
        tifffile.imwrite(path, data[np.newaxis], metadata={"shape": data.shape}, **options)
    else:
        tifffile.imwrite(path, data, **options)


def _write_zarrs(job: Job, paths, labels, recolored):
    """Compute labels and recoloured image of a zarr input together, block by block."""
    import dask
    import zarr

    stores = [
        a.to_zarr(str(p), compute=False) for a, p in zip((labels, recolored), paths, strict=True)
    ]
    dask.compute(*stores)
    for path, what in zip(paths, ("labels", "recolored"), strict=True):
        mark = {"output": what, "input": str(job.path), "version": __version__}
        zarr.open_array(str(path), mode="r+").attrs[MARK] = mark


def _mark(job: Job, what: str) -> dict:
    return {MARK: {"output": what, "input": str(job.path), "version": __version__}}


def _write_ngff(job: Job, paths, labels, recolored, model, found: ngff.NgffImage):
    """Labels (``image-label``) and recoloured image of an OME-Zarr input as NGFF pyramids
    of the input's version, mirroring its levels, with its axes, scales and translation."""
    axis = model.spec.channel_axis
    full = np.asarray(found.scales[0])
    ratios = [tuple(np.asarray(s) / np.where(full > 0, full, 1.0)) for s in found.scales]
    shapes = found.shapes  # mirrored level by level (an odd size halves to either side)
    if len(ratios) == 1:
        ratios = shapes = None  # a single level: a new pyramid, so that large results open fast
    if shapes is not None and tuple(shapes[0]) != tuple(recolored.shape):
        shapes = None  # not the array read (a path inside the group): sizes over the ratios
    label_ratios, label_shapes = ratios, shapes
    if ratios is not None and axis is not None:
        drop = axis % len(found.scales[0])
        label_ratios = [tuple(r for i, r in enumerate(ratio) if i != drop) for ratio in ratios]
        if shapes is not None:
            label_shapes = [tuple(n for i, n in enumerate(s) if i != drop) for s in shapes]
    source = "../../" if job.into_image else None
    pending = [
        ngff.create_multiscale(
            paths[0], labels, found.axes.without(axis), version=found.version,
            ratios=label_ratios, shapes=label_shapes,
            name=LABELS_NAME if job.into_image else "labels",
            label_meta=ngff.label_metadata(model, source=source),
            extra_attrs=_mark(job, "labels"),
        ),
        ngff.create_multiscale(
            paths[1], recolored, found.axes, version=found.version, ratios=ratios,
            shapes=shapes, name="recolored", extra_attrs=_mark(job, "recolored"),
        ),
    ]  # fmt: skip
    ngff.write_levels(pending)
    ngff.validate(paths[0], found.version, labels=True)
    ngff.validate(paths[1], found.version, labels=False)


def _write_tiffs(paths, labels, recolored, model, axes):
    """Labels and recoloured image of a TIFF input as OME-TIFF with its axes and sizes."""
    axis = model.spec.channel_axis
    microscopy.write_ome_tiff(paths[0], labels, axes.without(axis))
    # the recoloured image keeps the input's layout: RGB samples stay RGB samples
    rgb = bool(axes.rgb) and "s" in axes.names and recolored.shape[axes.names.index("s")] in (3, 4)
    microscopy.write_ome_tiff(paths[1], recolored, axes, rgb=rgb)


def _remove(path: Path):
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def _commit(pairs, trash: Path):
    """Move every ``(new, dest)`` into place, the old ``dest`` into ``trash``: all or none."""
    placed, kept = [], []
    try:
        for i, (new, dest) in enumerate(pairs):
            if os.path.lexists(dest):
                old = new.parent / f"old-{i}-{dest.name}"  # on dest's file system
                os.replace(dest, old)
                kept.append((old, dest))
            os.replace(new, dest)
            placed.append(dest)
    except BaseException:
        try:
            for dest in placed:
                _remove(dest)
            for old, dest in kept:
                os.replace(old, dest)
        except OSError as err:
            raise NotRestored(
                EXIT_WRITE,
                f"cannot move the outputs into place nor restore the previous ones ({err}); "
                f"the previous outputs are in {trash}.",
            ) from None
        raise


def write_outputs(job: Job, labels, recolored, model, *, rgb: bool, opened: Opened | None = None):
    """Write one input's labels, recoloured image and model, all moved into place together.

    With ``opened`` (what the input's file declared): TIFF inputs give OME-TIFF outputs with
    the input's axes and pixel sizes, OME-Zarr inputs NGFF outputs (the labels in the input's
    own labels/ group for ``--into-image``).
    """
    hidden = Path(tempfile.mkdtemp(prefix=".napari-kmeans-", dir=job.model.parent))
    into = made = None
    keep = False
    try:
        staged = [hidden / p.name for p in job.outputs]
        found = opened.ngff if opened is not None else None
        axes = opened.axes if opened is not None else None
        if job.into_image and found is None:
            raise CliError(
                EXIT_FAILED,
                f"cannot write labels into {job.path}: its multiscales metadata does not describe "
                "its full-resolution array (axes and datasets); drop --into-image.",
            )
        if job.into_image:
            if not job.labels.parent.exists():  # removed again if this run fails
                ngff.create_labels_group(job.path, found.zarr_format)
                made = job.labels.parent
            into = Path(tempfile.mkdtemp(prefix=".napari-kmeans-", dir=job.labels.parent))
            staged[0] = into / job.labels.name
        if job.kind == "zarr" and found is not None:
            _write_ngff(job, staged[:2], labels, recolored, model, found)
        elif job.kind == "zarr":
            _write_zarrs(job, staged[:2], labels, recolored)
        elif job.kind == "tiff" and axes is not None and labels.ndim >= 2:
            _write_tiffs(staged[:2], labels, recolored, model, axes)
        else:
            _write_tiff(staged[0], labels, rgb=False)
            if staged[1].suffix == ".png":
                import imageio.v3 as iio

                iio.imwrite(staged[1], np.asarray(recolored), extension=".png")
            else:
                _write_tiff(staged[1], recolored, rgb=rgb)
        staged[2].write_text(model.to_json() + "\n", encoding="utf-8")
        with _signals_deferred():
            _commit(list(zip(staged, job.outputs, strict=True)), hidden)
            if job.into_image:
                ngff.add_to_labels_group(job.path, LABELS_NAME, found.version)
                made = None
    except NotRestored:
        keep = True  # it holds the previous outputs that could not be restored
        raise
    finally:
        if not keep:
            with _signals_deferred():
                shutil.rmtree(hidden, ignore_errors=True)
                if into is not None:
                    shutil.rmtree(into, ignore_errors=True)
                if made is not None:  # the labels/ group this run made, for nothing
                    shutil.rmtree(made, ignore_errors=True)
