"""Sample data (File > Open Sample > napari k-means), made locally: nothing is downloaded."""

from __future__ import annotations

import re

import numpy as np


def coffee():
    """An RGB photo: scikit-image's coffee cup (bundled with scikit-image)."""
    from skimage import data

    return [(data.coffee(), {"name": "coffee", "rgb": True}, "image")]


def coins():
    """A grayscale photo: scikit-image's coins (bundled with scikit-image)."""
    from skimage import data

    return [(data.coins(), {"name": "coins"}, "image")]


def synthetic_cells(shape=(24, 128, 128), n_cells=14, seed=0):
    """(nuclei, cytoplasm) uint16 volumes of synthetic fluorescent cells, with shot noise.

    Examples
    --------
    >>> nuclei, cytoplasm = synthetic_cells((4, 16, 16), n_cells=2)
    >>> nuclei.shape, nuclei.dtype
    ((4, 16, 16), dtype('uint16'))
    """
    rng = np.random.default_rng(seed)
    size = np.array(shape)
    anisotropy = np.array([3.0, 1.0, 1.0])  # z steps are 3x coarser than y, x
    nuclei = np.zeros(shape, np.float32)
    cytoplasm = np.zeros(shape, np.float32)
    for _ in range(n_cells):
        center = rng.uniform(0.15, 0.85, 3) * size
        radius = rng.uniform(6.0, 10.0)
        brightness = rng.uniform(800, 1600), rng.uniform(300, 600)
        lo = np.maximum(0, np.floor(center - 2 * radius / anisotropy)).astype(int)
        hi = np.minimum(size, np.ceil(center + 2 * radius / anisotropy) + 1).astype(int)
        box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        axes = np.ogrid[box]
        d2 = sum(((x - c) * f) ** 2 for x, c, f in zip(axes, center, anisotropy, strict=True))
        inner, outer = d2 < radius**2, d2 < (2 * radius) ** 2
        np.maximum(nuclei[box], brightness[0] * inner, out=nuclei[box])
        np.maximum(cytoplasm[box], brightness[1] * (outer & ~inner), out=cytoplasm[box])
    out = []
    for channel in (nuclei, cytoplasm):
        signal = 100.0 + channel
        out.append(rng.poisson(signal).astype(np.uint16))
    return tuple(out)


def _napari_takes_axis_labels() -> bool:
    """Whether ``add_image`` takes a sequence of axis labels (napari >= 0.6; 0.5 raises
    "Received sequence for argument 'axis_labels'", though its layers have them)."""
    try:
        from importlib.metadata import version

        major, minor = (int(part) for part in re.findall(r"\d+", version("napari"))[:2])
    except Exception:  # napari absent or an unusual version string: assume a recent one
        return True
    return (major, minor) >= (0, 6)


def cells_3d():
    """A 3-D, two-channel fluorescence-like stack, one layer per channel (µm scale)."""
    nuclei, cytoplasm = synthetic_cells()
    common = {
        "scale": (0.6, 0.2, 0.2),
        "units": "µm",  # one unit for every axis: napari 0.5 refuses a sequence here too
        "blending": "additive",
    }
    if _napari_takes_axis_labels():
        common["axis_labels"] = ("z", "y", "x")
    return [
        (nuclei, {"name": "nuclei", "colormap": "magenta", **common}, "image"),
        (cytoplasm, {"name": "cytoplasm", "colormap": "green", **common}, "image"),
    ]


def noisy_blobs(shape=(256, 256), snr=1.0, seed=0):
    """(truth, image): bright blobs on a dark background under strong noise, uint16.

    Pixel values alone give speckle here; smoothing first gives the blobs (docs/features.md).

    >>> truth, image = noisy_blobs((32, 32))
    >>> image.dtype, sorted(np.unique(truth).tolist())
    (dtype('uint16'), [0, 1])
    """
    rng = np.random.default_rng(seed)
    grid = np.indices(shape, dtype=np.float32)
    truth = np.zeros(shape, np.uint8)
    for _ in range(max(4, int(np.prod(shape) / 5000))):
        centre = rng.uniform(0.1, 0.9, len(shape)) * np.array(shape)
        radius = rng.uniform(0.04, 0.09) * min(shape)
        d2 = sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True))
        truth[d2 < radius**2] = 1
    image = 400 + 200 * (truth * snr + rng.normal(0, 1, shape))
    return truth, np.clip(image, 0, 65535).astype(np.uint16)


def noisy():
    """A noisy fluorescence-like image: try 'pixel values', then 'smoothed' (Options tab)."""
    _, image = noisy_blobs()
    return [(image, {"name": "noisy blobs", "colormap": "gray"}, "image")]


def texture_mosaic(size=384):
    """Brick, grass and gravel (scikit-image's textures) side by side, float32, and the truth."""
    from skimage import data

    tiles = [data.brick(), data.grass(), data.gravel()]
    image = np.zeros((size, size), np.float32)
    truth = np.zeros((size, size), np.uint8)
    bounds = np.linspace(0, size, 4).astype(int)
    for i, tile in enumerate(tiles):
        part = np.s_[:, bounds[i] : bounds[i + 1]]
        image[part], truth[part] = tile[:size, :size][part], i + 1
    return truth, image


def textures():
    """Three textures of equal brightness: try 'pixel values', then 'texture' (Options tab)."""
    _, image = texture_mosaic()
    return [(image, {"name": "textures", "colormap": "gray"}, "image")]
