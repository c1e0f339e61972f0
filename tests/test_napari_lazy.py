"""Lazy mode of the widget, in a real viewer (under Xvfb): dask-backed and multiscale layers give
lazy output layers; "Compute into memory" makes them editable when they fit."""

from __future__ import annotations

import threading

import dask.array as da
import numpy as np
import pytest

from napari_kmeans import KMeansModel, segment
from napari_kmeans._napari import inputs, workers
from napari_kmeans._napari._qt import form
from napari_kmeans.segment import fit

LABELS, RECOLORED = "{} k-means labels", "{} k-means recolored"


def outputs(viewer, name):
    return viewer.layers[LABELS.format(name)], viewer.layers[RECOLORED.format(name)]


def choose(widget, layer, k=3, seed=0):
    widget.controls.image.value = layer
    widget.controls.n_clusters.value = k
    widget.controls.seed.value = seed


def errors(notes):
    return [message for message, severity in notes if severity == "error"]


def compute_into_memory(widget, qtbot, layer):
    widget.edit.controls.labels.value = layer
    assert widget.edit.controls.compute.enabled
    widget.edit.controls.compute.native.click()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=30_000)


def assert_same_place(layer, source):
    for name in ("scale", "translate", "rotate", "shear"):
        np.testing.assert_allclose(getattr(layer, name), getattr(source, name))
    np.testing.assert_allclose(layer.affine.affine_matrix, source.affine.affine_matrix)
    assert tuple(layer.units) == tuple(source.units)
    assert tuple(layer.axis_labels) == tuple(source.axis_labels)


@pytest.fixture
def volume():
    """A 16-bit volume with three populations, as a dask array of 16 blocks."""
    rng = np.random.default_rng(0)
    image = rng.normal(1000, 40, (4, 30, 30)).astype(np.uint16)
    image[:, 5:15, 5:20] += 1500
    image[:, 20:, :10] += 3000
    return image


@pytest.fixture
def pyramid():
    """Three levels of an RGB image: numpy, numpy, dask (napari accepts any mix)."""
    rng = np.random.default_rng(1)
    full = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    return [full, full[::2, ::2].copy(), da.from_array(full[::4, ::4].copy())]


def test_dask_layer_gives_lazy_outputs_equal_to_segment(viewer, widget, run_and_wait, volume):
    source = viewer.add_image(
        da.from_array(volume, chunks=(1, 15, 15)), name="vol", scale=(3.0, 0.5, 0.5),
        translate=(1.0, 2.0, -4.0),
    )  # fmt: skip
    # set afterwards: add_image refuses sequences for these two in napari < 0.6
    source.units, source.axis_labels = ("um", "um", "um"), ("z", "y", "x")
    choose(widget, source, k=3)
    assert widget.controls.mode.value == f"mode: lazy (dask) — {inputs.LAZY_TEXT}"
    run_and_wait(widget)
    labels, recolored = outputs(viewer, "vol")
    assert isinstance(labels.data, da.Array) and isinstance(recolored.data, da.Array)
    assert not labels.multiscale and not labels.editable  # painting would go into a dask graph
    expected = segment(volume, 3)
    np.testing.assert_array_equal(labels.data.compute(), expected.labels)
    np.testing.assert_array_equal(recolored.data.compute(), expected.recolored)
    assert labels.data.dtype == np.uint8 and recolored.data.dtype == np.uint16
    assert labels.data.chunks == ((1, 1, 1, 1), (15, 15), (15, 15))  # the source's blocks
    for layer in (labels, recolored):
        assert_same_place(layer, source)
    # 16-bit data are fitted from a histogram: counts and inertia are exact and known
    np.testing.assert_array_equal(labels.features["count"], expected.counts)
    meta = labels.metadata["kmeans"]
    assert meta["mode"] == "lazy" and meta["levels"] == 1 and "note" not in meta
    assert meta["model"] == expected.model.to_dict()
    assert meta["exact"] is True and meta["inertia"] == pytest.approx(expected.inertia)
    assert recolored.contrast_limits == source.contrast_limits
    assert "lazy: outputs are computed as you browse" in widget.controls.result.value
    assert isinstance(source.data, da.Array)  # the source stays lazy


def test_multiscale_gives_pyramids(viewer, widget, run_and_wait, monkeypatch, pyramid):
    monkeypatch.setattr(inputs, "FIT_PIXELS", 200)  # fit on level 1 (480 pixels)
    source = viewer.add_image(
        pyramid, name="slide", rgb=True, multiscale=True, scale=(2.0, 2.0), translate=(5, -1)
    )
    choose(widget, source, k=3)
    assert widget.controls.mode.value.startswith("mode: lazy (multiscale, 3 levels) — ")
    run_and_wait(widget)
    labels, recolored = outputs(viewer, "slide")
    assert labels.multiscale and recolored.multiscale and recolored.rgb
    assert len(labels.data) == len(recolored.data) == 3
    model = fit(np.asarray(pyramid[1]), 3).model
    for level, lab, rec in zip(pyramid, labels.data, recolored.data, strict=True):
        assert isinstance(lab, da.Array) and isinstance(rec, da.Array)
        level = np.asarray(level)
        np.testing.assert_array_equal(lab.compute(), model.predict(level))
        np.testing.assert_array_equal(rec.compute(), model.recolor(level, model.predict(level)))
    for layer in (labels, recolored):
        assert_same_place(layer, source)
    meta = labels.metadata["kmeans"]
    assert meta["model"] == model.to_dict() and meta["parameters"]["fit_level"] == 1
    assert meta["mode"] == "lazy" and meta["levels"] == 3 and meta["inertia"] is None
    assert "unknown" in meta["note"] and "Compute into memory" in meta["note"]
    shown = np.array(meta["cluster_colors"])
    np.testing.assert_allclose(shown, model.colors / 255, atol=1e-6)
    assert labels.features["count"].isna().all() and labels.features["fraction"].isna().all()
    table = widget.edit.table  # the table says the counts are unknown
    assert [table.item(r, c).text() for r in range(3) for c in (5, 6)] == ["unknown"] * 6
    assert "explain" not in widget.controls.result.value  # the share is unknown: not said
    assert "inertia (within-cluster sum of squares, in feature space): unknown" in (
        widget.controls.result.tooltip
    )

    # the full-resolution level equals the in-memory path (fit on level 1, label level 0)
    job, _ = inputs.build_job(viewer, source, widget.params())
    steps = workers.run_segment(job)
    with pytest.raises(StopIteration) as stop:
        while True:
            next(steps)
    np.testing.assert_array_equal(labels.data[0].compute(), stop.value.value.labels)
    np.testing.assert_array_equal(recolored.data[0].compute(), stop.value.value.recolored)


def test_mode_line(viewer, widget, pyramid):
    mode = widget.controls.mode
    assert mode.value == "mode: no image chosen"
    numpy_layer = viewer.add_image(np.zeros((3, 10, 10), np.uint8), name="np")
    assert mode.value == "mode: in memory"
    dask_layer = viewer.add_image(da.zeros((3, 10, 10), np.uint8, chunks=5), name="dask")
    assert mode.value == f"mode: lazy (dask) — {inputs.LAZY_TEXT}"
    widget.controls.scope.value = form.SLICE
    assert mode.value == "mode: in memory (the current slice is read into memory)"
    widget.controls.scope.value = form.WHOLE
    viewer.add_image(pyramid[:2], name="pyr", rgb=True, multiscale=True)
    assert mode.value == f"mode: lazy (multiscale, 2 levels) — {inputs.LAZY_TEXT}"
    widget.controls.image.value = numpy_layer  # follows the chosen image
    assert mode.value == "mode: in memory"
    widget.controls.image.value = dask_layer
    assert mode.value.startswith("mode: lazy (dask)")


def test_compute_into_memory_single_scale(viewer, widget, run_and_wait, qtbot, volume):
    lazy = da.from_array(volume, chunks=(2, 15, 30))
    source = viewer.add_image(lazy, name="vol", scale=(2, 1, 1))
    choose(widget, source, k=3)
    run_and_wait(widget)
    labels, recolored = outputs(viewer, "vol")
    lazy_labels, lazy_recolored = labels.data.compute(), recolored.data.compute()
    colours = dict(labels.colormap.color_dict)
    compute_into_memory(widget, qtbot, labels)
    assert outputs(viewer, "vol") == (labels, recolored)  # the same layers, now in memory
    assert isinstance(labels.data, np.ndarray) and isinstance(recolored.data, np.ndarray)
    np.testing.assert_array_equal(labels.data, lazy_labels)
    np.testing.assert_array_equal(recolored.data, lazy_recolored)
    assert labels.editable and not widget.edit.controls.compute.enabled
    assert labels.colormap.color_dict.keys() == colours.keys()
    np.testing.assert_allclose(labels.scale, [2, 1, 1])
    np.testing.assert_array_equal(labels.features["count"], segment(volume, 3).counts)
    assert labels.metadata["kmeans"]["mode"] == "in memory"
    assert "computed 'vol k-means labels' into memory" in widget.controls.result.value


def test_compute_into_memory_multiscale_then_edit(viewer, widget, run_and_wait, qtbot, pyramid):
    source = viewer.add_image(
        pyramid, name="slide", rgb=True, multiscale=True, scale=(0.5, 0.5), translate=(3, 4)
    )
    choose(widget, source, k=3)
    run_and_wait(widget)
    labels, recolored = outputs(viewer, "slide")
    order = [layer.name for layer in viewer.layers]
    full_labels, full_recolored = labels.data[0].compute(), recolored.data[0].compute()
    meta = labels.metadata["kmeans"]
    compute_into_memory(widget, qtbot, labels)
    new_labels, new_recolored = outputs(viewer, "slide")
    assert new_labels is not labels and new_recolored is not recolored  # pyramids replaced
    assert [layer.name for layer in viewer.layers] == order  # in the same places
    assert labels not in viewer.layers and recolored not in viewer.layers
    assert not new_labels.multiscale and not new_recolored.multiscale and new_recolored.rgb
    np.testing.assert_array_equal(new_labels.data, full_labels)
    np.testing.assert_array_equal(new_recolored.data, full_recolored)
    for layer in (new_labels, new_recolored):
        assert_same_place(layer, source)
    for key, colour in labels.colormap.color_dict.items():
        np.testing.assert_array_equal(new_labels.colormap.color_dict[key], colour)
    counts = np.bincount(full_labels.ravel(), minlength=4)[1:]
    np.testing.assert_array_equal(new_labels.features["count"], counts)
    np.testing.assert_allclose(new_labels.features["fraction"], counts / counts.sum())
    new_meta = new_labels.metadata["kmeans"]
    assert new_meta["model"] == meta["model"] and new_meta["run"] == meta["run"]
    assert new_meta["mode"] == "in memory" and "note" not in new_meta
    assert widget.outputs[0].labels is new_labels  # the widget's record follows
    assert widget.edit.controls.labels.value is new_labels

    widget.edit.controls.clusters.value = "1, 2"  # now edits work
    widget.edit.controls.merge.native.click()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=30_000)
    assert widget.edit.status.value.startswith("merged clusters 1, 2: 2 clusters")
    assert set(np.unique(new_labels.data)) == {1, 3}  # label numbers kept: 2 joined 1

    widget.controls.n_clusters.value = 4  # the merged labels are edited: a re-run adds layers
    run_and_wait(widget)
    assert new_labels in viewer.layers and viewer.layers[-1].multiscale


def test_rerun_replaces_unedited_in_memory_layers_by_pyramids(
    viewer, widget, run_and_wait, qtbot, pyramid
):
    source = viewer.add_image(pyramid, name="slide", rgb=True, multiscale=True)
    choose(widget, source, k=3)
    run_and_wait(widget)
    compute_into_memory(widget, qtbot, outputs(viewer, "slide")[0])
    n_layers = len(viewer.layers)
    widget.controls.n_clusters.value = 2
    run_and_wait(widget)
    assert len(viewer.layers) == n_layers  # replaced in place, no pile-up
    labels, recolored = outputs(viewer, "slide")
    assert labels.multiscale and recolored.multiscale
    assert labels.metadata["kmeans"]["n_clusters"] == 2
    assert "updated in place" in widget.controls.result.value


def test_too_large_is_refused_and_changes_nothing(
    viewer, widget, run_and_wait, volume, monkeypatch, notes
):
    source = viewer.add_image(da.from_array(volume, chunks=(1, 30, 30)), name="vol")
    choose(widget, source, k=3)
    run_and_wait(widget)
    labels, recolored = outputs(viewer, "vol")
    before = (labels.data, recolored.data, labels.metadata["kmeans"].copy())
    monkeypatch.setattr(inputs, "available_bytes", lambda: 10_000)
    widget.edit.controls.labels.value = labels
    widget.edit.controls.compute.native.click()
    assert widget.worker is None  # nothing started
    # labels 3.6 kB (uint8) + recolored 7.2 kB (uint16) + the dask source 7.2 kB, for edits
    assert errors(notes) == [
        "'vol k-means labels' does not fit in memory: computing it needs about 18.0 kB (labels "
        "3.6 kB, recolored image 7.2 kB, source pixels 7.2 kB), more than 50% of the 10.0 kB "
        "available. Nothing was changed; keep browsing it lazily, or segment a smaller region or "
        "the current slice (scope) to edit."
    ]
    assert outputs(viewer, "vol") == (labels, recolored)
    assert labels.data is before[0] and recolored.data is before[1]
    assert labels.metadata["kmeans"] == before[2]
    assert widget.edit.status.value.startswith("Not done: 'vol k-means labels' does not fit")


def test_edits_of_lazy_labels_are_refused(viewer, widget, run_and_wait, volume, notes):
    source = viewer.add_image(da.from_array(volume, chunks=(1, 15, 15)), name="vol")
    choose(widget, source, k=3)
    run_and_wait(widget)
    labels, _ = outputs(viewer, "vol")
    data, n_layers = labels.data, len(viewer.layers)
    edit = widget.edit.controls
    edit.clusters.value = "1, 2"
    refusal = (
        "'vol k-means labels' is lazy: its labels are computed as you browse and are not in "
        "memory. Click 'Compute into memory' (Edit tab) first, then edit them."
    )
    assert widget.edit.status.value == refusal  # said as soon as the layer is chosen
    assert edit.compute.native.isVisibleTo(widget.edit.group) and edit.compute.enabled
    for button in (edit.merge, edit.update, edit.instances, edit.mask, edit.split):
        assert not button.enabled  # edits of lazy labels are not offered
        button.native.click()
    assert widget.edit.status.value == refusal and errors(notes) == []
    for name in ("update", "merge", "split"):  # and the methods refuse them too
        getattr(widget.edit, name)()
        assert widget.edit.status.value == f"Not done: {refusal}"
    assert len(errors(notes)) == 3 and all("Compute into memory" in m for m in errors(notes))
    assert labels.data is data and len(viewer.layers) == n_layers
    assert not edit.undo.enabled


def test_cancel_leaves_layers_unchanged(viewer, widget, qtbot, volume, monkeypatch):
    release, started = threading.Event(), threading.Event()
    real = workers.fit_lazy

    def held(*args, **kwargs):
        started.set()
        release.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(workers, "fit_lazy", held)
    source = viewer.add_image(da.from_array(volume, chunks=(1, 15, 15)), name="vol")
    choose(widget, source, k=3)
    names = [layer.name for layer in viewer.layers]
    try:
        widget.controls.run.native.click()
        qtbot.waitUntil(started.is_set, timeout=5000)
        widget.controls.cancel.native.click()
        qtbot.waitUntil(lambda: widget.worker is None, timeout=5000)
        assert not release.is_set()  # stopped while the fit was still running
    finally:
        release.set()
    assert [layer.name for layer in viewer.layers] == names
    assert widget.controls.result.value.startswith("Cancelled")


def test_apply_model_to_dask_layer_is_lazy(viewer, widget, run_and_wait, qtbot, volume):
    first = viewer.add_image(volume[:2], name="first")
    choose(widget, first, k=3)
    run_and_wait(widget)
    model = segment(volume[:2], 3).model
    other = viewer.add_image(da.from_array(volume[::-1], chunks=(2, 10, 30)), name="other")
    widget.controls.image.value = other
    widget.edit.controls.labels.value = outputs(viewer, "first")[0]
    widget.edit.controls.apply.native.click()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=30_000)
    labels, _ = outputs(viewer, "other")
    assert isinstance(labels.data, da.Array)
    np.testing.assert_array_equal(labels.data.compute(), model.predict(volume[::-1]))
    assert labels.metadata["kmeans"]["model_from"] == "layer 'first k-means labels'"


def test_extra_channel_and_mask_stay_lazy(viewer, widget, run_and_wait, volume):
    other = (volume[:, ::-1] // 2).astype(np.uint16)
    mask = np.zeros(volume.shape, np.uint8)
    mask[:, 3:27, 2:25] = 1
    a = viewer.add_image(da.from_array(volume, chunks=(2, 15, 15)), name="a")
    b = viewer.add_image(da.from_array(other, chunks=(1, 30, 10)), name="b")
    viewer.add_labels(mask, name="mask")
    choose(widget, a, k=3)
    widget.controls.extra_channels.value = [b]
    widget.controls.mask.value = viewer.layers["mask"]
    run_and_wait(widget)
    labels, recolored = outputs(viewer, "a")
    expected = segment(np.stack([volume, other], axis=-1), 3, channel_axis=-1, mask=mask > 0)
    assert isinstance(labels.data, da.Array) and isinstance(recolored.data, da.Array)
    np.testing.assert_array_equal(labels.data.compute(), expected.labels)
    np.testing.assert_array_equal(recolored.data.compute(), expected.recolored[..., 0])
    np.testing.assert_allclose(labels.features["center_b"], expected.centers[:, 1])


def test_cancel_compute_into_memory_changes_nothing(
    viewer, widget, run_and_wait, qtbot, volume, monkeypatch
):
    source = viewer.add_image(da.from_array(volume, chunks=(1, 15, 15)), name="vol")
    choose(widget, source, k=3)
    run_and_wait(widget)
    labels, recolored = outputs(viewer, "vol")
    data = (labels.data, recolored.data)
    release, started = threading.Event(), threading.Event()
    real = workers._compute_batch

    def held(*args):
        started.set()
        release.wait(30)
        return real(*args)

    monkeypatch.setattr(workers, "_compute_batch", held)
    widget.edit.controls.labels.value = labels
    try:
        widget.edit.controls.compute.native.click()
        qtbot.waitUntil(started.is_set, timeout=5000)
        widget.controls.cancel.native.click()
        release.set()
        qtbot.waitUntil(lambda: widget.worker is None, timeout=5000)
    finally:
        release.set()
    assert (labels.data, recolored.data) == data and isinstance(labels.data, da.Array)
    assert outputs(viewer, "vol") == (labels, recolored)
    assert labels.metadata["kmeans"]["mode"] == "lazy"
    assert widget.controls.result.value.startswith("Cancelled")


def test_shapes_mask_of_a_multiscale_image_stays_lazy(viewer, widget, run_and_wait, pyramid):
    """Issue 8 item 21: a Shapes mask was rasterised at full resolution on the GUI thread."""
    from skimage.draw import polygon2mask

    source = viewer.add_image(pyramid, name="pyr", rgb=True, multiscale=True)
    rect = np.array([[4, 6], [4, 40], [30, 40], [30, 6]], float)
    shapes = viewer.add_shapes([rect], shape_type="rectangle", name="roi")
    lazy_mask = inputs.mask_array(viewer, shapes, source, (40, 48), lazy=True)
    assert isinstance(lazy_mask, da.Array)  # nothing rasterised yet
    np.testing.assert_array_equal(lazy_mask.compute(), polygon2mask((40, 48), rect))
    choose(widget, source, k=3)
    widget.controls.mask.value = shapes
    run_and_wait(widget)
    labels, _ = outputs(viewer, "pyr")
    full = np.asarray(labels.data[0])
    inside = polygon2mask((40, 48), rect)
    assert (full[~inside] == 0).all() and (full[inside] > 0).all()
    model = KMeansModel.from_dict(labels.metadata["kmeans"]["model"])
    np.testing.assert_array_equal(full, model.predict(pyramid[0], mask=inside))
