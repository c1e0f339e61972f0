"""The command line's --each-frame, --time-axis, --seeds and --pin-seeds (issue 13)."""

from __future__ import annotations

import numpy as np
import pytest

tifffile = pytest.importorskip("tifffile")
zarr = pytest.importorskip("zarr")
pytest.importorskip("tqdm")

from napari_kmeans import KMeansModel, segment  # noqa: E402
from napari_kmeans.cli import main  # noqa: E402
from napari_kmeans.segment import segment_frames  # noqa: E402


def _movie():
    """Gray frames of three bands, the middle one brightening."""
    rng = np.random.default_rng(0)
    truth = np.repeat(np.arange(3), 10)[None, :].repeat(12, axis=0)
    frames = []
    for t in range(5):
        values = np.array([10.0, 60 + 15 * t, 180])
        frames.append(values[truth] + rng.normal(0, 2, truth.shape))
    return np.stack(frames).clip(0, 255).astype(np.uint8), truth


def test_each_frame_writes_matched_labels(tmp_path):
    movie, truth = _movie()
    tifffile.imwrite(tmp_path / "movie.tif", movie)
    out = tmp_path / "out"
    assert main(["segment", str(tmp_path / "movie.tif"), "-k", "3", "--each-frame",
                 "--out", str(out), "-q"]) == 0  # fmt: skip
    labels = tifffile.imread(out / "movie_labels.tif")
    np.testing.assert_array_equal(labels, segment_frames(movie, 3).labels)
    first = [int(np.unique(labels[0][truth == c])[0]) for c in range(3)]
    for t in range(movie.shape[0]):
        assert [int(np.unique(labels[t][truth == c])[0]) for c in range(3)] == first
    assert KMeansModel.load(out / "movie_model.json").n_clusters == 3


def test_each_frame_of_a_zarr_on_another_axis(tmp_path):
    movie, _ = _movie()
    moved = np.ascontiguousarray(np.moveaxis(movie, 0, 2))  # (Y, X, T)
    zarr.create_array(tmp_path / "m.zarr", shape=moved.shape, chunks=(6, 10, 5), dtype="u1")[:] = (
        moved
    )
    out = tmp_path / "out"
    assert main(["segment", str(tmp_path / "m.zarr"), "-k", "3", "--each-frame",
                 "--time-axis", "2", "--out", str(out), "-q"]) == 0  # fmt: skip
    labels = zarr.open_array(out / "m_labels.zarr", mode="r")[:]
    np.testing.assert_array_equal(labels, np.moveaxis(segment_frames(movie, 3).labels, 0, 2))


def test_seeds_and_pin_seeds(tmp_path):
    movie, truth = _movie()
    image = movie[2]
    seeds = np.zeros(image.shape, np.uint8)
    seeds[4, truth[4] == 2] = 1
    tifffile.imwrite(tmp_path / "img.tif", image)
    tifffile.imwrite(tmp_path / "seeds.tif", seeds)
    out = tmp_path / "out"
    assert main(["segment", str(tmp_path / "img.tif"), "-k", "3", "--seeds",
                 str(tmp_path / "seeds.tif"), "--pin-seeds", "--out", str(out), "-q"]) == 0  # fmt: skip
    labels = tifffile.imread(out / "img_labels.tif")
    np.testing.assert_array_equal(labels, segment(image, 3, seeds=seeds, pin_seeds=True).labels)
    assert np.all(labels[truth == 2] == 1)
    model = KMeansModel.load(out / "img_model.json")
    assert model.pinned and model.colors[0, 0] == pytest.approx(image[seeds == 1].mean())


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--pin-seeds"], "--pin-seeds pins"),
        (["--time-axis", "1"], "--time-axis goes with --each-frame"),
        (["--each-frame", "--fit-on", "all"], "--each-frame fits every frame"),
    ],
)
def test_bad_combinations_exit_2(tmp_path, capsys, extra, message):
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((4, 4), np.uint8))
    with pytest.raises(SystemExit) as err:
        main(["segment", str(tmp_path / "a.tif"), "--out", str(tmp_path / "o"), *extra])
    assert err.value.code == 2 and message in capsys.readouterr().err


def test_unreadable_seeds_exit_4(tmp_path, capsys):
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((4, 4), np.uint8))
    code = main(["segment", str(tmp_path / "a.tif"), "--out", str(tmp_path / "o"),
                 "--seeds", str(tmp_path / "missing.tif"), "-q"])  # fmt: skip
    assert code == 4 and "--seeds" in capsys.readouterr().err
