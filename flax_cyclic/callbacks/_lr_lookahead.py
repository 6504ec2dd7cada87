"""The LR callback's values ahead: what a dispatch of several train steps will apply.

A loop that runs several steps per dispatch asks for their values before it runs them
(``Callback.hyperparams_ahead``). [`Lookahead`] computes them on a copy of the scheduler,
stepped as the callback steps the scheduler itself, keeps the copy for the next dispatch, and
remembers each step's values so that the callback's ``on_step_end`` can check that the
scheduler then gives the same ones.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from flax_cyclic._hyperparams import Target, held_value
from flax_cyclic.callbacks._planned import held_wide
from flax_cyclic.schedulers import LRScheduler

#: A scheduler's values at one train step: per kind ('lr', 'momentum'), one per group.
Values = dict[str, list[float]]


def scheduler_values(scheduler: LRScheduler) -> Values:
    """The scheduler's current values per kind (``'lr'``, ``'momentum'``) and group."""
    values = {"lr": scheduler.get_last_lr()}
    momentum = scheduler.get_last_momentum()
    if momentum is not None:
        values["momentum"] = momentum
    return values


class Lookahead:
    """A copy of the scheduler stepped ahead, and the values it gave per train step."""

    def __init__(self) -> None:
        self._planned: dict[int, tuple[list[float], list[float] | None]] = {}
        self._ahead: tuple[int, LRScheduler] | None = None  # (its train step, the copy)

    def reset(self) -> None:
        """Forgets the copy and the values planned (the scheduler was set anew)."""
        self._planned, self._ahead = {}, None

    def rows(
        self, scheduler: LRScheduler, train_steps: int, start: int, steps: int, every: int | None
    ) -> list[Values]:
        """The values of train steps ``start`` to ``start + steps - 1``, from a copy.

        Args:
            scheduler: The callback's scheduler, at train step ``train_steps``; not moved.
            train_steps: The train steps the callback has counted.
            start: The first train step of the dispatch (at or after ``train_steps``).
            steps: The dispatch's train steps.
            every: Train steps per parameter update: the copy steps once per update. ``None``
                for a scheduler that steps per epoch or on a metric: it holds its current
                values within a dispatch, and no copy is made.
        """
        if every is None:
            return [scheduler_values(scheduler)] * steps
        if self._ahead is None or self._ahead[0] != start:
            copied = copy.deepcopy(scheduler)
            for done in range(train_steps, start):
                if (done + 1) % every == 0:
                    copied.step()
            self._ahead = (start, copied)
        ahead = self._ahead[1]
        rows = []
        for done in range(start, start + steps):
            lr, momentum = ahead.get_last_lr(), ahead.get_last_momentum()
            self._planned[done] = (lr, momentum)
            rows.append({"lr": lr} if momentum is None else {"lr": lr, "momentum": momentum})
            if (done + 1) % every == 0:
                ahead.step()
        self._ahead = (start + steps, ahead)
        return rows

    def check(self, owner: str, scheduler: LRScheduler, step: int) -> None:
        """Refuses values that differ from those planned for train ``step`` (if any were).

        Raises:
            RuntimeError: If the scheduler now gives other values than its copy gave.
        """
        planned = self._planned.pop(step, None)
        if planned is None or planned == (scheduler.get_last_lr(), scheduler.get_last_momentum()):
            return
        raise RuntimeError(
            f"{owner}: at train step {step} the scheduler gives "
            f"{scheduler_values(scheduler)}, but computed ahead for the loop's dispatch (on a "
            f"copy of the scheduler) it gave {{'lr': {planned[0]}, 'momentum': {planned[1]}}}, "
            "and those were applied. A scheduler whose values depend on more than its own "
            "state (e.g. a scale_fn that keeps a counter of its own) cannot be computed ahead: "
            "train with steps_per_dispatch=1, or make the scale_fn a function of its argument "
            "only."
        )

    @property
    def pending(self) -> bool:
        """Whether values were planned for steps whose hooks have not run yet."""
        return bool(self._planned)


def planned_values(
    owner: str, targets: list[Target], rows: list[Values]
) -> list[tuple[Any, np.ndarray]]:
    """Per target, its variable and its value at each row, as the variable holds it.

    Raises:
        ValueError: For a value the optimizer could not apply as given (see ``held_value``).
    """
    planned = []
    for target in targets:
        values = np.array([row[target.kind][target.group] for row in rows])
        held = held_wide(values, target.state.dtypes[target.name])
        if held is None:
            held = held_value(owner, target.state, target.name, values)
        planned.append((target.state.values[target.name], held))
    return planned
