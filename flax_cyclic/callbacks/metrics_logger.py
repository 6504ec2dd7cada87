"""Train and eval metrics to a CLU ``MetricWriter``, with steps per second."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

from flax_cyclic._metrics import check_scalar_metrics, mean_metrics
from flax_cyclic.callbacks._writing import WritingCallback
from flax_cyclic.callbacks.base import Loop, MetricWriter

__all__ = ["MetricsLogger"]


class MetricsLogger(WritingCallback):
    """Writes the mean train metrics every ``log_every_steps`` steps, and every evaluation.

    Tags: ``train/<name>`` (the mean over the steps since the last write), ``steps_per_sec``,
    and ``eval/<name>``. Step ``s`` means ``s`` updates completed, for every tag: the means of
    updates ``0 .. N-1`` are written at step ``N`` (``N`` = ``log_every_steps``), then at ``2N``,
    ``3N``, ..., where the learning rate of the window's last update is logged too; an
    evaluation run after ``s`` updates is written at step ``s``, the step of the checkpoint
    saved with it. Train metrics stay on the device between writes: one transfer per write,
    none per step. Only process 0 writes. The writer is flushed at the end of training and
    when the loop raises.

    The steps since the last write are part of the checkpointed state, so a run resumed
    between two writes writes the same means as an uninterrupted run.

    Args:
        writer: A CLU ``MetricWriter``, e.g. from [`create_writer`][flax_cyclic.create_writer].
        log_every_steps: Write every this many train steps (the name the
            [`Trainer`][flax_cyclic.Trainer] and the learning-rate callbacks give it too).
        clock: Seconds for steps/s; ``time.perf_counter`` unless a test passes its own.
        every_steps: The earlier name of ``log_every_steps``; it still works, with a
            ``FutureWarning``.
    """

    def __init__(
        self,
        writer: MetricWriter,
        *,
        log_every_steps: int = 50,
        clock: Callable[[], float] = time.perf_counter,
        every_steps: int | None = None,
    ) -> None:
        if every_steps is not None:
            warnings.warn(
                "MetricsLogger: `every_steps` is now called `log_every_steps`, as in the Trainer "
                "and the learning-rate callbacks; pass log_every_steps=...",
                FutureWarning,
                stacklevel=2,
            )
            log_every_steps = every_steps
        super().__init__(writer, log_every_steps=log_every_steps)
        self.clock = clock
        self._window: list[Mapping[str, Any]] = []
        self._since: tuple[int, float] | None = None

    def on_train_begin(self, loop: Loop) -> None:
        """Starts the steps/s clock."""
        self._since = (loop.step, self.clock())

    def state_dict(self) -> dict[str, Any]:
        """The metrics of the steps since the last write (host floats and their dtypes).

        Empty when there are none, so that a run can be resumed with a logger added.
        """
        if not self._window:
            return {}
        host = jax.device_get(list(self._window))
        return {
            "window": [{name: float(value) for name, value in m.items()} for m in host],
            "dtypes": {name: str(np.asarray(value).dtype) for name, value in host[0].items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restores [`state_dict`][flax_cyclic.MetricsLogger.state_dict]'s output."""
        dtypes = state.get("dtypes", {})
        self._window = [
            {name: np.asarray(value, dtype=dtypes.get(name)) for name, value in m.items()}
            for m in state.get("window", [])
        ]

    def on_step_end(self, loop: Loop, step: int, metrics: Mapping[str, Any]) -> None:
        """Keeps update ``step``'s metrics; every ``log_every_steps`` updates writes their means.

        Raises:
            TypeError: If a metric is not a scalar (checked at the first step of each window,
                and for every step when the means are written).
        """
        if not self._window:  # once per window: a step's shapes do not change between steps
            check_scalar_metrics("MetricsLogger", metrics)
        self._window.append(metrics)
        done = step + 1
        if not self.due(done):
            return
        means = mean_metrics(self._window, owner="MetricsLogger")
        scalars = {f"train/{name}": value for name, value in means.items()}
        now = self.clock()
        assert self._since is not None, "on_train_begin starts the clock"
        first_step, since = self._since
        if now > since:
            scalars["steps_per_sec"] = (done - first_step) / (now - since)
        self._since = (done, now)
        self._window = []
        self.write_scalars(done, scalars)

    def on_eval_end(self, loop: Loop, metrics: Mapping[str, Any]) -> None:
        """Writes the evaluation's metrics at the loop's step (the updates completed).

        Raises:
            TypeError: If a metric is not a scalar.
        """
        check_scalar_metrics("MetricsLogger", metrics)
        scalars = {
            f"eval/{name}": float(value)
            for name, value in metrics.items()
            if name not in ("step", "epoch")
        }
        self.write_scalars(loop.step, scalars)
