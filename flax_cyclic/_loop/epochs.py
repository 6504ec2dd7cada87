"""The epochs of one ``Trainer.fit`` run: their steps, and what is decided where one ends."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from flax_cyclic._loop.data import data_state, seek
from flax_cyclic._loop.dispatch import Dispatch, Dispatcher
from flax_cyclic._loop.due import Due
from flax_cyclic._loop.resume import RunCheckpoints
from flax_cyclic._loop.run import END, REPLAY, Run
from flax_cyclic._loop.state import TrainerLoop
from flax_cyclic._metrics import mean_metrics

__all__ = ["EpochRunner"]


@dataclasses.dataclass(frozen=True)
class EpochRunner:
    """Trains the epochs of one run, one or several steps per dispatch, and ends them.

    Attributes:
        callbacks: The loop the hooks see; its ``step``, ``epoch`` and ``stop_training``.
        dispatcher: Trains the steps and replays their hooks.
        checkpoints: The run's checkpoints, saved where ``due`` says.
        due: What is due at a step of the run.
        evaluate: ``evaluate(eval_data) -> summary``: evaluates and reports to the hooks.
        steps_per_dispatch: Train steps per call into compiled code.
    """

    callbacks: TrainerLoop
    dispatcher: Dispatcher
    checkpoints: RunCheckpoints
    due: Due
    evaluate: Callable[[Iterable[Any]], dict[str, float]]
    steps_per_dispatch: int = dataclasses.field(kw_only=True)

    def run_epoch(self, run: Run) -> None:
        """Trains (the rest of) one epoch; at its end evaluates, runs the hooks and saves.

        The order at a step that ends an epoch is the one of docs/concepts.md: update, step
        hooks, evaluation, epoch-end hooks and decisions, then the save, so a checkpoint holds
        what every decision of that step needed.
        """
        self.callbacks.on_epoch_begin()
        batches = seek(iter(run.epochs_for(self.callbacks.epoch)), run.position, run.data_state)
        run.batches = batches
        if self._train_epoch(run, batches):
            self._end_epoch(run)
        elif run.epoch_metrics:  # stopped part-way: the partial epoch's means, no epoch end
            self._epoch_summary(run)

    def _epoch_summary(self, run: Run) -> dict[str, float]:
        """The epoch's train means (all of its steps, before a resume too), into the History."""
        summary: dict[str, float] = {"step": self.callbacks.step, "epoch": self.callbacks.epoch}
        summary |= mean_metrics(run.epoch_metrics)
        run.history.train.append(summary)
        return summary

    def _train_epoch(self, run: Run, batches: Iterator[Any]) -> bool:
        """Trains the epoch's remaining batches; False if the run stops within the epoch.

        At a step where something is due (an evaluation, a save, a stop), the next batch is
        fetched first (after the data position is recorded) to know whether the step ends the
        epoch: if it does, the epoch's end evaluates and saves, once, after its hooks.
        """
        batch = next(batches, END)
        if batch is END and run.position == 0:
            raise ValueError(
                f"Trainer.fit: epoch {self.callbacks.epoch} has no batches. If train_data is an "
                "iterator, pass a re-iterable (a list, a grain dataset) or a function epoch -> "
                "iterable instead: an iterator is exhausted after one epoch."
            )
        if self.steps_per_dispatch > 1:
            return self._train_epoch_dispatched(run, batches, batch)
        while batch is not END:
            run.epoch_metrics.append(self.dispatcher.train_one(batch))
            run.position += 1
            run.data_state = None
            if not self._after_step(run):
                batch = next(batches, END)
                continue
            run.data_state = data_state(batches)  # where the data stand after this step
            batch = next(batches, END)
            if self._decide(run, batch):
                return not run.stop
        return True

    def _decide(self, run: Run, batch: Any) -> bool:
        """At a step where something is due: stop, end the epoch, or evaluate and save.

        Returns whether the epoch's training ends here (``batch``, the next one, is ``END``
        at the epoch's last step, whose end evaluates and saves).
        """
        if run.stop:
            return True  # preempted, or stopped by a step hook: saved as it is
        if batch is END:
            return True  # the epoch's last step: its end evaluates and saves
        evaluated = run.eval_due
        if evaluated and run.eval_data is not None:
            run.history.eval.append(self.evaluate(run.eval_data))
        if self.due.save(self.callbacks.step, evaluated=evaluated):
            self.checkpoints.save(run)
        return self._stops_after_decisions(run)

    def _train_epoch_dispatched(self, run: Run, batches: Iterator[Any], batch: Any) -> bool:
        """``_train_epoch`` with several steps per dispatch; False if the run stops within.

        While a dispatch trains, the hooks of the one before it run. Where something is due
        at a dispatch's end (an evaluation, a save, ``num_steps``, the epoch's end) or a hook
        stopped the run, no next dispatch starts until its hooks have run: then the same
        decisions follow as with one step per dispatch.
        """
        flight: Dispatch | None = None
        while batch is not END:
            start = self.callbacks.step + (flight.length if flight else 0)
            dispatch = self.dispatcher.gather(run, start, batch, batches)
            run.position += len(dispatch)
            due = self.due.at(start + len(dispatch))
            if run.held is END:
                run.data_state = data_state(batches)  # where the data stand after it
                batch = next(batches, END)
            else:  # the iterator stands one batch further: a resume replays the position
                run.data_state, batch, run.held = REPLAY, run.held, END
            launched = self.dispatcher.launch(dispatch, start)
            if flight is not None:
                self.dispatcher.replay(run, flight, ahead=launched.length)
            flight = launched
            if not (due or batch is END or run.stop or self.callbacks.stop_training):
                continue
            self.dispatcher.replay(run, flight, ahead=0)
            flight = None
            if self._after_step(run, polled=True) and self._decide(run, batch):
                return not run.stop
        return True

    def _after_step(self, run: Run, *, polled: bool = False) -> bool:
        """After a step: notes a stop and what is due; whether anything is (then it looks ahead).

        A SIGTERM (agreed across processes) or a step hook's ``stop_training`` stops the run at
        this step, before any evaluation. ``polled``: the SIGTERM was polled at this step.
        """
        step = self.callbacks.step
        if not polled:
            run.poll_preemption(step)
        if not run.stop and self.callbacks.stop_training:
            run.history.stopped = run.stop = True
        run.eval_due = evaluates = self.due.evaluation(step)
        return run.stop or evaluates or run.reached(step) or self.due.save(step, evaluated=False)

    def _stops_after_decisions(self, run: Run) -> bool:
        """Whether a decision (e.g. early stopping) or ``num_steps`` ends the run here."""
        if self.callbacks.stop_training:
            run.history.stopped = run.stop = True
        elif run.reached(self.callbacks.step):
            run.stop = True
        return run.stop

    def _end_epoch(self, run: Run) -> None:
        """The end of an epoch: its train means, evaluation, hooks, then the save."""
        callbacks = self.callbacks
        summary = self._epoch_summary(run) if run.epoch_metrics else {}
        evaluated = run.eval_data is not None
        if run.eval_data is not None:
            run.history.eval.append(self.evaluate(run.eval_data))
        callbacks.on_epoch_end(summary)
        run.position, run.data_state, run.epoch_metrics = 0, None, []
        if self.due.save(callbacks.step, evaluated=evaluated, epoch_end=True):
            self.checkpoints.save(run)
        self._stops_after_decisions(run)
