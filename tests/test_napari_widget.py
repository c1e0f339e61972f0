"""The dock widget end to end in a real viewer (under Xvfb), loaded through the manifest."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from qtpy.QtCore import QTimer

from napari_kmeans import __version__, segment
from napari_kmeans._napari import inputs, jobs
from napari_kmeans._napari._qt import form
from napari_kmeans._napari.outputs import palette

LABELS, RECOLORED = "{} k-means labels", "{} k-means recolored"


def outputs(viewer, name):
    return viewer.layers[LABELS.format(name)], viewer.layers[RECOLORED.format(name)]


def kmeans_bars():
    from napari.utils import progress

    return [p.desc.rstrip(": ") for p in progress._all_instances if p.desc.startswith("k-means")]


def choose(widget, layer, k=3, seed=0):
    widget.controls.image.value = layer
    widget.controls.n_clusters.value = k
    widget.controls.seed.value = seed


def test_rgb_sample_run_matches_segment(viewer, widget, run_and_wait):
    viewer.open_sample("napari-kmeans", "coffee")
    source = viewer.layers["coffee"]
    before = source.data.copy()
    assert widget.controls.image.value is source  # follows the active layer
    choose(widget, source, k=4, seed=7)
    run_and_wait(widget)

    expected = segment(before, 4, seed=7)
    labels, recolored = outputs(viewer, "coffee")
    np.testing.assert_array_equal(labels.data, expected.labels)
    np.testing.assert_array_equal(recolored.data, expected.recolored)
    assert recolored.rgb and recolored.data.dtype == np.uint8
    np.testing.assert_array_equal(source.data, before)  # the source is never modified
    shown = np.array(labels.metadata["kmeans"]["cluster_colors"])  # the table's swatches
    np.testing.assert_allclose(shown, expected.centers / 255, atol=1e-6)
    got = np.array([labels.colormap.color_dict[i][:3] for i in range(1, 5)])
    np.testing.assert_allclose(got, palette(4), atol=1e-6)  # distinct colours by default
    assert labels.colormap.color_dict[0][3] == 0  # 0 is transparent
    assert not recolored.visible  # the recoloured image is made, hidden: the source shows

    table = labels.features
    np.testing.assert_array_equal(table["label"], [1, 2, 3, 4])
    np.testing.assert_allclose(
        table[["center_red", "center_green", "center_blue"]], expected.centers
    )
    np.testing.assert_array_equal(table["count"], expected.counts)
    np.testing.assert_allclose(table["fraction"], expected.counts / expected.counts.sum())
    meta = labels.metadata["kmeans"]
    assert meta["parameters"]["n_clusters"] == 4 and meta["seed"] == 7
    assert meta["parameters"]["n_init"] == 4 and meta["parameters"]["max_iter"] == 300
    assert meta["model"] == expected.model.to_dict()
    assert meta["version"] == __version__
    assert meta["inertia"] == pytest.approx(expected.inertia, rel=1e-9)
    assert meta["n_iter"] == expected.n_iter and meta["exact"] is False
    assert recolored.metadata["kmeans"]["role"] == "recolored"
    result = widget.controls.result.value
    centers, n = expected.model.centers, expected.counts
    between = n @ ((centers - n @ centers / n.sum()) ** 2).sum(axis=1)
    share = between / (between + expected.inertia)
    assert result.startswith("4 clusters · they explain ") and f"{share:.0%} of the" in result
    tip = widget.controls.result.tooltip  # the numbers behind it
    assert f"Lloyd iterations: {expected.n_iter}" in tip and f"{expected.inertia:.6g}" in tip


def test_gray_transforms_units_and_display(viewer, widget, run_and_wait):
    rng = np.random.default_rng(1)
    image = rng.normal(100, 30, (30, 40)).astype(np.float32)
    source = viewer.add_image(
        image, name="gray", scale=(2.0, 0.5), translate=(10.0, -3.0), rotate=30,
        colormap="viridis", contrast_limits=(50, 150), gamma=0.8,
    )  # fmt: skip
    # set afterwards: add_image refuses sequences for these two in napari < 0.6
    source.units, source.axis_labels = ("mm", "mm"), ("row", "col")
    choose(widget, source, k=3)
    run_and_wait(widget)
    expected = segment(image, 3)
    labels, recolored = outputs(viewer, "gray")
    np.testing.assert_array_equal(labels.data, expected.labels)
    np.testing.assert_array_equal(recolored.data, expected.recolored)
    assert expected.exact and labels.metadata["kmeans"]["exact"] is True
    for layer in (labels, recolored):
        np.testing.assert_allclose(layer.scale, [2.0, 0.5])
        np.testing.assert_allclose(layer.translate, [10.0, -3.0])
        np.testing.assert_allclose(layer.rotate, source.rotate)
        np.testing.assert_allclose(layer.affine.affine_matrix, source.affine.affine_matrix)
        assert tuple(map(str, layer.units)) == ("millimeter", "millimeter")
        assert tuple(layer.axis_labels) == ("row", "col")
    assert recolored.colormap.name == "viridis" and recolored.contrast_limits == [50, 150]
    assert recolored.gamma == pytest.approx(0.8)
    # grayscale labels are coloured as the source shows the centre: its colormap and limits
    norm = np.clip((expected.centers[:, 0] - 50) / 100, 0, 1) ** 0.8
    want = source.colormap.map(norm)[:, :3]
    got = np.array(labels.metadata["kmeans"]["cluster_colors"])
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert labels.colormap.color_dict[1][3] == 0  # grey data: the darkest cluster is see-through
    np.testing.assert_array_equal(labels.features["center_value"], expected.centers[:, 0])


def test_cancel_leaves_layers_untouched(viewer, widget, held_fit, qtbot, notes):
    source = viewer.add_image(np.arange(400, dtype=np.uint16).reshape(20, 20), name="img")
    choose(widget, source)
    names = [layer.name for layer in viewer.layers]
    widget.controls.run.native.click()
    qtbot.waitUntil(held_fit.started.is_set, timeout=5000)
    assert widget.worker is not None and widget.controls.cancel.enabled
    assert len(kmeans_bars()) == 1  # a progress bar in the activity dock
    qtbot.waitUntil(lambda: kmeans_bars() == ["k-means: img: fitting"], timeout=5000)
    widget.controls.cancel.native.click()
    # the fit is still held, so the run must stop at its next progress step
    qtbot.waitUntil(lambda: widget.worker is None, timeout=5000)
    assert not held_fit.is_set()
    assert [layer.name for layer in viewer.layers] == names
    assert widget.controls.result.value.startswith("Cancelled")
    assert widget.controls.run.enabled and not widget.controls.cancel.enabled
    assert kmeans_bars() == []  # closed


def test_event_loop_keeps_ticking_during_a_run(viewer, widget, qtbot, run_and_wait):
    rng = np.random.default_rng(2)
    image = rng.random((900, 900, 3), dtype=np.float32)  # no compression: sample + Lloyd
    source = viewer.add_image(image, name="noise", rgb=True)
    choose(widget, source, k=8)
    ticks = []
    timer = QTimer()
    timer.setInterval(5)
    timer.timeout.connect(lambda: ticks.append(widget.worker is not None))
    timer.start()
    steps = []
    widget.controls.run.native.click()
    widget.worker.yielded.connect(steps.append)
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    timer.stop()
    assert sum(ticks) >= 3  # the timer fired several times while the worker was running
    texts = [s.text for s in steps]
    assert {"fitting", "labelling"} <= set(texts)
    assert texts.index("fitting") < texts.index("labelling")
    fractions = [s.fraction for s in steps]
    assert fractions == sorted(fractions) and fractions[0] >= 0 and fractions[-1] < 1
    labels, _ = outputs(viewer, "noise")
    np.testing.assert_array_equal(labels.data, segment(image, 8).labels)


def test_rerun_updates_in_place_until_labels_are_edited(viewer, widget, run_and_wait, notes):
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (25, 30), dtype=np.uint8)
    source = viewer.add_image(image, name="img")
    choose(widget, source, k=3)
    widget.controls.keep_ids.value = False  # fresh IDs, as segment gives (kept IDs: elsewhere)
    run_and_wait(widget)
    labels, recolored = outputs(viewer, "img")
    n_layers = len(viewer.layers)

    widget.controls.n_clusters.value = 4
    run_and_wait(widget)
    assert len(viewer.layers) == n_layers
    assert outputs(viewer, "img") == (labels, recolored)  # same layer objects, updated
    np.testing.assert_array_equal(labels.data, segment(image, 4).labels)
    assert labels.metadata["kmeans"]["parameters"]["n_clusters"] == 4
    assert "updated in place" in widget.controls.result.value

    labels.paint((0, 0), 1 if labels.data[0, 0] != 1 else 2)  # the user edits the labels
    edited = labels.data.copy()
    widget.controls.n_clusters.value = 2
    run_and_wait(widget)
    assert len(viewer.layers) == n_layers + 2
    np.testing.assert_array_equal(labels.data, edited)  # the edited layer is untouched
    new_labels = viewer.layers[-1]
    assert new_labels is not labels and new_labels.name.startswith("img k-means labels")
    np.testing.assert_array_equal(new_labels.data, segment(image, 2).labels)
    assert "edited" in widget.controls.result.value
    assert any("edited" in message for message, _ in notes)

    widget.controls.n_clusters.value = 3  # the new layers are unedited: updated in place
    run_and_wait(widget)
    assert len(viewer.layers) == n_layers + 2
    np.testing.assert_array_equal(new_labels.data, segment(image, 3).labels)


def test_rgba_transparent_pixels_get_label_zero(viewer, widget, run_and_wait):
    rng = np.random.default_rng(4)
    image = rng.integers(0, 256, (20, 24, 4), dtype=np.uint8)
    image[..., 3] = 255
    image[:5, :, 3] = 0
    source = viewer.add_image(image, name="rgba", rgb=True)
    choose(widget, source, k=3)
    run_and_wait(widget)
    labels, recolored = outputs(viewer, "rgba")
    expected = segment(image, 3)
    np.testing.assert_array_equal(labels.data, expected.labels)
    assert (labels.data[:5] == 0).all()
    np.testing.assert_array_equal(recolored.data, expected.recolored)


def test_lab_colour_space(viewer, widget, run_and_wait):
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    source = viewer.add_image(image, name="rgb", rgb=True)
    choose(widget, source, k=3)
    assert widget.controls.color_space.enabled
    widget.controls.color_space.value = "lab"
    run_and_wait(widget)
    labels, _ = outputs(viewer, "rgb")
    np.testing.assert_array_equal(labels.data, segment(image, 3, color_space="lab").labels)
    assert labels.metadata["kmeans"]["parameters"]["color_space"] == "lab"


def test_3d_whole_data_and_current_slice(viewer, widget, run_and_wait):
    rng = np.random.default_rng(6)
    stack = rng.integers(0, 1000, (4, 20, 25), dtype=np.uint16)
    source = viewer.add_image(stack, name="stack", scale=(3.0, 1.0, 1.0), translate=(5, 0, 0))
    choose(widget, source, k=3)
    assert widget.controls.scope.enabled
    run_and_wait(widget)
    labels, recolored = outputs(viewer, "stack")
    np.testing.assert_array_equal(labels.data, segment(stack, 3).labels)
    np.testing.assert_array_equal(recolored.data, segment(stack, 3).recolored)

    viewer.dims.set_current_step(0, 2)
    widget.controls.scope.value = form.SLICE
    labels.paint((0, 0, 0), 3 if labels.data[0, 0, 0] != 3 else 2)  # keep the first result
    run_and_wait(widget)
    sliced = viewer.layers[-1]
    expected = segment(stack[2], 3)
    assert sliced.data.shape == (1, 20, 25)
    np.testing.assert_array_equal(sliced.data[0], expected.labels)
    np.testing.assert_allclose(sliced.translate, [5 + 2 * 3.0, 0, 0])
    np.testing.assert_allclose(sliced.scale, [3.0, 1.0, 1.0])
    assert sliced.metadata["kmeans"]["parameters"]["slice"] == {"0": 2}


def test_4d_timelapse(viewer, widget, run_and_wait):
    rng = np.random.default_rng(7)
    movie = rng.random((3, 2, 12, 14)).astype(np.float32)
    source = viewer.add_image(movie, name="movie")
    choose(widget, source, k=4)
    run_and_wait(widget)
    labels, recolored = outputs(viewer, "movie")
    expected = segment(movie, 4)
    np.testing.assert_array_equal(labels.data, expected.labels)
    np.testing.assert_array_equal(recolored.data, expected.recolored)


def test_multichannel_from_one_layer_per_channel(viewer, widget, run_and_wait):
    rng = np.random.default_rng(8)
    a = rng.integers(0, 4000, (3, 16, 18), dtype=np.uint16)
    b = rng.integers(0, 4000, (3, 16, 18), dtype=np.uint16)
    viewer.add_image(np.zeros((5, 5)), name="other shape")
    layer_a = viewer.add_image(a, name="a", colormap="magenta", blending="additive")
    layer_b = viewer.add_image(b, name="b", colormap="green", blending="additive")
    choose(widget, layer_a, k=3)
    assert [layer.name for layer in widget.controls.extra_channels.choices] == ["b"]
    widget.controls.extra_channels.value = [layer_b]
    run_and_wait(widget)
    labels, recolored = outputs(viewer, "a")
    expected = segment(np.stack([a, b], axis=-1), 3, channel_axis=-1)
    np.testing.assert_array_equal(labels.data, expected.labels)
    np.testing.assert_array_equal(recolored.data, expected.recolored[..., 0])
    assert recolored.data.shape == a.shape and recolored.data.dtype == a.dtype
    np.testing.assert_allclose(labels.features["center_a"], expected.centers[:, 0])
    np.testing.assert_allclose(labels.features["center_b"], expected.centers[:, 1])
    assert labels.metadata["kmeans"]["parameters"]["extra_channels"] == ["b"]


def test_labels_and_shapes_masks(viewer, widget, run_and_wait):
    rng = np.random.default_rng(9)
    image = rng.integers(0, 256, (30, 40), dtype=np.uint8)
    source = viewer.add_image(image, name="img", scale=(2, 2))
    mask = np.zeros((30, 40), np.uint8)
    mask[5:20, 10:30] = 1
    mask_layer = viewer.add_labels(mask, name="mask", scale=(2, 2))
    choose(widget, source, k=3)
    widget.controls.mask.value = mask_layer
    run_and_wait(widget)
    labels, _ = outputs(viewer, "img")
    np.testing.assert_array_equal(labels.data, segment(image, 3, mask=mask > 0).labels)
    assert labels.metadata["kmeans"]["parameters"]["mask"] == "mask"

    # a rectangle drawn in world coordinates (the image has scale 2): rows 5..19, cols 10..29
    shapes = viewer.add_shapes([[[10, 20], [10, 58], [38, 58], [38, 20]]], name="roi")
    widget.controls.mask.value = shapes
    labels.paint((0, 0), 1)  # keep the first result; the next run adds new layers
    run_and_wait(widget)
    got = viewer.layers[-1].data
    expected_mask = shapes.to_labels((60, 80))[::2, ::2] > 0
    assert 0 < expected_mask.sum() < image.size
    np.testing.assert_array_equal(got > 0, expected_mask)
    np.testing.assert_array_equal(got, segment(image, 3, mask=expected_mask).labels)


def test_dask_layer(viewer, widget, run_and_wait):
    rng = np.random.default_rng(10)
    image = rng.integers(0, 1 << 12, (4, 30, 30), dtype=np.uint16)
    source = viewer.add_image(da.from_array(image, chunks=(1, 15, 15)), name="lazy")
    choose(widget, source, k=3)
    run_and_wait(widget)
    labels, recolored = outputs(viewer, "lazy")
    np.testing.assert_array_equal(labels.data, segment(image, 3).labels)
    assert isinstance(source.data, da.Array)  # the source stays lazy and unchanged
    assert recolored.data.dtype == np.uint16


def test_multiscale_fits_low_level_labels_full_level(viewer, widget, run_and_wait, monkeypatch):
    monkeypatch.setattr(inputs, "FIT_PIXELS", 200)
    rng = np.random.default_rng(11)
    full = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    low = full[::2, ::2]
    source = viewer.add_image([full, da.from_array(low)], name="pyramid", rgb=True, multiscale=True)
    choose(widget, source, k=3)
    run_and_wait(widget)
    labels, recolored = outputs(viewer, "pyramid")
    model = segment(low, 3).model
    assert labels.multiscale and labels.data.shape == (40, 48)
    np.testing.assert_array_equal(labels.data[0], model.predict(full))
    np.testing.assert_array_equal(recolored.data[0], model.recolor(full, model.predict(full)))
    meta = labels.metadata["kmeans"]
    assert meta["parameters"]["fit_level"] == 1 and meta["exact"] is False
    assert meta["model"] == model.to_dict()


# -- bad input: a notification, no traceback, nothing changed ----------------------------------


def errors(notes):
    return [message for message, severity in notes if severity == "error"]


def test_no_image_layer(viewer, widget, run_and_wait, notes):
    run_and_wait(widget)
    assert len(viewer.layers) == 0
    assert any("No image layer" in m for m in errors(notes))
    assert widget.controls.result.value.startswith("Not run: No image layer")


def test_all_nan_layer(viewer, widget, run_and_wait, notes):
    source = viewer.add_image(np.full((10, 12), np.nan, np.float32), name="nan")
    choose(widget, source)
    run_and_wait(widget)
    assert [layer.name for layer in viewer.layers] == ["nan"]
    assert any("no pixel is left" in m for m in errors(notes))


def test_fewer_distinct_values_than_k_warns(viewer, widget, run_and_wait, notes):
    image = np.repeat(np.array([[0, 50, 200]], np.uint8), 4, axis=0)
    source = viewer.add_image(image, name="three")
    choose(widget, source, k=6)
    run_and_wait(widget)
    labels, _ = outputs(viewer, "three")
    assert labels.metadata["kmeans"]["n_clusters"] == 3
    np.testing.assert_array_equal(labels.data, np.repeat([[1, 2, 3]], 4, axis=0))
    assert any("only 3 distinct values" in m and s == "warning" for m, s in notes)


def test_incompatible_extra_channel(viewer, widget, run_and_wait, notes):
    a = viewer.add_image(np.zeros((10, 10), np.uint8), name="a")
    b = viewer.add_image(np.ones((10, 10), np.uint8), name="b")
    choose(widget, a)
    widget.controls.extra_channels.value = [b]
    b.data = np.ones((12, 10), np.uint8)  # the extra layer's shape changes after it was chosen
    run_and_wait(widget)
    assert [layer.name for layer in viewer.layers] == ["a", "b"]
    assert any("extra channel 'b' has shape (12, 10)" in m for m in errors(notes))


def test_extra_channels_refused_for_rgb(viewer, widget):
    rgb = viewer.add_image(np.zeros((10, 10, 3), np.uint8), name="rgb", rgb=True)
    gray = viewer.add_image(np.zeros((10, 10), np.uint8), name="gray")
    with pytest.raises(inputs.InputError, match="is RGB"):
        inputs.build_job(viewer, rgb, widget.params(), extras=(gray,))
    widget.controls.image.value = rgb
    assert not widget.controls.extra_channels.enabled


def test_incompatible_mask(viewer, widget, run_and_wait, notes):
    source = viewer.add_image(np.zeros((10, 10), np.uint8), name="img")
    mask = viewer.add_labels(np.ones((8, 10), np.uint8), name="small mask")
    empty = viewer.add_shapes(name="no shapes")
    choose(widget, source)
    widget.controls.mask.value = mask
    run_and_wait(widget)
    widget.controls.mask.value = empty
    run_and_wait(widget)
    assert [layer.name for layer in viewer.layers] == ["img", "small mask", "no shapes"]
    found = errors(notes)
    assert any("mask 'small mask' has shape (8, 10)" in m for m in found)
    assert any("'no shapes' has no shapes" in m for m in found)


def test_layer_removed_during_run(viewer, widget, held_fit, qtbot, notes):
    source = viewer.add_image(np.arange(100, dtype=np.uint8).reshape(10, 10), name="img")
    keep = viewer.add_image(np.zeros((3, 3)), name="keep")
    choose(widget, source)
    widget.controls.run.native.click()
    qtbot.waitUntil(held_fit.started.is_set, timeout=5000)
    viewer.layers.remove(source)
    qtbot.waitUntil(lambda: widget.worker is None, timeout=5000)
    assert list(viewer.layers) == [keep]
    assert any("'img' was removed during the run" in m for m, _ in notes)
    assert widget.controls.result.value.startswith("Dropped: 'img' was removed")


def test_viewer_closed_during_run(make_napari_viewer, held_fit, qtbot):
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-kmeans", "K-means segmentation")
    source = viewer.add_image(np.arange(100, dtype=np.uint8).reshape(10, 10), name="img")
    choose(widget, source)
    widget.controls.run.native.click()
    qtbot.waitUntil(held_fit.started.is_set, timeout=5000)
    worker = widget.worker
    finished = []
    worker.finished.connect(lambda: finished.append(True))
    viewer.close()  # napari cancels running tasks; the run is dropped without an error
    qtbot.waitUntil(lambda: bool(finished), timeout=5000)
    assert worker.abort_requested


# -- hardening (issue 8) ------------------------------------------------------------------------


def test_a_renamed_result_is_kept_by_a_rerun(viewer, widget, run_and_wait, notes):
    """Item 3: only a hash of the values decided 'unedited'; a renamed result was overwritten."""
    image = np.random.default_rng(4).integers(0, 256, (25, 30), dtype=np.uint8)
    choose(widget, viewer.add_image(image, name="img"), k=3)
    run_and_wait(widget)
    labels, _ = outputs(viewer, "img")
    labels.name = "nuclei k=3 (keep)"
    kept = labels.data.copy()
    widget.controls.n_clusters.value = 4
    run_and_wait(widget)
    assert labels.name == "nuclei k=3 (keep)" and labels in viewer.layers
    np.testing.assert_array_equal(labels.data, kept)
    assert labels.metadata["kmeans"]["n_clusters"] == 3
    new_labels, _ = outputs(viewer, "img")
    assert new_labels is not labels
    kept_ids = segment(image, 4, match_to=segment(image, 3))  # the kept result's IDs stay
    np.testing.assert_array_equal(new_labels.data, kept_ids.labels)
    assert "kept them and added new layers" in widget.controls.result.value


@pytest.mark.parametrize(
    ("error", "said"),
    [
        (IndexError("index 9 is out of bounds"), "unexpected error (IndexError: index 9"),
        (MemoryError(), "not enough memory"),
        (OSError(5, "Input/output error"), "could not be read"),
    ],
)
def test_every_failure_in_a_run_is_reported(
    viewer, widget, run_and_wait, monkeypatch, notes, error, said
):
    """Item 13: only ValueError/TypeError were caught; others left 'Running…' and a traceback."""
    from napari_kmeans._napari import workers

    def failing(*args, **kwargs):
        raise error

    monkeypatch.setattr(workers, "fit_planes", failing)
    source = viewer.add_image(np.arange(400, dtype=np.uint16).reshape(20, 20), name="img")
    choose(widget, source)
    names = [layer.name for layer in viewer.layers]
    run_and_wait(widget)
    result = widget.controls.result.value
    assert result.startswith("Not run: ") and said in result
    assert any(said in message for message, severity in notes if severity == "error")
    if isinstance(error, IndexError):
        assert jobs.BUG_URL in result
    assert [layer.name for layer in viewer.layers] == names
    assert widget.controls.run.enabled and not widget.controls.cancel.enabled


def test_cancel_stops_the_fit_itself(viewer, widget, qtbot, monkeypatch):
    """Item 19: Cancel stopped the worker, but the fit kept burning a core in its thread."""
    import threading

    from napari_kmeans._napari import workers

    threads = []

    def endless(planes, params, progress=None, match_to=None):
        threads.append(threading.current_thread())
        while True:  # a fit that only ends when its progress callback raises
            progress(0.5, "fitting")
            threading.Event().wait(0.01)

    monkeypatch.setattr(workers, "fit_planes", endless)
    choose(widget, viewer.add_image(np.arange(400, dtype=np.uint16).reshape(20, 20), name="i"))
    for _ in range(2):  # Run, Cancel, Run, Cancel: no fits left competing
        widget.controls.run.native.click()
        qtbot.waitUntil(lambda: bool(threads) and threads[-1].is_alive(), timeout=10_000)
        widget.controls.cancel.native.click()
        qtbot.waitUntil(lambda: widget.worker is None, timeout=10_000)
        qtbot.waitUntil(lambda: not threads[-1].is_alive(), timeout=10_000)
        threads.clear()
    assert widget.controls.result.value.startswith("Cancelled")


def test_labels_mask_negative_values_are_outside(viewer, widget, run_and_wait):
    """Item 22: a Labels mask counted negative values as inside (!= 0), the docs say > 0."""
    image = np.random.default_rng(9).integers(0, 256, (30, 40), dtype=np.uint8)
    mask = np.zeros((30, 40), np.int32)
    mask[5:20, 10:30] = 1
    mask[20:, :] = -1  # negative: outside
    choose(widget, viewer.add_image(image, name="img"), k=3)
    widget.controls.mask.value = viewer.add_labels(mask, name="mask")
    run_and_wait(widget)
    labels, _ = outputs(viewer, "img")
    assert (labels.data[20:] == 0).all()
    np.testing.assert_array_equal(labels.data, segment(image, 3, mask=mask > 0).labels)


# -- the widget as a biologist meets it (issue 10) ------------------------------------------------


def test_the_dock_fits_a_laptop_screen_and_every_button_is_reachable(viewer, widget, qtbot):
    """Item 1: with every group open the dock needed 1,159 px and could not scroll."""
    from qtpy.QtWidgets import QPushButton

    window = viewer.window._qt_window
    window.resize(1440, 900)
    window.show()  # laid out as on screen
    choose(widget, viewer.add_image(np.zeros((8, 20, 20), np.uint8), name="stack"))
    widget.controls.advanced.expand(animate=False)
    scroll = widget.scroll
    for tab in range(widget.tabs.count()):
        widget.tabs.setCurrentIndex(tab)
        qtbot.wait(50)
        assert widget.minimumSizeHint().height() <= 900 - 100  # the window's chrome aside
        page = widget.tabs.widget(tab)
        for button in page.findChildren(QPushButton):
            if not button.isVisibleTo(page) or button.text().startswith("Advanced"):
                continue  # 'Compute into memory' is for lazy labels; the group's own toggle
            scroll.ensureWidgetVisible(button)
            qtbot.wait(10)
            top_left = button.mapTo(scroll.viewport(), button.rect().topLeft())
            assert (
                top_left.y() >= 0 and scroll.viewport().height() >= top_left.y() + button.height()
            )


def test_controls_show_only_when_they_apply(viewer, widget):
    """Item 12: colour space, scope, fit-on and the mode line were shown (greyed) for all data."""
    c = widget.controls
    shown = lambda control: control.native.isVisibleTo(widget)  # noqa: E731
    widget.tabs.setCurrentIndex(0)
    choose(widget, viewer.add_image(np.zeros((20, 20, 3), np.uint8), name="photo", rgb=True))
    assert shown(c.color_space) and not shown(c.scope) and not shown(c.fit_on)
    assert not shown(c.extra_channels) and not shown(c.mode)
    choose(widget, viewer.add_image(np.zeros((5, 20, 20), np.uint16), name="stack"))
    assert not shown(c.color_space) and shown(c.scope) and shown(c.fit_on)
    choose(widget, viewer.add_image(da.zeros((5, 20, 20), dtype=np.uint16), name="lazy"))
    assert shown(c.mode) and c.mode.value.startswith("mode: lazy")
    assert shown(c.extra_channels)  # 'stack' has the same shape
    assert c.channels.value == "clustering: lazy (one channel)"


def test_channel_layers_are_preselected_and_kept(viewer, widget):
    """Item 4: the layer list's selection dropped the extra channels; none was pre-selected."""
    viewer.open_sample("napari-kmeans", "cells_3d")
    nuclei, cytoplasm = viewer.layers["nuclei"], viewer.layers["cytoplasm"]
    c = widget.controls  # the sample's last layer is selected: it is the image
    assert c.image.value is cytoplasm and c.extra_channels.value == [nuclei]
    assert c.channels.value == "clustering: cytoplasm + nuclei"
    viewer.layers.selection.active = nuclei  # clicking the other channel keeps the set
    assert c.image.value is cytoplasm and c.extra_channels.value == [nuclei]
    c.image.value = nuclei  # choosing it as the image swaps them
    assert c.extra_channels.value == [cytoplasm]
    assert c.channels.value == "clustering: nuclei + cytoplasm"


def test_outputs_are_not_offered_to_segment_or_as_masks(viewer, widget, run_and_wait, click):
    """Item 14: the plugin's own outputs were offered as the image and the mask."""
    image = np.random.default_rng(1).integers(0, 256, (20, 24), dtype=np.uint8)
    choose(widget, viewer.add_image(image, name="img"), k=3)
    run_and_wait(widget)
    labels, recolored = outputs(viewer, "img")
    c = widget.controls
    assert recolored not in c.image.choices and labels not in c.mask.choices
    widget.edit.controls.clusters.value = "2"
    click(widget.edit.controls.mask)  # an exported cluster mask is a mask like any other
    assert viewer.layers[-1] in c.mask.choices


def test_a_slice_run_keeps_the_whole_result(viewer, widget, run_and_wait):
    """Item 10: a current-slice run replaced the whole-stack result in place."""
    stack = np.random.default_rng(2).integers(0, 256, (4, 16, 16), dtype=np.uint8)
    choose(widget, viewer.add_image(stack, name="stack"), k=3)
    run_and_wait(widget)
    whole, _ = outputs(viewer, "stack")
    kept = whole.data.copy()
    widget.controls.scope.value = form.SLICE
    run_and_wait(widget)
    assert whole in viewer.layers and whole.data.shape == (4, 16, 16)
    np.testing.assert_array_equal(whole.data, kept)
    assert not whole.visible  # hidden: one result shows at a time
    sliced = viewer.layers[-1]
    assert sliced is not whole and sliced.data.shape == (1, 16, 16)
    assert "other scope is kept" in widget.controls.result.value


def test_labels_show_distinct_colours_and_new_labels_are_not_black(viewer, widget, run_and_wait):
    """Items 2, 3 and 9: labels took the image's greys; a newly painted label showed black."""
    image = np.repeat(np.array([10, 120, 240], np.uint8), 100).reshape(15, 20)
    source = viewer.add_image(image, name="img")
    choose(widget, source, k=3)
    widget.controls.background.value = "none"
    widget.controls.show_recolored.value = True
    run_and_wait(widget)
    labels, recolored = outputs(viewer, "img")
    rgba = labels.colormap.map(np.arange(0, 6))
    assert len({tuple(c.round(3)) for c in rgba[1:4, :3]}) == 3 and (rgba[1:, 3] == 1).all()
    assert rgba[4, :3].sum() > 0.5  # label 4, painted with napari's 'new label': a colour
    assert recolored.visible  # the checkbox asked for it
    widget.controls.show_recolored.value = False
    assert not recolored.visible


def test_the_suggest_button_next_to_k_opens_choose_k(viewer, widget, qtbot):
    image = np.repeat(np.array([0, 10, 100, 110, 200, 210], dtype=np.uint8), 10).reshape(6, 10)
    choose(widget, viewer.add_image(image, name="steps"))
    widget.controls.suggest_k.native.click()
    assert widget.tabs.currentIndex() == 1
    qtbot.waitUntil(lambda: widget.suggest.worker is None, timeout=30_000)
    assert widget.controls.n_clusters.value == 3
    assert widget.suggest.status.value.startswith("Suggested k = 3: 100% of the variation")
    widget.controls.n_clusters.value = 5  # typing k moves the dot and the list
    np.testing.assert_array_equal(widget.suggest.plot.chosen_marker.get_xdata(), [5])
    assert widget.suggest.choice.value == 5
    before = widget.suggest.plot.figure.get_facecolor()
    viewer.theme = "light"  # the plot follows napari's theme
    assert widget.suggest.plot.figure.get_facecolor() != before


def test_progress_is_shown_in_the_widget(viewer, widget, qtbot):
    """Item 13: progress was only in napari's hidden activity dock."""
    rng = np.random.default_rng(2)
    image = rng.random((600, 600, 3), dtype=np.float32)
    choose(widget, viewer.add_image(image, name="noise", rgb=True), k=6)
    values = []
    bar = widget.controls.progress
    bar.valueChanged.connect(values.append)
    widget.controls.run.native.click()
    assert bar.isVisibleTo(widget)
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    assert not bar.isVisibleTo(widget)
    assert values == sorted(values) and len(set(values)) >= 3 and values[-1] >= 85


# -- features and clean-up (issue 12) -------------------------------------------------------------


def test_smoothed_features_in_world_units_and_clean_up(viewer, widget, run_and_wait):
    """Smoothing typed in the layer's units becomes pixels per axis; clean-up is applied."""
    rng = np.random.default_rng(5)
    truth = np.zeros((96, 96), int)
    yy, xx = np.mgrid[:96, :96]
    for cy, cx, r in [(30, 30, 14), (65, 60, 18), (25, 75, 10)]:
        truth[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = 1
    image = (truth + rng.normal(0, 1, truth.shape)).astype(np.float32)
    source = viewer.add_image(image, name="noisy", scale=(0.5, 0.5))
    choose(widget, source, k=2)
    c = widget.controls
    assert not c.smoothing.enabled  # pixel values: no smoothing to set
    c.preset.value = "smoothed"
    assert c.smoothing.enabled and c.smoothing.value == 1.0  # about two pixels, in world units
    c.majority.value = 1
    run_and_wait(widget)
    labels, _ = outputs(viewer, "noisy")
    want = segment(image, 2, smoothing=(2.0, 2.0), majority=1)
    np.testing.assert_array_equal(labels.data, want.labels)
    right = max(((labels.data - 1) == truth).mean(), ((labels.data - 1) != truth).mean())
    assert right > 0.97
    params = labels.metadata["kmeans"]["parameters"]
    assert params["smoothing"] == [2.0, 2.0] and params["majority"] == 1
    model = labels.metadata["kmeans"]["model"]
    assert model["version"] == 2 and model["recipe"]["smoothing"] == [2.0, 2.0]


def test_custom_filters_are_parsed_and_bad_ones_refused(viewer, widget, run_and_wait, notes):
    image = np.random.default_rng(1).random((40, 40)).astype(np.float32)
    choose(widget, viewer.add_image(image, name="img"), k=2)
    c = widget.controls
    c.preset.value = "custom"
    assert c.filters.enabled
    c.filters.value = "gaussian 1, sobel 2"
    run_and_wait(widget)
    assert c.result.value.startswith("Not run: unknown filter 'sobel'")
    c.filters.value = "gaussian 1, gradient 2"
    run_and_wait(widget)
    labels, _ = outputs(viewer, "img")
    smoothing = c.smoothing.value
    want = segment(image, 2, smoothing=(2 * smoothing,) * 2 if smoothing else 0,
                   features=[("gaussian", 1), ("gradient", 2)])  # fmt: skip
    np.testing.assert_array_equal(labels.data, want.labels)
