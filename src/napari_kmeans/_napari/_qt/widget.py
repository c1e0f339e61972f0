"""The dock widget: choose a layer and settings, run k-means in a worker, show the result."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from napari.layers import Image, Labels, Shapes
from napari.qt.threading import create_worker
from napari.utils import progress
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtWidgets import QWidget

from .. import inputs, outputs, workers
from ..jobs import InputError, Params, failure, is_lazy, levels
from ..outputs import KEY, Outputs, Style, explained_share, publish
from ..session import Session
from . import form
from .edit_panel import EditPanel
from .preview import LivePreview
from .suggest_panel import SuggestPanel


@dataclass
class _Flight:
    """The run (or edit) in flight: what it was made from, its progress bar, what to do after."""

    info: object
    bar: object
    done: object  # done(result, info), on the main thread
    say: object  # shows status text
    task: bool = False  # an edit: ``done`` reports its own errors
    preview: int | None = None  # a live preview: the generation of the change it shows


def _segmentable(layer) -> bool:
    """An image layer the widget offers to segment (not one of its own outputs)."""
    return isinstance(layer, Image) and KEY not in layer.metadata


def _mask_like(layer) -> bool:
    """A Labels or Shapes layer the widget offers as a mask (cluster masks included)."""
    role = (getattr(layer, "metadata", {}).get(KEY) or {}).get("role")
    return isinstance(layer, Labels | Shapes) and role in (None, "mask")


def _edited(labels) -> bool:
    """The labels were changed by an edit of the Edit tab (merge, split...: IDs renumbered)."""
    return bool((labels.metadata.get(KEY) or {}).get("edits"))


def _seeds_like(layer) -> bool:
    """A Labels layer the widget offers as seeds (not one of its own outputs)."""
    role = (getattr(layer, "metadata", {}).get(KEY) or {}).get("role")
    return isinstance(layer, Labels) and role in (None, "seeds")


def _show(control, applies: bool) -> None:
    """Show ``control`` only when it applies (its ``enabled`` says the same, for the logic)."""
    control.enabled = applies
    control.visible = applies


class KMeansWidget(QWidget):
    """Segment an image layer by k-means of its pixel values (napari dock widget).

    Parameters
    ----------
    napari_viewer : napari.Viewer
        The viewer whose layers are segmented (given by napari through the manifest).
    """

    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        self._viewer = napari_viewer
        self._worker = None
        self._run: _Flight | None = None  # the run (or edit) in flight
        self._stop = threading.Event()  # set to stop the computation of the run in flight
        self._stopped = None  # why the run in flight was stopped, when not by Cancel
        self._queued = None  # a run or an edit waiting for a cancelled preview to end
        self.publishing = False  # output layers are being written (not a change to preview)
        self.session = Session()
        self.controls = c = form.make_controls()
        self.suggest = SuggestPanel(self)
        self.edit = EditPanel(self)
        self.tabs = form.lay_out(c, self, choose_k=self.suggest.group, edit=self.edit.group)
        self._source = None  # the image the choices were last set up for
        self.preview = LivePreview(self)
        self.tabs.currentChanged.connect(self.edit.refresh_if_stale)
        c.image.changed.connect(self._source_changed)
        c.scope.changed.connect(self._source_changed)
        c.extra_channels.changed.connect(self._say_channels)
        c.run.changed.connect(self.run)
        c.cancel.changed.connect(self.cancel)
        c.suggest_k.changed.connect(self._suggest)
        c.preset.changed.connect(self._preset_changed)
        c.show_recolored.changed.connect(self._show_recolored)
        c.new_seeds.changed.connect(self.new_seeds)
        c.run.native.destroyed.connect(self._closing)  # the viewer closed: stop what runs
        events = napari_viewer.layers.events
        for event in (events.inserted, events.removed, events.moved):
            event.connect(self._layers_changed)
        events.removed.connect(self._layer_removed)
        napari_viewer.layers.selection.events.active.connect(self._follow_active)
        napari_viewer.dims.events.ndisplay.connect(self._source_changed)
        self._layers_changed()
        self._follow_active()

    @property
    def worker(self):
        """The worker of the run in flight, or None."""
        return self._worker

    def busy(self) -> bool:
        """A run or an edit (not a preview) is in flight."""
        return self._worker is not None and (self._run is None or self._run.preview is None)

    def previewing(self) -> bool:
        """A live preview is in flight."""
        return self._worker is not None and self._run is not None and self._run.preview is not None

    @property
    def outputs(self) -> list[Outputs]:
        """The output layers of each source's last run."""
        return list(self.session.runs)

    def current_slice(self) -> bool:
        """Whether the scope is the slice on screen."""
        return self.controls.scope.enabled and self.controls.scope.value == form.SLICE

    # -- choices ------------------------------------------------------------------------------

    def _layers_changed(self, event=None) -> None:
        layers = self._viewer.layers
        added = list(layers) if event is None else []
        if event is not None and event.type == "inserted":
            event.value.events.name.connect(self._layers_changed)
            added = [event.value]
        for layer in added:
            if isinstance(layer, Image):  # new data may change its shape
                layer.events.data.connect(self._data_changed)
        c = self.controls
        c.image.choices = [(layer.name, layer) for layer in layers if _segmentable(layer)]
        c.mask.choices = [(layer.name, layer) for layer in layers if _mask_like(layer)]
        c.seeds.choices = [(layer.name, layer) for layer in layers if _seeds_like(layer)]
        self._source_changed()

    def _data_changed(self, event) -> None:
        """New data in an image layer (a script, another plugin): a run reading it is dropped
        (its result would be of the old data); its shape, and so the extra channels and the
        scope offered, may have changed, as for another image chosen."""
        if self.preview.closed or self.publishing:
            return
        layer = event.source
        dropped = (
            f"Dropped: '{layer.name}' was given new data during the run; no layer was changed. "
            "Run again for the new data."
        )
        flight = self._run  # a preview follows new data by itself (a newer one replaces it)
        if flight is not None and flight.preview is None and self._reads(flight.info, layer):
            self._stop.set()
            self._worker.quit()
            self._stopped = dropped
            show_warning(f"'{layer.name}' was given new data during the run; it was dropped.")
        if self._queued is not None and self._reads(self._queued[2], layer):
            self._queued = None  # a run (or edit) waiting behind a preview, read at its click
            self._say(dropped)
            show_warning(f"'{layer.name}' was given new data during the run; it was dropped.")
        if _segmentable(layer):
            self._source_changed()

    def _source_changed(self, *_) -> None:
        c = self.controls
        source = c.image.value
        rgb = source is not None and source.rgb
        chosen = list(c.extra_channels.value)
        kept = [e for e in chosen if e is not source]
        if source is not self._source and self._source is not None and source in chosen:
            kept.append(self._source)  # the source became an extra: the channel set is kept
        shapes = None if source is None else [d.shape for d in levels(source)]
        candidates = [
            layer for layer in self._viewer.layers
            if _segmentable(layer) and layer is not source and not rgb and not layer.rgb
            and [d.shape for d in levels(layer)] == shapes
        ]  # fmt: skip
        if source is self._source:  # new data of another shape: the channels chosen stay (a
            # preview or run names the mismatch), a script may give the extras theirs next
            candidates += [e for e in kept if e not in candidates and e in self._viewer.layers]
        c.extra_channels.choices = [(layer.name, layer) for layer in candidates]
        if source is not self._source:
            if not kept and source is not None and source.blending == "additive":
                # channels of one image, as napari opens them (additive blending): all of them
                kept = [layer for layer in candidates if layer.blending == "additive"]
            c.background.value = "none" if rgb or source is None else "darkest"
            self._source = source
        c.extra_channels.value = [layer for layer in kept if layer in candidates]
        _show(c.color_space, rgb)
        _show(c.extra_channels, not rgb and bool(candidates))
        ndisplay = self._viewer.dims.ndisplay
        _show(c.scope, source is not None and source.ndim > ndisplay)
        if not c.scope.enabled:
            c.scope.value = form.WHOLE
        _show(c.fit_on, c.scope.enabled and c.scope.value == form.WHOLE)
        if not c.fit_on.enabled:
            c.fit_on.value = form.FIT_ALL
        c.mode.value = inputs.mode_text(source, self.current_slice())
        c.mode.visible = source is not None and is_lazy(source)
        units = [] if source is None else [str(u) for u in getattr(source, "units", ())]
        unit = units[-1] if units and units[-1] not in ("pixel", "") else "px"
        c.smoothing.label = f"smoothing ({unit.replace('micrometer', 'µm')})"
        self._preset_changed()
        self._say_channels()

    def _preset_changed(self, *_) -> None:
        """Show the feature settings that apply; a blur of about two pixels to start with."""
        c = self.controls
        preset = c.preset.value
        _show(c.smoothing, preset != "values")
        _show(c.filters, preset == "custom")
        source = c.image.value
        if preset in ("smoothed", "texture") and c.smoothing.value == 0 and source is not None:
            c.smoothing.value = round(2 * float(min(abs(s) for s in source.scale)), 6)

    def _say_channels(self, *_) -> None:
        """The line under the image: what each pixel is clustered on."""
        c = self.controls
        source = c.image.value
        if source is None:
            text = "Open an image (or File > Open Sample > napari k-means) to segment it."
        elif source.rgb:
            text = f"clustering the colours of {source.name}"
        else:
            names = [source.name, *(e.name for e in c.extra_channels.value)]
            text = "clustering: " + " + ".join(names)
            if len(names) == 1:
                text += " (one channel)"
        c.channels.value = text

    def _follow_active(self, *_) -> None:
        active = self._viewer.layers.selection.active
        c = self.controls
        if not _segmentable(active) or c.image.value is active:
            return
        if active in c.extra_channels.value:
            return  # clicking a channel of the set chosen keeps the set as it is
        c.image.value = active

    def _suggest(self, *_) -> None:
        """'Suggest…' next to k: the Choose k tab, computing the curve."""
        self.tabs.setCurrentIndex(1)
        self.suggest.start()

    def _show_recolored(self, value) -> None:
        made = self.session.previous(self.controls.image.value)
        if made is not None and made.recolored in self._viewer.layers:
            made.recolored.visible = bool(value)

    def style(self) -> Style:
        """How the labels show the clusters, as chosen in the Options tab."""
        return form.read_style(self.controls)

    # -- running ------------------------------------------------------------------------------

    def params(self) -> Params:
        """The clustering settings currently chosen (validated by the engine's Params)."""
        source = self.controls.image.value
        scale = None if source is None else tuple(float(s) for s in source.scale)
        return form.read_params(self.controls, scale)

    def run_inputs(self) -> dict:
        """The extra channels and the mask chosen."""
        c = self.controls
        return {"extras": tuple(c.extra_channels.value), "mask": c.mask.value}

    def reuse(self) -> dict:
        """What a run takes from earlier work and asks for: the seeds layer, the last run's
        model (to keep its label IDs), the confidence image."""
        c = self.controls
        return {
            "seeds": c.seeds.value, "confidence": bool(c.confidence.value),
            "match_to": self._kept_ids() if c.keep_ids.value else None,
        }  # fmt: skip

    def _kept_ids(self):
        """The model of the chosen image's last run, when its labels can be matched to."""
        c = self.controls
        previous = self.session.previous(c.image.value)
        if previous is None or previous.labels not in self._viewer.layers:
            return None
        extras = tuple(c.extra_channels.value)
        model = inputs.model_of(previous.labels, c.image.value, extras, self.params())
        memory = previous.memory
        if model is None or memory is None or _edited(previous.labels):
            return model
        return memory if memory.spec == model.spec else model

    def new_seeds(self, *_) -> None:
        """Add an empty seeds layer aligned with the chosen image, ready to paint label 1."""
        source = self.controls.image.value
        if source is None:
            self._say("Not done: choose an image first, then make its seeds layer.")
            return
        layer = outputs.add_seeds_layer(self._viewer, source)
        self.controls.seeds.value = layer
        self._viewer.layers.selection.active = layer
        layer.mode = "paint"
        self._say(
            f"Paint a few strokes on '{layer.name}': label 1 on one kind of object, label 2 on "
            "another (change the label in the layer controls); then Run, or tick live preview."
        )

    def run(self, *_) -> None:
        """Start a run on the chosen layer (no-op while one is in flight)."""
        if self.busy():
            return
        self.preview.caught_up()  # the run shows every change so far: no preview after it
        c = self.controls
        try:
            plan = inputs.for_run(
                self._viewer, c.image.value, self.params(), **self.run_inputs(), **self.reuse(),
                current_slice=self.current_slice(),
                fit_slice=c.fit_on.enabled and c.fit_on.value == form.FIT_SLICE,
                each_frame=c.fit_on.enabled and c.fit_on.value == form.FIT_FRAMES,
            )  # fmt: skip
        except (InputError, ValueError, TypeError) as err:  # a setting the engine refuses
            self._say(f"Not run: {err}")
            show_error(str(err))
            return
        self._start(*plan)

    def apply_model(self, model, origin: str) -> None:
        """Label the chosen image (extras, mask, scope) with ``model`` in a worker.

        Raises
        ------
        InputError
            When a run is in flight, or the model does not fit the chosen image; nothing starts.
        """
        if self.busy():
            raise InputError("a run is in flight: wait for it (or cancel it), then apply again.")
        self._start(
            *inputs.for_apply(
                self._viewer, self.controls.image.value, model, origin, **self.run_inputs(),
                current_slice=self.current_slice(),
            )
        )  # fmt: skip

    def compute_into_memory(self, layer) -> None:
        """Compute lazy k-means labels ``layer`` (and its recolored layer) into memory.

        Raises
        ------
        InputError
            When a run is in flight, the layer is not lazy, or it would not fit in memory;
            nothing starts and nothing changes.
        """
        if self.busy():
            raise InputError("a run is in flight: wait for it (or cancel it), then try again.")
        job, info = inputs.compute_plan(self._viewer, layer, self.session.runs)
        self._start(workers.run_compute, job, info, done=self._computed)

    def _computed(self, done, info) -> None:
        kept = self.session.runs_of(info.labels)
        labels, recolored = outputs.install_computed(self._viewer, done, info)  # may swap them
        self.session.computed(kept, labels, recolored)
        line = outputs.computed_summary(done, labels)
        self._say(line)
        self.edit.follow(labels)
        self.edit.say(line)

    def _start(self, func, job, info, *args, done=None, say=None, task=False, preview=None) -> None:
        """Run generator ``func(job, *args, stop=event)`` in a worker; ``done(result, info)``.

        ``say`` shows status text (the result line by default). Cancel sets ``event``, which
        stops the engine's computation in its thread too, and quits the worker. A live preview
        in flight is cancelled first: this starts once it has ended. ``preview`` is the
        generation a live preview shows (no progress bar; dropped if a newer change came).
        """
        if self.previewing():
            self._queued = (func, job, info, args, {"done": done, "say": say, "task": task})
            self.stop_flight()
            return
        desc = f"k-means: {info.source.name}"
        bar = None if preview is not None else progress(total=100, desc=desc)
        stop = threading.Event()
        worker = create_worker(func, job, *args, stop=stop, _start_thread=False)
        worker.yielded.connect(self._progressed)
        worker.returned.connect(self._returned)
        worker.errored.connect(self._errored)
        worker.aborted.connect(self._aborted)
        worker.finished.connect(self._finished)
        self._worker, self._stopped, self._stop = worker, None, stop
        self._run = _Flight(info, bar, done or self._show, say or self._say, task, preview)
        self.controls.run.enabled = preview is not None  # Run replaces a preview in flight
        self.controls.cancel.enabled = True
        inline = self.controls.progress
        inline.setValue(0)
        inline.setFormat("starting…")
        inline.setVisible(preview is None)
        if (
            preview is None
        ):  # a preview keeps the line it replaces: no repaint of the dock each time
            self._run.say("Running…")
        worker.start()

    def start_task(self, func, job, info, *, done, say) -> None:
        """Run another generator (an edit) as a run is run: one at a time, with Cancel.

        Raises
        ------
        InputError
            When a run or another task is in flight; nothing starts.
        """
        if self.busy():
            raise InputError("a run is in flight: wait for it (or cancel it), then try again.")
        self._start(func, job, info, done=done, say=say, task=True)

    def cancel(self, *_) -> None:
        """Stop the run in flight (its computation too); no layer is changed. A live preview
        stopped by Cancel is not started again until the next change."""
        if self.previewing():
            self.preview.caught_up()
            if self._queued is not None:  # a run (or edit) waiting behind the preview: dropped
                self._queued = None
                self._say("Cancelled: no layer was changed.")
        self.stop_flight()

    def stop_flight(self) -> None:
        """Stop the run, edit or preview in flight (what follows it still starts)."""
        if self._worker is not None:
            self._stop.set()
            self._worker.quit()
            if self._run.preview is None:  # a stale preview goes quietly
                self._run.say("Cancelling…")

    def _closing(self, *_) -> None:
        """The widget is being deleted (the viewer closed): stop the work in flight."""
        self.preview.close()
        self._queued = None
        if self._worker is not None:
            self._stop.set()
            self._worker.quit()

    @staticmethod
    def _reads(info, layer) -> bool:
        """The run, edit or preview made from ``info`` reads (or writes) ``layer``."""
        return any(layer is read for read in info.layers)

    def _layer_removed(self, event) -> None:
        gone = event.value
        self.session.forget(gone)
        if self._run is not None and self._reads(self._run.info, gone):
            self._stop.set()
            self._worker.quit()
            self._stopped = f"Dropped: '{gone.name}' was removed during the run."
            if self._run.preview is None:  # a preview: no pop-up; the next change previews
                show_warning(f"'{gone.name}' was removed during the run; the run was dropped.")
            else:
                self.preview.changed()

    def _progressed(self, step) -> None:
        if self._run is None or self.preview.closed:
            return
        bar = self._run.bar
        if bar is None:
            return
        bar.set_description(f"k-means: {self._run.info.source.name}: {step.text}")
        bar.update(max(0, round(step.fraction * 100) - bar.n))
        inline = self.controls.progress
        inline.setValue(max(inline.value(), round(step.fraction * 100)))
        inline.setFormat(f"{step.text} · %p%")

    def _aborted(self) -> None:
        if self.preview.closed:
            return
        if self._run is not None and self._run.preview is not None:
            return  # a stale preview, replaced by a newer one (or by a run)
        say = self._run.say if self._run is not None else self._say
        say(self._stopped or "Cancelled: no layer was changed.")

    def _errored(self, err) -> None:
        """An exception escaped a worker (the workers return their errors): report it plainly."""
        if self._run is None or self.preview.closed:
            return
        text = failure(err)
        self._run.say(f"Not done: {text}")
        show_error(text)

    def _finished(self) -> None:
        if self.preview.closed:
            self._worker = self._run = None
            return
        if self._worker is not None and self._worker.abort_requested:
            self._aborted()  # also when stopped during its last step (no 'aborted' signal then)
        if self._run is not None and self._run.bar is not None:
            self._run.bar.close()
        self.controls.progress.setVisible(False)
        self._worker = self._run = None
        self.controls.run.enabled, self.controls.cancel.enabled = True, False
        queued, self._queued = self._queued, None
        if queued is not None:
            func, job, info, args, kwargs = queued
            self._start(func, job, info, *args, **kwargs)
        else:
            self.preview.resume()

    def _returned(self, outcome) -> None:
        if self._run is None or self._worker is None or self._worker.abort_requested:
            return
        if self.preview.closed:
            return
        flight = self._run
        if flight.preview is not None:
            if flight.preview != self.preview.generation:
                return  # a newer change came while this preview ran: the next preview shows it
            self.preview.shown = flight.preview
        self._run = None  # output layers may be replaced below: not a removal during the run
        if flight.bar is not None:
            flight.bar.close()
        if flight.task:
            flight.done(outcome, flight.info)  # an edit: it reports its own errors
            return
        if outcome.error:
            if flight.preview is not None:  # said in the result line, not in a pop-up each time
                flight.say(f"Preview not run: {outcome.error}")
                return
            flight.say(f"Not run: {outcome.error}")
            show_error(outcome.error)
            return
        gone = [layer.name for layer in flight.info.layers if layer not in self._viewer.layers]
        if gone:
            flight.say(f"Dropped: {', '.join(gone)} left the viewer during the run.")
            return
        for note in outcome.notes if flight.preview is None else ():  # a preview: no pop-ups
            show_warning(note)
        flight.done(outcome, flight.info)

    def _show(self, outcome, info) -> None:
        previous = self.session.previous(info.source)
        target, drop = previous, None
        beneath = None if previous is None else previous.beneath
        if (
            not info.preview and beneath is not None and previous.preview
            and beneath.sliced == bool(info.slice_index) and beneath.unedited(self._viewer)
        ):  # fmt: skip
            # a run of the scope of the result kept under a preview pair: back into that result,
            # and the preview pair (when untouched) goes
            target, drop = beneath, previous
        self.publishing = True
        try:
            made, how = publish(self._viewer, outcome, info, target, self.style())
            outputs.publish_confidence(self._viewer, outcome, info, made)
            if info.preview:  # the result a preview of another scope was put beside
                made.beneath = previous if how == "other scope" else beneath
            kept = previous if previous is not None and not _edited(previous.labels) else None
            made.memory = outputs.remember(None if kept is None else kept.memory, outcome.model)
            if drop is not None and drop.unedited(self._viewer):
                for layer in (drop.labels, drop.recolored):
                    self._viewer.layers.remove(layer)
                made.labels.visible, made.recolored.visible = True, self.style().show_recolored
        finally:
            self.publishing = False
        self.session.record(made, replaces=previous)
        line = result_line(outcome, info)
        if info.preview:
            self._say(f"{line} · press Run to segment the whole scope")
            self.controls.result.tooltip = details(outcome)
            return
        if how == "updated":
            line += " · output layers updated in place"
        elif how == "edited":
            line += " · the labels had been edited or renamed: kept them and added new layers"
            show_info(
                f"'{info.source.name}' k-means labels were edited or renamed; added new layers."
            )
        elif how == "other scope":
            line += " · the result of the other scope is kept (hidden)"
        self._say(line)
        self.controls.result.tooltip = details(outcome)
        self.edit.follow(made.labels)
        if getattr(info, "model_from", None):
            self.edit.say(line)

    def _say(self, text: str) -> None:
        self.controls.result.value = text


def result_line(outcome, info) -> str:
    """The result line of a finished run (or of applying a model), in plain words."""
    origin = getattr(info, "model_from", None)
    k = outcome.n_clusters
    what = f"{k} cluster{'s' if k != 1 else ''}"
    share = explained_share(outcome)
    if share is not None:
        what += f" · they explain {share:.0%} of the variation"
    lazy = f" · lazy: {inputs.LAZY_TEXT}" if outcome.lazy else ""
    if getattr(info, "preview", False):
        return f"Preview of the slice on screen: {what} · {outcome.seconds:.2f} s"
    if origin:
        return f"Applied the model of {origin}: {what} · {outcome.seconds:.2f} s{lazy}"
    return f"{what} · {outcome.seconds:.2f} s{lazy}"


def details(outcome) -> str:
    """The numbers behind the result line (its tooltip)."""
    inertia = "unknown" if outcome.inertia is None else f"{outcome.inertia:.6g}"
    exact = "the proven optimum (exact 1-D solver)" if outcome.exact else "not proven optimal"
    return (
        f"inertia (within-cluster sum of squares, in feature space): {inertia}\n"
        f"Lloyd iterations: {outcome.n_iter}\n{exact}"
    )
