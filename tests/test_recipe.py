"""The feature recipe: feature channels, standardisation, clean-up and the JSON round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_kmeans.recipe import Recipe


@pytest.mark.parametrize(
    ("recipe", "n_features"),
    [
        (Recipe(), 2),
        (Recipe(smoothing=2), 2),
        (Recipe(features="texture"), 2 * 17),
        (Recipe(features=(("gaussian", 1), ("hessian", 2))), 2 * 3),
        (Recipe(smoothing=(1, 2), spatial_weight=0.5), 4),
    ],
)
def test_feature_channels_and_round_trip(recipe, n_features):
    image = np.random.default_rng(0).random((40, 48, 2)).astype(np.float32)
    feats = recipe.channels(image)
    assert feats.shape == (40, 48, n_features) and feats.dtype == np.float32
    flat = feats.reshape(-1, n_features)
    fitted = recipe.fitted(flat)
    z = fitted.standardise(flat)
    if recipe.derives:
        np.testing.assert_allclose(z.mean(axis=0), 0, atol=1e-4)
    else:
        assert z is flat  # values stay in the input's units
    again = Recipe.from_dict(json.loads(json.dumps(fitted.to_dict())))
    assert again.to_dict() == fitted.to_dict()
    np.testing.assert_array_equal(again.standardise(flat), z)


def test_smoothing_keeps_values_and_is_not_plain():
    assert Recipe().is_plain and not Recipe(smoothing=1).is_plain
    assert not Recipe(smoothing=1).derives and Recipe(spatial_weight=1).derives


def test_clean_applies_majority_then_min_size():
    labels = np.ones((20, 20), np.uint8)
    labels[5, 5] = 2
    labels[10:12, 10:12] = 3
    assert (Recipe(majority=1).clean(labels) == 1).sum() == 400 - 4
    assert (Recipe(min_size=5).clean(labels) == 1).all()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"features": "gabor"}, "'values', 'texture'"),
        ({"features": (("sobel", 1),)}, "unknown filter 'sobel'"),
        ({"spatial_weight": -1}, "spatial_weight"),
        ({"majority": 1.5}, "majority"),
        ({"min_size": -2}, "min_size"),
    ],
)
def test_bad_recipes_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Recipe(**kwargs)


def test_model_files_with_bad_recipes_are_refused():
    with pytest.raises(ValueError, match="need their 'standardisation'"):
        Recipe.from_dict({"features": "texture"})
    with pytest.raises(ValueError, match="malformed recipe"):
        Recipe.from_dict({"smoothing": -1})
    with pytest.raises(ValueError, match="must be an object"):
        Recipe.from_dict([1])
    assert Recipe.from_dict(None) == Recipe()
    with pytest.raises(ValueError, match="2 values but the image has 3"):
        Recipe(smoothing=(1, 2)).channels(np.zeros((4, 5, 6, 1), np.float32))
    plane = Recipe(smoothing=(3, 1, 2)).channels(np.ones((5, 6, 1), np.float32))  # a slice
    assert plane.shape == (5, 6, 1)


@pytest.mark.parametrize("features", ["values", "texture"])
def test_a_float32_image_with_gaps_is_never_modified(features):
    """Float32 values are used without a copy, except where invalid pixels must be filled:
    then on a copy, never in the caller's image."""
    from napari_kmeans import segment

    rng = np.random.default_rng(0)
    image = rng.normal(0, 1, (64, 64)).astype(np.float32)
    image[10:20, 10:20] = np.nan
    mask = np.ones(image.shape, bool)
    mask[40:, 40:] = False
    before = image.copy()
    result = segment(image, 3, mask=mask, smoothing=1.5, features=features)
    np.testing.assert_array_equal(image, before)  # NaN where NaN was, every value kept
    assert (result.labels[10:20, 10:20] == 0).all() and (result.labels[40:, 40:] == 0).all()
    assert (result.labels[mask & ~np.isnan(before)] > 0).all()


def _pyramid_pair(seed=0):
    """A smooth two-level image (full resolution 256 x 320, and its 2 x 2 block means)."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    field = ndi.gaussian_filter(rng.random((256, 320)), 8)
    image = ((field > np.median(field)) * 3 + rng.normal(0, 1, field.shape)).astype(np.float32)
    level = image.reshape(128, 2, 160, 2).mean(axis=(1, 3)).astype(np.float32)
    return image, level


def test_recipe_at_a_pyramid_level_is_in_that_level_s_pixels():
    """A recipe in full-resolution pixels, for an image downsampled by 2: sigmas and filter
    scales halved, clean-up scaled, and the standardisation's statistics rescaled so that the
    level's features land on the same standardised scale (positions in full-resolution
    pixels, derivatives per full-resolution pixel)."""
    recipe = Recipe(smoothing=4.0, features=(("gaussian", 2.0), ("gradient", 2.0), ("log", 3.0)),
                    spatial_weight=0.5, majority=2, min_size=20)  # fmt: skip
    at = recipe.at_level((2, 2))
    assert at.smoothing == 2.0 and at.features == (("gaussian", 1.0), ("gradient", 1.0),
                                                   ("log", 1.5))  # fmt: skip
    assert (at.majority, at.min_size, at.spatial_weight) == (1, 5, 0.5)
    assert recipe.at_level((1, 1)) == recipe
    assert recipe.at_level((1, 2)).smoothing == (4.0, 2.0)
    image, level = _pyramid_pair()
    full = recipe.channels(image[..., None]).reshape(-1, 5)
    fitted = recipe.fitted(full, n_positions=2)
    coarse = fitted.at_level((2, 2)).channels(level[..., None]).reshape(-1, 5)
    z = fitted.at_level((2, 2)).standardise(coarse)
    np.testing.assert_allclose(z.mean(axis=0), 0, atol=0.1)
    np.testing.assert_allclose(z.std(axis=0), [1, 1, 1, 0.5, 0.5], rtol=0.15)  # positions x w
    unscaled = fitted.standardise(recipe.channels(level[..., None]).reshape(-1, 5))
    assert np.abs(unscaled.std(axis=0) - [1, 1, 1, 0.5, 0.5]).max() > 0.2  # what it fixes


def test_at_level_refuses_bad_factors():
    with pytest.raises(ValueError, match="downsampling"):
        Recipe(smoothing=1.0).at_level((0, 1))
    with pytest.raises(ValueError, match="downsampling"):
        Recipe(smoothing=(1.0, 2.0)).at_level((2, 2, 2))
