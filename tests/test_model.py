"""Tests of KMeansModel: predict, recolor, the JSON round trip and every malformed-dict error."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from napari_kmeans import KMeansModel, segment
from napari_kmeans.model import FORMAT, FORMAT_VERSION, label_dtype


def rng_image(kind, seed=0):
    """Small images of every path: compressed (8/16-bit gray, 8-bit RGB) and not (float, 4 ch)."""
    rng = np.random.default_rng(seed)
    if kind == "uint8_gray":
        return rng.integers(0, 256, (12, 13)).astype(np.uint8)
    if kind == "uint16_gray":
        return rng.integers(0, 4000, (12, 13)).astype(np.uint16)
    if kind == "float32_gray":
        return rng.random((12, 13)).astype(np.float32)
    if kind == "uint8_rgb":
        return rng.integers(0, 256, (12, 13, 3)).astype(np.uint8)
    if kind == "uint8_rgba":
        image = rng.integers(0, 256, (12, 13, 4)).astype(np.uint8)
        image[::3, ::2, 3] = 0
        return image
    if kind == "uint16_rgb":
        return rng.integers(0, 65536, (12, 13, 3)).astype(np.uint16)
    if kind == "float64_4ch_first":
        return rng.random((4, 12, 13))
    if kind == "int16_gray":
        return rng.integers(-3000, 3000, (5, 6, 7)).astype(np.int16)
    raise AssertionError(kind)


KINDS = {
    "uint8_gray": {},
    "uint16_gray": {},
    "float32_gray": {},
    "int16_gray": {},
    "uint8_rgb": {},
    "uint8_rgba": {},
    "uint16_rgb": {},
    "float64_4ch_first": {"channel_axis": 0},
    "uint8_rgb_lab": {"color_space": "lab"},
}


def fitted(kind, k=4, seed=0):
    image = rng_image(kind.removesuffix("_lab"), seed)
    return image, segment(image, k, seed=seed, **KINDS[kind])


# -- predict and recolor ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(KINDS))
def test_predict_reproduces_segment_labels(kind):
    image, res = fitted(kind)
    np.testing.assert_array_equal(res.model.predict(image), res.labels)
    np.testing.assert_array_equal(res.model.predict(image, chunk_size=7), res.labels)
    np.testing.assert_array_equal(res.model.recolor(image, res.labels), res.recolored)


@pytest.mark.parametrize("kind", list(KINDS))
def test_predict_on_shuffled_copy(kind):
    image, res = fitted(kind)
    axis = None if "gray" in kind else KINDS[kind].get("channel_axis", -1)
    moved = image if axis is None else np.moveaxis(image, axis, -1)
    spatial = moved.shape if axis is None else moved.shape[:-1]
    flat = moved.reshape(int(np.prod(spatial)), -1)
    perm = np.random.default_rng(1).permutation(flat.shape[0])
    shuffled = flat[perm].reshape(moved.shape)
    if axis is not None:
        shuffled = np.moveaxis(shuffled, -1, axis)
    labels = res.model.predict(shuffled)
    np.testing.assert_array_equal(labels.reshape(-1), res.labels.reshape(-1)[perm])


@pytest.mark.parametrize("kind", ["uint8_gray", "uint8_rgb", "float64_4ch_first"])
def test_predict_with_mask(kind):
    image, res = fitted(kind)
    mask = np.random.default_rng(2).random(res.labels.shape) < 0.5
    labels = res.model.predict(image, mask=mask)
    np.testing.assert_array_equal(labels[mask], res.labels[mask])
    assert (labels[~mask] == 0).all()


def test_predict_on_new_values_uses_nearest_centre():
    image = np.array([[0, 0, 200], [10, 210, 200]], dtype=np.uint8)  # centres 10/3 and 610/3
    model = segment(image, 2).model
    values = np.arange(256, dtype=np.uint8)
    expected = np.where(values <= (10 / 3 + 610 / 3) / 2, 1, 2)
    np.testing.assert_array_equal(model.predict(values), expected)


def test_predict_float_model_on_float64_image():
    rng = np.random.default_rng(3)
    image = rng.random((10, 10, 3)).astype(np.float32)
    res = segment(image, 3)
    np.testing.assert_array_equal(res.model.predict(image.astype(np.float64)), res.labels)


def test_lab_model_works_across_dtypes():
    rng = np.random.default_rng(4)
    palette = np.array([[230, 20, 20], [20, 200, 40], [20, 40, 220], [240, 240, 240]])
    noisy = palette[rng.integers(0, 4, (16, 16))] + rng.integers(-9, 10, (16, 16, 3))
    image = np.clip(noisy, 0, 255).astype(np.uint8)
    res = segment(image, 4, color_space="lab")
    as16 = image.astype(np.uint16) * 257
    np.testing.assert_array_equal(res.model.predict(as16), res.labels)
    np.testing.assert_array_equal(res.model.predict(image / 255.0), res.labels)


def test_rgb_model_on_rgba_image_masks_transparent_pixels():
    image, res = fitted("uint8_rgb")
    alpha = np.full((*image.shape[:2], 1), 255, np.uint8)
    alpha[0, :] = 0
    rgba = np.concatenate([image, alpha], axis=-1)
    labels = res.model.predict(rgba)
    assert (labels[0] == 0).all()
    np.testing.assert_array_equal(labels[1:], res.labels[1:])
    recolored = res.model.recolor(rgba, labels)
    np.testing.assert_array_equal(recolored[..., 3], rgba[..., 3])
    np.testing.assert_array_equal(recolored[0], rgba[0])


def test_recolor_keeps_label_zero_pixels():
    image, res = fitted("uint8_gray")
    labels = res.labels.copy()
    labels[:3] = 0
    out = res.model.recolor(image, labels)
    np.testing.assert_array_equal(out[:3], image[:3])
    np.testing.assert_array_equal(out[3:], res.recolored[3:])
    assert out.dtype == image.dtype


@pytest.mark.parametrize("kind", ["uint8_gray", "uint8_rgb"])
def test_recolor_rejects_labels_of_the_wrong_shape(kind):
    image, res = fitted(kind)
    with pytest.raises(ValueError, match=r"labels shape \(12, 12\)"):
        res.model.recolor(image, res.labels[:, :12])


@pytest.mark.parametrize(
    ("kind", "image", "match"),
    [
        ("uint8_rgb", np.zeros((5, 5, 3), np.uint16), r"fitted on uint8 data .* image is uint16"),
        ("uint8_gray", np.zeros((5, 5), np.float32), r"fitted on uint8 data .* convert the image"),
        ("float32_gray", np.zeros((5, 5), np.uint8), r"fitted on float32 data .* image is uint8"),
        ("uint8_rgb", np.zeros((5, 7), np.uint8), r"expects 3 \(RGB\) or 4 \(RGBA\) channels"),
        ("uint8_rgb", np.zeros((5, 5, 2), np.uint8), r"the image has 2 \(shape \(5, 5, 2\)\)"),
        ("uint8_rgb", np.zeros(5, np.uint8), r"expects channels on axis -1"),
        ("float64_4ch_first", np.zeros((3, 5, 5)), r"expects 4 channels on axis -3"),
        ("float64_4ch_first", np.zeros((4, 5)), r"expects channels on axis -3"),
    ],
)
def test_predict_rejects_a_different_layout_or_dtype(kind, image, match):
    _, res = fitted(kind)
    with pytest.raises(ValueError, match=match):
        res.model.predict(image)


def test_predict_rejects_bad_images():
    _, res = fitted("uint8_gray")
    with pytest.raises(ValueError, match="image is empty"):
        res.model.predict(np.zeros((0, 3), np.uint8))
    with pytest.raises(TypeError, match="complex dtype"):
        res.model.predict(np.zeros((3, 3), complex))
    with pytest.raises(ValueError, match=r"mask has shape \(2, 2\)"):
        res.model.predict(np.zeros((3, 3), np.uint8), mask=np.ones((2, 2), bool))


def test_predict_does_not_modify_the_image():
    image, res = fitted("float64_4ch_first")
    image[0, 0, 0] = np.nan
    before = image.copy()
    res.model.predict(image)
    res.model.recolor(image, res.model.predict(image))
    np.testing.assert_array_equal(image, before)


@pytest.mark.parametrize(
    ("k", "dtype"),
    [(1, np.uint8), (255, np.uint8), (256, np.uint16), (65535, np.uint16), (65536, np.uint32)],
)
def test_label_dtype(k, dtype):
    assert label_dtype(k) == dtype


def test_many_clusters_use_uint16_labels():
    image = np.arange(300, dtype=np.uint16).reshape(15, 20)
    res = segment(image, 260)
    assert res.labels.dtype == np.uint16 and res.labels.max() == 260


# -- JSON round trip ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(KINDS))
def test_json_round_trip_gives_identical_predictions(kind):
    image, res = fitted(kind)
    text = res.model.to_json()
    data = json.loads(text)  # plain JSON, no pickle
    assert data["format"] == FORMAT and data["version"] == 1  # 2 only for models with a recipe
    assert FORMAT_VERSION == 3  # 3 adds seed means and absent labels (issue 13)
    back = KMeansModel.from_json(text)
    np.testing.assert_array_equal(back.centers, res.model.centers)
    assert back.centers.dtype == res.model.centers.dtype
    np.testing.assert_array_equal(back.colors, res.model.colors)
    assert back.spec == res.model.spec and back.dtype == res.model.dtype
    assert back.seed == res.model.seed and back.n_clusters == res.n_clusters
    np.testing.assert_array_equal(back.predict(image), res.labels)
    np.testing.assert_array_equal(back.recolor(image, res.labels), res.recolored)
    again = KMeansModel.from_dict(back.to_dict())
    assert again.to_json() == text


def test_to_dict_is_json_safe():
    _, res = fitted("uint16_rgb")
    data = res.model.to_dict()
    assert json.loads(json.dumps(data, allow_nan=False)) == data


# -- malformed model dicts ----------------------------------------------------------------------


def good_dict():
    return fitted("uint8_rgb", k=3)[1].model.to_dict()


def without(key):
    d = good_dict()
    del d[key]
    return d


def changed(**fields):
    return {**good_dict(), **fields}


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ([1, 2], r"expected a JSON object \(dict\), got list"),
        ("model", r"expected a JSON object \(dict\), got str"),
        (None, r"expected a JSON object \(dict\), got NoneType"),
        (changed(format="something-else"), r"'format' is 'something-else', expected"),
        (without("format"), r"'format' is None"),
        (changed(version="1"), r"'version' must be an integer, got '1'"),
        (changed(version=True), r"'version' must be an integer"),
        (without("version"), r"'version' must be an integer, got None"),
        (without("centers"), r"missing field\(s\) centers"),
        (without("colors"), r"missing field\(s\) colors"),
        (without("channel_axis"), r"missing field\(s\) channel_axis"),
        (without("rgb"), r"missing field\(s\) rgb"),
        (without("color_space"), r"missing field\(s\) color_space"),
        (without("n_channels"), r"missing field\(s\) n_channels"),
        (without("dtype"), r"missing field\(s\) dtype"),
        (changed(centers=[[0, 0, float("nan")]] * 3), r"must be finite numbers"),
        (changed(centers=[[0, 0, float("inf")], [1, 1, 1], [2, 2, 2]]), r"must be finite"),
        (changed(colors=[[0, 0, 0], [1, 1, float("-inf")], [2, 2, 2]]), r"must be finite"),
        (changed(centers=[[0, 0], [1, 1, 1], [2, 2, 2]]), r"lists of lists of numbers"),
        (changed(centers=[["a", "b", "c"]] * 3), r"lists of lists of numbers"),
        (changed(centers=[1, 2, 3]), r"non-empty k x d table, got shape \(3,\)"),
        (changed(centers=[], colors=[]), r"non-empty k x d table"),
        (changed(colors=[[0, 0, 0], [1, 1, 1]]), r"'n_clusters' is 3 but there are 2 colors"),
        (changed(centers=[[0, 0], [1, 1], [2, 2]]), r"centers have 2 features, expected 3"),
        (changed(colors=[[0, 0], [1, 1], [2, 2]]), r"'n_channels' 3 does not match colors"),
        (changed(n_clusters=4), r"'n_clusters' is 4 but there are 3"),
        (changed(color_space="hsv"), r"'color_space' must be one of \('rgb', 'lab'\)"),
        (changed(rgb="yes"), r"'rgb' must be true or false, got 'yes'"),
        (changed(rgb=1), r"'rgb' must be true or false"),
        (changed(channel_axis=2), r"'channel_axis' must be null or a negative integer, got 2"),
        (changed(channel_axis=-1.0), r"'channel_axis' must be null or a negative integer"),
        (changed(channel_axis=None), r"'channel_axis', 'rgb' and 'n_channels' are inconsistent"),
        (changed(rgb=False, channel_axis=None, n_channels=3), r"inconsistent"),
        (changed(dtype="float7"), r"'dtype' 'float7' is not a numpy dtype name"),
        (changed(dtype=None), r"'dtype'"),
        (changed(dtype="complex128"), r"must be a boolean, integer or float dtype"),
        (changed(dtype="object"), r"must be a boolean, integer or float dtype, got object"),
        (changed(dtype="<U3"), r"must be a boolean, integer or float dtype"),
        (changed(seed="0"), r"'seed' must be an integer, got '0'"),
        (changed(seed=1.5), r"'seed' must be an integer"),
        # lenient acceptance, tightened (issue 8)
        (changed(seed=-1), r"'seed' must be an integer >= 0, got -1"),
        (changed(version=0), r"'version' must be 1 or more, got 0"),
        (changed(version=-1), r"'version' must be 1 or more, got -1"),
        (changed(n_channels=True), r"'n_channels' must be a positive integer, got True"),
        (
            changed(centers=[["1", "2", "3"]] * 3),
            r"'centers' and 'colors' must be lists of lists "
            r"of numbers \(found str\)",
        ),
        (changed(colors=[[0, 0, 0], [1, 1, 1], [2, 2, True]]), r"lists of lists of numbers"),
    ],
)
def test_from_dict_rejects_malformed_models(data, match):
    with pytest.raises(ValueError, match=r"malformed napari-kmeans model: (.*)?" + match):
        KMeansModel.from_dict(data)


def test_from_dict_refuses_a_future_version():
    future = FORMAT_VERSION + 97
    with pytest.raises(
        ValueError, match=rf"format version {future}, newer than the {FORMAT_VERSION} .* upgrade"
    ):
        KMeansModel.from_dict(changed(version=FORMAT_VERSION + 97))


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("{not json", r"not a napari-kmeans model file: invalid JSON"),
        ("", r"invalid JSON"),
        ("[1, 2, 3]", r"expected a JSON object \(dict\), got list"),
    ],
)
def test_from_json_rejects_bad_text(text, match):
    with pytest.raises(ValueError, match=match):
        KMeansModel.from_json(text)


def test_from_json_rejects_nan_written_by_other_tools():
    data = good_dict()
    data["centers"][0][0] = float("nan")
    text = json.dumps(data)  # Python writes the non-standard token NaN
    assert "NaN" in text
    with pytest.raises(ValueError, match="must be finite"):
        KMeansModel.from_json(text)


def test_from_dict_accepts_optional_fields_missing():
    data = good_dict()
    for key in ("n_clusters", "seed", "package_version", "center_labels", "parent"):
        data.pop(key, None)
    model = KMeansModel.from_dict(data)
    assert model.n_clusters == 3 and model.seed == 0


def test_from_dict_does_not_modify_its_input():
    data = good_dict()
    copy = json.loads(json.dumps(data))
    KMeansModel.from_dict(data)
    assert data == copy


def test_fitted_model_with_fewer_clusters_round_trips():
    image = np.array([[1, 1, 5], [5, 9, 9]], np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        res = segment(image, 6)
    back = KMeansModel.from_json(res.model.to_json())
    assert back.n_clusters == 3
    np.testing.assert_array_equal(back.predict(image), [[1, 1, 2], [2, 3, 3]])


def test_single_channel_axis_model_round_trips():
    rng = np.random.default_rng(0)
    image = rng.random((20, 20, 1))
    model = segment(image, 2, channel_axis=-1).model
    again = KMeansModel.from_json(model.to_json())
    np.testing.assert_array_equal(again.predict(image), model.predict(image))


def test_recolor_refuses_labels_beyond_k():
    image = np.array([0, 10, 200], np.uint8)
    model = segment(image, 2).model
    with pytest.raises(
        ValueError, match=r"labels must be in 0\.\.2 for this model, found values 0\.\.3"
    ):
        model.recolor(image, np.array([0, 1, 3]))


@pytest.mark.parametrize("dtype", [np.uint64, np.int64])
def test_recolor_64_bit_extremes_do_not_wrap_around(dtype):
    """Centres at the top of a 64-bit range round to 2**64 (2**63) as floats: clip, not wrap."""
    info = np.iinfo(dtype)
    image = np.array([[info.min, info.min, info.max], [info.max, info.min, info.max]], dtype)
    res = segment(image, 2)
    np.testing.assert_array_equal(res.labels, [[1, 1, 2], [2, 1, 2]])
    assert res.recolored.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(res.recolored, image)
    np.testing.assert_array_equal(res.model.recolor(image, res.labels), image)


# -- the image's declared layout (issue 8, item 5) -------------------------------------------------


def test_single_channel_model_refuses_an_image_declared_rgb():
    """A gray model cannot tell an RGB (H, W, 3) image from a 3-plane volume; the caller can."""
    _, res = fitted("uint8_gray")
    photo = np.zeros((6, 7, 3), np.uint8)
    match = r"image is RGB\(A\).*fitted on single-channel.*3-D grayscale volume.*rgb2gray"
    with pytest.raises(ValueError, match=match):
        res.model.predict(photo, rgb=True)
    with pytest.raises(ValueError, match=match):
        res.model.recolor(photo, np.zeros((6, 7, 3), np.uint8), rgb=True)
    with pytest.raises(ValueError, match=match):
        res.model.check_image(photo, rgb=True)
    # undeclared (None) or declared not RGB: a 3-plane volume, as before
    np.testing.assert_array_equal(res.model.predict(photo, rgb=False), res.model.predict(photo))
    assert res.model.predict(photo).shape == (6, 7, 3)


def test_rgb_model_refuses_an_image_declared_not_rgb():
    image, res = fitted("uint8_rgb")
    with pytest.raises(ValueError, match=r"fitted on RGB\(A\) images.*declared not RGB"):
        res.model.predict(image, rgb=False)
    np.testing.assert_array_equal(res.model.predict(image, rgb=True), res.labels)
    recolored = res.model.recolor(image, res.labels, rgb=True)
    np.testing.assert_array_equal(recolored, res.recolored)


def test_multichannel_model_refuses_an_image_declared_rgb_on_another_axis():
    _, res = fitted("float64_4ch_first")
    with pytest.raises(ValueError, match=r"image is RGB\(A\).*expects 4 channels on axis -3"):
        res.model.predict(np.zeros((5, 5, 3)), rgb=True)


@pytest.mark.parametrize("rgb", ["yes", 1, 0.0])
def test_declared_rgb_must_be_a_bool(rgb):
    _, res = fitted("uint8_gray")
    with pytest.raises(TypeError, match=r"rgb must be True, False or None, got"):
        res.model.predict(np.zeros((3, 3), np.uint8), rgb=rgb)


@pytest.mark.parametrize("kind", ["uint8_gray", "float32_gray", "float64_4ch_first"])
@pytest.mark.parametrize(
    ("chunk_size", "error", "match"),
    [
        (-1, ValueError, r"chunk_size must be at least 1, got -1"),
        (0, ValueError, r"chunk_size must be at least 1, got 0"),
        (2.5, TypeError, r"chunk_size must be an integer, got 2\.5"),
        ("64", TypeError, r"chunk_size must be an integer, got '64'"),
    ],
)
def test_predict_validates_chunk_size_like_segment(kind, chunk_size, error, match):
    """chunk_size=-1 used to give all-zero labels for data that do not compress."""
    image, res = fitted(kind)
    with pytest.raises(error, match=match):
        res.model.predict(image, chunk_size=chunk_size)
    with pytest.raises(error, match=match):
        segment(image, 3, chunk_size=chunk_size, **KINDS[kind])
    np.testing.assert_array_equal(res.model.predict(image, chunk_size=7), res.labels)


# -- hostile but valid model files (issue 8, item 18) ---------------------------------------------


def chain_dict(depth, k=2):
    """A gray model whose label k is refined by a chain of ``depth`` single sub-centres."""
    centers = [[float(10 * i)] for i in range(k)] + [[10.0 * (k - 1)]] * depth
    parent = [-1] * k + [k - 1 + i for i in range(depth)]
    labels = list(range(1, k + 1)) + [k] * depth
    return {
        "format": FORMAT, "version": FORMAT_VERSION, "centers": centers,
        "colors": [[float(10 * i)] for i in range(k)], "channel_axis": None, "rgb": False,
        "color_space": "rgb", "n_channels": 1, "dtype": "uint8", "seed": 0,
        "center_labels": labels, "parent": parent,
    }  # fmt: skip


def test_model_files_with_too_deep_a_split_chain_are_refused():
    """A 34 kB file with a chain of 2,000 split levels made predict take 27 s on 1 MP."""
    with pytest.raises(ValueError, match=r"split depth of 2000, more than the 32 allowed"):
        KMeansModel.from_dict(chain_dict(2000))
    with pytest.raises(ValueError, match=r"split depth of 33, more than the 32 allowed"):
        KMeansModel.from_dict(chain_dict(33))
    model = KMeansModel.from_dict(chain_dict(32))
    image = np.array([[0, 4, 6, 200]], np.uint8)
    np.testing.assert_array_equal(model.predict(image), [[1, 1, 2, 2]])


def test_model_files_with_too_many_labels_or_centres_are_refused():
    with pytest.raises(ValueError, match=r"20000 labels, more than the 1000 allowed"):
        KMeansModel.from_dict(chain_dict(0, k=20000))
    data = chain_dict(0, k=3)  # 3 labels, 4098 centres: label 3 is served by 4096 top centres
    data["centers"] += [[30.0]] * 4095
    data["center_labels"] += [3] * 4095
    data["parent"] += [-1] * 4095
    with pytest.raises(ValueError, match=r"4098 centres, more than the 4096 allowed"):
        KMeansModel.from_dict(data)
    assert KMeansModel.from_dict(chain_dict(0, k=1000)).n_clusters == 1000


def test_deep_models_predict_like_the_flat_search():
    """The level-by-level descent gives each pixel its nearest leaf along its own chain."""
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (30, 40, 3)).astype(np.uint8)
    from napari_kmeans.edit import split

    res = segment(image, 3)
    model, labels = res.model, res.labels
    for target in (1, 2, 1, 3):
        model, labels = split(model, image, labels, target, 2)
    np.testing.assert_array_equal(model.predict(image), labels)
    np.testing.assert_array_equal(KMeansModel.from_json(model.to_json()).predict(image), labels)


# -- reading JSON text and files (issue 8, unclear errors and item 14) -----------------------------


def test_from_json_of_none_is_a_type_error():
    with pytest.raises(TypeError, match=r"from_json takes the JSON text \(str\), got NoneType"):
        KMeansModel.from_json(None)


@pytest.mark.parametrize(
    "text",
    ["[" * 100_000 + "]" * 100_000, '{"version": ' + "9" * 5000 + "}"],
    ids=["nested-100000", "integer-5000-digits"],
)
def test_from_json_of_deep_or_huge_numbers_is_a_value_error(text):
    with pytest.raises(ValueError, match=r"nested too deeply or holds numbers too long"):
        KMeansModel.from_json(text)


def test_save_and_load_round_trip(tmp_path):
    image, res = fitted("uint8_rgba")
    res.model.save(tmp_path / "m_model.json")
    loaded = KMeansModel.load(tmp_path / "m_model.json")
    np.testing.assert_array_equal(loaded.predict(image), res.labels)
    np.testing.assert_array_equal(loaded.recolor(image, res.labels), res.recolored)
    assert loaded.to_dict() == res.model.to_dict()


def test_load_refuses_files_larger_than_max_bytes(tmp_path):
    _, res = fitted("uint8_gray")
    res.model.save(tmp_path / "m.json")
    size = (tmp_path / "m.json").stat().st_size
    with pytest.raises(ValueError, match=r"'m\.json' is larger than .* not a model file"):
        KMeansModel.load(tmp_path / "m.json", max_bytes=size - 1)
    assert KMeansModel.load(tmp_path / "m.json", max_bytes=size).n_clusters == 4


def test_load_reads_dev_zero_without_bound():
    import os

    if not os.path.exists("/dev/zero"):
        pytest.skip("no /dev/zero")
    with pytest.raises(ValueError, match=r"'zero' is larger than"):
        KMeansModel.load("/dev/zero", max_bytes=1 << 16)


def test_load_refuses_an_endless_fifo(tmp_path):
    """A FIFO has st_size 0: the read must stop at max_bytes, not wait for the writer's end."""
    import os
    import threading

    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs here")
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    stop = threading.Event()

    def write():
        try:
            with open(fifo, "wb") as fh:
                while not stop.is_set():
                    fh.write(b" " * 4096)
        except BrokenPipeError:  # the reader stopped reading: what the test expects
            pass

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    try:
        with pytest.raises(ValueError, match=r"'pipe\.json' is larger than"):
            KMeansModel.load(fifo, max_bytes=1 << 16)
    finally:
        stop.set()
        writer.join(5)
    assert not writer.is_alive()


def test_load_gives_value_errors_for_bad_content(tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match=r"nested too deeply"):
        KMeansModel.load(deep)
    big = tmp_path / "big.json"
    big.write_text('{"format": "napari-kmeans-model", "version": ' + "1" * 5000 + "}")
    with pytest.raises(ValueError, match=r"numbers too long"):
        KMeansModel.load(big)
    latin = tmp_path / "latin.json"
    latin.write_bytes(b'{"format": "caf\xe9"}')
    with pytest.raises(ValueError, match=r"'latin\.json' is not a text \(UTF-8\) file"):
        KMeansModel.load(latin)


def test_load_of_a_missing_file_is_an_os_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        KMeansModel.load(tmp_path / "nowhere.json")


# -- models with a feature recipe (issue 12) --------------------------------------------------


@pytest.mark.parametrize(
    "recipe",
    [
        {"smoothing": 2},
        {"smoothing": (1, 2), "majority": 1},
        {"features": "texture"},
        {"features": [("gaussian", 1), ("gradient", 2), ("hessian", 2)]},
        {"smoothing": 1, "spatial_weight": 0.5, "min_size": 20},
        {"majority": 2},
    ],
)
def test_recipe_models_round_trip_and_reproduce_their_labels(recipe):
    rng = np.random.default_rng(3)
    image = (np.indices((48, 64))[1] // 16 * 60 + rng.normal(0, 25, (48, 64))).astype(np.float32)
    result = segment(image, 3, **recipe)
    data = json.loads(result.model.to_json())
    assert data["version"] == 2 and data["recipe"]["features"] is not None
    model = KMeansModel.from_json(json.dumps(data))
    np.testing.assert_array_equal(model.predict(image), result.labels)
    shuffled = image[::-1].copy()  # another image: the same recipe and scale are applied
    np.testing.assert_array_equal(model.predict(shuffled), result.model.predict(shuffled))
    lum = result.centers[:, 0]
    assert np.all(np.diff(lum) > 0)  # labels dark to bright by the input's values


def test_version_1_model_files_still_load():
    model = segment(np.arange(30, dtype=np.uint8).reshape(5, 6), 2).model
    data = model.to_dict()
    data.pop("recipe", None)
    data["version"] = 1
    again = KMeansModel.from_dict(data)
    assert again.recipe is None and not again.uses_recipe


def test_recipe_model_files_with_bad_recipes_are_refused():
    image = np.random.default_rng(0).random((20, 20)).astype(np.float32)
    data = segment(image, 2, features="texture").model.to_dict()
    data["recipe"]["features"] = "gabor"
    with pytest.raises(ValueError, match=r"malformed napari-kmeans model.*'values', 'texture'"):
        KMeansModel.from_dict(data)
    data = segment(image, 2, features="texture").model.to_dict()
    data["recipe"]["standardisation"]["mean"] = [0.0]
    with pytest.raises(ValueError, match="malformed"):
        KMeansModel.from_dict(data)


def test_wide_float32_rows_are_labelled_like_their_float64_values():
    """Six float32 channels go to the assignment without a float64 copy: the same labels and
    distances as the same values in float64."""
    rng = np.random.default_rng(5)
    image = rng.normal(0, 1, (60, 50, 6)).astype(np.float32)
    image[:30] += 3
    model = segment(image, 3, channel_axis=-1, rgb=False).model
    pixels = image.reshape(-1, 6)
    idx32, d32 = model.assign_values(pixels, pixels.dtype)
    idx64, d64 = model.assign_values(pixels.astype(np.float64), np.float64)
    np.testing.assert_array_equal(idx32, idx64)
    np.testing.assert_array_equal(d32, d64)


@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_label_pixels_in_threads_gives_the_same_labels(dtype):
    """Chunks labelled by several threads give the labels, inertia and counts of one thread."""
    rng = np.random.default_rng(12)
    image = (rng.random((300, 200, 3)) * 1000).astype(dtype)
    model = segment(image, 4, rgb=False, channel_axis=-1).model
    pixels = image.reshape(-1, 3)
    valid = rng.random(pixels.shape[0]) < 0.9
    one = model.label_pixels(pixels, valid, image.dtype, chunk_size=1000, threads=1)
    two = model.label_pixels(pixels, valid, image.dtype, chunk_size=1000, threads=2)
    np.testing.assert_array_equal(two.labels, one.labels)
    np.testing.assert_array_equal(two.counts, one.counts)
    assert two.inertia == one.inertia
    assert (one.labels[~valid] == 0).all() and (one.labels[valid] > 0).all()


def test_recolor_in_threads_is_the_same():
    rng = np.random.default_rng(13)
    image = rng.integers(0, 255, (700, 500, 3)).astype(np.uint8)
    seg = segment(image, 3)
    labels = seg.labels.copy()
    labels[:5] = 0  # kept pixels
    one = seg.model.recolor(image, labels)
    two = seg.model.recolor(image, labels, threads=2)
    np.testing.assert_array_equal(two, one)


def test_threads_work_in_a_forked_child():
    """The shared thread pool is per process: a child forked after the parent used it labels
    in threads too (a pool inherited through fork has no threads and would hang)."""
    import multiprocessing as mp

    rng = np.random.default_rng(14)
    image = rng.random((200, 300, 3)).astype(np.float32)
    model = segment(image, 3).model
    pixels = image.reshape(-1, 3)
    want = model.label_pixels(pixels, None, image.dtype, chunk_size=1000, threads=2).labels
    ctx = mp.get_context("fork")
    with ctx.Pool(1) as pool:
        got = pool.apply_async(_label_in_threads, (model.to_json(), pixels)).get(timeout=60)
    np.testing.assert_array_equal(got, want)


def _label_in_threads(text, pixels):
    model = KMeansModel.from_json(text)
    return model.label_pixels(pixels, None, pixels.dtype, chunk_size=1000, threads=2).labels
