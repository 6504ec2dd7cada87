"""Where the LR callback's cycles end, in train steps: for weight averaging and snapshots.

A scheduler counts its own steps (one per parameter update); a loop counts train steps
(several per update under ``optax.MultiSteps``). [`Cycles`] maps the scheduler's cycle ends
([`LRScheduler.next_cycle_end`][flax_cyclic.LRScheduler.next_cycle_end]) onto the train steps
whose update applies them, from where the callback stands, for steps ahead or behind alike.
"""

from __future__ import annotations

from typing import NamedTuple

from flax_cyclic.schedulers import LRScheduler

__all__ = ["Cycles", "cycles_of"]


class Cycles(NamedTuple):
    """The scheduler at train step ``train_steps``, which counts one step per ``every``.

    Args:
        scheduler: The callback's scheduler (``last_epoch``: the count the update of train
            step ``train_steps`` applies, if that step updates).
        train_steps: The train steps the callback has counted.
        every: Train steps per parameter update.
    """

    scheduler: LRScheduler
    train_steps: int
    every: int

    def count(self, step: int) -> int:
        """The scheduler count that the update at train ``step`` applies."""
        return self.scheduler.last_epoch + step // self.every - self.train_steps // self.every

    def ends_cycle(self, step: int) -> bool:
        """Whether the update of train ``step`` (counted from 0) ends a cycle."""
        if (step + 1) % self.every:
            return False  # a micro-batch: no update
        count = self.count(step)
        return self.scheduler.next_cycle_end(count) == count

    def next_end(self, step: int) -> int | None:
        """The first train step from ``step`` whose update ends a cycle; ``None``: no cycles."""
        update = -(-(step + 1) // self.every) * self.every - 1  # the first that updates
        count = self.count(update)
        end = self.scheduler.next_cycle_end(count)
        return None if end is None else update + (end - count) * self.every


def cycles_of(owner: str, scheduler: LRScheduler, train_steps: int, every: int | None) -> Cycles:
    """An LR callback's cycles; ``every``: ``None`` for a scheduler not stepped per update.

    Raises:
        ValueError: If the scheduler is stepped per epoch or on a metric: where its cycles end
            in train steps is not known in advance.
    """
    if every is None:
        raise ValueError(
            f"{owner}: its scheduler steps per epoch or on a metric, so where its cycles end "
            "is not known in advance. Step it every update (interval='step', no monitor) to "
            "average at its cycle ends, or average on a fixed cadence (every_steps=n)."
        )
    return Cycles(scheduler, train_steps, every)
