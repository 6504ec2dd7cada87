"""Weight averaging driven by the cycle: SWA at each cycle's end, or an EMA, on the device."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

import jax
import numpy as np
from flax import nnx

from flax_cyclic import _checks, _logging
from flax_cyclic._averaged import AveragedWeights, averaged_paths
from flax_cyclic.batch_stats import update_batch_stats
from flax_cyclic.callbacks._snapshot_steps import SnapshotSteps
from flax_cyclic.callbacks.base import Callback, Loop

__all__ = ["WeightAveraging"]

logger = _logging.logger


class WeightAveraging(Callback):
    """Averages the model's weights at each cycle's end (SWA), or every ``n`` steps or as an EMA.

    Stochastic weight averaging (Izmailov et al., 2018) averages the weights at the lowest
    learning rate of each cycle. With ``at='cycle_end'`` (the default) the snapshots are the
    models after the updates that end a cycle of the run's
    [`LRSchedulerCallback`][flax_cyclic.LRSchedulerCallback], as its scheduler defines them
    ([`LRScheduler.next_cycle_end`][flax_cyclic.LRScheduler.next_cycle_end]:
    [`CyclicLR`][flax_cyclic.CyclicLR]'s return to ``base_lr``,
    [`CosineAnnealingWarmRestarts`][flax_cyclic.CosineAnnealingWarmRestarts]' last step before
    a restart); with ``every_steps=n``, after every ``n``-th train step. ``decay`` turns the
    equal-weight mean into an exponential moving average of the same snapshots.

    The average lives on the device: float32 running means of every floating-point
    ``nnx.Param`` (never integer parameters, RNG state or BatchNorm statistics), updated after
    exactly the updates planned, with no read back to the host: at the cycle ends by a compiled
    call of its own between two steps (a dispatch of several steps ends there), with
    ``every_steps`` inside the [`Trainer`][flax_cyclic.Trainer]'s compiled step. A
    snapshot with a non-finite parameter is never averaged in: it is counted in ``refused`` and
    a warning names it at the end. The average is saved in every checkpoint and resumes
    exactly; when ``fit`` evaluates, the averaged weights are evaluated beside the model
    (``avg/<metric>`` in the History's evaluations, ``eval/avg/<metric>`` in TensorBoard), with
    the model's BatchNorm statistics, or statistics recomputed over ``batch_stats_data``.

    In a hand-written loop ([`CallbackList`][flax_cyclic.CallbackList]), ``on_step_end`` takes
    the snapshot (through ``nnx.jit``) at the same steps.

    Args:
        at: ``'cycle_end'``: at each cycle's end. The default unless ``every_steps`` is given.
        every_steps: Average after every ``every_steps``-th train step instead (``1``: every
            step, e.g. for an EMA).
        start_step: Take no snapshot until more than ``start_step`` train steps are done.
        decay: ``None`` (the default): the equal-weight mean (SWA). A number in ``[0, 1)``: an
            exponential moving average; the first snapshot starts it, every later one enters
            with weight ``1 - decay``.
        evaluate: Evaluate the averaged weights beside the model when ``fit`` evaluates.
        batch_stats_data: Training batches to recompute the BatchNorm statistics of the
            averaged model with ([`update_batch_stats`][flax_cyclic.update_batch_stats]),
            each time ``averaged_model()`` makes one (and so for each evaluation: a pass over
            these batches; a few hundred examples suffice). ``None``: the model's statistics.
        state_key: The key of the callback's state in a checkpoint.

    Raises:
        ValueError: For both ``at`` and ``every_steps``, an unknown ``at``, ``every_steps`` below
            1, a negative ``start_step``, or ``decay`` outside ``[0, 1)``.

    Example:
        >>> import optax
        >>> from flax import nnx
        >>> from flax_cyclic import CyclicLR, LRSchedulerCallback, Trainer, WeightAveraging
        >>> model = nnx.Linear(4, 3, rngs=nnx.Rngs(0))
        >>> tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1)
        >>> optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
        >>> scheduler = CyclicLR(base_lr=0.01, max_lr=0.1, step_size_up=2)
        >>> averaging = WeightAveraging()
        >>> trainer = Trainer(
        ...     model, optimizer, progress=False,
        ...     callbacks=[LRSchedulerCallback(scheduler), averaging],
        ... )
        >>> batches = [(np.ones((8, 4), np.float32), np.zeros(8, np.int32))] * 9
        >>> _ = trainer.fit(batches, num_epochs=1)
        >>> averaging.snapshots  # after 5 and 9 updates: CyclicLR back at base_lr
        2
        >>> type(averaging.averaged_model()).__name__
        'Linear'
    """

    def __init__(
        self,
        *,
        at: Literal["cycle_end"] | None = None,
        every_steps: int | None = None,
        start_step: int = 0,
        decay: float | None = None,
        evaluate: bool = True,
        batch_stats_data: Iterable[Any] | None = None,
        state_key: str | None = None,
    ) -> None:
        owner = "WeightAveraging"
        self._steps = SnapshotSteps(owner, at, every_steps, start_step)
        self.at, self.every_steps = self._steps.at, self._steps.every_steps
        self.start_step = self._steps.start_step
        if decay is not None and not (
            isinstance(decay, (int, float)) and not isinstance(decay, bool) and 0 <= decay < 1
        ):
            raise ValueError(
                f"{owner}: `decay` must be a number in [0, 1) for an exponential moving "
                f"average (e.g. 0.999), or None for the equal-weight mean; got {decay!r}."
            )
        self.decay = None if decay is None else float(decay)
        self.evaluate = _checks.flag(owner, "evaluate", evaluate)
        self.batch_stats_data = batch_stats_data
        self._state_key = state_key
        self._averaged: AveragedWeights | None = None
        self._loop: Loop | None = None

    @property
    def state_key(self) -> str:
        """``'WeightAveraging'``, or the ``state_key`` given."""
        return self._state_key or type(self).__name__

    # -- the rider --------------------------------------------------------------------------

    def rider(self, loop: Loop) -> AveragedWeights:
        """The running average (built from ``loop.model`` at the first call), for the loop."""
        self._loop = loop
        if self._averaged is None:
            # At the cycle ends: between dispatches (free at the other steps); every n steps:
            # inside the compiled step (a pass over the average at every step).
            sparse = self.at == "cycle_end"
            self._averaged = AveragedWeights(loop.model, decay=self.decay, sparse=sparse)
        return self._averaged

    def rides_ahead(self, loop: Loop, start: int, steps: int) -> np.ndarray:
        """``1`` at each of the steps ``start`` to ``start + steps - 1`` that takes a snapshot."""
        takes = self._steps.takes
        if steps == 1:  # one step per dispatch: asked at every step
            return np.array([takes(start)], np.int32)
        return np.fromiter((takes(step) for step in range(start, start + steps)), np.int32)

    # -- hooks ------------------------------------------------------------------------------

    def on_train_begin(self, loop: Loop) -> None:
        """Finds the cycle's ends (``at='cycle_end'``) and checks that the run has some.

        Raises:
            ValueError: If ``at='cycle_end'`` and the loop has no
                [`LRSchedulerCallback`][flax_cyclic.LRSchedulerCallback] before this callback,
                or its scheduler has no cycles or is stepped per epoch; or if (the run's length
                known, nothing averaged yet) no snapshot falls between ``start_step`` and the
                run's end.
        """
        averaged = self.rider(loop)
        taken = int(jax.device_get(averaged.count[...])) > 0
        self._steps.begin(loop, self, any_taken=taken)

    def on_train_end(self, loop: Loop) -> None:
        """Warns of the snapshots left out of the average for a non-finite parameter."""
        refused = self.refused
        if refused:
            logger.warning(
                "WeightAveraging: %d snapshot(s) had a non-finite parameter and were left out "
                "of the average of %d.",
                refused,
                self.snapshots,
            )

    def on_step_end(self, loop: Loop, step: int, metrics: Mapping[str, Any]) -> None:
        """In a hand-written loop, takes the snapshot of this step (the Trainer's step does)."""
        if not getattr(loop, "runs_riders", False) and self._steps.takes(step):
            _take(self.rider(loop), loop.model, 1)

    def evaluated_beside(self, loop: Loop) -> dict[str, Any]:
        """``{'avg': averaged_model()}`` once a snapshot is in (with ``evaluate=True``)."""
        if not self.evaluate or self.snapshots == 0:
            return {}
        return {"avg": self.averaged_model()}

    # -- results ----------------------------------------------------------------------------

    @property
    def snapshots(self) -> int:
        """The snapshots averaged in so far (a read from the device)."""
        return self._counted("count")

    @property
    def refused(self) -> int:
        """The snapshots refused for a non-finite parameter (a read from the device)."""
        return self._counted("refused")

    def _counted(self, counter: str) -> int:
        """One of the average's counters, up to date (0 before the average exists)."""
        if self._averaged is None:
            return 0
        self._up_to_date()
        return int(jax.device_get(getattr(self._averaged, counter)[...]))

    def averaged_model(self, model: nnx.Module | None = None) -> nnx.Module:
        """A copy of the model with the averaged weights (its other state: the model's).

        Args:
            model: The model to copy (of the structure averaged); the loop's by default.

        Raises:
            RuntimeError: Before the first snapshot.
            ValueError: If ``model``'s parameters do not match the average's.
        """
        if self.snapshots == 0:
            raise RuntimeError(
                "WeightAveraging.averaged_model: no snapshot was averaged yet (the first is "
                "taken at the first cycle end after start_step): train further first."
            )
        assert self._averaged is not None
        assert self._loop is not None
        source = self._loop.model if model is None else model
        if tuple(averaged_paths(source)) != self._averaged.paths:
            raise ValueError(
                "WeightAveraging.averaged_model: the model's parameters are not the ones "
                "averaged; pass a model of the structure trained."
            )
        copy = nnx.clone(source)
        self._averaged.apply_to(copy)
        if self.batch_stats_data is not None:
            update_batch_stats(copy, self.batch_stats_data)
        return copy

    def _up_to_date(self) -> None:
        if self._loop is not None:
            self._loop.model  # noqa: B018 - brings the training state (and the average) back


@nnx.jit
def _take(averaged: AveragedWeights, model: nnx.Module, flag: Any) -> None:
    averaged.take(model, flag)
