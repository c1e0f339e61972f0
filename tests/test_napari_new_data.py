"""The live preview and the widget following new data given to their input layers, and the
lazy confidence map with a recipe on pyramids: hostile cases (under Xvfb)."""

from __future__ import annotations

import threading
import warnings

import numpy as np
import pytest

from napari_kmeans import segment

LABELS = "{} k-means labels"


def _previewing(viewer, widget, qtbot, image, **settings):
    source = viewer.add_image(image, name="img")
    c = widget.controls
    c.image.value, c.n_clusters.value, c.keep_ids.value = source, 3, False
    for name, value in settings.items():
        getattr(c, name).value = value
    c.live_preview.value = True
    qtbot.waitUntil(lambda: widget.worker is None and LABELS.format("img") in viewer.layers,
                    timeout=15_000)  # fmt: skip
    return source


def _settle(widget, qtbot):
    qtbot.wait(400)
    qtbot.waitUntil(lambda: widget.worker is None, timeout=15_000)


def _segment(image, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fewer distinct values than clusters
        return segment(image, 3, **kw).labels


@pytest.mark.parametrize(
    "make",
    [
        lambda b: b.astype(np.float32) / 255,
        lambda b: b > 100,
        lambda b: b.astype(np.uint16) * 200,
        lambda b: np.stack([b[::-1], b]),  # a volume now: its slice on screen
        lambda b: b[:50, :70],
        lambda b: __import__("dask.array").array.from_array(b, chunks=(40, 40)),
        lambda b: np.where(np.arange(96)[:, None] < 5, np.nan, b.astype(np.float32)),
        lambda b: np.full_like(b, 7),
    ],
    ids=["float", "bool", "uint16", "3-D", "smaller", "dask", "NaN rows", "all equal"],
)
def test_new_data_of_another_kind_is_previewed(viewer, widget, qtbot, bands, make):
    source = _previewing(viewer, widget, qtbot, bands(seed=1)[0])
    new = make(bands(seed=2)[0])
    source.data = new
    _settle(widget, qtbot)
    plane = np.asarray(new if new.ndim == 2 else new[viewer.dims.current_step[0]])
    shown = np.asarray(viewer.layers[LABELS.format("img")].data)
    if shown.ndim == 3:
        shown = shown[viewer.dims.current_step[0]]
    assert widget.controls.result.value.startswith("Preview of the slice on screen")
    np.testing.assert_array_equal(shown, _segment(plane))


@pytest.mark.parametrize(
    ("new", "said"),
    [
        (np.full((96, 96), np.nan, np.float32), "no pixel is left to cluster"),
        (np.linspace(5e300, 2e302, 96 * 96).reshape(96, 96), "more than the 1e+100"),
    ],
    ids=["all NaN", "huge values"],
)
def test_new_data_refused_leaves_the_preview_and_the_next_data_previews(
    viewer, widget, qtbot, bands, new, said
):
    source = _previewing(viewer, widget, qtbot, bands(seed=1)[0])
    labels = viewer.layers[LABELS.format("img")]
    before, names = labels.data.copy(), [layer.name for layer in viewer.layers]
    source.data = new
    _settle(widget, qtbot)
    assert widget.controls.result.value.startswith("Preview not run: ")
    assert said in widget.controls.result.value
    np.testing.assert_array_equal(labels.data, before)
    assert [layer.name for layer in viewer.layers] == names  # none added, none removed
    good = bands(seed=3)[0]
    source.data = good
    _settle(widget, qtbot)
    np.testing.assert_array_equal(labels.data, _segment(good))


def test_an_extra_channel_of_another_shape_is_named_and_the_next_valid_data_previews(
    viewer, widget, qtbot, bands
):
    extra = viewer.add_image(bands(seed=3)[0], name="extra")
    source = _previewing(viewer, widget, qtbot, bands(seed=1)[0], extra_channels=[extra])
    labels = viewer.layers[LABELS.format("img")]
    before = labels.data.copy()
    extra.data = bands((50, 60), seed=4)[0]
    _settle(widget, qtbot)
    c = widget.controls
    assert c.result.value.startswith("Preview not run: extra channel 'extra' has shape (50, 60)")
    assert "Deselect it" in c.result.value and list(c.extra_channels.value) == [extra]
    np.testing.assert_array_equal(labels.data, before)
    new = bands(seed=5)[0]
    extra.data = new
    _settle(widget, qtbot)
    np.testing.assert_array_equal(
        labels.data, _segment(np.stack([source.data, new], -1), channel_axis=-1)
    )


def test_a_script_giving_the_image_then_its_extra_channel_a_new_shape_keeps_the_channel(
    viewer, widget, qtbot, bands
):
    """The widget follows new data in the image layers: the scope and extra channels offered
    follow the new shape (they stayed as for the old one); an extra channel given its new
    shape after the image stays chosen."""
    extra = viewer.add_image(bands(seed=3)[0], name="extra")
    source = _previewing(viewer, widget, qtbot, bands(seed=1)[0], extra_channels=[extra])
    small = viewer.add_image(bands((50, 60), seed=4)[0], name="small")
    c = widget.controls
    c.image.value, c.extra_channels.value = source, [extra]  # adding 'small' chose it
    _settle(widget, qtbot)
    assert not c.scope.enabled and list(c.extra_channels.choices) == [extra]
    image, channel = bands((50, 60), seed=5)[0], bands((50, 60), seed=6)[0]
    source.data = image
    extra.data = channel
    _settle(widget, qtbot)
    assert list(c.extra_channels.choices) == [extra, small]  # 'small' was not offered
    assert list(c.extra_channels.value) == [extra]
    want = _segment(np.stack([image, channel], -1), channel_axis=-1)
    np.testing.assert_array_equal(viewer.layers[LABELS.format("img")].data, want)
    source.data = np.stack([image, image[::-1]])
    _settle(widget, qtbot)
    assert c.scope.enabled  # a volume now: 'current slice' can be chosen (it stayed hidden)


def test_twenty_new_frames_in_a_row_show_the_last(viewer, widget, qtbot, bands):
    source = _previewing(viewer, widget, qtbot, bands(seed=1)[0])
    frames = [bands(seed=10 + i, levels=(10 + i, 120, 220 - i))[0] for i in range(20)]
    for frame in frames:
        source.data = frame
        qtbot.wait(5)
    _settle(widget, qtbot)
    np.testing.assert_array_equal(viewer.layers[LABELS.format("img")].data, _segment(frames[-1]))


def test_closing_during_new_frames_leaves_no_worker(make_napari_viewer, qtbot, held_fit, bands):
    from qtpy.QtCore import QThreadPool

    viewer = make_napari_viewer()
    _, dock = viewer.window.add_plugin_dock_widget("napari-kmeans", "K-means segmentation")
    source = viewer.add_image(bands()[0], name="img")
    dock.controls.image.value = source
    dock.controls.live_preview.value = True
    qtbot.waitUntil(held_fit.started.is_set, timeout=10_000)
    for i in range(20):
        source.data = bands(seed=i)[0]
    viewer.close()
    held_fit.set()

    def no_engine_thread():
        return not any(
            t.name == "napari-kmeans fit" and t.is_alive() for t in threading.enumerate()
        )

    qtbot.waitUntil(no_engine_thread, timeout=10_000)
    qtbot.waitUntil(lambda: QThreadPool.globalInstance().activeThreadCount() == 0, timeout=10_000)
    source.data = bands(seed=99)[0]  # no widget left to answer: nothing raises


def test_new_data_does_not_overwrite_edited_labels(viewer, widget, qtbot, bands, run_and_wait):
    source = viewer.add_image(bands(seed=1)[0], name="img")
    c = widget.controls
    c.image.value, c.n_clusters.value, c.keep_ids.value = source, 3, False
    run_and_wait(widget)
    labels = viewer.layers[LABELS.format("img")]
    labels.paint((5, 5), 2)
    edited = labels.data.copy()
    c.live_preview.value = True
    new = bands(seed=2)[0]
    source.data = new
    _settle(widget, qtbot)
    np.testing.assert_array_equal(labels.data, edited)
    np.testing.assert_array_equal(viewer.layers[LABELS.format("img") + " [1]"].data, _segment(new))


@pytest.mark.parametrize("preset", ["smoothed", "texture"])
def test_pyramid_confidence_with_a_preset_and_an_extra_channel(
    viewer, widget, run_and_wait, bands, preset
):
    """Each level's lazy map equals that level's in-memory confidence (model at its scale)."""
    from napari_kmeans import KMeansModel
    from napari_kmeans._napari.workers import model_at_level

    image = bands((128, 120), seed=1)[0]
    extra = bands((128, 120), levels=(200, 30, 120), seed=2)[0]
    levels = [(image[::f, ::f], extra[::f, ::f]) for f in (1, 2, 4)]
    source = viewer.add_image([a for a, _ in levels], name="img", multiscale=True)
    other = viewer.add_image([b for _, b in levels], name="ex", multiscale=True)
    c = widget.controls
    c.image.value, c.n_clusters.value, c.extra_channels.value = source, 3, [other]
    c.preset.value, c.confidence.value = preset, True
    run_and_wait(widget)
    sure = viewer.layers["img k-means confidence"].data
    meta = viewer.layers[LABELS.format("img")].metadata["kmeans"]["model"]
    model = KMeansModel.from_dict(meta)
    assert model.recipe is not None and not model.recipe.is_plain
    for level, (a, b) in zip(sure, levels, strict=True):
        want = model_at_level(model, image.shape, a.shape).confidence(np.stack([a, b], -1))
        np.testing.assert_allclose(np.asarray(level), want, rtol=1e-5, atol=1e-6)


def test_dask_pyramid_confidence_with_a_mask_is_nan_where_the_labels_are_masked(
    viewer, widget, run_and_wait, bands
):
    import dask.array as da

    image = bands((128, 120), seed=1)[0]
    levels = [da.from_array(image[::f, ::f], chunks=16) for f in (1, 2, 4)]
    source = viewer.add_image(levels, name="img", multiscale=True)
    mask = np.ones(image.shape, np.uint8)
    mask[40:90, 10:50] = 0
    c = widget.controls
    c.image.value, c.n_clusters.value = source, 3
    c.mask.value = viewer.add_labels(mask, name="m")
    c.preset.value, c.confidence.value = "smoothed", True
    run_and_wait(widget)
    sure = viewer.layers["img k-means confidence"].data
    labels = viewer.layers[LABELS.format("img")].data
    assert [np.isnan(np.asarray(s)).sum() for s in sure] == [2000, 500, 130]
    for level, found in zip(sure, labels, strict=True):
        np.testing.assert_array_equal(np.isnan(np.asarray(level)), np.asarray(found) == 0)


def test_new_data_during_a_preview_shows_only_the_new(viewer, widget, qtbot, held_fit, bands):
    source = viewer.add_image(bands(seed=1)[0], name="img")
    c = widget.controls
    c.image.value, c.n_clusters.value, c.keep_ids.value = source, 3, False
    c.live_preview.value = True
    qtbot.waitUntil(held_fit.started.is_set, timeout=10_000)  # the old data's preview is held
    new = bands((50, 70), seed=2)[0]
    source.data = new
    shapes = []
    viewer.layers.events.inserted.connect(lambda e: shapes.append(e.value.data.shape))
    held_fit.set()
    _settle(widget, qtbot)
    assert set(shapes) == {(50, 70)}  # the stale (96, 96) preview was never shown
    np.testing.assert_array_equal(viewer.layers[LABELS.format("img")].data, _segment(new))
