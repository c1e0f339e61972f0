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


SCREEN = (1440, 900)  # a laptop screen: every picture is taken at this window size


def _viewer(sample):
    viewer = napari.Viewer(title="napari k-means")
    viewer.window._qt_window.resize(*SCREEN)
    viewer.open_sample("napari-kmeans", sample)
    dock, widget = viewer.window.add_plugin_dock_widget("napari-kmeans", WIDGET)
    return viewer, dock, widget


def _run(widget):
    widget.run()
    _settle(until=lambda: widget.worker is None)
    _settle(0.5)


def _shot(viewer, name):
    _settle(0.5)
    viewer.screenshot(IMAGES / name, canvas_only=False, flash=False)


def _grab(dock, name):
    """Save the whole dock as it is on screen."""
    _settle(0.3)
    dock.grab().save(str(IMAGES / name))


def rgb_photo():
    """The coffee photo, k=5: distinct label colours over the photo, and the dock."""
    viewer, dock, widget = _viewer("coffee")
    widget.controls.n_clusters.value = 5
    _run(widget)
    _shot(viewer, "widget_rgb.png")
    _grab(dock, "widget_panel.png")
    viewer.close()


def gray():
    """The coins, k=3: the darkest cluster (the background) left transparent."""
    viewer, _, widget = _viewer("coins")
    widget.controls.n_clusters.value = 3
    _run(widget)
    _shot(viewer, "widget_gray.png")
    viewer.close()


def fluorescence():
    """The synthetic cells: nuclei + cytoplasm (pre-selected as channels of one image), k=3."""
    viewer, _, widget = _viewer("cells_3d")
    widget.controls.image.value = viewer.layers["nuclei"]
    widget.controls.n_clusters.value = 3
    _run(widget)
    viewer.dims.set_current_step(0, 12)
    _shot(viewer, "widget_cells.png")
    viewer.close()


def editing():
    """docs/editing.md: coffee, k=5 -> Choose k, merge, split, instances, model on another photo."""
    viewer, dock, widget = _viewer("coffee")
    suggest, edit = widget.suggest, widget.edit
    widget.controls.suggest_k.native.click()  # the Choose k tab, computing the curve
    _settle(until=lambda: suggest.worker is None)
    _grab(dock, "editing_suggest.png")
    widget.controls.n_clusters.value = 5
    _run(widget)
    widget.tabs.setCurrentIndex(2)
    idle = lambda: widget.worker is None  # noqa: E731  edits run in a worker
    edit.controls.clusters.value = "4, 5"
    edit.merge()
    _settle(until=idle)
    edit.controls.clusters.value = "1"
    edit.split()
    _settle(until=idle)
    edit.table.select_labels([1, 5])  # the two parts of the split cluster (numbers kept)
    _shot(viewer, "editing_merge_split.png")
    _grab(dock, "editing_panel.png")
    edit.controls.clusters.value = "1"
    edit.controls.min_size.value = 200
    edit.instances()
    _settle(until=idle)
    _only(viewer, "coffee", "coffee k-means labels instances")
    _shot(viewer, "editing_instances.png")
    with tempfile.TemporaryDirectory() as folder:
        path = edit.save_model(Path(folder) / "coffee-model.json")
        cat = viewer.add_image(data.chelsea(), name="chelsea", rgb=True, translate=(50, 620))
        widget.controls.image.value = cat
        edit.load_model(path)
        _settle(until=idle)
    _only(viewer, "coffee", "coffee k-means labels", "chelsea", "chelsea k-means labels")
    viewer.reset_view()
    _shot(viewer, "editing_reuse.png")
    viewer.close()


def features():
    """docs/features.md: the two samples, pixel values against the matching preset."""
    for sample, preset, k in (("noisy", "smoothed", 2), ("textures", "texture", 3)):
        viewer, _, widget = _viewer(sample)
        widget.controls.n_clusters.value = k
        _run(widget)
        _shot_canvas(viewer, f"features_{sample}_values.png")
        widget.controls.preset.value = preset
        _run(widget)  # the unedited outputs are updated in place
        _shot_canvas(viewer, f"features_{sample}_{preset}.png")
        viewer.close()


def _shot_canvas(viewer, name):
    from PIL import Image

    viewer.reset_view()
    _settle(0.5)
    shot = Image.fromarray(viewer.screenshot(canvas_only=True, flash=False))
    shot.thumbnail((360, 360))
    shot.save(IMAGES / name)


def _only(viewer, *names):
    for layer in viewer.layers:
        layer.visible = layer.name in names


def _stroke(layer, start, end, label):
    """Paint a straight stroke of ``label`` from ``start`` to ``end`` (data coordinates)."""
    import numpy as np

    for t in np.linspace(0.0, 1.0, 24):
        layer.paint(tuple(np.round(np.add(start, t * np.subtract(end, start)))), label)


def interactive():
    """docs/interactive.md: live preview, two scribbled classes, k changed, label IDs kept.

    Saves each step as a PNG and all of them as an animated GIF (interactive.gif)."""
    from PIL import Image

    viewer, _, widget = _viewer("coins")
    c = widget.controls
    c.n_clusters.value = 3
    c.background.value = "none"
    frames = []

    def step(name, seconds=1.0):
        _settle(seconds, until=None)
        _settle(until=lambda: widget.worker is None)
        viewer.reset_view()
        _settle(0.4)
        shot = Image.fromarray(viewer.screenshot(canvas_only=False, flash=False)).convert("RGB")
        shot.thumbnail((960, 960))
        shot.save(IMAGES / f"interactive_{name}.png")
        frames.append(shot)

    c.live_preview.value = True
    step("1_preview")
    c.new_seeds.native.click()
    seeds = viewer.layers["coins seeds"]
    seeds.brush_size = 6
    viewer.layers["coins k-means labels"].opacity = 0.6
    _stroke(seeds, (160, 175), (165, 205), 1)  # class 1: the background between the coins
    _stroke(seeds, (252, 32), (266, 60), 2)  # class 2: the coin at the bottom left
    step("2_scribbles")
    c.n_clusters.value = 4
    step("3_k4_ids_kept")
    c.pin_seeds.value = True
    step("4_pinned")
    frames[0].save(
        IMAGES / "interactive.gif", save_all=True, append_images=frames[1:], duration=1800,
        loop=0, optimize=True,
    )  # fmt: skip
    viewer.close()


PAGES = {
    "rgb_photo": rgb_photo, "gray": gray, "fluorescence": fluorescence, "editing": editing,
    "features": features, "interactive": interactive,
}  # fmt: skip


def main(names=()):
    """Render every screenshot, or only those of the functions ``names``."""
    IMAGES.mkdir(exist_ok=True)
    for name in names or PAGES:
        PAGES[name]()
    for path in sorted(IMAGES.glob("*_*.png")):
        print(path.relative_to(IMAGES.parent.parent))


if __name__ == "__main__":
    main(sys.argv[1:])
