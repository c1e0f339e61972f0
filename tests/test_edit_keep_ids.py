"""Merge and split keeping label numbers (engine): absent IDs, painted labels, recipe models."""

import numpy as np
import pytest

from napari_kmeans import KMeansModel, segment
from napari_kmeans.edit import merge, split


@pytest.fixture
def five():
    """Five grey bands, 10 x 20 uint8, segmented in 5 clusters 1..5 dark to bright."""
    rng = np.random.default_rng(0)
    image = np.repeat(np.array([10, 60, 120, 180, 240], np.uint8), 40).reshape(10, 20)
    image = (image.astype(int) + rng.integers(-3, 4, image.shape)).clip(0, 255).astype(np.uint8)
    r = segment(image, 5)
    assert np.unique(r.labels).tolist() == [1, 2, 3, 4, 5]
    return image, r


def test_merging_the_largest_label_keeping_ids_moves_no_painted_label(five):
    _, r = five
    painted = r.labels.astype(np.uint32)
    painted[0, :3] = 7  # painted by hand beyond k
    painted[1, :2] = 100_000_000  # an instance id of another tool
    model, labels = merge(r.model, painted, [4, 5], keep_ids=True)
    assert model.present_labels.tolist() == [1, 2, 3, 4]
    assert (labels[0, :3] == 7).all()  # was 6: "no other label moves"
    assert (labels[1, :2] == 100_000_000).all()


def test_renumbering_edits_on_a_model_with_absent_ids_give_1_to_k(five):
    """Unticked 'keep label numbers' after a keep_ids merge: labels 1..k, dark to bright."""
    image, r = five
    model, labels = merge(r.model, r.labels, [2, 3], keep_ids=True)  # 3 is absent
    merged, merged_labels = merge(model, labels, [4, 5])
    assert np.unique(merged_labels).tolist() == [1, 2, 3]
    assert merged.n_clusters == 3 and merged.present_labels.tolist() == [1, 2, 3]
    np.testing.assert_array_equal(merged.predict(image), merged_labels)
    assert np.all(np.diff(merged.colors.ravel()) > 0)
    parts, part_labels = split(model, image, labels, 4, 2, seed=0)
    assert np.unique(part_labels).tolist() == [1, 2, 3, 4, 5]
    assert parts.n_clusters == 5 and parts.present_labels.tolist() == [1, 2, 3, 4, 5]
    np.testing.assert_array_equal(parts.predict(image), part_labels)
    assert np.all(np.diff(parts.colors.ravel()) > 0)


@pytest.mark.parametrize("keep_ids", [True, False])
def test_an_absent_label_cannot_be_split_or_merged(five, keep_ids):
    image, r = five
    model, labels = merge(r.model, r.labels, [2, 3], keep_ids=True)  # 3 is absent
    with pytest.raises(ValueError, match="3 is absent"):
        split(model, image, labels, 3, 2, keep_ids=keep_ids)  # was: zero-size array ...
    with pytest.raises(ValueError, match="3 is absent"):
        merge(model, labels, [3, 4], keep_ids=keep_ids)  # was: 4 silently renamed 3


def test_split_of_a_recipe_model_keeping_ids_gives_the_darkest_part_the_label():
    yy, xx = np.mgrid[:64, :64]
    image = np.zeros((64, 64), np.uint8)
    image[:, :32] = np.where(((xx[:, :32] // 2) + (yy[:, :32] // 2)) % 2, 80, 0)
    image[:, 32:] = 120
    image[:8] = 250
    r = segment(image, 2, features="texture", seed=0)
    target = int(r.labels[20, 5])
    model, labels = split(r.model, image, r.labels, target, 2, keep_ids=True)
    new = model.present_labels[model.present_labels > r.model.n_clusters]
    assert new.size == 1
    # "a split's darkest part keeps the label": in source colours, not in feature space
    assert model.colors[target - 1, 0] < model.colors[new[0] - 1, 0]
    np.testing.assert_array_equal(model.predict(image), labels)
    again = KMeansModel.from_dict(model.to_dict())
    np.testing.assert_array_equal(again.predict(image), labels)


def test_an_absent_label_painted_by_hand_can_still_be_merged(five):
    """Painting with a number merged away, then merging it into a cluster, as before."""
    _, r = five
    model, labels = merge(r.model, r.labels, [2, 3], keep_ids=True)  # 3 is absent
    painted = labels.copy()
    painted[0, :4] = 3
    for keep_ids in (True, False):
        _, merged = merge(model, painted, [1, 3], keep_ids=keep_ids)
        assert (merged[0, :4] == merged[r.labels == 1][0]).all()
