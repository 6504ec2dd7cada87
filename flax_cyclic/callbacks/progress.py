"""A progress bar on the terminal for long runs (rich)."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import jax
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from flax_cyclic import _checks
from flax_cyclic._cadence import every
from flax_cyclic.callbacks.base import Callback, Loop
from flax_cyclic.schedulers import LRScheduler

__all__ = ["ProgressBar"]


class ProgressBar(Callback):
    """Shows the step, the loss, the learning rate and the cycle while training.

    Off when the terminal is not a TTY (a log file, CI) unless ``enabled=True``. The loss is
    read from the device every ``every_steps`` steps only; the learning rate and the cycle come
    from the loop's [`LRSchedulerCallback`][flax_cyclic.LRSchedulerCallback], on the host.

    Args:
        enabled: ``None`` (default): on when the console is a terminal; or force it.
        every_steps: Refresh the numbers every this many steps.
        console: A ``rich.console.Console``; by default one on standard error.
    """

    def __init__(
        self,
        *,
        enabled: bool | None = None,
        every_steps: int = 10,
        console: Console | None = None,
    ) -> None:
        self.console = console or Console(file=sys.stderr)
        self.enabled = self.console.is_terminal if enabled is None else bool(enabled)
        self.every_steps = _checks.integer(
            "ProgressBar", "every_steps", every_steps, minimum=1, hint="e.g. 10."
        )
        self._progress: Progress | None = None
        self._task: Any = None
        self._scheduler: Any = None

    def on_train_begin(self, loop: Loop) -> None:
        """Starts the bar at the loop's step (a resumed run starts part-way)."""
        if not self.enabled or jax.process_index() != 0:
            return

        # The scheduler an LR callback of the loop owns (any callback with one).
        self._scheduler = next(
            (
                c.scheduler
                for c in getattr(loop, "callbacks", [])
                if isinstance(getattr(c, "scheduler", None), LRScheduler)
            ),
            None,
        )
        self._progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=self.console,
        )
        self._task = self._progress.add_task(
            "train", total=getattr(loop, "total_steps", None), completed=loop.step, info=""
        )
        self._progress.start()

    def on_step_end(self, loop: Loop, step: int, metrics: Mapping[str, Any]) -> None:
        """Advances the bar; refreshes the numbers every ``every_steps`` steps."""
        if self._progress is None:
            return
        if not every(step + 1, self.every_steps):
            self._progress.update(self._task, completed=step + 1)
            return
        parts = []
        if "loss" in metrics:
            parts.append(f"loss {float(metrics['loss']):.4f}")
        if self._scheduler is not None:
            parts.append(f"lr {self._scheduler.get_last_lr()[0]:.3g}")
            if hasattr(self._scheduler, "cycle"):
                parts.append(f"cycle {self._scheduler.cycle}")
        self._progress.update(self._task, completed=step + 1, info="  ".join(parts))

    def on_train_end(self, loop: Loop) -> None:
        """Stops the bar."""
        self._stop()

    def on_exception(self, loop: Loop, exception: BaseException) -> None:
        """Stops the bar, leaving the terminal usable."""
        self._stop()

    def _stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
