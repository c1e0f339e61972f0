"""Feature channels with known truth: smoothing separates noisy blobs, Gabor energies textures."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment
from skimage import data

from napari_kmeans import filters as fl
from napari_kmeans import segment


def accuracy(truth, labels) -> float:
    """Share of pixels right under the best matching of clusters to classes."""
    k = int(max(truth.max(), labels.max())) + 1
    table = np.zeros((k, k))
    np.add.at(table, (truth.ravel(), labels.ravel()), 1)
    rows, cols = linear_sum_assignment(-table)
    return table[rows, cols].sum() / truth.size


def noisy_blobs(shape=(192, 192), snr=1.0, seed=0):
    rng = np.random.default_rng(seed)
    grid = np.indices(shape)
    truth = np.zeros(shape, int)
    for _ in range(10):
        centre = rng.uniform(0.1, 0.9, len(shape)) * np.array(shape)
        radius = rng.uniform(8, 18)
        d2 = sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True))
        truth[d2 < radius**2] = 1
    return truth, (truth * snr + rng.normal(0, 1, shape)).astype(np.float32)


def test_smoothing_turns_speckle_into_regions():
    truth, image = noisy_blobs()
    raw = accuracy(truth, segment(image, 2).labels - 1)
    smoothed = accuracy(truth, segment(fl.smooth(image, 2), 2).labels - 1)
    assert raw < 0.75 and smoothed > 0.97


def test_anisotropic_smoothing_of_a_volume():
    truth, image = noisy_blobs((24, 96, 96), seed=1)
    coarse_z = image[::3], truth[::3]  # z sampled 3x coarser
    got = segment(fl.smooth(coarse_z[0], (0.7, 2, 2)), 2).labels - 1
    assert accuracy(coarse_z[1], got) > 0.93


def test_gabor_energies_separate_textures():
    tiles = [data.brick(), data.grass(), data.gravel()]
    mosaic = np.zeros((512, 512), np.float32)
    truth = np.zeros((512, 512), int)
    for i, part in enumerate([np.s_[:, :170], np.s_[:, 170:340], np.s_[:, 340:]]):
        mosaic[part], truth[part] = tiles[i][part], i
    maps = [*fl.gabor_energies(mosaic), fl.smooth(mosaic, 12)]
    feats = np.stack(maps, -1).reshape(-1, len(maps))
    z = fl.Standardiser.fit(feats).apply(feats).reshape(512, 512, -1)
    assert accuracy(truth, segment(mosaic, 3).labels - 1) < 0.6  # pixel values alone fail
    assert accuracy(truth, segment(z, 3, channel_axis=-1).labels - 1) > 0.9


@pytest.mark.parametrize("name", fl.FILTERS)
@pytest.mark.parametrize("shape", [(40, 50), (6, 30, 40)])
def test_every_filter_in_2d_and_3d(name, shape):
    image = np.random.default_rng(0).random(shape).astype(np.float32)
    maps = fl.filter_channel(image, name, 1.5)
    expected = {"hessian": len(shape), "structure": len(shape)}.get(name, 1)
    assert len(maps) == expected
    for m in maps:
        assert m.shape == shape and m.dtype == np.float32 and np.isfinite(m).all()


def test_standardiser_round_trip_and_constant_features():
    feats = np.random.default_rng(1).normal(5, 3, (1000, 3))
    feats[:, 2] = 7.0
    st = fl.Standardiser.fit(feats)
    z = st.apply(feats)
    np.testing.assert_allclose(z[:, :2].mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(z[:, :2].std(axis=0), 1, atol=1e-4)
    assert (z[:, 2] == 0).all()
    again = fl.Standardiser.from_dict(st.to_dict())
    np.testing.assert_array_equal(again.apply(feats), z)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: fl.check_sigma(-1, 2), ValueError, ">= 0"),
        (lambda: fl.check_sigma((1, 2), 3), ValueError, "2 values but the image has 3"),
        (lambda: fl.check_sigma("2", 2), TypeError, "a number"),
        (lambda: fl.check_filters([("sobel", 1)]), ValueError, "unknown filter 'sobel'"),
        (lambda: fl.check_filters([("gaussian", 0)]), ValueError, "> 0"),
        (lambda: fl.check_filters("texture2"), TypeError, "'values', 'texture'"),
        (lambda: fl.Standardiser.from_dict({"mean": [0]}), ValueError, "'mean' and 'std'"),
    ],
)
def test_bad_recipes_say_what_and_how(call, error, match):
    with pytest.raises(error, match=match):
        call()


def _gabor_reference(plane, frequency, theta):
    """Full-resolution energy: the whole spectrum times the transfer function, |response|,
    a Gaussian window on every pixel, log1p (what gabor_energies approximates on coarse grids)."""
    from scipy import fft
    from scipy import ndimage as ndi

    prefactor = np.sqrt(np.log(2) / 2) * 3 / np.pi
    half = int(np.ceil(3 * prefactor / min(fl.TEXTURE_FREQUENCIES)))
    shape = tuple(fft.next_fast_len(n + 2 * half) for n in plane.shape)
    fy, fx = fft.fftfreq(shape[0])[:, None], fft.fftfreq(shape[1])[None, :]
    sigma = prefactor / frequency
    d2 = (fx - frequency * np.cos(theta)) ** 2 + (fy - frequency * np.sin(theta)) ** 2
    spectrum = fft.fft2(np.pad(plane.astype(np.float64), half, mode="reflect"), shape)
    response = fft.ifft2(spectrum * np.exp(-2 * np.pi**2 * sigma**2 * d2))
    energy = np.abs(response[half : half + plane.shape[0], half : half + plane.shape[1]])
    window = max(fl.TEXTURE_WINDOW / frequency, fl.TEXTURE_MIN_WINDOW)
    return np.log1p(ndi.gaussian_filter(energy, window))


def test_gabor_energies_match_the_full_resolution_computation():
    """The energies computed on coarse grids per filter agree with the full-resolution ones
    (in the interior: near the border the windows see the padding differently)."""
    plane = np.tile(data.brick(), (1, 2))[:420, :420].astype(np.float32)
    plane[:, 200:] = data.gravel()[:420, 200:420]
    maps = fl.gabor_energies(plane)
    i = 0
    for frequency in fl.TEXTURE_FREQUENCIES:
        for o in range(fl.TEXTURE_ORIENTATIONS):
            ref = _gabor_reference(plane, frequency, np.pi * o / fl.TEXTURE_ORIENTATIONS)
            got = maps[i]
            i += 1
            inner = np.s_[60:-60, 60:-60]
            err = np.abs(got[inner] - ref[inner])
            assert got.dtype == np.float32 and got.shape == plane.shape
            assert np.corrcoef(got[inner].ravel(), ref[inner].ravel())[0, 1] > 0.99
            assert np.median(err) < 0.02 and np.percentile(err, 99) < 0.1 * np.ptp(ref[inner])


def test_texture_maps_read_in_any_runs_give_the_same_pixels():
    """A volume's coarse maps read in runs crossing rows and planes equal the whole map."""
    volume = np.random.default_rng(2).random((3, 70, 90)).astype(np.float32)
    for m in fl.gabor_maps(volume, frequencies=(0.1, 0.3), n_orientations=2):
        whole = m.full()
        assert whole.shape == volume.shape and np.isfinite(whole).all()
        cuts = [0, 1, 89, 91, 6299, 6300, 6301, 13000, whole.size]
        runs = np.concatenate([m[a:b] for a, b in itertools.pairwise(cuts)])
        np.testing.assert_array_equal(runs, whole.ravel())
        # each plane is its own image: the same as the plane filtered alone
        alone = fl.gabor_maps(volume[1], frequencies=(0.1, 0.3), n_orientations=2)
        assert any(np.array_equal(a.full(), whole[1]) for a in alone)


@pytest.mark.parametrize("shape", [(301, 457), (4, 120, 150)])
def test_smooth_wide_is_close_to_the_gaussian(shape):
    """The coarse-grid Gaussian of the texture preset's value feature stays within 1 % of the
    image's range of scipy's gaussian_filter away from the border (2-D and per plane in 3-D)."""
    rng = np.random.default_rng(3)
    image = ndi_smooth_noise(rng, shape)
    ref = fl.smooth(image, 12)
    got = fl.flat_map(fl.smooth_wide(image, 12))[0 : image.size].reshape(shape)
    inner = (..., slice(40, -40), slice(40, -40))
    assert np.abs(got - ref)[inner].max() < 0.01 * np.ptp(ref)
    assert np.abs(got - ref).max() < 0.02 * np.ptp(ref)


def ndi_smooth_noise(rng, shape):
    """Noise with structure on several scales (tiles of a brick texture plus smoothed noise)."""
    from scipy import ndimage as ndi

    plane = np.tile(data.brick(), (1, 1))[: shape[-2], : shape[-1]].astype(np.float32)
    noise = ndi.gaussian_filter(rng.normal(0, 40, shape), 6).astype(np.float32)
    return plane + noise


def test_texture_segmentation_of_a_2048_image_stays_within_the_memory_bound():
    """Issue 12: peak memory above the input within (features + 2) x the image's float32 size
    (17 texture features: the table, the labels and the recoloured image). Below about 1500²
    the FFT tiles' fixed cost dominates and the ratio is higher."""
    import tracemalloc

    tiles = [data.brick(), data.grass(), data.gravel()]
    image = np.zeros((2048, 2048), np.float32)
    for i, tile in enumerate(tiles):
        image[:, 683 * i : 683 * (i + 1)] = np.tile(tile, (4, 4))[:, 683 * i : 683 * (i + 1)]
    tracemalloc.start()
    try:
        result = segment(image, 3, features="texture")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= (17 + 2) * image.size * 4
    truth = np.repeat(np.arange(3), 683)[None, :2048].repeat(2048, axis=0)
    assert accuracy(truth, result.labels - 1) > 0.95


def test_standardiser_in_threads_gives_the_one_thread_numbers():
    """Slices' sums computed side by side and added in slice order: bit for bit the same."""
    rng = np.random.default_rng(3)
    features = (rng.normal(5, 3, (fl.CHUNK_ROWS * 5 + 123, 6)) * [1, 10, 1e3, 1, 1, 0]).astype(
        np.float32
    )
    valid = rng.random(features.shape[0]) > 0.2
    valid[: fl.CHUNK_ROWS + 7] = False  # the first slice has no valid row
    for mask in (None, valid):
        one = fl.Standardiser.fit(features, mask)
        two = fl.Standardiser.fit(features, mask, threads=2)
        np.testing.assert_array_equal(one.mean, two.mean)
        np.testing.assert_array_equal(one.std, two.std)
        assert one.std[-1] == 1.0  # a constant feature
        np.testing.assert_array_equal(one.apply(features), two.apply(features, threads=2))
    inplace = features.copy()
    assert two.apply(inplace, inplace=True, threads=2) is inplace
    np.testing.assert_array_equal(inplace, one.apply(features))
