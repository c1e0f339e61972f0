"""The controls of the k-means dock widget: their tooltips, layout, and the settings they read."""

from __future__ import annotations

from dataclasses import dataclass

from magicgui import widgets
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QFrame,
    QLabel,
    QProgressBar,
    QScrollArea,
    QSizePolicy,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)
from superqt import QCollapsible

from ...params import Params
from ..outputs import Style

WHOLE, SLICE = "whole data", "current slice"
FIT_ALL, FIT_SLICE = "all of the scope", "current slice only"
FIT_FRAMES = "each frame, IDs matched"

TIPS = {
    "image": "Image layer to segment. Follows the selected layer. The source layer is never "
    "modified.",
    "mode": "How a run on the chosen image is computed. In memory: the outputs are numpy arrays "
    "you can edit. Lazy (dask-backed or multiscale layers, whole data): the model is fitted in "
    "the background, and the output layers (a pyramid for a multiscale image) are computed "
    "chunk by chunk as you browse; 'Compute into memory' (Edit tab) loads them "
    "to edit them, when they fit in memory.",
    "n_clusters": "Number of clusters k (2-64). A first run gives labels 1..k, 1 for the "
    "darkest cluster; seed classes get 1..m, and re-runs keep the numbers already shown. An image with fewer distinct values gets fewer clusters, with a warning.",
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
    "pixel; or on the slice on screen only (e.g. one good frame) and then label every slice "
    "with that one model, so that a colour gets the same label in every frame; or on each "
    "frame (first axis) on its own, each frame's label numbers matched to the previous "
    "frame's, for classes that drift in brightness over time.",
    "seed": "Seed for k-means++ and sampling: the same data, settings and seed always give the "
    "same labels.",
    "n_init": "Multichannel and colour data: k-means++/Lloyd restarts; the best is kept. "
    "Single-channel data are clustered exactly and ignore it.",
    "max_iter": "Maximum Lloyd iterations per restart.",
    "tol": "Lloyd stops when the centres move less than this, relative to the data's variance.",
    "run": "Segment in the background, with the progress shown below. Re-running from the same "
    "image updates its two output layers in place while they are untouched; once you have "
    "painted on them or renamed them, a re-run adds new layers and keeps yours.",
    "cancel": "Stop the run within about half a second; no layer is changed.",
    "result": "Clusters found, inertia (sum of squared distances to the centres, in feature "
    "space; 'unknown' for lazy outputs until computed), Lloyd iterations, whether the result is "
    "the proven optimum, and the time taken.",
    "advanced": "Settings of the k-means solver.",
    "channels": "What each pixel is clustered on: the image's colour, or its value in the image "
    "and in every extra channel.",
    "suggest_k": "Compute how much of the image's variation k clusters explain, for k = 2 up to "
    "a maximum, and suggest the k where adding clusters stops paying off (Choose k tab).",
    "background": "Which cluster the labels layer leaves transparent, so that the image shows "
    "through around the objects (in 3-D the background no longer fills the volume): none, the "
    "darkest, the brightest or the largest cluster. The label values stay as they are.",
    "show_recolored": "Show the recoloured image (each pixel painted with its cluster's mean "
    "colour) on top of the source. It is always made; this only sets whether it is visible.",
    "progress": "What the run is doing, and how far it is.",
    "preset": "What each pixel is clustered on. Pixel values: its values as they are (a colour "
    "quantiser; exact for one channel). Smoothed: the values after a Gaussian blur of the "
    "'smoothing' size, for noisy images (regions instead of speckle). Texture: Gabor "
    "filter-bank energies and smoothed values, for tissue or surfaces that differ by pattern "
    "rather than brightness. Custom filters: the filters listed below.",
    "smoothing": "Size (sigma) of the Gaussian blur, in the image's units (e.g. µm), converted "
    "to pixels on every axis with the layer's scale, so anisotropic stacks are blurred the "
    "same physical distance in z as in x and y. 0: no blur.",
    "filters": "Custom filters with their scales in pixels, e.g. 'gaussian 1, gradient 2, log 2, "
    "std 3, hessian 2, structure 2' (2-D or 3-D).",
    "spatial_weight": "Add each pixel's position (times this weight) to what is clustered: "
    "clusters become compact regions. 0: position is ignored.",
    "majority": "Clean-up: each pixel takes the most frequent label within this radius "
    "(pixels), which removes isolated pixels. 0: off.",
    "min_region": "Clean-up: regions smaller than this many pixels (voxels) join the neighbour "
    "they share the longest border with. 0: off.",
    "live_preview": "While ticked, any change (k, features, clean-up, colour space, seed, mask, "
    "extra channels, a stroke on the seeds layer, or the slice shown) segments what is on "
    "screen a moment later, in the background: the slice shown (the level shown of a "
    "multiscale image). The output layers then hold a preview (marked so in their metadata); "
    "Run segments the whole scope. Editing needs a Run result.",
    "seeds": "Optional Labels layer of scribbles: paint a few strokes of label 1 on one kind of "
    "object, label 2 on another, and so on (up to k). Cluster i starts at the mean of the pixels "
    "painted i and keeps label i; the other clusters are found as usual. 'New' makes an empty "
    "seeds layer aligned with the image, ready to paint.",
    "new_seeds": "Add an empty Labels layer '<image> seeds' with the image's shape and "
    "placement, select it and start painting (label 1).",
    "pin_seeds": "Keep each seeded cluster's centre at the mean of its scribbles (a classifier "
    "for those classes; the unseeded clusters still move). Off: seeded clusters start at their "
    "scribbles and then move like the others.",
    "keep_ids": "A re-run on the same image matches its clusters to the last run's (by their "
    "centres), so a class keeps its label number and colour when you change k, the features "
    "or the seed. New clusters get the next free numbers. Merge and Split then renumber no "
    "other cluster either.",
    "confidence": "Also make an image of how clearly each pixel belongs to its cluster: 1 far "
    "from any other centre, 0 half-way between two. Low values show where to add scribbles.",
}

PRESETS = [("pixel values", "values"), ("smoothed", "smoothed"), ("texture", "texture"),
           ("custom filters", "custom")]  # fmt: skip

BACKGROUNDS = [("none", "none"), ("darkest cluster", "darkest"),
               ("brightest cluster", "brightest"), ("largest cluster", "largest")]  # fmt: skip


@dataclass
class Controls:
    """Every control of the widget, by name."""

    image: widgets.ComboBox
    channels: widgets.Label
    mode: widgets.Label
    n_clusters: widgets.SpinBox
    suggest_k: widgets.PushButton
    color_space: widgets.ComboBox
    extra_channels: widgets.Select
    mask: widgets.ComboBox
    scope: widgets.ComboBox
    fit_on: widgets.ComboBox
    background: widgets.ComboBox
    show_recolored: widgets.CheckBox
    preset: widgets.ComboBox
    smoothing: widgets.FloatSpinBox
    filters: widgets.LineEdit
    spatial_weight: widgets.FloatSpinBox
    majority: widgets.SpinBox
    min_region: widgets.SpinBox
    seed: widgets.SpinBox
    n_init: widgets.SpinBox
    max_iter: widgets.SpinBox
    tol: widgets.FloatSpinBox
    run: widgets.PushButton
    cancel: widgets.PushButton
    live_preview: widgets.CheckBox
    seeds: widgets.ComboBox
    new_seeds: widgets.PushButton
    pin_seeds: widgets.CheckBox
    keep_ids: widgets.CheckBox
    confidence: widgets.CheckBox
    progress: QProgressBar
    result: widgets.Label
    advanced: QCollapsible


def make_controls() -> Controls:
    """Create the controls with their ranges, defaults and tooltips."""
    c = {
        "image": widgets.ComboBox(label="image", choices=()),
        "channels": widgets.Label(value="", label=""),
        "mode": widgets.Label(value="", label=""),
        "n_clusters": widgets.SpinBox(value=5, min=2, max=64),
        "suggest_k": widgets.PushButton(text="Suggest…"),
        "color_space": widgets.ComboBox(
            label="colour space", choices=[("RGB", "rgb"), ("CIELAB", "lab")], value="rgb"
        ),
        "extra_channels": widgets.Select(label="extra channels", choices=()),
        "mask": widgets.ComboBox(label="mask", choices=(), nullable=True),
        "scope": widgets.ComboBox(label="scope", choices=[WHOLE, SLICE], value=WHOLE),
        "fit_on": widgets.ComboBox(
            label="fit on", choices=[FIT_ALL, FIT_SLICE, FIT_FRAMES], value=FIT_ALL
        ),
        "background": widgets.ComboBox(label="transparent", choices=BACKGROUNDS, value="none"),
        "show_recolored": widgets.CheckBox(text="show the recoloured image", value=False),
        "preset": widgets.ComboBox(label="features", choices=PRESETS, value="values"),
        "smoothing": widgets.FloatSpinBox(label="smoothing", value=0.0, min=0.0, max=1e6, step=0.5),
        "filters": widgets.LineEdit(label="filters", value="gaussian 1, gradient 2, log 2"),
        "spatial_weight": widgets.FloatSpinBox(
            label="spatial weight", value=0.0, min=0.0, max=1e6, step=0.1
        ),
        "majority": widgets.SpinBox(label="majority radius", value=0, min=0, max=25),
        "min_region": widgets.SpinBox(label="min region (px)", value=0, min=0, max=10**9),
        "seed": widgets.SpinBox(label="seed", value=0, min=0, max=2**31 - 1),
        "n_init": widgets.SpinBox(label="restarts", value=4, min=1, max=100),
        "max_iter": widgets.SpinBox(label="max iterations", value=300, min=1, max=100_000),
        "tol": widgets.FloatSpinBox(label="tolerance", value=1e-4, min=0.0, max=1.0, step=1e-6),
        "run": widgets.PushButton(text="Run"),
        "cancel": widgets.PushButton(text="Cancel", enabled=False),
        "live_preview": widgets.CheckBox(text="live preview", value=False),
        "seeds": widgets.ComboBox(label="seeds", choices=(), nullable=True),
        "new_seeds": widgets.PushButton(text="New"),
        "pin_seeds": widgets.CheckBox(text="pin seeded clusters to their scribbles", value=False),
        "keep_ids": widgets.CheckBox(text="keep label numbers across runs", value=True),
        "confidence": widgets.CheckBox(text="confidence map", value=False),
        "result": widgets.Label(value="", label=""),
    }
    c["extra_channels"].native.setMaximumHeight(70)
    for name, control in c.items():
        control.tooltip = TIPS[name]
    bar = QProgressBar()
    bar.setRange(0, 100)
    bar.setTextVisible(True)
    bar.setFormat("")
    bar.setToolTip(TIPS["progress"])
    bar.setMaximumHeight(18)
    bar.setVisible(False)
    advanced = QCollapsible("Advanced: seed and solver", expandedIcon="▼", collapsedIcon="▶")
    advanced.setToolTip(TIPS["advanced"])
    inner = widgets.Container(widgets=[c["seed"], c["n_init"], c["max_iter"], c["tol"]])
    advanced.addWidget(inner.native)
    advanced.collapse(animate=False)
    advanced._inner = inner  # keep the magicgui container alive
    return Controls(**c, progress=bar, advanced=advanced)


def read_params(c: Controls, scale=None) -> Params:
    """The engine's parameters from the controls (a new setting: a control and one line here).

    ``scale`` is the image's scale on its spatial axes, to turn the smoothing from world units
    into pixels on every axis.
    """
    space = c.color_space.value if c.color_space.enabled else "rgb"
    return Params(
        n_clusters=int(c.n_clusters.value), color_space=space, seed=int(c.seed.value),
        n_init=int(c.n_init.value), max_iter=int(c.max_iter.value), tol=float(c.tol.value),
        pin_seeds=bool(c.pin_seeds.value), **read_features(c, scale),
    )  # fmt: skip


def parse_filters(text: str) -> tuple[tuple[str, float], ...]:
    """Filters typed as 'name scale, name scale' (a colon also separates).

    >>> parse_filters("gaussian 1, gradient:2, log 2.5")
    (('gaussian', 1.0), ('gradient', 2.0), ('log', 2.5))
    """
    out = []
    for part in filter(None, (p.strip() for p in text.replace(";", ",").split(","))):
        name, _, scale = part.replace(":", " ").partition(" ")
        try:
            out.append((name.strip().lower(), float(scale)))
        except ValueError:
            raise ValueError(
                f"filters: '{part}' is not 'name scale'; write e.g. 'gaussian 1, gradient 2'."
            ) from None
    return tuple(out)


def read_features(c: Controls, scale=None) -> dict:
    """The feature and clean-up settings, smoothing converted from world units to pixels with
    the layer's ``scale`` (one per spatial axis)."""
    preset = c.preset.value
    sigma = 0.0
    if preset != "values" and c.smoothing.value > 0:
        world = float(c.smoothing.value)
        sigma = world if scale is None else tuple(world / abs(float(s)) for s in scale)
    features = {"values": "values", "smoothed": "values", "texture": "texture"}.get(preset)
    return {
        "smoothing": sigma,
        "features": features if features is not None else parse_filters(c.filters.value),
        "spatial_weight": float(c.spatial_weight.value),
        "majority": int(c.majority.value),
        "min_size": int(c.min_region.value),
    }


def read_style(c: Controls) -> Style:
    """How the labels show the clusters, from the Options tab."""
    return Style(background=c.background.value, show_recolored=bool(c.show_recolored.value))


def _container(*items, horizontal=False, labels=True):
    return widgets.Container(
        widgets=list(items), layout="horizontal" if horizontal else "vertical", labels=labels
    )


def _heading(text: str) -> QLabel:
    label = QLabel(f"<b>{text}</b>")
    label.setContentsMargins(0, 6, 0, 0)
    return label


def _tab(*parts) -> QWidget:
    page = QWidget()
    layout = QVBoxLayout(page)
    for part in parts:
        layout.addWidget(getattr(part, "native", part))
    layout.addStretch(1)
    return page


def lay_out(controls: Controls, parent: QWidget, *, choose_k: QWidget, edit: QWidget) -> QTabWidget:
    """Put the controls in ``parent``, inside a scroll area (the dock fits any screen).

    At the top what every run needs: the image and what is clustered, k with "Suggest…", Run and
    Cancel with the progress bar, and the result. Below, tabs: Options (the other settings, only
    those that apply to the chosen image are shown), Choose k (``choose_k``) and Edit (``edit``).
    Returns the tab widget.
    """
    c = controls
    k_row = widgets.Container(
        widgets=[c.n_clusters, c.suggest_k], layout="horizontal", labels=False,
        label="clusters (k)",
    )  # fmt: skip
    k_row.margins = (0, 0, 0, 0)
    seeds_row = widgets.Container(
        widgets=[c.seeds, c.new_seeds], layout="horizontal", labels=False, label="seeds"
    )
    seeds_row.margins = (0, 0, 0, 0)
    c.seeds.native.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
    top = _container(c.image, k_row, seeds_row)
    buttons = _container(c.run, c.cancel, c.live_preview, horizontal=True, labels=False)
    options = _container(
        c.color_space, c.extra_channels, c.mask, c.scope, c.fit_on, c.background,
        c.show_recolored, c.keep_ids, c.pin_seeds, c.confidence,
    )  # fmt: skip
    features = _container(c.preset, c.smoothing, c.filters, c.spatial_weight)
    clean = _container(c.majority, c.min_region)
    tabs = QTabWidget()
    tabs.setDocumentMode(True)
    tabs.addTab(
        _tab(options, _heading("Features"), features, _heading("Clean-up"), clean, c.mode,
             c.advanced),
        "Options",
    )  # fmt: skip
    tabs.addTab(_tab(choose_k), "Choose k")
    tabs.addTab(_tab(edit), "Edit")
    content = QWidget()
    layout = QVBoxLayout(content)
    for part in (top, c.channels, buttons, c.progress, c.result):
        layout.addWidget(getattr(part, "native", part))
    layout.addWidget(tabs)
    layout.addStretch(1)
    for label in (c.result, c.mode, c.channels):
        label.native.setWordWrap(True)  # and the full width of the dock, not a narrow column
        label.native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
    scroll = QScrollArea()
    scroll.setWidgetResizable(True)
    scroll.setFrameShape(QFrame.Shape.NoFrame)
    scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    scroll.setWidget(content)
    outer = QVBoxLayout(parent)
    outer.setContentsMargins(0, 0, 0, 0)
    outer.addWidget(scroll)
    parent.scroll = scroll
    parent._containers = (top, k_row, seeds_row, buttons, options, features, clean)  # alive
    return tabs
