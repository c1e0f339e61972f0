"""``napari-kmeans segment``: k-means segmentation of image files from the command line.

Reads TIFF, PNG, JPEG and zarr files, segments each (or applies one model to all of them) and
writes, per input, ``<stem>_labels.tif``, ``<stem>_recolored.<ext>`` and ``<stem>_model.json``.
Zarr inputs are processed lazily with dask, block by block, and give zarr outputs. Readers and
writers (tifffile, imageio, zarr, dask, tqdm) are imported only when needed; tqdm is optional.

Promises kept here: no output is, holds or lies inside an input; ``--overwrite`` replaces only
outputs napari-kmeans wrote; the outputs of one input appear together or not at all; every
failure is one line on stderr with a documented exit code.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import os
import shutil
import signal
import stat
import sys
import tempfile
import threading
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._version import __version__

EXIT_OK = 0
EXIT_INTERNAL = 1  # an unexpected error (a bug): one line with where to report it
EXIT_USAGE = 2  # bad or conflicting arguments (argparse's own code too); outputs clash with inputs
EXIT_OUT_DIR = 3  # the output folder is missing, not a folder, or not writable
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
_NO_MEMORY = "not enough memory; save it as zarr (processed block by block) or free some memory."

FORMATS = {".tif": "tiff", ".tiff": "tiff", ".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg"}
RECOLORED_EXT = {"tiff": ".tif", "png": ".png", "jpeg": ".png"}  # JPEG is lossy: write PNG
# modules each kind of input needs (labels are TIFF files, except for zarr), and their pip extra
NEEDS = {
    "tiff": [("tifffile", "cli")],
    "png": [("imageio", "cli"), ("tifffile", "cli")],
    "jpeg": [("imageio", "cli"), ("tifffile", "cli")],
    "zarr": [("zarr", "dask"), ("dask.array", "dask")],
}

EPILOG = f"""\
outputs (per input, in --out):
  <stem>_labels.tif       labels 1..k (1 = darkest cluster), 0 = masked or invalid pixels
  <stem>_recolored.<ext>  every pixel painted with its cluster's colour, in the input's dtype
                          (.tif for TIFF, .png for PNG and JPEG inputs)
  <stem>_model.json       the fitted model; apply it to other images with --model
  Zarr inputs give <stem>_labels.zarr and <stem>_recolored.zarr, written block by block.
  An input's outputs are written to a hidden folder in --out, then moved into place together.
  No output may be, hold or lie inside an input (exit 2). --overwrite replaces files and only
  the zarr folders napari-kmeans wrote (they carry a '{MARK}' attribute).

fitting:
  --fit-on each (default)  fit every image on its own pixels
  --fit-on first           fit on the first image, apply that model to all
  --fit-on all             fit one model on the pixels of all images together
  --model FILE             apply a saved model (no fitting; -k, --fit-on and the channel
                           options come from the model)

exit codes:
  0  every image was segmented
  1  unexpected error (a bug): one line, with where to report it
  2  bad or conflicting arguments, or an output that would replace, hold or lie inside an input
  3  the output folder is missing, not a folder, or not writable
  4  an input or the --model file is missing, of an unknown kind, or unreadable
  5  outputs already exist and --overwrite was not given, or an existing output is not one
     napari-kmeans wrote (nothing is written)
  6  an image could not be segmented (e.g. its channels do not match the model)
  7  an image's outputs could not be written (e.g. the disk is full); its old outputs are kept
  8  a package the command needs is not installed (the message gives the pip command)
  130  interrupted by Ctrl+C (SIGINT): the image in progress gets no outputs
  143  terminated by SIGTERM: as for 130
  With several inputs, one that fails is reported on one line and the others are still
  processed; the exit code is then the most serious, in the order 1, 7, 4, 6.

examples:
  napari-kmeans segment cells.tif -k 3 --out results
  napari-kmeans segment plates/*.png -k 4 --fit-on all --out results
  napari-kmeans segment new/*.png --model results/plate_01_model.json --out results
"""


class CliError(Exception):
    """An error with a message for the user and an exit code."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl+C so that the same clean-up runs."""


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _unexpected(where, err: BaseException) -> CliError:
    if os.environ.get(TRACEBACK_ENV):
        traceback.print_exception(err, file=sys.stderr)
    return CliError(
        EXIT_INTERNAL,
        f"{where}: unexpected error {type(err).__name__}: {_first_line(err)}; please report this "
        f"at {BUG_TRACKER} (set {TRACEBACK_ENV}=1 to print the traceback).",
    )


# -- arguments --------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="napari-kmeans",
        description="k-means segmentation of images by their pixel values.",
        epilog="Run 'napari-kmeans segment --help' for the options, outputs and exit codes.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    seg = sub.add_parser(
        "segment",
        help="segment image files and write labels, recoloured images and models",
        description="Segment images by k-means clustering of their pixel values.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    seg.set_defaults(parser=seg)
    seg.add_argument("inputs", nargs="+", metavar="INPUT", type=Path,
                     help="TIFF (.tif, .tiff), PNG, JPEG or zarr (.zarr folder, or an array "
                     "inside one: scan.zarr/0) images")  # fmt: skip
    seg.add_argument("--out", "-o", required=True, type=Path, metavar="DIR",
                     help="existing folder to write the outputs to")  # fmt: skip
    seg.add_argument("-k", "--n-clusters", type=int, metavar="K",
                     help="number of clusters (default 5)")  # fmt: skip
    seg.add_argument("--fit-on", choices=("each", "first", "all"),
                     help="which images the model is fitted on (default: each)")  # fmt: skip
    seg.add_argument("--model", type=Path, metavar="FILE",
                     help="apply this saved model (a *_model.json) instead of fitting")  # fmt: skip
    seg.add_argument("--channel-axis", type=int, metavar="AXIS",
                     help="axis of the channels of multichannel images (default: grayscale, or "
                     "RGB(A) when the last axis has 3 or 4 entries)")  # fmt: skip
    seg.add_argument("--rgb", action=argparse.BooleanOptionalAction, default=None,
                     help="whether the channels are RGB(A) (default: guessed)")  # fmt: skip
    seg.add_argument("--color-space", choices=("rgb", "lab"),
                     help="cluster RGB colours as they are (default) or in CIELAB")  # fmt: skip
    seg.add_argument("--seed", type=int, metavar="N",
                     help="random seed (default 0); same seed, same labels")  # fmt: skip
    seg.add_argument("--overwrite", action="store_true",
                     help="replace existing outputs napari-kmeans wrote (default: refuse and "
                     "write nothing)")  # fmt: skip
    seg.add_argument("--quiet", "-q", action="store_true",
                     help="no progress and no summary")  # fmt: skip
    return parser


def _check_args(args):
    """Reject conflicting or out-of-range options (exit code 2)."""
    parser = args.parser
    if args.model is not None:
        fixed = {
            "-k": args.n_clusters, "--fit-on": args.fit_on, "--channel-axis": args.channel_axis,
            "--rgb/--no-rgb": args.rgb, "--color-space": args.color_space, "--seed": args.seed,
        }  # fmt: skip
        given = [name for name, value in fixed.items() if value is not None]
        if given:
            parser.error(
                f"--model fixes the clustering; drop {', '.join(given)} (the model has them)."
            )
    if args.n_clusters is not None and args.n_clusters < 1:
        parser.error(f"-k must be at least 1, got {args.n_clusters}.")
    if args.seed is not None and args.seed < 0:
        parser.error(f"--seed must be 0 or more, got {args.seed}.")
    if args.color_space == "lab" and args.rgb is False:
        parser.error("--color-space lab needs RGB images; drop --no-rgb.")


# -- inputs and outputs -----------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One input and the outputs it gives."""

    path: Path
    kind: str  # "tiff", "png", "jpeg" or "zarr"
    labels: Path
    recolored: Path
    model: Path

    @property
    def outputs(self) -> tuple[Path, Path, Path]:
        return self.labels, self.recolored, self.model


def _zarr_root(path: Path) -> Path | None:
    """The outermost ``.zarr`` folder that is or holds ``path``, or None."""
    found = None
    for p in (path, *path.parents):
        if p.suffix.lower() == ".zarr":
            found = p
    return found


def _kind(path: Path) -> str | None:
    suffix = path.suffix.lower()
    if suffix in FORMATS:
        return FORMATS[suffix]
    return "zarr" if _zarr_root(path) is not None else None


def _stem(path: Path, kind: str) -> str:
    root = _zarr_root(path) if kind == "zarr" else None
    base = root if root is not None else path
    stem = base.name[: -len(base.suffix)] if base.suffix else base.name
    if root is not None and root != path:  # an array inside a zarr group: scan.zarr/0 -> scan_0
        stem = "_".join([stem, *path.relative_to(root).parts])
    return stem


def _job(path: Path, out: Path) -> Job:
    kind = _kind(path)
    stem = _stem(path, kind)
    if kind == "zarr":
        labels, recolored = out / f"{stem}_labels.zarr", out / f"{stem}_recolored.zarr"
    else:
        labels, recolored = (
            out / f"{stem}_labels.tif",
            out / f"{stem}_recolored{RECOLORED_EXT[kind]}",
        )
    return Job(path, kind, labels, recolored, out / f"{stem}_model.json")


def _check_out_dir(out: Path):
    if not out.exists():
        raise CliError(
            EXIT_OUT_DIR, f"output folder {out} does not exist; create it first (mkdir -p {out})."
        )
    if not out.is_dir():
        raise CliError(EXIT_OUT_DIR, f"--out {out} is not a folder; give a folder for the outputs.")
    if not os.access(out, os.W_OK | os.X_OK):
        raise CliError(EXIT_OUT_DIR, f"output folder {out} is not writable.")


def _check_inputs(paths):
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise CliError(EXIT_UNREADABLE, f"no such file: {', '.join(map(str, missing))}.")
    unknown = [p for p in paths if _kind(p) is None]
    if unknown:
        raise CliError(
            EXIT_UNREADABLE,
            f"cannot read {', '.join(map(str, unknown))}: unknown kind of file; give TIFF (.tif, "
            ".tiff), PNG (.png), JPEG (.jpg, .jpeg) or zarr (.zarr) images.",
        )
    odd = [p for p in paths if not (p.is_dir() if _kind(p) == "zarr" else p.is_file())]
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


def _check_overlap(jobs, model_path):
    """Exit 2 when an output is, holds or lies inside an input (symbolic links followed)."""
    protected = [(job.path, _zarr_root(job.path) or job.path) for job in jobs]
    if model_path is not None:
        protected.append((model_path, model_path))
    protected = [(given, p.resolve()) for given, p in protected]
    for job in jobs:
        for out in job.outputs:
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
    """True for a zarr array carrying the attribute napari-kmeans puts on its outputs."""
    try:
        import zarr

        return isinstance(zarr.open_array(str(path), mode="r").attrs.get(MARK), dict)
    except Exception:
        return False


def _not_ours(job: Job, path: Path) -> str | None:
    """Why ``--overwrite`` must not replace the existing ``path``, or None."""
    if path.suffix == ".zarr":
        if not _is_our_zarr(path):
            return f"is not a zarr array it wrote (no '{MARK}' attribute)"
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


def _plan(args) -> list[Job]:
    """Check everything that can be checked before any work, and name every output."""
    _check_out_dir(args.out)
    _check_inputs(args.inputs)
    jobs = [_job(p, args.out) for p in args.inputs]
    _check_modules(jobs)
    seen: dict[Path, Path] = {}
    for job in jobs:
        if job.model in seen:
            raise CliError(
                EXIT_USAGE,
                f"{seen[job.model]} and {job.path} would write the same outputs "
                f"({job.model.name}, ...); rename one or run them with different --out folders.",
            )
        seen[job.model] = job.path
    _check_overlap(jobs, args.model)
    _check_existing(jobs, args.overwrite)
    return jobs


# -- reading ----------------------------------------------------------------------------------


def _open_zarr(path: Path):
    import dask.array as da
    import zarr

    node = zarr.open(str(path), mode="r")
    if isinstance(node, zarr.Array):
        return da.from_zarr(node)
    arrays = sorted(node.array_keys())
    hint = (
        f"give the path of one of its arrays, e.g. {path / arrays[0]}."
        if arrays
        else "it holds no array."
    )
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
    return da.from_zarr(node[name])


def _read_tiff(path: Path):
    import tifffile

    with tifffile.TiffFile(path) as tif:
        image = tif.asarray()
        photometric = tif.pages[0].photometric
    colour = photometric in (tifffile.PHOTOMETRIC.RGB, tifffile.PHOTOMETRIC.YCBCR)
    return image, (True if colour and image.ndim >= 2 and image.shape[-1] in (3, 4) else None)


def read_image(job: Job):
    """``(image, rgb)`` of ``job``: an ndarray (a dask array for zarr), and whether it is known
    to be RGB(A) (True), known to be single-channel (False), or unknown (None)."""
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
            rgb = {2: False, 3: image.shape[-1] in (3, 4) or None}.get(image.ndim)
            return image, rgb
        return _open_zarr(job.path), None
    except (CliError, MemoryError):
        raise
    except Exception as err:
        raise CliError(
            EXIT_UNREADABLE, f"cannot read {job.path} as {job.kind.upper()}: {_first_line(err)}"
        ) from None


def _split_alpha(job, image, rgb, single_channel):
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
                old = trash / f"old-{i}-{dest.name}"
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
            raise CliError(
                EXIT_WRITE,
                f"cannot move the outputs into place nor restore the previous ones ({err}); "
                f"the previous outputs are in {trash}.",
            ) from None
        raise


def write_outputs(job: Job, labels, recolored, model, *, rgb: bool):
    """Write one input's labels, recoloured image and model, all moved into place together."""
    hidden = Path(tempfile.mkdtemp(prefix=".napari-kmeans-", dir=job.model.parent))
    keep = False
    try:
        staged = [hidden / p.name for p in job.outputs]
        if job.kind == "zarr":
            _write_zarrs(job, staged[:2], labels, recolored)
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
    except CliError:
        keep = True  # it holds the previous outputs that could not be restored
        raise
    finally:
        if not keep:
            with _signals_deferred():
                shutil.rmtree(hidden, ignore_errors=True)


# -- fitting and labelling --------------------------------------------------------------------


def _params(args):
    """The clustering settings of the command line, validated once (exit 2 if out of range)."""
    from .params import Params

    try:
        return Params(
            n_clusters=args.n_clusters or 5,
            color_space=args.color_space or "rgb",
            seed=args.seed or 0,
        )
    except (TypeError, ValueError) as err:
        args.parser.error(str(err))


def _layout(args) -> dict:
    """The image layout options (they are not clustering settings: they describe the files)."""
    return {"channel_axis": args.channel_axis, "rgb": args.rgb}


def _load_model(path: Path):
    from .model import KMeansModel

    try:
        mode = path.stat().st_mode
    except OSError as err:
        raise CliError(EXIT_UNREADABLE, f"cannot use --model {path}: {err.strerror}.") from None
    if not stat.S_ISREG(mode):
        raise CliError(
            EXIT_UNREADABLE,
            f"cannot use --model {path}: not a regular file (a folder, device or pipe); give a "
            "*_model.json file written by napari-kmeans.",
        )
    try:
        return KMeansModel.load(path)
    except (OSError, ValueError, TypeError, RecursionError) as err:
        raise CliError(EXIT_UNREADABLE, f"cannot use --model {path}: {_first_line(err)}") from None


def segment_image(image, params, layout, mask=None):
    """``(labels, recolored, model)`` of one image; lazy (dask) for zarr inputs."""
    from .segment import segment

    result = segment(image, mask=mask, params=params, **layout)
    return result.labels, result.recolored, result.model


def apply_model(model, image, *, rgb=None, mask=None):
    """``(labels, recolored)`` of ``image`` by a fitted model; lazy (dask) for zarr inputs.

    ``rgb`` says what the file told of the image's layout (see ``KMeansModel.check_image``).
    """
    labels = model.predict(image, mask=mask, rgb=rgb)
    return labels, model.recolor(image, labels, rgb=rgb)


def _gray(layout) -> bool:
    return layout["channel_axis"] is None and layout["rgb"] is not True


def fit_all(jobs, params, layout, quiet=False):
    """One model fitted on the pixels of every input together (``--fit-on all``).

    The inputs are read one at a time (:func:`napari_kmeans.segment.fit_many` keeps only each
    one's support), a gray + alpha PNG with its alpha as mask.
    """
    from .segment import fit_many

    masks = []

    def images():
        for job in _progress(jobs, "fit on all", quiet):
            image, _, alpha = _split_alpha(job, *read_image(job), _gray(layout))
            masks.append(None if alpha is None else alpha > 0)
            yield image

    def mask_of_each():  # fit_many takes each mask right after its image
        while True:
            yield masks[-1]

    return fit_many(images(), masks=mask_of_each(), params=params, **layout).model


# -- progress ---------------------------------------------------------------------------------


class _Lines:
    """Progress as plain lines on stderr, when tqdm is not installed."""

    def __init__(self, jobs, desc, quiet):
        self.jobs, self.desc, self.quiet = jobs, desc, quiet

    def __iter__(self):
        for i, job in enumerate(self.jobs, 1):
            if not self.quiet:
                print(
                    f"napari-kmeans: {self.desc} {i}/{len(self.jobs)}: {job.path}", file=sys.stderr
                )
            yield job

    def write(self, text, file=None):
        print(text, file=file or sys.stderr)

    def close(self):
        pass


def _progress(jobs, desc, quiet):
    try:
        from tqdm import tqdm
    except ImportError:
        return _Lines(jobs, desc, quiet)
    return tqdm(jobs, desc=desc, unit="image", disable=quiet, file=sys.stderr)


# -- the command ------------------------------------------------------------------------------


def _compute(job, image, rgb, alpha, params, layout, model):
    mask = None if alpha is None else alpha > 0
    try:
        if model is None:
            return segment_image(image, params, layout, mask=mask)
        return (*apply_model(model, image, rgb=rgb, mask=mask), model)
    except (ValueError, TypeError) as err:
        raise CliError(EXIT_FAILED, f"cannot segment {job.path}: {err}") from None


def _write(job, labels, recolored, model, alpha):
    if alpha is not None:  # gray + alpha: the recoloured image keeps the alpha plane
        recolored = np.stack([np.asarray(recolored), alpha], axis=-1)
    rgb = model.spec.rgb and model.spec.channel_axis == -1 and recolored.shape[-1] in (3, 4)
    try:
        write_outputs(job, labels, recolored, model, rgb=rgb)
    except (ValueError, TypeError) as err:
        if job.kind == "zarr":  # the lazy segmentation runs while the zarr outputs are written
            raise CliError(EXIT_FAILED, f"cannot segment {job.path}: {err}") from None
        raise CliError(EXIT_WRITE, f"cannot write the outputs of {job.path}: {err}") from None
    except OSError as err:
        hint = (
            " Free some space or choose another --out folder."
            if err.errno in (errno.ENOSPC, errno.EDQUOT)
            else ""
        )
        raise CliError(
            EXIT_WRITE,
            f"cannot write the outputs of {job.path} to {job.model.parent}: "
            f"{err.strerror or err}; none of its outputs were written (previous ones are kept)."
            f"{hint}",
        ) from None


def _process(job, params, layout, model):
    """Segment one input and write its outputs; returns the model it used or fitted."""
    single_channel = _gray(layout) if model is None else model.spec.channel_axis is None
    image, rgb, alpha = _split_alpha(job, *read_image(job), single_channel)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        labels, recolored, model = _compute(job, image, rgb, alpha, params, layout, model)
        _write(job, labels, recolored, model, alpha)
    return model, [f"napari-kmeans: warning: {job.path}: {w.message}" for w in caught]


def _exit_code(failures) -> int:
    for code in (EXIT_INTERNAL, EXIT_WRITE, EXIT_UNREADABLE, EXIT_FAILED):
        if code in failures:
            return code
    return failures[0]


def run_segment(args) -> int:
    jobs = _plan(args)
    model = _load_model(args.model) if args.model is not None else None
    params, layout = _params(args), _layout(args)
    if args.fit_on == "all":
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                model = fit_all(jobs, params, layout, args.quiet)
            except (ValueError, TypeError) as err:
                raise CliError(EXIT_FAILED, f"cannot fit one model on all inputs: {err}") from None
            except MemoryError:
                raise CliError(EXIT_FAILED, "not enough memory to fit on all inputs.") from None
        for w in caught:
            print(f"napari-kmeans: warning: all inputs: {w.message}", file=sys.stderr)
    failures = []
    bar = _progress(jobs, "segment", args.quiet)
    try:
        for job in bar:
            try:
                used, notes = _process(job, params, layout, model)
            except Exception as exc:
                if isinstance(exc, CliError):
                    err = exc
                elif isinstance(exc, MemoryError):
                    err = CliError(EXIT_FAILED, f"cannot segment {job.path}: {_NO_MEMORY}")
                else:
                    err = _unexpected(job.path, exc)
                if args.fit_on == "first" and model is None:
                    raise err from None  # no model to apply to the others
                failures.append(err.code)
                bar.write(f"napari-kmeans: error: {err}", file=sys.stderr)
                continue
            for note in notes:
                bar.write(note, file=sys.stderr)
            if args.fit_on == "first":
                model = used
    finally:
        bar.close()
    done = len(jobs) - len(failures)
    if not args.quiet:
        print(f"napari-kmeans: segmented {done} of {len(jobs)} image(s); outputs in {args.out}",
              file=sys.stderr)  # fmt: skip
    return _exit_code(failures) if failures else EXIT_OK


def _raise_terminated(signum, frame):
    raise Terminated()


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM raises :class:`Terminated` (a KeyboardInterrupt), so that it cleans up alike."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv=None) -> int:
    """Entry point of the ``napari-kmeans`` command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_args(args)
    try:
        with _sigterm_as_interrupt():
            return run_segment(args)
    except CliError as err:
        print(f"napari-kmeans: error: {err}", file=sys.stderr)
        return err.code
    except KeyboardInterrupt as err:
        term = isinstance(err, Terminated)
        print(
            f"napari-kmeans: interrupted by {'SIGTERM' if term else 'Ctrl+C (SIGINT)'}: the image "
            "in progress got no outputs (images finished before it have all theirs).",
            file=sys.stderr,
        )
        return EXIT_SIGTERM if term else EXIT_SIGINT
    except Exception as err:
        print(f"napari-kmeans: error: {_unexpected('the run', err)}", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
