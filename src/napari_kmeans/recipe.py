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
from .threads import THREADS

PRESETS = ("values", "texture")
# Planes up to this many pixels are read whole for texture on dask (no overlap to recompute; larger
# planes are cut in blocks grown by filters.gabor_reach, with the same features); a block then
# holds (number of features + 2) x 4 bytes x this many pixels per plane: about 300 MB.
TEXTURE_WHOLE_PLANE = 1 << 22


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

    def channels(self, channels: np.ndarray, region: fl.Region | None = None) -> np.ndarray:
        """Feature channels ``(..., F)`` float32 of ``channels`` ``(..., C)`` (spatial axes first).

        Not standardised: see :meth:`fitted` and :meth:`standardise`. With a ``region`` (where
        a block grown by :meth:`depth` sits in its image, spatial axes only), the features of
        the block's own pixels (``region.inner``) are those of the whole image, bit for bit,
        and positions are the image's.
        """
        spatial = channels.shape[:-1]
        self._check_axes(spatial)
        region = fl.Region.whole(spatial) if region is None else region
        inner = tuple(region.inner)
        out_shape = tuple(len(range(*s.indices(n))) for s, n in zip(inner, spatial, strict=True))
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
                maps.append(smoothed[inner])
            elif self.features == "texture":
                maps.extend(fl.gabor_maps(smoothed, region=region))
                wide = max(max(sigma), fl.TEXTURE_MIN_WINDOW)
                maps.append(fl.smooth_wide(plane, wide, region=region))
            else:
                for name, scale in self.features:
                    maps.extend(m[inner] for m in fl.filter_channel(smoothed, name, scale))
        if self.spatial_weight > 0:  # last: the standardisation weights them (see fitted)
            positions = np.indices(out_shape, dtype=np.float32)
            for axis, (start, s) in enumerate(zip(region.start, inner, strict=True)):
                positions[axis] += np.float32(start + s.indices(spatial[axis])[0])
            maps.extend(positions)
        if len(maps) == 1 and isinstance(maps[0], np.ndarray):  # a new array: used as it is
            return np.ascontiguousarray(maps[0], np.float32).reshape(*out_shape, 1)
        out = np.empty((*out_shape, len(maps)), np.float32)
        flat, flat_maps = out.reshape(-1, len(maps)), [fl.flat_map(m) for m in maps]
        step = 1 << 14  # interleave by blocks of pixels that stay in cache (no strided passes)
        for s in range(0, flat.shape[0], step):
            np.stack([m[s : s + step] for m in flat_maps], axis=1, out=flat[s : s + step])
        return out

    def _check_axes(self, spatial) -> None:
        """Raise if the features cannot be computed on data of this spatial shape: texture,
        Hessian and structure-tensor eigenvalues are planar or volumetric, and the eigenvalue
        filters need every axis at least 2 pixels long."""
        names = ["texture"] if self.features == "texture" else []
        if isinstance(self.features, tuple):
            names = [name for name, _ in self.features if name in ("hessian", "structure")]
        if not names:
            return
        what = " and ".join(sorted(set(names)))
        if len(spatial) < 2:
            raise ValueError(
                f"{what} features need images of 2 or more spatial axes, got "
                f"{len(spatial)}-D data; use features='values' or the filters gaussian, "
                "gradient, log or std, which work on a line."
            )
        if names != ["texture"] and min(spatial) < 2:
            raise ValueError(
                f"{what} features need every spatial axis at least 2 pixels long, got pixels "
                f"of shape {tuple(spatial)}; drop the axes of length 1 (np.squeeze) or use "
                "other filters (gaussian, gradient, log, std)."
            )

    def fitted(
        self, features: np.ndarray, valid=None, n_positions: int = 0, threads: int = 1
    ) -> Recipe:
        """This recipe with the standardisation of ``features`` ``(n, F)`` (valid rows only).

        The last ``n_positions`` columns are pixel coordinates: after standardisation they are
        multiplied by ``spatial_weight``, so that the weight is the importance of position
        relative to one standardised feature.
        """
        if not self.derives:
            return self
        found = fl.Standardiser.fit(features, valid, threads)
        if self.spatial_weight > 0 and n_positions:
            found.std[-n_positions:] /= self.spatial_weight
        return replace(self, standardiser=found)

    def standardise(
        self, features: np.ndarray, inplace: bool = False, threads: int = 1
    ) -> np.ndarray:
        """``(n, F)`` features on the fitted scale (unchanged when values are not derived);
        ``inplace`` overwrites float32 ``features`` instead of copying them."""
        if not self.derives:
            return features
        if self.standardiser is None:
            raise ValueError("this recipe is not fitted: its standardisation is unknown.")
        self.check_n_features(features.shape[-1])
        return self.standardiser.apply(features, inplace, threads)

    def check_n_features(self, n: int) -> None:
        """Refuse an image giving ``n`` features when the recipe was fitted on another number
        (other channels, or positions along other axes)."""
        if self.standardiser is not None and self.standardiser.mean.size != n:
            raise ValueError(
                f"the recipe was fitted on {self.standardiser.mean.size} features, but this image "
                f"gives {n}: apply the model to images with the same channels."
            )

    # -- reach: how far a pixel's features and clean-up look (the dask overlap) ------------------

    def depth(self, n_axes: int, shape=None) -> tuple[int, ...]:
        """Pixels per spatial axis that a pixel's features depend on, on either side.

        The dask path computes features on blocks grown by this many pixels (an axis no longer
        than its depth is read whole), so that every pixel sees the same neighbours as in
        memory. Gaussians (scipy's and scikit-image's) are truncated at 4 sigma, so smoothing
        and the filter list are reproduced exactly (up to float rounding). Texture is 2-D per
        plane: its energies are computed on whole planes (``shape``: the spatial shape) up to
        ``TEXTURE_WHOLE_PLANE`` pixels per plane, so they are exact and the chunking along
        other axes is free; only its smoothed values (sigma at least ``TEXTURE_MIN_WINDOW``)
        reach along them. Larger planes are cut into blocks grown by the reach of the
        energies' tiles and window (:func:`napari_kmeans.filters.gabor_reach`) and of the
        smoothed values (:func:`~napari_kmeans.filters.smooth_wide_reach`): both are anchored
        to the image, so a block's own pixels get the whole plane's features, bit for bit.
        """
        smoothing = self.smoothing
        if isinstance(smoothing, tuple) and len(smoothing) > n_axes:
            smoothing = smoothing[-n_axes:]
        sigma = fl.check_sigma(smoothing, n_axes)
        reach = [_radius(s) for s in sigma]
        if self.features == "texture":
            wide = max(max(sigma), fl.TEXTURE_MIN_WINDOW)
            planar = range(max(n_axes - 2, 0), n_axes)
            whole = shape is not None and np.prod(shape[-2:]) <= TEXTURE_WHOLE_PLANE
            for i in range(n_axes):
                if i not in planar:  # the values' Gaussian only
                    reach[i] = max(reach[i], _radius(wide))
                elif whole:  # whole planes: no overlap to compute
                    reach[i] = max(shape[-2:])
                else:
                    energy = fl.gabor_reach(None if shape is None else shape[i])
                    reach[i] = max(fl.smooth_wide_reach(wide), reach[i] + energy)
        elif self.features != "values":
            widest = max(_radius(scale) for _, scale in self.features) + 3  # + derivatives
            reach = [r + widest for r in reach]
        return tuple(reach)

    def clean_depth(self) -> tuple[int, int]:
        """``(majority, min_size)`` overlaps of the clean-up on dask: the majority filter's
        radius (exact), and ``5 * min_size`` pixels, at most 64, for the minimum region size
        (approximate near chunk borders: see ``docs/large-data.md``)."""
        return int(self.majority), min(5 * int(self.min_size), 64) if self.min_size > 1 else 0

    def fitted_from_moments(self, moments, n_positions: int = 0) -> Recipe:
        """This recipe standardised by merged :func:`feature_moments` (the dask path's
        :meth:`fitted`: the same statistics, summed block by block)."""
        if not self.derives:
            return self
        count, mean, square = moments
        std = np.sqrt(square / max(count, 1))
        std[~(std > 0)] = 1.0  # a constant feature stays 0 rather than dividing by 0
        found = fl.Standardiser(np.asarray(mean, np.float64), std)
        if self.spatial_weight > 0 and n_positions:
            found.std[-n_positions:] /= self.spatial_weight
        return replace(self, standardiser=found)

    # -- pyramid levels --------------------------------------------------------------------------

    def at_level(self, factors) -> Recipe:
        """This recipe for the image downsampled by ``factors`` (full-resolution pixels per
        pixel, one per spatial axis), e.g. a pyramid level.

        Sigmas are divided by their axis's factor (a smoothing given for more axes keeps the
        leading ones: a slice of the data the recipe was made for), filter scales and the
        majority radius by the factors' geometric mean, ``min_size`` by their product (both
        rounded). Texture is unchanged: its Gabor frequencies are per pixel, so a level's
        texture is the pattern at that level's own scale. A fitted recipe's statistics follow
        the features: derivative filters scale with the factor to the power of their order
        (gradient 1; Laplacian, Hessian and structure tensor 2), positions (in the level's
        pixels) with one over their axis's factor, so that the level's features are
        standardised on the scale they were fitted on. ``at_level`` of the inverse factors
        takes a recipe fitted on a level back to the full resolution.
        """
        if isinstance(factors, str) or not isinstance(factors, tuple | list):
            raise TypeError(f"downsampling must be one factor per spatial axis, got {factors!r}.")
        values = tuple(float(f) for f in factors)
        if not values or not all(np.isfinite(f) and f > 0 for f in values):
            raise ValueError(f"downsampling factors must be finite and > 0, got {factors!r}.")
        if all(f == 1 for f in values):
            return self
        n = len(values)
        smoothing = self.smoothing
        if isinstance(smoothing, tuple) and len(smoothing) < n:
            raise ValueError(
                f"downsampling has {n} factors but the smoothing only {len(smoothing)} values."
            )
        if isinstance(smoothing, tuple) or len(set(values)) > 1:
            sigma = smoothing if isinstance(smoothing, tuple) else (smoothing,) * n
            head = sigma[: len(sigma) - n]
            smoothing = head + tuple(s / f for s, f in zip(sigma[-n:], values, strict=True))
        else:
            smoothing = smoothing / values[0]
        mean = float(np.prod(values)) ** (1 / n)
        features = self.features
        if not isinstance(features, str):
            features = tuple((name, scale / mean) for name, scale in features)
        out = replace(
            self, smoothing=smoothing, features=features,
            majority=round(self.majority / mean),
            min_size=round(self.min_size / float(np.prod(values))) if self.min_size > 1 else 0,
        )  # fmt: skip
        if self.standardiser is not None:
            scale = self._column_scales(values)
            out = replace(out, standardiser=fl.Standardiser(
                self.standardiser.mean * scale, self.standardiser.std * scale))  # fmt: skip
        return out

    def _column_scales(self, factors) -> np.ndarray:
        """How much each standardised feature grows when the image is downsampled by
        ``factors`` (see :meth:`at_level`)."""
        n, mean = len(factors), float(np.prod(factors)) ** (1 / len(factors))
        if self.features == "values":
            per_channel = [0]
        elif self.features == "texture":
            per_channel = [0] * (len(fl.TEXTURE_FREQUENCIES) * fl.TEXTURE_ORIENTATIONS + 1)
        else:
            order = {"gaussian": 0, "std": 0, "gradient": 1, "log": 2, "hessian": 2,
                     "structure": 2}  # fmt: skip
            per_channel = []
            for name, _ in self.features:
                per_channel += [order[name]] * (n if name in ("hessian", "structure") else 1)
        positions = n if self.spatial_weight > 0 else 0
        size = self.standardiser.mean.size
        channels, rest = divmod(size - positions, len(per_channel))
        if rest or channels < 1:
            raise ValueError(
                f"the recipe's statistics have {size} features, which does not match "
                f"{len(factors)} spatial axes: give one downsampling factor per spatial axis."
            )
        scale = [mean**k for k in per_channel] * channels
        scale += [1 / f for f in factors][:positions]
        return np.asarray(scale, np.float64)

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


def _radius(sigma: float) -> int:
    """scipy.ndimage's Gaussian radius at its default truncation (4 sigma)."""
    return int(4.0 * float(sigma) + 0.5)


def feature_moments(features: np.ndarray):
    """``(count, mean, sum of squared deviations)`` of ``(n, F)`` features, in float64: the
    per-block step of the standardiser's statistics, merged by :func:`merge_moments`."""
    count = features.shape[0]
    if count == 0:
        return 0, np.zeros(features.shape[1]), np.zeros(features.shape[1])
    mean = features.sum(axis=0, dtype=np.float64) / count
    square = ((features - mean) ** 2).sum(axis=0)
    return count, mean, square


def merge_moments(a, b):
    """Two :func:`feature_moments` merged (Chan, Golub and LeVeque 1979): exact in float64."""
    (na, ma, sa), (nb, mb, sb) = a, b
    n = na + nb
    if n == 0:
        return a
    delta = mb - ma
    return n, ma + delta * (nb / n), sa + sb + delta**2 * (na * nb / n)


def order_by_input(feature_model, counts, sums, spec, dtype, recipe: Recipe):
    """A model fitted on features, as the model of the input: ``(model, lut)``.

    ``counts`` ``(k,)`` and ``sums`` ``(k, C)`` are the pixels and the sums of their *input*
    values per cluster of ``feature_model``; the clusters are ordered dark to bright by their
    mean input value, which becomes their colour (empty clusters: the overall mean). The
    model's ``spec`` and ``dtype`` are the input's and it keeps ``recipe``; ``lut`` maps the
    feature model's labels (0..k) to the model's.
    """
    from . import features as ft

    counts = np.asarray(counts, np.float64)
    mean = sums.sum(axis=0) / max(counts.sum(), 1.0)
    colors = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], mean)
    order = np.argsort(ft.luminance(colors, spec), kind="stable")
    rank = np.empty(order.size, np.intp)
    rank[order] = np.arange(order.size)
    lut = np.concatenate([[0], rank + 1])
    model = replace(
        feature_model, centers=feature_model.centers[order], colors=colors[order], spec=spec,
        dtype=np.dtype(dtype).name, center_labels=None, parent=None, recipe=recipe,
    )  # fmt: skip
    return model, lut


def input_features(pixels, spec, dtype) -> np.ndarray:
    """Laid-out input pixels ``(n, channels)`` as the float32 features a recipe starts from:
    the values themselves for ``color_space='rgb'`` (float32 ones not copied), else CIELAB.
    Invalid pixels (NaN, inf) are converted as they are: the caller fills them."""
    from . import features as ft

    if spec.color_space == "rgb":
        return pixels.astype(np.float32, copy=False)
    return ft.to_features(pixels, spec, dtype).astype(np.float32, copy=False)


def feature_table(recipe: Recipe, prep) -> np.ndarray:
    """The ``(n_pixels, F)`` float32 features of a laid-out image (``features.Prepared``), not
    standardised; invalid pixels are filled with the mean of the valid ones before filtering
    (see :func:`recipe_features`)."""
    base = input_features(prep.pixels, prep.spec, prep.dtype)
    if prep.valid is not None and prep.valid.any() and not prep.valid.all():
        if np.shares_memory(base, prep.pixels):
            base = base.copy()  # filled below: never the caller's image
        base[~prep.valid] = base[prep.valid].mean(axis=0, dtype=np.float64)
    maps = recipe.channels(base.reshape(*prep.spatial_shape, base.shape[1]))
    return maps.reshape(-1, maps.shape[-1])


def recipe_features(recipe: Recipe, prep, *, fit: bool = False):
    """The feature pixels of a laid-out image (``features.Prepared``) by ``recipe``.

    Input values become features (CIELAB when the spec says so), invalid pixels are filled with
    the mean of the valid ones before filtering (so that a NaN or a masked pixel does not spread
    into its neighbours) and stay invalid. With ``fit`` the standardisation is fitted on the
    valid pixels first. Returns ``(features.Prepared of float32 features, the recipe)``.
    """
    from . import features as ft

    flat = feature_table(recipe, prep)
    if fit:
        positions = len(prep.spatial_shape) if recipe.spatial_weight > 0 else 0
        recipe = recipe.fitted(flat, prep.valid, positions, THREADS)
    flat = recipe.standardise(flat, inplace=True, threads=THREADS)  # ours: no second copy
    n = flat.shape[1]
    spec = ft.FeatureSpec(None if n == 1 else -1, False, "rgb", n)
    feats = ft.Prepared(
        spec=spec, pixels=flat, valid=prep.valid, spatial_shape=prep.spatial_shape,
        n_valid=prep.n_valid, dtype=np.dtype(np.float32),
    )  # fmt: skip
    return feats, recipe
