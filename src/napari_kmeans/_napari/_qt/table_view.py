"""A compact view of a k-means labels layer's features table: one row per label, selectable."""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import QItemSelectionModel, Qt
from qtpy.QtGui import QColor
from qtpy.QtWidgets import QAbstractItemView, QTableWidget, QTableWidgetItem

MAX_ROWS = 10  # more rows than this scroll

TIP = (
    "The features table of the chosen k-means labels layer: label, colour, pixel count and "
    "fraction, colour per channel ('unknown' counts for lazy labels, until computed into "
    "memory). The label cell has the label's colour on the canvas; the colour square is the "
    "cluster's own colour, as in the recoloured image. Select rows (Ctrl/Shift-click) to fill "
    "'clusters'; one selected row shows its label alone."
)


class FeaturesView(QTableWidget):
    """Rows of ``layer.features``; ``on_select(labels)`` is called with the selected labels."""

    def __init__(self, on_select, parent=None):
        super().__init__(parent)
        self._on_select = on_select
        self._labels: list[int] = []
        self.setToolTip(TIP)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.verticalHeader().setVisible(False)
        self.setFixedHeight(40)
        self.itemSelectionChanged.connect(self._selected)

    def show_layer(self, layer) -> None:
        """Fill the table from ``layer`` (a Labels layer, or None to clear it)."""
        self.blockSignals(True)
        self.clearContents()
        table = None if layer is None else layer.features
        if table is None or table.empty or "label" not in table:
            self.setRowCount(0)
            self.setColumnCount(0)
            self._labels = []
            self.blockSignals(False)
            return
        columns = [c for c in table.columns if c not in ("index", "label")]
        self.setColumnCount(2 + len(columns))
        heads = [c.removeprefix("center_") if c != "fraction" else "%" for c in columns]
        self.setHorizontalHeaderLabels(["label", "colour", *heads])
        self.setRowCount(len(table))
        self._labels = [int(v) for v in table["label"]]
        colors = swatches(layer, self._labels)
        shown = layer.colormap.map(np.array(self._labels))  # the label's colour on the canvas
        for row, (label, rgba) in enumerate(zip(self._labels, colors, strict=True)):
            cell = self._set(row, 0, str(label))
            _paint(cell, shown[row])
            swatch = self._set(row, 1, "")  # a colour square, still shown when selected
            swatch.setData(Qt.ItemDataRole.DecorationRole, QColor.fromRgbF(*map(float, rgba[:3])))
            for col, name in enumerate(columns, start=2):
                self._set(row, col, _text(table[name].iloc[row], name))
        self.resizeColumnsToContents()
        self._fit_rows()
        self.blockSignals(False)

    def _fit_rows(self) -> None:
        """As tall as its rows (up to MAX_ROWS, then it scrolls): no scroll bar for a few rows."""
        rows = min(self.rowCount(), MAX_ROWS)
        height = self.horizontalHeader().height() + 2 * self.frameWidth()
        height += sum(self.rowHeight(r) for r in range(rows))
        if self.horizontalScrollBar().isVisible():
            height += self.horizontalScrollBar().height()
        self.setFixedHeight(max(height, 40))

    def _set(self, row, col, text) -> QTableWidgetItem:
        item = QTableWidgetItem(text)
        item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        self.setItem(row, col, item)
        return item

    def select_labels(self, labels) -> None:
        """Select the rows of ``labels`` (as clicking them would)."""
        self.clearSelection()
        flags = QItemSelectionModel.SelectionFlag.Select | QItemSelectionModel.SelectionFlag.Rows
        for label in labels:
            if label in self._labels:
                index = self.model().index(self._labels.index(label), 0)
                self.selectionModel().select(index, flags)

    def selected_labels(self) -> list[int]:
        rows = sorted({index.row() for index in self.selectedIndexes()})
        return [self._labels[r] for r in rows if r < len(self._labels)]

    def _selected(self) -> None:
        self._on_select(self.selected_labels())


def _paint(cell: QTableWidgetItem, rgba) -> None:
    """The label's own cell in its colour on the canvas, with readable text."""
    if rgba[3] == 0:  # transparent (the background cluster): no colour to show
        return
    cell.setBackground(QColor.fromRgbF(*map(float, rgba[:3])))
    light = 0.2126 * rgba[0] + 0.7152 * rgba[1] + 0.0722 * rgba[2] > 0.5
    cell.setForeground(QColor("black" if light else "white"))


def swatches(layer, labels) -> np.ndarray:
    """(n, 4) colours of ``labels``: each cluster's own colour (as in the recoloured image),
    recorded by the run in ``metadata['kmeans']['cluster_colors']``, else the layer's."""
    known = layer.metadata.get("kmeans", {}).get("cluster_colors")
    if known:
        rgb = np.asarray(known, dtype=float)
        out = layer.colormap.map(np.array(labels))
        for row, label in enumerate(labels):
            if 1 <= label <= len(rgb):
                out[row, :3] = rgb[label - 1]
        return out
    return layer.colormap.map(np.array(labels))


def _text(value, name: str) -> str:
    if isinstance(value, float | np.floating) and np.isnan(value):
        return "unknown"  # lazy outputs: not counted until computed into memory
    if name == "fraction":
        return f"{100 * float(value):.1f}"
    if isinstance(value, float | np.floating):
        return f"{float(value):.4g}"
    return str(value)
