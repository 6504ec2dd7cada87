"""The callbacks a Trainer adds to the user's: chosen by what the callbacks say they do."""

from __future__ import annotations

from collections.abc import Sequence

from flax_cyclic.callbacks.base import Callback, MetricWriter
from flax_cyclic.callbacks.metrics_logger import MetricsLogger
from flax_cyclic.callbacks.monitor import LearningRateMonitor
from flax_cyclic.callbacks.progress import ProgressBar

__all__ = ["with_defaults"]


def with_defaults(
    callbacks: Sequence[Callback],
    *,
    writer: MetricWriter | None,
    log_every_steps: int,
    progress: bool | None,
) -> list[Callback]:
    """``callbacks`` with the Trainer's defaults around them (as Keras adds its own).

    With a ``writer``: a [`LearningRateMonitor`][flax_cyclic.LearningRateMonitor] first (it
    reads what the optimizer applied before a scheduler callback writes the next update's
    value), unless a callback already logs the learning rate
    ([`Callback.logs_learning_rate`][flax_cyclic.Callback.logs_learning_rate]), and a
    [`MetricsLogger`][flax_cyclic.MetricsLogger] last. A
    [`ProgressBar`][flax_cyclic.ProgressBar] last unless ``progress`` is ``False``.
    """
    chosen = list(callbacks)
    if writer is not None:
        if not any(getattr(callback, "logs_learning_rate", False) for callback in chosen):
            chosen.insert(0, LearningRateMonitor(writer, log_every_steps=log_every_steps))
        chosen.append(MetricsLogger(writer, log_every_steps=log_every_steps))
    if progress is not False:
        chosen.append(ProgressBar(enabled=progress))
    return chosen
