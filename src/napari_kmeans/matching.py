"""Label IDs that stay put: a new model's labels matched to an earlier model's.

:func:`match_model` gives each label of a new model the ID of the earlier model's label it
matches: the pairs minimise the total distance between the labels' colours in the feature space
(raw values, or CIELAB for ``color_space='lab'``), by the Hungarian method
(:func:`scipy.optimize.linear_sum_assignment`). New labels left unmatched (more clusters than
before) get the next free IDs, above the earlier model's largest; IDs left unmatched (fewer
clusters) are absent from the new model. Seed classes keep their IDs 1..m (the seeds chose them)
and take no part in the matching; the other labels are matched to the earlier labels other than
1..m.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from . import features as ft
from .model import KMeansModel


def reference_model(match_to) -> KMeansModel:
    """The model of ``match_to``: a :class:`KMeansModel`, or a result with a ``model``."""
    model = getattr(match_to, "model", match_to)
    if not isinstance(model, KMeansModel):
        raise TypeError(
            f"match_to must be a KMeansModel or a result of an earlier segment (with a .model), "
            f"got {type(match_to).__name__}."
        )
    return model


def _label_features(model: KMeansModel) -> np.ndarray:
    """Each label's colour (1..k, rows) in the model's feature space (raw values or CIELAB)."""
    return ft.to_features(model.colors.astype(np.float64), model.spec, model.dtype)


def match_labels(model: KMeansModel, reference, *, fixed=None) -> np.ndarray:
    """The look-up table ``lut`` (old label -> new ID, ``lut[0] == 0``) of :func:`match_model`."""
    from scipy.optimize import linear_sum_assignment  # scipy.optimize is slow to import

    reference = reference_model(reference)
    a, b = model.spec, reference.spec
    if (a.n_channels, a.rgb, a.color_space) != (b.n_channels, b.rgb, b.color_space):
        raise ValueError(
            f"cannot match labels to a model of another channel layout: this model has "
            f"{a.n_channels} channel(s) (rgb={a.rgb}, color_space={a.color_space!r}), the earlier "
            f"one {b.n_channels} (rgb={b.rgb}, color_space={b.color_space!r}); match models of "
            "the same kind of image."
        )
    if not reference.compares_with(model.dtype):
        raise ValueError(
            f"cannot match labels to a model of another dtype: this model was fitted on "
            f"{model.dtype} data, the earlier one on {reference.dtype}, and color_space='rgb' "
            f"compares raw values; convert the images to {reference.dtype} first, or fit both "
            "models with color_space='lab' (RGB), which works across dtypes."
        )
    if fixed is None:
        fixed = 0 if model.seed_means is None else model.seed_means.shape[0]
    new_ids = model.present_labels
    ref_ids = reference.present_labels
    free_new, free_ref = new_ids[new_ids > fixed], ref_ids[ref_ids > fixed]
    lut = np.zeros(model.n_clusters + 1, np.int64)
    kept = new_ids[new_ids <= fixed]
    lut[kept] = kept
    fa, fb = _label_features(model)[free_new - 1], _label_features(reference)[free_ref - 1]
    cost = np.sqrt(((fa[:, None, :] - fb[None, :, :]) ** 2).sum(axis=2))
    rows, cols = linear_sum_assignment(cost) if cost.size else ([], [])
    lut[free_new[rows]] = free_ref[cols]
    unmatched = np.setdiff1d(free_new, free_new[rows])  # ascending: today's order
    top = max(reference.n_clusters, fixed)
    lut[unmatched] = top + 1 + np.arange(unmatched.size)
    return lut


def relabel_model(model: KMeansModel, lut, reference=None) -> KMeansModel:
    """``model`` with its labels renumbered by ``lut`` (old label -> new ID).

    The new model's :attr:`~KMeansModel.n_clusters` is the largest new ID; IDs no label maps
    to are absent (no centre), with ``reference``'s colour when it has one (else zeros).
    """
    lut = np.asarray(lut, np.int64)
    present = model.present_labels
    k = int(lut[present].max())
    if k == model.n_clusters and np.array_equal(lut[present], present) and present.size == k:
        return model
    colors = np.zeros((k, model.colors.shape[1]))
    if reference is not None:
        ref = reference_model(reference)
        n = min(k, ref.n_clusters)
        colors[:n] = ref.colors_for(model.dtype)[:n]  # in this model's units
    colors[lut[present] - 1] = model.colors[present - 1]
    # centres whose label is absent are parents of split clusters: their label is never used
    center_labels = np.maximum(lut[model.labels_of_centers], 1)
    return dataclasses.replace(model, colors=colors, center_labels=center_labels)


def match_model(model: KMeansModel, reference, *, fixed=None) -> KMeansModel:
    """``model`` with its labels renumbered to match an earlier model's IDs.

    Parameters
    ----------
    model : KMeansModel
        The new model.
    reference : KMeansModel or Segmentation
        The earlier model (or a result holding it), with the same channel layout.
    fixed : int, optional
        Labels 1..fixed keep their IDs and are not matched; default: the model's seed classes
        (``len(model.seed_means)``), or 0.

    Returns
    -------
    KMeansModel
        Labels matched to the earlier IDs (minimum total distance between label colours in
        feature space, :func:`scipy.optimize.linear_sum_assignment`); unmatched new labels get
        the next IDs above ``reference.n_clusters``; IDs of the reference left unmatched are
        absent. ``model`` itself when nothing changes.

    Raises
    ------
    TypeError
        If ``reference`` is not a model or a result with one.
    ValueError
        If the models' channel layouts differ, or their raw values are in other units
        (``color_space='rgb'`` models of different dtypes, unless both are floating point).

    Examples
    --------
    >>> import numpy as np
    >>> from napari_kmeans import fit
    >>> old = fit(np.array([0, 100, 200], np.uint8), 3).model
    >>> new = fit(np.array([0, 200], np.uint8), 2).model
    >>> match_model(new, old).predict(np.array([0, 200], np.uint8))
    array([1, 3], dtype=uint8)
    """
    return relabel_model(model, match_labels(model, reference, fixed=fixed), reference)
