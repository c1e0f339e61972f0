"""The widget's lazy mode with a feature recipe and clean-up (under Xvfb): a dask layer gives
lazy outputs equal to the in-memory engine's (issue 12)."""

from __future__ import annotations

import numpy as np
import pytest

da = pytest.importorskip("dask.array")

from napari_kmeans import segment  # noqa: E402

LABELS = "{} k-means labels"


def test_dask_layer_with_smoothing_and_majority_gives_lazy_outputs(viewer, widget, run_and_wait):
    rng = np.random.default_rng(0)
    volume = rng.normal(1000, 40, (4, 30, 30)).astype(np.uint16)
    volume[:, 5:15, 5:20] += 150
    volume[:, 20:, :10] += 300
    source = viewer.add_image(da.from_array(volume, chunks=(1, 15, 15)), name="vol")
    c = widget.controls
    c.image.value, c.n_clusters.value, c.seed.value = source, 3, 0
    c.preset.value, c.smoothing.value, c.majority.value = "smoothed", 1.0, 1
    run_and_wait(widget)
    labels = viewer.layers[LABELS.format("vol")]
    assert isinstance(labels.data, da.Array) and isinstance(source.data, da.Array)
    expected = segment(volume, 3, smoothing=1.0, majority=1)
    assert (labels.data.compute() == expected.labels).mean() >= 0.9999
    assert labels.metadata["kmeans"]["model"]["recipe"]["majority"] == 1


def test_dask_layer_with_smoothing_and_the_confidence_map(viewer, widget, run_and_wait):
    """A lazy run with a feature recipe and the confidence map ticked gives a lazy map equal to
    the model's in-memory confidence (it failed whole: 'Not run')."""
    rng = np.random.default_rng(1)
    image = rng.normal(1000, 40, (40, 44)).astype(np.uint16)
    image[5:25, 5:30] += 200
    source = viewer.add_image(da.from_array(image, chunks=(20, 22)), name="img")
    c = widget.controls
    c.image.value, c.n_clusters.value = source, 2
    c.preset.value, c.smoothing.value = "smoothed", 1.0
    c.confidence.value = True
    run_and_wait(widget)
    sure = viewer.layers["img k-means confidence"].data
    assert isinstance(sure, da.Array)
    model = viewer.layers[LABELS.format("img")].metadata["kmeans"]["model"]
    from napari_kmeans import KMeansModel

    want = KMeansModel.from_dict(model).confidence(image)
    np.testing.assert_allclose(np.asarray(sure), want, rtol=1e-5, atol=1e-6)
