"""One call of ``Trainer.fit``: its History, and where the run stands."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from flax_cyclic import _logging

__all__ = ["END", "REPLAY", "History", "Resumed", "Run"]

logger = _logging.logger

END = object()  # the end of an epoch's batches
REPLAY = object()  # a data state saved as none: a resume replays the epoch's position


@dataclasses.dataclass
class History:
    """Metrics of a [`Trainer.fit`][flax_cyclic.Trainer.fit] run, as Python floats.

    Attributes:
        train: One entry per epoch (or partial last epoch): ``step`` (train steps completed),
            ``epoch``, and the mean of each train metric over the epoch's steps.
        eval: One entry per evaluation: ``step``, ``epoch``, and the mean of each eval metric.
        resumed_from: The checkpoint step this run resumed from, or ``None`` if it started
            fresh.
        preempted: Whether a SIGTERM stopped the run (after saving a checkpoint); in a
            multi-process job, a SIGTERM to any process stops all of them at the same step.
        stopped: Whether a callback ended the run early by setting ``loop.stop_training``
            (e.g. [`EarlyStopping`][flax_cyclic.EarlyStopping]).
    """

    train: list[dict[str, float]] = dataclasses.field(default_factory=list)
    eval: list[dict[str, float]] = dataclasses.field(default_factory=list)
    resumed_from: int | None = None
    preempted: bool = False
    stopped: bool = False


@dataclasses.dataclass
class Resumed:
    """Where a run stands when ``fit`` begins: at the start, or as a checkpoint left it."""

    resumed: bool = False
    position: int = 0
    data_state: Any = None
    epoch_metrics: list[Mapping[str, Any]] = dataclasses.field(default_factory=list)
    stopped: bool = False


@dataclasses.dataclass
class Run:
    """One call of ``fit``: what it runs, and where it stands."""

    epochs_for: Callable[[int], Iterator[Any]]
    num_epochs: int | None
    num_steps: int | None
    eval_data: Iterable[Any] | None
    eval_every_steps: int | None
    preempted: Callable[[int], bool]
    history: History
    position: int = 0  # batches done in the current epoch
    data_state: Any = None  # a grain iterator's state after `position` batches, to resume
    epoch_metrics: list[Mapping[str, Any]] = dataclasses.field(default_factory=list)
    batches: Any = None  # the current epoch's iterator
    eval_due: bool = False  # an evaluation is due after the current step
    stop: bool = False
    held: Any = END  # a batch fetched but left for the next dispatch (another shape)

    def reached(self, step: int) -> bool:
        """Whether ``num_steps`` is reached at ``step``."""
        return self.num_steps is not None and step >= self.num_steps

    def more(self, step: int, epoch: int) -> bool:
        """Whether the run has steps left after ``step`` steps in ``epoch`` epochs."""
        if self.num_steps is not None:
            return step < self.num_steps
        assert self.num_epochs is not None  # one of the two is given
        return epoch < self.num_epochs

    def poll_preemption(self, step: int) -> None:
        """Stops the run at ``step`` if a SIGTERM asked (agreed across processes)."""
        if not self.stop and self.preempted(step):
            self.history.preempted = self.stop = True
            logger.warning(
                "SIGTERM: saving step %d and stopping; run again to resume from it.", step
            )
