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
        Pixel coordinates (times this weight) as extra features, for compact regions; 0: none.
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
        if isinstance(self.smoothing, list):
            object.__setattr__(self, "smoothing", tuple(self.smoothing))

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
        sigma = fl.check_sigma(self.smoothing, len(spatial))
        maps = []
        for c in range(channels.shape[-1]):
            plane = np.asarray(channels[..., c], dtype=np.float32)
            smoothed = fl.smooth(plane, sigma)
            if self.features == "values":
                maps.append(smoothed)
            elif self.features == "texture":
                maps.extend(fl.gabor_energies(smoothed if any(sigma) else plane))
                maps.append(fl.smooth(plane, max(max(sigma), fl.TEXTURE_MIN_WINDOW)))
            else:
                for name, scale in self.features:
                    maps.extend(fl.filter_channel(smoothed, name, scale))
        if self.spatial_weight > 0:
            grid = np.indices(spatial, dtype=np.float32)
            maps.extend(g * np.float32(self.spatial_weight) for g in grid)
        return np.stack(maps, axis=-1)

    def fitted(self, features: np.ndarray, valid=None) -> Recipe:
        """This recipe with the standardisation of ``features`` ``(n, F)`` (valid rows only)."""
        if not self.derives:
            return self
        return replace(self, standardiser=fl.Standardiser.fit(features, valid))

    def standardise(self, features: np.ndarray) -> np.ndarray:
        """``(n, F)`` features on the fitted scale (unchanged when values are not derived)."""
        if not self.derives:
            return features
        if self.standardiser is None:
            raise ValueError("this recipe is not fitted: its standardisation is unknown.")
        if self.standardiser.mean.size != features.shape[-1]:
            raise ValueError(
                f"the recipe was fitted on {self.standardiser.mean.size} features, but this image "
                f"gives {features.shape[-1]}: apply the model to images with the same channels."
            )
        return self.standardiser.apply(features)

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
