"""Pyramid levels in the widget: the recipe at a level's scale, the preview following
the zoom (under Xvfb)."""

from __future__ import annotations

import numpy as np

from napari_kmeans import segment
from napari_kmeans._napari.inputs import build_job
from napari_kmeans._napari.outputs import KEY
from napari_kmeans._napari.workers import params_at_level
from napari_kmeans.params import Params

LABELS = "{} k-means labels"


def test_a_level_previewed_on_a_rolled_view_uses_the_sliced_level_s_factors(viewer, bands):
    """A 3-D pyramid (every axis halved) seen in the z-x plane (y sliced): the slice on screen
    is downsampled by 2 on both its axes, so the recipe's sigma is halved on both."""
    volume = bands((16, 64, 128))[0]
    source = viewer.add_image([volume, volume[::2, ::2, ::2]], name="vol", multiscale=True)
    viewer.dims.order = (1, 0, 2)  # show z and x, slice y
    assert tuple(viewer.dims.displayed) == (0, 2)
    job, _ = build_job(viewer, source, Params(n_clusters=3, smoothing=4.0), current_slice=True,
                       level=1, preview=True)  # fmt: skip
    assert job.full.spatial_shape == (8, 64)
    assert job.factors == (2.0, 2.0)  # was (8, 2): the factors of the y-x plane
    assert params_at_level(job.params, job.factors).recipe.smoothing == 2.0


def test_preview_follows_the_zoom_of_an_image_opened_before_the_widget(
    make_napari_viewer, qtbot, bands
):
    """The usual order: open the image, then the plugin (the image picker starts on it)."""
    viewer = make_napari_viewer(show=True)
    image = bands((4096, 3840))[0]
    pyramid = [image, image[::4, ::4], image[::16, ::16]]
    source = viewer.add_image(pyramid, name="pyr", multiscale=True)
    _, widget = viewer.window.add_plugin_dock_widget("napari-kmeans", "K-means segmentation")
    c = widget.controls
    assert c.image.value is source
    c.n_clusters.value = 3
    viewer.reset_view()
    qtbot.waitUntil(lambda: source.data_level > 0, timeout=10_000)
    c.live_preview.value = True
    qtbot.waitUntil(lambda: LABELS.format("pyr") in viewer.layers, timeout=10_000)
    qtbot.waitUntil(lambda: widget.worker is None, timeout=10_000)
    layer = viewer.layers[LABELS.format("pyr")]
    assert layer.metadata[KEY]["parameters"]["level"] > 0
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    camera.zoom *= 32  # napari now shows the full resolution
    qtbot.waitUntil(lambda: source.data_level == 0, timeout=10_000)
    qtbot.waitUntil(
        lambda: widget.worker is None and layer.metadata[KEY]["parameters"].get("level", 0) == 0,
        timeout=20_000,
    )
    np.testing.assert_array_equal(layer.data, segment(image, 3).labels)


def test_a_preview_at_a_level_keeps_the_full_resolution_recipe_in_its_model(
    viewer, tmp_path, bands, run_to_end
):
    """widget.md: 'the model keeps the full-resolution recipe' - also for a preview at a coarse
    level, whose model Save model and Apply to image take from the preview layer."""
    from napari_kmeans._napari.workers import run_segment

    rng = np.random.default_rng(3)
    image = (bands((256, 240))[0] + rng.normal(0, 30, (256, 240))).clip(0, 255).astype(np.uint8)
    source = viewer.add_image([image, image[::4, ::4]], name="pyr", multiscale=True)
    params = Params(n_clusters=3, smoothing=8.0, spatial_weight=0.5)
    job, _ = build_job(viewer, source, params, current_slice=True, level=1, preview=True)
    outcome = run_to_end(run_segment(job))
    assert outcome.error is None
    # the level itself is labelled at its scale (sigma 2 in its pixels)
    at_level = segment(image[::4, ::4], 3, smoothing=2.0, spatial_weight=0.5).labels
    assert (outcome.labels == at_level).mean() > 0.99
    recipe = outcome.model.recipe
    assert recipe.smoothing == 8.0  # was 2.0: a saved or applied preview model was off by 4
    full = outcome.model.predict(image)
    assert (full[::4, ::4] == outcome.labels).mean() > 0.97


def test_fit_on_a_slice_of_a_rolled_view_is_not_taken_for_a_pyramid_level(
    viewer, bands, run_to_end
):
    """A plain 3-D volume seen in the z-x plane, fitted on the slice on screen: full
    resolution, so the recipe must not be rescaled (the slice's axes are z and x, not y and x)."""
    from napari_kmeans._napari.inputs import fit_on_slice_job
    from napari_kmeans._napari.workers import run_segment

    rng = np.random.default_rng(4)
    volume = (bands((16, 64, 128))[0] + rng.normal(0, 20, (16, 64, 128))).clip(0, 255)
    volume = volume.astype(np.uint8)
    source = viewer.add_image(volume, name="vol")
    viewer.dims.order = (1, 0, 2)  # show z and x, slice y
    viewer.dims.set_point(1, 10)
    params = Params(n_clusters=3, smoothing=2.0, features=(("gaussian", 1.0), ("gradient", 1.0)))
    job, _ = fit_on_slice_job(viewer, source, params)
    outcome = run_to_end(run_segment(job))
    assert outcome.error is None
    plane = volume[:, 10, :]
    direct = segment(plane, 3, smoothing=2.0, features=params.features).model
    got = outcome.model.recipe.standardiser
    np.testing.assert_allclose(got.mean, direct.recipe.standardiser.mean, rtol=1e-4)
    np.testing.assert_allclose(got.std, direct.recipe.standardiser.std, rtol=1e-4)  # was x 2
    np.testing.assert_allclose(outcome.model.centers, direct.centers, rtol=1e-3, atol=1e-3)


def test_fit_on_a_slice_with_a_spatial_weight_is_refused_clearly(viewer, bands):
    """Positions of a slice cannot describe the other slices: the run failed at labelling with
    'the recipe was fitted on 3 features, but this image gives 4: apply the model to images
    with the same channels' (no model was applied, and the channels are the same)."""
    import pytest

    from napari_kmeans._napari.inputs import fit_on_slice_job
    from napari_kmeans._napari.jobs import InputError

    source = viewer.add_image(bands((6, 40, 60))[0], name="stack")
    params = Params(n_clusters=3, spatial_weight=0.5)
    with pytest.raises(InputError, match="spatial weight"):
        fit_on_slice_job(viewer, source, params)
