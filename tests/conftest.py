"""Fixtures for the napari tests: a real viewer (napari's make_napari_viewer), the widget docked
through the manifest, notifications as they reach napari, and a fit that waits to be released."""

from __future__ import annotations

import threading

import pytest

WIDGET = "K-means segmentation"


@pytest.fixture
def viewer(make_napari_viewer):
    return make_napari_viewer()


@pytest.fixture
def widget(viewer):
    _, widget = viewer.window.add_plugin_dock_widget("napari-kmeans", WIDGET)
    return widget


@pytest.fixture
def docked():
    """``docked(window)``: name -> widget docked in the window. ``Window.dock_widgets`` is public
    only in recent napari; older ones keep the dock wrappers in ``_dock_widgets``."""

    def get(window):
        if hasattr(window, "dock_widgets"):
            return dict(window.dock_widgets)
        return {name: dock.widget() for name, dock in window._dock_widgets.items()}

    return get


@pytest.fixture
def napari_app(request, make_napari_viewer):
    """napari's app-model Application (menus, commands) as make_napari_viewer sets it up: napari's
    pytest plugin names that fixture ``mock_app_model`` (napari >= 0.6) or ``mock_app`` (0.5)."""
    for name in ("mock_app_model", "mock_app"):
        try:
            return request.getfixturevalue(name)
        except pytest.FixtureLookupError:
            continue
    raise LookupError("napari's pytest plugin has neither mock_app_model nor mock_app")


@pytest.fixture
def notes():
    """Notifications (message, severity) dispatched to napari while the test runs."""
    from napari.utils.notifications import notification_manager

    seen = []

    def record(notification):
        seen.append((str(notification.message), str(notification.severity)))

    notification_manager.notification_ready.connect(record)
    yield seen
    notification_manager.notification_ready.disconnect(record)


@pytest.fixture
def held_fit(monkeypatch):
    """Make the engine step (fit, or the whole in-memory segment) block until the returned Event
    is set (set again at teardown)."""
    from napari_kmeans._napari import workers

    release = threading.Event()
    started = threading.Event()

    def holding(real):
        def held(*args, **kwargs):
            started.set()
            release.wait(30)
            return real(*args, **kwargs)

        return held

    monkeypatch.setattr(workers, "fit_model", holding(workers.fit_model))
    monkeypatch.setattr(workers, "fit_planes", holding(workers.fit_planes))
    release.started = started
    yield release
    release.set()


@pytest.fixture
def run_and_wait(qtbot):
    """Click Run on a widget and wait until its worker has finished (result handled)."""

    def go(widget, timeout=30_000):
        widget.controls.run.native.click()
        qtbot.waitUntil(lambda: widget.worker is None, timeout=timeout)

    return go


@pytest.fixture
def click(request, qtbot):
    """Click a magicgui button, then wait until the worker it may have started (a run, an
    edit) has finished, on the test's widget when it has one."""
    host = request.getfixturevalue("widget") if "widget" in request.fixturenames else None

    def go(button, timeout=30_000):
        button.native.click()
        if host is not None:
            qtbot.waitUntil(lambda: host.worker is None, timeout=timeout)

    return go


def _bands(shape=(96, 96), levels=(20, 120, 220), seed=0):
    """Three bands of known values with a little noise, and their classes: ``(image, truth)``
    (uint8, bands across the last axis): clusters with a known truth."""
    import numpy as np

    rng = np.random.default_rng(seed)
    truth = np.zeros(shape, np.uint8)
    third = shape[-1] // 3
    truth[..., third:] = 1
    truth[..., 2 * third :] = 2
    image = np.asarray(levels, np.float64)[truth] + rng.normal(0, 4, shape)
    return np.clip(image, 0, 255).astype(np.uint8), truth


@pytest.fixture
def bands():
    """``bands(shape=(96, 96), levels=(20, 120, 220), seed=0)``: a synthetic ``(image, truth)``
    of three bands (the preview and pyramid tests)."""
    return _bands


def _run_to_end(generator):
    """Run a worker generator to its end, as the worker thread would; its result."""
    try:
        while True:
            next(generator)
    except StopIteration as stop:
        return stop.value


@pytest.fixture
def run_to_end():
    """``run_to_end(generator)``: a worker generator run to its end, its returned value (the
    worker and lazy-job tests)."""
    return _run_to_end
