"""The live preview (under Xvfb): changes during a preview, errors inside a signal."""

from __future__ import annotations

import numpy as np

from napari_kmeans import segment
from napari_kmeans._napari import inputs
from napari_kmeans._napari.outputs import KEY

LABELS = "{} k-means labels"


def test_switching_the_image_during_a_preview_previews_the_new_one_only(
    viewer, widget, qtbot, held_fit, bands
):
    a, b = bands(seed=1)[0], bands((80, 90), levels=(0, 90, 250), seed=2)[0]
    first, second = viewer.add_image(a, name="a"), viewer.add_image(b, name="b")
    c = widget.controls
    c.image.value = first
    c.n_clusters.value = 3
    c.live_preview.value = True
    qtbot.waitUntil(held_fit.started.is_set, timeout=10_000)  # the preview of 'a' is held
    c.image.value = second
    held_fit.set()
    qtbot.waitUntil(
        lambda: widget.worker is None and LABELS.format("b") in viewer.layers, timeout=15_000
    )
    qtbot.wait(300)
    assert LABELS.format("a") not in viewer.layers  # the stale preview of 'a' was dropped
    np.testing.assert_array_equal(viewer.layers[LABELS.format("b")].data, segment(b, 3).labels)


def test_removing_the_image_during_a_preview_adds_no_layer(viewer, widget, qtbot, held_fit, bands):
    image = bands((256, 240))[0]
    source = viewer.add_image([image, image[::2, ::2]], name="pyr", multiscale=True)
    c = widget.controls
    c.image.value = source
    c.live_preview.value = True
    qtbot.waitUntil(held_fit.started.is_set, timeout=10_000)
    viewer.layers.remove(source)
    held_fit.set()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=15_000)
    qtbot.wait(300)
    assert [layer.name for layer in viewer.layers] == []
    assert widget.preview._zoomed is None  # no longer watching the removed image


def test_an_unexpected_error_in_a_preview_does_not_break_the_setting(
    viewer, widget, qtbot, monkeypatch, bands
):
    """The preview starts inside the control's signal now: an error there must not stop the
    control's own handlers (here: the features preset showing its smoothing)."""
    source = viewer.add_image(bands()[0], name="img", scale=(1.5, 1.5))
    c = widget.controls
    c.image.value = source
    c.live_preview.value = True
    qtbot.waitUntil(lambda: widget.worker is None and LABELS.format("img") in viewer.layers)

    def broken(*args, **kwargs):
        raise OSError("the pyramid's store went away")

    monkeypatch.setattr(inputs, "for_preview", broken)
    qtbot.wait(200)  # a quiet spell: the next change previews inside its signal
    c.n_clusters.value = 4  # raised EmitLoopError here, skipping the later handlers
    assert widget.controls.result.value.startswith("Preview not run: the data could not be read")
    c.preset.value = "smoothed"
    qtbot.waitUntil(lambda: widget.worker is None)
    assert c.smoothing.value == 3.0  # the preset's own handler ran
    assert viewer.layers[LABELS.format("img")].metadata[KEY].get("preview")


def test_a_preset_change_previews_with_the_smoothing_it_sets(
    viewer, widget, qtbot, monkeypatch, bands
):
    """Choosing 'smoothed' sets a smoothing (its own handler, after the preview's): the preview
    started inside the preset's signal read the settings before that, a wasted preview."""
    source = viewer.add_image(bands()[0], name="img", scale=(1.5, 1.5))
    c = widget.controls
    c.image.value = source
    c.live_preview.value = True
    qtbot.waitUntil(lambda: widget.worker is None and LABELS.format("img") in viewer.layers)
    seen = []
    real = inputs.for_preview

    def recording(viewer_, source_, params, **kwargs):
        seen.append(params.smoothing)
        return real(viewer_, source_, params, **kwargs)

    monkeypatch.setattr(inputs, "for_preview", recording)
    qtbot.wait(200)  # a quiet spell
    c.preset.value = "smoothed"
    qtbot.waitUntil(lambda: bool(seen) and widget.worker is None, timeout=10_000)
    qtbot.wait(300)
    assert seen == [(2.0, 2.0)]  # 3 (world units) / 1.5 per pixel


def test_a_preview_finishing_after_its_image_left_keeps_none_of_its_pixels(
    viewer, widget, qtbot, held_fit, bands
):
    """The preview's kept stage 1 is forgotten when a layer leaves; the preview of that layer
    still in flight must not keep its pixels again when it finishes (they would stay alive,
    unreachable, until the next preview)."""
    from napari_kmeans import features as ft
    from napari_kmeans._napari import workers
    from napari_kmeans._napari.jobs import Planes

    image = bands()[0]
    source = viewer.add_image(image, name="img")
    c = widget.controls
    c.image.value = source
    c.n_clusters.value = 3
    c.live_preview.value = True
    qtbot.waitUntil(held_fit.started.is_set, timeout=10_000)  # the preview of 'img' is held
    key = workers.preparation_key(ft.as_image(image), Planes(image), widget.params())
    viewer.layers.remove(source)
    held_fit.set()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=15_000)
    qtbot.wait(300)
    assert widget.preview.kept.get(key) is None


def test_a_preview_turned_off_while_laying_out_its_pixels_keeps_none_of_them(
    viewer, widget, qtbot, monkeypatch, bands
):
    """Stage 1's last stretch (after its last progress tick) cannot be stopped: turning the
    preview off then forgets what was kept, and the preview finishing after that must not
    keep its laid-out pixels again (held while the preview is off, and no next preview to
    replace them)."""
    import threading

    from napari_kmeans import features as ft
    from napari_kmeans._napari import workers
    from napari_kmeans._napari.jobs import Planes

    inside, release = threading.Event(), threading.Event()
    real = workers.prepare_image

    def slow(*args, **kwargs):
        prepared = real(*args, **kwargs)
        inside.set()
        release.wait(30)
        return prepared

    monkeypatch.setattr(workers, "prepare_image", slow)
    image = bands()[0]
    c = widget.controls
    c.image.value = viewer.add_image(image, name="img")
    c.n_clusters.value = 3
    try:
        c.live_preview.value = True
        qtbot.waitUntil(inside.is_set, timeout=10_000)
        key = workers.preparation_key(ft.as_image(image), Planes(image), widget.params())
        c.live_preview.value = False
    finally:
        release.set()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=15_000)
    qtbot.wait(100)
    assert widget.preview.kept.get(key) is None


def test_new_data_in_the_image_is_previewed_and_the_old_pixels_are_not_kept(
    viewer, widget, qtbot, bands
):
    """Giving the image layer new data (another plugin, a script) previews it again, as any
    other change does; data equal to the old lays the new array out again, so the kept stage 1
    holds no reference to the array the layer no longer shows."""
    import gc
    import weakref

    image = bands(seed=1)[0]
    other = bands((80, 90), levels=(0, 90, 250), seed=2)[0]
    source = viewer.add_image(image.copy(), name="img")
    c = widget.controls
    c.image.value = source
    c.n_clusters.value = 3
    c.live_preview.value = True
    layer = LABELS.format("img")

    def shows(expected):
        return (
            widget.worker is None
            and layer in viewer.layers
            and np.array_equal(viewer.layers[layer].data, expected)
        )

    qtbot.waitUntil(lambda: shows(segment(image, 3).labels), timeout=15_000)
    old = weakref.ref(source.data)
    source.data = other.copy()  # the test holds no reference to the layer's arrays
    qtbot.waitUntil(lambda: shows(segment(other, 3).labels), timeout=15_000)
    before = weakref.ref(source.data)
    source.data = other.copy()  # equal pixels, a new array
    qtbot.wait(500)
    qtbot.waitUntil(lambda: widget.worker is None, timeout=15_000)
    gc.collect()
    assert old() is None
    assert before() is None  # not kept alive by the preview's stage 1
    np.testing.assert_array_equal(viewer.layers[layer].data, segment(other, 3).labels)
