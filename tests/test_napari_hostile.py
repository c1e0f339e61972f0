"""Hostile-user probes of the dock widget: layers replaced, removed or misplaced while it works."""

from __future__ import annotations

import numpy as np

from napari_kmeans import segment

LABELS, RECOLORED = "{} k-means labels", "{} k-means recolored"


def _outputs(viewer, name):
    return viewer.layers[LABELS.format(name)], viewer.layers[RECOLORED.format(name)]


def _choose(widget, layer, k=3, seed=0):
    widget.controls.image.value = layer
    widget.controls.n_clusters.value = k
    widget.controls.seed.value = seed


def _errors(notes):
    return [m for m, severity in notes if severity == "error"]


def test_a_labels_mask_placed_elsewhere_than_the_image_is_refused(
    viewer, widget, run_and_wait, notes, bands
):
    """A Labels mask of the image's shape but another scale and translate was applied pixel by
    pixel: it masked other image pixels than those it is drawn over, silently."""
    image, _ = bands((30, 30))
    source = viewer.add_image(image, name="img", scale=(2, 2))
    drawn = np.zeros((30, 30), np.uint8)
    drawn[:, :15] = 1  # over world columns 30..45: image columns 15..22
    mask = viewer.add_labels(drawn, name="mask", translate=(0, 30))
    _choose(widget, source)
    widget.controls.mask.value = mask
    run_and_wait(widget)
    assert [layer.name for layer in viewer.layers] == ["img", "mask"]
    said = widget.controls.result.value
    assert said.startswith("Not run: mask 'mask' is placed at scale (1, 1), translate (0, 30)")
    assert "'img' at scale (2, 2), translate (0, 0)" in said
    assert "Give it the scale and translate of 'img'" in said and "use a Shapes mask" in said
    assert said.removeprefix("Not run: ") in _errors(notes)
    np.testing.assert_array_equal(source.data, image)  # the input is untouched
    mask.scale, mask.translate = (2, 2), (0, 0)  # placed as the image: its pixels are the image's
    run_and_wait(widget)
    labels, _ = _outputs(viewer, "img")
    np.testing.assert_array_equal(labels.data == 0, drawn == 0)


def test_a_seeds_layer_placed_elsewhere_than_the_image_is_refused(
    viewer, widget, run_and_wait, notes, bands
):
    """Seeds, like a Labels mask, were read pixel by pixel whatever their placement."""
    image, _ = bands((30, 30))
    source = viewer.add_image(image, name="img", translate=(5, 0))
    strokes = np.zeros((30, 30), np.uint8)
    strokes[2:5, 2:5] = 1
    seeds = viewer.add_labels(strokes, name="strokes", rotate=30)
    _choose(widget, source)
    widget.controls.seeds.value = seeds
    run_and_wait(widget)
    assert [layer.name for layer in viewer.layers] == ["img", "strokes"]
    said = widget.controls.result.value
    assert said.startswith("Not run: seeds 'strokes' is placed differently from 'img'")
    assert "rotated, sheared or given an affine" in said and "with 'New' next to the seeds" in said


def test_new_data_in_the_image_during_a_run_drops_the_run(
    viewer, widget, held_fit, qtbot, notes, bands, run_and_wait
):
    """The source given new data (another shape) while a run computed: the old data's labels
    were published over the new data, of another shape."""
    image, _ = bands((30, 30))
    source = viewer.add_image(image, name="img")
    _choose(widget, source)
    widget.controls.run.native.click()
    qtbot.waitUntil(held_fit.started.is_set, timeout=10_000)
    new = bands((20, 27), seed=3)[0]
    source.data = new
    held_fit.set()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=10_000)
    assert [layer.name for layer in viewer.layers] == ["img"]
    said = widget.controls.result.value
    assert said == (
        "Dropped: 'img' was given new data during the run; no layer was changed. "
        "Run again for the new data."
    )
    assert any("'img' was given new data during the run" in m for m, _ in notes)
    run_and_wait(widget)  # the next run segments the new data
    labels, recolored = _outputs(viewer, "img")
    np.testing.assert_array_equal(labels.data, segment(new, 3).labels)
    assert recolored.data.shape == new.shape


def _settled(widget, qtbot):
    """Let a preview the widget may start after what it did start and end."""
    for _ in range(3):
        qtbot.wait(300)
        qtbot.waitUntil(lambda: widget.worker is None, timeout=10_000)


def test_ticking_live_preview_after_a_run_keeps_the_run_s_result(
    viewer, widget, run_and_wait, qtbot, bands
):
    """Live preview ticked after a Run, no setting changed: a preview of the same settings
    replaced the Run's result (no longer editable: the Edit tab refuses previews)."""
    source = viewer.add_image(bands((30, 30))[0], name="img")
    _choose(widget, source)
    run_and_wait(widget)
    labels = viewer.layers[LABELS.format("img")]
    said = widget.controls.result.value
    widget.controls.live_preview.value = True
    _settled(widget, qtbot)
    assert "preview" not in labels.metadata["kmeans"]
    assert widget.controls.result.value == said
    widget.controls.n_clusters.value = 2  # a change is previewed
    _settled(widget, qtbot)
    assert labels.metadata["kmeans"]["preview"] is True and np.unique(labels.data).size == 2


def test_ticking_live_preview_during_a_run_keeps_the_run_s_result(
    viewer, widget, held_fit, qtbot, bands
):
    """Live preview ticked while a Run computed: once the Run ended, a preview of the same
    settings replaced its result."""
    source = viewer.add_image(bands((30, 30))[0], name="img")
    _choose(widget, source)
    widget.controls.run.native.click()
    qtbot.waitUntil(held_fit.started.is_set, timeout=10_000)
    widget.controls.live_preview.value = True
    held_fit.set()
    _settled(widget, qtbot)
    labels = viewer.layers[LABELS.format("img")]
    assert "preview" not in labels.metadata["kmeans"]
    assert not widget.controls.result.value.startswith("Preview")


def test_new_data_while_a_run_waits_behind_a_preview_drops_the_run(
    viewer, widget, held_fit, qtbot, bands, notes
):
    """Run pressed during a live preview waits for the preview to end, with the layers read
    at the click; the image given new data meanwhile: the old data's Run was still published
    (labels of the old shape over the new data) before a preview of the new data."""
    source = viewer.add_image(bands((30, 30))[0], name="img")
    _choose(widget, source)
    widget.controls.live_preview.value = True
    qtbot.waitUntil(held_fit.started.is_set, timeout=10_000)  # the preview of the old data
    widget.controls.run.native.click()  # waits behind the preview
    new = bands((20, 27), seed=3)[0]
    source.data = new
    shapes = []
    viewer.layers.events.inserted.connect(lambda e: shapes.append(e.value.data.shape))
    held_fit.set()
    _settled(widget, qtbot)
    assert set(shapes) == {(20, 27)}  # no layer of the old data's shape was shown
    assert any("'img' was given new data during the run" in m for m, _ in notes)
    labels, _ = _outputs(viewer, "img")
    np.testing.assert_array_equal(labels.data, segment(new, 3).labels)


def test_keep_ids_after_the_image_changed_dtype_runs_without_matching(
    viewer, widget, run_and_wait, notes, bands
):
    """With keep label numbers on, a Run after the image's data became 16-bit passed the
    8-bit run's model as match_to, which the engine refuses (raw values of other units)."""
    image, _ = bands((30, 30))
    source = viewer.add_image(image.astype(np.uint8), name="img")
    _choose(widget, source)
    widget.controls.keep_ids.value = True
    run_and_wait(widget)
    wide = image.astype(np.uint16) * 257
    source.data = wide
    run_and_wait(widget)
    assert _errors(notes) == []
    labels, _ = _outputs(viewer, "img")
    expected = segment(wide, 3, seed=0).labels
    np.testing.assert_array_equal(labels.data, expected)
