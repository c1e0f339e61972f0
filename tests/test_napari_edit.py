"""Editing and reusing a result through the widget, in a real viewer (under Xvfb).

Update after painting, merge, split, undo, instances, exports, applying/saving/loading models,
fitting on one frame, and the "Suggest k" plot.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from skimage.measure import label as sk_label
from skimage.morphology import remove_small_objects

from napari_kmeans import KMeansModel, segment
from napari_kmeans.choose_k import elbow, inertia_curve
from napari_kmeans.edit import merge, split
from napari_kmeans.features import cast_colors
from napari_kmeans.segment import fit

NAMES = ["center_red", "center_green", "center_blue"]


@pytest.fixture
def patches():
    """Four flat colour patches with a little noise, 40 x 40 RGB uint8."""
    rng = np.random.default_rng(0)
    colors = np.array([[20, 20, 20], [200, 30, 30], [30, 200, 30], [240, 240, 240]])
    idx = np.repeat(np.repeat(np.arange(4).reshape(2, 2), 20, 0), 20, 1)
    img = colors[idx] + rng.integers(-5, 6, (40, 40, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def segmented(viewer, widget, run_and_wait, image, k, name="img", **kwargs):
    source = viewer.add_image(image, name=name, **kwargs)
    widget.controls.image.value = source
    widget.controls.n_clusters.value = k
    run_and_wait(widget)
    labels = viewer.layers[f"{name} k-means labels"]
    assert widget.edit.controls.labels.value is labels  # the edit group follows the run
    return source, labels, viewer.layers[f"{name} k-means recolored"]


def stored_model(layer):
    return KMeansModel.from_dict(layer.metadata["kmeans"]["model"])


def colours(layer, n):
    """The clusters' own colours (the table's swatches; the labels use distinct colours)."""
    shown = np.array(layer.metadata["kmeans"]["cluster_colors"])
    assert len(shown) >= n
    return shown[:n]


def state(labels, recolored):
    return (
        labels.data.copy(), dict(labels.colormap.color_dict), labels.features.copy(),
        json.dumps(labels.metadata["kmeans"]), recolored.data.copy(),
        json.dumps(recolored.metadata["kmeans"]),
    )  # fmt: skip


def assert_same_state(a, b):
    np.testing.assert_array_equal(a[0], b[0])
    assert a[0].dtype == b[0].dtype
    assert a[1].keys() == b[1].keys()
    for key in a[1]:
        np.testing.assert_array_equal(a[1][key], b[1][key])
    assert a[2].equals(b[2])
    assert a[3] == b[3] and a[5] == b[5]
    np.testing.assert_array_equal(a[4], b[4])


def errors(notes):
    return [message for message, severity in notes if severity == "error"]


def test_update_after_painting(click, viewer, widget, run_and_wait, patches):
    _, labels, recolored = segmented(viewer, widget, run_and_wait, patches, 4, rgb=True)
    before = state(labels, recolored)
    data = labels.data.copy()
    data[:6, :6] = 4  # paint a dark corner with the brightest label
    data[34:, 30:] = 5  # and a new label, beyond k
    labels.data = data.copy()
    labels.refresh()
    click(widget.edit.controls.update)

    table = labels.features
    np.testing.assert_array_equal(table["label"], [1, 2, 3, 4, 5])
    counts = np.bincount(data.ravel(), minlength=6)[1:]
    np.testing.assert_array_equal(table["count"], counts)
    np.testing.assert_allclose(table["fraction"], counts / counts.sum())
    means = np.array([patches[data == v].mean(axis=0) for v in range(1, 6)])
    np.testing.assert_allclose(table[NAMES], means)
    np.testing.assert_allclose(colours(labels, 5), means / 255, atol=1e-6)
    painted = cast_colors(means, np.uint8)
    for v in range(1, 6):
        assert (recolored.data[data == v] == painted[v - 1]).all()
    np.testing.assert_allclose(stored_model(labels).colors, means[:4])  # k stays 4
    np.testing.assert_array_equal(labels.data, data)  # the painted labels are kept
    assert "5 labels" in widget.edit.status.value

    click(widget.edit.controls.undo)
    after_undo = state(labels, recolored)
    np.testing.assert_array_equal(after_undo[0], data)  # undo of Update keeps the painting
    assert_same_state((data, *before[1:]), after_undo)

    labels.paint((20, 20), 2 if data[20, 20] != 2 else 3)  # a stroke, then Update: napari undo
    assert (labels.data != data).any()
    click(widget.edit.controls.update)
    labels.undo()
    np.testing.assert_array_equal(labels.data, data)


def test_merge_split_and_undo(click, viewer, widget, run_and_wait, patches):
    widget.controls.keep_ids.value = False  # labels renumbered 1..k, dark to bright
    source, labels, recolored = segmented(viewer, widget, run_and_wait, patches, 4, rgb=True)
    original = state(labels, recolored)
    first = segment(patches, 4)
    edit = widget.edit
    edit.table.select_labels([2, 3])  # choosing rows fills 'clusters'
    assert edit.controls.clusters.value == "2, 3"
    click(edit.controls.merge)

    want_model, want_labels = merge(first.model, first.labels, [2, 3])
    np.testing.assert_array_equal(labels.data, want_labels)
    assert set(np.unique(labels.data)) == {1, 2, 3}
    model = stored_model(labels)
    np.testing.assert_allclose(model.colors, want_model.colors)
    np.testing.assert_array_equal(model.predict(patches), labels.data)
    np.testing.assert_allclose(colours(labels, 3), model.colors / 255, atol=1e-6)
    np.testing.assert_allclose(labels.features[NAMES], model.colors)
    np.testing.assert_array_equal(labels.features["count"], np.bincount(want_labels.ravel())[1:])
    np.testing.assert_array_equal(recolored.data, model.recolor(patches, labels.data))
    assert labels.metadata["kmeans"]["edits"] == ["merge [2, 3]"]
    merged = state(labels, recolored)

    edit.controls.clusters.value = "3"
    edit.controls.split_n.value = 2
    click(edit.controls.split)
    model = stored_model(labels)
    assert set(np.unique(labels.data)) == {1, 2, 3, 4} and model.n_clusters == 4
    np.testing.assert_array_equal(model.predict(patches), labels.data)
    lum = model.colors @ [0.2126, 0.7152, 0.0722]
    assert np.all(np.diff(lum) > 0)  # still dark to bright
    unchanged = merged[0] != 3  # cluster 3 is the brightest: no other label is renumbered
    assert (labels.data[unchanged] == merged[0][unchanged]).all()
    np.testing.assert_allclose(colours(labels, 4), model.colors / 255, atol=1e-6)
    np.testing.assert_array_equal(recolored.data, model.recolor(patches, labels.data))
    np.testing.assert_array_equal(source.data, patches)  # the source is never modified

    click(edit.controls.undo)
    assert_same_state(merged, state(labels, recolored))
    click(edit.controls.undo)
    assert_same_state(original, state(labels, recolored))
    assert not edit.controls.undo.enabled


def test_edit_errors_change_nothing(click, viewer, widget, run_and_wait, patches, notes):
    _, labels, recolored = segmented(viewer, widget, run_and_wait, patches, 4, rgb=True)
    labels.paint((0, 0), 7)  # a label beyond k
    before = state(labels, recolored)
    edit = widget.edit
    for text, button, message in [
        ("2", edit.controls.merge, "at least two"),
        ("2, 9", edit.controls.merge, "label 9 is not a cluster of this model"),
        ("1, 2", edit.controls.split, "Split takes one cluster"),
        ("two", edit.controls.merge, "'two' is not a label value"),
    ]:
        edit.controls.clusters.value = text
        click(button)
        assert any(message in m for m in errors(notes)), message
    assert not edit.controls.undo.enabled  # nothing was done, so nothing to undo
    edit.undo()
    assert "no edit to undo" in errors(notes)[-1]
    assert_same_state(before, state(labels, recolored))
    assert edit.status.value.startswith("Not done")


@pytest.mark.parametrize("three_d", [False, True])
def test_instances_match_skimage(click, viewer, widget, run_and_wait, three_d):
    rng = np.random.default_rng(1)
    shape = (6, 24, 24) if three_d else (40, 40)
    image = (rng.random(shape) > 0.7).astype(np.uint8) * 200 + 20
    scale = (2.0, 0.5, 0.5) if three_d else (0.5, 0.5)
    _, labels, _ = segmented(
        viewer, widget, run_and_wait, image, 2, scale=scale, translate=(1.0,) * len(shape)
    )
    edit = widget.edit
    edit.controls.clusters.value = "2"
    click(edit.controls.instances)
    layer = viewer.layers[-1]
    assert layer.name == "img k-means labels instances"
    expected = sk_label(labels.data == 2)
    assert layer.data.max() == expected.max() == layer.features.shape[0]
    np.testing.assert_array_equal(layer.data > 0, labels.data == 2)
    np.testing.assert_allclose(layer.scale, scale)
    np.testing.assert_allclose(layer.translate, (1.0,) * len(shape))

    edit.controls.clusters.value = ""  # every cluster, with a size filter
    edit.controls.min_size.value = 3
    click(edit.controls.instances)
    layer = viewer.layers[-1]
    want = sum(
        sk_label(remove_small_objects(labels.data == c, max_size=2, connectivity=len(shape))).max()
        for c in (1, 2)
    )
    assert layer.data.max() == want
    np.testing.assert_array_equal(np.unique(layer.features["cluster"]), [1, 2])


def test_csv_and_mask_exports(click, viewer, widget, run_and_wait, patches, tmp_path):
    _, labels, _ = segmented(
        viewer, widget, run_and_wait, patches, 4, rgb=True, scale=(2, 3), translate=(5, 7)
    )
    edit = widget.edit
    path = edit.export_csv(tmp_path / "table.csv")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["label"]) for r in rows] == [1, 2, 3, 4]
    assert [int(r["count"]) for r in rows] == labels.features["count"].tolist()
    np.testing.assert_allclose([float(r["center_red"]) for r in rows], labels.features.center_red)

    edit.controls.clusters.value = "2, 4"
    click(edit.controls.mask)
    mask = viewer.layers[-1]
    assert mask.name == "img k-means labels mask 2, 4"
    np.testing.assert_array_equal(mask.data, np.isin(labels.data, [2, 4]).astype(np.uint8))
    np.testing.assert_allclose(mask.scale, [2, 3])
    np.testing.assert_allclose(mask.translate, [5, 7])


def wait_idle(qtbot, widget):
    qtbot.waitUntil(lambda: widget.worker is None, timeout=30_000)


def test_apply_model_to_shuffled_copy(click, viewer, widget, run_and_wait, patches, qtbot):
    _, labels, _ = segmented(viewer, widget, run_and_wait, patches, 4, rgb=True)
    order = np.random.default_rng(2).permutation(patches.shape[0] * patches.shape[1])
    shuffled = patches.reshape(-1, 3)[order].reshape(patches.shape)
    copy = viewer.add_image(shuffled, name="shuffled", rgb=True, scale=(3, 3))
    widget.controls.image.value = copy
    widget.edit.controls.labels.value = labels
    click(widget.edit.controls.apply)
    wait_idle(qtbot, widget)
    out = viewer.layers["shuffled k-means labels"]
    want = labels.data.reshape(-1)[order].reshape(labels.data.shape)
    np.testing.assert_array_equal(out.data, want)
    np.testing.assert_allclose(out.scale, [3, 3])
    assert out.metadata["kmeans"]["model_from"] == "layer 'img k-means labels'"
    assert widget.controls.result.value.startswith("Applied the model of layer")


def test_save_and_load_model_round_trip(
    click, viewer, widget, run_and_wait, patches, qtbot, tmp_path
):
    _, labels, _ = segmented(viewer, widget, run_and_wait, patches, 4, rgb=True)
    widget.edit.controls.clusters.value = "1, 2"
    click(widget.edit.controls.merge)  # save an edited model
    path = widget.edit.save_model(tmp_path / "model.json")
    saved = KMeansModel.from_json(path.read_text())
    assert saved.to_dict() == labels.metadata["kmeans"]["model"]
    n_layers = len(viewer.layers)
    assert widget.edit.load_model(path)
    wait_idle(qtbot, widget)
    assert len(viewer.layers) == n_layers + 2  # the edited layers are kept, new ones added
    np.testing.assert_array_equal(viewer.layers[-1].data, labels.data)
    assert viewer.layers[-1].metadata["kmeans"]["model"] == saved.to_dict()


def bad_files(tmp_path, gray_model):
    good = gray_model.to_dict()
    future = {**good, "version": 99}
    rgb16 = segment(np.arange(60, dtype=np.uint16).reshape(4, 5, 3), 2).model.to_dict()
    files = {
        "garbage.json": ("{not json", "invalid JSON"),
        "other.json": (json.dumps({"format": "something else"}), "'format' is 'something else'"),
        "future.json": (json.dumps(future), "format version 99, newer than"),
        "gray.json": (json.dumps(good), "fitted on single-channel data, but 'img' is RGB"),
        "rgb16.json": (json.dumps(rgb16), "fitted on uint16 data"),
        "pickle.json": ("cos\nsystem\n(S'echo hi'\ntR.", "invalid JSON"),
    }
    for name, (text, _) in files.items():
        (tmp_path / name).write_text(text)
    return {tmp_path / name: message for name, (_, message) in files.items()}


def test_bad_model_files_are_rejected(viewer, widget, run_and_wait, patches, notes, tmp_path):
    gray_model = segment(np.arange(20, dtype=np.uint8), 2).model
    _, labels, recolored = segmented(viewer, widget, run_and_wait, patches, 3, rgb=True)
    layers = list(viewer.layers)
    before = state(labels, recolored)
    for path, message in bad_files(tmp_path, gray_model).items():
        assert not widget.edit.load_model(path)
        assert widget.worker is None  # nothing was started
        assert any(message in m for m in errors(notes)), (path.name, errors(notes))
        assert list(viewer.layers) == layers
    assert_same_state(before, state(labels, recolored))
    assert widget.edit.status.value.startswith("Not done")


def test_fit_on_current_frame_labels_every_frame(viewer, widget, run_and_wait):
    rng = np.random.default_rng(3)
    movie = rng.integers(0, 1000, (3, 16, 18), dtype=np.uint16)
    movie[2] += 500  # the last frame is brighter: a per-frame fit would label it differently
    source = viewer.add_image(movie, name="movie")
    widget.controls.image.value = source
    widget.controls.n_clusters.value = 3
    viewer.dims.set_current_step(0, 1)
    assert widget.controls.fit_on.enabled
    widget.controls.fit_on.value = "current slice only"
    run_and_wait(widget)
    labels = viewer.layers["movie k-means labels"]
    model = fit(movie[1], 3).model
    assert labels.data.shape == movie.shape
    np.testing.assert_array_equal(labels.data, model.predict(movie))
    assert labels.metadata["kmeans"]["parameters"]["fit_slice"] == {"0": 1}
    np.testing.assert_allclose(stored_model(labels).centers, model.centers)


def test_suggest_k_plot_and_pick(click, viewer, widget, qtbot):
    image = np.repeat(np.array([0, 10, 100, 110, 200, 210], dtype=np.uint8), 10).reshape(6, 10)
    widget.controls.image.value = viewer.add_image(image, name="steps")
    panel = widget.suggest
    panel.k_max.value = 6
    click(panel.suggest)
    qtbot.waitUntil(lambda: panel.worker is None, timeout=30_000)
    ks, inertias = inertia_curve(image, 6)
    total = inertia_curve(image, 1, k_min=1)[1][0]
    line = panel.plot.curve
    np.testing.assert_array_equal(line.get_xdata(), [2, 3, 4, 5, 6])
    np.testing.assert_allclose(line.get_ydata(), 100 * (1 - inertias / total))  # % explained
    assert elbow(ks, inertias) == 3
    np.testing.assert_array_equal(panel.plot.elbow_marker.get_xdata(), [3])
    assert widget.controls.n_clusters.value == 3  # set to the elbow

    # a real click on the point k = 5 of the canvas
    from qtpy.QtCore import QPoint, Qt

    canvas = panel.plot.canvas
    canvas.draw()
    x, y = panel.plot.axes.transData.transform((5, 100 * (1 - inertias[3] / total)))
    ratio = canvas.device_pixel_ratio
    point = QPoint(round(x / ratio), round((canvas.figure.bbox.height - y) / ratio))
    qtbot.mouseClick(canvas, Qt.MouseButton.LeftButton, pos=point)
    assert widget.controls.n_clusters.value == 5
    np.testing.assert_array_equal(panel.plot.chosen_marker.get_xdata(), [5])
    panel.choice.value = 4  # or choose it from the list next to the plot
    assert widget.controls.n_clusters.value == 4


def test_edits_of_a_slice_result_with_extra_channels(click, viewer, widget, run_and_wait):
    rng = np.random.default_rng(4)
    a = rng.integers(0, 4000, (3, 16, 18), dtype=np.uint16)
    b = rng.integers(0, 4000, (3, 16, 18), dtype=np.uint16)
    layer_b = viewer.add_image(b, name="b", scale=(2, 1, 1))
    source = viewer.add_image(a, name="a", scale=(2, 1, 1))
    widget.controls.image.value = source
    widget.controls.extra_channels.value = [layer_b]
    widget.controls.n_clusters.value = 3
    viewer.dims.set_current_step(0, 2)
    widget.controls.scope.value = "current slice"
    run_and_wait(widget)
    labels, recolored = viewer.layers["a k-means labels"], viewer.layers["a k-means recolored"]
    plane = np.stack([a[2], b[2]], axis=-1)
    first = segment(plane, 3, channel_axis=-1)
    np.testing.assert_array_equal(labels.data[0], first.labels)

    data = labels.data.copy()
    data[0, :4, :4] = 3
    labels.data = data.copy()
    click(widget.edit.controls.update)
    sel = data[0] == 3
    np.testing.assert_allclose(labels.features["center_a"][2], a[2][sel].mean())
    np.testing.assert_allclose(labels.features["center_b"][2], b[2][sel].mean())

    widget.edit.controls.clusters.value = "1, 2"
    click(widget.edit.controls.merge)
    model = stored_model(labels)
    assert labels.data.shape == recolored.data.shape == (1, 16, 18)
    np.testing.assert_array_equal(np.unique(labels.data), [1, 3])  # label numbers kept
    np.testing.assert_array_equal(model.predict(plane)[~sel], labels.data[0][~sel])  # unpainted
    painted = cast_colors(model.colors, np.uint16)[:, 0]
    np.testing.assert_array_equal(recolored.data[0], painted[labels.data[0] - 1])
    np.testing.assert_allclose(recolored.translate, [4, 0, 0])  # still on its slice

    source.name = "renamed"  # the widget remembers its source: edits keep working
    click(widget.edit.controls.undo)
    np.testing.assert_array_equal(labels.data, data)


# -- hardening (issue 8): every promise kept, every failure said plainly ----------------------


def test_save_and_load_buttons_open_their_dialogs(
    viewer, widget, run_and_wait, patches, click, tmp_path, monkeypatch
):
    """Item 20: a click used to pass False as the path, so no dialog ever opened."""
    from qtpy.QtWidgets import QFileDialog

    _, labels, _ = segmented(viewer, widget, run_and_wait, patches, 4, rgb=True)
    model_path, table_path = tmp_path / "model.json", tmp_path / "table.csv"
    asked = []

    def save_dialog(parent, title, default, kinds):
        asked.append(title)
        return (str(model_path if "json" in kinds else table_path), kinds)

    monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(save_dialog))
    monkeypatch.setattr(
        QFileDialog, "getOpenFileName", staticmethod(lambda *a: (str(model_path), ""))
    )
    click(widget.edit.controls.save_model)
    assert asked == ["Save the model"]
    assert KMeansModel.load(model_path).to_dict() == labels.metadata["kmeans"]["model"]
    click(widget.edit.controls.csv)
    with open(table_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["label"]) for r in rows] == [1, 2, 3, 4]
    labels.metadata = {**labels.metadata, "probe": 1}
    click(widget.edit.controls.load_model)  # applied to the image: its outputs are updated
    assert labels.metadata["kmeans"]["model_from"] == "file 'model.json'"
    np.testing.assert_array_equal(labels.data, segment(patches, 4).labels)


def test_file_errors_are_reported_not_raised(
    viewer, widget, run_and_wait, patches, notes, tmp_path
):
    """Item 14: OSError, huge or endless files and deep JSON give 'Not done', never a crash."""
    import os

    _, labels, recolored = segmented(viewer, widget, run_and_wait, patches, 3, rgb=True)
    before = state(labels, recolored)
    edit = widget.edit
    assert edit.save_model(tmp_path / "missing" / "model.json") is None
    assert "could not write" in edit.status.value and "missing" in edit.status.value
    assert edit.export_csv(tmp_path) is None  # a folder, not a file
    assert edit.status.value.startswith("Not done: could not write")
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    for path, message in [
        (deep, "nested too deeply"),
        (fifo, "not a regular file"),
        (tmp_path / "absent.json", "cannot read model file"),
    ]:
        assert not edit.load_model(path)
        assert message in edit.status.value, edit.status.value
    assert not edit.load_model("/dev/zero")  # read with a bound, not forever
    assert "not a regular file" in edit.status.value
    assert widget.worker is None
    assert_same_state(before, state(labels, recolored))


def test_undo_never_discards_later_painting_or_a_rerun(
    viewer, widget, run_and_wait, patches, click, notes
):
    """Item 2: Undo restored the snapshot from before the edit, over later strokes."""
    _, labels, recolored = segmented(viewer, widget, run_and_wait, patches, 4, rgb=True)
    edit = widget.edit
    edit.controls.clusters.value = "2, 3"
    click(edit.controls.merge)
    merged = labels.data.copy()
    labels.paint((1, 1), 3)  # a correction after the merge
    painted = labels.data.copy()
    assert (painted != merged).any()
    click(edit.controls.undo)
    assert "painted (or changed) after the last edit" in errors(notes)[-1]
    np.testing.assert_array_equal(labels.data, painted)  # the stroke is kept
    labels.undo()  # napari's own undo still has the stroke
    np.testing.assert_array_equal(labels.data, merged)
    click(edit.controls.undo)  # now the labels are as the merge left them: undo works
    assert edit.status.value.startswith("undid the last edit"), edit.status.value
    assert len(np.unique(labels.data)) == 4

    labels.paint((1, 1), 4)
    painted = state(labels, recolored)
    click(edit.controls.update)  # an edit after painting, then a re-run with another k
    assert edit.controls.undo.enabled
    widget.controls.n_clusters.value = 3
    run_and_wait(widget)
    rerun = viewer.layers[-1]
    assert rerun is not labels and labels in viewer.layers  # the edited result is kept
    rerun_data = rerun.data.copy()
    click(edit.controls.undo)  # undoes the Update of the kept layer, never the re-run
    assert edit.status.value.startswith("undid the last edit")
    assert_same_state(painted, state(labels, recolored))  # as before the Update, strokes kept
    np.testing.assert_array_equal(rerun.data, rerun_data)
    assert rerun.metadata["kmeans"]["n_clusters"] == 3


def test_edits_refuse_another_image_with_the_source_name(
    viewer, widget, run_and_wait, patches, click, notes
):
    """Item 9: a different image given the removed source's name was used for the colours."""
    source, labels, recolored = segmented(viewer, widget, run_and_wait, patches, 4, rgb=True)
    before = state(labels, recolored)
    viewer.layers.remove(source)
    viewer.add_image(255 - patches, name="img", rgb=True)  # another image, the same name
    widget.edit.controls.labels.value = labels
    widget.edit.controls.clusters.value = "1, 2"
    click(widget.edit.controls.merge)
    assert "is not the image 'img k-means labels' was made from" in errors(notes)[-1]
    assert_same_state(before, state(labels, recolored))
    viewer.layers.remove("img")
    viewer.add_image(patches.copy(), name="img", rgb=True)  # the same pixels again: accepted
    click(widget.edit.controls.merge)
    assert widget.edit.status.value.startswith("merged clusters 1, 2")


def test_a_typo_range_of_clusters_is_refused_at_once(
    viewer, widget, run_and_wait, patches, click, notes
):
    """Item 16: '1-10000000' froze the GUI and built an 80 MB message."""
    _, labels, recolored = segmented(viewer, widget, run_and_wait, patches, 4, rgb=True)
    before = state(labels, recolored)
    widget.edit.controls.clusters.value = "1-10000000"
    click(widget.edit.controls.merge)
    message = errors(notes)[-1]
    assert "10000000 is above the highest label, 4" in message and len(message) < 200
    widget.edit.controls.clusters.value = "x" * 10_000
    click(widget.edit.controls.merge)
    assert len(errors(notes)[-1]) < 300
    assert_same_state(before, state(labels, recolored))


def test_edits_run_in_a_worker_and_cancel_changes_nothing(
    viewer, widget, run_and_wait, patches, qtbot, monkeypatch
):
    """Item 21: Split, Merge, Update and Instances ran on the GUI thread and froze napari."""
    import threading

    from napari_kmeans._napari import workers

    _, labels, recolored = segmented(viewer, widget, run_and_wait, patches, 4, rgb=True)
    before = state(labels, recolored)
    release, threads = threading.Event(), []
    real = workers._edit

    def held(job, progress=None):
        threads.append(threading.current_thread())
        while not release.wait(0.01):
            progress(0.5, "held")  # raises once the edit is cancelled
        return real(job, progress)

    monkeypatch.setattr(workers, "_edit", held)
    widget.edit.controls.clusters.value = "3"
    widget.edit.controls.split.native.click()
    qtbot.waitUntil(lambda: bool(threads), timeout=10_000)
    assert threads[0] is not threading.main_thread()  # computed off the GUI thread
    assert widget.worker is not None and widget.controls.cancel.enabled
    widget.controls.cancel.native.click()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=10_000)
    qtbot.waitUntil(lambda: not threads[0].is_alive(), timeout=10_000)  # the edit itself stops
    assert_same_state(before, state(labels, recolored))
    assert not widget.edit.controls.undo.enabled
    assert "Cancelled" in widget.edit.status.value

    release.set()
    widget.edit.controls.split.native.click()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=30_000)
    assert stored_model(labels).n_clusters == 5 and widget.edit.controls.undo.enabled


def test_suggest_k_on_a_lazy_layer_reads_a_subsample(viewer, widget, qtbot, monkeypatch):
    """Item 12: Suggest k read a whole dask array into memory."""
    import dask.array as da

    from napari_kmeans._napari import inputs, workers

    seen = []
    real = workers._curve

    def recording(full, params, k_max, progress=None):
        seen.append(full.spatial_shape)
        return real(full, params, k_max, progress)

    monkeypatch.setattr(workers, "_curve", recording)
    big = da.random.default_rng(0).integers(0, 200, (4, 2048, 2048), chunks=(1, 512, 512))
    widget.controls.image.value = viewer.add_image(big.astype(np.uint8), name="big")
    panel = widget.suggest
    panel.k_max.value = 4
    panel.suggest.native.click()
    qtbot.waitUntil(lambda: panel.worker is None, timeout=60_000)
    assert len(seen) == 1 and np.prod(seen[0]) <= inputs.CURVE_PIXELS
    np.testing.assert_array_equal(panel.plot.curve.get_xdata(), [2, 3, 4])


def test_suggest_k_cancel_and_close(make_napari_viewer, qtbot, monkeypatch):
    """Items 12 and 19: Suggest k had no Cancel, and closing the viewer raised."""
    import threading

    from napari_kmeans._napari import workers

    release, threads = threading.Event(), []
    real = workers._curve

    def held(full, params, k_max, progress=None):
        threads.append(threading.current_thread())
        while not release.wait(0.01):
            progress(0.5, "held")
        return real(full, params, k_max, progress)

    monkeypatch.setattr(workers, "_curve", held)

    def start():
        viewer = make_napari_viewer()
        _, widget = viewer.window.add_plugin_dock_widget("napari-kmeans", "K-means segmentation")
        image = np.repeat(np.arange(6, dtype=np.uint8) * 40, 10).reshape(6, 10)
        widget.controls.image.value = viewer.add_image(image, name="steps")
        n = len(threads)
        widget.suggest.suggest.native.click()
        qtbot.waitUntil(lambda: len(threads) > n, timeout=10_000)
        assert widget.suggest.cancel.enabled
        return viewer, widget, widget.suggest

    _, widget, panel = start()
    panel.cancel.native.click()
    qtbot.waitUntil(lambda: panel.worker is None, timeout=10_000)
    qtbot.waitUntil(lambda: not threads[-1].is_alive(), timeout=10_000)  # the curve stops too
    assert panel.status.value.startswith("Cancelled") and not panel.plot.isVisible()
    assert widget.controls.n_clusters.value == 5  # k unchanged

    viewer, _, _ = start()
    viewer.close()  # used to raise "wrapped C/C++ object has been deleted"
    qtbot.waitUntil(lambda: not threads[-1].is_alive(), timeout=10_000)


def test_painting_during_an_edit_is_kept(
    viewer, widget, run_and_wait, patches, qtbot, monkeypatch, notes
):
    """Item 2/21: an edit computed in a worker is not written over strokes made meanwhile."""
    import threading

    from napari_kmeans._napari import workers

    _, labels, _ = segmented(viewer, widget, run_and_wait, patches, 4, rgb=True)
    release, started = threading.Event(), threading.Event()
    real = workers._edit

    def held(job, progress=None):
        started.set()
        release.wait(30)
        return real(job, progress)

    monkeypatch.setattr(workers, "_edit", held)
    widget.edit.controls.clusters.value = "2, 3"
    widget.edit.controls.merge.native.click()
    qtbot.waitUntil(started.is_set, timeout=10_000)
    labels.paint((2, 2), 4)  # a stroke while the merge is computed
    painted = labels.data.copy()
    release.set()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=30_000)
    assert "changed while the edit was computed" in errors(notes)[-1]
    np.testing.assert_array_equal(labels.data, painted)
    assert not widget.edit.controls.undo.enabled


# -- the Edit tab as a biologist meets it (issue 10) ----------------------------------------------


def test_merge_and_split_say_which_labels_moved(viewer, widget, run_and_wait, patches, click):
    """Item 8: Merge and Split renumbered clusters without saying so."""
    widget.controls.keep_ids.value = False  # labels renumbered 1..k, dark to bright
    segmented(viewer, widget, run_and_wait, patches, 4, rgb=True)
    edit = widget.edit
    edit.controls.clusters.value = "1"
    click(edit.controls.split)
    assert edit.status.value == (
        "split cluster 1: 5 clusters; label 1 is now 1, 2; 2 is now 3; 3 is now 4; 4 is now 5"
    )
    edit.controls.clusters.value = "1, 2"
    click(edit.controls.merge)
    assert edit.status.value == (
        "merged clusters 1, 2: 4 clusters; label 2 is now 1; 3 is now 2; 4 is now 3; 5 is now 4"
    )


def test_merge_and_split_keep_label_numbers_by_default(
    viewer, widget, run_and_wait, patches, click
):
    """Issue 13: with 'keep label numbers' (the default) an edit renumbers no other cluster."""
    source, labels, recolored = segmented(viewer, widget, run_and_wait, patches, 4, rgb=True)
    assert widget.controls.keep_ids.value
    first = segment(patches, 4)
    original = state(labels, recolored)
    edit = widget.edit
    edit.controls.clusters.value = "1"
    click(edit.controls.split)
    model_split, want = split(first.model, patches, first.labels, 1, 2, keep_ids=True)
    np.testing.assert_array_equal(labels.data, want)
    outside = first.labels != 1
    np.testing.assert_array_equal(labels.data[outside], first.labels[outside])  # nothing moved
    assert set(np.unique(labels.data[~outside])) == {1, 5}
    assert edit.status.value == "split cluster 1: 5 clusters; label 1 is now 1, 5"
    np.testing.assert_array_equal(stored_model(labels).predict(patches), labels.data)

    edit.controls.clusters.value = "2, 3"
    click(edit.controls.merge)
    _, want = merge(model_split, want, [2, 3], keep_ids=True)
    np.testing.assert_array_equal(labels.data, want)
    assert set(np.unique(labels.data)) == {1, 2, 4, 5}
    assert edit.status.value == "merged clusters 2, 3: 4 clusters; label 3 is now 2"
    model = stored_model(labels)
    np.testing.assert_array_equal(model.predict(patches), labels.data)
    np.testing.assert_array_equal(recolored.data, model.recolor(patches, labels.data))
    np.testing.assert_allclose(
        colours(labels, 5)[[0, 1, 3, 4]], model.colors[[0, 1, 3, 4]] / 255, atol=1e-6
    )
    np.testing.assert_array_equal(source.data, patches)  # the source is never modified

    click(edit.controls.undo)
    click(edit.controls.undo)
    assert_same_state(original, state(labels, recolored))


def test_update_without_painting_adds_no_undo_step(viewer, widget, run_and_wait, patches, click):
    """Item 9: Update with nothing painted still added an undo step."""
    _, labels, recolored = segmented(viewer, widget, run_and_wait, patches, 4, rgb=True)
    before = state(labels, recolored)
    click(widget.edit.controls.update)
    assert widget.edit.status.value.startswith("Nothing to update")
    assert not widget.edit.controls.undo.enabled
    assert_same_state(before, state(labels, recolored))


def test_choosing_a_table_row_shows_its_cluster(viewer, widget, run_and_wait, patches):
    """Item 9: selecting a table row did not highlight the cluster."""
    _, labels, _ = segmented(viewer, widget, run_and_wait, patches, 4, rgb=True)
    table = widget.edit.table
    table.select_labels([3])
    assert labels.selected_label == 3 and labels.show_selected_label
    table.select_labels([2, 3])
    assert labels.selected_label == 2 and not labels.show_selected_label
    assert widget.edit.controls.clusters.value == "2, 3"
    assert table.height() < 300 and table.verticalScrollBar().maximum() == 0  # 4 rows, no scroll
