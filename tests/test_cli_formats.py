"""`napari-kmeans segment` on microscopy files: axes, channels and pixel sizes in and out.

Every input is written here: OME-TIFF (CZYX, TCZYX), an ImageJ hyperstack, planar and
interleaved RGB TIFF, OME-Zarr 0.4 (zarr format 2) and 0.5 (zarr format 3), single-level and
multiscale. The NGFF outputs are read back with ome-zarr-models, which validates them against
the NGFF schemas.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

tifffile = pytest.importorskip("tifffile")
zarr = pytest.importorskip("zarr")
pytest.importorskip("dask.array")

from napari_kmeans import microscopy, segment  # noqa: E402
from napari_kmeans.cli import (  # noqa: E402
    EXIT_EXISTS,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    main,
)

K = 3


def blobs(shape, seed=0, levels=(200, 1500, 3000)):
    """uint16 image of three intensity classes with noise."""
    rng = np.random.default_rng(seed)
    classes = rng.integers(0, len(levels), shape)
    return (np.asarray(levels)[classes] + rng.normal(0, 40, shape)).clip(0).astype(np.uint16)


def two_channels(shape, seed=0):
    """(2, *shape) uint16: two channels of the same three classes (k = 3 is unambiguous)."""
    rng = np.random.default_rng(seed)
    classes = rng.integers(0, 3, shape)
    c0 = np.array([200, 1500, 3000])[classes] + rng.normal(0, 40, shape)
    c1 = np.array([2500, 300, 1200])[classes] + rng.normal(0, 40, shape)
    return np.stack([c0, c1]).clip(0).astype(np.uint16)


def cli(*args) -> int:
    return main(["segment", *map(str, args), "-k", str(K), "-q"])


def ome_pixels(path: Path) -> dict:
    with tifffile.TiffFile(path) as tif:
        pixels = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]["Pixels"]
        return {"axes": tif.series[0].axes, **pixels}


def tree_hashes(root: Path) -> dict:
    """Hash of every file under ``root`` (relative path -> sha256)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# -- TIFF -------------------------------------------------------------------------------------


def write_ome(path, data, axes, **sizes):
    meta = {"axes": axes, **sizes}
    tifffile.imwrite(path, data, ome=True, photometric="minisblack", metadata=meta)


def test_ome_tiff_czyx_finds_channels_and_keeps_sizes(tmp_path):
    image = two_channels((6, 32, 32), 0)  # C, Z, Y, X
    write_ome(tmp_path / "cells.ome.tif", image, "CZYX", PhysicalSizeX=0.2, PhysicalSizeY=0.2,
              PhysicalSizeZ=1.0, PhysicalSizeXUnit="µm", PhysicalSizeYUnit="µm",
              PhysicalSizeZUnit="µm")  # fmt: skip
    assert cli(tmp_path / "cells.ome.tif", "--out", tmp_path / "out") == EXIT_OK
    out = tmp_path / "out"
    ref = segment(image, K, channel_axis=0, rgb=False)
    labels = tifffile.imread(out / "cells_labels.tif")
    assert labels.shape == (6, 32, 32)  # the channels were clustered, not stacked as planes
    np.testing.assert_array_equal(labels, ref.labels)
    meta = ome_pixels(out / "cells_labels.tif")
    assert meta["axes"] == "ZYX"
    assert (meta["PhysicalSizeX"], meta["PhysicalSizeY"], meta["PhysicalSizeZ"]) == (0.2, 0.2, 1.0)
    assert meta["PhysicalSizeXUnit"] == "µm"
    recolored = ome_pixels(out / "cells_recolored.tif")
    assert recolored["axes"] == "CZYX" and recolored["PhysicalSizeZ"] == 1.0
    np.testing.assert_array_equal(tifffile.imread(out / "cells_recolored.tif"), ref.recolored)


def test_ome_tiff_tczyx_drops_only_the_channel_axis(tmp_path):
    image = blobs((2, 3, 4, 24, 20), 2)  # T, C, Z, Y, X
    write_ome(tmp_path / "movie.tif", image, "TCZYX", PhysicalSizeX=0.5, PhysicalSizeY=0.5,
              PhysicalSizeZ=2.0, TimeIncrement=30.0, TimeIncrementUnit="s")  # fmt: skip
    assert cli(tmp_path / "movie.tif", "--out", tmp_path / "out") == EXIT_OK
    labels = tifffile.imread(tmp_path / "out" / "movie_labels.tif")
    assert labels.shape == (2, 4, 24, 20)
    np.testing.assert_array_equal(labels, segment(image, K, channel_axis=1, rgb=False).labels)
    meta = ome_pixels(tmp_path / "out" / "movie_labels.tif")
    assert meta["axes"] == "TZYX"
    assert (meta["PhysicalSizeX"], meta["PhysicalSizeZ"], meta["TimeIncrement"]) == (0.5, 2, 30)


def test_imagej_hyperstack_finds_channels_and_keeps_sizes(tmp_path):
    image = blobs((2, 3, 2, 20, 24), 3)  # T, Z, C, Y, X
    tifffile.imwrite(tmp_path / "hyper.tif", image, imagej=True, resolution=(1 / 0.25, 1 / 0.25),
                     metadata={"axes": "TZCYX", "spacing": 1.5, "unit": "um"})  # fmt: skip
    assert cli(tmp_path / "hyper.tif", "--out", tmp_path / "out") == EXIT_OK
    labels = tifffile.imread(tmp_path / "out" / "hyper_labels.tif")
    assert labels.shape == (2, 3, 20, 24)
    np.testing.assert_array_equal(labels, segment(image, K, channel_axis=2, rgb=False).labels)
    meta = ome_pixels(tmp_path / "out" / "hyper_labels.tif")
    assert meta["axes"] == "TZYX"
    assert meta["PhysicalSizeX"] == pytest.approx(0.25) and meta["PhysicalSizeZ"] == 1.5
    assert meta["PhysicalSizeXUnit"] == "µm"


def rgb_image(shape, seed=4):
    rng = np.random.default_rng(seed)
    palette = np.array([[230, 30, 30], [30, 200, 40], [20, 30, 220]], np.uint8)
    return palette[rng.integers(0, 3, shape)]  # (..., 3)


@pytest.mark.parametrize("planar", [False, True], ids=["interleaved", "planar"])
def test_rgb_tiff_interleaved_and_planar_are_colour(tmp_path, planar):
    rgb = rgb_image((2, 16, 18))  # two planes of RGB pixels: Z, Y, X, S
    data = np.moveaxis(rgb, -1, 1) if planar else rgb  # QSYX (like skimage's multipage_rgb.tif)
    options = {"planarconfig": "separate"} if planar else {}
    tifffile.imwrite(tmp_path / "rgb.tif", data, photometric="rgb", **options)
    with tifffile.TiffFile(tmp_path / "rgb.tif") as tif:
        assert tif.series[0].axes == ("QSYX" if planar else "QYXS")
    assert cli(tmp_path / "rgb.tif", "--out", tmp_path / "out") == EXIT_OK
    labels = tifffile.imread(tmp_path / "out" / "rgb_labels.tif")
    assert labels.shape == (2, 16, 18)  # colours, not three more gray planes
    np.testing.assert_array_equal(labels, segment(rgb, K).labels)
    with tifffile.TiffFile(tmp_path / "out" / "rgb_recolored.tif") as tif:
        assert tif.pages.first.photometric == tifffile.PHOTOMETRIC.RGB
        np.testing.assert_array_equal(tif.asarray(), data)  # 3 pure colours, 3 clusters


def test_rgb_overrides_still_win(tmp_path):
    stack = blobs((3, 16, 16), 5)
    # tifffile's old default: a 3-plane z-stack stored as planar RGB
    tifffile.imwrite(tmp_path / "z3.tif", stack, photometric="rgb", planarconfig="separate")
    assert cli(tmp_path / "z3.tif", "--out", tmp_path / "a", "--no-rgb") == EXIT_OK
    labels = tifffile.imread(tmp_path / "a" / "z3_labels.tif")
    np.testing.assert_array_equal(labels, segment(stack, K, rgb=False).labels)  # gray planes
    image = two_channels((6, 16, 16), 0)
    write_ome(tmp_path / "czyx.tif", image, "CZYX")
    assert cli(tmp_path / "czyx.tif", "--out", tmp_path / "b", "--channel-axis", "1") == EXIT_OK
    labels = tifffile.imread(tmp_path / "b" / "czyx_labels.tif")
    np.testing.assert_array_equal(labels, segment(image, K, channel_axis=1).labels)


def test_ambiguous_layout_names_the_axes(tmp_path, capsys):
    data = rgb_image((2, 12, 12))  # C, Y, X, S: channels of RGB samples
    tifffile.imwrite(tmp_path / "both.ome.tif", data, ome=True, photometric="rgb",
                     metadata={"axes": "CYXS"})  # fmt: skip
    assert cli(tmp_path / "both.ome.tif", "--out", tmp_path / "out") == EXIT_FAILED
    err = capsys.readouterr().err
    assert "CYXS" in err and "C (axis 0, 2)" in err and "S (axis 3, 3)" in err
    assert "--channel-axis" in err
    assert cli(tmp_path / "both.ome.tif", "--out", tmp_path / "out", "--channel-axis", "3") == 0


def test_large_ome_tiff_is_read_lazily_with_the_same_labels(tmp_path, monkeypatch):
    image = two_channels((5, 40, 30), 6)
    write_ome(tmp_path / "big.tif", image, "CZYX", PhysicalSizeX=0.3, PhysicalSizeY=0.3)
    lazy, _ = microscopy.read_tiff(tmp_path / "big.tif", lazy_bytes=0)
    assert hasattr(lazy, "dask") and lazy.shape == image.shape
    monkeypatch.setattr(microscopy, "LAZY_TIFF_BYTES", 0)
    assert cli(tmp_path / "big.tif", "--out", tmp_path / "out") == EXIT_OK
    labels = tifffile.imread(tmp_path / "out" / "big_labels.tif")
    ref = segment(image, K, channel_axis=0, rgb=False)
    assert labels.shape == (5, 40, 30)
    # the lazy fit pools the same 16-bit histograms: the same model, the same labels
    np.testing.assert_array_equal(labels, ref.labels)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "out" / "big_recolored.tif"),
                                  ref.recolored)  # fmt: skip
    assert ome_pixels(tmp_path / "out" / "big_labels.tif")["PhysicalSizeX"] == 0.3


# -- OME-Zarr ---------------------------------------------------------------------------------

SCALE = [1.0, 2.0, 0.5, 0.5]  # c, z, y, x
SHIFT = [0.0, 10.0, 3.0, 4.0]
AXES = [
    {"name": "c", "type": "channel"},
    {"name": "z", "type": "space", "unit": "micrometer"},
    {"name": "y", "type": "space", "unit": "micrometer"},
    {"name": "x", "type": "space", "unit": "micrometer"},
]


def write_ome_zarr(path: Path, image: np.ndarray, version: str, levels: int = 1):
    """An OME-Zarr image written by hand (independent of the code under test)."""
    fmt = 3 if version == "0.5" else 2
    group = zarr.open_group(str(path), mode="w", zarr_format=fmt)
    datasets = []
    for i in range(levels):
        f = 2**i
        data = image[:, :, ::f, ::f]
        extra = {"dimension_names": ["c", "z", "y", "x"]} if fmt == 3 else {}
        array = group.create_array(str(i), shape=data.shape, dtype=data.dtype,
                                   chunks=(1, 2, 16, 16), **extra)  # fmt: skip
        array[:] = data
        scale = [SCALE[0], SCALE[1], SCALE[2] * f, SCALE[3] * f]
        shift = [SHIFT[0], SHIFT[1], SHIFT[2] + (f - 1) * SCALE[2] / 2,
                 SHIFT[3] + (f - 1) * SCALE[3] / 2]  # fmt: skip
        datasets.append({"path": str(i), "coordinateTransformations": [
            {"type": "scale", "scale": scale}, {"type": "translation", "translation": shift}]})  # fmt: skip
    multiscale = {"name": "cells", "axes": AXES, "datasets": datasets}
    if version == "0.5":
        group.attrs["ome"] = {"version": "0.5", "multiscales": [multiscale]}
    else:
        group.attrs["multiscales"] = [{"version": "0.4", **multiscale}]


def ngff_attrs(path: Path) -> dict:
    attrs = zarr.open_group(str(path), mode="r").attrs.asdict()
    return attrs.get("ome", attrs)


def image_label_model(path: Path, version: str):
    """The labels group, validated by ome-zarr-models."""
    pytest.importorskip("ome_zarr_models")
    if version == "0.5":
        from ome_zarr_models.v05.image_label import ImageLabel
    else:
        from ome_zarr_models.v04.image_label import ImageLabel
    return ImageLabel.from_zarr(zarr.open_group(str(path), mode="r"))


def image_model(path: Path, version: str):
    pytest.importorskip("ome_zarr_models")
    if version == "0.5":
        from ome_zarr_models.v05.image import Image
    else:
        from ome_zarr_models.v04.image import Image
    return Image.from_zarr(zarr.open_group(str(path), mode="r"))


@pytest.fixture(params=[("0.4", 1), ("0.5", 1), ("0.4", 2), ("0.5", 2)],
                ids=["v0.4-zarr2", "v0.5-zarr3", "v0.4-multiscale", "v0.5-multiscale"])  # fmt: skip
def ome_zarr(request, tmp_path):
    version, levels = request.param
    image = two_channels((4, 32, 48), 8)  # c, z, y, x
    path = tmp_path / "cells.zarr"
    write_ome_zarr(path, image, version, levels)
    return path, image, version, levels


def test_ome_zarr_gives_ngff_labels_with_axes_and_scales(ome_zarr, tmp_path):
    path, image, version, levels = ome_zarr
    before = tree_hashes(path)
    out = tmp_path / "out"
    assert cli(path, "--out", out) == EXIT_OK
    assert tree_hashes(path) == before  # the input store, byte for byte
    ref = segment(image, K, channel_axis=0, rgb=False)
    labels_path = out / "cells_labels.zarr"
    model = image_label_model(labels_path, version)  # valid NGFF image-label
    group = zarr.open_group(str(labels_path), mode="r")
    assert group.metadata.zarr_format == (3 if version == "0.5" else 2)
    np.testing.assert_array_equal(group["0"][:], ref.labels)  # channels found: (z, y, x)
    meta = ngff_attrs(labels_path)
    multiscale = meta["multiscales"][0]
    assert [a["name"] for a in multiscale["axes"]] == ["z", "y", "x"]
    assert all(a["unit"] == "micrometer" for a in multiscale["axes"])
    transforms = multiscale["datasets"][0]["coordinateTransformations"]
    assert transforms[0]["scale"] == SCALE[1:] and transforms[1]["translation"] == SHIFT[1:]
    assert len(multiscale["datasets"]) == levels
    if levels == 2:  # mirrors the input's pyramid, nearest-neighbour
        np.testing.assert_array_equal(group["1"][:], ref.labels[:, 1::2, 1::2])
        assert multiscale["datasets"][1]["coordinateTransformations"][0]["scale"] == [2.0, 1.0, 1.0]
    label_meta = meta["image-label"]
    assert [c["label-value"] for c in label_meta["colors"]] == [1, 2, 3]
    centres = [p["center"] for p in label_meta["properties"]]
    np.testing.assert_allclose(centres, ref.model.colors)
    assert model is not None
    recolored = out / "cells_recolored.zarr"
    image_model(recolored, version)
    np.testing.assert_array_equal(zarr.open_group(str(recolored), mode="r")["0"][:], ref.recolored)


def test_single_level_large_result_gets_a_pyramid(tmp_path):
    image = blobs((1, 1, 600, 520), 10)  # c, z, y, x
    write_ome_zarr(tmp_path / "wide.zarr", image, "0.4")
    assert cli(tmp_path / "wide.zarr", "--out", tmp_path / "out") == EXIT_OK
    path = tmp_path / "out" / "wide_labels.zarr"
    image_label_model(path, "0.4")
    group = zarr.open_group(str(path), mode="r")
    shapes = [group[d["path"]].shape for d in ngff_attrs(path)["multiscales"][0]["datasets"]]
    assert shapes == [(1, 600, 520), (1, 300, 260), (1, 150, 130)]
    np.testing.assert_array_equal(group["2"][:], group["0"][:, 2::4, 2::4])  # nearest


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_into_image_writes_only_the_labels_group(tmp_path, version, capsys):
    image = two_channels((2, 32, 32), 11)
    path = tmp_path / "cells.zarr"
    write_ome_zarr(path, image, version, levels=2)
    before = tree_hashes(path)
    out = tmp_path / "out"
    assert cli(path, "--out", out, "--into-image") == EXIT_OK
    after = tree_hashes(path)
    assert {k: v for k, v in after.items() if not k.startswith("labels")} == before
    assert not (out / "cells_labels.zarr").exists() and (out / "cells_recolored.zarr").exists()
    labels = path / "labels" / "kmeans"
    image_label_model(labels, version)
    attrs = ngff_attrs(labels)
    assert attrs["image-label"]["source"] == {"image": "../../"}
    assert ngff_attrs(path / "labels")["labels"] == ["kmeans"]
    ref = segment(image, K, channel_axis=0, rgb=False)
    np.testing.assert_array_equal(zarr.open_group(str(labels), mode="r")["0"][:], ref.labels)
    assert not [p for p in (path / "labels").iterdir() if p.name.startswith(".napari-kmeans")]
    # the image with its labels, as NGFF readers see it
    assert image_model(path, version) is not None

    # a second run refuses to replace them without --overwrite, and writes nothing
    before = tree_hashes(path)
    assert cli(path, "--out", tmp_path / "again", "--into-image") == EXIT_EXISTS
    assert "kmeans" in capsys.readouterr().err and tree_hashes(path) == before
    assert cli(path, "--out", out, "--into-image", "--overwrite", "--seed", "3") == EXIT_OK
    assert ngff_attrs(path / "labels")["labels"] == ["kmeans"]
    assert {k: v for k, v in tree_hashes(path).items() if not k.startswith("labels")} == {
        k: v for k, v in before.items() if not k.startswith("labels")
    }


def test_into_image_never_replaces_labels_it_did_not_write(tmp_path, capsys):
    image = two_channels((2, 16, 16), 13)
    path = tmp_path / "cells.zarr"
    write_ome_zarr(path, image, "0.4")
    theirs = zarr.open_group(str(path / "labels"), mode="w", zarr_format=2)
    theirs.attrs["labels"] = ["kmeans"]
    theirs.create_array("kmeans/0", shape=(2, 16, 16), dtype="u1", chunks=(2, 16, 16))
    before = tree_hashes(path)
    assert cli(path, "--out", tmp_path / "out", "--into-image", "--overwrite") == EXIT_EXISTS
    assert "did not write" in capsys.readouterr().err
    assert tree_hashes(path) == before


def test_into_image_needs_an_ome_zarr_image(tmp_path, capsys):
    tifffile.imwrite(tmp_path / "a.tif", blobs((16, 16)))
    zarr.create_array(tmp_path / "plain.zarr", shape=(8, 8), dtype="u1")
    for name in ("a.tif", "plain.zarr"):
        assert cli(tmp_path / name, "--out", tmp_path / "out", "--into-image") == EXIT_USAGE
        assert "not an OME-Zarr image" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_ngff_colours_follow_the_clusters(ome_zarr, tmp_path):
    path = ome_zarr[0]
    assert cli(path, "--out", tmp_path / "out") == EXIT_OK
    colors = ngff_attrs(tmp_path / "out" / "cells_labels.zarr")["image-label"]["colors"]
    rgba = np.array([c["rgba"] for c in colors])
    assert rgba[:, 3].tolist() == [255] * K
    # two channels: red and green are the clusters' two channel means, each stretched over
    # the clusters' range; no blue
    assert rgba[:, :2].min(axis=0).tolist() == [0, 0]
    assert rgba[:, :2].max(axis=0).tolist() == [255, 255]
    assert rgba[:, 2].tolist() == [0] * K
    assert json.dumps(colors)  # plain JSON numbers


def test_ngff_outputs_are_replaced_only_with_overwrite(tmp_path, capsys):
    path = tmp_path / "cells.zarr"
    write_ome_zarr(path, two_channels((2, 16, 16), 15), "0.5")
    out = tmp_path / "out"
    assert cli(path, "--out", out) == EXIT_OK
    before = tree_hashes(out)
    assert cli(path, "--out", out, "--seed", "1") == EXIT_EXISTS
    assert "already exist" in capsys.readouterr().err and tree_hashes(out) == before
    assert cli(path, "--out", out, "--seed", "1", "--overwrite") == EXIT_OK
    image_label_model(out / "cells_labels.zarr", "0.5")
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize(
    "entry",
    [{"axes": [3, "y", "x"]}, {"axes": "zyx"}, {"axes": ["z", "y"]},
     {"axes": ["z", "y", "x"], "coordinateTransformations": [{"type": "scale", "scale": "big"}]}],
)  # fmt: skip
def test_odd_ngff_axes_fall_back_to_a_plain_zarr_output(tmp_path, entry):
    """Multiscales metadata whose axes do not describe the array: read as a plain zarr array
    (as before), written as one, never refused for its metadata."""
    group = zarr.open_group(str(tmp_path / "odd.zarr"), mode="w", zarr_format=2)
    data = blobs((2, 16, 16), 16)
    group.create_array("0", shape=data.shape, dtype=data.dtype, chunks=(1, 16, 16))[:] = data
    group.attrs["multiscales"] = [{"version": "0.4", "datasets": [{"path": "0"}], **entry}]
    if "coordinateTransformations" in entry:  # axes fine, transforms odd: scales of 1
        assert cli(tmp_path / "odd.zarr", "--out", tmp_path / "out") == EXIT_OK
        axes = ngff_attrs(tmp_path / "out" / "odd_labels.zarr")["multiscales"][0]
        assert axes["datasets"][0]["coordinateTransformations"][0]["scale"] == [1.0] * 3
        return
    assert cli(tmp_path / "odd.zarr", "--out", tmp_path / "out") == EXIT_OK
    labels = zarr.open_array(str(tmp_path / "out" / "odd_labels.zarr"), mode="r")[:]
    np.testing.assert_array_equal(labels, segment(data, K).labels)


def test_into_image_keeps_the_labels_already_there(tmp_path):
    path = tmp_path / "cells.zarr"
    write_ome_zarr(path, two_channels((2, 16, 16), 17), "0.5")
    labels = zarr.open_group(str(path / "labels"), mode="w", zarr_format=3)
    labels.attrs["ome"] = {"version": "0.5", "labels": ["nuclei"]}
    nuclei = labels.create_array("nuclei/0", shape=(2, 16, 16), dtype="u1", chunks=(2, 16, 16))
    nuclei[:] = 1
    before = {k: v for k, v in tree_hashes(path).items() if k != "labels/zarr.json"}
    assert cli(path, "--out", tmp_path / "out", "--into-image") == EXIT_OK
    after = tree_hashes(path)
    assert {k: after[k] for k in before} == before  # the image and the nuclei, untouched
    assert ngff_attrs(path / "labels")["labels"] == ["nuclei", "kmeans"]
    image_label_model(path / "labels" / "kmeans", "0.5")
