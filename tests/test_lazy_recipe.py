"""Feature recipes and clean-up on dask arrays (napari_kmeans.lazy_features) against memory."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from scipy import ndimage as ndi

da = pytest.importorskip("dask.array")

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from napari_kmeans import KMeansModel, fit, fit_many, segment  # noqa: E402
from napari_kmeans.choose_k import inertia_curve  # noqa: E402
from napari_kmeans.lazy import fit_lazy, predict_lazy, segment_lazy  # noqa: E402
from napari_kmeans.params import Params  # noqa: E402
from napari_kmeans.recipe import Recipe  # noqa: E402

AGREE = 0.9999  # share of pixels whose labels must equal the in-memory ones


def noisy_blobs(shape=(160, 192), seed=0, snr=1.0):
    """Smooth random blobs (two levels) under Gaussian noise, float32."""
    rng = np.random.default_rng(seed)
    field = ndi.gaussian_filter(rng.random(shape), 6)
    truth = field > np.median(field)
    return (truth * snr + rng.normal(0, 1, shape)).astype(np.float32), truth


def mosaic(n=192, seed=0):
    """Two textures (stripes of two frequencies and directions) under noise, float32."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:n, :n].astype(np.float32)
    inside = np.hypot(yy - n / 2, xx - n / 3) < n / 3
    image = np.where(inside, np.sin(0.9 * xx + 0.3 * yy), np.sin(0.25 * yy))
    return (image + rng.normal(0, 0.5, (n, n))).astype(np.float32), inside


def agreement(lazy_labels, labels):
    got = np.asarray(lazy_labels.compute())
    assert got.shape == labels.shape and got.dtype == labels.dtype
    return (got == labels).mean()


FILTER_LIST = (("gaussian", 1.0), ("gradient", 2.0), ("hessian", 1.5), ("std", 2.0),
               ("structure", 1.0), ("log", 2.0))  # fmt: skip
RECIPES = {
    "smoothing": dict(smoothing=2.0),
    "anisotropic smoothing": dict(smoothing=(1.0, 3.0)),
    "filter list": dict(features=FILTER_LIST),
    "majority": dict(smoothing=1.0, majority=2),
    "spatial weight": dict(smoothing=1.5, spatial_weight=0.5),
}


@pytest.mark.parametrize("name", list(RECIPES))
@pytest.mark.parametrize(
    ("shape", "chunks"),
    [((160, 192), (160, 192)), ((160, 192), (64, 50)), ((48, 60), (7, 9))],  # (7, 9): thinner
)  # than the overlap (a smaller image: hundreds of tiny blocks are slow, not harder)
def test_segment_lazy_with_a_recipe_agrees_with_memory(name, shape, chunks):
    image, _ = noisy_blobs(shape)
    kw = RECIPES[name]
    ref = segment(image, 3, **kw)
    got = segment_lazy(da.from_array(image, chunks=chunks), 3, **kw)
    assert agreement(got.labels, ref.labels) >= AGREE
    assert got.labels.chunks == da.from_array(image, chunks=chunks).chunks
    np.testing.assert_allclose(got.centers, ref.centers, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(got.counts, ref.counts)
    assert got.inertia == pytest.approx(ref.inertia, rel=1e-6)
    assert got.exact == ref.exact
    mine, theirs = got.model.recipe, ref.model.recipe
    assert mine.smoothing == theirs.smoothing and mine.features == theirs.features
    if theirs.standardiser is not None:
        np.testing.assert_allclose(mine.standardiser.mean, theirs.standardiser.mean, rtol=1e-9)
        np.testing.assert_allclose(mine.standardiser.std, theirs.standardiser.std, rtol=1e-9)


@pytest.mark.parametrize("chunks", [(192, 192), (100, 60), (40, 40)])
def test_texture_on_dask_agrees_with_memory(chunks):
    image, inside = mosaic()
    ref = segment(image, 2, features="texture")
    assert ((ref.labels == 1) == inside).mean() > 0.9 or ((ref.labels == 2) == inside).mean() > 0.9
    got = segment_lazy(da.from_array(image, chunks=chunks), 2, features="texture")
    assert agreement(got.labels, ref.labels) >= AGREE


def test_texture_of_a_volume_does_not_depend_on_its_z_chunks():
    """Texture is 2-D per plane: chunks along z (thinner than the smoothed values' reach of
    48 planes) change nothing."""
    rng = np.random.default_rng(3)
    plane, _ = mosaic(48, seed=1)
    volume = np.stack([plane + rng.normal(0, 0.2, plane.shape).astype(np.float32)
                       for _ in range(56)])  # fmt: skip
    ref = segment(volume, 2, features="texture")
    for chunks in [(56, 48, 48), (10, 48, 48), (3, 20, 48)]:
        got = segment_lazy(da.from_array(volume, chunks=chunks), 2, features="texture")
        assert agreement(got.labels, ref.labels) >= AGREE


def test_a_mask_and_nan_pixels_are_filled_as_in_memory():
    image, _ = noisy_blobs(seed=2)
    image[10:14, 20:90] = np.nan
    mask = np.ones(image.shape, bool)
    mask[100:130, 30:60] = False
    ref = segment(image, 3, smoothing=2.0, mask=mask)
    got = segment_lazy(da.from_array(image, chunks=(50, 64)), 3, smoothing=2.0,
                       mask=da.from_array(mask, chunks=(30, 30)))  # fmt: skip
    labels = got.labels.compute()
    assert (labels[~mask] == 0).all() and (labels[10:14, 20:90] == 0).all()
    assert (labels == ref.labels).mean() >= AGREE


def test_rgb_with_a_recipe_on_dask():
    rng = np.random.default_rng(4)
    _, truth = noisy_blobs((96, 80), seed=4)
    rgb = np.stack([truth * 120, 200 - truth * 150, np.full(truth.shape, 60)], -1)
    rgb = np.clip(rgb + rng.normal(0, 40, rgb.shape), 0, 255).astype(np.uint8)
    ref = segment(rgb, 2, smoothing=1.5, color_space="lab")
    got = segment_lazy(da.from_array(rgb, chunks=(30, 33, 3)), 2, smoothing=1.5,
                       color_space="lab")  # fmt: skip
    assert agreement(got.labels, ref.labels) >= AGREE
    np.testing.assert_allclose(got.centers, ref.centers, rtol=1e-9)


def test_the_json_model_applied_lazily_equals_memory():
    image, _ = noisy_blobs(seed=5)
    for kw in (RECIPES["filter list"], dict(smoothing=1.0, majority=1, spatial_weight=0.3)):
        model = KMeansModel.from_json(segment(image, 3, **kw).model.to_json())
        other, _ = noisy_blobs(seed=6)
        want = model.predict(other)
        for chunks in [(160, 192), (33, 47)]:
            lazy_image = da.from_array(other, chunks=chunks)
            assert agreement(predict_lazy(model, lazy_image), want) >= AGREE
            assert agreement(model.predict(lazy_image), want) >= AGREE  # dispatches to dask


@pytest.mark.parametrize(
    "kw",
    [dict(smoothing=1.5, spatial_weight=0.3), dict(features="texture"), dict(majority=1)],
    ids=["smoothing and position", "texture", "clean-up only"],
)
def test_confidence_of_a_recipe_model_on_dask_equals_memory(kw):
    """Features are computed block by block with overlap, as for the labels: the confidence
    of every pixel equals the in-memory one (the clean-up is not part of it)."""
    from napari_kmeans.lazy import confidence_lazy

    image, _ = noisy_blobs(seed=7)
    mask = np.ones(image.shape, bool)
    mask[100:130, 30:60] = False
    model = segment(image, 3, mask=mask, **kw).model
    want = model.confidence(image, mask=mask)
    assert np.isnan(want[~mask]).all() and not np.isnan(want[mask]).any()
    for chunks in [(160, 192), (33, 47)]:
        got = confidence_lazy(model, da.from_array(image, chunks=chunks),
                              mask=da.from_array(mask, chunks=(40, 40)))  # fmt: skip
        assert got.chunks == da.from_array(image, chunks=chunks).chunks
        np.testing.assert_allclose(got.compute(), want, rtol=1e-5, atol=1e-6)


def test_fit_lazy_with_a_recipe_fits_as_fit():
    image, _ = noisy_blobs(seed=7)
    ref = fit(image, 3, smoothing=2.0, features=(("gaussian", 2.0), ("gradient", 1.0)))
    params = Params(n_clusters=3, smoothing=2.0, features=(("gaussian", 2.0), ("gradient", 1.0)))
    got = fit_lazy(da.from_array(image, chunks=(40, 64)), params)
    np.testing.assert_allclose(got.model.centers, ref.model.centers, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got.model.colors, ref.model.colors, rtol=1e-9)
    np.testing.assert_allclose(got.model.recipe.standardiser.std,
                               ref.model.recipe.standardiser.std, rtol=1e-9)  # fmt: skip
    assert got.exact == ref.exact


@pytest.mark.parametrize("chunks", [(60, 80), (25, 30), (16, 19)])
def test_min_size_on_dask_keeps_its_promise(chunks):
    """docs/large-data.md: regions touching no chunk border are at least min_size pixels, and
    the labels agree with memory on at least 99.9% of the pixels here."""
    image, _ = noisy_blobs((120, 160), seed=8, snr=1.5)
    min_size = 12
    ref = segment(image, 3, smoothing=0.7, min_size=min_size)
    got = segment_lazy(da.from_array(image, chunks=chunks), 3, smoothing=0.7, min_size=min_size)
    labels = got.labels.compute()
    assert (labels == ref.labels).mean() >= 0.999
    np.testing.assert_array_equal(got.counts, np.bincount(labels.ravel(), minlength=4)[1:])
    border = np.zeros(labels.shape, bool)
    for axis, sizes in enumerate(da.from_array(image, chunks=chunks).chunks):
        edges = np.cumsum(sizes)
        cut = np.zeros(labels.shape[axis], bool)
        cut[edges[:-1] - 1] = cut[edges[:-1]] = True
        border |= np.expand_dims(cut, tuple(a for a in range(labels.ndim) if a != axis))
    for value in range(1, 4):
        regions, n = ndi.label(labels == value)
        sizes = np.bincount(regions.ravel())
        touching = np.unique(regions[border])
        inner = np.setdiff1d(np.arange(1, n + 1), touching)
        assert (sizes[inner] >= min_size).all()


def test_features_on_unknown_chunks_are_refused_naming_the_fix():
    image, _ = noisy_blobs((40, 40))
    x = da.from_array(image, chunks=(20, 20))
    unknown = x[x[:, 0] > -100]  # rows selected by value: chunk sizes unknown (NaN)
    with pytest.raises(ValueError, match=r"compute_chunk_sizes\(\)"):
        segment_lazy(unknown, 2, smoothing=1.0)
    model = segment(image, 2, smoothing=1.0).model
    with pytest.raises(ValueError, match=r"compute_chunk_sizes\(\)"):
        model.predict(unknown)


def test_channels_are_in_the_documented_order():
    """The recipe's maps: every channel's maps in order, then the positions (last)."""
    plane = np.random.default_rng(0).normal(size=(20, 30, 1)).astype(np.float32)
    out = Recipe(smoothing=0.0, spatial_weight=1.0).channels(plane)
    np.testing.assert_array_equal(out[..., 0], plane[..., 0])
    np.testing.assert_array_equal(out[..., 1], np.indices((20, 30))[0])
    np.testing.assert_array_equal(out[..., 2], np.indices((20, 30))[1])


# -- several images, one model -------------------------------------------------------------------


def test_fit_many_with_a_recipe_standardises_over_all_images():
    images = [noisy_blobs(seed=s)[0] * (1 + s) for s in range(3)]
    params = Params(n_clusters=3, smoothing=1.5, features=(("gaussian", 1.0), ("gradient", 2.0)))
    found = fit_many(images, params=params)
    model = found.model
    assert model.recipe.standardiser is not None and not found.exact
    stacked = np.concatenate(images, axis=1)  # the images side by side: one image's features
    whole = fit(stacked, params=params).model
    # the same statistics as the images' features pooled (the seam changes few pixels)
    np.testing.assert_allclose(model.recipe.standardiser.mean, whole.recipe.standardiser.mean,
                               rtol=0.02, atol=0.02)  # fmt: skip
    for image in images:  # labels of each image, consistent with predict
        labels = model.predict(image)
        assert labels.shape == image.shape and set(np.unique(labels)) <= {1, 2, 3}
        lazy_labels = predict_lazy(model, da.from_array(image, chunks=(50, 64))).compute()
        assert (lazy_labels == labels).mean() >= AGREE


def test_fit_many_of_one_image_with_a_recipe_is_fit():
    image, _ = noisy_blobs(seed=9)
    params = Params(n_clusters=3, smoothing=2.0, majority=1)
    one = fit_many(iter([image]), params=params).model
    ref = fit(image, params=params).model
    np.testing.assert_array_equal(one.predict(image), ref.predict(image))
    np.testing.assert_allclose(one.colors, ref.colors, rtol=1e-9)
    lazy_one = fit_many([da.from_array(image, chunks=(40, 50))], params=params).model
    assert (lazy_one.predict(image) == ref.predict(image)).mean() >= AGREE


def test_inertia_curve_uses_the_recipe_in_memory_and_on_dask():
    image, _ = noisy_blobs(seed=10)
    params = Params(smoothing=2.0, features=(("gaussian", 1.0), ("gradient", 2.0)), n_init=2)
    _, plain = inertia_curve(image, 4)
    _, with_recipe = inertia_curve(image, 4, params=params)
    assert not np.allclose(plain, with_recipe)
    _, lazy_curve = inertia_curve(da.from_array(image, chunks=(40, 64)), 4, params=params)
    np.testing.assert_allclose(lazy_curve, with_recipe, rtol=1e-6)


def test_cli_fit_on_all_with_a_recipe_labels_each_image_as_its_model_predicts(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    from napari_kmeans.cli import main

    images = {f"im{s}": noisy_blobs((60, 70), seed=s)[0] * (1 + s) for s in range(2)}
    for stem, image in images.items():
        tifffile.imwrite(tmp_path / f"{stem}.tif", image)
    out = tmp_path / "out"
    args = ["segment", *(str(tmp_path / f"{s}.tif") for s in images), "-k", "3",
            "--smoothing", "1.5", "--majority", "1", "--fit-on", "all", "--out", str(out), "-q"]  # fmt: skip
    assert main(args) == 0
    model = KMeansModel.from_json((out / "im0_model.json").read_text())
    assert model.recipe.smoothing == 1.5 and model.recipe.majority == 1
    want = fit_many(list(images.values()), params=Params(n_clusters=3, smoothing=1.5, majority=1))
    np.testing.assert_allclose(model.colors, want.model.colors, rtol=1e-6)
    for stem, image in images.items():
        np.testing.assert_array_equal(tifffile.imread(out / f"{stem}_labels.tif"),
                                      model.predict(image))  # fmt: skip


def texture_mosaic(shape):
    """scikit-image's brick, grass and gravel in three vertical bands, with a disc of grass
    across the first two (borders in both directions), float32, and the truth."""
    from skimage import data

    rows, cols = shape
    tiles = [np.tile(t, (-(-rows // 512), -(-cols // 512)))[:rows, :cols].astype(np.float32)
             for t in (data.brick(), data.grass(), data.gravel())]  # fmt: skip
    truth = np.digitize(np.arange(cols), np.linspace(0, cols, 4)[1:-1])[None, :].repeat(rows, 0)
    yy, xx = np.mgrid[:rows, :cols]
    truth[np.hypot(yy - rows / 2, xx - cols / 3) < min(rows, cols) / 5] = 1
    image = np.choose(truth, tiles).astype(np.float32)
    return image, truth


@pytest.mark.parametrize("chunks", [(480, 550), (100, 130), (437, 333)])  # thin, odd sizes
def test_texture_of_planes_cut_in_blocks_equals_memory(monkeypatch, chunks):
    """Planes larger than TEXTURE_WHOLE_PLANE are cut in blocks grown by the texture's reach;
    the tiles of the Gabor transform and the energies' coarse grids are anchored to the image,
    so each block's features are the whole plane's, bit for bit: the labels, counts and
    inertia are those of memory (docs/large-data.md, "What is exact")."""
    import napari_kmeans.filters as filters_module
    import napari_kmeans.recipe as recipe_module

    monkeypatch.setattr(recipe_module, "TEXTURE_WHOLE_PLANE", 256 * 256)
    monkeypatch.setattr(filters_module, "TEXTURE_TILE", 96)  # small tiles: a small image is cut
    image, truth = texture_mosaic((960, 1100))
    depth = Recipe(features="texture").depth(2, image.shape)
    assert all(2 * d < n for d, n in zip(depth, image.shape, strict=True))  # really cut
    ref = segment(image, 3, features="texture")
    assert max(((ref.labels == v) == (truth == 1)).mean() for v in (1, 2, 3)) > 0.9
    got = segment_lazy(da.from_array(image, chunks=chunks), 3, features="texture")
    labels = got.labels.compute()
    assert (labels == ref.labels).mean() >= AGREE
    np.testing.assert_array_equal(got.counts, ref.counts)
    assert got.inertia == pytest.approx(ref.inertia, rel=1e-6)
    np.testing.assert_allclose(got.model.recipe.standardiser.mean,
                               ref.model.recipe.standardiser.mean, rtol=1e-6)  # fmt: skip


def test_texture_features_of_a_block_are_the_plane_s_bit_for_bit(monkeypatch):
    """Recipe.channels of a block grown by Recipe.depth, told where it sits (a Region), gives
    the whole plane's features on the block's own pixels, exactly, at the image's edges and
    inside it, for a plane and a volume."""
    import napari_kmeans.filters as filters_module
    from napari_kmeans.filters import Region

    monkeypatch.setattr(filters_module, "TEXTURE_TILE", 96)
    rng = np.random.default_rng(14)
    plane, _ = texture_mosaic((700, 820))
    volume = np.stack([plane, plane[::-1] + rng.normal(0, 5, plane.shape).astype(np.float32)])
    for image, recipe in [(plane, Recipe(features="texture")),
                          (volume, Recipe(features="texture", smoothing=(0.0, 1.0, 1.0)))]:  # fmt: skip
        whole = recipe.channels(image[..., None])
        depth = recipe.depth(image.ndim)
        for inner in [((0, 150), (0, 170)), ((520, 700), (650, 820)), ((97, 205), (413, 414)),
                      ((300, 301), (0, 820))]:  # fmt: skip
            inner = ((0, image.shape[0]),) * (image.ndim - 2) + inner
            lo = [max(0, a - d) for (a, _), d in zip(inner, depth, strict=True)]
            hi = [min(n, b + d) for (_, b), d, n in zip(inner, depth, image.shape, strict=True)]
            block = image[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))]
            region = Region(tuple(lo), image.shape,
                            tuple(slice(a - s, b - s) for (a, b), s in zip(inner, lo, strict=True)))  # fmt: skip
            got = recipe.channels(block[..., None], region)
            want = whole[tuple(slice(a, b) for a, b in inner)]
            assert got.shape == want.shape
            np.testing.assert_array_equal(got, want)


def test_texture_blocks_never_need_the_whole_plane():
    """The reach of texture on planes above TEXTURE_WHOLE_PLANE is bounded by the tile size
    and the energy window, whatever the plane's size."""
    import napari_kmeans.filters as filters_module

    for side in (2049, 8192, 100_000):
        depth = Recipe(features="texture").depth(2, (side, side))
        assert max(depth) < 2 * filters_module.TEXTURE_TILE + 400 < side


@pytest.mark.parametrize("chunks", [(24, 40, 44), (5, 13, 44), (3, 7, 9)])
def test_a_volume_with_anisotropic_filters_and_majority_agrees_with_memory(chunks):
    rng = np.random.default_rng(11)
    field = ndi.gaussian_filter(rng.random((24, 40, 44)), (1, 4, 4))
    volume = ((field > np.median(field)) * 1.2 + rng.normal(0, 1, field.shape)).astype(np.float32)
    kw = dict(smoothing=(0.5, 1.5, 1.5), features=(("gaussian", 1.0), ("hessian", 1.0)),
              majority=1)  # fmt: skip
    ref = segment(volume, 3, **kw)
    got = segment_lazy(da.from_array(volume, chunks=chunks), 3, **kw)
    assert agreement(got.labels, ref.labels) >= AGREE


def test_segment_and_fit_send_dask_with_a_recipe_to_the_lazy_engine():
    image, _ = noisy_blobs(seed=12)
    lazy_image = da.from_array(image, chunks=(50, 60))
    result = segment(lazy_image, 3, smoothing=1.5, spatial_weight=0.2)
    assert isinstance(result.labels, da.Array)
    ref = segment(image, 3, smoothing=1.5, spatial_weight=0.2)
    assert agreement(result.labels, ref.labels) >= AGREE
    fitted = fit(lazy_image, 3, smoothing=1.5, spatial_weight=0.2).model
    np.testing.assert_array_equal(fitted.predict(image), ref.model.predict(image))


CHUNKING_RECIPE = dict(smoothing=1.0, features=(("gaussian", 1.0), ("std", 2.0)), majority=1)


@functools.cache
def _chunking_case():
    """An image and its in-memory labels by ``CHUNKING_RECIPE`` (computed once)."""
    image, _ = noisy_blobs((48, 60), seed=13)
    return image, segment(image, 3, **CHUNKING_RECIPE).labels


@settings(max_examples=8, deadline=None)
@given(
    rows=st.lists(st.integers(1, 20), min_size=1, max_size=6),
    cols=st.lists(st.integers(1, 25), min_size=1, max_size=6),
)
def test_any_chunking_gives_the_labels_of_memory(rows, cols):
    """Random chunkings (thinner than the overlap too) of one image and recipe."""
    image, labels = _chunking_case()
    chunks = (_fit_chunks(rows, image.shape[0]), _fit_chunks(cols, image.shape[1]))
    got = segment_lazy(da.from_array(image, chunks=chunks), 3, **CHUNKING_RECIPE)
    assert agreement(got.labels, labels) >= AGREE


def _fit_chunks(sizes, total):
    """``sizes`` cycled until they cover ``total``, the last one cut."""
    out, i = [], 0
    while sum(out) < total:
        out.append(min(sizes[i % len(sizes)], total - sum(out)))
        i += 1
    return tuple(out)


def test_pyramid_levels_use_the_recipe_at_their_own_scale(run_to_end):
    """The widget's lazy outputs of a multiscale image: each level is labelled with the
    model's recipe at that level's scale (sigma in its own pixels), so a coarse level's labels
    are the full resolution's, downsampled, and a model fitted on the coarse level keeps the
    full-resolution recipe."""
    from napari_kmeans._napari.jobs import LazyJob, Planes
    from napari_kmeans._napari.workers import run_lazy

    rng = np.random.default_rng(15)
    field = ndi.gaussian_filter(rng.random((512, 512)), 10)
    image = ((field > np.median(field)) * 1.0 + rng.normal(0, 1, field.shape)).astype(np.float32)
    level = image.reshape(256, 2, 256, 2).mean(axis=(1, 3)).astype(np.float32)
    params = Params(n_clusters=2, smoothing=6.0)
    levels = tuple(Planes(da.from_array(x, chunks=128)) for x in (image, level))
    job = LazyJob(levels, params, fit=Planes(level), multiscale=True)
    outcome = run_to_end(run_lazy(job))
    assert outcome.error is None
    assert outcome.model.recipe.smoothing == 6.0  # the full resolution's
    full, coarse = (np.asarray(x.compute()) for x in outcome.labels)
    assert (full == segment(image, 2, smoothing=6.0).labels).mean() > 0.99
    assert (coarse == full[::2, ::2]).mean() > 0.97
    wrong = segment(level, 2, smoothing=6.0).labels  # full-resolution sigma on the level
    assert (coarse == full[::2, ::2]).mean() > (wrong == full[::2, ::2]).mean() + 0.005
