"""Render the screenshots in docs/images from a real viewer (run under Xvfb: `make docs-images`).

Each screenshot docks the widget through the manifest, runs it on a sample of the plugin, waits
for the worker and saves the window, so the pictures always show the current widget and results.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import napari
from qtpy.QtCore import QRect
from qtpy.QtWidgets import QApplication
from skimage import data

IMAGES = Path(__file__).resolve().parent / "images"
WIDGET = "K-means segmentation"


def _settle(seconds=0.5, until=None, timeout=120.0):
    """Process Qt events for ``seconds``, or until ``until()`` is true."""
    app = QApplication.instance()
    start = time.perf_counter()
    while True:
        app.processEvents()
        elapsed = time.perf_counter() - start
        if (until is None and elapsed > seconds) or (until is not None and until()):
            break
        if elapsed > timeout:
            raise TimeoutError("the k-means run did not finish")
        time.sleep(0.01)


def _viewer(sample):
    viewer = napari.Viewer(title="napari k-means")
    viewer.window._qt_window.resize(1500, 950)
    viewer.open_sample("napari-kmeans", sample)
    dock, widget = viewer.window.add_plugin_dock_widget("napari-kmeans", WIDGET)
    return viewer, dock, widget


def _run(widget):
    widget.run()
    _settle(until=lambda: widget.worker is None)
    _settle(0.5)


def rgb_photo():
    """The coffee photo, k=5: labels over the photo, the widget with its result line."""
    viewer, dock, widget = _viewer("coffee")
    widget.controls.n_clusters.value = 5
    _run(widget)
    viewer.layers["coffee k-means labels"].opacity = 0.8
    viewer.screenshot(IMAGES / "widget_rgb.png", canvas_only=False, flash=False)
    widget.controls.advanced.expand(animate=False)
    _settle(0.3)
    height = widget.mapTo(dock, widget.rect().topLeft()).y() + widget.sizeHint().height()
    dock.grab(QRect(0, 0, dock.width(), height)).save(str(IMAGES / "widget_panel.png"))
    viewer.close()


def fluorescence():
    """The synthetic cells: nuclei + cytoplasm as extra channel, k=3, 3-D data."""
    viewer, _, widget = _viewer("cells_3d")
    widget.controls.image.value = viewer.layers["nuclei"]
    widget.controls.extra_channels.value = [viewer.layers["cytoplasm"]]
    widget.controls.n_clusters.value = 3
    _run(widget)
    viewer.layers["nuclei k-means recolored"].visible = False
    viewer.dims.set_current_step(0, 12)
    _settle(0.5)
    viewer.screenshot(IMAGES / "widget_cells.png", canvas_only=False, flash=False)
    viewer.close()


def _grab(dock, widget, name):
    """Save the part of the dock from its top down to the bottom of ``widget``."""
    _settle(0.3)
    bottom = widget.mapTo(dock, widget.rect().bottomLeft()).y() + 4
    dock.grab(QRect(0, 0, dock.width(), bottom)).save(str(IMAGES / name))


def _only(viewer, *names):
    for layer in viewer.layers:
        layer.visible = layer.name in names


def editing():
    """docs/editing.md: coffee, k=5 -> suggest k, merge, split, instances, model on another photo."""
    viewer, dock, widget = _viewer("coffee")
    suggest, edit = widget.suggest, widget.edit
    suggest.group.expand(animate=False)
    suggest.k_max.value = 10
    suggest.start()
    _settle(until=lambda: suggest.worker is None)
    _grab(dock, suggest.group, "editing_suggest.png")
    suggest.group.collapse(animate=False)
    widget.controls.n_clusters.value = 5
    _run(widget)
    edit.group.expand(animate=False)
    idle = lambda: widget.worker is None  # noqa: E731  edits run in a worker
    edit.controls.clusters.value = "4, 5"
    edit.merge()
    _settle(until=idle)
    edit.controls.clusters.value = "1"
    edit.split()
    _settle(until=idle)
    _only(viewer, "coffee", "coffee k-means labels")
    viewer.layers["coffee k-means labels"].opacity = 0.85
    edit.table.select_labels([1, 2])
    _settle(0.5)
    viewer.screenshot(IMAGES / "editing_merge_split.png", canvas_only=False, flash=False)
    edit.controls.clusters.value = "1"
    edit.controls.min_size.value = 200
    edit.instances()
    _settle(until=idle)
    _only(viewer, "coffee", "coffee k-means labels instances")
    _settle(0.5)
    viewer.screenshot(IMAGES / "editing_instances.png", canvas_only=False, flash=False)
    with tempfile.TemporaryDirectory() as folder:
        path = edit.save_model(Path(folder) / "coffee-model.json")
        cat = viewer.add_image(data.chelsea(), name="chelsea", rgb=True, translate=(50, 620))
        widget.controls.image.value = cat
        edit.load_model(path)
        _settle(until=lambda: widget.worker is None)
    _only(viewer, "coffee", "coffee k-means labels", "chelsea", "chelsea k-means labels")
    viewer.layers["chelsea k-means labels"].opacity = 0.85
    viewer.reset_view()
    _settle(0.5)
    viewer.screenshot(IMAGES / "editing_reuse.png", canvas_only=False, flash=False)
    _grab(dock, edit.group, "editing_panel.png")
    viewer.close()


PAGES = {"rgb_photo": rgb_photo, "fluorescence": fluorescence, "editing": editing}


def main(names=()):
    """Render every screenshot, or only those of the functions ``names``."""
    IMAGES.mkdir(exist_ok=True)
    for name in names or PAGES:
        PAGES[name]()
    for path in sorted(IMAGES.glob("*_*.png")):
        print(path.relative_to(IMAGES.parent.parent))


if __name__ == "__main__":
    main(sys.argv[1:])
