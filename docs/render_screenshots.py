"""Render the screenshots in docs/images from a real viewer (run under Xvfb: `make docs-images`).

Each screenshot docks the widget through the manifest, runs it on a sample of the plugin, waits
for the worker and saves the window, so the pictures always show the current widget and results.
"""

from __future__ import annotations

import time
from pathlib import Path

import napari
from qtpy.QtCore import QRect
from qtpy.QtWidgets import QApplication

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


def main():
    IMAGES.mkdir(exist_ok=True)
    rgb_photo()
    fluorescence()
    for path in sorted(IMAGES.glob("widget_*.png")):
        print(path.relative_to(IMAGES.parent.parent))


if __name__ == "__main__":
    main()
