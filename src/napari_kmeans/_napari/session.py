"""What one widget made: the output layers of each source's last run, and the undo stack.

Plain objects (no Qt), so that the rules (which result a re-run may update, what Undo takes back)
can be tested on a ``ViewerModel`` without a display.
"""

from __future__ import annotations

from .editing import Snapshot, restore
from .jobs import InputError
from .outputs import Outputs, retarget

UNDO_DEPTH = 5  # edits kept for Undo (each keeps a copy of the labels and recolored data)


class Session:
    """The widget's record of its runs and of the edits it can undo."""

    def __init__(self, undo_depth: int = UNDO_DEPTH):
        self.runs: list[Outputs] = []
        self.undo_stack: list[Snapshot] = []
        self.undo_depth = undo_depth

    # -- runs ------------------------------------------------------------------------------------

    def previous(self, source) -> Outputs | None:
        """The outputs of ``source``'s last run (None if there is none)."""
        return next((o for o in self.runs if o.source() is source), None)

    def record(self, made: Outputs, replaces: Outputs | None = None) -> None:
        """Remember ``made`` as its source's last run (instead of ``replaces``)."""
        self.runs = [o for o in self.runs if o is not replaces and o.source() is not None]
        self.runs.append(made)

    def forget(self, gone) -> None:
        """Forget the runs whose source or output layer ``gone`` left the viewer."""
        self.runs = [
            o for o in self.runs
            if o.source() is not None and o.source() is not gone
            and gone is not o.labels and gone is not o.recolored
        ]  # fmt: skip

    def runs_of(self, labels) -> list[Outputs]:
        """The runs whose labels layer is ``labels``."""
        return [o for o in self.runs if o.labels is labels]

    def computed(self, kept: list[Outputs], labels, recolored) -> None:
        """Follow lazy labels computed into memory: the runs ``kept`` (taken before the layers
        were swapped, which made the session forget them) now point at the new layers."""
        for run in kept:
            retarget(run, labels, recolored)
            if run not in self.runs:
                self.runs.append(run)

    # -- undo ------------------------------------------------------------------------------------

    @property
    def can_undo(self) -> bool:
        return bool(self.undo_stack)

    def push(self, snap: Snapshot) -> None:
        """Keep ``snap`` for Undo (the oldest goes beyond ``undo_depth``)."""
        self.undo_stack = [*self.undo_stack, snap][-self.undo_depth :]

    def undo(self, viewer) -> Snapshot:
        """Put back the state before the last edit; it leaves the stack only once restored.

        Raises
        ------
        InputError
            When there is nothing to undo, or undoing would lose later work (see
            :func:`~.editing.restore`); nothing changes then.
        """
        if not self.undo_stack:
            raise InputError("there is no edit to undo.")
        snap = self.undo_stack[-1]
        restore(snap, viewer)
        self.undo_stack = self.undo_stack[:-1]
        return snap
