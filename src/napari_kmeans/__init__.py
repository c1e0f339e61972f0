"""napari-kmeans: fast k-means segmentation of images, exact for single-channel data.

The engine needs only numpy, scipy and scikit-image; the napari plugin lives in
``napari_kmeans._napari`` and is loaded by napari through the manifest, not from here.
"""

from ._version import __version__
from .model import KMeansModel
from .params import Params
from .segment import Fit, Segmentation, fit, fit_many, prepare_image, segment, segment_frames

__all__ = [
    "Fit",
    "KMeansModel",
    "Params",
    "Segmentation",
    "__version__",
    "fit",
    "fit_many",
    "prepare_image",
    "segment",
    "segment_frames",
]
