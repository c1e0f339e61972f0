"""The manifest: installed copy equals the top-level file, and its contributions work in the app."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from npe2 import PluginManifest

import napari_kmeans
from napari_kmeans._napari.sample_data import synthetic_cells

ROOT = Path(__file__).resolve().parents[1]
TOP = ROOT / "napari.yaml"
WIDGET = "K-means segmentation"


def test_installed_manifest_is_the_top_level_file():
    installed = PluginManifest.from_distribution("napari-kmeans")
    top = PluginManifest.from_file(TOP)
    assert installed.model_dump() == top.model_dump()
    assert installed.name == "napari-kmeans" == yaml.safe_load(TOP.read_text())["name"]
    assert "Segmentation" in installed.categories
    installed.validate_imports()  # every python_name imports


def test_the_package_holds_a_real_copy_of_the_top_level_manifest():
    """No symlink: a Windows checkout (symlinks off) turns one into a one-line text file. The
    package keeps a plain copy of the top-level napari.yaml, byte for byte."""
    packaged = Path(napari_kmeans.__file__).with_name("napari.yaml")
    assert not packaged.is_symlink()
    assert packaged.read_bytes() == TOP.read_bytes(), (
        f"{packaged} differs from {TOP}: copy it (cp napari.yaml src/napari_kmeans/napari.yaml)"
    )
    if (ROOT / ".git").exists() and shutil.which("git"):  # in a checkout: git stores a file
        staged = subprocess.run(
            ["git", "ls-files", "-s", "src/napari_kmeans/napari.yaml"],
            cwd=ROOT, capture_output=True, text=True, check=False,
        ).stdout  # fmt: skip
        assert not staged.startswith("120000"), "src/napari_kmeans/napari.yaml is a git symlink"


def _qt_actions(menu):
    for action in menu.actions():
        yield menu, action
        if action.menu() is not None:
            yield from _qt_actions(action.menu())


def test_layers_segment_menu_opens_the_widget(make_napari_viewer, napari_app, docked):
    viewer = make_napari_viewer()
    app = napari_app
    ids = [getattr(item, "command", None) for item in app.menus.get_menu("napari/layers/segment")]
    ids = [c.id for c in ids if c is not None]
    # napari >= 0.6 names the manifest's command; 0.5 a command of its own per widget
    (command,) = {"napari-kmeans.make_widget", f"napari-kmeans:{WIDGET}"} & set(ids)
    bar = viewer.window._qt_window.menuBar()
    found = [
        (menu.title(), action.text())
        for menu, action in _qt_actions(bar)
        if action.text().startswith(WIDGET)
    ]
    assert ("Segment", f"{WIDGET} (napari k-means)") in found  # Layers > Segment
    app.commands.execute_command(command).result()
    widgets = docked(viewer.window)
    assert any(name.startswith(WIDGET) for name in widgets)
    dock = next(w for name, w in widgets.items() if name.startswith(WIDGET))
    assert type(dock).__name__ == "KMeansWidget"


@pytest.mark.parametrize(
    ("key", "names", "shape", "rgb"),
    [
        ("coffee", ["coffee"], (400, 600, 3), True),
        ("coins", ["coins"], (303, 384), False),
        ("cells_3d", ["nuclei", "cytoplasm"], (24, 128, 128), False),
        ("noisy", ["noisy blobs"], (256, 256), False),
        ("textures", ["textures"], (384, 384), False),
    ],
)
def test_sample_data_in_the_app(make_napari_viewer, napari_app, key, names, shape, rgb):
    viewer = make_napari_viewer()
    menu = napari_app.menus.get_menu("napari/file/samples/napari-kmeans")
    # napari >= 0.6 names the manifest's command; 0.5 a command of its own per sample
    ids = {item.command.id for item in menu}
    (command,) = {f"napari-kmeans.{key}", f"napari-kmeans:{key}"} & ids
    napari_app.commands.execute_command(command).result()  # File > Open Sample
    assert [layer.name for layer in viewer.layers] == names
    for layer in viewer.layers:
        assert layer.data.shape == shape and layer.rgb is rgb
    viewer.layers.clear()
    viewer.open_sample("napari-kmeans", key)
    assert [layer.name for layer in viewer.layers] == names


def test_synthetic_cells_are_seeded_and_two_level():
    nuclei, cytoplasm = synthetic_cells((8, 40, 40), n_cells=3, seed=1)
    again, _ = synthetic_cells((8, 40, 40), n_cells=3, seed=1)
    np.testing.assert_array_equal(nuclei, again)
    assert nuclei.dtype == np.uint16 and nuclei.shape == (8, 40, 40)
    assert nuclei.max() > 600 > np.median(nuclei)  # bright nuclei on a dim background
    assert cytoplasm.max() > 300 and not np.array_equal(nuclei, cytoplasm)


def test_the_feature_samples_show_what_features_do():
    """The two samples of issue 12: values alone fail, the matching preset works."""
    from scipy.optimize import linear_sum_assignment

    from napari_kmeans import segment
    from napari_kmeans._napari.sample_data import noisy_blobs, texture_mosaic

    def accuracy(truth, labels):
        k = int(max(truth.max(), labels.max())) + 1
        table = np.zeros((k, k))
        np.add.at(table, (truth.ravel(), labels.ravel()), 1)
        rows, cols = linear_sum_assignment(-table)
        return table[rows, cols].sum() / truth.size

    truth, image = noisy_blobs()
    assert accuracy(truth, segment(image, 2).labels - 1) < 0.8
    assert accuracy(truth, segment(image, 2, smoothing=2).labels - 1) > 0.95
    truth, image = texture_mosaic()
    assert accuracy(truth - 1, segment(image, 3).labels - 1) < 0.65
    assert accuracy(truth - 1, segment(image, 3, features="texture").labels - 1) > 0.85
