"""The feature recipe: how an image becomes the feature channels that are clustered, and the
clean-up of the labels afterwards. A model keeps its recipe (with the standardisation statistics
it was fitted with), so that applying it to another image computes the same features on the
same scale and cleans the labels the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from . import cleanup
from . import filters as fl

PRESETS = ("values", "texture")


@dataclass(frozen=True)
class Recipe:
    """Feature and clean-up settings.

    Parameters
    ----------
    smoothing : float or tuple of float
        Gaussian sigma in pixels (one per spatial axis for anisotropic data); 0: none.
    features : {'values', 'texture'} or tuple of (filter, scale)
        'values': the (smoothed) channel values, in the input's units. 'texture': Gabor energies
        and the smoothed values. A filter list: the maps of those filters (see
        :data:`napari_kmeans.filters.FILTERS`) for every channel.
    spatial_weight : float
        Pixel coordinates as extra features, for compact regions, weighted relative to one
        standardised feature (all features are then standardised); 0: none.
    majority : int
        Radius of a majority filter on the labels; 0: none.
    min_size : int
        Regions smaller than this many pixels join their neighbour; 0 or 1: none.
    standardiser : Standardiser, optional
        Mean and std of each derived feature, set when the recipe is fitted.
    """

    smoothing: float | tuple = 0.0
    features: str | tuple = "values"
    spatial_weight: float = 0.0
    majority: int = 0
    min_size: int = 0
    standardiser: fl.Standardiser | None = None

    def __post_init__(self):
        if isinstance(self.features, str):
            if self.features not in PRESETS:
                raise ValueError(
                    f"features must be 'values', 'texture' or a list of (filter, scale) pairs, "
                    f"got {self.features!r}."
                )
        else:
            object.__setattr__(self, "features", fl.check_filters(self.features))
        w = self.spatial_weight
        if isinstance(w, bool) or not isinstance(w, int | float) or not np.isfinite(w) or w < 0:
            raise ValueError(f"spatial_weight must be a number >= 0, got {w!r}.")
        for name in ("majority", "min_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}.")
        smoothing = self.smoothing
        if isinstance(smoothing, list | tuple):
            smoothing = tuple(fl.check_sigma(tuple(smoothing), len(smoothing)))
        else:
            smoothing = fl.check_sigma(smoothing, 1)[0]
        object.__setattr__(self, "smoothing", smoothing)

    @property
    def derives(self) -> bool:
        """Whether features are derived (then standardised) rather than the values."""
        return self.features != "values" or self.spatial_weight > 0

    @property
    def is_plain(self) -> bool:
        """Raw values, no smoothing: the engine's fast paths apply as they are."""
        plain_smoothing = not np.any(np.asarray(self.smoothing, dtype=float))
        return plain_smoothing and not self.derives

    @property
    def cleans(self) -> bool:
        return self.majority > 0 or self.min_size > 1

    # -- features ------------------------------------------------------------------------------

    def channels(self, channels: np.ndarray) -> np.ndarray:
        """Feature channels ``(..., F)`` float32 of ``channels`` ``(..., C)`` (spatial axes first).

        Not standardised: see :meth:`fitted` and :meth:`standardise`.
        """
        spatial = channels.shape[:-1]
        smoothing = self.smoothing
        if isinstance(smoothing, tuple) and len(smoothing) > len(spatial):
            smoothing = smoothing[-len(spatial) :]  # a slice of the data the model was made for
        sigma = fl.check_sigma(smoothing, len(spatial))
        maps = []
        for c in range(channels.shape[-1]):
            plane = np.asarray(channels[..., c], dtype=np.float32)
            # no copy of the plane when nothing is smoothed and the plane is not a feature
            smoothed = (
                fl.smooth(plane, sigma) if any(sigma) or self.features != "texture" else plane
            )
            if self.features == "values":
                maps.append(smoothed)
            elif self.features == "texture":
                maps.extend(fl.gabor_maps(smoothed))
                maps.append(fl.smooth_wide(plane, max(max(sigma), fl.TEXTURE_MIN_WINDOW)))
            else:
                for name, scale in self.features:
                    maps.extend(fl.filter_channel(smoothed, name, scale))
        if self.spatial_weight > 0:  # last: the standardisation weights them (see fitted)
            maps.extend(np.indices(spatial, dtype=np.float32))
        if len(maps) == 1 and isinstance(maps[0], np.ndarray):  # a new array: used as it is
            return np.ascontiguousarray(maps[0], np.float32).reshape(*spatial, 1)
        out = np.empty((*spatial, len(maps)), np.float32)
        flat, flat_maps = out.reshape(-1, len(maps)), [fl.flat_map(m) for m in maps]
        step = 1 << 14  # interleave by blocks of pixels that stay in cache (no strided passes)
        for s in range(0, flat.shape[0], step):
            np.stack([m[s : s + step] for m in flat_maps], axis=1, out=flat[s : s + step])
        return out

    def fitted(self, features: np.ndarray, valid=None, n_positions: int = 0) -> Recipe:
        """This recipe with the standardisation of ``features`` ``(n, F)`` (valid rows only).

        The last ``n_positions`` columns are pixel coordinates: after standardisation they are
        multiplied by ``spatial_weight``, so that the weight is the importance of position
        relative to one standardised feature.
        """
        if not self.derives:
            return self
        found = fl.Standardiser.fit(features, valid)
        if self.spatial_weight > 0 and n_positions:
            found.std[-n_positions:] /= self.spatial_weight
        return replace(self, standardiser=found)

    def standardise(self, features: np.ndarray, inplace: bool = False) -> np.ndarray:
        """``(n, F)`` features on the fitted scale (unchanged when values are not derived);
        ``inplace`` overwrites float32 ``features`` instead of copying them."""
        if not self.derives:
            return features
        if self.standardiser is None:
            raise ValueError("this recipe is not fitted: its standardisation is unknown.")
        if self.standardiser.mean.size != features.shape[-1]:
            raise ValueError(
                f"the recipe was fitted on {self.standardiser.mean.size} features, but this image "
                f"gives {features.shape[-1]}: apply the model to images with the same channels."
            )
        return self.standardiser.apply(features, inplace)

    # -- clean-up ------------------------------------------------------------------------------

    def clean(self, labels: np.ndarray) -> np.ndarray:
        """The majority filter, then the minimum region size (label 0 untouched)."""
        if self.majority > 0:
            labels = cleanup.majority(labels, self.majority)
        if self.min_size > 1:
            labels = cleanup.remove_small_regions(labels, self.min_size)
        return labels

    # -- files ---------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        smoothing = self.smoothing
        features = self.features if isinstance(self.features, str) else [
            list(f) for f in self.features
        ]  # fmt: skip
        return {
            "smoothing": list(smoothing) if isinstance(smoothing, tuple) else float(smoothing),
            "features": features,
            "spatial_weight": float(self.spatial_weight),
            "majority": int(self.majority),
            "min_size": int(self.min_size),
            "standardisation": None if self.standardiser is None else self.standardiser.to_dict(),
        }

    @classmethod
    def from_dict(cls, data) -> Recipe:
        """A recipe from :meth:`to_dict`; ValueError for anything else (nothing is executed)."""
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise ValueError(f"'recipe' must be an object, got {type(data).__name__}.")
        try:
            features = data.get("features", "values")
            if isinstance(features, list):
                features = tuple(tuple(f) if isinstance(f, list) else f for f in features)
            stats = data.get("standardisation")
            recipe = cls(
                smoothing=data.get("smoothing", 0.0),
                features=features,
                spatial_weight=data.get("spatial_weight", 0.0),
                majority=data.get("majority", 0),
                min_size=data.get("min_size", 0),
                standardiser=None if stats is None else fl.Standardiser.from_dict(stats),
            )
            if not isinstance(recipe.smoothing, int | float | tuple) or isinstance(
                recipe.smoothing, bool
            ):
                raise TypeError("smoothing")
            fl.check_sigma(recipe.smoothing, len(recipe.smoothing)
                           if isinstance(recipe.smoothing, tuple) else 1)  # fmt: skip
        except (TypeError, ValueError) as err:
            raise ValueError(f"malformed recipe in the model: {err}") from None
        if recipe.derives and recipe.standardiser is None:
            raise ValueError("malformed recipe in the model: derived features need their "
                             "'standardisation'.")  # fmt: skip
        return recipe


def refuse_on_dask(recipe: Recipe) -> None:
    """Features other than the raw values, and clean-up, are computed in memory only (yet)."""
    if not recipe.is_plain or recipe.cleans:
        raise ValueError(
            "smoothing, texture or filter features, a spatial weight and the clean-up "
            "(majority, min_size) are computed on in-memory images only for now, not on dask "
            "arrays; compute the array (np.asarray) or a region of it, or use plain values."
        )


def recipe_features(recipe: Recipe, prep, *, fit: bool = False):
    """The feature pixels of a laid-out image (``features.Prepared``) by ``recipe``.

    Input values become features (CIELAB when the spec says so), invalid pixels are filled with
    the mean of the valid ones before filtering (so that a NaN or a masked pixel does not spread
    into its neighbours) and stay invalid. With ``fit`` the standardisation is fitted on the
    valid pixels first. Returns ``(features.Prepared of float32 features, the recipe)``.
    """
    from . import features as ft

    if prep.spec.color_space == "rgb":  # the values themselves, cast once (the same numbers)
        base = prep.pixels.astype(np.float32)
    else:
        base = ft.to_features(prep.pixels, prep.spec, prep.dtype).astype(np.float32)
    if prep.valid is not None and prep.valid.any() and not prep.valid.all():
        base[~prep.valid] = base[prep.valid].mean(axis=0)
    maps = recipe.channels(base.reshape(*prep.spatial_shape, base.shape[1]))
    flat = maps.reshape(-1, maps.shape[-1])
    if fit:
        positions = len(prep.spatial_shape) if recipe.spatial_weight > 0 else 0
        recipe = recipe.fitted(flat, prep.valid, positions)
    flat = recipe.standardise(flat, inplace=True)  # the table is ours: no second copy
    n = flat.shape[1]
    spec = ft.FeatureSpec(None if n == 1 else -1, False, "rgb", n)
    feats = ft.Prepared(
        spec=spec, pixels=flat, valid=prep.valid, spatial_shape=prep.spatial_shape,
        n_valid=prep.n_valid, dtype=np.dtype(np.float32),
    )  # fmt: skip
    return feats, recipe
