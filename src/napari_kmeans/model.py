"""A fitted k-means model: centres plus everything needed to apply them to other images."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np

from . import blocks
from . import features as ft
from ._version import __version__
from .compress import CHUNK, codec_for, compress, lookup, present_codes
from .kmeans1d import assign_1d, label_1d, thresholds
from .lloyd import assign, dot
from .recipe import Recipe, recipe_features
from .threads import THREADS, map_ordered

FORMAT = "napari-kmeans-model"
FORMAT_VERSION = 3  # 2 adds the feature recipe; 3 seed means and labels absent from the model
# (non-contiguous IDs, after match_to); each model is written with the lowest version it needs
MAX_FILE_BYTES = 50 * 1024 * 1024  # a model of 64 clusters is a few kB; refuse anything huge
# Bounds on a model's size, so that a model file costs bounded time to load and apply.
MAX_LABELS = ft.MAX_CLUSTERS
MAX_CENTERS = 4096  # merges pool centres, splits add sub-centres under each of the target's
MAX_DEPTH = 32  # levels of sub-centres (splits of splits): predict descends level by level


def label_dtype(k: int) -> np.dtype:
    """Smallest unsigned integer dtype that holds labels 0..k."""
    for dt in (np.uint8, np.uint16, np.uint32):
        if k <= np.iinfo(dt).max:
            return np.dtype(dt)
    return np.dtype(np.uint64)


class Labelling(NamedTuple):
    """Result of the labelling kernel :meth:`KMeansModel.label_pixels`."""

    labels: np.ndarray  # flat (n_pixels,) labels 1..k, 0 for invalid pixels
    inertia: float | None  # summed squared feature distance of the labelled pixels
    counts: np.ndarray | None  # (k,) pixels per cluster


@dataclass(frozen=True, eq=False)
class KMeansModel:
    """Fitted cluster centres and the feature settings they were fitted with.

    Parameters
    ----------
    centers : (m, n_features) ndarray
        Cluster centres in feature space (raw channel values, or CIELAB). For a freshly fitted
        model ``m == k`` and centre i gives label i + 1, ordered from the darkest cluster (label 1)
        to the brightest (label k).
    colors : (k, n_channels) ndarray
        Each label's colour in the input's units (its centre, or its pixels' mean colour), used
        to recolour.
    spec : FeatureSpec
        Channel layout and colour space.
    dtype : str
        dtype of the image the model was fitted on.
    seed : int
        Seed the model was fitted with (for the record).
    center_labels : (m,) ndarray of int, optional
        The label (1..k) each centre stands for; several centres share a label after a merge.
        Default ``1..m``.
    parent : (m,) ndarray of int, optional
        -1 for top-level centres; for the sub-centres made by splitting a cluster, the index
        (lower than their own) of the centre they refine. A pixel goes to its nearest top-level
        centre, then, while that centre has sub-centres, to the nearest of those. Default all -1.
    recipe : Recipe, optional
        The feature recipe and clean-up, when the features are not the raw values.
    seed_means : (m, n_features) ndarray, optional
        The seed classes' mean features (scribbled seeds, :mod:`napari_kmeans.seeds`): class i
        gave label i. None for an unseeded fit.
    pinned : bool, optional
        Whether the seeded centres were held at ``seed_means`` (``pin_seeds``).

    Notes
    -----
    Label IDs need not be contiguous: a model matched to an earlier one
    (:func:`napari_kmeans.matching.match_model`) keeps that model's IDs, so some labels up to
    :attr:`n_clusters` (the largest label) may have no centre: :attr:`present_labels` lists
    those that do. An absent label's colour is the earlier model's colour for it.

    Examples
    --------
    >>> import numpy as np
    >>> from napari_kmeans import segment, KMeansModel
    >>> image = np.array([[0, 0, 200], [10, 210, 200]], dtype=np.uint8)
    >>> model = segment(image, 2).model
    >>> model.predict(np.array([5, 190], dtype=np.uint8))
    array([1, 2], dtype=uint8)
    >>> KMeansModel.from_dict(model.to_dict()).predict(np.array([250], dtype=np.uint8))
    array([2], dtype=uint8)
    """

    centers: np.ndarray
    colors: np.ndarray
    spec: ft.FeatureSpec
    dtype: str
    seed: int = 0
    center_labels: np.ndarray | None = None
    parent: np.ndarray | None = None
    recipe: Recipe | None = None  # features other than the raw values, and the clean-up
    seed_means: np.ndarray | None = None
    pinned: bool = False

    @property
    def uses_recipe(self) -> bool:
        """Whether pixels are described by a recipe (smoothing, texture, filters, position) or
        the labels cleaned, rather than raw values: then :meth:`predict` applies it."""
        return self.recipe is not None and not (self.recipe.is_plain and not self.recipe.cleans)

    @property
    def n_clusters(self) -> int:
        """Number of labels k: the largest label (see :attr:`present_labels`)."""
        return int(self.colors.shape[0])

    @property
    def present_labels(self) -> np.ndarray:
        """The labels (ascending) that some leaf centre gives: all of 1..k, unless IDs were
        matched to an earlier model (then some may be absent)."""
        if self.is_flat:
            return np.arange(1, self.n_clusters + 1)
        parent = self.parents
        leaves = ~np.isin(np.arange(parent.size), parent)
        return np.unique(self.labels_of_centers[leaves])

    @property
    def label_dtype(self) -> np.dtype:
        """dtype of this model's labels (the smallest unsigned dtype holding 0..k)."""
        return label_dtype(self.n_clusters)

    @property
    def labels_of_centers(self) -> np.ndarray:
        if self.center_labels is None:
            return np.arange(1, self.centers.shape[0] + 1)
        return self.center_labels

    @property
    def parents(self) -> np.ndarray:
        if self.parent is None:
            return np.full(self.centers.shape[0], -1)
        return self.parent

    @property
    def is_flat(self) -> bool:
        """True for a fitted model: one centre per label, no sub-centres."""
        return self.center_labels is None and self.parent is None

    # -- applying the model ---------------------------------------------------------------------

    def check_image(self, image: np.ndarray, *, rgb=None) -> ft.FeatureSpec:
        """The spec to read ``image`` with; raises ValueError if it does not suit the model.

        The image must have the model's channel layout and, for raw-value models, a compatible
        dtype (integer dtypes must match; floats may differ).

        Parameters
        ----------
        image : ndarray or dask array
        rgb : bool or None, optional
            What the caller knows of the image's layout: True when its last axis holds RGB(A)
            channels (a PNG, JPEG or RGB TIFF, a napari layer with ``rgb=True``), False when it
            does not, None when unknown. The shape alone cannot tell an RGB ``(M, N, 3)`` image
            from a volume of three gray planes: a single-channel model reads it as a volume
            unless ``rgb=True`` says otherwise.

        Raises
        ------
        TypeError
            If ``rgb`` is not True, False or None.
        ValueError
            If the image's (declared) layout or dtype differs from the model's.
        """
        spec = self.spec
        self._check_declared(image, ft.check_rgb(rgb))
        dtype = np.dtype(image.dtype).newbyteorder("=")
        fitted = np.dtype(self.dtype)
        if not self.compares_with(dtype):
            raise ValueError(
                f"this model was fitted on {fitted} data and compares raw values, but the image is "
                f"{dtype}; convert the image to {fitted} (or fit with color_space='lab', which "
                "works across dtypes)."
            )
        if spec.channel_axis is None:
            return spec
        ax = spec.channel_axis
        if not -image.ndim <= ax < 0 or image.ndim < 2:
            raise ValueError(
                f"this model expects channels on axis {ax}, but the image has shape {image.shape}."
            )
        n = image.shape[ax]
        ok = n in (3, 4) if spec.rgb else n == spec.n_channels
        if not ok:
            want = "3 (RGB) or 4 (RGBA)" if spec.rgb else str(spec.n_channels)
            raise ValueError(
                f"this model expects {want} channels on axis {ax}, but the image has {n} "
                f"(shape {image.shape}); apply it to images with the same channel layout."
            )
        return spec

    def colors_for(self, dtype) -> np.ndarray:
        """The labels' colours in the units of an image of ``dtype``: a CIELAB model, which
        applies across dtypes, scales its colours to the dtype's full intensity (255 for uint8,
        65535 for uint16, 1 for floats); raw-value colours are returned as they are."""
        factor = self.units_factor(dtype)
        return self.colors if factor == 1 else self.colors * factor

    def units_factor(self, dtype) -> float:
        """Colours in this model's units times this are in the units of an image of
        ``dtype`` (1 but for CIELAB models of another dtype's range)."""
        if self.spec.color_space != "lab":
            return 1.0
        return ft.rgb_scale(dtype) / ft.rgb_scale(self.dtype)

    def compares_with(self, dtype) -> bool:
        """Whether raw values of ``dtype`` are in this model's units: always for CIELAB (the
        features are scaled by the dtype's range); for raw values, when the dtypes are equal or
        both floating point."""
        dtype, fitted = np.dtype(dtype).newbyteorder("="), np.dtype(self.dtype)
        raw = self.spec.color_space == "rgb"
        return not (raw and (dtype.kind in "biu" or fitted.kind in "biu") and dtype != fitted)

    def _check_declared(self, image, rgb):
        """Raise if the layout the caller declared (``rgb``) is not the model's."""
        spec, shape = self.spec, tuple(image.shape)
        if rgb and spec.channel_axis is None:
            raise ValueError(
                f"the image is RGB(A) (shape {shape}, channels on the last axis) but this model "
                f"was fitted on single-channel (grayscale) data, and would read the image as a "
                f"{len(shape)}-D grayscale volume; apply a model fitted on RGB images, or convert "
                "the image to grayscale first (e.g. skimage.color.rgb2gray)."
            )
        if rgb and not spec.rgb and spec.channel_axis != -1:
            raise ValueError(
                f"the image is RGB(A) (shape {shape}, channels on the last axis) but this model "
                f"expects {spec.n_channels} channels on axis {spec.channel_axis}; apply it to "
                "images with the same channel layout."
            )
        if rgb is False and spec.rgb:
            raise ValueError(
                f"this model was fitted on RGB(A) images, but the image (shape {shape}) is "
                "declared not RGB; apply it to RGB images, or fit a model on this kind of image."
            )

    def assign_values(self, values: np.ndarray, dtype):
        """Nearest centre of pixel values ``(n, n_channels)`` of the given input dtype.

        Returns the 0-based label index of each value (label - 1) and its squared distance to
        its centre in feature space.
        """
        # wide float32 rows: assign converts them slice by slice (exactly), no float64 copy
        wide = values.ndim == 2 and values.shape[1] >= WIDE_ROWS
        single = values.dtype.kind == "f" and values.dtype.itemsize < 8
        if self.is_flat and wide and single and self.spec.color_space == "rgb":
            return assign(values, self.centers)
        no_tree = self.parent is None  # flat, or flat with its IDs renumbered (match_to)
        # integer values of several channels: assign compares them in float64 itself, column by
        # column, without a float64 copy of them all (the features of "rgb" are the values)
        raw = values.ndim == 2 and values.shape[1] > 1 and values.dtype.kind in "ui"
        if raw and no_tree and self.spec.color_space == "rgb":
            feats = values
        else:
            feats = ft.to_features(values, self.spec, dtype, self.centers)
        if no_tree and feats.shape[1] > 1:
            idx, d2 = assign(feats, self.centers)  # the distances too
            return (idx, d2) if self.center_labels is None else (self.center_labels[idx] - 1, d2)
        idx = _nearest(feats, self.centers) if no_tree else self._descend(feats)
        d2 = _sq_dist(feats, self.centers, idx)
        if self.center_labels is not None:
            idx = self.center_labels[idx] - 1
        return idx, d2

    def _descend(self, feats):
        """Nearest top-level centre, then nearest sub-centre while the centre has any.

        Level by level: each level groups the pixels still at a centre with sub-centres by that
        centre (one sort), so the work is bounded by the depth, not by the number of parents.
        """
        parent = self.parents
        top = np.flatnonzero(parent < 0)
        idx = top[_nearest(feats, self.centers[top])]
        kids_of = {int(p): np.flatnonzero(parent == p) for p in np.unique(parent[parent >= 0])}
        has_kids = np.zeros(parent.size, bool)
        has_kids[list(kids_of)] = True
        for _ in range(parent.size):  # at most the depth of the tree
            sel = np.flatnonzero(has_kids[idx])
            if not sel.size:
                break
            sel = sel[np.argsort(idx[sel], kind="stable")]
            at, starts = np.unique(idx[sel], return_index=True)
            for p, rows in zip(at, np.split(sel, starts[1:]), strict=True):
                kids = kids_of[int(p)]
                idx[rows] = kids[_nearest(feats[rows], self.centers[kids])]
        return idx

    def label_pixels(
        self, pixels, valid, dtype, *, support=None, assignment=None, chunk_size=None,
        stats=True, progress=None, threads=1,
    ) -> Labelling:  # fmt: skip
        """The labelling kernel: labels of ``(n, n_channels)`` pixels, with inertia and counts.

        Used for whole images (:meth:`label_prepared`, :meth:`predict`) and for every block of
        a dask image alike. Pixels that compress are labelled through a look-up table over the
        codes present; others by nearest centre in chunks of ``chunk_size`` pixels. Either way a
        pixel's label depends only on its value.

        Parameters
        ----------
        pixels : (n, n_channels) ndarray
            Pixel values (bool viewed as uint8), as :func:`napari_kmeans.features.layout` gives.
        valid : (n,) ndarray of bool or None
            Pixels to label; the others get 0.
        dtype : dtype
            The image's dtype (bool stays bool: it sets the scale of CIELAB features).
        support : Support, optional
            The pixels' compressed support with their codes (``compress.compress``), when the
            caller has it; it saves encoding and counting again.
        assignment : (idx, d2), optional
            The nearest centre (0-based) of each of ``support.values`` and the squared distance
            to it, when the caller has just computed them with this model.
        chunk_size : int, optional
            Pixels per assignment chunk for data that do not compress.
        stats : bool, optional
            False skips ``inertia`` and ``counts`` (None) where they cost extra work.
        progress : callable, optional
            ``progress(fraction, step)``, called before each chunk.
        threads : int, optional
            Threads labelling chunks side by side (in-memory images; the result is the same).

        Returns
        -------
        Labelling
            ``(labels, inertia, counts)``; labels flat, in :attr:`label_dtype`.
        """
        # cache-sized chunks (their float64 copy ~2 MB; fewer rows when they are wide)
        chunk = ft.check_chunk_size(chunk_size) or LABEL_ROWS * 4 // max(4, pixels.shape[1])
        k = self.n_clusters
        ldtype = self.label_dtype
        codec = codec_for(pixels.dtype, pixels.shape[1])
        if support is not None and support.codes is None:  # no codes to look up: encode again
            support = assignment = None
        if codec is not None and support is None and stats:
            ft.tick(progress, 0.0, "compressing pixels")
            support = compress(pixels, valid)
        if codec is not None and support is not None:
            if assignment is None:
                idx, d2 = self.assign_values(support.values, dtype)
            else:
                idx, d2 = assignment
            lut = np.zeros(support.codec.n_codes, ldtype)
            lut[support.distinct] = idx + 1
            counts = np.bincount(idx, weights=support.weights, minlength=k).astype(np.int64)
            inertia = dot(support.weights, d2)
            return Labelling(lookup(lut, support.codes, valid), inertia, counts)
        if codec is not None:  # labels only: the codes present, without counting them
            codes = codec.encode(pixels)
            distinct = present_codes(codes, valid, codec.n_codes)
            lut = np.zeros(codec.n_codes, ldtype)
            lut[distinct] = self.assign_values(codec.decode(distinct), dtype)[0] + 1
            return Labelling(lookup(lut, codes, valid), None, None)
        n = pixels.shape[0]
        out = np.zeros(n, ldtype)
        by_thresholds = self._by_thresholds()

        def label_chunk(s):  # labels written in place (chunks are disjoint); stats returned
            part = pixels[s : s + chunk]
            ok = None if valid is None else valid[s : s + chunk]
            if ok is not None:
                part = part[ok]
            if by_thresholds:  # one comparison per cut: the rule of assign_values, faster
                idx, part_counts, part_inertia = label_1d(part, self.centers[:, 0], stats=stats)
            else:
                idx, d2 = self.assign_values(part, dtype)
                part_inertia, part_counts = float(d2.sum()), np.bincount(idx, minlength=k)
            if ok is None:
                out[s : s + chunk] = idx + 1
            else:
                out[s : s + chunk][ok] = idx + 1
            return part_inertia, part_counts

        def starts():
            for s in range(0, n, chunk):
                ft.tick(progress, s / n, "labelling pixels")
                yield s

        inertia = 0.0
        counts = np.zeros(k, np.int64)
        for part_inertia, part_counts in map_ordered(label_chunk, starts(), threads):
            if stats or not by_thresholds:  # summed in chunk order, as with one thread
                inertia += part_inertia
                counts += part_counts
        if by_thresholds and not stats:
            return Labelling(out, None, None)
        return Labelling(out, inertia, counts)

    def _by_thresholds(self) -> bool:
        """Whether labels come from midpoint thresholds: a flat single-channel model of raw
        values with ascending centres and at most 16 clusters."""
        c = self.centers
        return (
            self.is_flat and c.shape[1] == 1 and self.spec.color_space == "rgb" and c.shape[0] <= 16
            and bool(np.all(np.diff(c[:, 0]) > 0))
        )  # fmt: skip

    def label_prepared(
        self, prep: ft.Prepared, compressed=None, chunk_size=None, distinct=None, progress=None
    ) -> Labelling:
        """Label a prepared image: ``(labels, inertia, counts)``.

        Labels are flat (0 for invalid pixels); ``inertia`` sums squared feature distances over
        labelled pixels; ``counts`` are pixels per cluster. Compressible images are labelled
        through a look-up table over their codes; others in chunks of ``chunk_size`` pixels.
        ``compressed`` is the image's support with its codes when the caller has it;
        ``distinct`` may give ``(idx, d2)``, the nearest centre of each of ``compressed.values``
        and the squared distance to it, when the caller has just computed them (:func:`segment`
        does), saving one assignment pass. ``progress(fraction, step)`` is called before each
        chunk. See :meth:`label_pixels`, the kernel this applies.
        """
        # in threads for pixels of 8 bytes or more (as sampling.reduce_chunks: for narrower ones
        # the chunks' float64 temporaries are large next to the image)
        wide = prep.pixels.shape[1] * prep.pixels.dtype.itemsize >= 8
        return self.label_pixels(
            prep.pixels, prep.valid, prep.dtype, support=compressed, assignment=distinct,
            chunk_size=chunk_size, progress=progress, threads=THREADS if wide else 1,
        )  # fmt: skip

    def predict(self, image, *, mask=None, chunk_size=None, rgb=None) -> np.ndarray:
        """Label every pixel of ``image`` with its nearest centre (1..k; 0 for invalid pixels).

        Parameters
        ----------
        image : ndarray
            An image with the same channel layout as the one the model was fitted on.
        mask : ndarray of bool, optional
            Pixels to label (shape of ``image`` without its channel axis); others get 0.
        chunk_size : int, optional
            Pixels per chunk for images that do not compress (bounds temporary memory).
        rgb : bool or None, optional
            Whether the image is known to be RGB(A) (True), known not to be (False), or unknown
            (None); see :meth:`check_image`.

        Returns
        -------
        labels : ndarray
            The image's spatial shape, smallest unsigned dtype that holds k.

        Raises
        ------
        ValueError
            If the image's layout or dtype does not suit the model (see :meth:`check_image`),
            or ``chunk_size`` is below 1.
        TypeError
            For unsupported dtypes, a non-integer ``chunk_size`` or a non-bool ``rgb``.
        """
        if self.uses_recipe and (blocks.is_dask(image) or blocks.is_dask(mask)):
            from .lazy_features import predict_with_recipe  # features with overlap, clean-up

            return predict_with_recipe(self, image, mask=mask, chunk_size=chunk_size, rgb=rgb)
        if blocks.is_dask(image) or blocks.is_dask(mask):
            return blocks.predict_blocks(self, image, mask=mask, chunk_size=chunk_size, rgb=rgb)
        chunk_size = ft.check_chunk_size(chunk_size)
        image = ft.as_image(image)
        spec = self.check_image(image, rgb=rgb)
        prep = ft.prepare(image, spec, mask)
        if self.uses_recipe:
            return self.label_with_recipe(prep, chunk_size=chunk_size).labels
        labels = self.label_prepared(prep, chunk_size=chunk_size)[0]
        return labels.reshape(prep.spatial_shape)

    # -- models with a feature recipe -------------------------------------------------------------

    def feature_model(self) -> KMeansModel:
        """The same centres as a model of the recipe's feature channels (float32 values)."""
        n = self.centers.shape[1]
        spec = ft.FeatureSpec(None if n == 1 else -1, False, "rgb", n)
        return KMeansModel(
            self.centers, np.zeros((self.n_clusters, n)), spec, "float32", self.seed,
            self.center_labels, self.parent,
        )  # fmt: skip

    def label_with_recipe(self, prep: ft.Prepared, *, chunk_size=None, progress=None):
        """Labels (spatial shape) of laid-out input pixels through the recipe: features,
        nearest centre, clean-up. Returns ``Labelling`` (inertia in feature space, before the
        clean-up; counts after it)."""
        inner = self.feature_model()
        if self.recipe.is_plain:  # clean-up only: the raw values are the features
            inner, feats = replace(self, recipe=None), prep
        else:
            feats, _ = recipe_features(self.recipe, prep)
        labelled = inner.label_prepared(feats, chunk_size=chunk_size, progress=progress)
        labels = self.recipe.clean(labelled.labels.reshape(prep.spatial_shape))
        counts = np.bincount(labels.ravel(), minlength=self.n_clusters + 1)[1:].astype(np.int64)
        return Labelling(labels, labelled.inertia, counts)

    # -- confidence ------------------------------------------------------------------------------

    def confidence(self, image, *, mask=None, rgb=None, chunk_size=None) -> np.ndarray:
        """How clearly each pixel belongs to its cluster: a float32 image in 0..1.

        With ``d1`` and ``d2`` the Euclidean distances, in the model's feature space (raw
        values, CIELAB, or the recipe's standardised feature channels), from the pixel to the
        nearest centre of its label and to the nearest centre of any other label, the
        confidence is ``(d2 - d1) / (d2 + d1)``: 1 on a centre, 0 half-way between two labels
        (and where two labels' centres coincide), 1 everywhere for a one-label model. Masked
        and invalid pixels are NaN. The recipe's clean-up (majority, minimum size) is not
        applied: this describes the nearest-centre assignment. Only leaf centres count (after
        a split, a pixel's sub-clusters compete with every other label's centres).

        Parameters
        ----------
        image : ndarray
            As for :meth:`predict` (use :func:`napari_kmeans.lazy.confidence_lazy` for dask).
        mask, rgb, chunk_size
            As for :meth:`predict`.

        Returns
        -------
        (spatial shape) ndarray of float32
        """
        if blocks.is_dask(image) or blocks.is_dask(mask):
            raise TypeError(
                "confidence takes arrays in memory; for dask arrays use "
                "napari_kmeans.lazy.confidence_lazy(model, image)."
            )
        chunk_size = ft.check_chunk_size(chunk_size)
        image = ft.as_image(image)
        spec = self.check_image(image, rgb=rgb)
        prep = ft.prepare(image, spec, mask)
        if self.recipe is not None and not self.recipe.is_plain:
            feats, _ = recipe_features(self.recipe, prep)
            conf = self.feature_model().confidence_pixels(
                feats.pixels, feats.valid, feats.dtype, chunk_size=chunk_size
            )
        else:
            conf = self.confidence_pixels(
                prep.pixels, prep.valid, prep.dtype, chunk_size=chunk_size
            )
        return conf.reshape(prep.spatial_shape)

    def confidence_pixels(self, pixels, valid, dtype, *, chunk_size=None) -> np.ndarray:
        """The kernel of :meth:`confidence` on laid-out pixels ``(n, n_channels)``: ``(n,)``
        float32, NaN where ``valid`` is False. Pixels that compress get it through a look-up
        table over the codes present; others in chunks (temporaries ``(chunk, m)``)."""
        codec = codec_for(pixels.dtype, pixels.shape[1])
        if codec is not None:
            codes = codec.encode(pixels)
            distinct = present_codes(codes, valid, codec.n_codes)
            lut = np.full(codec.n_codes, np.nan, np.float32)
            lut[distinct] = self._confidence_rows(codec.decode(distinct), dtype, chunk_size)
            return lookup(lut, codes, valid, fill=np.nan)
        out = np.full(pixels.shape[0], np.nan, np.float32)
        if valid is None:
            out[:] = self._confidence_rows(pixels, dtype, chunk_size)
        else:
            out[valid] = self._confidence_rows(pixels[valid], dtype, chunk_size)
        return out

    def _confidence_rows(self, values, dtype, chunk_size=None) -> np.ndarray:
        """``(d2 - d1) / (d2 + d1)`` of pixel values ``(n, n_channels)``, chunk by chunk."""
        parent = self.parents
        leaves = np.flatnonzero(~np.isin(np.arange(parent.size), parent))
        lab = self.labels_of_centers[leaves]
        order = np.argsort(lab, kind="stable")
        leaves, lab = leaves[order], lab[order]
        starts = np.flatnonzero(np.diff(lab, prepend=-1))
        centers = self.centers[leaves].astype(np.float64)
        out = np.ones(values.shape[0], np.float32)  # one label: 1 everywhere
        if starts.size < 2:
            return out
        chunk = min(ft.check_chunk_size(chunk_size) or CHUNK, 1 << 16)
        for s in range(0, values.shape[0], chunk):
            feats = ft.to_features(values[s : s + chunk], self.spec, dtype, self.centers)
            per_label = np.minimum.reduceat(np.sqrt(_all_sq_dist(feats, centers)), starts, axis=1)
            two = np.partition(per_label, 1, axis=1)[:, :2]
            total = two[:, 0] + two[:, 1]
            ratio = (two[:, 1] - two[:, 0]) / np.where(total > 0, total, 1.0)
            out[s : s + chunk] = np.where(total > 0, ratio, 0.0)
        return out

    def recolor(self, image, labels, *, rgb=None, threads=1) -> np.ndarray:
        """``image`` with every labelled pixel painted with its cluster's colour.

        Pixels with label 0 keep their value, and so does the alpha channel of an RGBA image. The
        result has the shape and dtype of ``image`` (a CIELAB model paints an image of another
        dtype in that dtype's range, see :meth:`colors_for`). ``rgb`` declares the image's layout, as for
        :meth:`check_image`. ``threads`` paint chunks of an in-memory image side by side (the
        same result).
        """
        if blocks.is_dask(image) or blocks.is_dask(labels):
            return blocks.recolor_blocks(self, image, labels, rgb=rgb)
        dtype = np.asarray(image).dtype  # the result keeps it, byte order included
        image = ft.as_image(image)
        spec = self.check_image(image, rgb=rgb)
        labels = np.asarray(labels)
        if labels.dtype.kind not in "biu":
            raise TypeError(f"labels must be integers, got dtype {labels.dtype}.")
        if labels.size and (labels.min() < 0 or labels.max() > self.n_clusters):
            raise ValueError(
                f"labels must be in 0..{self.n_clusters} for this model, found values "
                f"{int(labels.min())}..{int(labels.max())}; labels painted beyond k have no "
                "colour here (napari_kmeans.edit.recount gives them one)."
            )
        palette = ft.cast_colors(self.colors_for(dtype), dtype)
        palette = np.concatenate([np.zeros_like(palette[:1]), palette])
        if spec.channel_axis is None:
            if labels.shape != image.shape:
                raise ValueError(f"labels shape {labels.shape} != image shape {image.shape}.")
            out = _take_rows(palette[:, 0], labels, threads)
            keep = labels == 0
            if keep.any():
                out[keep] = image[keep]
            return out
        moved = np.moveaxis(image, spec.channel_axis, -1)
        if labels.shape != moved.shape[:-1]:
            raise ValueError(
                f"labels shape {labels.shape} != the image's spatial shape {moved.shape[:-1]}."
            )
        out = _take_rows(palette, labels, threads)
        if moved.shape[-1] == 4 and spec.rgb:
            out = np.concatenate([out, moved[..., 3:]], axis=-1)
        keep = labels == 0
        if keep.any():
            out[keep] = moved[keep]
        return np.ascontiguousarray(np.moveaxis(out, -1, spec.channel_axis))

    # -- serialisation --------------------------------------------------------------------------

    def to_dict(self) -> dict:
        """A JSON-safe dict that :meth:`from_dict` turns back into an equal model."""
        return {
            "format": FORMAT,
            "version": 1,
            "package_version": __version__,
            "n_clusters": self.n_clusters,
            "centers": self.centers.astype(np.float64).tolist(),
            "colors": self.colors.astype(np.float64).tolist(),
            "channel_axis": self.spec.channel_axis,
            "rgb": self.spec.rgb,
            "color_space": self.spec.color_space,
            "n_channels": self.spec.n_channels,
            "dtype": self.dtype,
            "seed": self.seed,
            "center_labels": self.labels_of_centers.tolist(),
            "parent": self.parents.tolist(),
            **({"version": 2, "recipe": self.recipe.to_dict()} if self.uses_recipe else {}),
            **self._seeds_dict(),
        }

    def _seeds_dict(self) -> dict:
        """The version 3 fields: seed means, whether pinned (and version 3 for absent labels)."""
        out = {}
        if self.seed_means is not None:
            out = {"seed_means": self.seed_means.astype(np.float64).tolist(), "pinned": self.pinned}
        if out or self.present_labels.size < self.n_clusters:
            out["version"] = 3
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_json(cls, text: str) -> KMeansModel:
        """Rebuild a model from :meth:`to_json` text; raises ValueError for anything else."""
        if isinstance(text, bytes | bytearray):
            text = bytes(text).decode("utf-8", errors="replace")
        if not isinstance(text, str):
            raise TypeError(f"from_json takes the JSON text (str), got {type(text).__name__}.")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"not a napari-kmeans model file: invalid JSON ({err}).") from None
        except (RecursionError, ValueError) as err:  # nesting too deep; integers of 4300+ digits
            raise ValueError(
                f"not a napari-kmeans model file: the JSON is nested too deeply or holds "
                f"numbers too long to read ({type(err).__name__})."
            ) from None
        return cls.from_dict(data)

    @classmethod
    def load(cls, path, *, max_bytes: int = MAX_FILE_BYTES) -> KMeansModel:
        """Read and validate a model file written by :meth:`save` (or ``to_json``).

        At most ``max_bytes`` are read, whatever the file is (``/dev/zero``, or a FIFO whose
        writer never stops), and nothing in the file is ever executed. Opening a FIFO waits for a
        writer, as ``open`` does: the CLI and the widget refuse files that are not regular files
        before calling this.

        Raises
        ------
        OSError
            If the file cannot be opened or read.
        ValueError
            If it is larger than ``max_bytes``, not UTF-8, or not a valid model.
        """
        path = Path(path)
        with open(path, "rb") as fh:
            raw = fh.read(max_bytes + 1)
        if len(raw) > max_bytes:
            raise ValueError(
                f"'{path.name}' is larger than {max_bytes // (1024 * 1024)} MB: not a model file "
                "(a model of 64 clusters is a few kB); choose a *_model.json written by napari-kmeans."
            )
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(
                f"'{path.name}' is not a text (UTF-8) file: choose a *_model.json written by "
                "napari-kmeans."
            ) from None
        return cls.from_json(text)

    def save(self, path, *, overwrite: bool = False) -> None:
        """Write the model to ``path`` as JSON (UTF-8); :meth:`load` reads it back.

        An existing file is replaced only with ``overwrite=True``.

        Raises
        ------
        FileExistsError
            If ``path`` exists and ``overwrite`` is False.
        OSError
            If the file cannot be written.
        """
        if not isinstance(overwrite, bool):
            raise TypeError(
                f"overwrite must be True or False, got {overwrite!r} ({type(overwrite).__name__})."
            )
        path = Path(path)
        text = self.to_json() + "\n"
        try:
            with open(path, "w" if overwrite else "x", encoding="utf-8") as fh:
                fh.write(text)
        except FileExistsError:
            raise FileExistsError(
                f"'{path}' already exists; pass overwrite=True to replace it, or choose another "
                "path."
            ) from None

    @classmethod
    def from_dict(cls, data) -> KMeansModel:
        """Rebuild a model from :meth:`to_dict` output, checking every field.

        Raises
        ------
        ValueError
            If the dict is not a model of this format, is from a newer format version, or has
            missing, inconsistent or non-finite fields.
        """
        return _model_from_dict(cls, data)


def _take_rows(palette, labels, threads=1):
    """``palette[labels]`` in chunks: np.take converts its index to intp, so bound that copy."""
    flat = labels.reshape(-1)
    out = np.empty((flat.size, *palette.shape[1:]), palette.dtype)
    step = CHUNK // 4  # np.take's intp copy of the index: 8 MB

    def paint(s):
        np.take(palette, flat[s : s + step], axis=0, out=out[s : s + step])

    for _ in map_ordered(paint, range(0, flat.size, step), threads):
        pass
    return out.reshape(*labels.shape, *palette.shape[1:])


WIDE_ROWS = 5  # features from which lloyd.assign converts its points slice by slice
LABEL_ROWS = 1 << 16  # pixels per chunk of label_pixels (up to four channels)


def _nearest(feats, centers):
    """Index of the nearest of ``centers`` for each feature row (ties: first centre)."""
    if feats.shape[1] == 1:
        if centers.shape[0] > 1 and np.all(np.diff(centers[:, 0]) > 0):
            return assign_1d(feats[:, 0], thresholds(centers[:, 0]))
        order = np.argsort(centers[:, 0], kind="stable")
        return order[assign_1d(feats[:, 0], thresholds(centers[order, 0]))]
    return assign(feats, centers)[0]


def _all_sq_dist(feats, centers):
    """Squared distances ``(n, m)`` of feature rows to every centre, one centre at a time."""
    out = np.empty((feats.shape[0], centers.shape[0]))
    for j, c in enumerate(centers):
        diff = feats - c
        out[:, j] = np.einsum("ij,ij->i", diff, diff)
    return out


def _sq_dist(feats, centers, idx):
    diff = feats.astype(np.float64) - centers[idx].astype(np.float64)
    return np.einsum("ij,ij->i", diff, diff)


def _check_tree(centers, colors, center_labels, parent, bad):
    """Validate the centre-to-label map and the split hierarchy of a model dict."""
    m, k = centers.shape[0], colors.shape[0]
    if center_labels is None and parent is None:
        if m != k:
            raise bad(f"{m} centers but {k} colors.")
        return None, None
    try:
        labels = np.array(center_labels if center_labels is not None else range(1, m + 1))
        parent = np.array(parent if parent is not None else [-1] * m)
    except (TypeError, ValueError):
        raise bad("'center_labels' and 'parent' must be lists of integers.") from None
    if (
        labels.shape != (m,)
        or parent.shape != (m,)
        or labels.dtype.kind not in "iu"
        or (parent.dtype.kind not in "iu")
    ):
        raise bad(f"'center_labels' and 'parent' must be {m} integers each.")
    if np.any(parent >= np.arange(m)) or np.any(parent < -1):
        raise bad("'parent' must give, for each centre, -1 or the index of an earlier centre.")
    leaves = ~np.isin(np.arange(m), parent)
    if labels.min() < 1 or labels.max() > k or labels[leaves].max() != k:
        raise bad(
            f"'center_labels' must map the leaf centres onto labels in 1..{k}, {k} included "
            "(every label up to it may have centres; labels matched to an earlier model may not)."
        )
    check_size(k, m, split_depth(parent), bad)
    return labels.astype(np.int64), parent.astype(np.int64)


def center_depths(parent) -> np.ndarray:
    """Each centre's level: 0 for top-level centres, 1 + its parent's for sub-centres."""
    parent = np.asarray(parent)
    depth = np.zeros(parent.size, np.int64)
    for i in np.flatnonzero(parent >= 0):  # parents come before their sub-centres
        depth[i] = depth[parent[i]] + 1
    return depth


def split_depth(parent) -> int:
    """Levels of sub-centres below the top-level centres (0 for a flat or merged model)."""
    return int(center_depths(parent).max(initial=0))


def check_size(n_labels, n_centers, depth, error=ValueError, what="this model has"):
    """Raise ``error(message)`` when a model exceeds ``MAX_LABELS``, ``MAX_CENTERS`` or
    ``MAX_DEPTH``: beyond them loading and applying it would take unbounded time."""
    for found, limit, name in (
        (n_labels, MAX_LABELS, "labels"),
        (n_centers, MAX_CENTERS, "centres"),
    ):
        if found > limit:
            raise error(f"{what} {found} {name}, more than the {limit} allowed.")
    if depth > MAX_DEPTH:
        raise error(
            f"{what} a split depth of {depth}, more than the {MAX_DEPTH} allowed (splits of "
            "splits); merge sub-clusters back or fit again with more clusters."
        )


def _numbers(value) -> np.ndarray:
    """A (nested) list of JSON numbers as float64; strings, booleans and nulls are refused."""
    arr = np.array(value)
    rows = value if isinstance(value, list) else []
    if any(isinstance(x, bool) for row in rows for x in (row if isinstance(row, list) else [row])):
        arr = np.array(True)
    if arr.dtype.kind not in "iuf":
        found = {"b": "true/false", "U": "str", "S": "str", "O": "mixed or ragged lists"}
        raise TypeError(f"found {found.get(arr.dtype.kind, arr.dtype)}")
    return arr.astype(np.float64)


def _model_from_dict(cls, data):
    def bad(msg):
        return ValueError(f"malformed napari-kmeans model: {msg}")

    if not isinstance(data, dict):
        raise bad(f"expected a JSON object (dict), got {type(data).__name__}.")
    if data.get("format") != FORMAT:
        raise bad(f"'format' is {data.get('format')!r}, expected {FORMAT!r}.")
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise bad(f"'version' must be an integer, got {version!r}.")
    if version < 1:
        raise bad(f"'version' must be 1 or more, got {version}.")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"this model file has format version {version}, newer than the {FORMAT_VERSION} this "
            f"napari-kmeans ({__version__}) reads; upgrade napari-kmeans to load it."
        )
    missing = [
        key
        for key in (
            "centers",
            "colors",
            "channel_axis",
            "rgb",
            "color_space",
            "n_channels",
            "dtype",
        )
        if key not in data
    ]
    if missing:
        raise bad(f"missing field(s) {', '.join(missing)}.")
    try:
        centers, colors = _numbers(data["centers"]), _numbers(data["colors"])
    except (TypeError, ValueError) as err:
        raise bad(f"'centers' and 'colors' must be lists of lists of numbers ({err}).") from None
    if centers.ndim != 2 or centers.shape[0] < 1 or colors.ndim != 2:
        raise bad(f"'centers' must be a non-empty k x d table, got shape {centers.shape}.")
    if not (np.isfinite(centers).all() and np.isfinite(colors).all()):
        raise bad("'centers' and 'colors' must be finite numbers.")
    check_size(colors.shape[0], centers.shape[0], 0, bad, "the model has")
    if "n_clusters" in data and data["n_clusters"] != colors.shape[0]:
        raise bad(f"'n_clusters' is {data['n_clusters']} but there are {colors.shape[0]} colors.")
    center_labels, parent = _check_tree(
        centers, colors, data.get("center_labels"), data.get("parent"), bad
    )
    color_space = data["color_space"]
    if color_space not in ft.COLOR_SPACES:
        raise bad(f"'color_space' must be one of {ft.COLOR_SPACES}, got {color_space!r}.")
    rgb, axis, n_channels = data["rgb"], data["channel_axis"], data["n_channels"]
    if not isinstance(rgb, bool):
        raise bad(f"'rgb' must be true or false, got {rgb!r}.")
    if axis is not None and (not isinstance(axis, int) or isinstance(axis, bool) or axis >= 0):
        raise bad(f"'channel_axis' must be null or a negative integer, got {axis!r}.")
    if not isinstance(n_channels, int) or isinstance(n_channels, bool) or n_channels < 1:
        raise bad(f"'n_channels' must be a positive integer, got {n_channels!r}.")
    if colors.shape[1] != n_channels:
        raise bad(f"'n_channels' {n_channels!r} does not match colors of width {colors.shape[1]}.")
    try:
        recipe = Recipe.from_dict(data.get("recipe")) if version >= 2 else None
    except ValueError as err:
        raise bad(str(err)) from None
    n_features = 3 if color_space == "lab" else n_channels
    if recipe is not None and recipe.derives:
        n_features = recipe.standardiser.mean.size
    if centers.shape[1] != n_features:
        raise bad(f"centers have {centers.shape[1]} features, expected {n_features}.")
    if (axis is None and (rgb or n_channels != 1)) or (rgb and n_channels != 3):
        raise bad("'channel_axis', 'rgb' and 'n_channels' are inconsistent.")
    try:
        if not isinstance(data["dtype"], str):
            raise TypeError
        dtype = np.dtype(data["dtype"])
    except TypeError:
        raise bad(f"'dtype' {data['dtype']!r} is not a numpy dtype name.") from None
    if dtype.kind not in "biuf":
        raise bad(f"'dtype' must be a boolean, integer or float dtype, got {dtype}.")
    seed = data.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise bad(f"'seed' must be an integer, got {seed!r}.")
    if seed < 0:
        raise bad(f"'seed' must be an integer >= 0, got {seed!r}.")
    seed_means, pinned = _seeds_from_dict(data, version, centers.shape[1], colors.shape[0], bad)
    spec = ft.FeatureSpec(axis, rgb, color_space, n_channels)
    flat = center_labels is None or (
        np.array_equal(center_labels, np.arange(1, centers.shape[0] + 1)) and np.all(parent < 0)
    )
    if flat:
        center_labels = parent = None
    elif np.all(parent < 0):  # renumbered labels (match_to) without sub-centres
        parent = None
    return cls(
        centers, colors, spec, dtype.name, seed, center_labels, parent, recipe, seed_means, pinned
    )


def _seeds_from_dict(data, version, n_features, k, bad):
    """``(seed_means, pinned)`` of a model dict (version 3), checked."""
    if version < 3 or data.get("seed_means") is None:
        return None, False
    try:
        means = _numbers(data["seed_means"])
    except (TypeError, ValueError) as err:
        raise bad(f"'seed_means' must be a list of lists of numbers ({err}).") from None
    if means.ndim != 2 or means.shape[1] != n_features or not 1 <= means.shape[0] <= k:
        raise bad(
            f"'seed_means' must be an m x {n_features} table with 1 <= m <= {k}, got shape "
            f"{means.shape}."
        )
    if not np.isfinite(means).all():
        raise bad("'seed_means' must be finite numbers.")
    pinned = data.get("pinned", False)
    if not isinstance(pinned, bool):
        raise bad(f"'pinned' must be true or false, got {pinned!r}.")
    return means, pinned
