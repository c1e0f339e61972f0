"""Editing a segmentation: recount after painting, merge, split, instances."""

import numpy as np
import pytest
from skimage.measure import label as sk_label

from napari_kmeans import KMeansModel, segment
from napari_kmeans.edit import instances, label_stats, merge, recount, split


@pytest.fixture
def rgb_image():
    """Four flat colour patches with a little noise, 40 x 40 RGB uint8."""
    rng = np.random.default_rng(0)
    colors = np.array([[20, 20, 20], [200, 30, 30], [30, 200, 30], [240, 240, 240]])
    idx = np.repeat(np.repeat(np.arange(4).reshape(2, 2), 20, 0), 20, 1)
    img = colors[idx] + rng.integers(-5, 6, (40, 40, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def test_label_stats_after_painting(rgb_image):
    r = segment(rgb_image, 4)
    painted = r.labels.copy()
    painted[:5, :5] = 4  # paint a dark corner with the brightest label
    colors, counts = label_stats(rgb_image, painted, r.model)
    assert counts.tolist() == np.bincount(painted.ravel(), minlength=5)[1:].tolist()
    sel = painted == 4
    np.testing.assert_allclose(colors[3], rgb_image[sel].mean(axis=0))
    new = recount(rgb_image, painted, r.model)
    np.testing.assert_allclose(new.colors, colors)
    assert np.array_equal(new.centers, r.model.centers)  # the clustering itself is unchanged


def test_merge_keeps_labels_ordered_contiguous_and_model_consistent(rgb_image):
    r = segment(rgb_image, 4)
    model, labels = merge(r.model, r.labels, [2, 3])
    assert set(np.unique(labels)) == {1, 2, 3}
    assert model.n_clusters == 3
    merged = (r.labels == 2) | (r.labels == 3)
    assert np.unique(labels[merged]).size == 1  # both became one cluster
    counts = r.counts[[1, 2]]
    expected = (r.centers[[1, 2]] * counts[:, None]).sum(0) / counts.sum()
    np.testing.assert_allclose(model.colors[labels[merged][0] - 1], expected)
    lum = model.colors @ [0.2126, 0.7152, 0.0722]
    assert np.all(np.diff(lum) > 0)  # still dark to bright
    assert np.array_equal(model.predict(rgb_image), labels)
    again = KMeansModel.from_dict(model.to_dict())
    assert np.array_equal(again.predict(rgb_image), labels)


def test_merge_errors(rgb_image):
    r = segment(rgb_image, 4)
    with pytest.raises(ValueError, match="at least two"):
        merge(r.model, r.labels, [2, 2])
    with pytest.raises(
        ValueError, match=r"clusters to merge: label 7 is not a cluster of this model"
    ):
        merge(r.model, r.labels, [1, 7])


def test_split_only_changes_target_pixels_and_model_reproduces(rgb_image):
    r = segment(rgb_image, 2)
    target = int(r.labels[0, 0])
    model, labels = split(r.model, rgb_image, r.labels, target, 2)
    assert model.n_clusters == 3
    untouched = r.labels != target
    # pixels outside the target keep their cluster (renumbered consistently)
    assert np.unique(labels[untouched]).size == np.unique(r.labels[untouched]).size
    inside = r.labels == target
    sub = segment(rgb_image, 2, mask=inside)
    # the split of the target equals k-means restricted to its pixels
    pairs = set(zip(sub.labels[inside].tolist(), labels[inside].tolist(), strict=True))
    assert len(pairs) == 2
    assert np.array_equal(model.predict(rgb_image), labels)
    assert np.array_equal(KMeansModel.from_json(model.to_json()).predict(rgb_image), labels)


def test_split_of_a_merged_cluster_then_merge_back(rgb_image):
    r = segment(rgb_image, 4)
    m1, l1 = merge(r.model, r.labels, [1, 2])
    m2, l2 = split(m1, rgb_image, l1, int(l1[0, 0]), 2)
    assert m2.n_clusters == 4
    assert np.array_equal(m2.predict(rgb_image), l2)
    # the split recovers the original two clusters
    for a in np.unique(r.labels):
        assert np.unique(l2[r.labels == a]).size == 1


def test_split_gray_exact():
    img = np.repeat(np.array([0, 10, 100, 110, 250], dtype=np.uint8), 3)
    r = segment(img, 2)
    model, labels = split(r.model, img, r.labels, 1, 2)
    assert labels.tolist() == [1] * 6 + [2] * 6 + [3] * 3
    np.testing.assert_allclose(model.colors.ravel(), [5, 105, 250])
    assert np.array_equal(model.predict(img), labels)


def test_split_errors(rgb_image):
    r = segment(rgb_image, 4)
    with pytest.raises(ValueError, match="at least 2"):
        split(r.model, rgb_image, r.labels, 1, 1)
    two = np.arange(100, dtype=np.uint8).reshape(10, 10) // 50  # values 0 and 1
    rf = segment(two, 2)
    with pytest.raises(ValueError, match="single distinct value"):
        split(rf.model, two, rf.labels, 1, 2)


@pytest.mark.parametrize("ndim", [2, 3])
def test_instances_match_skimage(ndim):
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, (12,) * ndim)
    inst, cluster_of = instances(labels, min_size=1)
    expected = sum(sk_label(labels == c).max() for c in (1, 2))
    assert inst.max() == expected == cluster_of.size
    for i, c in enumerate(cluster_of, start=1):
        assert np.all(labels[inst == i] == c)
    # minimum size drops small components
    inst5, _ = instances(labels, [1], min_size=5)
    comp = sk_label(labels == 1)
    sizes = np.bincount(comp.ravel())[1:]
    assert inst5.max() == np.count_nonzero(sizes >= 5)


def test_instances_errors():
    with pytest.raises(TypeError, match="integers"):
        instances(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="min_size"):
        instances(np.zeros((3, 3), int), min_size=0)


def test_edited_model_dict_validation(rgb_image):
    r = segment(rgb_image, 4)
    model, _ = merge(r.model, r.labels, [1, 2])
    d = model.to_dict()
    d["parent"] = [0] * len(d["parent"])
    with pytest.raises(ValueError, match="earlier centre"):
        KMeansModel.from_dict(d)
    d = model.to_dict()
    d["center_labels"] = [1] * len(d["center_labels"])
    with pytest.raises(ValueError, match="every label"):
        KMeansModel.from_dict(d)


def test_merge_shifts_labels_painted_beyond_k():
    image = np.array([0, 10, 100, 110, 250, 250], np.uint8)
    r = segment(image, 3)
    painted = r.labels.copy()
    painted[-1] = 7  # a label painted by hand, with no centre
    _, labels = merge(r.model, painted, [1, 2])
    assert labels.tolist() == [1, 1, 1, 1, 2, 6]  # 7 moves down with the merged cluster


def test_split_keeps_labels_painted_beyond_k_apart():
    image = np.array([0, 10, 100, 110, 250, 250], np.uint8)
    r = segment(image, 2)  # [1, 1, 1, 1, 2, 2]
    painted = r.labels.copy()
    painted[-1] = 5  # painted by hand, no centre
    _, labels = split(r.model, image, painted, 1, 2)
    # cluster 1 became 1 and 2, cluster 2 became 3; the painted 5 moves up by one with them
    assert labels.tolist() == [1, 1, 2, 2, 3, 6]


# -- keep_ids: an edit renumbers nothing but what it changes (issue 13) --------------------------


def test_merge_keeping_ids_moves_no_other_label():
    image = np.array([0, 10, 100, 110, 180, 190, 250, 250, 250], np.uint8)
    r = segment(image, 4)  # [1, 1, 2, 2, 3, 3, 4, 4, 4]
    painted = r.labels.copy()
    painted[-1] = 7  # a label painted by hand, with no centre
    model, labels = merge(r.model, painted, [3, 2], keep_ids=True)
    assert labels.tolist() == [1, 1, 2, 2, 2, 2, 4, 4, 7]  # 3 joins 2, no other value moves
    assert model.n_clusters == 4 and model.present_labels.tolist() == [1, 2, 4]
    np.testing.assert_array_equal(model.colors[[0, 3]], r.model.colors[[0, 3]])
    np.testing.assert_allclose(model.colors[1], [145.0])  # the merged pixels' mean
    np.testing.assert_array_equal(model.predict(image), [1, 1, 2, 2, 2, 2, 4, 4, 4])
    # the top label merged away is simply absent
    model, labels = merge(r.model, r.labels, [3, 4], keep_ids=True)
    assert labels.tolist() == [1, 1, 2, 2, 3, 3, 3, 3, 3]
    assert model.present_labels.tolist() == [1, 2, 3]
    np.testing.assert_array_equal(model.predict(image), labels)
    again = KMeansModel.from_dict(model.to_dict())  # what the widget keeps in the metadata
    np.testing.assert_array_equal(again.predict(image), labels)


def test_split_keeping_ids_gives_new_ids_above_the_largest():
    image = np.array([0, 10, 100, 110, 250, 250], np.uint8)
    r = segment(image, 2)  # [1, 1, 1, 1, 2, 2]
    painted = r.labels.copy()
    painted[-1] = 5  # painted by hand, no centre
    model, labels = split(r.model, image, painted, 1, 2, keep_ids=True)
    # the darker part keeps 1, the brighter part is new: 3; 2 stays; the painted 5 makes room
    assert labels.tolist() == [1, 1, 3, 3, 2, 6]
    assert model.n_clusters == 3
    np.testing.assert_allclose(model.colors.ravel(), [5.0, 250.0, 105.0])
    np.testing.assert_array_equal(model.predict(image), [1, 1, 3, 3, 2, 2])


def test_edits_keeping_ids_follow_a_model_with_absent_ids():
    from napari_kmeans.matching import match_model

    image = np.array([0, 10, 100, 110, 250, 250], np.uint8)
    old = segment(image, 3).model
    new = match_model(segment(np.array([0, 250], np.uint8), 2).model, old)  # IDs 1 and 3
    labels = new.predict(image)
    assert sorted(set(labels.tolist())) == [1, 3]
    model, split_labels = split(new, image, labels, 1, 2, keep_ids=True)
    assert split_labels.tolist() == [1, 1, 4, 4, 3, 3]  # 2 stays absent, 3 stays 3
    assert model.present_labels.tolist() == [1, 3, 4]
    np.testing.assert_array_equal(model.predict(image), split_labels)
    model, merged = merge(model, split_labels, [1, 4], keep_ids=True)
    assert merged.tolist() == [1, 1, 1, 1, 3, 3]
    np.testing.assert_array_equal(model.predict(image), merged)


# -- label values far beyond k (issue 8, item 17) -------------------------------------------------


def _peak_bytes(fn, *args, **kwargs):
    """Peak memory numpy allocates while ``fn`` runs (numpy reports to tracemalloc)."""
    import tracemalloc

    tracemalloc.start()
    try:
        out = fn(*args, **kwargs)
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.fixture
def huge_ids():
    """Four gray values in 3 clusters, with instance ids of another tool painted in."""
    image = np.array([[0, 10, 100], [110, 250, 250]], np.uint8)
    r = segment(image, 3)  # [[1, 1, 2], [2, 3, 3]]
    painted = r.labels.astype(np.int64)
    painted[1, 2] = 10**9
    painted[0, 1] = 2**31 - 1
    return image, r, painted


def test_merge_with_huge_label_values_works_through_the_distinct_values(huge_ids):
    _, r, painted = huge_ids
    (model, labels), peak = _peak_bytes(merge, r.model, painted, [2, 3])
    assert peak < 10 * 2**20  # a table by label value would need gigabytes
    # clusters 2 and 3 become 2; painted labels beyond k move down by one, as small ones do
    assert labels.tolist() == [[1, 2**31 - 2, 2], [2, 2, 10**9 - 1]]
    assert labels.dtype == np.uint32 and model.n_clusters == 2


def test_split_with_huge_label_values(huge_ids):
    image, r, painted = huge_ids
    (_, labels), peak = _peak_bytes(split, r.model, image, painted, 2, 2)
    assert peak < 10 * 2**20
    assert labels.tolist() == [[1, 2**31, 2], [3, 4, 10**9 + 1]]


def test_recount_and_label_stats_with_huge_label_values(huge_ids):
    image, r, painted = huge_ids
    new, peak = _peak_bytes(recount, image, painted, r.model)
    assert peak < 10 * 2**20
    np.testing.assert_allclose(new.colors.ravel(), [0.0, 105.0, 250.0])
    (ids, colors, counts), peak = _peak_bytes(label_stats, image, painted, r.model, sparse=True)
    assert peak < 10 * 2**20
    assert ids.tolist() == [1, 2, 3, 10**9, 2**31 - 1]
    assert counts.tolist() == [1, 2, 1, 1, 1]
    np.testing.assert_allclose(colors.ravel(), [0.0, 105.0, 250.0, 250.0, 10.0])
    with pytest.raises(ValueError, match=r"up to 2147483647.*sparse=True.*relabel_sequential"):
        label_stats(image, painted, r.model)


def test_sparse_label_stats_match_the_dense_table(rgb_image):
    r = segment(rgb_image, 4)
    painted = r.labels.astype(np.uint16)
    painted[:3, :3] = 9
    painted[5, 5] = 0
    dense_colors, dense_counts = label_stats(rgb_image, painted, r.model)
    ids, colors, counts = label_stats(rgb_image, painted, r.model, sparse=True)
    assert ids.tolist() == [1, 2, 3, 4, 9]
    np.testing.assert_allclose(colors, dense_colors[ids - 1])
    np.testing.assert_array_equal(counts, dense_counts[ids - 1])
    assert dense_counts[4:8].tolist() == [0, 0, 0, 0]


@pytest.mark.parametrize(
    ("labels", "error", "match"),
    [
        (
            np.array([[1.0, 2.0, 2.0], [3.0, 3.0, 1.0]]),
            TypeError,
            r"labels must be integers, "
            r"got dtype float64.*astype",
        ),
        (
            np.array([[1, -2, 2], [3, 3, 1]]),
            ValueError,
            r"labels must be 0 or positive, found "
            r"-2.*negative",
        ),
    ],
)
def test_edits_refuse_float_and_negative_labels(labels, error, match):
    image = np.array([[0, 10, 100], [110, 250, 250]], np.uint8)
    model = segment(image, 3).model
    with pytest.raises(error, match=match):
        merge(model, labels, [1, 2])
    with pytest.raises(error, match=match):
        recount(image, labels, model)
    with pytest.raises(error, match=match):
        label_stats(image, labels, model)
    with pytest.raises(error, match=match):
        split(model, image, labels, 1)


@pytest.mark.parametrize(
    ("targets", "match"),
    [
        ([1.5, 2], r"clusters to merge must be integers, got 1\.5"),
        ("12", r"clusters to merge must be a list of integers, got '12'"),
        ([True, 2], r"clusters to merge must be integers, got True"),
        ([None, 2], r"clusters to merge must be integers, got None"),
    ],
)
def test_merge_refuses_targets_that_are_not_integers(rgb_image, targets, match):
    """int(1.5) used to merge cluster 1, and "12" clusters 1 and 2."""
    r = segment(rgb_image, 4)
    with pytest.raises(TypeError, match=match):
        merge(r.model, r.labels, targets)
    model, _ = merge(r.model, r.labels, [np.int64(1), 2])
    assert model.n_clusters == 3


# -- splits stay within the model-file limits (issue 8, item 18) -----------------------------------


def test_split_refuses_to_go_deeper_than_a_model_file_may():
    depth = 32  # label 2 is refined by a chain of 32 single sub-centres: the deepest allowed
    model = KMeansModel.from_dict({
        "format": "napari-kmeans-model", "version": 1,
        "centers": [[0.0], [205.0]] + [[205.0]] * depth, "colors": [[2.0], [205.0]],
        "channel_axis": None, "rgb": False, "color_space": "rgb", "n_channels": 1,
        "dtype": "uint8", "center_labels": [1, 2] + [2] * depth,
        "parent": [-1, -1] + [1 + i for i in range(depth)],
    })  # fmt: skip
    image = np.array([[0, 4, 6, 200, 210]], np.uint8)
    labels = model.predict(image)
    assert labels.tolist() == [[1, 1, 1, 2, 2]]
    with pytest.raises(ValueError, match=r"splitting cluster 2 into 2 would give a model with "
                       r"a split depth of 33, more than the 32 allowed"):  # fmt: skip
        split(model, image, labels, 2)
    new_model, new_labels = split(model, image, labels, 1)  # depth 1 there: fine
    assert new_labels.tolist() == [[1, 2, 2, 3, 3]]
    assert np.array_equal(new_model.predict(image), new_labels)


def test_split_refuses_more_labels_than_a_model_file_may():
    image = np.arange(1000, dtype=np.uint16)
    r = segment(image, 1000)
    with pytest.raises(ValueError, match=r"would give a model with 1001 labels, more than the "
                       r"1000 allowed"):  # fmt: skip
        split(r.model, np.repeat(image, 2), np.repeat(r.labels, 2), 5)


def test_split_reports_progress_and_can_be_cancelled(rgb_image):
    r = segment(rgb_image, 2)
    calls = []
    _model, labels = split(
        r.model, rgb_image, r.labels, 1, 2, progress=lambda f, s: calls.append((f, s))
    )
    fractions = [f for f, _ in calls]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    same = split(r.model, rgb_image, r.labels, 1, 2)
    np.testing.assert_array_equal(labels, same[1])

    class Stop(Exception):
        pass

    def stop(fraction, step):
        raise Stop(step)

    with pytest.raises(Stop):
        split(r.model, rgb_image, r.labels, 1, 2, progress=stop)
    with pytest.raises(ValueError, match=r"n_init must be at most 1000"):
        split(r.model, rgb_image, r.labels, 1, 2, n_init=10**9)


@pytest.mark.parametrize(
    ("labels", "kwargs", "error", "match"),
    [
        (np.array(3), {}, ValueError, r"labels must have at least one axis, got a scalar"),
        (
            np.ones((3, 3), int),
            {"connectivity": 5},
            ValueError,
            r"connectivity must be 1\.\.2 for 2-D labels \(or None, full connectivity\), got 5",
        ),
        (np.ones((3, 3), int), {"connectivity": 0}, ValueError, r"connectivity must be 1\.\.2"),
        (
            np.ones((3, 3), int),
            {"connectivity": 1.5},
            TypeError,
            r"connectivity must be an integer or None, got 1\.5",
        ),
        (
            np.ones((3, 3), int),
            {"connectivity": "x"},
            TypeError,
            r"connectivity must be an integer",
        ),
        (np.ones((3, 3), int), {"clusters": [1.5]}, TypeError, r"clusters must be integers"),
    ],
)
def test_instances_errors_name_the_parameter(labels, kwargs, error, match):
    with pytest.raises(error, match=match):
        instances(labels, **kwargs)


def test_split_of_a_recipe_model_fits_in_its_feature_space():
    """Issue 12: a split fits sub-clusters on the model's own features (same recipe and scale)."""
    rng = np.random.default_rng(0)
    image = (np.indices((60, 60))[1] // 20 * 80 + rng.normal(0, 30, (60, 60))).astype(np.float32)
    result = segment(image, 2, smoothing=2)
    model, labels = split(result.model, image, result.labels, 2, 2)
    assert model.n_clusters == 3 and set(np.unique(labels)) == {1, 2, 3}
    np.testing.assert_array_equal(model.predict(image), labels)
    assert np.all(np.diff(model.colors[:, 0]) > 0)  # dark to bright by the input's values
    for label in (1, 2, 3):  # colours are the mean input values of each label's pixels
        np.testing.assert_allclose(model.colors[label - 1, 0], image[labels == label].mean(),
                                   rtol=1e-6)  # fmt: skip
