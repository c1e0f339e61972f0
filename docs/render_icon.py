"""Render docs/images/icon.png, the plugin's icon on the napari hub: a real segmentation.

scikit-image's coffee photo segmented by ``napari_kmeans.segment`` (k = 5, the default seed),
each label painted with the widget's label colour (``outputs.palette``), cropped square around
the cup and resized to 256 x 256. Run with ``make docs-images``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from skimage import data, io, transform

from napari_kmeans import segment
from napari_kmeans._napari.outputs import palette

ROOT = Path(__file__).resolve().parents[1]
# the hub and the README show docs/images/icon.png; the manifest's `icon: napari_kmeans:icon.png`
# needs a copy inside the package (tests/test_packaging.py checks both are the same bytes)
OUTS = [ROOT / "docs" / "images" / "icon.png", ROOT / "src" / "napari_kmeans" / "icon.png"]
SIZE = 256


def icon() -> np.ndarray:
    """(SIZE, SIZE, 3) uint8: the coloured labels of the cup."""
    photo = data.coffee()  # (400, 600, 3)
    labels = segment(photo, n_clusters=5).labels
    colours = np.vstack([[0.0, 0.0, 0.0], palette(5)])
    square = colours[labels[:, 80:480]]  # the cup and saucer, 400 x 400
    small = transform.resize(square, (SIZE, SIZE, 3), order=0, anti_aliasing=False)
    return np.round(small * 255).astype(np.uint8)


if __name__ == "__main__":
    picture = icon()
    for out in OUTS:
        io.imsave(out, picture, check_contrast=False)
        print(f"wrote {out}")
