"""The glue's rules without a display: jobs, workers, outputs, edits and the session object on a
``ViewerModel`` (napari's viewer without Qt), driving the worker generators by hand."""

from __future__ import annotations

import numpy as np
import pytest
from napari.components import ViewerModel

from napari_kmeans import segment
from napari_kmeans._napari import editing, inputs, outputs, workers
from napari_kmeans._napari.jobs import InputError, Params
from napari_kmeans._napari.session import Session


@pytest.fixture
def run(run_to_end):
    """``run(viewer, session, source, k)``: a run of k clusters published as the widget does;
    ``(made, how)``."""

    def run_k(viewer, session, source, k):
        job, info = inputs.build_job(viewer, source, Params(n_clusters=k))
        outcome = run_to_end(workers.run_segment(job))
        previous = session.previous(source)
        made, how = outputs.publish(viewer, outcome, info, previous)
        session.record(made, replaces=previous)
        return made, how

    return run_k


@pytest.fixture
def scene():
    viewer = ViewerModel()
    image = np.random.default_rng(0).integers(0, 256, (20, 24), dtype=np.uint8)
    return viewer, Session(), viewer.add_image(image, name="img"), image


def test_runs_update_in_place_until_touched(scene, run):
    viewer, session, source, image = scene
    first, how = run(viewer, session, source, 3)
    assert how == "added" and session.previous(source) is first
    np.testing.assert_array_equal(first.labels.data, segment(image, 3).labels)
    again, how = run(viewer, session, source, 4)
    assert how == "updated" and again.labels is first.labels
    first.labels.name = "keep me"
    third, how = run(viewer, session, source, 2)
    assert how == "edited" and third.labels is not first.labels
    assert first.labels.metadata["kmeans"]["n_clusters"] == 4  # the kept result is untouched
    assert session.runs == [third]
    viewer.layers.remove(third.labels)
    session.forget(third.labels)
    assert session.previous(source) is None


def test_undo_takes_back_an_edit_only_while_nothing_changed(scene, run, run_to_end):
    viewer, session, source, _ = scene
    made, _ = run(viewer, session, source, 3)
    target = editing.resolve(viewer, made.labels, session.runs)
    job = editing.merge_job(target, [1, 2])
    edited = run_to_end(workers.run_edit(job))
    assert edited.error is None and edited.model.n_clusters == 2
    session.push(editing.commit(job, edited, viewer))
    merged = made.labels.data.copy()
    made.labels.data = np.where(merged == 1, 2, merged).astype(merged.dtype)  # painting
    with pytest.raises(InputError, match=r"painted .or changed. after the last edit"):
        session.undo(viewer)
    assert session.can_undo  # still there, and nothing changed
    made.labels.data = merged
    session.undo(viewer)
    assert not session.can_undo and made.labels.metadata["kmeans"]["n_clusters"] == 3
    with pytest.raises(InputError, match="no edit to undo"):
        session.undo(viewer)


def test_undo_refuses_after_a_rerun_in_place(scene, run, run_to_end):
    """A re-run updates untouched labels in place: the edit Undo must not bring the old run back."""
    import dataclasses

    viewer, session, source, _ = scene
    made, _ = run(viewer, session, source, 3)
    target = editing.resolve(viewer, made.labels, session.runs)
    job = editing.update_job(target)
    edited = run_to_end(workers.run_edit(job))
    recoloured = dataclasses.replace(edited.model, colors=edited.model.colors + 1.0)
    snap = editing.commit(job, dataclasses.replace(edited, model=recoloured), viewer)
    assert snap is not None  # the colours changed, the labels did not
    session.push(snap)
    again, how = run(viewer, session, source, 4)
    assert how == "updated" and again.labels is made.labels
    with pytest.raises(InputError, match="re-run since the last edit"):
        session.undo(viewer)
    assert made.labels.metadata["kmeans"]["n_clusters"] == 4  # the re-run stays
