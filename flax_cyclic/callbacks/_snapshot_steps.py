"""When a snapshot of the weights is taken: at each cycle's end, or every ``n`` steps.

The one rule of [`WeightAveraging`][flax_cyclic.WeightAveraging] and
[`SnapshotEnsemble`][flax_cyclic.SnapshotEnsemble]: the settings checked, the run's LR callback
found (its cycles say where they end), and the steps planned, on the host.
"""

from __future__ import annotations

from typing import Any

from flax_cyclic import _checks
from flax_cyclic._cadence import every
from flax_cyclic.callbacks.base import Callback, Loop
from flax_cyclic.callbacks.lr import LRSchedulerCallback

__all__ = ["SnapshotSteps"]

_AT = ("cycle_end",)


class SnapshotSteps:
    """The train steps whose update is followed by a snapshot.

    Args:
        owner: The callback, for error messages.
        at: ``'cycle_end'`` (the default unless ``every_steps`` is given).
        every_steps: Every ``every_steps``-th train step instead.
        start_step: No snapshot until more than ``start_step`` train steps are done.

    Raises:
        ValueError: For both ``at`` and ``every_steps``, an unknown ``at``, ``every_steps``
            below 1, or a negative ``start_step``.
    """

    def __init__(self, owner: str, at: Any, every_steps: Any, start_step: Any) -> None:
        if at is not None and every_steps is not None:
            raise ValueError(
                f"{owner}: give at={at!r} or every_steps={every_steps!r}, not both: one rule "
                "says when a snapshot is taken."
            )
        self.owner = owner
        self.at = (
            None if every_steps is not None else _checks.choice(owner, "at", at or _AT[0], _AT)
        )
        self.every_steps = None
        if every_steps is not None:
            self.every_steps = _checks.integer(
                owner, "every_steps", every_steps, minimum=1, maximum=None, hint="e.g. 1."
            )
        self.start_step = _checks.integer(
            owner, "start_step", start_step, minimum=0, maximum=None, hint="e.g. 0."
        )
        self._lr: LRSchedulerCallback | None = None
        self._next: int | None = None  # the next snapshot step found, from where it was asked
        self._asked = 0

    def begin(self, loop: Loop, callback: Callback, *, any_taken: bool) -> None:
        """Finds the LR callback (``at='cycle_end'``) and checks that the run takes a snapshot.

        Args:
            loop: The loop, at ``on_train_begin``.
            callback: The callback that takes the snapshots (it must follow the LR callback).
            any_taken: Whether snapshots were taken already (a resumed run may take no more).

        Raises:
            ValueError: If ``at='cycle_end'`` and the loop has no (or several)
                [`LRSchedulerCallback`][flax_cyclic.LRSchedulerCallback], it comes after
                ``callback``, or its scheduler has no cycles; or if, with the run's length
                known and nothing taken yet, no snapshot falls in the run.
        """
        self._next = None
        if self.at == "cycle_end":
            self._lr = _cyclic_lr_callback(self.owner, loop.callbacks, callback)
        total = loop.total_steps
        if total is None or any_taken:
            return
        first = self.next(max(loop.step, self.start_step))
        if first is None or first >= total:
            rule = f"every_steps={self.every_steps}" if self.at is None else "at='cycle_end'"
            raise ValueError(
                f"{self.owner}: {rule} with start_step={self.start_step} takes no snapshot in "
                f"this run (train steps {loop.step} to {total}), so there would be nothing to "
                "use. Lower start_step, train longer, or use a shorter cycle."
            )

    def takes(self, step: int) -> bool:
        """Whether the update of train step ``step`` (counted from 0) is followed by one."""
        if step < self.start_step:
            return False
        if self.every_steps is not None:
            return every(step + 1, self.every_steps)
        # The next cycle end, kept while the steps asked about stay before it (a few
        # microseconds less at every step): the LR callback refuses a scheduler moved by others.
        ahead = self._next
        if ahead is None or step > ahead or step < self._asked:
            self._asked, self._next = step, self.next(step)
        return step == self._next

    def next(self, step: int) -> int | None:
        """The first train step from ``step`` that is followed by a snapshot (``None``: none)."""
        if self.every_steps is not None:
            return -(-(step + 1) // self.every_steps) * self.every_steps - 1
        assert self._lr is not None, "begin() finds the LR callback first"
        return self._lr.cycles().next_end(step)


def _cyclic_lr_callback(
    owner: str, callbacks: list[Callback], taker: Callback
) -> LRSchedulerCallback:
    """The loop's one LR callback, whose scheduler has cycles: it says where they end."""
    found = [c for c in callbacks if isinstance(c, LRSchedulerCallback)]
    if len(found) != 1:
        raise ValueError(
            f"{owner}: at='cycle_end' needs the cycles of one LRSchedulerCallback in the same "
            f"loop; it has {len(found)}. Add the callback that drives the cyclic learning "
            "rate, or take snapshots on a fixed cadence with every_steps=n."
        )
    if callbacks.index(found[0]) > callbacks.index(taker):
        raise ValueError(
            f"{owner}: at='cycle_end' reads the cycles of the LRSchedulerCallback, which comes "
            "after it in the callbacks; put the LRSchedulerCallback first."
        )
    if found[0].scheduler.next_cycle_end(0) is None:
        raise ValueError(
            f"{owner}: at='cycle_end', but the scheduler {type(found[0].scheduler).__name__} "
            "has no cycles; use a cyclic one (CyclicLR, CosineAnnealingWarmRestarts) or take "
            "snapshots on a fixed cadence with every_steps=n."
        )
    return found[0]
