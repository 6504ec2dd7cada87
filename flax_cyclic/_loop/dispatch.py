"""Training steps in dispatches: one step, or ``k`` stacked batches as one compiled scan.

With one step per dispatch the hooks run around each step. With ``k``, a dispatch trains while
the hooks of the one before it run (``replay``), each step's hooks with that step's metrics and
applied hyperparameters, ``loop.steps_ahead`` saying how far the state is ahead of them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

import jax
import numpy as np

from flax_cyclic import _checks, _logging, _modes
from flax_cyclic._loop.data import shapes
from flax_cyclic._loop.placement import Placement
from flax_cyclic._loop.resume import RunCheckpoints
from flax_cyclic._loop.run import END, Run
from flax_cyclic._loop.state import TrainerLoop
from flax_cyclic._metrics import check_scalar_metrics, local_copy
from flax_cyclic._split_step import SplitStep

__all__ = ["Dispatch", "Dispatcher", "check_metrics", "dispatching"]

logger = _logging.logger


class Dispatch(NamedTuple):
    """Steps started as one compiled scan, whose hooks have yet to run."""

    length: int
    metrics: Mapping[str, Any]  # stacked, on the device
    applied: list[Any]  # per injected variable, the value each step applied


class Dispatcher:
    """Runs the train steps of a run, ``steps`` per dispatch, and their step hooks.

    Args:
        loop: The Trainer's callback list.
        split_step: The compiled step over split, donated state.
        placement: Where batches go (a mesh, or none).
        checkpoints: The run's checkpoints (each step's metrics are noted until a save).
        steps: Train steps per dispatch.
        has_rngs: Whether the Trainer passes ``rngs`` to the step (for a clearer error).
    """

    def __init__(
        self,
        loop: TrainerLoop,
        split_step: SplitStep,
        placement: Placement,
        checkpoints: RunCheckpoints,
        *,
        steps: int,
        has_rngs: bool,
    ) -> None:
        self._loop = loop
        self._split_step = split_step
        self._placement = placement
        self._checkpoints = checkpoints
        self.steps = steps
        self._has_rngs = has_rngs
        self.at_boundary = True  # the hooks before the next dispatch ran with nothing ahead
        self.metrics_checked = False  # whether the step's metrics were checked this run

    def train_one(self, batch: Any) -> Mapping[str, Any]:
        """Runs the hooks and the compiled train step for one batch; returns its metrics."""
        callbacks = self._loop
        callbacks.on_step_begin()
        with self._clearer_errors():
            metrics = self._split_step(self._placement.shard(batch))
        if not self.metrics_checked:  # a compiled step's metrics keep their shapes
            check_metrics(metrics)
            self.metrics_checked = True
        self._checkpoints.trained(callbacks.step, metrics)
        callbacks.on_step_end(metrics)
        return metrics

    @contextlib.contextmanager
    def _clearer_errors(self) -> Iterator[None]:
        """Turns the error of a model that needs the Trainer's ``rngs`` into one saying so."""
        try:
            yield
        except ValueError as error:
            clearer = _modes.needs_rngs("Trainer.fit", error) if not self._has_rngs else None
            if clearer is not None:
                raise clearer from error
            raise

    def gather(self, run: Run, start: int, first: Any, batches: Iterator[Any]) -> list[Any]:
        """The batches of the dispatch from step ``start``: to the next multiple of ``k``.

        Fewer at the epoch's end, at ``num_steps``, and before a batch of another shape (a
        smaller last batch): that one is kept in ``run.held`` for the next dispatch.
        """
        length = self.steps - start % self.steps
        if run.num_steps is not None:
            length = min(length, run.num_steps - start)
        dispatch, first_shapes = [first], shapes(first)
        while len(dispatch) < length:
            batch = next(batches, END)
            if batch is END:
                break
            if shapes(batch) != first_shapes:
                run.held = batch
                break
            dispatch.append(batch)
        return dispatch

    def launch(self, dispatch: list[Any], start: int) -> Dispatch:
        """Starts the steps of ``dispatch`` as one compiled scan; returns without waiting.

        The hyperparameters a callback writes between steps are asked for in advance
        (``hyperparams_ahead``); the others keep their values.
        """
        length = len(dispatch)
        stacked = self._placement.shard(
            jax.tree.map(lambda *leaves: np.stack(leaves), *dispatch), axis=1
        )
        self._split_step.prepare()  # what the hooks left in the objects, split again
        planned = self._loop.hyperparams_ahead(start, length)
        if self.at_boundary:  # the hooks ran with nothing ahead: their writes must hold
            self._loop.enter_dispatch(planned)
            self.at_boundary = False
        variables = self._split_step.injected()
        unknown = set(planned) - {id(variable) for variable in variables}
        if unknown:
            planners = sorted({self._loop.planners[key] for key in unknown})
            raise ValueError(
                f"Trainer.fit: {', '.join(planners)} gave values ahead (hyperparams_ahead) for "
                "a variable that is not an injected hyperparameter of the optimizer the loop "
                "trains, so they would never be applied. Return the optimizer's own injected "
                "variables (loop.optimizer.opt_state.hyperparams[...]), found anew after an "
                "opt_state is assigned."
            )
        values = [
            planned[id(variable)]
            if id(variable) in planned
            else np.broadcast_to(np.asarray(local_copy(variable.get_raw_value())), (length,))
            for variable in variables
        ]
        with self._clearer_errors():
            metrics, applied = self._split_step.run(stacked, values)
        check_metrics(metrics, stacked=True)
        return Dispatch(length, metrics, applied)

    def replay(self, run: Run, dispatch: Dispatch, *, ahead: int) -> None:
        """Runs the step hooks of a dispatch that trained, in order, with each step's metrics.

        A hook that reads ``loop.optimizer`` finds in its injected hyperparameters what its
        step applied (as read back from the scan); ``loop.steps_ahead`` counts the updates
        the state has made beyond the step (``ahead`` more: a dispatch training meanwhile),
        and a hook that changes the state while it is ahead is refused (``TrainerLoop``). A
        SIGTERM is polled at the dispatch's end.
        """
        callbacks, last = self._loop, dispatch.length - 1
        metrics, applied = jax.device_get((dispatch.metrics, dispatch.applied))
        steps = [{name: value[i] for name, value in metrics.items()} for i in range(last + 1)]
        try:
            for i, step_metrics in enumerate(steps):
                # Ahead of what step i's hooks see with one step per dispatch: before update i
                # at on_step_begin (one update more), after it at on_step_end.
                callbacks.steps_ahead = last - i + 1 + ahead
                if i < last:
                    callbacks.applied = (applied, i)  # put in place if a hook reads them
                else:  # the last step: put in place now, before its hooks write the next
                    callbacks.applied = None
                    callbacks.show({j: value[i, ...] for j, value in enumerate(applied)})
                callbacks.on_step_begin()
                callbacks.steps_ahead -= 1
                self._checkpoints.trained(callbacks.step, step_metrics)
                callbacks.on_step_end(step_metrics)
        finally:
            callbacks.steps_ahead, callbacks.applied = 0, None
        self.at_boundary = ahead == 0
        run.epoch_metrics.extend(steps)
        run.poll_preemption(callbacks.step)


def dispatching(steps_per_dispatch: Any, unroll_dispatch: Any) -> tuple[int, int | bool]:
    """``steps_per_dispatch`` and ``unroll_dispatch``, checked."""
    steps = _checks.integer(
        "Trainer",
        "steps_per_dispatch",
        steps_per_dispatch,
        minimum=1,
        hint="Train steps per dispatch, e.g. 1 (the default) or 32.",
    )
    if isinstance(unroll_dispatch, bool):
        return steps, unroll_dispatch
    unroll = _checks.integer(
        "Trainer",
        "unroll_dispatch",
        unroll_dispatch,
        minimum=1,
        hint="Steps inlined per loop iteration, e.g. 1 (the default), or True for all.",
    )
    return steps, unroll


def check_metrics(metrics: Any, *, stacked: bool = False) -> None:
    """Refuses train metrics that are not a mapping of names to scalars (shapes only: no sync).

    ``stacked``: the metrics of a dispatch's steps, stacked on a first axis.
    """
    if not isinstance(metrics, Mapping):
        raise TypeError(
            "Trainer.fit: train_step must return a mapping of metric names "
            f"to scalars, e.g. {{'loss': loss}}; it returned {type(metrics).__name__}."
        )
    check_scalar_metrics("Trainer.fit", metrics, stacked=stacked)
