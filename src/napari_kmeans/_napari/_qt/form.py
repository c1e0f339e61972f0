"""The controls of the k-means dock widget, with their tooltips (no behaviour here)."""

from __future__ import annotations

from dataclasses import dataclass

from magicgui import widgets
from qtpy.QtWidgets import QVBoxLayout, QWidget
from superqt import QCollapsible

WHOLE, SLICE = "whole data", "current slice"
FIT_ALL, FIT_SLICE = "all of the scope", "current slice only"

TIPS = {
    "image": "Image layer to segment. Follows the selected layer. The source layer is never "
    "modified.",
    "mode": "How a run on the chosen image is computed. In memory: the outputs are numpy arrays "
    "you can edit. Lazy (dask-backed or multiscale layers, whole data): the model is fitted in "
    "the background, and the output layers (a pyramid for a multiscale image) are computed "
    "chunk by chunk as you browse; 'Compute into memory' (Edit, export and reuse) loads them "
    "to edit them, when they fit in memory.",
    "n_clusters": "Number of clusters k (2-64). The labels layer gets labels 1..k, 1 for the "
    "darkest cluster. An image with fewer distinct values gets fewer clusters, with a warning.",
    "color_space": "RGB(A) layers only: cluster the colours as RGB values, or in CIELAB, where "
    "distances follow perceived colour differences. Alpha is never clustered; fully transparent "
    "pixels get label 0.",
    "extra_channels": "Other image layers with the same shape, used as extra channels (for "
    "multichannel data loaded as one layer per channel): each pixel is clustered on its values "
    "in this layer and in all the chosen ones. Ctrl/Cmd-click to choose several. Not for RGB.",
    "mask": "Optional Labels or Shapes layer: only pixels with a label > 0, or inside a shape, "
    "are clustered; the others get label 0. A Labels mask must have the image's shape.",
    "scope": "For data with more dimensions than are displayed: segment the whole data, or only "
    "the slice on screen (the output layers then hold that slice, placed where it is).",
    "fit_on": "For stacks and timelapses with scope 'whole data': fit the model on every "
    "pixel, or on the slice on screen only (e.g. one good frame) and then label every slice "
    "with that one model, so that a colour gets the same label in every frame.",
    "seed": "Seed for k-means++ and sampling: the same data, settings and seed always give the "
    "same labels.",
    "n_init": "Multichannel and colour data: k-means++/Lloyd restarts; the best is kept. "
    "Single-channel data are clustered exactly and ignore it.",
    "max_iter": "Maximum Lloyd iterations per restart.",
    "tol": "Lloyd stops when the centres move less than this, relative to the data's variance.",
    "run": "Segment in the background (progress in the activity dock). Re-running from the same "
    "image updates its two output layers in place while the labels are unedited; once you have "
    "painted on them, a re-run adds new layers and keeps your edits.",
    "cancel": "Stop the run within about half a second; no layer is changed.",
    "result": "Clusters found, inertia (sum of squared distances to the centres, in feature "
    "space; 'unknown' for lazy outputs until computed), Lloyd iterations, whether the result is "
    "the proven optimum, and the time taken.",
    "advanced": "Settings of the k-means solver.",
}


@dataclass
class Controls:
    """Every control of the widget, by name."""

    image: widgets.ComboBox
    mode: widgets.Label
    n_clusters: widgets.SpinBox
    color_space: widgets.ComboBox
    extra_channels: widgets.Select
    mask: widgets.ComboBox
    scope: widgets.ComboBox
    fit_on: widgets.ComboBox
    seed: widgets.SpinBox
    n_init: widgets.SpinBox
    max_iter: widgets.SpinBox
    tol: widgets.FloatSpinBox
    run: widgets.PushButton
    cancel: widgets.PushButton
    result: widgets.Label
    advanced: QCollapsible


def make_controls() -> Controls:
    """Create the controls with their ranges, defaults and tooltips."""
    c = {
        "image": widgets.ComboBox(label="image", choices=()),
        "mode": widgets.Label(value="mode: no image chosen", label=""),
        "n_clusters": widgets.SpinBox(label="clusters (k)", value=5, min=2, max=64),
        "color_space": widgets.ComboBox(
            label="colour space", choices=[("RGB", "rgb"), ("CIELAB", "lab")], value="rgb"
        ),
        "extra_channels": widgets.Select(label="extra channels", choices=()),
        "mask": widgets.ComboBox(label="mask", choices=(), nullable=True),
        "scope": widgets.ComboBox(label="scope", choices=[WHOLE, SLICE], value=WHOLE),
        "fit_on": widgets.ComboBox(label="fit on", choices=[FIT_ALL, FIT_SLICE], value=FIT_ALL),
        "seed": widgets.SpinBox(label="seed", value=0, min=0, max=2**31 - 1),
        "n_init": widgets.SpinBox(label="restarts (n_init)", value=4, min=1, max=100),
        "max_iter": widgets.SpinBox(label="max iterations", value=300, min=1, max=100_000),
        "tol": widgets.FloatSpinBox(label="tolerance", value=1e-4, min=0.0, max=1.0, step=1e-6),
        "run": widgets.PushButton(text="Run"),
        "cancel": widgets.PushButton(text="Cancel", enabled=False),
        "result": widgets.Label(value="", label=""),
    }
    c["extra_channels"].native.setMaximumHeight(90)
    for name, control in c.items():
        control.tooltip = TIPS[name]
    advanced = QCollapsible("Advanced")
    advanced.setToolTip(TIPS["advanced"])
    inner = widgets.Container(widgets=[c["n_init"], c["max_iter"], c["tol"]])
    advanced.addWidget(inner.native)
    advanced.collapse(animate=False)
    return Controls(**c, advanced=advanced)


def lay_out(controls: Controls, parent: QWidget, *, before_run=(), after_result=()) -> None:
    """Put the controls in ``parent``: the form, the collapsed advanced group, ``before_run``
    widgets, buttons, result, then ``after_result`` widgets (the other collapsible groups)."""
    form = widgets.Container(
        widgets=[
            controls.image, controls.n_clusters, controls.color_space, controls.extra_channels,
            controls.mask, controls.scope, controls.fit_on, controls.seed,
        ]
    )  # fmt: skip
    buttons = widgets.Container(widgets=[controls.run, controls.cancel], layout="horizontal")
    layout = QVBoxLayout(parent)
    layout.addWidget(form.native)
    layout.addWidget(controls.mode.native)
    layout.addWidget(controls.advanced)
    for widget in before_run:
        layout.addWidget(widget)
    layout.addWidget(buttons.native)
    layout.addWidget(controls.result.native)
    for widget in after_result:
        layout.addWidget(widget)
    layout.addStretch(1)
    controls.result.native.setWordWrap(True)
    controls.mode.native.setWordWrap(True)
    parent._containers = (form, buttons)  # keep the magicgui containers alive
