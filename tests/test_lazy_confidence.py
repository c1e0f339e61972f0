"""lazy.confidence_lazy for models with a feature recipe against memory: hostile cases."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

da = pytest.importorskip("dask.array")

from napari_kmeans import KMeansModel, segment  # noqa: E402
from napari_kmeans.edit import split  # noqa: E402
from napari_kmeans.lazy import confidence_lazy, predict_lazy  # noqa: E402


def blobs(shape=(60, 70), seed=0):
    rng = np.random.default_rng(seed)
    field = ndi.gaussian_filter(rng.random(shape), 4)
    return ((field > np.median(field)) + rng.normal(0, 0.6, shape)).astype(np.float32)


def same(model, image, chunks, mask=None, mask_chunks=None, **kw):
    """The lazy confidence equals memory's; memory's map returned."""
    want = model.confidence(image, mask=mask, **kw)
    lazy_mask = None if mask is None else da.from_array(mask, chunks=mask_chunks or chunks)
    got = confidence_lazy(model, da.from_array(image, chunks=chunks), mask=lazy_mask, **kw)
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got.compute(), want, rtol=1e-5, atol=1e-6)
    return want


RECIPES = {
    "smoothing": dict(smoothing=1.5),
    "texture": dict(features="texture", smoothing=1.0),
    "filters": dict(features=(("gradient", 1.0), ("log", 2.0))),
    "spatial": dict(smoothing=1.0, spatial_weight=0.4),
}


@pytest.mark.parametrize("name", list(RECIPES))
@pytest.mark.parametrize("chunks", [(1, 70), (60, 1), (7, 9), (500, 500)], ids=str)
def test_one_pixel_wide_odd_and_oversized_chunks(name, chunks):
    image = blobs()
    same(segment(image, 3, **RECIPES[name]).model, image, chunks)


@pytest.mark.parametrize("name", list(RECIPES))
def test_nan_and_inf_pixels_and_a_mask_chunked_otherwise(name):
    image = blobs(seed=1)
    image[10:14, 20:30] = np.nan
    image[40, 5] = np.inf
    mask = np.ones(image.shape, bool)
    mask[30:50, 40:60] = False
    model = segment(image, 3, mask=mask, **RECIPES[name]).model
    want = same(model, image, (16, 23), mask=mask, mask_chunks=(11, 70))
    assert np.isnan(want[10:14, 20:30]).all() and np.isnan(want[~mask]).all()
    assert not np.isnan(want[mask][:100]).any()


@pytest.mark.parametrize(
    "kw", [dict(smoothing=(0.5, 2.0, 1.0)), dict(features="texture", smoothing=1.0)]
)
def test_volume_with_anisotropic_smoothing_or_texture_in_one_plane_chunks(kw):
    image = np.stack([blobs((40, 44), seed=s) for s in range(6)])
    same(segment(image, 3, **kw).model, image, (1, 13, 17))


def test_split_cluster_seeds_and_a_json_round_trip():
    image = blobs((50, 56), seed=2)
    seeds = np.zeros(image.shape, np.uint8)
    seeds[2:6, 2:6], seeds[40:44, 40:44] = 1, 2
    r = segment(image, 3, smoothing=1.0, seeds=seeds)
    model, _ = split(r.model, image, r.labels, 3, 2)
    assert model.n_clusters == 4 and model.recipe is not None
    same(model, image, (13, 20))
    same(KMeansModel.from_dict(model.to_dict()), image, (50, 7))


def test_channels_chunked_apart():
    two = np.stack([blobs(seed=1), blobs(seed=2)], -1)
    model = segment(two, 3, channel_axis=-1, features="texture", smoothing=1.0).model
    same(model, two, (9, 11, 1))
    rgb = (np.stack([blobs(seed=s) for s in range(3)], -1) * 60 + 100).clip(0, 255)
    rgb = rgb.astype(np.uint8)
    same(segment(rgb, 3, smoothing=1.0, rgb=True).model, rgb, (9, 11, 1))


def test_all_masked_and_a_one_label_model():
    image = blobs()
    model = segment(image, 3, smoothing=1.0).model
    none = da.zeros(image.shape, dtype=bool, chunks=(20, 20))  # memory refuses: no pixel left
    assert np.isnan(confidence_lazy(model, da.from_array(image), mask=none).compute()).all()
    one = segment(image, 1, smoothing=1.0).model
    assert (same(one, image, (20, 20), chunk_size=1) == 1).all()


def test_a_model_of_other_features_is_refused_before_any_block_is_read():
    """A 2-D model with a spatial weight (2 position features) on a volume (3): memory
    refuses it; the lazy outputs were built and failed only when a block was computed (as
    napari draws them, far from the call)."""
    model = segment(blobs(), 3, smoothing=1.0, spatial_weight=0.3).model
    volume = da.from_array(np.stack([blobs(seed=s) for s in range(3)]), chunks=20)
    message = "fitted on 3 features, but this image gives 4"
    with pytest.raises(ValueError, match=message):
        model.confidence(np.asarray(volume))
    with pytest.raises(ValueError, match=message):
        confidence_lazy(model, volume)
    with pytest.raises(ValueError, match=message):
        predict_lazy(model, volume)
