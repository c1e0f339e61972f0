"""Hostile inputs to the engine's public functions: results that were silently wrong, errors
that did not say what was found or how to fix it."""

from __future__ import annotations

import numpy as np
import pytest

from napari_kmeans import Params, fit, fit_many, prepare_image, segment, segment_frames
from napari_kmeans.choose_k import elbow, inertia_curve
from napari_kmeans.edit import instances, label_stats, recount, split
from napari_kmeans.segment import fit_prepared

BANDS = np.repeat(np.array([[0, 10, 100, 110, 200, 210]], np.uint8), 4, axis=0)


def test_split_refuses_an_image_of_another_dtype_than_the_model():
    r = segment(BANDS, 3)
    wide = BANDS.astype(np.uint16) * 300  # the same picture in 16-bit units
    with pytest.raises(ValueError, match=r"uint8.*uint16"):
        split(r.model, wide, r.labels, 3)
    # the model's own dtype still splits, into the band's two values
    model, labels = split(r.model, BANDS, r.labels, 3)
    assert model.colors.ravel().tolist() == [5.0, 105.0, 200.0, 210.0]
    assert np.array_equal(labels[0], [1, 1, 2, 2, 3, 4])


def test_match_to_a_model_of_another_integer_dtype_is_refused():
    earlier = fit(BANDS[:, ::2], 3).model  # 0, 100, 200: IDs 1, 2, 3 dark to bright
    wide = BANDS.astype(np.uint16) * 257  # raw 16-bit values are not comparable with 8-bit ones
    with pytest.raises(ValueError, match=r"uint16.*uint8.*lab"):
        segment(wide, 3, match_to=earlier)
    floats = BANDS / 255.0
    with pytest.raises(ValueError, match=r"float64.*uint8"):
        segment(floats, 3, match_to=earlier)
    # float32 and float64 compare as raw values: matched, dark to dark
    f64 = fit(floats, 3).model
    r = segment(floats.astype(np.float32), 3, match_to=f64)
    assert np.array_equal(r.labels[0], [1, 1, 2, 2, 3, 3])


def test_inertia_curve_takes_params_alone():
    image = np.repeat(np.array([0, 10, 100, 110, 200, 210], np.uint8), 10)
    ks, inertias = inertia_curve(image, 4, params=Params())
    assert ks.tolist() == [2, 3, 4]
    assert inertias.tolist() == [101500.0, 1500.0, 1000.0]
    # its own n_init default (2) still yields to params, and a clash is still refused
    rgb = np.random.default_rng(0).integers(0, 255, (8, 8, 3)).astype(np.uint8)
    with_params = inertia_curve(rgb, 3, params=Params(n_init=3))[1]
    assert np.array_equal(with_params, inertia_curve(rgb, 3, n_init=3)[1])
    with pytest.raises(TypeError, match="n_init"):
        inertia_curve(rgb, 3, n_init=5, params=Params(n_init=3))


def test_fit_many_refuses_a_mask_count_other_than_the_image_count():
    a = np.array([[10, 10, 120, 120, 240, 240]], np.uint8)
    b = a + 3
    inside = np.ones(a.shape, bool)
    with pytest.raises(ValueError, match=r"1 mask.*image 2"):
        fit_many([a, b], 3, masks=[inside])  # b was fitted unmasked, silently
    with pytest.raises(ValueError, match=r"1 mask.*image 2"):
        fit_many([a, b], masks=[inside], params=Params(n_clusters=3, smoothing=1.0))
    # one mask (or None) per image: b's bright pixels left out of the fit
    bright = b > 200
    model = fit_many([a, b], 3, masks=[None, ~bright]).model
    assert model.colors.ravel().tolist() == [11.5, 121.5, 240.0]


MOVIE = np.stack([BANDS, BANDS + 5, BANDS + 10])  # 3 frames of 4 x 6


def test_segment_frames_says_what_is_wrong_with_the_timelapse():
    with pytest.raises(ValueError, match=r"(empty|no frames).*\(0, 4, 6\)"):
        segment_frames(MOVIE[:0], 3)  # was: "the mask leaves no pixel in any frame"
    with pytest.raises(ValueError, match=r"spatial axis.*\(6,\)"):
        segment_frames(BANDS[0], 2)  # was: "image is a scalar"
    as_list = segment_frames(MOVIE.tolist(), 3)  # was: AttributeError
    assert np.array_equal(as_list.labels[:, 0], [[1, 1, 2, 2, 3, 3]] * 3)


def test_segment_frames_refuses_a_channel_axis_out_of_range():
    movie = np.stack([MOVIE, MOVIE[:, ::-1]], axis=-1)  # 3 frames of 4 x 6 x 2 channels
    assert segment_frames(movie, 3, channel_axis=-1).labels.shape == (3, 4, 6)
    for axis in (4, 7, -5):  # 7 and -5 were read as axis 3, silently
        with pytest.raises(ValueError, match=rf"channel_axis.*{axis}"):
            segment_frames(movie, 3, channel_axis=axis)
    with pytest.raises(TypeError, match=r"channel_axis.*True"):
        segment_frames(movie, 3, channel_axis=True)  # was axis 1


def test_segment_frames_refuses_a_mask_or_seeds_of_another_number_of_frames():
    five = np.ones((5, 4, 6), bool)  # 5 frames for a 3-frame movie: two were ignored
    with pytest.raises(ValueError, match=r"mask.*\(5, 4, 6\).*\(3, 4, 6\)"):
        segment_frames(MOVIE, 3, mask=five)
    with pytest.raises(ValueError, match=r"seeds.*\(5, 4, 6\).*\(3, 4, 6\)"):
        segment_frames(MOVIE, 3, seeds=five.astype(np.uint8))
    # the timelapse's shape, or one frame's, is taken
    inside = np.ones((3, 4, 6), bool)
    inside[1] = False
    r = segment_frames(MOVIE, 3, mask=inside)
    assert np.array_equal(r.labels[1], np.zeros((4, 6)))
    assert np.array_equal(r.labels[2, 0], [1, 1, 2, 2, 3, 3])


def test_elbow_refuses_ks_out_of_order_and_non_finite_inertias():
    assert elbow([2, 3, 4], [10.0, 2.0, 1.0]) == 3
    with pytest.raises(ValueError, match=r"increasing.*\[4, 2, 3\]"):
        elbow([4, 2, 3], [1.0, 10.0, 2.0])  # the same curve shuffled gave 2
    with pytest.raises(ValueError, match=r"increasing.*\[2, 2, 3\]"):
        elbow([2, 2, 3], [10.0, 10.0, 2.0])
    with pytest.raises(ValueError, match=r"finite.*nan"):
        elbow([2, 3, 4], [10.0, np.nan, 1.0])  # gave 3
    with pytest.raises(ValueError, match=r"finite.*inf"):
        elbow([2, 3, 4], [np.inf, 2.0, 1.0])


def test_instances_errors_name_what_is_wrong():
    labels = np.array([[1, 0, 1], [2, 2, 0]])
    with pytest.raises(ValueError, match=r"clusters.*0.*background") as err:
        instances(labels, [0, 1])
    assert "inf" not in str(err.value) and "model" not in str(err.value)
    huge = np.array([[2**64 - 1, 0, 2**64 - 1]], np.uint64)
    with pytest.raises(ValueError, match=r"18446744073709551615.*relabel_sequential"):
        instances(huge)  # was OverflowError: Python int too large to convert to C long
    inst, cluster_of = instances(np.array([[2**62, 0, 2**62]], np.uint64))
    assert inst.tolist() == [[1, 0, 2]] and cluster_of.tolist() == [2**62, 2**62]


def test_seeds_with_a_huge_class_number_are_told_to_renumber_not_to_raise_k():
    seeds = np.zeros(BANDS.shape, np.int64)
    seeds[0, 0], seeds[0, 5] = 1, 2**40  # two classes, numbered with a gap
    with pytest.raises(ValueError, match="relabel_sequential") as err:
        segment(BANDS, 3, seeds=seeds)
    assert "at least 1099511627776" not in str(err.value)  # n_clusters stops at 1000
    seeds[0, 5] = 2
    assert segment(BANDS, 3, seeds=seeds).labels[0].tolist() == [1, 1, 3, 3, 2, 2]


def _three_groups(channels, seed=1):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 3, (10, 10))
    means = np.array([[0.0, 0, 0], [5, 0, 5], [0, 10, 10]])[:, :channels]
    return means[truth] + rng.normal(0, 1, (10, 10, channels))


@pytest.mark.parametrize("channels", [1, 3])
def test_values_too_small_for_squared_distances_are_refused_with_the_fix(channels):
    image = _three_groups(channels)
    kw = {"channel_axis": -1} if channels > 1 else {}
    image = image if channels > 1 else image[..., 0]
    labels = segment(image, 3, **kw).labels
    assert np.array_equal(segment(image * 1e-90, 3, **kw).labels, labels)  # a common scale
    with pytest.raises(ValueError, match=r"span only.*underflow.*image \* 1e\+\d+"):
        segment(image * 1e-200, 3, **kw)  # was clustered on squares that underflow to 0
    assert np.array_equal(segment(image * 1e-200 * 1e200, 3, **kw).labels, labels)
    one_value = np.full((4, 4), 1e-200)  # no spread at all: one cluster, nothing to resolve
    with pytest.warns(UserWarning, match="distinct"):
        assert segment(one_value, 2).labels.tolist() == np.ones((4, 4), int).tolist()


@pytest.mark.parametrize("recipe", [{"smoothing": 1.0}, {"features": "texture"}])
def test_float64_nan_and_inf_pixels_with_a_recipe_on_dask_equal_memory(recipe):
    import dask.array as da

    from napari_kmeans.lazy import segment_lazy

    image = _three_groups(1)[..., 0]
    image[3, 4], image[7, 7] = np.nan, np.inf
    expected = segment(image, 3, **recipe)
    assert expected.labels[3, 4] == 0 and expected.labels[7, 7] == 0
    # was: "the image's values span nan ..., more than the 1e+100 k-means can handle"
    got = segment_lazy(da.from_array(image, chunks=5), 3, **recipe)
    assert np.array_equal(np.asarray(got.labels), expected.labels)
    assert np.allclose(got.centers, expected.centers)


def test_transparent_pixels_are_filled_alike_in_memory_and_on_dask():
    """The fill of invalid pixels (the mean of the valid ones) was a float32 mean in memory and
    float64 sums on dask: CIELAB features a few 1e-7 apart led the fit elsewhere."""
    import dask.array as da

    from napari_kmeans.lazy import segment_lazy

    rng = np.random.default_rng(2)
    rgb = rng.random((12, 13, 3))
    alpha = rng.random((12, 13, 1)) > 0.2
    image = (np.concatenate([rgb, alpha], -1) * 255).astype(np.uint8)
    expected = segment(image, 3, color_space="lab", smoothing=1.0)
    got = segment_lazy(da.from_array(image, chunks=(5, 4, 4)), 3, color_space="lab", smoothing=1.0)
    assert np.array_equal(np.asarray(got.labels), expected.labels)
    assert np.array_equal(got.centers, expected.centers)


@pytest.mark.parametrize("features", ["texture", [("hessian", 1.0)], [("structure", 1.0)]])
def test_planar_features_of_a_1d_signal_are_refused_naming_the_fix(features):
    signal = np.repeat(np.array([0.0, 5.0, 10.0]), 8)
    # were IndexError, AxisError and scikit-image's "must be a 2-or-3-or-4-or-5-dimensional"
    with pytest.raises(ValueError, match=r"2 or more spatial axes.*1-D.*gaussian"):
        segment(signal, 3, features=features)
    # the filters that work on a line still do
    labels = segment(signal, 3, features=[("gaussian", 0.5)]).labels
    assert labels[[0, 12, 23]].tolist() == [1, 2, 3]


@pytest.mark.parametrize("name", ["hessian", "structure"])
def test_eigenvalue_features_of_an_axis_one_pixel_long_are_refused_naming_the_fix(name):
    rng = np.random.default_rng(0)
    one_plane = rng.random((1, 9, 9))  # was RuntimeError "sequence argument must have length..."
    with pytest.raises(ValueError, match=rf"{name}.*2 pixels.*\(1, 9, 9\).*squeeze"):
        segment(one_plane, 2, features=[(name, 1.0)])
    model = fit(rng.random((2, 9, 9)), 2, features=[(name, 1.0)]).model
    assert model.centers.shape == (2, 3)  # three eigenvalues of a volume
    with pytest.raises(ValueError, match=rf"{name}.*\(1, 9, 9\)"):
        model.predict(one_plane)


@pytest.mark.parametrize("recipe", [{}, {"smoothing": 1.0}])
def test_fit_many_names_the_image_left_without_pixels(recipe):
    a = np.array([[10, 10, 120, 120, 240, 240]] * 3, np.uint8)
    inside, outside = np.ones(a.shape, bool), np.zeros(a.shape, bool)
    params = Params(n_clusters=3, **recipe)
    with pytest.raises(ValueError, match=r"image 3 of fit_many: no pixel is left"):
        fit_many([a, a + 3, a + 6], masks=[inside, inside, outside], params=params)
    model = fit_many([a, a + 3], masks=[inside, inside], params=params).model
    assert model.colors.ravel().tolist() == [11.5, 121.5, 241.5]


def test_a_prepared_image_refuses_settings_it_was_not_prepared_with():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (10, 10, 3)).astype(np.uint8)
    prepared = prepare_image(image)
    # each was silently ignored: the labels were those of the prepared settings
    with pytest.raises(ValueError, match=r"mask.*prepare_image"):
        segment(prepared, 3, mask=np.zeros((10, 10), bool))
    with pytest.raises(ValueError, match=r"channel_axis.*prepare_image"):
        segment(prepared, 3, channel_axis=0)
    with pytest.raises(ValueError, match=r"color_space='lab' \(prepared: 'rgb'\)"):
        segment(prepared, 3, color_space="lab")
    with pytest.raises(ValueError, match=r"smoothing=2\.0 \(prepared: 0\.0\)"):
        fit_prepared(prepared, Params(n_clusters=3, smoothing=2.0))
    smoothed = prepare_image(image, params=Params(smoothing=1.0, min_size=2))
    with pytest.raises(ValueError, match=r"smoothing=0\.0 \(prepared: 1\.0\)"):
        segment(smoothed, 3, min_size=2)
    # the settings it was prepared with (and those of the fit only) give segment's result
    again = segment(smoothed, 4, smoothing=1.0, min_size=2, n_init=2)
    direct = segment(image, 4, smoothing=1.0, min_size=2, n_init=2)
    assert np.array_equal(again.labels, direct.labels)
    assert np.array_equal(segment(prepared, 3).labels, segment(image, 3).labels)


def test_fit_lazy_given_k_instead_of_params_says_so():
    import dask.array as da

    from napari_kmeans.lazy import fit_lazy

    image = da.from_array(BANDS, chunks=2)
    with pytest.raises(TypeError, match=r"params must be a napari_kmeans.params.Params.*int"):
        fit_lazy(image, 3)  # was AttributeError: 'int' object has no attribute 'color_space'
    model = fit_lazy(image, Params(n_clusters=3)).model
    assert model.colors.ravel().tolist() == [5.0, 105.0, 205.0]


def test_a_cielab_model_recolours_another_dtype_in_that_dtype_s_range():
    import dask.array as da

    from napari_kmeans.lazy import recolor_lazy

    rgb8 = np.zeros((4, 6, 3), np.uint8)
    rgb8[:, :3], rgb8[:, 3:] = [200, 30, 30], [30, 30, 200]
    model = segment(rgb8, 2, color_space="lab").model
    rgb16 = rgb8.astype(np.uint16) * 257
    labels = model.predict(rgb16)
    assert labels[0].tolist() == [2, 2, 2, 1, 1, 1]  # works across dtypes
    # was [200, 30, 30]: 8-bit colours painted into a 16-bit image (nearly black)
    assert model.recolor(rgb16, labels)[0, 0].tolist() == [51400, 7710, 7710]
    lazy = recolor_lazy(model, da.from_array(rgb16, chunks=2), labels)
    assert np.asarray(lazy)[0, 0].tolist() == [51400, 7710, 7710]
    floats = model.recolor(rgb8 / 255.0, labels)
    assert np.allclose(floats[0, 0], [200 / 255, 30 / 255, 30 / 255])
    assert model.recolor(rgb8, labels)[0, 0].tolist() == [200, 30, 30]


def test_edits_of_a_cielab_model_with_another_dtype_keep_the_model_s_units():
    rgb8 = np.zeros((4, 6, 3), np.uint8)
    rgb8[:, :2], rgb8[:, 2:4], rgb8[:, 4:] = [200, 30, 30], [150, 30, 30], [30, 30, 200]
    model = segment(rgb8, 2, color_space="lab").model
    assert model.colors.tolist() == [[30, 30, 200], [175, 30, 30]]
    rgb16 = rgb8.astype(np.uint16) * 257
    labels = model.predict(rgb16)
    # were 16-bit colours (7710, 44975, ...) in a uint8 model: its recolouring turned white
    assert recount(rgb16, labels, model).colors.tolist() == [[30, 30, 200], [175, 30, 30]]
    split_model, split_labels = split(model, rgb16, labels, 2)
    assert split_model.colors.tolist() == [[30, 30, 200], [150, 30, 30], [200, 30, 30]]
    assert split_model.recolor(rgb8, split_labels)[0].tolist() == rgb8[0].tolist()
    _, counts = label_stats(rgb16, labels, model)
    assert counts.tolist() == [8, 16]


def test_ids_absent_after_matching_a_cielab_model_of_another_dtype_keep_its_colour():
    rgb8 = np.zeros((4, 6, 3), np.uint8)
    rgb8[:, :2], rgb8[:, 2:4], rgb8[:, 4:] = [200, 30, 30], [30, 200, 30], [30, 30, 200]
    earlier = segment(rgb8, 3, color_space="lab").model
    rgb16 = rgb8[:, 2:].astype(np.uint16) * 257  # the red class is gone
    r = segment(rgb16, 2, color_space="lab", match_to=earlier)
    absent = sorted(set(range(1, 4)) - set(np.unique(r.labels).tolist()))
    assert len(absent) == 1
    gone = r.model.colors[absent[0] - 1]
    # the earlier colour, in this model's (16-bit) units; was [200, 30, 30] of 65535
    assert gone.tolist() == [200 * 257, 30 * 257, 30 * 257]


def test_segment_frames_refuses_a_match_that_is_not_a_bool():
    with pytest.raises(TypeError, match=r"match must be True or False.*'no'"):
        segment_frames(MOVIE, 3, match="no")  # a truthy string matched the frames
    assert segment_frames(MOVIE, 3, match=False).labels[2, 0].tolist() == [1, 1, 2, 2, 3, 3]
