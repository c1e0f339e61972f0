"""The "Edit" tab of the widget: its controls and what each button does.

The work is done elsewhere: :mod:`..editing` (update, merge, split, undo, instances, model
files), :mod:`..outputs` (the layers of instances and masks, the CSV of the features table) and
the widget's runner (applying a model).
Every action reports in the group's status line, and as a notification when it fails; a failed
action changes nothing.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from magicgui import widgets
from napari.utils.notifications import show_error, show_warning
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QFileDialog, QLabel, QVBoxLayout, QWidget

from .. import editing, outputs, workers
from ..editing import is_kmeans_labels, kmeans_labels, lazy_refusal, resolve
from ..jobs import InputError, failure, is_lazy
from .table_view import FeaturesView

TIPS = {
    "group": "Fix and reuse a result: update after painting, merge, split, undo, instances, "
    "export, and models saved, loaded and applied to other images.",
    "labels": "The k-means labels layer to edit, export or take the model from. Follows the "
    "selected layer.",
    "clusters": "Label values to act on, e.g. '2, 3' or '2-4' (or select rows in the table): "
    "two or more for Merge, one for Split, any for Instances (empty: all) and Mask layer.",
    "compute": "Lazy labels (from a dask-backed or multiscale image) are computed as you browse "
    "and cannot be edited: compute the full-resolution labels and recolored image into memory "
    "(in the background, with progress; Cancel stops it) so that they can be edited. Refused, "
    "changing nothing, when they would take more than half of the available memory.",
    "update": "After painting, filling or erasing on the labels layer: recompute each label's "
    "pixel count, fraction and mean colour over the source pixels it now covers, and update the "
    "colours, the features table, the recolored layer and the stored model. Labels painted above "
    "k get a row and a colour too.",
    "undo": "Undo the last edit made here (Update, Merge, Split): labels, colours, features, "
    "model and recolored layer come back exactly. Painting is undone with napari's own undo "
    "(Ctrl/Cmd-Z on the labels layer) until an edit here replaces the labels.",
    "merge": "Merge the clusters typed in 'clusters' (two or more) into one; the model keeps "
    "reproducing the labels. With 'keep label numbers' ticked, no other label changes number: "
    "the merged cluster takes the smallest of its numbers. Unticked, labels are renumbered "
    "1..k, dark to bright.",
    "split": "Split the one cluster typed in 'clusters' into 'split into' sub-clusters, by "
    "k-means on its own pixels (with the seed and restarts above). Other pixels keep their "
    "cluster. With 'keep label numbers' ticked, the darkest part keeps the cluster's number and "
    "the others get new numbers after the largest; unticked, labels are renumbered 1..k, dark "
    "to bright.",
    "split_n": "Number of sub-clusters Split makes.",
    "min_size": "Instances: connected pieces with fewer pixels (voxels in 3-D) are dropped.",
    "instances": "Connected pieces of the clusters in 'clusters' (all clusters when empty) as "
    "instance labels in a new Labels layer, in 2-D or 3-D, on top of the labels.",
    "mask": "The clusters in 'clusters' as a new binary Labels layer (1 inside, 0 outside).",
    "csv": "Save the features table (label, colour per channel, count, fraction) as a CSV file.",
    "apply": "Label the image chosen at the top (with its extra channels, mask and scope) with "
    "this layer's model: the same colour gets the same label. Adds (or updates) its output "
    "layers.",
    "save_model": "Save this layer's model as a JSON file, to apply it later or elsewhere (also "
    "with napari_kmeans.KMeansModel.from_json).",
    "load_model": "Load a model JSON file and apply it to the image chosen at the top. The file "
    "is checked first (format, version, channel layout and dtype of the image); nothing in it "
    "is executed.",
}


IN_MEMORY_ONLY = ("update", "merge", "split", "instances", "mask")  # need labels in memory


@dataclass
class EditControls:
    labels: widgets.ComboBox
    clusters: widgets.LineEdit
    compute: widgets.PushButton
    update: widgets.PushButton
    undo: widgets.PushButton
    merge: widgets.PushButton
    split: widgets.PushButton
    split_n: widgets.SpinBox
    min_size: widgets.SpinBox
    instances: widgets.PushButton
    mask: widgets.PushButton
    csv: widgets.PushButton
    apply: widgets.PushButton
    save_model: widgets.PushButton
    load_model: widgets.PushButton


def make_controls() -> EditControls:
    c = {
        "labels": widgets.ComboBox(label="k-means labels", choices=()),
        "clusters": widgets.LineEdit(label="clusters", value=""),
        "compute": widgets.PushButton(text="Compute into memory", enabled=False),
        "update": widgets.PushButton(text="Update from labels"),
        "undo": widgets.PushButton(text="Undo", enabled=False),
        "merge": widgets.PushButton(text="Merge"),
        "split": widgets.PushButton(text="Split"),
        "split_n": widgets.SpinBox(label="into", value=2, min=2, max=16),
        "min_size": widgets.SpinBox(label="min size (px)", value=1, min=1, max=10**9),
        "instances": widgets.PushButton(text="Instances"),
        "mask": widgets.PushButton(text="Mask layer"),
        "csv": widgets.PushButton(text="Table as CSV…"),
        "apply": widgets.PushButton(text="Apply to image"),
        "save_model": widgets.PushButton(text="Save model…"),
        "load_model": widgets.PushButton(text="Load model…"),
    }
    for name, control in c.items():
        control.tooltip = TIPS[name]
    return EditControls(**c)


def _row(*items):
    return widgets.Container(widgets=list(items), layout="horizontal", labels=False)


def _with_moves(text: str, edited) -> str:
    """An edit's message and, when label values moved, which (exports made before differ)."""
    moved = editing.moves_text(edited.moves)
    return f"{text}; {moved}" if moved else text


def _heading(text: str) -> QLabel:
    label = QLabel(f"<b>{text}</b>")
    label.setContentsMargins(0, 6, 0, 0)
    return label


class EditPanel:
    """The group's controls, wired to the viewer and to the host widget (for runs)."""

    def __init__(self, host):
        self.host, self.viewer = host, host._viewer
        self.controls = c = make_controls()
        self.table = FeaturesView(self._rows_selected)
        self.summary = widgets.Label(value="")
        self.summary.native.setWordWrap(True)
        self.status = widgets.Label(value="")
        self.status.native.setWordWrap(True)
        self._watched = None
        parts = [
            widgets.Container(widgets=[c.labels, c.clusters]), self.table, self.summary,
            self.status,
            _row(c.compute),
            _heading("Fix after painting"), _row(c.update, c.undo),
            _heading("Merge and split clusters"),
            _row(c.merge, c.split, widgets.Label(value="into"), c.split_n),
            _heading("Export"),
            _row(c.instances, widgets.Label(value="min size (px)"), c.min_size),
            _row(c.mask, c.csv),
            _heading("Reuse the model"), _row(c.apply, c.save_model, c.load_model),
        ]  # fmt: skip
        self.group = QWidget()
        self.group.setToolTip(TIPS["group"])
        layout = QVBoxLayout(self.group)
        layout.setContentsMargins(0, 0, 0, 0)
        for part in parts:
            layout.addWidget(getattr(part, "native", part))
        self._parts = parts  # keep the magicgui containers alive
        self._stale = False  # the watched layer's table or colours changed since it was shown
        self._soon = QTimer(self.group)  # one refresh for the several changes of a write
        self._soon.setSingleShot(True)
        self._soon.timeout.connect(self.refresh_if_stale)
        for name in ("compute", "update", "undo", "merge", "split", "instances", "mask", "csv", "apply",
                     "save_model", "load_model"):  # fmt: skip
            # a click passes the button's state (False): the actions take no argument from it
            getattr(c, name).changed.connect(partial(self._clicked, name))
        c.labels.changed.connect(self._chosen)
        events = self.viewer.layers.events
        for event in (events.inserted, events.removed, events.moved):
            event.connect(self.refresh_choices)
        events.inserted.connect(lambda e: e.value.events.name.connect(self.refresh_choices))
        self.viewer.layers.selection.events.active.connect(self._follow_active)
        self.refresh_choices()

    def _clicked(self, name: str, *_) -> None:
        getattr(self, name)()

    # -- choosing the layer --------------------------------------------------------------------

    def refresh_choices(self, *_) -> None:
        self.controls.labels.choices = [(layer.name, layer) for layer in kmeans_labels(self.viewer)]
        self._chosen()

    def follow(self, layer) -> None:
        """Choose ``layer`` (after a run made it)."""
        self.refresh_choices()
        if is_kmeans_labels(layer) and layer in self.viewer.layers:
            self.controls.labels.value = layer

    def _follow_active(self, *_) -> None:
        active = self.viewer.layers.selection.active
        if is_kmeans_labels(active) and self.controls.labels.value is not active:
            self.controls.labels.value = active

    def _chosen(self, *_) -> None:
        layer = self.controls.labels.value
        if self._watched is not layer:
            for old in [self._watched] if self._watched is not None else []:
                old.events.features.disconnect(self._table_changed)
                old.events.colormap.disconnect(self._table_changed)
            if layer is not None:
                layer.events.features.connect(self._table_changed)
                layer.events.colormap.connect(self._table_changed)
            self._watched = layer
        lazy = layer is not None and is_lazy(layer)
        c = self.controls
        c.compute.enabled = c.compute.visible = lazy
        for name in IN_MEMORY_ONLY:  # refused on lazy labels: not offered
            getattr(c, name).enabled = not lazy
        if lazy:
            self._say(str(lazy_refusal(layer)))
        self._show_table()

    def _table_changed(self, *_) -> None:
        """The chosen layer's table or colours changed (a live preview, a script): the table
        follows once, from the event loop, if the Edit tab shows; else when it is shown."""
        self._stale = True
        with contextlib.suppress(RuntimeError):  # the widget's Qt objects are gone (closed)
            self._soon.start(0)

    def refresh_if_stale(self, *_) -> None:
        """Fill the table again if the layer changed since, now that the Edit tab shows."""
        if self._stale and self.group.isVisibleTo(self.host):
            self._show_table()

    def _show_table(self, *_) -> None:
        self._stale = False
        layer = self.controls.labels.value
        self.table.show_layer(layer)
        self.summary.value = outputs.summary(layer)
        self.summary.visible = bool(self.summary.value)

    def _rows_selected(self, labels) -> None:
        """Rows chosen in the table: they fill 'clusters', and one row shows its label alone."""
        self.controls.clusters.value = ", ".join(map(str, labels))
        layer = self.controls.labels.value
        if layer is None or layer not in self.viewer.layers:
            return
        if labels:
            layer.selected_label = labels[0]  # painting continues with it, too
        layer.show_selected_label = len(labels) == 1

    # -- actions ---------------------------------------------------------------------------------

    def _do(self, action, *args):
        """Run ``action``; report its message, or its error (then nothing has changed)."""
        try:
            message = action(*args)
        except Exception as err:  # every failure is reported, never a raw traceback
            text = str(err) if isinstance(err, InputError) else failure(err)
            self._say(f"Not done: {text}")
            show_error(text)
            return None
        if message:
            self._say(message)
        return message

    def _say(self, text: str) -> None:
        self.status.value = text

    def say(self, text: str) -> None:
        """Show ``text`` in the group's status line (the widget reports applied models here)."""
        self._say(text)

    def _clusters(self) -> list[int]:
        layer = self.controls.labels.value
        highest = None if layer is None else editing.labels_bound(layer)
        return editing.parse_clusters(self.controls.clusters.value, highest)

    def _target(self):
        return resolve(self.viewer, self.controls.labels.value, self.host.outputs)

    def _edit(self, make_job, *args, message=None) -> str:
        """Plan an edit (main thread), compute it in the host's worker, then commit it."""
        job = make_job(self._target(), *args)

        def done(edited, job):
            if edited.error:
                self._say(f"Not done: {edited.error}")
                show_error(edited.error)
                return
            try:
                before = editing.commit(job, edited, self.viewer)
            except InputError as err:
                self._say(f"Not done: {err}")
                show_error(str(err))
                return
            if before is None:
                self._say("Nothing to update: the labels and colours are as they were.")
                return
            self.host.session.push(before)
            self.controls.undo.enabled = True
            for note in edited.notes:
                show_warning(note)
            self._show_table()
            self._say(message(edited, job) if message else job.what)

        self.host.start_task(workers.run_edit, job, job, done=done, say=self._say)
        return f"{job.what}…"

    def compute(self, *_) -> None:
        """Compute the chosen lazy labels (and their recolored layer) into memory, to edit them."""
        layer = self.controls.labels.value

        def go():
            self.host.compute_into_memory(layer)
            return f"computing '{layer.name}' into memory…"

        self._do(go)

    def update(self, *_) -> None:
        """Update counts, fractions, colours and the recolored layer from the painted labels."""
        said = lambda e, j: editing.update_message(e, j.model.n_clusters)  # noqa: E731
        self._do(lambda: self._edit(editing.update_job, message=said))

    def merge(self, *_) -> None:
        """Merge the clusters typed in 'clusters'."""

        keep = bool(self.host.controls.keep_ids.value)

        def go():
            clusters = self._clusters()
            said = lambda e, j: _with_moves(  # noqa: E731
                f"merged clusters {', '.join(map(str, clusters))}: "
                f"{e.model.present_labels.size} clusters",
                e,
            )
            return self._edit(editing.merge_job, clusters, keep, message=said)

        self._do(go)

    def split(self, *_) -> None:
        """Split the cluster typed in 'clusters' into 'split into' sub-clusters."""
        c = self.host.controls
        n, seed, n_init = int(self.controls.split_n.value), int(c.seed.value), int(c.n_init.value)
        keep = bool(c.keep_ids.value)

        def go():
            clusters = self._clusters()
            said = lambda e, j: _with_moves(  # noqa: E731
                f"split cluster {clusters[0]}: {e.model.present_labels.size} clusters", e
            )
            return self._edit(editing.split_job, clusters, n, seed, n_init, keep, message=said)

        self._do(go)

    def undo(self, *_) -> None:
        """Put back the state before the last edit made here."""

        def go():
            snap = self.host.session.undo(self.viewer)  # refuses if it would lose work
            self.controls.undo.enabled = self.host.session.can_undo
            self._show_table()
            return f"undid the last edit of '{snap.labels.name}'"

        self._do(go)

    def instances(self, *_) -> None:
        """Connected components of the chosen clusters in a new Labels layer (in a worker)."""

        def done(found, job):
            if found.error:
                self._say(f"Not done: {found.error}")
                show_error(found.error)
                return
            if job.layer not in self.viewer.layers:
                self._say(f"Not done: '{job.layer.name}' left the viewer.")
                return
            new = outputs.add_instances_layer(self.viewer, job, found)
            self._say(f"'{new.name}': {new.features.shape[0]} instances")

        def go():
            layer = self._target().labels
            job = editing.instances_job(layer, self._clusters(), self.controls.min_size.value)
            self.host.start_task(workers.run_instances, job, job, done=done, say=self._say)
            return "finding instances…"

        self._do(go)

    def mask(self, *_) -> None:
        """The chosen clusters as a binary Labels layer."""
        self._do(lambda: f"added '{self._mask_layer().name}'")

    def _mask_layer(self):
        return outputs.add_mask(self.viewer, self._target().labels, self._clusters())

    def csv(self, *_) -> None:
        self.export_csv()

    def export_csv(self, path=None) -> Path | None:
        """Write the features table to ``path`` (asked for with a save dialog when None)."""
        layer = self.controls.labels.value
        if path is None:
            path = self._ask(save=True, title="Save the features table", name=layer, ext="csv")
            if not path:
                return None
        out = self._do(lambda: f"saved the table to {outputs.write_features_csv(layer, path)}")
        return Path(path) if out else None

    def apply(self, *_) -> None:
        """Apply the chosen layer's model to the image chosen at the top of the widget."""
        layer = self.controls.labels.value

        def go():
            model = editing.layer_model(layer)
            self.host.apply_model(model, f"layer '{layer.name}'")
            return f"applying the model of '{layer.name}' to the image chosen above…"

        self._do(go)

    def save_model(self, path=None) -> Path | None:
        """Save the chosen layer's model as JSON (a save dialog asks for ``path`` when None)."""
        layer = self.controls.labels.value
        if path is None:
            path = self._ask(save=True, title="Save the model", name=layer, ext="json")
            if not path:
                return None
        out = self._do(lambda: f"saved the model to {editing.save_model(layer, path)}")
        return Path(path) if out else None

    def load_model(self, path=None) -> bool:
        """Load a model file and apply it to the chosen image; False (and a notification) when
        the file is malformed, from a newer version, or does not fit the image."""
        if path is None:
            path = self._ask(save=False, title="Load a model", name=None, ext="json")
            if not path:
                return False

        def go():
            model = editing.read_model(path)
            self.host.apply_model(model, f"file '{Path(path).name}'")
            return f"applying the model of '{Path(path).name}' to the image chosen above…"

        return self._do(go) is not None

    def _ask(self, *, save: bool, title: str, name, ext: str) -> str:
        """A file dialog (the save dialog asks before overwriting a file)."""
        kinds = {"csv": "CSV table (*.csv)", "json": "k-means model (*.json)"}[ext]
        if save:
            default = f"{getattr(name, 'name', 'kmeans')}.{ext}"
            return QFileDialog.getSaveFileName(self.group, title, default, kinds)[0]
        return QFileDialog.getOpenFileName(self.group, title, "", kinds)[0]
