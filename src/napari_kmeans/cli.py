"""``napari-kmeans segment``: k-means segmentation of image files from the command line.

Reads TIFF, PNG, JPEG and zarr files, segments each (or applies one model to all of them) and
writes, per input, ``<stem>_labels.tif``, ``<stem>_recolored.<ext>`` and ``<stem>_model.json``.
Zarr inputs are processed lazily with dask, block by block, and give zarr outputs. Readers and
writers (tifffile, imageio, zarr, dask, tqdm) are imported only when needed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._version import __version__

EXIT_OK = 0
EXIT_INTERNAL = 1  # a bug: please report it with the traceback
EXIT_USAGE = 2  # bad or conflicting arguments (argparse's own code too)
EXIT_OUT_DIR = 3  # the output folder is missing, not a folder, or not writable
EXIT_UNREADABLE = 4  # an input or the --model file is missing, of an unknown kind, or unreadable
EXIT_EXISTS = 5  # outputs exist and --overwrite was not given; nothing was written
EXIT_FAILED = 6  # an image could not be segmented (e.g. it does not match the model)

FORMATS = {".tif": "tiff", ".tiff": "tiff", ".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg"}
RECOLORED_EXT = {"tiff": ".tif", "png": ".png", "jpeg": ".png"}  # JPEG is lossy: write PNG

EPILOG = """\
outputs (per input, in --out):
  <stem>_labels.tif       labels 1..k (1 = darkest cluster), 0 = masked or invalid pixels
  <stem>_recolored.<ext>  every pixel painted with its cluster's colour, in the input's dtype
                          (.tif for TIFF, .png for PNG and JPEG inputs)
  <stem>_model.json       the fitted model; apply it to other images with --model
  Zarr inputs give <stem>_labels.zarr and <stem>_recolored.zarr, written block by block.

fitting:
  --fit-on each (default)  fit every image on its own pixels
  --fit-on first           fit on the first image, apply that model to all
  --fit-on all             fit one model on the pixels of all images together
  --model FILE             apply a saved model (no fitting; -k, --fit-on and the channel
                           options come from the model)

exit codes:
  0  every image was segmented
  1  internal error (a bug: please report it)
  2  bad or conflicting arguments
  3  the output folder is missing, not a folder, or not writable
  4  an input or the --model file is missing, of an unknown kind, or unreadable
  5  outputs already exist and --overwrite was not given (nothing is written)
  6  an image could not be segmented (e.g. its channels do not match the model)
  With several inputs, one that cannot be read or segmented is reported and the others are
  still processed; the exit code is then 4 or 6.

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
                     help="TIFF (.tif, .tiff), PNG, JPEG or zarr (.zarr folder) images")  # fmt: skip
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
                     help="replace existing outputs (default: refuse and write nothing)")  # fmt: skip
    seg.add_argument("--quiet", "-q", action="store_true",
                     help="no progress bar and no summary")  # fmt: skip
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


def _kind(path: Path) -> str | None:
    suffix = path.suffix.lower()
    if suffix == ".zarr":
        return "zarr"
    return FORMATS.get(suffix)


def _job(path: Path, out: Path) -> Job:
    kind = _kind(path)
    stem = path.name[: -len(path.suffix)] if path.suffix else path.name
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


def _plan(args) -> list[Job]:
    """Check everything that can be checked before any work, and name every output."""
    _check_out_dir(args.out)
    missing = [p for p in args.inputs if not p.exists()]
    if missing:
        raise CliError(EXIT_UNREADABLE, f"no such file: {', '.join(map(str, missing))}.")
    unknown = [p for p in args.inputs if _kind(p) is None]
    if unknown:
        raise CliError(
            EXIT_UNREADABLE,
            f"cannot read {', '.join(map(str, unknown))}: unknown kind of file; give TIFF (.tif, "
            ".tiff), PNG (.png), JPEG (.jpg, .jpeg) or zarr (.zarr) images.",
        )
    jobs = [_job(p, args.out) for p in args.inputs]
    seen: dict[Path, Path] = {}
    for job in jobs:
        if job.model in seen:
            raise CliError(
                EXIT_USAGE,
                f"{seen[job.model]} and {job.path} would write the same outputs "
                f"({job.model.name}, ...); rename one or run them with different --out folders.",
            )
        seen[job.model] = job.path
    existing = [p for job in jobs for p in job.outputs if p.exists()]
    if existing and not args.overwrite:
        names = ", ".join(str(p) for p in existing[:5]) + (" ..." if len(existing) > 5 else "")
        raise CliError(
            EXIT_EXISTS,
            f"{len(existing)} output(s) already exist: {names}; nothing was written. "
            "Pass --overwrite to replace them, or choose another --out folder.",
        )
    return jobs


def _open_zarr(path: Path):
    import dask.array as da
    import zarr

    node = zarr.open(str(path), mode="r")
    if isinstance(node, zarr.Array):
        return da.from_zarr(node)
    multiscales = node.attrs.get("multiscales") or node.attrs.get("ome", {}).get("multiscales")
    name = multiscales[0]["datasets"][0]["path"] if multiscales else "0"
    if name not in node:
        arrays = sorted(node.array_keys())
        raise CliError(
            EXIT_UNREADABLE,
            f"{path} is a zarr group with no multiscale image and no array '0' (arrays: "
            f"{', '.join(arrays) or 'none'}); give the path of an array.",
        )
    return da.from_zarr(node[name])


def read_image(job: Job):
    """The image of ``job``: an ndarray, or a dask array for zarr."""
    try:
        if job.kind == "tiff":
            import tifffile

            return tifffile.imread(job.path)
        if job.kind in ("png", "jpeg"):
            import imageio.v3 as iio

            return iio.imread(job.path)
        return _open_zarr(job.path)
    except CliError:
        raise
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CliError(
            EXIT_UNREADABLE, f"cannot read {job.path} as {job.kind.upper()}: {first}"
        ) from None


def _replace(tmp: Path, path: Path):
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    os.replace(tmp, path)


def _write_atomic(path: Path, write):
    """``write(tmp)`` to a hidden file or folder beside ``path``, then move it into place."""
    tmp = path.with_name(f".partial-{path.name}")
    if tmp.is_dir():
        shutil.rmtree(tmp)
    try:
        write(tmp)
        _replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def _write_image(path: Path, data, *, rgb: bool):
    import tifffile

    if path.suffix == ".png":
        import imageio.v3 as iio

        _write_atomic(path, lambda tmp: iio.imwrite(tmp, data, extension=".png"))
    else:
        photometric = "rgb" if rgb else "minisblack"
        _write_atomic(
            path,
            lambda tmp: tifffile.imwrite(tmp, data, photometric=photometric, compression="zlib"),
        )


def _write_zarrs(job: Job, labels, recolored):
    """Compute labels and recoloured image of a zarr input together, block by block."""
    import dask

    tmps = [p.with_name(f".partial-{p.name}") for p in (job.labels, job.recolored)]
    try:
        for tmp in tmps:
            shutil.rmtree(tmp, ignore_errors=True)
        stores = [
            a.to_zarr(str(t), compute=False) for a, t in zip((labels, recolored), tmps, strict=True)
        ]
        dask.compute(*stores)
        _replace(tmps[0], job.labels)
        _replace(tmps[1], job.recolored)
    finally:
        for tmp in tmps:
            shutil.rmtree(tmp, ignore_errors=True)


def write_outputs(job: Job, labels, recolored, model):
    """Write one input's labels, recoloured image and model (each in one move, when complete)."""
    if job.kind == "zarr":
        _write_zarrs(job, labels, recolored)
    else:
        rgb = model.spec.rgb and model.spec.channel_axis == -1 and recolored.shape[-1] in (3, 4)
        _write_image(job.labels, np.asarray(labels), rgb=False)
        _write_image(job.recolored, np.asarray(recolored), rgb=rgb)
    _write_atomic(job.model, lambda tmp: tmp.write_text(model.to_json() + "\n"))


# -- fitting and labelling --------------------------------------------------------------------


def _params(args) -> dict:
    return {
        "channel_axis": args.channel_axis,
        "rgb": args.rgb,
        "color_space": args.color_space or "rgb",
        "seed": args.seed or 0,
    }


def _load_model(path: Path):
    from .model import KMeansModel

    try:
        return KMeansModel.from_json(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise CliError(EXIT_UNREADABLE, f"cannot use --model {path}: {err}") from None


def segment_image(image, k, params):
    """``(labels, recolored, model)`` of one image; lazy (dask) for zarr inputs."""
    from . import lazy
    from .segment import segment

    run = lazy.segment_lazy if lazy.is_dask(image) else segment
    result = run(image, k, **params)
    return result.labels, result.recolored, result.model


def apply_model(model, image):
    """``(labels, recolored)`` of ``image`` by a fitted model; lazy (dask) for zarr inputs."""
    from . import lazy

    if lazy.is_dask(image):
        labels = lazy.predict_lazy(model, image)
        return labels, lazy.recolor_lazy(model, image, labels)
    labels = model.predict(image)
    return labels, model.recolor(image, labels)


def _pool(supports, codec, seed):
    """One weighted support from several: equal values merged, in the single-image order."""
    from .sampling import hash_values

    values = np.concatenate([s.values for s in supports])
    weights = np.concatenate([s.weights for s in supports])
    keys = codec.encode(values) if codec is not None else hash_values(values, seed)
    uniq, first, inv = np.unique(keys, return_index=True, return_inverse=True)
    return values[first], np.bincount(inv.reshape(-1), weights=weights, minlength=uniq.size)


def fit_all(jobs, k, params, quiet=False):
    """One model fitted on the pixels of every input together (``--fit-on all``)."""
    from tqdm import tqdm

    from . import features as ft
    from .compress import codec_for
    from .lazy import as_dask_image, lay_out, support
    from .segment import fit_weighted

    supports, layout = [], None
    for job in tqdm(jobs, desc="fit on all", unit="image", disable=quiet, file=sys.stderr):
        image = read_image(job)
        spec = ft.make_spec(image, channel_axis=params["channel_axis"], rgb=params["rgb"],
                            color_space=params["color_space"])  # fmt: skip
        here = (spec, np.dtype(image.dtype))
        if layout is not None and here != layout:
            raise CliError(
                EXIT_FAILED,
                f"--fit-on all needs images of one dtype and channel layout: {jobs[0].path} is "
                f"{layout[1]} with {layout[0].n_channels} channel(s), {job.path} is {here[1]} "
                f"with {spec.n_channels}; segment them separately.",
            )
        layout = here
        supports.append(support(lay_out(as_dask_image(image), spec), params["seed"]))
    spec, dtype = layout
    codec = codec_for(np.uint8 if dtype.kind == "b" else dtype, spec.n_channels)
    values, weights = _pool(supports, codec, params["seed"])
    covers_all = all(s.covers_all for s in supports)
    return fit_weighted(
        values, weights, spec, dtype, k, seed=params["seed"], covers_all=covers_all
    )[0]


# -- the command ------------------------------------------------------------------------------


def _process(job, k, params, model):
    """Segment one input and write its outputs; returns the model it used or fitted."""
    image = read_image(job)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if model is None:
                labels, recolored, model = segment_image(image, k, params)
            else:
                labels, recolored = apply_model(model, image)
        except (ValueError, TypeError) as err:
            raise CliError(EXIT_FAILED, f"cannot segment {job.path}: {err}") from None
    write_outputs(job, labels, recolored, model)
    return model, [f"napari-kmeans: warning: {job.path}: {w.message}" for w in caught]


def run_segment(args) -> int:
    from tqdm import tqdm

    jobs = _plan(args)
    model = _load_model(args.model) if args.model is not None else None
    k, params = args.n_clusters or 5, _params(args)
    if args.fit_on == "all":
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                model = fit_all(jobs, k, params, args.quiet)
            except (ValueError, TypeError) as err:
                raise CliError(EXIT_FAILED, f"cannot fit one model on all inputs: {err}") from None
        for w in caught:
            print(f"napari-kmeans: warning: all inputs: {w.message}", file=sys.stderr)
    failures = []
    bar = tqdm(jobs, desc="segment", unit="image", disable=args.quiet, file=sys.stderr)
    for job in bar:
        try:
            used, notes = _process(job, k, params, model)
        except CliError as err:
            if args.fit_on == "first" and model is None:
                raise  # no model to apply to the others
            failures.append(err.code)
            bar.write(f"napari-kmeans: error: {err}", file=sys.stderr)
            continue
        for note in notes:
            bar.write(note, file=sys.stderr)
        if args.fit_on == "first":
            model = used
    bar.close()
    done = len(jobs) - len(failures)
    if not args.quiet:
        print(f"napari-kmeans: segmented {done} of {len(jobs)} image(s); outputs in {args.out}",
              file=sys.stderr)  # fmt: skip
    if failures:
        return EXIT_UNREADABLE if EXIT_UNREADABLE in failures else EXIT_FAILED
    return EXIT_OK


def main(argv=None) -> int:
    """Entry point of the ``napari-kmeans`` command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_args(args)
    try:
        return run_segment(args)
    except CliError as err:
        print(f"napari-kmeans: error: {err}", file=sys.stderr)
        return err.code
    except KeyboardInterrupt:
        print("napari-kmeans: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
