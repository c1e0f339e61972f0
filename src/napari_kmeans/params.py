"""The clustering settings, validated once: every entry point builds a :class:`Params`.

``segment``, ``fit``, ``segment_lazy``, ``inertia_curve``, the command line and the widget all
take their settings as keywords (or a ``Params`` given as ``params=``) and build one of these
(``edit.split`` builds one from its few keywords); its constructor is the only place the
settings are checked, with the messages of :func:`napari_kmeans.features.check_fit_args`. A
new setting is added here once: a field with its default and its check in ``__post_init__``,
then the keyword of the entry points that take it.

The per-pixel feature settings (smoothing, features, spatial weight) and the clean-up of the
labels (majority, min_size) are fields too; :attr:`Params.recipe` turns them into the
:class:`~napari_kmeans.recipe.Recipe` that a model keeps.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from . import features as ft
from .recipe import Recipe


@dataclass(frozen=True)
class Params:
    """Validated clustering settings.

    Attributes
    ----------
    n_clusters : int
        Number of clusters k, 1..1000.
    color_space : {'rgb', 'lab'}
        Feature space of RGB images.
    seed : int
        Seed for k-means++ and sampling, >= 0.
    n_init : int
        k-means++/Lloyd restarts, 1..1000.
    max_iter : int
        Lloyd iterations per restart, 1..100000.
    tol : float
        Convergence tolerance, >= 0, relative to the data's mean variance.
    chunk_size : int or None
        Pixels per labelling chunk (None: the engine's default).
    smoothing, features, spatial_weight, majority, min_size
        The feature recipe and the clean-up (see :class:`napari_kmeans.recipe.Recipe`).
    pin_seeds : bool
        With ``seeds=``: keep the seeded centres at their seed means (see
        :mod:`napari_kmeans.seeds`); False lets them move from there as k-means does.

    Raises
    ------
    TypeError, ValueError
        On construction, naming the setting, the value found and the bound.

    Examples
    --------
    >>> Params(n_clusters=3).seed
    0
    >>> Params(n_init=0)
    Traceback (most recent call last):
    ...
    ValueError: n_init must be at least 1, got 0.
    """

    n_clusters: int = 5
    color_space: str = "rgb"
    seed: int = 0
    n_init: int = 4
    max_iter: int = 300
    tol: float = 1e-4
    chunk_size: int | None = None
    smoothing: float | tuple = 0.0
    features: str | tuple = "values"
    spatial_weight: float = 0.0
    majority: int = 0
    min_size: int = 0
    pin_seeds: bool = False

    def __post_init__(self):
        if not isinstance(self.pin_seeds, bool):
            raise TypeError(
                f"pin_seeds must be True or False, got {self.pin_seeds!r} "
                f"({type(self.pin_seeds).__name__})."
            )
        k, n_init, max_iter, tol, seed = ft.check_fit_args(
            self.n_clusters,
            n_init=self.n_init,
            max_iter=self.max_iter,
            tol=self.tol,
            seed=self.seed,
        )
        checked = {
            "n_clusters": k,
            "n_init": n_init,
            "max_iter": max_iter,
            "tol": tol,
            "seed": seed,
            "chunk_size": ft.check_chunk_size(self.chunk_size),
            "color_space": ft.check_color_space(self.color_space),
        }
        for name, value in checked.items():
            object.__setattr__(self, name, value)
        recipe = self.recipe  # validates the feature and clean-up settings
        object.__setattr__(self, "smoothing", recipe.smoothing)
        object.__setattr__(self, "features", recipe.features)

    @property
    def recipe(self) -> Recipe:
        """The feature recipe and clean-up of these settings (not fitted yet)."""
        return Recipe(
            smoothing=self.smoothing, features=self.features, spatial_weight=self.spatial_weight,
            majority=self.majority, min_size=self.min_size,
        )  # fmt: skip

    def replace(self, **changes) -> Params:
        """A copy with some settings changed (validated again)."""
        return dataclasses.replace(self, **changes)


_DEFAULTS = Params()


def make_params(params: Params | None = None, **settings) -> Params:
    """``params``, or a :class:`Params` built from the keyword ``settings`` of an entry point.

    Entry points keep their keyword signatures and accept ``params=`` too. Keywords left at their
    defaults defer to ``params``; a keyword set to another value than ``params`` holds is refused
    (TypeError), so that a setting cannot be given twice and silently lost.
    """
    if params is None:
        return Params(**settings)
    if not isinstance(params, Params):
        raise TypeError(
            f"params must be a napari_kmeans.params.Params or None, got {type(params).__name__}."
        )
    clash = [
        name
        for name, value in settings.items()
        if value != getattr(_DEFAULTS, name) and value != getattr(params, name)
    ]
    if clash:
        raise TypeError(
            f"{', '.join(clash)} given both as keyword(s) and in params, with different values; "
            "give each setting once (params.replace(...) makes a changed copy)."
        )
    return params


def check_k_range(k_min, k_max) -> tuple[int, int]:
    """``(k_min, k_max)`` of an inertia curve, validated: 1 <= k_min <= k_max <= 1000."""
    k_min = ft.check_int("k_min", k_min, 1, ft.MAX_CLUSTERS)
    k_max = ft.check_int("k_max", k_max, k_min, ft.MAX_CLUSTERS)
    return k_min, k_max
