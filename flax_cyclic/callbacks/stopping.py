"""Callbacks that stop training."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

from flax_cyclic._errors import NonFiniteError
from flax_cyclic.callbacks.base import Callback, Loop

__all__ = ["TerminateOnNaN"]


class TerminateOnNaN(Callback):
    """Stops training at the first train step whose metrics hold a NaN or an infinity.

    It raises a [`NonFiniteError`][flax_cyclic.NonFiniteError] from ``on_step_end``.

    Cost: it reads the step's metrics on the host after every step, a device synchronisation
    per step that keeps the host from queueing the next steps while the device works (on
    an accelerator this can cost a sizeable share of the throughput of a small model; on a
    CPU little). Without it, a [`Trainer`][flax_cyclic.Trainer] with a
    [`Checkpointer`][flax_cyclic.Checkpointer] still never saves a non-finite state: it
    stops at the next save, naming the first non-finite step.

    The error propagates out of the loop: ``on_exception`` runs, a save in flight completes,
    and the newest checkpoint stays the last good one.

    Args:
        monitor: The metric names to watch; ``None`` watches every metric of the step.

    Examples:
        >>> import numpy as np
        >>> from flax_cyclic import TerminateOnNaN
        >>> callback = TerminateOnNaN(monitor=["loss"])
        >>> callback.on_step_end(None, 7, {"loss": np.float32(np.nan)})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        flax_cyclic.NonFiniteError: TerminateOnNaN: train step 7 gave loss=nan (hooks count ...
    """

    def __init__(self, *, monitor: Sequence[str] | None = None) -> None:
        if isinstance(monitor, str) or (
            monitor is not None and not all(isinstance(name, str) for name in monitor)
        ):
            raise TypeError(
                f"TerminateOnNaN: `monitor` must be a list of metric names or None, got "
                f"monitor={monitor!r}; e.g. monitor=['loss']."
            )
        self.monitor = None if monitor is None else list(monitor)

    def on_step_end(self, loop: Loop, step: int, metrics: Mapping[str, Any]) -> None:
        """Reads the metrics (a device sync) and raises if one of them is not finite."""
        names = list(metrics) if self.monitor is None else self.monitor
        absent = [name for name in names if name not in metrics]
        if absent:
            raise KeyError(
                f"TerminateOnNaN: the train step returned no {absent} (it returned "
                f"{sorted(metrics)}); pass monitor= with names it returns."
            )
        values = jax.device_get({name: metrics[name] for name in names})
        bad = {name: value for name, value in values.items() if not np.all(np.isfinite(value))}
        if bad:
            shown = ", ".join(f"{name}={np.asarray(value).tolist()}" for name, value in bad.items())
            raise NonFiniteError(
                f"TerminateOnNaN: train step {step} gave {shown} (hooks count steps from 0). "
                "Training stopped at once; lower the learning rate (e.g. max_lr) or clip the "
                "gradients (optax.clip_by_global_norm)."
            )
