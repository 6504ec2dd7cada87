"""What is due at a step: one answer for one step and for several steps per dispatch."""

from __future__ import annotations

from typing import Any

from flax_cyclic._cadence import every
from flax_cyclic._loop.run import Run

__all__ = ["Due"]


class Due:
    """Whether an evaluation, a save or the run's end falls at a step of ``run``.

    The Trainer asks after every step (one step per dispatch) or, ahead, for the step a
    dispatch would end at (several): where something is due, the step is a dispatch's end, the
    hooks run with nothing ahead, and the decisions of docs/concepts.md follow in their order.

    Args:
        run: The run: its evaluation data and interval, and ``num_steps``.
        checkpointer: Its [`Checkpointer`][flax_cyclic.Checkpointer], or ``None``.
    """

    def __init__(self, run: Run, checkpointer: Any) -> None:
        self._run = run
        self._checkpointer = checkpointer

    def evaluation(self, step: int) -> bool:
        """Whether an evaluation falls at ``step`` (``eval_every_steps``; epoch ends apart)."""
        return self._run.eval_data is not None and every(step, self._run.eval_every_steps)

    def save(self, step: int, *, evaluated: bool, epoch_end: bool = False) -> bool:
        """Whether the checkpointer saves at ``step`` (after an evaluation there, if any)."""
        return self._checkpointer is not None and self._checkpointer.should_save(
            step, epoch_end=epoch_end, evaluated=evaluated
        )

    def at(self, step: int) -> bool:
        """Whether an evaluation, a save or ``num_steps`` falls at ``step`` (within an epoch)."""
        evaluates = self.evaluation(step)
        return evaluates or self._run.reached(step) or self.save(step, evaluated=evaluates)
