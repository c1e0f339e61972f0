"""``python -m napari_kmeans._napari.demo``: napari with a sample image and the widget docked."""

from __future__ import annotations

import napari


def main(sample: str = "coffee") -> napari.Viewer:
    """Open a viewer with a sample of this plugin and the k-means widget (through the manifest)."""
    viewer = napari.Viewer(title="napari k-means demo")
    viewer.open_sample("napari-kmeans", sample)
    viewer.window.add_plugin_dock_widget("napari-kmeans", "K-means segmentation")
    return viewer


if __name__ == "__main__":
    main()
    napari.run()
