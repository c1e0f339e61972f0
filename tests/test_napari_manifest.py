"""The manifest: installed copy equals the top-level file, and its contributions work in the app."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from npe2 import PluginManifest

from napari_kmeans._napari.sample_data import synthetic_cells

TOP = Path(__file__).resolve().parents[1] / "napari.yaml"
WIDGET = "K-means segmentation"


def test_installed_manifest_is_the_top_level_file():
    installed = PluginManifest.from_distribution("napari-kmeans")
    top = PluginManifest.from_file(TOP)
    assert installed.model_dump() == top.model_dump()
    assert installed.name == "napari-kmeans" == yaml.safe_load(TOP.read_text())["name"]
    assert "Segmentation" in installed.categories
    installed.validate_imports()  # every python_name imports


def _qt_actions(menu):
    for action in menu.actions():
        yield menu, action
        if action.menu() is not None:
            yield from _qt_actions(action.menu())


def test_layers_segment_menu_opens_the_widget(make_napari_viewer):
    from napari._app_model import get_app_model

    viewer = make_napari_viewer()
    app = get_app_model()
    ids = [getattr(item, "command", None) for item in app.menus.get_menu("napari/layers/segment")]
    assert "napari-kmeans.make_widget" in [c.id for c in ids if c is not None]
    bar = viewer.window._qt_window.menuBar()
    found = [
        (menu.title(), action.text())
        for menu, action in _qt_actions(bar)
        if action.text().startswith(WIDGET)
    ]
    assert ("Segment", f"{WIDGET} (napari k-means)") in found  # Layers > Segment
    app.commands.execute_command("napari-kmeans.make_widget").result()
    widgets = viewer.window.dock_widgets
    assert any(name.startswith(WIDGET) for name in widgets)
    dock = next(w for name, w in widgets.items() if name.startswith(WIDGET))
    assert type(dock).__name__ == "KMeansWidget"


@pytest.mark.parametrize(
    ("key", "names", "shape", "rgb"),
    [
        ("coffee", ["coffee"], (400, 600, 3), True),
        ("coins", ["coins"], (303, 384), False),
        ("cells_3d", ["nuclei", "cytoplasm"], (24, 128, 128), False),
    ],
)
def test_sample_data_in_the_app(make_napari_viewer, key, names, shape, rgb):
    from napari._app_model import get_app_model

    viewer = make_napari_viewer()
    menu = get_app_model().menus.get_menu("napari/file/samples/napari-kmeans")
    assert f"napari-kmeans.{key}" in [item.command.id for item in menu]
    get_app_model().commands.execute_command(f"napari-kmeans.{key}").result()  # File > Open Sample
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
