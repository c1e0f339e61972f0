"""Hostile inputs to ``napari-kmeans segment``: paths, links, odd metadata and odd dtypes.

Each test is a case a probe found wrong: it asserts on the files on disk, the exit code and
the message, never only that nothing was raised.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

tifffile = pytest.importorskip("tifffile")
zarr = pytest.importorskip("zarr")
pytest.importorskip("dask.array")

from napari_kmeans.cli import (  # noqa: E402
    EXIT_OK,
    EXIT_UNREADABLE,
    EXIT_USAGE,
    main,
)


def cli(*args) -> int:
    return main(["segment", *map(str, args), "-q"])


def gray(shape=(12, 16), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 4000, shape, dtype=np.uint16)


def tree_hashes(root: Path) -> dict:
    """Hash of every file under ``root`` (relative path -> sha256), and every folder."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "/"
        for p in sorted(root.rglob("*"))
    }


def write_ome_zarr(path: Path, image: np.ndarray, version: str = "0.4"):
    """A single-level z, y, x OME-Zarr image written by hand."""
    group = zarr.open_group(str(path), mode="w", zarr_format=3 if version == "0.5" else 2)
    array = group.create_array("0", shape=image.shape, dtype=image.dtype, chunks=image.shape)
    array[:] = image
    axes = [{"name": n, "type": "space", "unit": "micrometer"} for n in "zyx"]
    datasets = [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1.0] * 3}]}]
    multiscale = {"axes": axes, "datasets": datasets}
    if version == "0.5":
        group.attrs["ome"] = {"version": "0.5", "multiscales": [multiscale]}
    else:
        group.attrs["multiscales"] = [{"version": "0.4", **multiscale}]
    return group


# -- inputs are never replaced ----------------------------------------------------------------


def test_the_seeds_file_is_an_input_never_replaced(tmp_path, capsys):
    """Seeding with the labels of an earlier run (``--seeds out/a_labels.tif``) and
    ``--overwrite``: the new labels would replace the seeds file being read."""
    tifffile.imwrite(tmp_path / "a.tif", gray())
    out = tmp_path / "out"
    assert cli(tmp_path / "a.tif", "-k", "3", "--out", out) == EXIT_OK
    seeds = out / "a_labels.tif"
    before = tree_hashes(tmp_path)
    code = cli(tmp_path / "a.tif", "-k", "3", "--out", out, "--seeds", seeds, "--overwrite")
    assert code == EXIT_USAGE
    err = capsys.readouterr().err
    assert f"would replace the input {seeds}" in err and "nothing was written" in err
    assert tree_hashes(tmp_path) == before


def test_one_image_twice_into_itself_is_refused(tmp_path, capsys):
    """``--into-image`` of one OME-Zarr given twice (by a symbolic link): the second input's
    labels would replace the first's, in the same run and without --overwrite."""
    path = tmp_path / "cells.zarr"
    write_ome_zarr(path, gray((2, 12, 16)))
    (tmp_path / "link.zarr").symlink_to(path)
    before = tree_hashes(tmp_path)
    code = cli(path, tmp_path / "link.zarr", "-k", "3", "--out", tmp_path / "out", "--into-image")
    assert code == EXIT_USAGE
    err = capsys.readouterr().err
    assert "would write the same outputs" in err and "kmeans" in err
    assert tree_hashes(tmp_path) == before


@pytest.mark.parametrize("case", ["labels is an array", "labels list is a string"])
def test_into_image_refuses_a_labels_entry_it_cannot_add_to(tmp_path, capsys, case):
    """An input whose ``labels`` is not an NGFF labels group: the labels were written inside
    the input's array folder, then the run failed (exit 6, 'No group found'); or the list was
    mangled into letters. It must be refused before anything is written, naming the fix."""
    path = tmp_path / "cells.zarr"
    group = write_ome_zarr(path, gray((2, 12, 16)))
    if case == "labels is an array":
        group.create_array("labels", shape=(2,), dtype="u1")
    else:
        group.create_group("labels").attrs["labels"] = "abc"
    before = tree_hashes(tmp_path)
    code = cli(path, "-k", "3", "--out", tmp_path / "out", "--into-image")
    assert code == EXIT_USAGE
    err = capsys.readouterr().err
    assert f"{path / 'labels'}" in err and "drop --into-image" in err
    assert len(err.strip().splitlines()) == 1
    assert tree_hashes(tmp_path) == before


# -- nothing is created when a check fails ----------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "code", "message"),
    [
        (["--model", "missing.json"], EXIT_UNREADABLE, "cannot use --model"),
        (["--seeds", "missing.tif"], EXIT_UNREADABLE, "cannot use --seeds"),
        (["-k", "100000"], EXIT_USAGE, "n_clusters must be at most"),
    ],
)
def test_a_failed_check_creates_no_output_folder(tmp_path, capsys, extra, code, message):
    tifffile.imwrite(tmp_path / "a.tif", gray())
    out = tmp_path / "new" / "out"
    argv = ["segment", str(tmp_path / "a.tif"), "--out", str(out), "-q"]
    argv += [str(tmp_path / e) if e.startswith("missing") else e for e in extra]
    try:
        assert main(argv) == code
    except SystemExit as exc:  # argparse's error
        assert exc.code == code
    assert message in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


# -- units of pixel sizes ---------------------------------------------------------------------


def ome_pixels(path: Path) -> dict:
    with tifffile.TiffFile(path) as tif:
        return tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]["Pixels"]


@pytest.mark.parametrize(
    ("key", "unit"),
    [("PhysicalSizeX", "μm"), ("PhysicalSizeX", "in"), ("PhysicalSizeX", "pm"),
     ("TimeIncrement", "µs"), ("TimeIncrement", "ns")],
    ids=["greek mu", "inch", "picometre", "microsecond", "nanosecond"],
)  # fmt: skip
def test_ome_tiff_units_are_kept(tmp_path, key, unit):
    """OME-XML units other than the handful the reader knew (the Greek letter mu some writers
    use for µ, inches, picometres, micro- and nanoseconds) were dropped with their pixel size:
    the labels said nothing of the size, silently."""
    axes = "TYX" if key == "TimeIncrement" else "YX"
    meta = {"axes": axes, key: 0.25, f"{key}Unit": unit}
    tifffile.imwrite(tmp_path / "a.ome.tif", gray((2, 12, 16) if axes == "TYX" else (12, 16)),
                     ome=True, photometric="minisblack", metadata=meta)  # fmt: skip
    assert cli(tmp_path / "a.ome.tif", "-k", "3", "--out", tmp_path / "out") == EXIT_OK
    pixels = ome_pixels(tmp_path / "out" / "a_labels.tif")
    assert pixels[key] == 0.25
    assert pixels[f"{key}Unit"] == ("µm" if unit == "μm" else unit)


def test_ngff_time_unit_microsecond_is_kept(tmp_path):
    path = tmp_path / "movie.zarr"
    group = write_ome_zarr(path, gray((2, 12, 16)))
    multiscales = group.attrs["multiscales"]
    multiscales[0]["axes"][0] = {"name": "t", "type": "time", "unit": "microsecond"}
    group.attrs["multiscales"] = multiscales
    assert cli(path, "-k", "3", "--out", tmp_path / "out") == EXIT_OK
    attrs = zarr.open_group(str(tmp_path / "out" / "movie_labels.zarr"), mode="r").attrs
    axes = attrs["multiscales"][0]["axes"]
    assert axes[0] == {"name": "t", "type": "time", "unit": "microsecond"}


# -- dtypes OME-TIFF cannot hold --------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float16", "int64", "uint64"])
def test_tiff_of_a_dtype_ome_cannot_hold_is_segmented(tmp_path, capsys, dtype):
    """A float16, int64 or uint64 TIFF failed as an 'unexpected error' (exit 1: OmeXmlError)
    while its recoloured image, in the input's dtype, was written as OME-TIFF, which has no
    such pixel type. It is written as a TIFF with the input's axes and pixel size instead."""
    from napari_kmeans import microscopy, segment

    image = gray((3, 12, 16)).astype(dtype)
    tifffile.imwrite(tmp_path / "a.tif", image, metadata={"axes": "ZYX"},
                     resolution=(1e4 / 0.5, 1e4 / 0.5), resolutionunit="CENTIMETER")  # fmt: skip
    assert cli(tmp_path / "a.tif", "-k", "3", "--out", tmp_path / "out") == EXIT_OK
    assert capsys.readouterr().err == ""
    ref = segment(image, 3)
    labels, axes = microscopy.read_tiff(tmp_path / "out" / "a_labels.tif")
    np.testing.assert_array_equal(labels, ref.labels)
    assert axes.names == ("z", "y", "x") and axes.scale[1:] == (0.5, 0.5)
    recolored, axes = microscopy.read_tiff(tmp_path / "out" / "a_recolored.tif")
    assert recolored.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(recolored, ref.recolored)
    assert axes.names == ("z", "y", "x") and axes.scale[1:] == (0.5, 0.5)
    assert axes.units[1:] == ("micrometer", "micrometer")


def test_no_rgb_on_an_interleaved_rgb_tiff_is_written(tmp_path, capsys):
    """``--no-rgb`` on an RGB TIFF stored interleaved (YXS) reads its samples as gray planes,
    as documented, but writing the (y, x, 3) labels failed: exit 7, 'cannot reshape array'."""
    from napari_kmeans import segment

    image = np.random.default_rng(1).integers(0, 256, (12, 16, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "a.tif", image, photometric="rgb")
    assert cli(tmp_path / "a.tif", "-k", "3", "--no-rgb", "--out", tmp_path / "out") == EXIT_OK
    assert capsys.readouterr().err == ""
    ref = segment(image, 3, rgb=False)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "out" / "a_labels.tif"), ref.labels)
    np.testing.assert_array_equal(
        tifffile.imread(tmp_path / "out" / "a_recolored.tif"), ref.recolored
    )


def test_a_tiff_of_several_series_says_only_the_first_is_segmented(tmp_path, capsys):
    """A multi-position OME-TIFF (two image series): only the first was segmented, exit 0 and
    not a word; the others were skipped silently."""
    first, second = gray((12, 16), 1), gray((8, 9), 2)
    with tifffile.TiffWriter(tmp_path / "a.ome.tif", ome=True) as tif:
        tif.write(first, photometric="minisblack")
        tif.write(second, photometric="minisblack")
    assert cli(tmp_path / "a.ome.tif", "-k", "3", "--out", tmp_path / "out") == EXIT_OK
    err = capsys.readouterr().err
    assert "warning" in err and "2 image series" in err and "only the first" in err
    assert tifffile.imread(tmp_path / "out" / "a_labels.tif").shape == first.shape


# -- NGFF coordinate transformations ----------------------------------------------------------


def _level0_transforms(path: Path) -> dict:
    attrs = zarr.open_group(str(path), mode="r").attrs.asdict()
    dataset = attrs["multiscales"][0]["datasets"][0]
    return {t["type"]: t[t["type"]] for t in dataset["coordinateTransformations"]}


@pytest.mark.parametrize("case", ["translation of level 1 only", "outer scale"])
def test_ngff_full_resolution_position_is_kept(tmp_path, case):
    """The labels' full-resolution scale and translation are the input's, as NGFF composes
    them: a translation given only for level 1 was taken for level 0's; a dataset translation
    under a multiscale-wide scale was not scaled by it (world = outer * (scale * i + t))."""
    path = tmp_path / "cells.zarr"
    image = gray((2, 16, 16))
    group = write_ome_zarr(path, image)
    level1 = group.create_array("1", shape=(2, 8, 8), dtype=image.dtype, chunks=(2, 8, 8))
    level1[:] = image[:, ::2, ::2]
    multiscales = group.attrs["multiscales"]
    datasets = multiscales[0]["datasets"]
    if case == "translation of level 1 only":
        datasets[0]["coordinateTransformations"] = [{"type": "scale", "scale": [1, 0.5, 0.5]}]
        datasets.append({"path": "1", "coordinateTransformations": [
            {"type": "scale", "scale": [1, 1, 1]},
            {"type": "translation", "translation": [0, 0.25, 0.25]}]})  # fmt: skip
        expected = {"scale": [1, 0.5, 0.5], "translation": [0, 0, 0]}
    else:
        datasets[0]["coordinateTransformations"] = [
            {"type": "scale", "scale": [1, 0.5, 0.5]},
            {"type": "translation", "translation": [0, 1, 1]}]  # fmt: skip
        datasets.append({"path": "1", "coordinateTransformations": [
            {"type": "scale", "scale": [1, 1, 1]},
            {"type": "translation", "translation": [0, 1.25, 1.25]}]})  # fmt: skip
        multiscales[0]["coordinateTransformations"] = [{"type": "scale", "scale": [3, 2, 2]}]
        expected = {"scale": [3, 1, 1], "translation": [0, 2, 2]}
    group.attrs["multiscales"] = multiscales
    assert cli(path, "-k", "3", "--out", tmp_path / "out") == EXIT_OK
    found = _level0_transforms(tmp_path / "out" / "cells_labels.zarr")
    assert found["scale"] == expected["scale"]
    assert found.get("translation", [0, 0, 0]) == expected["translation"]


# -- failures leave nothing behind and say what was wrong -------------------------------------


def test_into_image_of_mismatched_axes_leaves_no_hidden_folder(tmp_path, capsys):
    """An OME-Zarr whose axes do not match its array, with --into-image: exit 6 as it should,
    but the hidden staging folder was left in --out (kept as if it held previous outputs)."""
    path = tmp_path / "cells.zarr"
    group = write_ome_zarr(path, gray((2, 12, 16)))
    multiscales = group.attrs["multiscales"]
    multiscales[0]["axes"] = multiscales[0]["axes"][1:]  # y, x for a z, y, x array
    multiscales[0]["datasets"][0]["coordinateTransformations"][0]["scale"] = [1.0, 1.0]
    group.attrs["multiscales"] = multiscales
    before = tree_hashes(path)
    out = tmp_path / "out"
    assert cli(path, "-k", "3", "--out", out, "--into-image") == 6
    assert "drop --into-image" in capsys.readouterr().err
    assert list(out.iterdir()) == []
    assert tree_hashes(path) == before


@pytest.mark.parametrize("fit_on", ["each", "all"])
def test_a_corrupt_zarr_chunk_is_an_unreadable_input(tmp_path, capsys, fit_on):
    """A zarr input with a corrupt chunk was reported as a bug of napari-kmeans ('unexpected
    error RuntimeError: Zstd decompression error ... please report this', exit 1); it is an
    input that cannot be read (exit 4), named, and the other inputs are still processed."""
    z = zarr.create_array(tmp_path / "bad.zarr", shape=(4, 12, 16), chunks=(2, 12, 16),
                          dtype="u2", zarr_format=2)  # fmt: skip
    z[:] = gray((4, 12, 16))
    (tmp_path / "bad.zarr" / "1.0.0").write_bytes(b"garbage")
    tifffile.imwrite(tmp_path / "good.tif", gray((12, 16), 3))
    out = tmp_path / "out"
    inputs = [tmp_path / "good.tif", tmp_path / "bad.zarr"]
    if fit_on == "all":
        inputs = [tmp_path / "bad.zarr"]
    assert cli(*inputs, "-k", "3", "--fit-on", fit_on, "--out", out) == EXIT_UNREADABLE
    err = capsys.readouterr().err
    assert f"cannot read {tmp_path / 'bad.zarr'}" in err and "please report" not in err
    expected = ["good_labels.tif", "good_model.json", "good_recolored.tif"]
    assert sorted(p.name for p in out.iterdir()) == (expected if fit_on == "each" else [])


# -- a model is applied only to images of its channel layout ----------------------------------


@pytest.mark.parametrize("case", ["channels on another axis", "gray model, file with channels"])
def test_a_model_is_not_applied_across_the_files_channel_axis(tmp_path, capsys, case):
    """--model ignored the channel axis the file declares: a CZYX model applied to an ImageJ
    ZCYX stack (Z = C = 2) clustered its z-planes as channels, and a gray model applied to an
    OME-TIFF CYX clustered its channels as planes of a volume, both with exit 0."""
    from napari_kmeans import segment

    rng = np.random.default_rng(5)
    czyx = rng.integers(0, 4000, (2, 2, 12, 16), dtype=np.uint16)
    if case == "channels on another axis":
        segment(czyx, 3, channel_axis=0).model.save(tmp_path / "m.json")
        tifffile.imwrite(tmp_path / "a.tif", czyx.swapaxes(0, 1), imagej=True,
                         metadata={"axes": "ZCYX"})  # fmt: skip
        found = "C (axis 1)"
    else:
        segment(czyx[0, 0], 3).model.save(tmp_path / "m.json")
        tifffile.imwrite(tmp_path / "a.tif", czyx[:, 0], ome=True, photometric="minisblack",
                         metadata={"axes": "CYX"})  # fmt: skip
        found = "C (axis 0)"
    out = tmp_path / "out"
    assert cli(tmp_path / "a.tif", "--model", tmp_path / "m.json", "--out", out) == 6
    err = capsys.readouterr().err
    assert found in err and "model" in err and len(err.strip().splitlines()) == 1
    assert list(out.iterdir()) == []


def test_ngff_pyramid_of_odd_sizes_is_mirrored_level_by_level(tmp_path):
    """A 41 x 61 image with levels of 21 x 31 and 11 x 16 (every other pixel): the labels'
    levels were 20 x 30 and 10 x 15 (the size divided by the scale ratio and rounded), so they
    did not overlay the image's levels."""
    path = tmp_path / "odd.zarr"
    image = gray((41, 61))
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    datasets = []
    for i in range(3):
        level = image[:: 2**i, :: 2**i]
        group.create_array(str(i), shape=level.shape, dtype=level.dtype, chunks=level.shape)
        group[str(i)][:] = level
        scale = {"type": "scale", "scale": [0.5 * 2**i] * 2}
        datasets.append({"path": str(i), "coordinateTransformations": [scale]})
    axes = [{"name": n, "type": "space", "unit": "micrometer"} for n in "yx"]
    group.attrs["multiscales"] = [{"version": "0.4", "axes": axes, "datasets": datasets}]
    assert cli(path, "-k", "3", "--out", tmp_path / "out") == EXIT_OK
    for what in ("labels", "recolored"):
        written = zarr.open_group(str(tmp_path / "out" / f"odd_{what}.zarr"), mode="r")
        assert [written[str(i)].shape for i in range(3)] == [(41, 61), (21, 31), (11, 16)]
    labels = zarr.open_group(str(tmp_path / "out" / "odd_labels.zarr"), mode="r")
    np.testing.assert_array_equal(labels["1"][:], labels["0"][::2, ::2])


def test_each_frame_follows_the_files_time_axis(tmp_path):
    """--each-frame on an OME-TIFF ZTYX (T on axis 1) fitted frame by frame along Z, axis 0
    (the default when --time-axis is not given), with exit 0: the frames are the file's T."""
    from napari_kmeans.segment import segment_frames

    image = gray((2, 3, 12, 16), 4)
    tifffile.imwrite(tmp_path / "a.ome.tif", image, ome=True, photometric="minisblack",
                     metadata={"axes": "ZTYX"})  # fmt: skip
    by_t = segment_frames(image, 3, time_axis=1).labels
    assert not np.array_equal(by_t, segment_frames(image, 3, time_axis=0).labels)
    assert cli(tmp_path / "a.ome.tif", "-k", "3", "--each-frame", "--out", tmp_path / "o") == 0
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "o" / "a_labels.tif"), by_t)
    # --time-axis still wins
    args = ("-k", "3", "--each-frame", "--time-axis", "0", "--out", tmp_path / "o0")
    assert cli(tmp_path / "a.ome.tif", *args) == 0
    np.testing.assert_array_equal(
        tifffile.imread(tmp_path / "o0" / "a_labels.tif"), segment_frames(image, 3).labels
    )


def test_a_cmyk_jpeg_is_read_as_rgb_not_rgba(tmp_path, capsys):
    """A CMYK JPEG decodes to four planes: its K plane was taken for alpha, so every pixel of
    no black ink was masked as transparent (here all: exit 6, 'no pixel is left to cluster')."""
    image_module = pytest.importorskip("PIL.Image")
    iio = pytest.importorskip("imageio.v3")
    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[:, :10], rgb[:, 10:20], rgb[:, 20:] = [200, 30, 30], [30, 200, 30], [30, 30, 200]
    image_module.fromarray(rgb).convert("CMYK").save(tmp_path / "a.jpg", quality=95)
    assert cli(tmp_path / "a.jpg", "-k", "3", "--out", tmp_path / "out") == EXIT_OK
    labels = tifffile.imread(tmp_path / "out" / "a_labels.tif")
    assert sorted(np.unique(labels[:, 2:8]).tolist() + np.unique(labels[:, 12:18]).tolist()
                  + np.unique(labels[:, 22:28]).tolist()) == [1, 2, 3]  # fmt: skip
    assert iio.imread(tmp_path / "out" / "a_recolored.png").shape == (20, 30, 3)


def test_a_damaged_page_of_a_large_tiff_is_an_unreadable_input(tmp_path, capsys, monkeypatch):
    """A TIFF read lazily (over 256 MB; here the threshold is lowered) with a damaged page:
    'unexpected error error: Error -3 while decompressing data ... please report this' (exit
    1), where a small TIFF gives 'cannot read' (exit 4)."""
    from napari_kmeans import microscopy

    path = tmp_path / "a.tif"
    tifffile.imwrite(path, gray((4, 20, 30)), compression="zlib", photometric="minisblack")
    with tifffile.TiffFile(path) as tif:
        offset, size = tif.pages[2].dataoffsets[0], tif.pages[2].databytecounts[0]
    data = bytearray(path.read_bytes())
    data[offset + 2 : offset + size] = bytes(size - 2)
    path.write_bytes(bytes(data))
    monkeypatch.setattr(microscopy, "LAZY_TIFF_BYTES", 0)
    assert cli(path, "-k", "3", "--out", tmp_path / "out") == EXIT_UNREADABLE
    err = capsys.readouterr().err
    assert f"cannot read {path}" in err and "please report" not in err
    assert list((tmp_path / "out").iterdir()) == []


def test_a_zarr_group_without_arrays_suggests_an_image_inside_it(tmp_path, capsys):
    """An HCS plate (images in plate.zarr/A/1/0): the message said 'it holds no array' and
    nothing of what to give instead."""
    plate = zarr.open_group(str(tmp_path / "plate.zarr"), mode="w", zarr_format=2)
    plate.attrs["plate"] = {"version": "0.4", "wells": [{"path": "A/1"}]}
    plate.create_group("A/1").attrs["well"] = {"version": "0.4", "images": [{"path": "0"}]}
    write_ome_zarr(tmp_path / "plate.zarr" / "A" / "1" / "0", gray((2, 12, 16)))
    assert cli(tmp_path / "plate.zarr", "-k", "3", "--out", tmp_path / "out") == EXIT_UNREADABLE
    err = capsys.readouterr().err
    assert f"e.g. {tmp_path / 'plate.zarr' / 'A' / '1' / '0'}" in err
    assert cli(tmp_path / "plate.zarr" / "A" / "1" / "0", "-k", "3", "--out", tmp_path / "out") == 0
