"""Building and updating the output layers (napari's ViewerModel: no window needed)."""

from __future__ import annotations

import numpy as np
import pytest
from napari.components import ViewerModel
from napari.layers import Image

from napari_kmeans import __version__, segment
from napari_kmeans._napari import outputs as out
from napari_kmeans._napari.jobs import Outcome, Params, RunInfo


def outcome_of(image, k, **kwargs):
    s = segment(image, k, **kwargs)
    return Outcome(
        labels=s.labels, recolored=s.recolored, model=s.model, inertia=s.inertia,
        n_iter=s.n_iter, exact=s.exact, counts=s.counts, seconds=0.5,
    )  # fmt: skip


def info_for(source, params=None, **kwargs):
    return RunInfo(source, (), None, params or Params(), None, None, **kwargs)


def test_labels_colormap_distinct_colours_and_transparent_background():
    counts = np.array([5, 50, 10])
    for background, hidden in [("none", None), ("darkest", 1), ("brightest", 3), ("largest", 2)]:
        cmap = out.labels_colormap(3, out.Style(background=background), counts)
        rgba = cmap.map(np.arange(0, 6))
        np.testing.assert_allclose(rgba[0], [0, 0, 0, 0])  # 0 is always transparent
        for label in range(1, 6):  # 4 and 5: labels painted beyond k get a colour at once
            alpha = 0.0 if label == hidden else 1.0
            np.testing.assert_allclose(rgba[label, 3], alpha)
            if label != hidden:
                np.testing.assert_allclose(rgba[label, :3], out.palette(5)[label - 1], atol=1e-6)
    colours = out.palette(40)
    assert len({tuple(c.round(3)) for c in colours}) == 40  # distinct
    assert out.transparent_label(out.Style(background="largest"), 3, None) is None  # unknown


def test_each_labels_colormap_is_its_own():
    """Colormaps are reused between runs (building one is slow): a layer's colormap changed in
    place (as napari's controls may) must not change the next layer's."""
    style = out.Style(background="darkest")
    first = out.labels_colormap(3, style)
    second = out.labels_colormap(3, style)
    assert first is not second and first.color_dict is not second.color_dict
    first.color_dict[2] = np.array([0.0, 0.0, 0.0, 1.0])
    third = out.labels_colormap(3, style)
    for cmap in (second, third):
        np.testing.assert_allclose(cmap.map(np.array([2]))[0, :3], out.palette(2)[1], atol=1e-6)
        np.testing.assert_allclose(cmap.map(np.array([1]))[0, 3], 0.0)  # darkest: transparent


def test_a_rewrite_with_other_colours_gives_the_labels_their_own_colormap():
    """publish sets a colormap on the labels layer only when the transparent label changes,
    and then one that the layer alone holds."""
    viewer = ViewerModel()
    source = viewer.add_image(np.arange(64, dtype=np.uint8).reshape(8, 8), name="img")
    info = info_for(source)
    made, _ = out.publish(viewer, outcome_of(source.data, 3), info, None, out.Style("darkest"))
    before = made.labels.colormap
    made, how = out.publish(viewer, outcome_of(source.data, 4), info, made, out.Style("darkest"))
    assert how == "updated" and made.labels.colormap is before  # the same colours: kept
    made, _ = out.publish(viewer, outcome_of(source.data, 4), info, made, out.Style("brightest"))
    after = made.labels.colormap
    np.testing.assert_allclose(after.map(np.array([1, 4]))[:, 3], [1.0, 0.0])
    after.color_dict[2] = np.array([0.0, 0.0, 0.0, 1.0])  # changed in place on the layer
    fresh = out.labels_colormap(4, out.Style("brightest"))
    np.testing.assert_allclose(fresh.map(np.array([2]))[0, :3], out.palette(2)[1], atol=1e-6)


def test_label_colors_rgb_gray_and_channels():
    rgb = Image(np.zeros((4, 4, 3), np.uint8), rgb=True)
    colors = np.array([[255.0, 0, 51], [10, 20, 30]])
    np.testing.assert_allclose(out.label_colors(colors, info_for(rgb)), colors / 255)

    gray = Image(np.zeros((4, 4)), colormap="gray", contrast_limits=(100, 200))
    np.testing.assert_allclose(
        out.label_colors(np.array([[50.0], [150.0], [250.0]]), info_for(gray)),
        [[0, 0, 0], [0.5, 0.5, 0.5], [1, 1, 1]],
    )
    a = Image(np.zeros((4, 4)), colormap="magenta", contrast_limits=(0, 10))
    b = Image(np.zeros((4, 4)), colormap="green", contrast_limits=(0, 10))
    info = RunInfo(a, (b,), None, Params(), None, None)
    got = out.label_colors(np.array([[10.0, 0.0], [5.0, 10.0]]), info)
    np.testing.assert_allclose(got, [[1, 0, 1], [0.5, 1, 0.5]], atol=1e-6)  # additive blend
    assert out.channel_names(info) == [a.name, b.name]


def test_features_table_and_metadata():
    image = np.array([[0, 0, 10, 10, 10, 200]], np.uint8)
    result = outcome_of(image, 3)
    table = out.outcome_table(result, ["value"])
    np.testing.assert_array_equal(table["index"], [1, 2, 3])
    np.testing.assert_array_equal(table["label"], [1, 2, 3])
    np.testing.assert_allclose(table["center_value"], [0, 10, 200], rtol=1e-12)
    np.testing.assert_array_equal(table["count"], [2, 3, 1])
    np.testing.assert_allclose(table["fraction"], [2 / 6, 3 / 6, 1 / 6])

    source = Image(image, name="src")
    params = Params(n_clusters=3, seed=5, n_init=2, max_iter=50, tol=1e-3)
    meta = out.metadata(result, info_for(source, params), "labels")["kmeans"]
    assert meta["role"] == "labels" and meta["source"] == "src" and meta["seed"] == 5
    assert meta["parameters"] == {
        "n_clusters": 3, "color_space": "rgb", "seed": 5, "n_init": 2, "max_iter": 50,
        "tol": 1e-3, "chunk_size": None, "smoothing": 0.0, "features": "values",
        "spatial_weight": 0.0, "majority": 0, "min_size": 0, "pin_seeds": False,
        "scope": "whole data", "slice": None, "extra_channels": [], "mask": None,
        "fit_level": None,
    }  # fmt: skip
    assert meta["model"] == result.model.to_dict() and meta["version"] == __version__
    assert meta["exact"] is True and meta["n_clusters"] == 3


def test_placement_puts_a_slice_where_it_is_in_the_world():
    c, s = np.cos(0.4), np.sin(0.4)
    rotate = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])  # mixes the sliced axis
    source = Image(
        np.zeros((5, 6, 7)), scale=(2, 3, 4), translate=(1, -2, 3), rotate=rotate,
        shear=(0.1, 0, 0.2), affine=np.diag([1.5, 1, 1, 1]),
    )  # fmt: skip
    info = RunInfo(source, (), None, Params(), {0: 3}, None)
    placed = Image(np.zeros((1, 6, 7)), **out.placement(info))
    for y, x in [(0, 0), (5, 6), (2, 3)]:
        np.testing.assert_allclose(
            placed.data_to_world((0, y, x)), source.data_to_world((3, y, x)), atol=1e-9
        )
    whole = Image(np.zeros((5, 6, 7)), **out.placement(info_for(source)))
    np.testing.assert_allclose(whole.data_to_world((4, 5, 6)), source.data_to_world((4, 5, 6)))


def test_publish_adds_then_updates_until_edited():
    viewer = ViewerModel()
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (12, 14), dtype=np.uint8)
    source = viewer.add_image(image, name="img", scale=(2, 2))
    info = info_for(source, Params(n_clusters=3))
    outputs, how = out.publish(viewer, outcome_of(image, 3), info, None)
    assert how == "added" and [layer.name for layer in viewer.layers] == [
        "img", "img k-means recolored", "img k-means labels",
    ]  # fmt: skip
    assert outputs.unedited(viewer) and not outputs.edited(viewer)

    again, how = out.publish(viewer, outcome_of(image, 4), info, outputs)
    assert how == "updated" and again is outputs and len(viewer.layers) == 3
    np.testing.assert_array_equal(outputs.labels.data, segment(image, 4).labels)
    assert outputs.unedited(viewer)

    outputs.labels.data[0, 0] = 4 if outputs.labels.data[0, 0] != 4 else 1  # an edit
    assert outputs.edited(viewer) and not outputs.unedited(viewer)
    edited = outputs.labels.data.copy()
    new, how = out.publish(viewer, outcome_of(image, 2), info, outputs)
    assert how == "edited" and new is not outputs and len(viewer.layers) == 5
    np.testing.assert_array_equal(outputs.labels.data, edited)

    viewer.layers.remove(new.recolored)  # an output removed by the user: add new layers
    assert not new.unedited(viewer)
    _, how = out.publish(viewer, outcome_of(image, 2), info, new)
    assert how == "added" and len(viewer.layers) == 6


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_digest_sees_any_change(dtype):
    labels = np.zeros((6, 5), dtype)
    before = out.digest(labels)
    assert out.digest(labels.copy()) == before
    labels[5, 4] = 1
    assert out.digest(labels) != before
    assert out.digest(np.zeros((5, 6), dtype)) != before  # same bytes, other shape
