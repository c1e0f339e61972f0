"""Engine bugs an earlier hostile-input campaign reported and left: each test failed before its fix."""

from __future__ import annotations

import numpy as np
import pytest

from napari_kmeans import KMeansModel, Params, fit, fit_many, segment, segment_frames
from napari_kmeans.edit import split

BANDS = np.repeat(np.array([[0, 10, 100, 110, 200, 210]], np.uint8), 4, axis=0)


# -- 1. KMeansModel.save never replaces a file unless asked ------------------------------------


def test_save_refuses_to_replace_an_existing_file(tmp_path):
    path = tmp_path / "m_model.json"
    path.write_text("my notes\n", encoding="utf-8")
    model = segment(BANDS, 3).model
    with pytest.raises(FileExistsError, match=r"m_model\.json.*overwrite=True"):
        model.save(path)
    assert path.read_text(encoding="utf-8") == "my notes\n"  # untouched
    model.save(path, overwrite=True)  # asked: replaced
    assert KMeansModel.load(path).to_dict() == model.to_dict()


def test_save_writes_a_new_file_without_being_asked(tmp_path):
    model = segment(BANDS, 3).model
    model.save(tmp_path / "new.json")
    assert KMeansModel.load(tmp_path / "new.json").colors.ravel().tolist() == [5.0, 105.0, 205.0]


# -- 2. pin_seeds without seeds is refused, on every entry point ---------------------------------

PIN = r"pin_seeds=True .* but {}.*pass seeds=.* or drop pin_seeds"


def _lazy(image):
    import dask.array as da

    return da.from_array(image, chunks=(2, 3))


@pytest.mark.parametrize(
    "run",
    [
        lambda: segment(BANDS, 3, pin_seeds=True),
        lambda: fit(BANDS, 3, pin_seeds=True),
        lambda: segment(_lazy(BANDS), 3, pin_seeds=True),
        lambda: fit(_lazy(BANDS), 3, pin_seeds=True),
        lambda: segment(BANDS, 3, pin_seeds=True, smoothing=1.0),
        lambda: segment(_lazy(BANDS), 3, pin_seeds=True, smoothing=1.0),
        lambda: fit_many([BANDS, BANDS], params=Params(n_clusters=3, pin_seeds=True)),
        lambda: segment_frames(np.stack([BANDS, BANDS]), 3, pin_seeds=True),
    ],
    ids=["segment", "fit", "segment-dask", "fit-dask", "recipe", "recipe-dask", "fit_many",
         "segment_frames"],
)  # fmt: skip
def test_pin_seeds_without_seeds_is_refused(run):
    with pytest.raises(ValueError, match=PIN.format(r"no seeds were given \(seeds=None\)")):
        run()


@pytest.mark.parametrize("lazy", [False, True])
def test_pin_seeds_with_seeds_that_mark_no_pixel_is_refused(lazy):
    image = _lazy(BANDS) if lazy else BANDS
    with pytest.raises(ValueError, match=PIN.format(r"the seeds mark no pixel \(all 0\)")):
        segment(image, 3, seeds=np.zeros(BANDS.shape, np.uint8), pin_seeds=True)
    with pytest.raises(ValueError, match=PIN.format(r"the seeds mark no pixel \(all 0\)")):
        segment_frames(
            np.stack([BANDS, BANDS]), 3, seeds=np.zeros((2, *BANDS.shape), np.uint8),
            pin_seeds=True,
        )  # fmt: skip


def test_segment_frames_pins_the_seeded_frame_and_fits_the_others_freely():
    movie = np.stack([BANDS, BANDS])
    seeds = np.zeros(movie.shape, np.uint8)
    seeds[1, :, 0] = 1  # value 0 only: pinned centre 0, not 5
    r = segment_frames(movie, 3, seeds=seeds, pin_seeds=True)
    assert r.frames[1].model.pinned and r.frames[1].model.colors.ravel().tolist() == [
        0.0, 105.0, 205.0,
    ]  # fmt: skip
    assert not r.frames[0].model.pinned  # no scribble on frame 0: fitted unseeded, then matched
    assert r.frames[0].model.colors.ravel().tolist() == [5.0, 105.0, 205.0]
    np.testing.assert_array_equal(r.labels[0], r.labels[1])
    # pinning is the same as without segment_frames on the seeded frame
    one = segment(BANDS, 3, seeds=seeds[1], pin_seeds=True)
    np.testing.assert_array_equal(r.labels[1], one.labels)


# -- 3. an image with no valid pixel: the dask path refuses it as memory does --------------------

NO_PIXEL = r"no pixel is left to cluster: all 24 pixels are masked"


@pytest.mark.parametrize("recipe", [{}, {"smoothing": 1.0}, {"min_size": 2}])
def test_lazy_outputs_refuse_an_in_memory_mask_that_leaves_no_pixel(recipe):
    from napari_kmeans.lazy import confidence_lazy, predict_lazy

    model = segment(BANDS, 3, **recipe).model
    nothing = np.zeros(BANDS.shape, bool)
    for run in (model.predict, model.confidence):  # in memory: refused
        with pytest.raises(ValueError, match=NO_PIXEL):
            run(BANDS, mask=nothing)
    for run in (predict_lazy, confidence_lazy):  # were all 0 / all NaN, silently
        with pytest.raises(ValueError, match=NO_PIXEL):
            run(model, _lazy(BANDS), mask=nothing)
    with pytest.raises(ValueError, match=NO_PIXEL):
        segment(_lazy(BANDS), 3, mask=nothing, **recipe)
    # one pixel left: labelled there only, as in memory
    one = nothing.copy()
    one[0, 5] = True
    labels = predict_lazy(model, _lazy(BANDS), mask=one).compute()
    np.testing.assert_array_equal(labels, model.predict(BANDS, mask=one))
    assert labels[0, 5] == 3 and np.count_nonzero(labels) == 1


def test_lazy_blocks_without_a_valid_pixel_are_0_and_nan_when_known_only_at_compute():
    """A dask mask, NaN or transparency are known block by block only: telling that the whole
    image has no valid pixel would read all of it before any block (napari draws a few). Such
    blocks are 0 (labels) and NaN (confidence), as documented in predict_lazy."""
    import dask.array as da

    from napari_kmeans.lazy import confidence_lazy, predict_lazy

    model = segment(BANDS.astype(np.float32), 3).model
    image = BANDS.astype(np.float32)
    image[:, :3] = np.nan  # the left blocks have no valid pixel
    labels = predict_lazy(model, _lazy(image)).compute()
    assert labels[:, :3].tolist() == [[0, 0, 0]] * 4
    np.testing.assert_array_equal(labels[:, 3:], model.predict(BANDS[:, 3:].astype(np.float32)))
    conf = confidence_lazy(model, _lazy(image), mask=da.zeros(BANDS.shape, dtype=bool, chunks=2))
    assert np.isnan(conf.compute()).all()


# -- 4. split cleans the split cluster's pixels as predict does ------------------------------------


def _two_parts_with_specks():
    """A dark left half and a bright right half whose top (100) and bottom (140) are the parts a
    split finds; single-pixel specks of each part inside the other, which a clean-up removes."""
    image = np.zeros((12, 12), np.uint8)
    image[:, 6:] = 100
    image[6:, 6:] = 140
    image[2, 8] = image[3, 10] = 140
    image[8, 8] = 100
    truth = np.ones((12, 12), np.uint8)
    truth[:, 6:] = 2
    truth[6:, 6:] = 3
    return image, truth


@pytest.mark.parametrize(
    "cleanup", [{"min_size": 4}, {"majority": 1}, {"min_size": 4, "smoothing": 0.5}]
)
@pytest.mark.parametrize("keep_ids", [False, True])
def test_split_cleans_the_split_pixels_like_predict(cleanup, keep_ids):
    image, truth = _two_parts_with_specks()
    r = segment(image, 2, **cleanup)
    model, labels = split(r.model, image, r.labels, 2, keep_ids=keep_ids)
    np.testing.assert_array_equal(labels, truth)  # the specks were left as sub-clusters
    np.testing.assert_array_equal(model.predict(image), labels)


# -- 5. a recipe's colours are the same to the last bit in memory and on dask ---------------------


@pytest.mark.parametrize("chunks", [16, (64, 5), (7, 64)])
def test_recipe_colours_and_recolored_equal_in_memory_and_on_dask(chunks):
    import dask.array as da

    image = np.random.default_rng(0).random((64, 64)) * 200  # float64: sums depend on order
    want = segment(image, 3, smoothing=1.0)
    got = segment(da.from_array(image, chunks=chunks), 3, smoothing=1.0)
    np.testing.assert_array_equal(got.labels.compute(), want.labels)
    np.testing.assert_array_equal(got.model.colors, want.model.colors)  # 1 ulp apart before
    np.testing.assert_array_equal(got.recolored.compute(), want.recolored)


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int64])
def test_cluster_sums_are_the_exact_sums_rounded_once_whatever_the_order(dtype):
    import math

    from napari_kmeans.features import cluster_sums

    rng = np.random.default_rng(1)
    n, k = 200_000, 3  # several steps of cluster_sums
    if dtype == np.int64:
        values = rng.integers(-(2**62), 2**62, (n, 2))
    else:
        scale = 10.0 ** rng.integers(-30 if dtype == np.float64 else -12, 12, (n, 2))
        values = (rng.normal(0, 1, (n, 2)) * scale).astype(dtype)
    values[::7] = 0.0
    labels = rng.integers(0, k + 1, n)
    counts, sums = cluster_sums(labels, values, k)
    for j in range(1, k + 1):
        assert counts[j - 1] == np.count_nonzero(labels == j)
        for c in range(2):
            assert sums[j - 1, c] == math.fsum(values[labels == j, c].tolist())
    order = rng.permutation(n)
    again = cluster_sums(labels[order], values[order], k)
    np.testing.assert_array_equal(again[1], sums)
    if dtype != np.int64:  # invalid pixels (label 0) may be NaN or inf: they do not count
        spoilt = values.copy()
        spoilt[labels == 0] = np.nan
        spoilt[np.flatnonzero(labels == 0)[::2]] = -np.inf
        np.testing.assert_array_equal(cluster_sums(labels, spoilt, k)[1], sums)
