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
