"""``napari-kmeans segment``: k-means segmentation of image files from the command line.

Reads TIFF (OME-TIFF, ImageJ), PNG, JPEG and zarr (OME-Zarr) files with their axes and pixel
sizes (:mod:`napari_kmeans.microscopy`, :mod:`napari_kmeans.ngff`), segments each (or applies
one model to all of them) and writes, per input, ``<stem>_labels.tif``, ``<stem>_recolored.<ext>`` and ``<stem>_model.json``.
Zarr inputs are processed lazily with dask, block by block, and give zarr outputs. This module
parses the arguments and runs the batch with the engine's stages; :mod:`napari_kmeans.cli_files`
names, checks, reads and writes the files. tqdm is optional.

Promise kept here: every failure is one line on stderr with a documented exit code.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import signal
import stat
import sys
import threading
import traceback
import warnings
from pathlib import Path

import numpy as np

from ._version import __version__
from .cli_files import (
    BUG_TRACKER,
    EXIT_EXISTS,
    EXIT_FAILED,
    EXIT_INTERNAL,
    EXIT_MISSING,
    EXIT_OK,
    EXIT_OUT_DIR,
    EXIT_SIGINT,
    EXIT_SIGTERM,
    EXIT_UNREADABLE,
    EXIT_USAGE,
    EXIT_WRITE,
    MARK,
    TRACEBACK_ENV,
    CliError,
    Job,
    Terminated,
    first_line,
    kind_of,
    make_out_dir,
    open_image,
    plan,
    split_alpha,
    write_outputs,
)

# The exit codes are the command's contract with the shell: every one is a name of this module.
__all__ = [
    "BUG_TRACKER",
    "EXIT_EXISTS",
    "EXIT_FAILED",
    "EXIT_INTERNAL",
    "EXIT_MISSING",
    "EXIT_OK",
    "EXIT_OUT_DIR",
    "EXIT_SIGINT",
    "EXIT_SIGTERM",
    "EXIT_UNREADABLE",
    "EXIT_USAGE",
    "EXIT_WRITE",
    "apply_model",
    "build_parser",
    "fit_all",
    "main",
    "run_segment",
    "segment_image",
]

_NO_MEMORY = "not enough memory; save it as zarr (processed block by block) or free some memory."

EPILOG = f"""\
outputs (per input, in --out):
  <stem>_labels.tif       labels 1..k (1 = darkest cluster), 0 = masked or invalid pixels
  <stem>_recolored.<ext>  every pixel painted with its cluster's colour, in the input's dtype
                          (.tif for TIFF, .png for PNG and JPEG inputs)
  <stem>_model.json       the fitted model; apply it to other images with --model
  Zarr inputs give <stem>_labels.zarr and <stem>_recolored.zarr, written block by block.
  Axes, channels and pixel sizes come from the file (OME-XML, ImageJ, TIFF samples, NGFF):
  TIFF inputs give OME-TIFF outputs with them, OME-Zarr inputs NGFF labels (image-label) and
  images of the same version; --into-image puts the labels in the input's labels/kmeans.
  An input's outputs are written to a hidden folder in --out, then moved into place together.
  No output may be, hold or lie inside an input (exit 2). --overwrite replaces files and only
  the zarr folders napari-kmeans wrote (they carry a '{MARK}' attribute).

fitting:
  --fit-on each (default)  fit every image on its own pixels
  --fit-on first           fit on the first image, apply that model to all
  --fit-on all             fit one model on the pixels of all images together
  --model FILE             apply a saved model (no fitting; -k, --fit-on, the channel,
                           colour space, feature, clean-up, seed and frame options come
                           from the model and are refused with it)
  --each-frame             fit every frame of a timelapse (frames along --time-axis, default
                           the file's time axis, else 0) on its own, each frame's label IDs
                           matched to the previous frame's, so a label means the same class
                           through time; the model written is the last frame's
  --seeds FILE             scribbled seed classes (a labels image of the input's spatial shape,
                           or one frame's with --each-frame): 0 unseeded, 1..m give labels 1..m;
                           --pin-seeds keeps their centres at the seeds' means

exit codes:
  0  every image was segmented
  1  unexpected error (a bug): one line, with where to report it
  2  bad or conflicting arguments, or an output that would replace, hold or lie inside an input
  3  the output folder cannot be created, is not a folder, or is not writable
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
  napari-kmeans segment new/*.png --model results/plate_01_model.json --out results/new
"""


def _unexpected(where, err: BaseException) -> CliError:
    if os.environ.get(TRACEBACK_ENV):
        traceback.print_exception(err, file=sys.stderr)
    return CliError(
        EXIT_INTERNAL,
        f"{where}: unexpected error {type(err).__name__}: {first_line(err)}; please report this "
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
                     help="folder to write the outputs to (created, with its parents, when missing)")  # fmt: skip
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
    seg.add_argument("--smoothing", type=_sigma, metavar="SIGMA",
                     help="Gaussian blur before clustering, in pixels: one number, or one per "
                     "spatial axis as '1,2,2' (default 0: none)")  # fmt: skip
    seg.add_argument("--features", type=_features, metavar="WHAT", default=None,
                     help="'values' (default), 'texture' (Gabor energies), or filters with "
                     "scales in pixels as 'gaussian:1,gradient:2,log:2' (also std, hessian, "
                     "structure)")  # fmt: skip
    seg.add_argument("--spatial-weight", type=float, metavar="W",
                     help="add pixel positions with this weight, for compact regions "
                     "(default 0)")  # fmt: skip
    seg.add_argument("--majority", type=int, metavar="R",
                     help="clean-up: majority filter of radius R pixels (default 0: off)")  # fmt: skip
    seg.add_argument("--min-size", type=int, metavar="N",
                     help="clean-up: regions under N pixels join a neighbour (default 0: off)")  # fmt: skip
    seg.add_argument("--each-frame", action="store_true",
                     help="fit each frame of a timelapse separately, label IDs matched from "
                     "frame to frame")  # fmt: skip
    seg.add_argument("--time-axis", type=int, metavar="AXIS",
                     help="axis of the frames for --each-frame (default: the file's time axis, else 0)")  # fmt: skip
    seg.add_argument("--seeds", type=Path, metavar="FILE",
                     help="labels image of scribbled seed classes (0 unseeded, 1..m)")  # fmt: skip
    seg.add_argument("--pin-seeds", action="store_true", default=None,
                     help="keep the seeded centres at the seeds' mean values")  # fmt: skip
    seg.add_argument("--into-image", action="store_true",
                     help="OME-Zarr inputs: write the labels into the input's labels/ group "
                     "(the only write ever made inside an input) instead of --out")  # fmt: skip
    seg.add_argument("--overwrite", action="store_true",
                     help="replace existing outputs napari-kmeans wrote (default: refuse and "
                     "write nothing)")  # fmt: skip
    seg.add_argument("--quiet", "-q", action="store_true",
                     help="no progress and no summary")  # fmt: skip
    return parser


def _sigma(text: str):
    """``--smoothing``: '2' or '1,2,2' (one per spatial axis)."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"'{text}' is not a number or a list of numbers such as '1,2,2'"
        ) from None
    return values[0] if len(values) == 1 else tuple(values)


def _features(text: str):
    """``--features``: 'values', 'texture' or 'name:scale,name:scale'."""
    if text in ("values", "texture"):
        return text
    pairs = []
    for part in filter(None, text.split(",")):
        name, _, scale = part.partition(":")
        try:
            pairs.append((name.strip(), float(scale)))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"'{part}' is not 'filter:scale' (e.g. 'gaussian:1,gradient:2'), nor "
                "'values' or 'texture'"
            ) from None
    return tuple(pairs)


def _check_args(args):
    """Reject conflicting or out-of-range options (exit code 2)."""
    parser = args.parser
    if args.model is not None:
        fixed = {
            "-k": args.n_clusters, "--fit-on": args.fit_on, "--channel-axis": args.channel_axis,
            "--rgb/--no-rgb": args.rgb, "--color-space": args.color_space, "--seed": args.seed,
            "--smoothing": args.smoothing, "--features": args.features,
            "--spatial-weight": args.spatial_weight, "--majority": args.majority,
            "--min-size": args.min_size, "--each-frame": args.each_frame or None,
            "--seeds": args.seeds, "--pin-seeds": args.pin_seeds,
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
    if args.each_frame and args.fit_on not in (None, "each"):
        parser.error(f"--each-frame fits every frame on its own; drop --fit-on {args.fit_on}.")
    if args.time_axis is not None and not args.each_frame:
        parser.error("--time-axis goes with --each-frame; add --each-frame or drop it.")
    if args.pin_seeds and args.seeds is None:
        parser.error("--pin-seeds pins the centres of --seeds; give --seeds FILE.")
    if args.seeds is not None and args.fit_on == "all":
        parser.error("--seeds applies to each image's fit; drop --fit-on all.")


# -- fitting and labelling --------------------------------------------------------------------


def _params(args):
    """The clustering settings of the command line, validated once (exit 2 if out of range)."""
    from .params import Params

    try:
        return Params(
            n_clusters=args.n_clusters or 5,
            color_space=args.color_space or "rgb",
            seed=args.seed or 0,
            smoothing=args.smoothing or 0.0,
            features=args.features or "values",
            spatial_weight=args.spatial_weight or 0.0,
            majority=args.majority or 0,
            min_size=args.min_size or 0,
            pin_seeds=bool(args.pin_seeds),
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
        raise CliError(EXIT_UNREADABLE, f"cannot use --model {path}: {first_line(err)}") from None


def segment_image(image, params, layout, mask=None, *, seeds=None, time_axis=None):
    """``(labels, recolored, model)`` of one image; lazy (dask) for zarr inputs.

    ``time_axis`` (``--each-frame``) fits frame by frame with matched IDs (frames of a zarr
    input are read into memory one at a time); the model is then the last frame's.
    """
    from . import blocks
    from .segment import segment, segment_frames

    if time_axis is None:
        result = segment(image, mask=mask, seeds=seeds, params=params, **layout)
        return result.labels, result.recolored, result.model
    frames = segment_frames(
        image, params.n_clusters, time_axis=time_axis, mask=mask, seeds=seeds, params=params,
        **layout,
    )  # fmt: skip
    labels, recolored = frames.labels, frames.recolored
    if blocks.is_dask(image):  # zarr outputs are written block by block from dask arrays
        da = blocks.dask_array_module()
        labels, recolored = da.from_array(labels), da.from_array(recolored)
    return labels, recolored, frames.frames[-1].model


def _read_seeds(path: Path):
    """The ``--seeds`` labels image, in memory (exit 4 when it cannot be read)."""
    kind = kind_of(path)
    if kind is None or not path.exists():
        why = "no such file" if not path.exists() else "not a TIFF, PNG, JPEG or zarr image"
        raise CliError(EXIT_UNREADABLE, f"cannot use --seeds {path}: {why}.")
    return np.asarray(open_image(Job(path, kind, path, path, path)).image)


def apply_model(model, image, *, rgb=None, mask=None):
    """``(labels, recolored)`` of ``image`` by a fitted model; lazy (dask) for zarr inputs.

    ``rgb`` says what the file told of the image's layout (see ``KMeansModel.check_image``).
    """
    labels = model.predict(image, mask=mask, rgb=rgb)
    return labels, model.recolor(image, labels, rgb=rgb)


def _gray(layout) -> bool:
    return layout["channel_axis"] is None and layout["rgb"] is not True


def _file_layout(job, opened, layout) -> dict:
    """The layout options, the channel axis and RGB taken from the file's axes (OME-XML,
    ImageJ, TIFF samples, NGFF axes) unless ``--channel-axis`` / ``--rgb`` say otherwise."""
    from .microscopy import channel_layout

    try:
        axis, rgb = channel_layout(opened.axes, np.shape(opened.image), **layout)
    except ValueError as err:
        raise CliError(EXIT_FAILED, f"cannot segment {job.path}: {err}") from None
    return {"channel_axis": axis, "rgb": rgb}


_FILE_TIME = "file"  # --each-frame without --time-axis: the file's time axis, else axis 0


def _time_axis(opened) -> int:
    """The one axis the file declares as time (OME-XML, ImageJ, NGFF), else 0."""
    types = opened.axes.types if opened.axes is not None else ()
    found = [i for i, t in enumerate(types) if t == "time"]
    return found[0] if len(found) == 1 else 0


def _check_model_layout(job, opened, model):
    """With ``--model``: the channel axis the file declares (OME-XML, ImageJ, NGFF) must be the
    model's, or the model would read channels as planes or planes as channels (exit 6).
    Files that declare RGB samples or axes of unknown meaning are left to the model's check."""
    from .microscopy import channel_layout

    axes, shape = opened.axes, np.shape(opened.image)
    if axes is None or opened.rgb or None in axes.types:
        return
    try:
        declared, _ = channel_layout(axes, shape)
    except ValueError:  # two channel axes: the model's own check decides
        return
    ndim, mine = len(shape), model.spec.channel_axis
    if declared is None and mine is None:
        return
    if declared is not None and mine is not None and declared % ndim == mine % ndim:
        return
    has = (
        "no channel axis"
        if declared is None
        else f"channels on {axes.names[declared].upper()} (axis {declared})"
    )
    wants = "is single-channel" if mine is None else f"expects channels on axis {mine}"
    raise CliError(
        EXIT_FAILED,
        f"cannot segment {job.path}: its axes are {axes.described} (shape {tuple(shape)}, from "
        f"{axes.source}), with {has}, but the model {wants}; apply the model to images of its "
        "channel layout, or drop --model to fit one on this image.",
    )


def fit_all(jobs, params, layout, quiet=False):
    """One model fitted on the pixels of every input together (``--fit-on all``).

    The inputs are read one at a time (:func:`napari_kmeans.segment.fit_many` keeps only each
    one's support), a gray + alpha PNG with its alpha as mask.
    """
    from .segment import fit_many

    masks = []
    opened = [open_image(jobs[0])]  # its axes give the layout every input must share
    shared = _file_layout(jobs[0], opened[0], layout)

    def images():
        for i, job in enumerate(_progress(jobs, "fit on all", quiet)):
            this = opened.pop() if i == 0 else open_image(job)
            own = _file_layout(job, this, layout)
            if own["channel_axis"] != shared["channel_axis"]:
                raise CliError(
                    EXIT_FAILED,
                    f"cannot fit one model on all inputs: {job.path} has its channels on axis "
                    f"{own['channel_axis']}, {jobs[0].path} on axis {shared['channel_axis']} "
                    "(None: no channels); give inputs of one layout.",
                )
            image, _, alpha = split_alpha(job, this.image, this.rgb, _gray(shared))
            masks.append(None if alpha is None else alpha > 0)
            yield image

    def mask_of_each():  # fit_many takes each mask right after its image
        while True:
            yield masks[-1]

    return fit_many(images(), masks=mask_of_each(), params=params, **shared).model


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


def _compute(job, image, rgb, alpha, params, layout, model, frames=None):
    mask = None if alpha is None else alpha > 0
    try:
        if model is None:
            return segment_image(image, params, layout, mask=mask, **(frames or {}))
        return (*apply_model(model, image, rgb=rgb, mask=mask), model)
    except (ValueError, TypeError) as err:
        raise CliError(EXIT_FAILED, f"cannot segment {job.path}: {err}") from None


def _write(job, labels, recolored, model, alpha, opened=None):
    if alpha is not None:  # gray + alpha: the recoloured image keeps the alpha plane
        recolored = np.stack([np.asarray(recolored), alpha], axis=-1)
    rgb = model.spec.rgb and model.spec.channel_axis == -1 and recolored.shape[-1] in (3, 4)
    try:
        write_outputs(job, labels, recolored, model, rgb=rgb, opened=opened)
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


def _process(job, params, layout, model, frames=None):
    """Segment one input and write its outputs; returns the model it used or fitted.

    ``frames``: the keywords ``seeds`` and ``time_axis`` of :func:`segment_image`."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        opened = open_image(job)
        if model is None:
            layout = _file_layout(job, opened, layout)
        elif layout == {"channel_axis": None, "rgb": None}:  # else --fit-on first's options win
            _check_model_layout(job, opened, model)
        single_channel = _gray(layout) if model is None else model.spec.channel_axis is None
        image, rgb, alpha = split_alpha(job, opened.image, opened.rgb, single_channel)
        if frames and frames["time_axis"] == _FILE_TIME:
            frames = {**frames, "time_axis": _time_axis(opened)}
        labels, recolored, model = _compute(job, image, rgb, alpha, params, layout, model, frames)
        _write(job, labels, recolored, model, alpha, opened)
    return model, [f"napari-kmeans: warning: {job.path}: {w.message}" for w in caught]


def _exit_code(failures) -> int:
    for code in (EXIT_INTERNAL, EXIT_WRITE, EXIT_UNREADABLE, EXIT_FAILED):
        if code in failures:
            return code
    return failures[0]


def run_segment(args) -> int:
    params, layout = _params(args), _layout(args)
    jobs = plan(args)
    model = _load_model(args.model) if args.model is not None else None
    frames = {
        "seeds": None if args.seeds is None else _read_seeds(args.seeds),
        "time_axis": _FILE_TIME if args.each_frame and args.time_axis is None else args.time_axis,
    }
    make_out_dir(args.out)  # only now: a failed check leaves no folder behind
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
                used, notes = _process(job, params, layout, model, frames)
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
