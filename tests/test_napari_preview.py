"""The live preview in a real viewer (under Xvfb): it follows changes without Run, a stale
preview never overwrites a newer one, and no worker outlives Cancel or the viewer."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from napari_kmeans import segment
from napari_kmeans._napari import editing
from napari_kmeans._napari._qt import form
from napari_kmeans._napari._qt import widget as widget_module
from napari_kmeans._napari.jobs import InputError
from napari_kmeans._napari.outputs import KEY

LABELS = "{} k-means labels"


def preview_of(viewer, name):
    name = LABELS.format(name)
    if name not in viewer.layers:
        return None
    layer = viewer.layers[name]
    return layer if layer.metadata[KEY].get("preview") else None


def previewed(viewer, widget, k, name="img") -> bool:
    """Whether the preview of ``k`` clusters of ``name`` is in the viewer and no run is on."""
    layer = preview_of(viewer, name)
    return widget.worker is None and layer is not None and layer.metadata[KEY]["n_clusters"] == k


def no_engine_thread() -> bool:
    return not any(t.name == "napari-kmeans fit" and t.is_alive() for t in threading.enumerate())


def test_preview_follows_a_change_of_k_without_run(viewer, widget, qtbot, bands):
    image, _ = bands()
    source = viewer.add_image(image, name="img")
    c = widget.controls
    c.image.value = source
    c.n_clusters.value = 3
    c.live_preview.value = True
    qtbot.waitUntil(lambda: preview_of(viewer, "img") is not None, timeout=10_000)
    qtbot.waitUntil(lambda: widget.worker is None, timeout=10_000)
    np.testing.assert_array_equal(
        viewer.layers["img k-means labels"].data, segment(image, 3).labels
    )
    assert c.result.value.startswith("Preview of the slice on screen: 3 clusters")

    c.n_clusters.value = 4  # no click on Run
    qtbot.waitUntil(
        lambda: (
            widget.worker is None
            and viewer.layers["img k-means labels"].metadata[KEY]["n_clusters"] == 4
        ),
        timeout=10_000,
    )
    layer = viewer.layers["img k-means labels"]
    kept = segment(image, 4, match_to=segment(image, 3))  # label numbers kept across runs
    np.testing.assert_array_equal(layer.data, kept.labels)
    assert layer.metadata[KEY]["preview"] is True
    assert layer.metadata[KEY]["n_clusters"] == 4
    assert np.array_equal(source.data, image)  # the source is never modified
    # one pair of output layers, updated in place
    assert [la.name for la in viewer.layers] == [
        "img",
        "img k-means recolored",
        LABELS.format("img"),
    ]


def test_the_clusters_table_follows_previews_only_while_the_edit_tab_shows(
    viewer, widget, qtbot, monkeypatch, bands
):
    """A preview comes with every change: the Edit tab's clusters table is rebuilt once per
    preview while the tab shows, not at all while another tab shows, and is brought up to date
    when the tab is shown again."""
    image, _ = bands()
    c = widget.controls
    c.image.value = viewer.add_image(image, name="img")
    c.n_clusters.value = 3
    c.live_preview.value = True

    qtbot.waitUntil(lambda: previewed(viewer, widget, 3), timeout=10_000)
    edit = widget.edit
    assert edit.controls.labels.value is preview_of(viewer, "img")  # the table follows it
    rebuilt = []
    real = edit.table.show_layer
    monkeypatch.setattr(
        edit.table, "show_layer", lambda layer: (rebuilt.append(layer), real(layer))
    )
    tab = [widget.tabs.tabText(i) for i in range(widget.tabs.count())].index("Edit")
    assert widget.tabs.currentIndex() != tab
    c.n_clusters.value = 4
    qtbot.waitUntil(lambda: previewed(viewer, widget, 4), timeout=10_000)
    qtbot.wait(50)
    assert rebuilt == []  # hidden: not rebuilt
    widget.tabs.setCurrentIndex(tab)
    qtbot.waitUntil(lambda: edit.table.rowCount() == 4, timeout=5_000)  # shown: up to date
    assert "4 clusters explain" in edit.summary.value
    c.n_clusters.value = 5
    qtbot.waitUntil(
        lambda: previewed(viewer, widget, 5) and edit.table.rowCount() == 5, timeout=10_000
    )
    qtbot.wait(50)
    assert len(rebuilt) == 2  # once on showing the tab, once for the preview of k = 5


def test_a_preview_lays_out_the_same_pixels_once(viewer, widget, qtbot, monkeypatch, bands):
    """Stage 1 (laying the pixels out, compressing them) is kept from one preview to the next
    while the pixels and the settings it uses are the same: a change of k or of the restarts
    fits again only. Other pixels (even changed in place) or another smoothing lay out again."""
    from napari_kmeans._napari import workers

    image, _ = bands()
    source = viewer.add_image(image.copy(), name="img")
    prepared = []
    real = workers.prepare_image

    def counted(*args, **kwargs):
        prepared.append(kwargs.get("params"))
        return real(*args, **kwargs)

    monkeypatch.setattr(workers, "prepare_image", counted)
    c = widget.controls
    c.image.value = source
    c.n_clusters.value = 3
    c.live_preview.value = True

    qtbot.waitUntil(lambda: previewed(viewer, widget, 3), timeout=10_000)
    assert len(prepared) == 1
    c.n_clusters.value = 4
    qtbot.waitUntil(lambda: previewed(viewer, widget, 4), timeout=10_000)
    c.n_init.value = 2
    qtbot.waitUntil(
        lambda: widget.worker is None and widget.preview.shown == widget.preview.generation
    )
    assert len(prepared) == 1  # fitted again, not laid out again
    layer = preview_of(viewer, "img")
    kept = segment(image, 4, match_to=segment(image, 3), n_init=2)
    np.testing.assert_array_equal(layer.data, kept.labels)

    source.data[:, :20] = 255  # the pixels changed in place: laid out again
    source.refresh()
    c.n_clusters.value = 3
    qtbot.waitUntil(lambda: previewed(viewer, widget, 3), timeout=10_000)
    assert len(prepared) == 2
    assert (preview_of(viewer, "img").data[:, :20] == 3).all()  # the brightest cluster

    c.preset.value = "smoothed"  # another smoothing: laid out again
    qtbot.waitUntil(
        lambda: widget.worker is None and widget.preview.shown == widget.preview.generation
    )
    qtbot.wait(300)
    assert len(prepared) == 3 and np.all(np.asarray(prepared[-1].smoothing) > 0)


def test_preview_follows_a_stroke_on_the_mask(viewer, widget, qtbot, bands):
    image, _ = bands()
    source = viewer.add_image(image, name="img")
    mask = viewer.add_labels(np.ones(image.shape, np.uint8), name="mask")
    c = widget.controls
    c.image.value = source
    c.mask.value = mask
    c.n_clusters.value = 3
    c.live_preview.value = True
    qtbot.waitUntil(lambda: preview_of(viewer, "img") is not None, timeout=10_000)
    qtbot.waitUntil(lambda: widget.worker is None, timeout=10_000)
    assert (viewer.layers["img k-means labels"].data[:10, :10] > 0).all()
    mask.paint((5, 5), 0)  # a stroke with the eraser: the mask now excludes a disc
    qtbot.waitUntil(
        lambda: widget.worker is None and viewer.layers["img k-means labels"].data[5, 5] == 0,
        timeout=10_000,
    )
    labels = viewer.layers["img k-means labels"].data
    np.testing.assert_array_equal(labels == 0, mask.data == 0)


def test_preview_of_a_volume_is_the_slice_on_screen_and_follows_the_slider(viewer, widget, qtbot):
    rng = np.random.default_rng(1)
    volume = rng.integers(0, 255, (6, 40, 50), dtype=np.uint8)
    source = viewer.add_image(volume, name="vol")
    c = widget.controls
    c.image.value = source
    c.n_clusters.value = 3
    viewer.dims.set_current_step(0, 2)
    c.live_preview.value = True
    qtbot.waitUntil(lambda: preview_of(viewer, "vol") is not None, timeout=10_000)
    qtbot.waitUntil(lambda: widget.worker is None, timeout=10_000)
    layer = viewer.layers["vol k-means labels"]
    assert layer.data.shape == (1, 40, 50)
    np.testing.assert_array_equal(layer.data[0], segment(volume[2], 3).labels)
    np.testing.assert_allclose(layer.translate, [2, 0, 0])

    viewer.dims.set_current_step(0, 4)
    qtbot.waitUntil(
        lambda: widget.worker is None and tuple(layer.translate) == (4, 0, 0), timeout=10_000
    )
    np.testing.assert_array_equal(layer.data[0], segment(volume[4], 3).labels)
    assert layer.metadata[KEY]["parameters"]["slice"] == {"0": 4}

    # Run segments the whole scope and replaces the preview pair
    c.live_preview.value = False
    c.run.native.click()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=10_000)
    layer = viewer.layers["vol k-means labels"]
    assert layer.data.shape == volume.shape
    assert "preview" not in layer.metadata[KEY]
    assert sum(la.name.startswith("vol k-means") for la in viewer.layers) == 2


def test_a_stale_preview_never_overwrites_a_newer_one(
    viewer, widget, qtbot, held_fit, monkeypatch, bands
):
    shown = []
    real = widget_module.publish

    def recording(viewer_, outcome, info, previous, style):
        shown.append(outcome.n_clusters)
        return real(viewer_, outcome, info, previous, style)

    monkeypatch.setattr(widget_module, "publish", recording)
    image, _ = bands()
    source = viewer.add_image(image, name="img")
    c = widget.controls
    c.image.value = source
    c.n_clusters.value = 3
    c.live_preview.value = True
    qtbot.waitUntil(held_fit.started.is_set, timeout=10_000)  # the k=3 preview is held
    c.n_clusters.value = 5  # a newer change while it runs
    qtbot.waitUntil(lambda: widget.worker is None or not widget.previewing(), timeout=10_000)
    held_fit.set()  # the stale fit may now finish: its result must be dropped
    qtbot.waitUntil(lambda: shown == [5] and widget.worker is None, timeout=15_000)
    qtbot.wait(300)
    assert shown == [5]
    assert viewer.layers["img k-means labels"].data.max() == 5


def test_cancel_during_a_preview_leaves_no_worker(viewer, widget, qtbot, held_fit, bands):
    image, _ = bands()
    source = viewer.add_image(image, name="img")
    names = [la.name for la in viewer.layers]
    c = widget.controls
    c.image.value = source
    c.live_preview.value = True
    qtbot.waitUntil(held_fit.started.is_set, timeout=10_000)
    assert widget.previewing() and c.cancel.enabled and c.run.enabled
    c.cancel.native.click()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=5_000)
    held_fit.set()
    qtbot.waitUntil(no_engine_thread, timeout=10_000)
    assert [la.name for la in viewer.layers] == names


def test_closing_the_viewer_during_a_preview_leaves_no_worker(
    make_napari_viewer, qtbot, held_fit, bands
):
    from qtpy.QtCore import QThreadPool

    viewer = make_napari_viewer()
    _, dock = viewer.window.add_plugin_dock_widget("napari-kmeans", "K-means segmentation")
    image, _ = bands()
    dock.controls.image.value = viewer.add_image(image, name="img")
    dock.controls.live_preview.value = True
    qtbot.waitUntil(held_fit.started.is_set, timeout=10_000)
    viewer.close()
    held_fit.set()
    qtbot.waitUntil(no_engine_thread, timeout=10_000)
    qtbot.waitUntil(lambda: QThreadPool.globalInstance().activeThreadCount() == 0, timeout=10_000)


def test_run_while_a_preview_runs_replaces_it(viewer, widget, qtbot, held_fit, bands):
    image, _ = bands()
    source = viewer.add_image(image, name="img")
    c = widget.controls
    c.image.value = source
    c.n_clusters.value = 3
    c.live_preview.value = True
    qtbot.waitUntil(held_fit.started.is_set, timeout=10_000)
    c.live_preview.value = False
    held_fit.set()
    c.run.native.click()  # queued behind the cancelled preview
    qtbot.waitUntil(
        lambda: widget.worker is None and LABELS.format("img") in viewer.layers, timeout=15_000
    )
    layer = viewer.layers[LABELS.format("img")]
    assert "preview" not in layer.metadata[KEY]
    np.testing.assert_array_equal(layer.data, segment(image, 3).labels)


def test_editing_refuses_a_preview_with_a_pointer_to_run(viewer, widget, qtbot, bands):
    image, _ = bands()
    c = widget.controls
    c.image.value = viewer.add_image(image, name="img")
    c.live_preview.value = True
    qtbot.waitUntil(lambda: preview_of(viewer, "img") is not None, timeout=10_000)
    qtbot.waitUntil(lambda: widget.worker is None, timeout=10_000)
    with pytest.raises(InputError, match=r"live preview.*press Run"):
        editing.resolve(viewer, viewer.layers[LABELS.format("img")], widget.session.runs)


def test_new_seeds_makes_an_aligned_layer_ready_to_paint(viewer, widget):
    volume = np.zeros((4, 30, 40), np.uint16)
    source = viewer.add_image(volume, name="vol", scale=(3.0, 0.5, 0.5), translate=(1, 2, 3))
    widget.controls.image.value = source
    widget.controls.new_seeds.native.click()
    seeds = viewer.layers["vol seeds"]
    assert seeds.data.shape == volume.shape and not seeds.data.any()
    np.testing.assert_allclose(seeds.scale, source.scale)
    np.testing.assert_allclose(seeds.translate, source.translate)
    assert widget.controls.seeds.value is seeds
    assert seeds.mode == "paint" and seeds.selected_label == 1
    assert viewer.layers.selection.active is seeds
    assert seeds not in widget.controls.mask.choices  # never offered as a mask


def test_preview_of_a_multiscale_image_is_the_level_on_screen(viewer, widget, qtbot, bands):
    image, _ = bands((4096, 3840))
    pyramid = [image, image[::4, ::4], image[::16, ::16]]
    source = viewer.add_image(pyramid, name="pyr", multiscale=True, scale=(0.5, 0.5))
    c = widget.controls
    c.image.value = source
    c.n_clusters.value = 3
    viewer.reset_view()  # the whole image on screen: napari shows a coarse level
    qtbot.waitUntil(lambda: source.data_level > 0, timeout=10_000)
    level = source.data_level
    c.live_preview.value = True
    qtbot.waitUntil(lambda: preview_of(viewer, "pyr") is not None, timeout=10_000)
    qtbot.waitUntil(lambda: widget.worker is None, timeout=10_000)
    layer = viewer.layers["pyr k-means labels"]
    np.testing.assert_array_equal(layer.data, segment(pyramid[level], 3).labels)
    np.testing.assert_allclose(layer.scale, [0.5 * 4**level] * 2)  # on top of the image
    assert layer.metadata[KEY]["parameters"]["level"] == level


def test_preview_of_a_multiscale_image_follows_the_zoom(make_napari_viewer, qtbot, bands):
    viewer = make_napari_viewer(show=True)  # napari picks the level on screen as it paints
    _, widget = viewer.window.add_plugin_dock_widget("napari-kmeans", "K-means segmentation")
    image, _ = bands((4096, 3840))
    pyramid = [image, image[::4, ::4], image[::16, ::16]]
    source = viewer.add_image(pyramid, name="pyr", multiscale=True, scale=(0.5, 0.5))
    c = widget.controls
    c.image.value = source
    c.n_clusters.value = 3
    viewer.reset_view()
    qtbot.waitUntil(lambda: source.data_level > 0, timeout=10_000)
    coarse = source.data_level
    c.live_preview.value = True
    qtbot.waitUntil(lambda: preview_of(viewer, "pyr") is not None, timeout=10_000)
    qtbot.waitUntil(lambda: widget.worker is None, timeout=10_000)
    layer = viewer.layers["pyr k-means labels"]
    assert layer.metadata[KEY]["parameters"]["level"] == coarse

    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera  # napari < 0.9
    camera.zoom *= 32  # zoomed in: napari shows the full-resolution level
    qtbot.waitUntil(lambda: source.data_level == 0, timeout=10_000)
    qtbot.waitUntil(
        lambda: widget.worker is None and layer.metadata[KEY]["parameters"].get("level", 0) == 0,
        timeout=20_000,
    )
    np.testing.assert_array_equal(layer.data, segment(image, 3).labels)
    np.testing.assert_allclose(layer.scale, [0.5, 0.5])  # on top of the image


def band_mode(labels, truth, band):
    values, counts = np.unique(labels[truth == band], return_counts=True)
    return int(values[np.argmax(counts)])


def test_seeds_set_the_label_ids_and_the_preview_follows_a_scribble(viewer, widget, qtbot, bands):
    image, truth = bands()
    source = viewer.add_image(image, name="img")
    c = widget.controls
    c.image.value = source
    c.n_clusters.value = 3
    c.new_seeds.native.click()
    seeds = viewer.layers["img seeds"]
    c.live_preview.value = True
    qtbot.waitUntil(lambda: preview_of(viewer, "img") is not None, timeout=10_000)
    qtbot.waitUntil(lambda: widget.worker is None, timeout=10_000)
    labels = viewer.layers["img k-means labels"]
    assert band_mode(labels.data, truth, 2) == 3  # unseeded: dark to bright

    seeds.selected_label = 1
    seeds.brush_size = 5
    seeds.paint((48, 80), 1)  # a stroke of class 1 on the brightest band; no Run
    qtbot.waitUntil(
        lambda: widget.worker is None and band_mode(labels.data, truth, 2) == 1, timeout=10_000
    )
    assert (labels.data[truth == 2] == 1).mean() > 0.99  # the seeded class keeps label 1
    assert labels.metadata[KEY]["model"]["seed_means"] is not None


def test_label_ids_stay_put_when_k_changes(viewer, widget, qtbot, run_and_wait, bands):
    image, truth = bands(levels=(20, 120, 220))
    source = viewer.add_image(image, name="img")
    c = widget.controls
    c.image.value = source
    c.n_clusters.value = 3
    c.seeds.value = viewer.add_labels(np.zeros(image.shape, np.uint8), name="s")
    viewer.layers["s"].data[40:50, 70:90] = 1  # class 1: the brightest band
    viewer.layers["s"].refresh()
    run_and_wait(widget)
    first = viewer.layers["img k-means labels"].data.copy()
    ids = [band_mode(first, truth, b) for b in range(3)]
    assert ids[2] == 1 and sorted(ids) == [1, 2, 3]

    c.seeds.value = None  # no seeds now: without kept IDs the brightest band would be 3
    c.seed.value = 5
    run_and_wait(widget)
    second = viewer.layers["img k-means labels"].data
    assert [band_mode(second, truth, b) for b in range(3)] == ids

    c.keep_ids.value = False
    run_and_wait(widget)
    third = viewer.layers["img k-means labels"].data
    assert [band_mode(third, truth, b) for b in range(3)] == [1, 2, 3]


def test_confidence_image_is_made_on_request(viewer, widget, qtbot, run_and_wait, bands):
    image, truth = bands()
    source = viewer.add_image(image, name="img", scale=(2.0, 2.0))
    c = widget.controls
    c.image.value = source
    c.n_clusters.value = 3
    c.confidence.value = True
    run_and_wait(widget)
    layer = viewer.layers["img k-means confidence"]
    model = segment(image, 3).model
    np.testing.assert_allclose(layer.data, model.confidence(image), atol=1e-6)
    assert (
        layer.data.dtype == np.float32 and 0 <= np.nanmin(layer.data) <= np.nanmax(layer.data) <= 1
    )
    np.testing.assert_allclose(layer.scale, source.scale)
    assert layer not in c.image.choices  # never offered as a source
    # pixels far from the cluster boundaries are surer than the noisy ones between
    assert layer.data[truth == 0].mean() > 0.5


def test_the_share_explained_is_shown_next_to_the_inertia(viewer, widget, run_and_wait, bands):
    image, _ = bands()
    c = widget.controls
    c.image.value = viewer.add_image(image, name="img")
    c.n_clusters.value = 3
    run_and_wait(widget)
    result = segment(image, 3)
    values = image.astype(float).ravel()
    share = 1 - result.inertia / ((values - values.mean()) ** 2).sum()
    summary = widget.edit.summary.value
    assert f"explain {share:.1%} of the variation" in summary
    assert f"inertia {result.inertia:.4g}" in summary
    assert f"{share:.0%} of the variation" in c.result.value


def test_each_frame_keeps_ids_through_a_drifting_timelapse(viewer, widget, run_and_wait, bands):
    """Red and blue classes stay; a green class brightens past both: ordered by brightness
    frame by frame its label would change, matched frame to frame it keeps its label."""
    rng = np.random.default_rng(0)
    _, band = bands(shape=(40, 60))
    frames = []
    for t in range(5):
        colours = np.array([[150, 30, 30], [30, 60 + 35 * t, 30], [30, 30, 200]], float)
        noisy = colours[band] + rng.normal(0, 3, (*band.shape, 3))
        frames.append(np.clip(noisy, 0, 255).astype(np.uint8))
    movie = np.stack(frames)
    truth = np.stack([band] * 5)
    source = viewer.add_image(movie, name="movie", rgb=True)
    c = widget.controls
    c.image.value = source
    c.n_clusters.value = 3
    c.fit_on.value = form.FIT_FRAMES
    run_and_wait(widget)
    labels = viewer.layers["movie k-means labels"]
    assert labels.data.shape == movie.shape[:-1]
    ids = [[band_mode(labels.data[t], truth[t], b) for b in range(3)] for t in range(5)]
    assert ids == [ids[0]] * 5  # a label means the same class in every frame
    fresh = segment(movie[4], 3).labels  # ordered by brightness on its own: another numbering
    assert [band_mode(fresh, truth[4], b) for b in range(3)] != ids[0]
    assert labels.metadata[KEY]["parameters"]["fit_on"] == "each frame"
    for t in range(5):
        assert (labels.data[t] == np.array(ids[t])[truth[t]]).mean() > 0.99


def test_seeds_and_confidence_on_a_lazy_image(viewer, widget, run_and_wait, bands):
    import dask.array as da

    image, truth = bands((96, 96))
    source = viewer.add_image(da.from_array(image, chunks=(32, 48)), name="lazy")
    seeds = np.zeros(image.shape, np.uint8)
    seeds[40:50, 80:90] = 1  # class 1: the brightest band
    c = widget.controls
    c.image.value = source
    c.n_clusters.value = 3
    c.seeds.value = viewer.add_labels(seeds, name="strokes")
    c.confidence.value = True
    run_and_wait(widget)
    labels = viewer.layers["lazy k-means labels"]
    sure = viewer.layers["lazy k-means confidence"]
    assert isinstance(labels.data, da.Array) and isinstance(sure.data, da.Array)
    computed = np.asarray(labels.data)
    assert band_mode(computed, truth, 2) == 1  # the seeded class keeps label 1
    model = segment(image, 3, seeds=seeds).model
    np.testing.assert_array_equal(computed, model.predict(image))
    np.testing.assert_allclose(np.asarray(sure.data), model.confidence(image), atol=1e-6)
