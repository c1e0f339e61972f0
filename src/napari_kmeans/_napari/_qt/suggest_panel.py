"""The "Suggest k" group: the inertia curve for k = 2..K, plotted with its elbow.

The curve is computed in a worker (:func:`~napari_kmeans._napari.workers.run_curve`, on the
compressed pixels; for lazy data on the level Run fits on, or on a regular subsample) with
progress and Cancel, and drawn with matplotlib's Qt canvas. Clicking a point of the curve, or
choosing a k in the list next to it, sets the widget's number of clusters.
"""

from __future__ import annotations

import threading

import numpy as np
from magicgui import widgets
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error
from qtpy.QtWidgets import QVBoxLayout, QWidget

from ..inputs import curve_planes
from ..jobs import Curve, InputError
from ..workers import run_curve

TIPS = {
    "group": "How much of the image's variation k clusters explain, for k = 2 up to a maximum; "
    "the suggested k is the elbow, where adding clusters stops paying off.",
    "k_max": "Largest k of the curve (the curve starts at k = 2).",
    "suggest": "Compute the curve for the image chosen above (with its extra channels, mask, "
    "scope, colour space and seed) in the background, then set k to the elbow.",
    "cancel": "Stop computing the curve; k is unchanged.",
    "choice": "Set k to one of the computed points (or click a point of the curve).",
    "plot": "Share of the image's variation the clusters explain (100% minus the within-cluster "
    "sum of squares over the total) against k; the ring marks the elbow, the filled dot the k "
    "chosen. Click a point to set k.",
}


def theme_colors(viewer) -> tuple[str, str]:
    """(text, background) colours of the viewer's napari theme, for the plot."""
    from napari.utils.theme import get_theme

    theme = get_theme(viewer.theme)
    return theme.text.as_hex(), theme.background.as_hex()


class ElbowPlot(QWidget):
    """The curve on a matplotlib canvas; ``on_pick(k)`` is called when a point is clicked."""

    def __init__(self, on_pick, colors=("#f0f1f2", "#262930"), parent=None):
        super().__init__(parent)
        self._on_pick = on_pick
        self.figure = Figure(figsize=(3.2, 2.2), layout="constrained")
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setToolTip(TIPS["plot"])
        self.canvas.setMinimumHeight(170)
        self.axes = self.figure.add_subplot()
        self.curve = self.elbow_marker = self.chosen_marker = None
        self.ks = np.array([], int)
        self.canvas.mpl_connect("pick_event", self._picked)
        QVBoxLayout(self).addWidget(self.canvas)
        self.layout().setContentsMargins(0, 0, 0, 0)
        self.set_colors(colors)

    def set_colors(self, colors) -> None:
        """Follow a theme: ``(text, background)`` colours."""
        self._fg, bg = colors
        self.figure.set_facecolor(bg)
        self.axes.set_facecolor(bg)
        self._style()
        self.canvas.draw_idle()

    def _style(self) -> None:
        ax, fg = self.axes, self._fg
        ax.xaxis.label.set_color(fg)
        ax.yaxis.label.set_color(fg)
        ax.tick_params(colors=fg, labelsize=8)
        for spine in ax.spines.values():
            spine.set_color(fg)
        legend = ax.get_legend()
        if legend is not None:
            for text in legend.get_texts():
                text.set_color(fg)

    def show_curve(self, ks, values, k_elbow: int) -> None:
        """Plot ``values`` (the share explained, 0..1) against ``ks``, ringing ``k_elbow``."""
        ax = self.axes
        ax.clear()
        self.ks = np.asarray(ks)
        values = 100 * np.asarray(values, dtype=float)
        (self.curve,) = ax.plot(ks, values, "o-", color="#5aa0e6", ms=5, picker=True,
                                pickradius=6)  # fmt: skip
        i = int(np.flatnonzero(self.ks == k_elbow)[0])
        (self.elbow_marker,) = ax.plot([k_elbow], [values[i]], "o", ms=13, mfc="none",
                                       mec="#e6a23c", mew=2, label=f"elbow: k = {k_elbow}")  # fmt: skip
        (self.chosen_marker,) = ax.plot([k_elbow], [values[i]], "o", ms=7, color="#e6a23c")
        ax.set_xlabel("clusters (k)")
        ax.set_ylabel("variation explained (%)")
        ax.set_xticks(ks if len(ks) <= 12 else ks[:: int(np.ceil(len(ks) / 12))])
        ax.legend(fontsize=8, frameon=False, loc="lower right")
        self._style()
        self.canvas.draw_idle()

    def mark(self, k: int) -> None:
        """Move the filled dot onto point ``k`` (hidden when ``k`` is not on the curve)."""
        if self.curve is None:
            return
        if k not in self.ks:
            self.chosen_marker.set_visible(False)
        else:
            i = int(np.flatnonzero(self.ks == k)[0])
            self.chosen_marker.set_data([k], [self.curve.get_ydata()[i]])
            self.chosen_marker.set_visible(True)
        self.canvas.draw_idle()

    def _picked(self, event) -> None:
        if event.artist is not self.curve or not len(event.ind):
            return
        x, y = event.mouseevent.x, event.mouseevent.y
        pts = self.axes.transData.transform(self.curve.get_xydata()[event.ind])
        nearest = event.ind[int(np.argmin(np.hypot(pts[:, 0] - x, pts[:, 1] - y)))]
        self._on_pick(int(self.ks[nearest]))


class SuggestPanel:
    """The "Choose k" tab of the widget: K, the buttons, the plot and the k list."""

    def __init__(self, host):
        self.host = host
        self.worker = None
        self._filling = False
        self.k_max = widgets.SpinBox(label="up to k", value=10, min=3, max=64)
        self.suggest = widgets.PushButton(text="Suggest k")
        self.cancel = widgets.PushButton(text="Cancel", enabled=False)
        self._stop = threading.Event()
        self._closed = False
        self.choice = widgets.ComboBox(label="use k", choices=())
        self.status = widgets.Label(value="")
        for name in ("k_max", "suggest", "cancel", "choice"):
            getattr(self, name).tooltip = TIPS[name]
        viewer = host._viewer
        self.plot = ElbowPlot(self.pick, theme_colors(viewer))
        self.plot.setVisible(False)
        viewer.events.theme.connect(self._theme_changed)
        self.suggest.changed.connect(self.start)
        self.cancel.changed.connect(self.stop)
        self.choice.changed.connect(self._chosen)
        host.controls.n_clusters.changed.connect(self._k_typed)
        buttons = widgets.Container(widgets=[self.suggest, self.cancel], layout="horizontal")
        self._box = widgets.Container(widgets=[self.k_max, buttons])
        self._pick = widgets.Container(widgets=[self.choice, self.status])
        self.group = QWidget()
        self.group.setToolTip(TIPS["group"])
        layout = QVBoxLayout(self.group)
        layout.setContentsMargins(0, 0, 0, 0)
        for part in (self._box.native, self.plot, self._pick.native):
            layout.addWidget(part)
        self.group.destroyed.connect(self._closing)  # the viewer closed: drop the result
        self.status.native.setWordWrap(True)

    def _theme_changed(self, *_) -> None:
        if not self._closed:
            self.plot.set_colors(theme_colors(self.host._viewer))

    def _k_typed(self, k) -> None:
        """k typed in the spin box: the dot and the list follow (when k is on the curve)."""
        if self._closed or self._filling:
            return
        self.plot.mark(int(k))
        if k in self.choice.choices and self.choice.value != k:
            self._filling = True
            self.choice.value = int(k)
            self._filling = False

    def start(self, *_) -> None:
        """Compute the curve of the image chosen in the widget, in a worker."""
        if self.worker is not None:
            return
        host, c = self.host, self.host.controls
        try:
            planes = curve_planes(
                host._viewer, c.image.value, host.params(), extras=tuple(c.extra_channels.value),
                mask=c.mask.value, current_slice=host.current_slice(),
            )  # fmt: skip
        except (InputError, ValueError, TypeError) as err:  # a setting the engine refuses
            self._say(f"Not computed: {err}", error=True)
            return
        self._stop = threading.Event()
        worker = create_worker(
            run_curve, planes, host.params(), int(self.k_max.value), stop=self._stop,
            _start_thread=False,
        )  # fmt: skip
        worker.yielded.connect(self._progressed)
        worker.returned.connect(self._done)
        worker.finished.connect(self._finished)
        self.worker = worker
        self.suggest.enabled, self.cancel.enabled = False, True
        self._say("Computing how much k clusters explain…")
        worker.start()

    def stop(self, *_) -> None:
        """Cancel the curve in flight (its computation too)."""
        if self.worker is not None:
            self._stop.set()
            self.worker.quit()
            if not self._closed:
                self._say("Cancelled: k is unchanged.")

    def _closing(self, *_) -> None:
        self._closed = True
        self.stop()

    def _progressed(self, step) -> None:
        if not self._closed and self.worker is not None and not self.worker.abort_requested:
            self._say(f"Computing how much k clusters explain… {step.fraction:.0%}")

    def _finished(self) -> None:
        self.worker = None
        if not self._closed:
            self.suggest.enabled, self.cancel.enabled = True, False

    def _done(self, curve: Curve) -> None:
        if self._closed or self._stop.is_set():
            return
        if curve.error:
            self._say(f"Not computed: {curve.error}", error=True)
            return
        self.plot.setVisible(True)
        self.plot.show_curve(curve.ks, curve.explained, curve.elbow)
        self._filling = True
        self.choice.choices = [(f"{k}", int(k)) for k in curve.ks]
        self._filling = False
        self.pick(curve.elbow)
        i = int(np.flatnonzero(curve.ks == curve.elbow)[0])
        self._say(
            f"Suggested k = {curve.elbow}: {curve.explained[i]:.0%} of the variation explained. "
            "k is set to it; click a point to choose another."
        )

    def pick(self, k: int) -> None:
        """Set the widget's k (and the list and the plot's dot) to ``k``."""
        self.host.controls.n_clusters.value = k
        self.plot.mark(k)
        if self.choice.value != k and k in self.choice.choices:
            self._filling = True
            self.choice.value = k
            self._filling = False

    def _chosen(self, k) -> None:
        if not self._filling and k is not None:
            self.pick(int(k))

    def _say(self, text: str, error: bool = False) -> None:
        self.status.value = text
        if error:
            show_error(text)
