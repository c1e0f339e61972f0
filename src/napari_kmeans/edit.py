"""Editing a segmentation: recount after painting, merge, split, connected instances.

Every function takes the labels (and model) and returns new ones; nothing is modified in place.
After merge and split, labels are ordered dark to bright and contiguous (1..k) again, or, with
``keep_ids=True``, keep their values: only the labels an edit changes move (a merged cluster takes
the smallest of its labels, the others become absent; a split's new parts take the labels after the
largest). The model is updated with them, so that ``model.predict(image)`` keeps reproducing the
labels it made.
"""

from __future__ import annotations

import dataclasses
import warnings
from numbers import Integral

import numpy as np

from . import features as ft
from .model import KMeansModel, center_depths, check_size, label_dtype
from .params import make_params
from .recipe import recipe_features
from .segment import segment

DENSE_MAX = 1 << 20  # label values up to this are handled with a table indexed by value


def _check_label_array(labels, name="labels") -> np.ndarray:
    """``labels`` as an integer array of values >= 0, or a TypeError/ValueError with the fix."""
    labels = np.asarray(labels)
    if labels.dtype.kind not in "biu":
        raise TypeError(
            f"{name} must be integers, got dtype {labels.dtype}; convert them first, e.g. "
            f"np.rint({name}).astype(np.int64)."
        )
    if labels.dtype.kind == "b":
        return labels.view(np.uint8)
    if labels.dtype.kind == "i" and labels.size and labels.min() < 0:
        raise ValueError(
            f"{name} must be 0 or positive, found {int(labels.min())}; negative values are not "
            f"labels (0 is background): set them to 0 first, e.g. np.where({name} < 0, 0, {name})."
        )
    return labels


def _group(flat):
    """``(ids, inverse)``: label values (sorted) and the index of each pixel's value in them.

    Small values are their own index (a table by value); beyond ``DENSE_MAX`` (instance ids of
    another tool, say) the distinct values are found by sorting, so that memory follows the
    number of pixels, not the largest value.
    """
    top = int(flat.max(initial=0))
    if top <= DENSE_MAX:
        return np.arange(top + 1), flat.astype(np.intp, copy=False)
    ids, inverse = np.unique(flat, return_inverse=True)
    return ids.astype(np.int64), inverse.reshape(-1)


def _remap(labels, new_value_of):
    """``labels`` with every value v replaced by ``new_value_of(values)``, value by value."""
    ids, inverse = _group(labels.reshape(-1))
    return new_value_of(ids)[inverse].reshape(labels.shape)


def label_stats(image, labels, model: KMeansModel, *, sparse=False):
    """Pixel count and mean source colour of every label.

    Parameters
    ----------
    image : ndarray
        The source image (same channel layout as the model).
    labels : ndarray of int
        Labels (values >= 0) with the image's spatial shape (possibly painted by hand).
    model : KMeansModel
    sparse : bool, optional
        False: one row for every label value 1..n, ``n = max(labels.max(), model.n_clusters)``
        (at most ``DENSE_MAX``). True: one row for each of 1..k and each other label value
        present, whatever their size (instance ids of another tool), with the ids returned first.

    Returns
    -------
    ids : (n,) ndarray of int64
        Only when ``sparse``: the label value of each row, ascending.
    colors : (n, n_channels) ndarray of float64
        Mean value (the image's units) of the valid source pixels with each label; the model's
        colour (:meth:`~napari_kmeans.model.KMeansModel.colors_for` the image) for labels 1..k
        without valid pixels, 0 for others.
    counts : (n,) ndarray of int64
        Pixels carrying each label.

    Raises
    ------
    TypeError, ValueError
        For labels that are not integers, negative labels, or of the wrong shape; without
        ``sparse``, for label values above ``DENSE_MAX``.
    """
    image = ft.as_image(image)
    spec = model.check_image(image)
    prep = ft.prepare(image, spec, None)
    labels = _check_label_array(labels)
    flat = labels.reshape(-1)
    if flat.shape[0] != prep.pixels.shape[0]:
        raise ValueError(
            f"labels of shape {np.shape(labels)} do not match the image's pixels "
            f"{prep.spatial_shape}."
        )
    k = model.n_clusters
    top = int(flat.max(initial=0))
    if not sparse and top > DENSE_MAX:
        raise ValueError(
            f"labels hold values up to {top} (instance ids?); a table with a row for every value "
            f"up to it would be huge: use label_stats(..., sparse=True), which gives the values "
            "present, or renumber the labels (skimage.segmentation.relabel_sequential)."
        )
    ids, inverse = _group(flat)
    counts = np.bincount(inverse, minlength=ids.size)
    sel = inverse if prep.valid is None else inverse[prep.valid]
    pixels = prep.pixels if prep.valid is None else prep.pixels[prep.valid]
    mass = np.bincount(sel, minlength=ids.size)
    sums = np.stack([np.bincount(sel, weights=ch, minlength=ids.size) for ch in pixels.T], 1)
    if sparse:
        want = np.union1d(np.arange(1, k + 1), ids[(ids > 0) & (counts > 0)])
    else:
        want = np.arange(1, max(top, k) + 1)
    pos = np.minimum(np.searchsorted(ids, want), ids.size - 1)
    found = ids[pos] == want
    colors = np.zeros((want.size, spec.n_channels))
    colors[want <= k] = model.colors_for(image.dtype)[want[want <= k] - 1]
    filled = found & (mass[pos] > 0)
    colors[filled] = sums[pos[filled]] / mass[pos[filled], None]
    counts = np.where(found, counts[pos], 0).astype(np.int64)
    return (want.astype(np.int64), colors, counts) if sparse else (colors, counts)


def recount(image, labels, model: KMeansModel) -> KMeansModel:
    """The model with its colours set to the mean source colour of each label's pixels.

    Use after painting: the recoloured image, the colormap and the features table follow the
    colours. Labels painted beyond ``model.n_clusters`` have no centre and are not added.
    """
    image = ft.as_image(image)
    _, colors, _ = label_stats(image, labels, model, sparse=True)
    colors = colors[: model.n_clusters] / model.units_factor(image.dtype)  # the model's units
    return dataclasses.replace(model, colors=colors)


def _check_labels(values, k, what, present=None):
    """``values`` as sorted distinct ints in 1..k (k None: no bound; and among ``present``, the
    model's present labels, when given), or a TypeError/ValueError naming the bad values."""
    if isinstance(values, str | bytes) or not np.iterable(values):
        raise TypeError(f"{what} must be a list of integers, got {values!r}.")
    out = set()
    for v in values:
        if isinstance(v, bool | np.bool_) or not isinstance(v, Integral):
            raise TypeError(
                f"{what} must be integers, got {v!r} ({type(v).__name__}) in {values!r}; "
                "give label values such as [2, 3]."
            )
        out.add(int(v))
    out = sorted(out)
    bad = [v for v in out if not 1 <= v <= (np.inf if k is None else k)]
    if bad:
        shown = ", ".join(map(str, bad[:8])) + (", …" if len(bad) > 8 else "")
        noun = "label" if len(bad) == 1 else "labels"
        if k is None:  # no model: any label but the background
            raise ValueError(
                f"{what} must be labels of 1 or more (0 is background), got {shown}; leave "
                f"{'it' if len(bad) == 1 else 'them'} out."
            )
        raise ValueError(
            f"{what}: {noun} {shown} {'is not a cluster' if len(bad) == 1 else 'are not clusters'}"
            f" of this model, whose labels are 1 to {k}."
        )
    gone = [] if present is None else sorted(set(out) - set(np.asarray(present).tolist()))
    if gone:
        shown = ", ".join(map(str, present))
        raise ValueError(
            f"{what}: label {gone[0]} is absent from this model (merged away, or not matched "
            f"in a re-run), so it cannot be used; use one of {shown}."
        )
    return out


def _relabel(model: KMeansModel, labels, mapping, colors, *, ordered=True, shift=None):
    """Apply ``mapping`` (old label -> new label, 0 kept) and, when ``ordered``, order labels
    dark to bright (else new label i keeps row i of ``colors``). Values beyond the mapping
    (painted by hand) move down by ``shift``: by default, as many as the labels that went."""
    k = colors.shape[0]
    key = ft.luminance(colors, model.spec)
    order = np.lexsort((*colors.T[::-1], key)) if ordered else np.arange(k)
    rank = np.empty(k, np.int64)
    rank[order] = np.arange(1, k + 1)
    full = np.zeros(mapping.size, np.int64)
    full[1:] = rank[mapping[1:] - 1]
    new_model = dataclasses.replace(
        model,
        colors=colors[order],
        center_labels=full[model.labels_of_centers],
        parent=model.parents,
    )
    labels = np.asarray(labels)
    shift = mapping.size - 1 - k if shift is None else shift

    def new_value_of(values):
        # Labels painted beyond the old clusters (no centre) follow the new last cluster.
        out = values.astype(np.int64) - shift
        old = values < mapping.size
        out[old] = full[values[old]]
        return out

    top = int(new_value_of(np.array([labels.max(initial=0)]))[0])
    return new_model, _remap(labels, new_value_of).astype(label_dtype(max(k, top)))


def merge(model: KMeansModel, labels, targets, *, keep_ids=False):
    """Merge clusters ``targets`` (two or more label values) into one.

    Returns the new model and labels. The merged cluster's colour is the pixel-weighted mean of
    the merged colours; its centres are all those of the merged clusters, so the model still
    reproduces the labels. Labels are then ordered dark to bright, 1..k; with ``keep_ids`` no
    other label moves: the merged cluster is the smallest of ``targets`` and the others are
    absent from the model (:attr:`~napari_kmeans.KMeansModel.present_labels`; when the largest
    label is merged away, k becomes the largest label left).

    Examples
    --------
    >>> import numpy as np
    >>> from napari_kmeans import segment
    >>> from napari_kmeans.edit import merge
    >>> r = segment(np.array([0, 10, 100, 110, 250], dtype=np.uint8), 3)
    >>> model, labels = merge(r.model, r.labels, [2, 3])
    >>> labels, model.colors.ravel().round(1)
    (array([1, 1, 2, 2, 2], dtype=uint8), array([  5. , 153.3]))
    """
    k = model.n_clusters
    present = model.present_labels
    labels = _check_label_array(labels)
    flat = labels.reshape(-1)
    counts = np.bincount(flat[flat <= k].astype(np.intp), minlength=k + 1)[1 : k + 1]
    # an absent label may be merged while it has pixels (painted by hand with that number)
    used = np.flatnonzero(_used(present, counts, k))
    targets = _check_labels(targets, k, "clusters to merge", used)
    if len(targets) < 2:
        raise ValueError(f"merging needs at least two different clusters, got {targets}.")
    w = counts[np.array(targets) - 1].astype(np.float64)
    w = w if w.sum() > 0 else np.ones_like(w)
    merged = (model.colors[np.array(targets) - 1] * w[:, None]).sum(0) / w.sum()
    if keep_ids:
        mapping = np.arange(k + 1)
        mapping[targets[1:]] = targets[0]
        colors = model.colors.copy()
        colors[targets[0] - 1] = merged
        top = int(mapping[present].max())  # the largest label is never absent
        return _relabel(model, labels, mapping, colors[:top], ordered=False, shift=0)
    used = _used(present, counts, k)  # absent labels go, unless painted
    keep = [label for label in range(1, k + 1) if used[label] and label not in targets[1:]]
    mapping = np.zeros(k + 1, np.int64)
    for new, old in enumerate(keep, start=1):
        mapping[old] = new
    mapping[targets[1:]] = mapping[targets[0]]
    colors = model.colors[np.array(keep) - 1].copy()
    colors[mapping[targets[0]] - 1] = merged
    return _relabel(model, labels, mapping, colors)


def _used(present, counts, k):
    """Whether each label 0..k has a centre (``present``) or pixels (``counts`` of 1..k)."""
    used = np.zeros(k + 1, bool)
    used[present] = True
    used[1:] |= counts > 0
    return used


def split(model: KMeansModel, image, labels, target, n=2, *, seed=0, n_init=4, progress=None,
          keep_ids=False):  # fmt: skip
    """Split cluster ``target`` into ``n`` sub-clusters by k-means on its pixels only.

    Returns the new model and labels. Only the target cluster's pixels get new sub-cluster
    labels; clusters brighter than the target are renumbered up to make room (with
    ``keep_ids``, no cluster is renumbered: the darkest part keeps ``target`` and the others
    take the labels after the largest, k + 1 onwards). The model gains
    sub-centres under the target's centres, so it reproduces the new labels. A model with a
    clean-up (majority, minimum size) cleans the target's new labels as :meth:`predict` does,
    with the other pixels as they are (they are never changed): the split's labels are then
    those ``predict`` gives with the new model wherever the clean-up does not reach across the
    target's border. The result may
    have at most 1000 labels, 4096 centres and 32 levels of splits (the limits of a model file).

    ``progress(fraction, step)``, if given, is called regularly during the k-means of the
    target's pixels (see :func:`napari_kmeans.segment`); raise from it to cancel.

    Examples
    --------
    >>> import numpy as np
    >>> from napari_kmeans import segment
    >>> from napari_kmeans.edit import split
    >>> image = np.array([0, 10, 100, 110, 250], dtype=np.uint8)
    >>> r = segment(image, 2)
    >>> r.labels
    array([1, 1, 1, 1, 2], dtype=uint8)
    >>> model, labels = split(r.model, image, r.labels, 1, 2)
    >>> labels, model.colors.ravel()
    (array([1, 1, 2, 2, 3], dtype=uint8), array([  5., 105., 250.]))
    >>> bool(np.array_equal(model.predict(image), labels))
    True
    """
    k = model.n_clusters
    params = make_params(seed=seed, n_init=n_init, color_space=model.spec.color_space)
    present = model.present_labels
    (target,) = _check_labels([target], k, "cluster to split", present)
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 2:
        raise ValueError(f"a cluster is split into at least 2 sub-clusters, got n={n!r}.")
    labels = _check_label_array(labels)
    image = ft.as_image(image)
    model.check_image(image)  # its sub-centres must be in the model's units
    parents = model.parents
    leaves = ~np.isin(np.arange(parents.size), parents)
    under = np.flatnonzero(leaves & (model.labels_of_centers == target))
    depths = center_depths(parents)
    check_size(
        k + n - 1,
        parents.size + under.size * n,
        max(int(depths.max()), int(depths[under].max()) + 1),
        what=f"splitting cluster {target} into {n} would give a model with",
    )
    inside = labels == target
    if not inside.any():
        raise ValueError(f"cluster {target} has no pixels to split.")
    spec = model.spec
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if model.recipe is not None and not model.recipe.is_plain:
            sub, sub_colors = _split_features(model, image, inside, params.replace(n_clusters=n),
                                              progress)  # fmt: skip
        else:
            sub = segment(
                image,
                channel_axis=spec.channel_axis,
                rgb=spec.rgb,
                mask=inside,
                params=params.replace(n_clusters=n),
                progress=progress,
            )
            sub_colors = sub.centers
    if sub.n_clusters < 2:
        raise ValueError(f"cluster {target} has a single distinct value; it cannot be split.")
    sub_colors = sub_colors / model.units_factor(image.dtype)  # the image's units -> the model's
    for w in caught:
        warnings.warn(w.message, w.category, stacklevel=2)
    m = sub.n_clusters
    centers = np.concatenate([model.centers, np.tile(sub.model.centers, (under.size, 1))])
    parent = np.concatenate([parents, np.repeat(under, m)])
    # Sub-cluster j gets provisional label k + j; the target's number is then vacated.
    center_labels = np.concatenate(
        [model.labels_of_centers, np.tile(np.arange(k + 1, k + m + 1), under.size)]
    )
    grown = dataclasses.replace(
        model,
        centers=centers.astype(model.centers.dtype),
        center_labels=center_labels,
        parent=parent,
    )
    top = int(labels.max(initial=0))
    provisional = labels.astype(label_dtype(max(top, k) + m), copy=True)
    provisional[labels > k] += m  # labels painted beyond k make room for the sub-clusters
    provisional[inside] = sub.labels[inside].astype(np.int64) + k
    if model.recipe is not None and model.recipe.cleans:  # the clean-up predict applies
        provisional[inside] = model.recipe.clean(provisional)[inside]
    if keep_ids:  # the darkest part keeps the target's label, the others follow the largest
        # dark to bright in source colours (a recipe's sub-clusters are ordered in its features)
        order = np.lexsort((*sub_colors.T[::-1], ft.luminance(sub_colors, spec)))
        mapping = np.zeros(k + m + 1, np.int64)
        mapping[1 : k + 1] = np.arange(1, k + 1)
        mapping[target] = 0  # no pixel or leaf centre keeps it...
        mapping[k + 1 + order[0]] = target  # ... but the darkest part
        mapping[k + 1 + order[1:]] = np.arange(k + 1, k + m)
        colors = np.concatenate([model.colors, sub_colors[order[1:]]])
        colors[target - 1] = sub_colors[order[0]]
        return _relabel(grown, provisional, mapping, colors, ordered=False)
    flat = labels.reshape(-1)
    counts = np.bincount(flat[flat <= k].astype(np.intp), minlength=k + 1)[1 : k + 1]
    used = np.concatenate([_used(present, counts, k), np.ones(m, bool)])  # absent labels go
    keep = [label for label in range(1, k + m + 1) if used[label] and label != target]
    mapping = np.zeros(k + m + 1, np.int64)
    mapping[keep] = np.arange(1, len(keep) + 1)
    mapping[target] = 0  # no pixel or leaf centre keeps it
    colors = np.concatenate([model.colors, sub_colors])[np.array(keep) - 1]
    return _relabel(grown, provisional, mapping, colors)


def _split_features(model: KMeansModel, image, inside, params, progress):
    """Sub-clusters of a recipe model's cluster, fitted in the model's own feature space (its
    recipe and standardisation); their colours are their pixels' mean input values."""
    image = ft.as_image(image)
    prep = ft.prepare(image, model.spec, None)
    feats, _ = recipe_features(model.recipe, prep)
    n = feats.spec.n_channels
    shape = prep.spatial_shape if n == 1 else (*prep.spatial_shape, n)
    sub = segment(
        feats.pixels.reshape(shape), channel_axis=None if n == 1 else -1, mask=inside,
        params=params, progress=progress,
    )  # fmt: skip
    flat, ok = sub.labels.ravel(), sub.labels.ravel() > 0
    values = prep.pixels.astype(np.float64)
    counts = np.bincount(flat[ok] - 1, minlength=sub.n_clusters)
    sums = np.stack([np.bincount(flat[ok] - 1, weights=values[ok, c], minlength=sub.n_clusters)
                     for c in range(values.shape[1])], axis=1)  # fmt: skip
    return sub, sums / np.maximum(counts, 1)[:, None]


def instances(labels, clusters=None, *, min_size=1, connectivity=None):
    """Connected components of clusters as instance labels.

    Parameters
    ----------
    labels : ndarray of int
        Cluster labels (2-D, 3-D or n-D); 0 is background.
    clusters : iterable of int, optional
        Clusters to split into instances; all non-zero labels by default.
    min_size : int, optional
        Components with fewer pixels are dropped (set to 0).
    connectivity : int, optional
        As in :func:`skimage.measure.label` (default: full connectivity, ``labels.ndim``).

    Returns
    -------
    instances : ndarray of uint32
        1..n instance ids, numbered cluster by cluster; 0 elsewhere.
    cluster_of : (n,) ndarray of int64
        The cluster each instance belongs to.

    Examples
    --------
    >>> import numpy as np
    >>> labels = np.array([[1, 0, 1, 1], [0, 0, 2, 0], [1, 0, 0, 2]])
    >>> inst, cluster_of = instances(labels, min_size=2)
    >>> inst
    array([[0, 0, 1, 1],
           [0, 0, 2, 0],
           [0, 0, 0, 2]], dtype=uint32)
    >>> cluster_of
    array([1, 2])
    """
    from skimage.measure import label as connected

    labels = np.asarray(labels)
    if labels.dtype.kind not in "iub":
        raise TypeError(f"labels must be integers, got dtype {labels.dtype}.")
    if labels.ndim == 0:
        raise ValueError("labels must have at least one axis, got a scalar; give a label image.")
    if isinstance(min_size, bool) or not isinstance(min_size, int | np.integer) or min_size < 1:
        raise ValueError(f"min_size must be a positive integer, got {min_size!r}.")
    if connectivity is not None:
        if isinstance(connectivity, bool) or not isinstance(connectivity, Integral):
            raise TypeError(f"connectivity must be an integer or None, got {connectivity!r}.")
        if not 1 <= connectivity <= labels.ndim:
            raise ValueError(
                f"connectivity must be 1..{labels.ndim} for {labels.ndim}-D labels (or None, "
                f"full connectivity), got {connectivity}."
            )
    top = int(labels.max(initial=0))
    if top > np.iinfo(np.int64).max:
        raise ValueError(
            f"labels hold values up to {top}, beyond what int64 holds (the dtype of the "
            "instances' cluster numbers); renumber them first "
            "(skimage.segmentation.relabel_sequential)."
        )
    present = np.unique(labels[labels > 0])
    if clusters is None:
        clusters = present
    else:
        clusters = np.array(_check_labels(clusters, None, "clusters"), np.int64)
    out = np.zeros(labels.shape, np.uint32)
    cluster_of = []
    for c in clusters:
        comp = connected(labels == c, connectivity=connectivity)
        sizes = np.bincount(comp.ravel())
        big = np.flatnonzero(sizes >= min_size)
        big = big[big > 0]
        lut = np.zeros(sizes.size, np.uint32)
        lut[big] = np.arange(len(cluster_of) + 1, len(cluster_of) + big.size + 1)
        hit = comp > 0
        out[hit] = lut[comp[hit]]
        cluster_of.extend([int(c)] * big.size)
    return out, np.array(cluster_of, np.int64)
