"""Live preview: what is on screen is segmented again a moment after any change.

A change (a setting, the layers chosen, a stroke on the seeds or mask layer, the slice shown)
bumps a generation number and restarts a short timer; when it fires, the widget's worker
segments the slice on screen (:func:`..inputs.for_preview`). A preview still in flight when a
newer change arrives is cancelled, and a result whose generation is not the latest is dropped,
so a stale preview never overwrites a newer one. Runs and edits take precedence: a preview
waits for them and follows once they end.
"""

from __future__ import annotations

import time

from qtpy.QtCore import QTimer

from .. import inputs
from ..jobs import InputError, Kept, failure

DELAY_MS = 80  # quiet time after the last change before a preview starts (after the first)

# the controls whose change calls for a new preview
WATCHED = (
    "image", "n_clusters", "color_space", "extra_channels", "mask", "preset", "smoothing",
    "filters", "spatial_weight", "majority", "min_region", "seed", "n_init", "max_iter", "tol",
    "seeds", "pin_seeds", "keep_ids", "background", "confidence",
)  # fmt: skip
# layer pickers (and strokes on the seeds and mask layers): napari's and the form's own handlers
# of their change run first, so a preview they call for starts from the event loop, not inside
# their signal
PICKERS = ("image", "extra_channels", "mask", "seeds")
# settings whose change the widget completes in a handler of its own (connected after the
# preview's): the features preset sets a smoothing; previewed from the event loop too
COMPLETED = ("preset",)


class LivePreview:
    """The live preview of a :class:`~._qt.widget.KMeansWidget` (``host``)."""

    def __init__(self, host):
        self.host = host
        self.generation = 0  # bumped by every change
        self.shown = -1  # the generation of the last preview shown
        self.closed = False
        self._painted = []  # (layer, event name, handler): strokes and new data watched
        self._slice = None  # the slice of the last change seen
        self._zoomed = None  # the multiscale image whose level on screen is followed
        self._level = None  # the level it showed at the last change seen
        self._last = 0.0  # time of the last change
        self.kept = Kept()  # the last preview's laid-out pixels, for the next preview
        self.timer = QTimer()
        self.timer.setSingleShot(True)
        self.timer.setInterval(DELAY_MS)
        self.timer.timeout.connect(self.start)
        c = host.controls
        c.live_preview.changed.connect(self._toggled)
        for name in WATCHED:
            soon = name in PICKERS or name in COMPLETED
            getattr(c, name).changed.connect(self.changed_soon if soon else self.changed)
        for name in ("mask", "seeds", "image", "extra_channels"):
            getattr(c, name).changed.connect(self._watch_painting)
        c.image.changed.connect(self._watch_level)
        host._viewer.layers.events.removed.connect(self._removed)
        dims = host._viewer.dims.events
        dims.current_step.connect(self._step)
        dims.ndisplay.connect(self.changed)

    @property
    def on(self) -> bool:
        """The live preview is ticked (and the widget still there)."""
        if self.closed:
            return False
        try:
            return bool(self.host.controls.live_preview.value)
        except RuntimeError:  # the widget's Qt objects are gone (the viewer closed)
            self.close()
            return False

    def changed(self, *_) -> None:
        """Something that changes the segmentation changed: preview again after a short pause."""
        self._changed(at_once=True)

    def changed_soon(self, *_) -> None:
        """As :meth:`changed`, a first change starting from the event loop (not in its signal)."""
        self._changed(at_once=False)

    def _changed(self, at_once: bool) -> None:
        if self.host.publishing:
            return  # the widget writing its own output layers is not a change
        self.generation += 1
        if not self.on:
            return
        now = time.monotonic()
        idle = not self.timer.isActive() and not self.host.previewing()
        quiet, self._last = now - self._last > DELAY_MS / 1000, now
        # a change after a quiet spell starts at once (not behind the repaints Qt has queued);
        # changes in quick succession (a spin box held down, a brush stroke) wait for a pause of
        # DELAY_MS
        if idle and quiet and at_once:
            self.start()
        else:
            self.timer.start(0 if idle and quiet else DELAY_MS)

    def caught_up(self) -> None:
        """A run starts with the settings of now: it shows every change made so far."""
        self.shown = self.generation
        self.timer.stop()

    def resume(self) -> None:
        """A run, an edit or a preview ended: preview again if a change came meanwhile."""
        if self.on and self.shown != self.generation and not self.timer.isActive():
            self.timer.start()

    def start(self) -> None:
        """Segment what is on screen now (cancelling a stale preview first)."""
        host = self.host
        if not self.on or host.busy():
            return  # a run or an edit is in flight: resume() follows when it ends
        if host.previewing():
            host.stop_flight()  # stale: its end calls resume(), which starts the new one
            return
        c = host.controls
        source = c.image.value
        if source is None:
            return
        try:
            plan = inputs.for_preview(
                host._viewer, source, host.params(), **host.run_inputs(), **host.reuse(),
                kept=self.kept,
            )  # fmt: skip
        except (InputError, ValueError, TypeError) as err:  # a setting the engine refuses
            self.shown = self.generation
            host._say(f"Preview not run: {err}")
            return
        except Exception as err:  # never raised inside the control's signal: it would stop
            self.shown = self.generation  # the control's own handlers after this one
            host._say(f"Preview not run: {failure(err)}")
            return
        host._start(*plan, done=self._done, preview=self.generation)

    def _done(self, outcome, info) -> None:
        self.host._show(outcome, info)

    def close(self) -> None:
        """The widget is going away: no new preview, the one in flight is stopped."""
        self.closed = True
        self.timer.stop()
        self.kept.clear()

    def _toggled(self, value) -> None:
        if value:
            if self.shown == self.generation and self._run_shows_it():
                return  # no setting changed since that Run: a preview would only replace it
            self.changed()
        else:
            self.timer.stop()
            self.kept.clear()
            if self.host.previewing():
                self.host.stop_flight()

    def _run_shows_it(self) -> bool:
        """A Run's result (done, or in flight) is of the scope a preview would show now."""
        host = self.host
        source = host.controls.image.value
        try:
            sliced = source is not None and bool(inputs.slice_index(host._viewer, source))
        except InputError:
            return False
        if host.busy():
            info = host._run.info
            return info.source is source and bool(getattr(info, "slice_index", None)) == sliced
        made = host.session.previous(source)
        return made is not None and not made.preview and made.sliced == sliced

    def _step(self, *_) -> None:
        """The slider moved: preview again only if the slice of the chosen image changed."""
        source = self.host.controls.image.value
        try:
            key = None if source is None else inputs.slice_index(self.host._viewer, source)
        except InputError:
            key = "outside"
        if key != self._slice:
            self._slice = key
            self.changed()

    def _watch_level(self, *_) -> None:
        """Follow the level a multiscale image shows (napari picks it as the view zooms)."""
        if self._zoomed is not None:
            self._zoomed.events.set_data.disconnect(self._zoom)
        source = self.host.controls.image.value
        self._zoomed = source if getattr(source, "multiscale", False) else None
        if self._zoomed is not None:
            self._level = source.data_level
            source.events.set_data.connect(self._zoom)

    def _zoom(self, *_) -> None:
        """The image was redrawn: preview again only if it now shows another level."""
        level = self._zoomed.data_level
        if level != self._level:
            self._level = level
            self.changed_soon()

    def _removed(self, event) -> None:
        """A layer left the viewer: stop watching it (and so keep no removed image alive)."""
        gone = event.value
        self.kept.clear()  # it may hold the pixels of the layer that left
        if gone is self._zoomed:
            gone.events.set_data.disconnect(self._zoom)
            self._zoomed = None
        for layer, name, handler in self._painted:
            emitter = getattr(layer.events, name, None) if layer is gone else None
            if emitter is not None:
                emitter.disconnect(handler)
        self._painted = [watched for watched in self._painted if watched[0] is not gone]

    def _watch_painting(self, *_) -> None:
        """Follow strokes on the seeds and mask layers (painting, filling, erasing) and new
        data given to the image and extra channel layers."""
        for layer, name, handler in self._painted:
            emitter = getattr(layer.events, name, None)
            if emitter is not None:
                emitter.disconnect(handler)
        c = self.host.controls
        drawn = [layer for layer in (c.mask.value, c.seeds.value) if layer is not None]
        fed = [c.image.value, *(c.extra_channels.value or ())]
        self._painted = [(layer, name, self.changed_soon) for layer in drawn
                         for name in ("paint", "data")]  # fmt: skip
        self._painted += [(layer, "data", self._new_data) for layer in fed if layer is not None]
        for layer, name, handler in self._painted:
            emitter = getattr(layer.events, name, None)
            if emitter is not None:
                emitter.connect(handler)

    def _new_data(self, *_) -> None:
        """An input layer was given new data: forget the old pixels kept (even when equal,
        they are another array, which nothing else may hold any more) and preview again."""
        self.kept.clear()
        self.changed_soon()
