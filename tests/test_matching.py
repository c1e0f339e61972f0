"""Label IDs that stay put: match_to, matching.match_model, per-frame timelapse fits."""

from __future__ import annotations

import numpy as np
import pytest

from napari_kmeans import KMeansModel, fit, segment
from napari_kmeans.edit import merge, split
from napari_kmeans.matching import match_model
from napari_kmeans.segment import segment_frames


def _bands(values, side=20, noise=2.0, seed=0):
    rng = np.random.default_rng(seed)
    truth = np.repeat(np.arange(len(values)), side)[None, :].repeat(side, axis=0)
    image = np.array(values, float)[truth] + rng.normal(0, noise, truth.shape)
    return image.clip(0, 255).astype(np.uint8), truth


def _region_ids(labels, truth):
    """The (single) label of each truth region."""
    out = []
    for t in np.unique(truth):
        ids = np.unique(labels[truth == t])
        assert ids.size == 1, f"region {t} has labels {ids}"
        out.append(int(ids[0]))
    return out


def test_match_to_keeps_ids_when_k_grows():
    image, truth = _bands((250, 0, 100, 125))
    r3 = segment(image, 3)
    ids3 = _region_ids(r3.labels, truth)
    assert ids3[2] == ids3[3]  # k = 3 joins the two near bands
    r4 = segment(image, 4, match_to=r3)
    ids4 = _region_ids(r4.labels, truth)
    assert ids4[0] == ids3[0] and ids4[1] == ids3[1]  # the far bands keep their IDs
    assert ids3[2] in (ids4[2], ids4[3])  # one near band keeps the joined ID
    assert sorted(ids4) == [1, 2, 3, 4]  # the other gets the next free ID
    np.testing.assert_array_equal(r4.model.predict(image), r4.labels)
    # and back to k = 3: the IDs of r4 stay, one of them is absent
    back = segment(image, 3, match_to=r4)
    ids = _region_ids(back.labels, truth)
    assert ids[0] == ids4[0] and ids[1] == ids4[1]
    assert set(ids) <= set(ids4) and len(set(ids)) == 3
    assert back.model.n_clusters == max(ids)  # labels up to the largest ID


def test_match_to_keeps_ids_under_a_change_of_seed():
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 5, (40, 40))
    colors = rng.uniform(0, 1, (5, 3))
    image = (colors[truth] + rng.normal(0, 0.03, (40, 40, 3))).astype(np.float32)
    a = segment(image, 5, seed=1)
    b = segment(image, 5, seed=7, match_to=a.model)
    np.testing.assert_array_equal(b.labels, a.labels)


def test_match_model_unmatched_get_next_free_ids_and_missing_are_absent():
    ref = fit(np.array([0, 100, 200], np.uint8), 3).model  # labels 1, 2, 3
    new = fit(np.array([0, 98, 150, 202, 255], np.uint8), 5).model
    matched = match_model(new, ref)
    got = matched.predict(np.array([0, 98, 150, 202, 255], np.uint8))
    np.testing.assert_array_equal(got[[0, 1, 3]], [1, 2, 3])
    assert sorted(got[[2, 4]]) == [4, 5]
    few = match_model(fit(np.array([0, 200], np.uint8), 2).model, ref)
    np.testing.assert_array_equal(few.predict(np.array([0, 200], np.uint8)), [1, 3])
    assert few.n_clusters == 3 and list(few.present_labels) == [1, 3]


def test_non_contiguous_ids_everywhere():
    image, _truth = _bands((0, 100, 200))
    ref = segment(image, 3)
    image2 = image[:, np.r_[0:20, 40:60]]
    r = segment(image2, 2, match_to=ref)
    np.testing.assert_array_equal(np.unique(r.labels), [1, 3])
    assert r.model.n_clusters == 3 and r.labels.dtype == np.uint8
    assert r.counts.tolist() == [400, 0, 400]
    np.testing.assert_array_equal(r.model.predict(image2), r.labels)
    back = KMeansModel.from_json(r.model.to_json())
    np.testing.assert_array_equal(back.predict(image2), r.labels)
    rec = r.model.recolor(image2, r.labels)
    assert abs(int(rec[0, 0]) - 0) < 5 and abs(int(rec[0, -1]) - 200) < 5
    conf = r.model.confidence(image2)
    assert np.all(conf > 0.9)
    merged, labels = merge(r.model, r.labels, [1, 3])
    np.testing.assert_array_equal(merged.predict(image2), labels)
    model, labels = split(r.model, image2, r.labels, 3, 2)
    np.testing.assert_array_equal(model.predict(image2), labels)


def test_non_contiguous_ids_lazy():
    da = pytest.importorskip("dask.array")
    from napari_kmeans.lazy import predict_lazy, segment_lazy

    image, _truth = _bands((0, 100, 200))
    ref = segment(image, 3)
    image2 = image[:, np.r_[0:20, 40:60]]
    r = segment(image2, 2, match_to=ref)
    lazy = segment_lazy(da.from_array(image2, chunks=7), 2, match_to=ref)
    np.testing.assert_array_equal(lazy.labels.compute(), r.labels)
    np.testing.assert_array_equal(
        predict_lazy(r.model, da.from_array(image2, chunks=9)).compute(), r.labels
    )


def test_seeded_classes_keep_their_ids_with_match_to():
    image, truth = _bands((0, 100, 200, 250))
    ref = segment(image, 4)
    assert _region_ids(ref.labels, truth) == [1, 2, 3, 4]
    seeds = np.zeros(truth.shape, np.uint8)
    seeds[3, truth[3] == 0] = 1  # class 1 on the dark band
    r = segment(image, 4, seeds=seeds, match_to=ref)
    # the seed class keeps its ID, the free clusters are matched to the reference's other IDs
    assert _region_ids(r.labels, truth) == [1, 2, 3, 4]
    seeds[seeds > 0] = 0
    seeds[3, truth[3] == 3] = 1  # class 1 on the bright band: ID 1 is the seed's
    r = segment(image, 4, seeds=seeds, match_to=ref)
    ids = _region_ids(r.labels, truth)
    assert ids[3] == 1 and sorted(ids[:3]) == [2, 3, 4]


def test_match_model_refuses_other_layouts():
    gray = fit(np.array([0, 100], np.uint8), 2).model
    rgb = fit(np.zeros((4, 4, 3), np.uint8) + np.arange(4)[:, None, None] * 60, 2).model
    with pytest.raises(ValueError, match="channel"):
        match_model(gray, rgb)
    with pytest.raises(TypeError, match="match_to"):
        segment(np.array([0, 100], np.uint8), 2, match_to="x")


def _drifting_timelapse(n_frames=6, side=16, seed=0):
    """RGB frames of three regions: a red one brightening past a constant green one (so the
    brightness order of the classes swaps), and a dark blue one."""
    rng = np.random.default_rng(seed)
    truth = np.repeat(np.arange(3), side)[None, :].repeat(side, axis=0)
    frames = []
    for t in range(n_frames):
        red = 60 + 38 * t
        colors = np.array([[red, 0, 0], [0, 60, 0], [0, 0, 80]], float)
        frames.append(colors[truth] + rng.normal(0, 3, (*truth.shape, 3)))
    return np.stack(frames).clip(0, 255).astype(np.uint8), truth


def test_per_frame_timelapse_ids_consistent():
    movie, truth = _drifting_timelapse()
    res = segment_frames(movie, 3, rgb=True)
    assert res.labels.shape == movie.shape[:3]
    first = _region_ids(res.labels[0], truth)
    for t in range(movie.shape[0]):
        assert _region_ids(res.labels[t], truth) == first
        np.testing.assert_array_equal(res.frames[t].labels, res.labels[t])
    unmatched = segment_frames(movie, 3, rgb=True, match=False)
    assert any(_region_ids(f, truth) != first for f in unmatched.labels)  # brightness swaps


def test_per_frame_on_another_time_axis():
    movie, _truth = _drifting_timelapse(4)
    moved = np.moveaxis(movie, 0, 2)  # (Y, X, T, C)
    res = segment_frames(moved, 3, time_axis=2, channel_axis=-1, rgb=True)
    assert res.labels.shape == moved.shape[:3]
    ref = segment_frames(movie, 3, rgb=True)
    np.testing.assert_array_equal(np.moveaxis(res.labels, 2, 0), ref.labels)
    assert res.recolored.shape == moved.shape


def test_match_to_with_a_feature_recipe():
    image, truth = _bands((250, 0, 100, 125))
    r3 = segment(image, 3, smoothing=1.0)
    r4 = segment(image, 4, smoothing=1.0, match_to=r3)
    cols = np.arange(4) * 20 + 10  # the middle of each band (smoothing mixes their edges)
    ids3 = _region_ids(r3.labels[:, cols], truth[:, cols])
    ids4 = _region_ids(r4.labels[:, cols], truth[:, cols])
    assert ids4[0] == ids3[0] and ids4[1] == ids3[1]
    np.testing.assert_array_equal(r4.model.predict(image), r4.labels)
    assert r4.counts.sum() == image.size


def test_segment_frames_gives_label_zero_to_a_frame_the_mask_leaves_empty():
    from napari_kmeans import segment_frames

    rng = np.random.default_rng(0)
    movie = rng.integers(0, 255, (3, 20, 30), dtype=np.uint8)
    mask = np.zeros(movie.shape, bool)
    mask[1, 2:18, 3:27] = True  # frame 1 only
    result = segment_frames(movie, 3, mask=mask)
    assert not result.labels[0].any() and not result.labels[2].any()
    np.testing.assert_array_equal(result.labels[1], segment(movie[1], 3, mask=mask[1]).labels)
    np.testing.assert_array_equal(result.recolored[0], movie[0])  # left as it was
    with pytest.raises(ValueError, match="no pixel in any frame"):
        segment_frames(movie, 3, mask=np.zeros(movie.shape, bool))
