"""Scribbled seeds (napari_kmeans.seeds): seeded and pinned fits, confidence, validation."""

from __future__ import annotations

import numpy as np
import pytest

from napari_kmeans import KMeansModel, Params, fit, segment
from napari_kmeans.segment import fit_prepared, prepare_image


def _plateaus(values=(0, 100, 200), side=30, noise=3, seed=0):
    """A gray uint8 image of vertical bands, one per value, with noise; and its truth (1..n)."""
    rng = np.random.default_rng(seed)
    n = len(values)
    truth = np.repeat(np.arange(1, n + 1), side)[None, :].repeat(side, axis=0)
    image = np.array(values, float)[truth - 1] + rng.normal(0, noise, truth.shape)
    return image.clip(0, 255).astype(np.uint8), truth


def _scribble(truth, classes):
    """Seeds: class j+1 on a short line inside the band of truth value ``classes[j]``."""
    seeds = np.zeros(truth.shape, np.uint8)
    for j, c in enumerate(classes, 1):
        rows, cols = np.nonzero(truth == c)
        pick = (rows == 5) & (cols % 3 == 0)
        seeds[rows[pick], cols[pick]] = j
    return seeds


def _rgb_regions(seed=0, side=24):
    """RGB float image of three colour regions of about equal luminance, and its truth."""
    rng = np.random.default_rng(seed)
    truth = np.repeat(np.arange(1, 4), side)[None, :].repeat(side, axis=0)
    colors = np.array([[0.8, 0.2, 0.2], [0.2, 0.5, 0.2], [0.3, 0.3, 0.9]])
    image = colors[truth - 1] + rng.normal(0, 0.02, (*truth.shape, 3))
    return image.astype(np.float32), truth


# -- seeds are followed ---------------------------------------------------------------------------


def test_seeded_ids_follow_the_seeds_not_brightness():
    image, truth = _plateaus()
    seeds = _scribble(truth, [3, 1])  # class 1 on the brightest band, class 2 on the darkest
    r = segment(image, 3, seeds=seeds)
    expected = np.array([0, 2, 3, 1])[truth]  # the free cluster (value 100) gets label 3
    np.testing.assert_array_equal(r.labels, expected)
    assert r.centers[0, 0] == pytest.approx(200, abs=2)
    assert r.centers[1, 0] == pytest.approx(0, abs=2)
    assert r.exact is False  # seeded single-channel data use seeded Lloyd
    np.testing.assert_array_equal(r.labels[seeds > 0], seeds[seeds > 0])


def test_free_clusters_ordered_by_brightness_after_the_seeded_ones():
    image, truth = _plateaus((0, 60, 120, 180, 240))
    seeds = _scribble(truth, [3])
    r = segment(image, 5, seeds=seeds)
    np.testing.assert_array_equal(r.labels, np.array([0, 2, 3, 1, 4, 5])[truth])


def test_seeds_force_a_split_k_means_alone_does_not_make():
    # Two bands of nearly equal value and one far band: k = 2 alone splits off the far band;
    # pinned seeds on the two near bands make them the two classes, the far band joins the
    # nearer one. (Unpinned, Lloyd pulls centre 2 towards the far band and loses the split.)
    image, truth = _plateaus((100, 130, 250), noise=2)
    plain = segment(image, 2)
    assert len(np.unique(plain.labels[truth < 3])) == 1
    r = segment(image, 2, seeds=_scribble(truth, [1, 2]), pin_seeds=True)
    np.testing.assert_array_equal(r.labels[truth == 1], 1)
    np.testing.assert_array_equal(r.labels[truth == 2], 2)


def test_seeded_rgb_known_truth_and_lab():
    image, truth = _rgb_regions()
    seeds = _scribble(truth, [2, 3, 1])
    for space in ("rgb", "lab"):
        r = segment(image, 3, seeds=seeds, color_space=space)
        np.testing.assert_array_equal(r.labels, np.array([0, 3, 1, 2])[truth])


def test_seeded_with_smoothing_recipe():
    image, truth = _plateaus(noise=20)
    seeds = _scribble(truth, [2, 3])
    r = segment(image, 3, seeds=seeds, smoothing=2.0)
    lab = r.labels
    assert (lab[truth == 2] == 1).mean() > 0.95
    assert (lab[truth == 3] == 2).mean() > 0.95
    assert (lab[truth == 1] == 3).mean() > 0.95
    assert r.model.seed_means.shape == (2, r.model.centers.shape[1])
    np.testing.assert_array_equal(r.model.predict(image), r.labels)


@pytest.mark.parametrize("recipe", [{"features": "texture"}, {"spatial_weight": 0.2}])
@pytest.mark.parametrize("pin", [False, True])
def test_seeded_rgb_with_more_features_than_channels(recipe, pin):
    """Seeds on an RGB image with a recipe of more feature channels than its 3 (texture,
    positions): the seed classes give labels 1..m (their regions), each seeded cluster's colour is its pixels'
    mean RGB, or pinned its seeds' (raised a shape mismatch between the feature centres and the
    seeds' RGB colours)."""
    image, truth = _rgb_regions()
    seeds = _scribble(truth, [2, 3, 1])
    r = segment(image, 3, seeds=seeds, pin_seeds=pin, **recipe)
    assert (r.labels[seeds > 0] == seeds[seeds > 0]).mean() > 0.9  # texture blurs the borders
    assert (r.labels == np.array([0, 3, 1, 2])[truth]).mean() > 0.9
    assert r.model.colors.shape == (3, 3)
    for j in range(3):
        mine = (seeds if pin else r.labels) == j + 1
        np.testing.assert_allclose(r.model.colors[j], image[mine].mean(axis=0), atol=1e-4)


def test_masked_seeds_are_ignored():
    image, truth = _plateaus()
    seeds = _scribble(truth, [3, 1])
    mask = np.ones(truth.shape, bool)
    mask[5, :3] = False  # hides some of class 2's seeds (band 1 starts at column 0)
    r = segment(image, 3, seeds=seeds, mask=mask)
    assert r.labels[5, 0] == 0
    np.testing.assert_array_equal(r.labels[mask], np.array([0, 2, 3, 1])[truth][mask])


# -- pinned seeds ---------------------------------------------------------------------------------


def test_pinned_centres_equal_the_seed_means():
    image, truth = _plateaus()
    seeds = _scribble(truth, [3, 1])
    seeds[5, 40] = 1  # a stray scribble of class 1 in the middle band pulls its mean down
    r = segment(image, 3, seeds=seeds, pin_seeds=True)
    for j in (1, 2):
        mean = image[seeds == j].astype(np.float64).mean()
        assert r.centers[j - 1, 0] == pytest.approx(mean, rel=1e-12)
        assert r.model.centers[j - 1, 0] == pytest.approx(mean, rel=1e-12)
        assert r.model.seed_means[j - 1, 0] == pytest.approx(mean, rel=1e-12)
    assert r.model.pinned
    free = segment(image, 3, seeds=seeds)
    assert not free.model.pinned
    assert free.centers[0, 0] != pytest.approx(r.centers[0, 0], rel=1e-6)  # unpinned: moves


def test_pinned_rgb_and_lab_centres_in_input_units():
    image, truth = _rgb_regions()
    seeds = _scribble(truth, [2, 3])
    for space in ("rgb", "lab"):
        r = segment(image, 3, seeds=seeds, pin_seeds=True, color_space=space)
        for j in (1, 2):
            mean = image[seeds == j].astype(np.float64).mean(axis=0)
            np.testing.assert_allclose(r.centers[j - 1], mean, rtol=1e-6)
        np.testing.assert_array_equal(r.labels, np.array([0, 3, 1, 2])[truth])


def test_params_has_pin_seeds():
    assert Params().pin_seeds is False
    assert Params(pin_seeds=True).pin_seeds is True
    with pytest.raises(TypeError, match="pin_seeds"):
        Params(pin_seeds="yes")


# -- stages, fit, model, JSON ---------------------------------------------------------------------


def test_fit_and_fit_prepared_take_seeds():
    image, truth = _plateaus()
    seeds = _scribble(truth, [3, 1])
    model = fit(image, 3, seeds=seeds).model
    np.testing.assert_array_equal(model.predict(image), np.array([0, 2, 3, 1])[truth])
    fitted = fit_prepared(prepare_image(image), Params(n_clusters=3), seeds=seeds)
    labels = fitted.label().labels
    np.testing.assert_array_equal(labels, np.array([0, 2, 3, 1])[truth])


def test_json_round_trip_keeps_seeds_and_labels(tmp_path):
    image, truth = _rgb_regions()
    seeds = _scribble(truth, [2, 3])
    r = segment(image, 3, seeds=seeds, pin_seeds=True)
    path = tmp_path / "m.json"
    r.model.save(path)
    back = KMeansModel.load(path)
    assert back.pinned and r.model.to_dict()["version"] == 3
    np.testing.assert_array_equal(back.seed_means, r.model.seed_means)
    np.testing.assert_array_equal(back.predict(image), r.labels)
    plain = segment(image, 3).model.to_dict()
    assert plain["version"] == 1 and "seed_means" not in plain


# -- validation -----------------------------------------------------------------------------------


def test_seeds_of_the_wrong_shape():
    image, _truth = _plateaus()
    with pytest.raises(ValueError, match=r"seeds have shape \(30, 89\).*\(30, 90\)"):
        segment(image, 3, seeds=np.zeros((30, 89), np.uint8))


def test_more_seed_classes_than_clusters():
    image, truth = _plateaus()
    with pytest.raises(ValueError, match=r"3 seed classes.*n_clusters=2"):
        segment(image, 2, seeds=_scribble(truth, [1, 2, 3]))


def test_seed_class_without_valid_pixel():
    image, truth = _plateaus()
    seeds = _scribble(truth, [1, 2])
    seeds[seeds == 1] = 3  # classes 2 and 3: class 1 has no pixel
    with pytest.raises(ValueError, match="seed class 1 has no"):
        segment(image, 3, seeds=seeds)
    seeds = _scribble(truth, [1, 2])
    mask = seeds != 2
    with pytest.raises(ValueError, match="seed class 2 has no"):
        segment(image, 3, seeds=seeds, mask=mask)


def test_non_integer_and_negative_seeds():
    image, truth = _plateaus()
    with pytest.raises(TypeError, match=r"seeds must be integers.*float64"):
        segment(image, 3, seeds=np.zeros(truth.shape))
    bad = _scribble(truth, [1]).astype(np.int8)
    bad[0, 0] = -1
    with pytest.raises(ValueError, match="negative"):
        segment(image, 3, seeds=bad)


def test_no_seed_at_all_fits_as_without_seeds():
    image, truth = _plateaus()
    a = segment(image, 3, seeds=np.zeros(truth.shape, np.uint8))
    b = segment(image, 3)
    np.testing.assert_array_equal(a.labels, b.labels)


# -- confidence -----------------------------------------------------------------------------------


def test_confidence_margin_scaled():
    image = np.array([[0, 100, 50, 25, 75]], np.uint8)
    model = fit(np.array([0, 100], np.uint8), 2).model
    conf = model.confidence(image)
    assert conf.dtype == np.float32
    # (d2 - d1) / (d2 + d1): 1 at a centre, 0 half-way, 0.5 a quarter of the way
    np.testing.assert_allclose(conf, [[1, 1, 0, 0.5, 0.5]], atol=1e-6)
    mask = np.array([[True, True, False, True, True]])
    assert np.isnan(model.confidence(image, mask=mask)[0, 2])


def test_confidence_with_a_recipe_model_and_rgb():
    image, truth = _rgb_regions()
    r = segment(image, 3, smoothing=1.0)
    conf = r.model.confidence(image)
    assert conf.shape == truth.shape and np.all((conf >= 0) & (conf <= 1))
    assert np.median(conf) > 0.5
    # confidence is low on the boundaries between regions, where smoothing mixes them
    assert conf[:, 23:25].mean() < conf[:, 5:15].mean()


# -- dask -----------------------------------------------------------------------------------------


def test_dask_seeds_agree_with_in_memory():
    da = pytest.importorskip("dask.array")
    from napari_kmeans.lazy import confidence_lazy, segment_lazy

    image, truth = _rgb_regions()
    image = (image * 255).clip(0, 255).astype(np.uint8)
    seeds = _scribble(truth, [2, 3])
    ref = segment(image, 3, seeds=seeds, pin_seeds=True)
    got = segment_lazy(
        da.from_array(image, chunks=(7, 11, 3)), 3, seeds=da.from_array(seeds, chunks=5),
        pin_seeds=True,
    )  # fmt: skip
    np.testing.assert_array_equal(got.labels.compute(), ref.labels)
    np.testing.assert_allclose(got.centers, ref.centers)
    np.testing.assert_allclose(got.model.seed_means, ref.model.seed_means)
    conf = confidence_lazy(ref.model, da.from_array(image, chunks=(7, 11, 3)))
    np.testing.assert_allclose(conf.compute(), ref.model.confidence(image))
    model = fit(da.from_array(image, chunks=(7, 11, 3)), 3, seeds=seeds).model
    np.testing.assert_array_equal(model.predict(image), segment(image, 3, seeds=seeds).labels)


def test_dask_seed_errors():
    da = pytest.importorskip("dask.array")
    from napari_kmeans.lazy import segment_lazy

    image, truth = _plateaus()
    lazy_image = da.from_array(image, chunks=10)
    bad = _scribble(truth, [1]).astype(np.int8)
    bad[20, 70] = -2
    with pytest.raises(ValueError, match="negative"):
        segment_lazy(lazy_image, 3, seeds=da.from_array(bad, chunks=7))
    with pytest.raises(ValueError, match="6 seed classes"):
        segment_lazy(lazy_image, 3, seeds=da.from_array(_scribble(truth, [1, 2, 3]) * 2, 7))
    with pytest.raises(ValueError, match="seeds have shape"):
        segment_lazy(lazy_image, 3, seeds=da.zeros((30, 30), dtype=np.uint8))
    with pytest.raises(TypeError, match="seeds must be integers"):
        segment_lazy(lazy_image, 3, seeds=da.zeros(truth.shape))


def test_fewer_values_than_free_clusters_warns():
    image = np.array([[0, 0, 100, 100, 200, 200]], np.uint8)
    seeds = np.array([[0, 0, 0, 0, 1, 0]], np.uint8)
    with pytest.warns(UserWarning, match="unseeded clusters found no pixel"):
        r = segment(image, 5, seeds=seeds)
    np.testing.assert_array_equal(r.labels, [[2, 2, 3, 3, 1, 1]])
