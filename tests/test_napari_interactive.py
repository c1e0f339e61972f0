"""Hostile cases of the interactive glue (live preview, seeds, kept label IDs, confidence,
each-frame fitting, the transparent label, the summary line): each test was a bug a napari user
hit, found by review and fixed."""

from __future__ import annotations

import numpy as np

from napari_kmeans import segment, segment_frames
from napari_kmeans._napari._qt import form
from napari_kmeans._napari.outputs import KEY, brightness
from napari_kmeans.model import KMeansModel

LABELS = "{} k-means labels"


def bands(shape=(96, 96), edges=(10, 80), levels=(20, 120, 220), seed=0):
    """Three vertical bands of known values (widths set by ``edges``) with a little noise."""
    rng = np.random.default_rng(seed)
    truth = np.zeros(shape, np.uint8)
    truth[..., edges[0] :] = 1
    truth[..., edges[1] :] = 2
    image = np.asarray(levels, np.float64)[truth] + rng.normal(0, 4, shape)
    return np.clip(image, 0, 255).astype(np.uint8), truth


def band_mode(labels, truth, band):
    values, counts = np.unique(labels[truth == band], return_counts=True)
    return int(values[np.argmax(counts)])


def hidden(layer, label) -> bool:
    """Whether ``label`` is drawn transparent by the labels layer's colormap."""
    return float(layer.colormap.map(np.array([label]))[0][-1]) == 0.0


def test_explained_share_is_right_when_label_ids_are_kept(viewer, widget, run_and_wait):
    """A re-run that keeps the label numbers of a seeded run (label 1 = the brightest band):
    the share of the variation explained must still be 1 - inertia / total sum of squares."""
    image, truth = bands()  # unequal bands: 10, 70 and 16 columns
    c = widget.controls
    c.image.value = viewer.add_image(image, name="img")
    c.n_clusters.value = 3
    strokes = np.zeros(image.shape, np.uint8)
    strokes[40:50, 85:90] = 1  # class 1: the brightest band
    c.seeds.value = viewer.add_labels(strokes, name="strokes")
    run_and_wait(widget)
    c.seeds.value = None
    c.seed.value = 5  # a re-run, its IDs matched to the seeded run's
    run_and_wait(widget)
    layer = viewer.layers[LABELS.format("img")]
    assert band_mode(layer.data, truth, 2) == 1  # the IDs were kept
    meta = layer.metadata[KEY]
    values = image.astype(float).ravel()
    share = 1 - meta["inertia"] / ((values - values.mean()) ** 2).sum()
    assert abs(meta["explained"] - share) < 1e-6, (meta["explained"], share)
    assert f"explain {share:.1%} of the variation" in widget.edit.summary.value


def seeded_run(viewer, widget, run_and_wait):
    """k = 3 on three equal bands, a stroke of seed class 1 on the brightest band: label 1 is
    the brightest band, 2 and 3 the dark and the mid band (dark to bright)."""
    image, truth = bands(edges=(32, 64))
    c = widget.controls
    c.image.value = viewer.add_image(image, name="img")
    c.n_clusters.value = 3
    strokes = np.zeros(image.shape, np.uint8)
    strokes[40:50, 70:90] = 1
    c.seeds.value = viewer.add_labels(strokes, name="strokes")
    run_and_wait(widget)
    layer = viewer.layers[LABELS.format("img")]
    assert [band_mode(layer.data, truth, b) for b in range(3)] == [2, 3, 1]
    widget.edit.follow(layer)
    return layer, truth


def test_update_after_painting_keeps_the_darkest_cluster_transparent(
    click, viewer, widget, run_and_wait
):
    """Background 'darkest' (the default for a grey image) after a seeded run: the dark band
    (label 2) is transparent, the bright seeded class (label 1) is shown. A stroke on the
    labels and 'Update from labels' must not swap them."""
    layer, _ = seeded_run(viewer, widget, run_and_wait)
    assert widget.controls.background.value == "darkest"
    assert hidden(layer, 2) and not hidden(layer, 1)  # as the run left them
    layer.paint((48, 40), 2)  # a correction: a blob of the mid band called dark
    click(widget.edit.controls.update)
    assert layer.metadata[KEY]["edits"] == ["update from labels"]
    model = KMeansModel.from_dict(layer.metadata[KEY]["model"])
    assert int(np.nanargmin(brightness(model))) + 1 == 2  # label 2 is still the darkest
    assert hidden(layer, 2), "the darkest cluster is no longer transparent"
    assert not hidden(layer, 1), "the bright seeded class (label 1) became transparent"


def test_each_frame_confidence_uses_each_frames_model(viewer, widget, run_and_wait):
    """Fit on each frame with the confidence map: frame t's confidence describes frame t's own
    clusters (the labels of frame t come from them), not the last frame's."""
    rng = np.random.default_rng(0)
    _, band = bands(shape=(40, 60), edges=(20, 40))
    frames = []
    for t in range(4):
        colours = np.array([[150, 30, 30], [30, 60 + 50 * t, 30], [30, 30, 200]], float)
        noisy = colours[band] + rng.normal(0, 3, (*band.shape, 3))
        frames.append(np.clip(noisy, 0, 255).astype(np.uint8))
    movie = np.stack(frames)
    c = widget.controls
    c.image.value = viewer.add_image(movie, name="movie", rgb=True)
    c.n_clusters.value = 3
    c.fit_on.value = form.FIT_FRAMES
    c.confidence.value = True
    run_and_wait(widget)
    sure = viewer.layers["movie k-means confidence"].data
    want = segment_frames(movie, 3, channel_axis=-1, rgb=True)
    np.testing.assert_array_equal(viewer.layers[LABELS.format("movie")].data, want.labels)
    first = want.frames[0].model.confidence(movie[0], rgb=True)
    np.testing.assert_allclose(sure[0], first, atol=1e-6)


def test_thin_scribbles_on_a_multiscale_image_are_not_lost(viewer, widget, run_and_wait):
    """A multiscale image is fitted on a lower level: a stroke two pixels thick must still seed
    its class (docs/interactive.md: seeds work with multiscale images)."""
    image, truth = bands(shape=(2048, 2048), edges=(682, 1364))
    pyramid = [image, image[::4, ::4], image[::16, ::16]]
    c = widget.controls
    c.image.value = viewer.add_image(pyramid, name="pyr", multiscale=True)
    c.n_clusters.value = 3
    strokes = np.zeros(image.shape, np.uint8)
    strokes[1001:1003, 1500:1800] = 1  # class 1: a thin stroke on the brightest band
    c.seeds.value = viewer.add_labels(strokes, name="strokes")
    run_and_wait(widget, timeout=60_000)
    assert c.result.value.startswith("3 clusters"), c.result.value
    layer = viewer.layers[LABELS.format("pyr")]
    assert layer.metadata[KEY]["model"].get("seed_means") is not None, "the stroke was dropped"
    coarse = np.asarray(layer.data[1])
    assert band_mode(coarse, truth[::4, ::4], 2) == 1  # the seeded class is label 1


def preview_done(viewer, widget, name, k):
    layer = next((la for la in viewer.layers if la.name == LABELS.format(name)), None)
    return (
        widget.worker is None
        and layer is not None
        and layer.metadata[KEY].get("preview")
        and layer.metadata[KEY]["parameters"]["n_clusters"] == k
    )


def test_run_with_live_preview_on_is_not_turned_back_into_a_preview(
    viewer, widget, qtbot, run_and_wait
):
    """Live preview on: change k and press Run at once (before the preview's quiet delay).
    The Run's result must stay a result (editable), not be overwritten by a preview of the
    same settings once the Run ends."""
    from napari_kmeans._napari import editing

    image, _ = bands(edges=(32, 64))
    c = widget.controls
    c.image.value = viewer.add_image(image, name="img")
    c.n_clusters.value = 3
    c.live_preview.value = True
    qtbot.waitUntil(lambda: preview_done(viewer, widget, "img", 3), timeout=10_000)
    c.n_clusters.value = 4
    run_and_wait(widget)  # pressed within the 80 ms after the change
    layer = viewer.layers[LABELS.format("img")]
    assert "preview" not in layer.metadata[KEY]
    qtbot.wait(1000)  # let the widget do whatever it does after the run
    qtbot.waitUntil(lambda: widget.worker is None, timeout=10_000)
    layer = viewer.layers[LABELS.format("img")]
    assert "preview" not in layer.metadata[KEY], "the Run's result became a preview"
    editing.resolve(viewer, layer, widget.session.runs)  # editable


def test_removing_the_mask_during_a_preview_gives_no_popup_and_previews_again(
    viewer, widget, qtbot, held_fit, notes
):
    """A preview in flight, the mask layer deleted: no warning pop-up about a dropped 'run'
    (previews never pop up), and the preview follows without the mask."""
    image, _ = bands(edges=(32, 64))
    c = widget.controls
    c.image.value = viewer.add_image(image, name="img")
    mask = np.ones(image.shape, np.uint8)
    mask[:10] = 0
    c.mask.value = viewer.add_labels(mask, name="mask")
    c.n_clusters.value = 3
    c.live_preview.value = True
    qtbot.waitUntil(held_fit.started.is_set, timeout=10_000)
    assert widget.previewing()
    viewer.layers.remove("mask")
    held_fit.set()
    qtbot.waitUntil(lambda: preview_done(viewer, widget, "img", 3), timeout=15_000)
    layer = viewer.layers[LABELS.format("img")]
    assert layer.metadata[KEY]["parameters"]["mask"] is None
    assert (layer.data[:10] > 0).all()
    popups = [text for text, severity in notes if "removed during the run" in text]
    assert popups == [], popups


def test_each_frame_with_a_mask_that_leaves_a_frame_empty(viewer, widget, run_and_wait):
    """A timelapse masked on one frame only (a mask painted on the frame shown, or objects
    that leave the field): 'fit on: all' gives label 0 outside the mask; 'each frame' must do
    the same for the frames with no masked-in pixel, not refuse the whole timelapse."""
    rng = np.random.default_rng(3)
    image, _ = bands(shape=(30, 48), edges=(16, 32))
    movie = np.stack([np.clip(image + rng.normal(0, 2, image.shape), 0, 255) for _ in range(3)])
    movie = movie.astype(np.uint8)
    mask = np.zeros(movie.shape, np.uint8)
    mask[1, 5:25, 4:44] = 1  # painted on frame 1 only
    c = widget.controls
    c.image.value = viewer.add_image(movie, name="movie")
    c.mask.value = viewer.add_labels(mask, name="mask")
    c.n_clusters.value = 3
    c.fit_on.value = form.FIT_FRAMES
    run_and_wait(widget)
    assert LABELS.format("movie") in viewer.layers, c.result.value
    labels = viewer.layers[LABELS.format("movie")].data
    np.testing.assert_array_equal(labels[1], segment(movie[1], 3, mask=mask[1]).labels)
    assert not labels[0].any() and not labels[2].any()


def test_a_confidence_map_of_an_older_run_does_not_stay_over_new_labels(
    viewer, widget, run_and_wait
):
    """Confidence ticked for a run, then unticked and k changed: the new labels come with no
    confidence map, so the old map (of other clusters) must not stay shown over them as if it
    described them."""
    image, _ = bands(edges=(32, 64))
    c = widget.controls
    c.image.value = viewer.add_image(image, name="img")
    c.n_clusters.value = 3
    c.confidence.value = True
    run_and_wait(widget)
    assert "img k-means confidence" in viewer.layers
    c.confidence.value = False
    c.n_clusters.value = 2
    run_and_wait(widget)
    labels = viewer.layers[LABELS.format("img")]
    assert labels.metadata[KEY]["n_clusters"] == 2
    name = "img k-means confidence"
    stale = (
        name in viewer.layers
        and viewer.layers[name].visible
        and viewer.layers[name].metadata[KEY]["run"] != labels.metadata[KEY]["run"]
    )
    assert not stale, "the k = 3 confidence map is still shown over the k = 2 labels"


def test_live_preview_follows_a_change_of_the_transparent_cluster(viewer, widget, qtbot):
    """Live preview on, 'transparent' changed from darkest to brightest: the preview on screen
    must show the change (the dark band appears, the bright one goes), without Run."""
    image, truth = bands(edges=(32, 64))
    c = widget.controls
    c.image.value = viewer.add_image(image, name="img")
    c.n_clusters.value = 3
    c.live_preview.value = True
    qtbot.waitUntil(lambda: preview_done(viewer, widget, "img", 3), timeout=10_000)
    layer = viewer.layers[LABELS.format("img")]
    dark, bright = band_mode(layer.data, truth, 0), band_mode(layer.data, truth, 2)
    assert hidden(layer, dark) and not hidden(layer, bright)
    c.background.value = "brightest"
    qtbot.wait(1000)  # the preview's quiet delay, and then some
    qtbot.waitUntil(lambda: widget.worker is None, timeout=10_000)
    layer = viewer.layers[LABELS.format("img")]
    assert hidden(layer, bright) and not hidden(layer, dark)


def test_previews_and_runs_on_a_volume_do_not_pile_up_layers(viewer, widget, qtbot, run_and_wait):
    """A volume: Run, look with live preview, untick, Run again, three times. Each round adds
    another hidden pair of output layers today ('vol k-means labels [1]', '[2]', ...); a
    preview and a result should not make more than one pair each."""
    rng = np.random.default_rng(1)
    volume = rng.integers(0, 255, (4, 30, 40), dtype=np.uint8)
    c = widget.controls
    c.image.value = viewer.add_image(volume, name="vol")
    c.n_clusters.value = 3
    for _ in range(3):
        run_and_wait(widget)
        c.live_preview.value = True
        qtbot.waitUntil(
            lambda: (
                widget.worker is None
                and any(la.metadata.get(KEY, {}).get("preview") for la in viewer.layers)
            ),
            timeout=10_000,
        )
        c.live_preview.value = False
    labels = [la.name for la in viewer.layers if la.name.startswith("vol k-means labels")]
    assert len(labels) <= 2, labels


def test_live_preview_k_down_and_back_up_gives_the_classes_their_numbers_back(
    viewer, widget, qtbot
):
    """Live preview, keep label numbers on: k 3 -> 2 -> 3 (one click down and up on the spin
    box). Back at k = 3 with the same settings, the classes the person saw as 1, 2, 3 must be
    1, 2, 3 again, not renumbered (the mid band comes back as label 4 today)."""
    image, truth = bands(edges=(32, 48))  # mid band narrow: at k = 2 it joins the dark band
    c = widget.controls
    c.image.value = viewer.add_image(image, name="img")
    c.n_clusters.value = 3
    c.live_preview.value = True
    for k in (3, 2, 3):
        c.n_clusters.value = k
        qtbot.waitUntil(lambda k=k: preview_done(viewer, widget, "img", k), timeout=10_000)
        labels = viewer.layers[LABELS.format("img")].data
        seen = [band_mode(labels, truth, b) for b in range(3)]
        if k == 2:
            assert len(set(seen)) == 2  # two classes on screen
    assert seen == [1, 2, 3], seen


def test_cancel_drops_a_run_queued_behind_a_preview(viewer, widget, qtbot, held_fit):
    image, _ = bands(shape=(40, 60), edges=(20, 40))
    c = widget.controls
    c.image.value = viewer.add_image(image, name="img")
    names = [layer.name for layer in viewer.layers]
    c.live_preview.value = True
    qtbot.waitUntil(held_fit.started.is_set, timeout=10_000)  # a preview is held
    c.run.native.click()  # queued behind the preview, which is being stopped
    c.cancel.native.click()  # before the queued run could start: it must not start
    held_fit.set()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=10_000)
    qtbot.wait(300)
    assert widget.worker is None
    assert [layer.name for layer in viewer.layers] == names  # no run, no preview written
    assert c.result.value.startswith("Cancelled")


def test_each_frame_with_scribbles_on_the_frame_shown_keeps_ids_through_time(
    viewer, widget, run_and_wait
):
    """'Fit on: each frame' with a stroke painted on the frame on screen (frame 2 of 4, as a
    person paints 'New' seeds): a colour must mean the same class in every frame; today the
    seeded class is label 3 in frames 0-1 and jumps to label 1 from frame 2 on."""
    rng = np.random.default_rng(0)
    _, truth = bands(shape=(40, 60), edges=(20, 40))
    levels = np.array([20, 120, 220], float)
    movie = np.stack(
        [np.clip(levels[truth] + rng.normal(0, 4, truth.shape), 0, 255) for _ in range(4)]
    ).astype(np.uint8)
    c = widget.controls
    c.image.value = viewer.add_image(movie, name="movie")
    c.n_clusters.value = 3
    viewer.dims.set_current_step(0, 2)
    c.new_seeds.native.click()
    seeds = viewer.layers["movie seeds"]
    seeds.brush_size = 5
    seeds.paint((2, 15, 50), 1)  # class 1 on the brightest band of frame 2
    assert seeds.data[2].any() and not seeds.data[[0, 1, 3]].any()
    c.fit_on.value = form.FIT_FRAMES
    run_and_wait(widget)
    labels = viewer.layers[LABELS.format("movie")].data
    ids = [[band_mode(labels[t], truth, b) for b in range(3)] for t in range(4)]
    assert ids == [ids[2]] * 4, ids
    assert ids[2][2] == 1  # the seeded class is label 1
