"""A compact fit loop for Flax NNX that runs callbacks."""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np
from flax import nnx

from flax_cyclic import _checks, _logging, _modes
from flax_cyclic._errors import CheckpointError, NonFiniteError
from flax_cyclic._loop.state import TrainerLoop
from flax_cyclic._metrics import local_copy, mean_metrics
from flax_cyclic._split_step import SplitStep
from flax_cyclic.callbacks.base import (
    Callback,
    MetricWriter,
    Monitored,
    check_optimizer,
)
from flax_cyclic.callbacks.lr import LRSchedulerCallback
from flax_cyclic.callbacks.metrics_logger import MetricsLogger
from flax_cyclic.callbacks.monitor import LearningRateMonitor
from flax_cyclic.callbacks.progress import ProgressBar
from flax_cyclic.checkpoint import Checkpointer
from flax_cyclic.steps import Metrics, classification_eval_step, classification_train_step

__all__ = ["History", "Trainer", "classification_eval_step", "classification_train_step"]

logger = _logging.logger


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


class Trainer:
    """Trains an NNX model with an ``nnx.Optimizer``, running callbacks at every hook.

    For example:

        trainer = Trainer(model, optimizer, callbacks=[LRSchedulerCallback(scheduler)])
        history = trainer.fit(train_batches, num_epochs=3, eval_data=test_batches)

    Args:
        model: The ``nnx.Module`` to train.
        optimizer: Its ``nnx.Optimizer``.
        train_step: ``train_step(model, optimizer, batch) -> metrics``, written as for
            ``nnx.jit``. Defaults to ``classification_train_step``. It runs as one ``jax.jit``
            function of the split model and optimizer state, which it donates: the step updates
            the arrays in place, and the NNX objects get them back when something reads them
            (evaluation, checkpoints, a callback reading ``loop.model`` / ``loop.optimizer``,
            the end of ``fit``). Inside ``fit``, read them through the loop (or
            ``trainer.model``), not through a reference kept from before.
        eval_step: ``eval_step(model, batch) -> metrics``; compiled with ``nnx.jit``. Defaults
            to ``classification_eval_step``.
        callbacks: [`Callback`][flax_cyclic.Callback] objects, called in order.
        checkpointer: A [`Checkpointer`][flax_cyclic.Checkpointer]: save the run as it goes and
            resume from its newest checkpoint.
        writer: A CLU ``MetricWriter`` (e.g. [`create_writer`][flax_cyclic.create_writer]):
            train metrics every ``log_every_steps`` steps, steps/s and eval metrics go to it,
            through a [`MetricsLogger`][flax_cyclic.MetricsLogger] added after ``callbacks``;
            and the learning rate the optimizer used, through a
            [`LearningRateMonitor`][flax_cyclic.LearningRateMonitor] added before them, unless
            a callback already logs it (an LR callback or a monitor with a writer).
        log_every_steps: How often the train metrics are written.
        progress: A [`ProgressBar`][flax_cyclic.ProgressBar] on the terminal: ``None`` shows it
            when standard error is a terminal, ``False`` never, ``True`` always.
        rngs: An ``nnx.Rngs`` for a model called as ``model(x, rngs=rngs)`` (the Flax NNX
            tutorials' style for ``nnx.Dropout``): the Trainer passes it to ``train_step`` as
            ``train_step(model, optimizer, batch, rngs=rngs)`` (the default step passes it on to
            the model) and carries its counters with the training state. Models that keep their
            own streams (``nnx.Dropout(rate, rngs=rngs)``) need none.
        mesh: A ``jax.sharding.Mesh`` to train data-parallel on. Before training (and before a
            restore, so a checkpoint loads onto this mesh, whatever device count saved it),
            every model and optimizer array not already sharded on ``mesh`` is replicated on
            it; arrays you sharded on ``mesh`` yourself keep their sharding. Each batch is
            split over ``data_axis``: in a multi-process run, each process passes its own
            part of the global batch (``jax.make_array_from_process_local_data``).
        data_axis: The mesh axis the batch dimension is split over.
        steps_per_dispatch: Train steps run per call into compiled code: ``k > 1`` runs ``k``
            batches, stacked, as one ``jax.jit`` function (a ``jax.lax.scan`` of the step)
            and saves ``k - 1`` Python round trips and launches per ``k`` steps; the
            learning rate stays exact at every update (see docs/concepts.md, "Several steps
            per dispatch"). The hooks of the ``k`` steps run after the dispatch, in order,
            with each step's metrics and the hyperparameters it applied; evaluations, saves
            and stops act at dispatch ends, which fall on multiples of ``k`` (and at epoch
            ends and ``num_steps``, where a dispatch may be shorter). ``eval_every_steps``
            and the checkpointer's ``every_steps`` must be multiples of ``k``.
        unroll_dispatch: How many steps of a dispatch are inlined into each iteration of its
            loop (``jax.lax.scan``'s ``unroll``); ``True`` inlines all ``k``: no loop, a longer
            compilation. On a CPU, convolutions inside XLA's loop run many times slower than
            outside it (about 20 times on a small CNN), so give ``True`` for
            a convolutional model there; a small dense model runs fastest with the default.

    Raises:
        TypeError: If ``optimizer`` is not an ``nnx.Optimizer``, a step is not callable or a
            callback is not a ``Callback``.
    """

    def __init__(
        self,
        model: nnx.Module,
        optimizer: nnx.Optimizer,
        *,
        train_step: Callable[..., Metrics] = classification_train_step,
        eval_step: Callable[..., Metrics] = classification_eval_step,
        callbacks: Sequence[Callback] = (),
        checkpointer: Checkpointer | None = None,
        writer: MetricWriter | None = None,
        log_every_steps: int = 50,
        progress: bool | None = None,
        rngs: nnx.Rngs | None = None,
        mesh: jax.sharding.Mesh | None = None,
        data_axis: str = "data",
        steps_per_dispatch: int = 1,
        unroll_dispatch: int | bool = 1,
    ) -> None:
        check_optimizer("Trainer", optimizer)
        self.steps_per_dispatch, unroll_dispatch = _dispatching(steps_per_dispatch, unroll_dispatch)
        for name, step in (("train_step", train_step), ("eval_step", eval_step)):
            if not callable(step):
                raise TypeError(f"Trainer: `{name}` must be callable, got {step!r}.")
        if checkpointer is not None and not isinstance(checkpointer, Checkpointer):
            raise TypeError(
                f"Trainer: `checkpointer` must be a flax_cyclic.Checkpointer, got "
                f"{type(checkpointer).__name__}."
            )
        self.checkpointer = checkpointer
        callbacks = list(callbacks)
        if writer is not None:
            if not any(getattr(c, "writer", None) is not None for c in callbacks if _logs_lr(c)):
                # Nothing logs the learning rate yet: read it from the optimizer (first, so
                # that it reads before a scheduler callback writes the next update's value).
                callbacks.insert(0, LearningRateMonitor(writer, log_every_steps=log_every_steps))
            callbacks.append(MetricsLogger(writer, log_every_steps=log_every_steps))
        if progress is not False:
            callbacks.append(ProgressBar(enabled=progress))
        if rngs is not None and not isinstance(rngs, nnx.Rngs):
            raise TypeError(f"Trainer: `rngs` must be an nnx.Rngs, got {type(rngs).__name__}.")
        if rngs is not None:
            _modes.check_takes_rngs("Trainer", train_step, "train_step")
            if train_step is classification_train_step:
                _modes.check_takes_rngs("Trainer", model, "the model (by the default step)")
        self.rngs = rngs
        self._split_step = SplitStep(
            train_step, model, optimizer, rngs=rngs, unroll=unroll_dispatch
        )
        self.callbacks = TrainerLoop(
            callbacks, model=model, optimizer=optimizer, split_step=self._split_step
        )
        self.callbacks.steps_per_dispatch = self.steps_per_dispatch
        self._eval_step = nnx.jit(eval_step)
        self.mesh = mesh
        self._data_axis = data_axis
        self._batch_sharding, self._data_parts = _batch_placement(mesh, data_axis)
        # The last evaluation's step and means: a save at that step is ranked by them.
        self._last_eval: tuple[int, dict[str, float]] | None = None

    @property
    def model(self) -> nnx.Module:
        """The model, up to date with every train step run so far."""
        return self.callbacks.model

    @property
    def optimizer(self) -> nnx.Optimizer:
        """The optimizer, up to date with every train step run so far."""
        return self.callbacks.optimizer

    @property
    def step(self) -> int:
        """Train steps completed."""
        return self.callbacks.step

    @property
    def epoch(self) -> int:
        """The current epoch, from 0."""
        return self.callbacks.epoch

    def fit(
        self,
        train_data: Iterable[Any] | Callable[[int], Iterable[Any]],
        *,
        num_epochs: int | None = None,
        num_steps: int | None = None,
        eval_data: Iterable[Any] | None = None,
        eval_every_steps: int | None = None,
    ) -> History:
        """Runs the training loop, resuming from the newest checkpoint if there is one.

        With a ``checkpointer``, the model, the optimizer, every callback's state and the
        position in the data are restored before any hook runs, and the run continues where
        the checkpoint left it (``on_epoch_begin`` runs again for a resumed epoch);
        ``num_epochs`` / ``num_steps`` count from the start of the whole run. A SIGTERM makes
        the loop finish its step, save, wait for the save and return (``history.preempted``).
        A callback that sets ``loop.stop_training`` ends the run the same way after the current
        step (or, when it sets it at an epoch's end, after that epoch): final save,
        ``on_train_end`` (``history.stopped``).

        Args:
            train_data: The batches of one epoch: a re-iterable (a list, a grain dataset, a
                data loader) iterated once per epoch, or a function ``epoch -> iterable``. To
                resume part-way through an epoch the order must be the same on every pass
                (deterministic from seed and epoch); a grain iterator's own state is restored.
            num_epochs: Epochs to run; give this or ``num_steps``.
            num_steps: Train steps to run in all (the last epoch may stop part-way).
            eval_data: Batches to evaluate on (re-iterable), at each epoch end and every
                ``eval_every_steps`` steps if given.
            eval_every_steps: Evaluate every this many train steps as well.

        Returns:
            The [`History`][flax_cyclic.History] of this run's train and eval metrics.

        Raises:
            ValueError: For missing or conflicting lengths, or one-shot iterators.
            CheckpointError: If checkpoints exist but none can be restored into this run.
        """
        num_epochs, num_steps = self._check_lengths(num_epochs, num_steps)
        if eval_every_steps is not None:
            eval_every_steps = _checks.integer(
                "Trainer.fit", "eval_every_steps", eval_every_steps, minimum=1, hint="e.g. 500."
            )
            if eval_data is None:
                raise ValueError(
                    f"Trainer.fit: eval_every_steps={eval_every_steps}, but there is no "
                    "eval_data to evaluate on; pass eval_data=... as well, or drop "
                    "eval_every_steps."
                )
        if eval_data is None:
            self._check_nothing_waits_for_evaluations()
        self._check_dispatch_intervals(eval_every_steps)
        history = History()
        self.callbacks.stop_training, self.callbacks.stopped_by = False, None
        self._last_eval = None
        self._place_on_mesh()
        # Training mode for the whole run (evaluation switches to evaluation mode and back);
        # the model's own mode is put back on the way out.
        with _modes.mode(self.callbacks.model, training=True):
            return self._fit(
                train_data, num_epochs, num_steps, eval_data, eval_every_steps, history
            )

    def _fit(
        self,
        train_data: Any,
        num_epochs: int | None,
        num_steps: int | None,
        eval_data: Any,
        eval_every_steps: int | None,
        history: History,
    ) -> History:
        resumed = self._resume(history)
        self._split_step.refresh()
        self.callbacks.total_steps = num_steps or _epoch_length(train_data, num_epochs)
        complete = not self._more(num_epochs, num_steps) or resumed.stopped
        if complete:
            self._say_complete(num_epochs, num_steps, resumed)
        self._unsaved: list[tuple[int, Metrics]] = []
        self._at_boundary = True
        with _preemption(self.checkpointer is not None, self.callbacks.step) as preempted:
            run = _Run(
                _epoch_source(train_data), num_epochs, num_steps, eval_data, eval_every_steps,
                preempted, history, resumed.position, resumed.data_state, resumed.epoch_metrics,
            )  # fmt: skip
            run.stop = run.history.stopped = resumed.stopped
            try:
                self.callbacks.on_train_begin()
                while not run.stop and self._more(num_epochs, num_steps):
                    self._run_epoch(run)
                if self.checkpointer:
                    if self._saved_step != self.callbacks.step:
                        self._save(run)
                    self.checkpointer.wait()
                self._split_step.sync()
                self.callbacks.on_train_end()
            except BaseException as error:
                self._split_step.sync(check=False)  # the NNX objects hold the last step's state
                self.callbacks.on_exception(error)
                if self.checkpointer is not None:
                    self.checkpointer.wait()  # a save in flight completes: nothing complete is lost
                raise
        return history

    def _check_dispatch_intervals(self, eval_every_steps: int | None) -> None:
        """Refuses an interval that would fall inside a dispatch of several steps."""
        k = self.steps_per_dispatch
        every_save = self.checkpointer.every_steps if self.checkpointer else None
        for name, interval in (
            ("eval_every_steps", eval_every_steps),
            ("the checkpointer's every_steps", every_save),
        ):
            if interval is not None and interval % k:
                raise ValueError(
                    f"Trainer.fit: {name}={interval} is not a multiple of steps_per_dispatch="
                    f"{k}: evaluations and saves happen between dispatches of {k} steps, so "
                    f"step {interval} is never reached between two. Make it a multiple of {k} "
                    f"(e.g. {max(k, interval // k * k)}), or choose a steps_per_dispatch that "
                    "divides it."
                )

    def _check_nothing_waits_for_evaluations(self) -> None:
        """Refuses a run without eval_data when a checkpointer or callback acts on its metrics."""
        fix = "pass eval_data=... (and eval_every_steps=... to evaluate within epochs)."
        if self.checkpointer and self.checkpointer.best_metric:
            raise ValueError(
                f"Trainer.fit: the checkpointer keeps the best checkpoints by "
                f"{self.checkpointer.best_metric!r}, an evaluation metric, but there is no "
                f"eval_data to evaluate on; {fix}"
            )
        for callback in self.callbacks.callbacks:
            monitor = getattr(callback, "monitor", None)
            if isinstance(monitor, Monitored) and monitor.source == "eval":
                raise ValueError(
                    f"Trainer.fit: {type(callback).__name__} acts on {str(monitor)!r}, an "
                    f"evaluation metric, but there is no eval_data to evaluate on, so it would "
                    f"never act; {fix}"
                )

    def _run_epoch(self, run: _Run) -> None:
        """Trains (the rest of) one epoch; at its end evaluates, runs the hooks and saves.

        The order at a step that ends an epoch is the one of docs/concepts.md: update, step
        hooks, evaluation, epoch-end hooks and decisions, then the save, so a checkpoint holds
        what every decision of that step needed.
        """
        self.callbacks.on_epoch_begin()
        batches = _seek(iter(run.epochs_for(self.callbacks.epoch)), run.position, run.data_state)
        run.batches = batches
        if self._train_epoch(run, batches):
            self._end_epoch(run)
        elif run.epoch_metrics:  # stopped part-way: the partial epoch's means, no epoch end
            self._epoch_summary(run)

    def _epoch_summary(self, run: _Run) -> dict[str, float]:
        """The epoch's train means (all of its steps, before a resume too), into the History."""
        summary: dict[str, float] = {"step": self.callbacks.step, "epoch": self.callbacks.epoch}
        summary |= mean_metrics(run.epoch_metrics)
        run.history.train.append(summary)
        return summary

    def _train_epoch(self, run: _Run, batches: Iterator[Any]) -> bool:
        """Trains the epoch's remaining batches; False if the run stops within the epoch.

        At a step where something is due (an evaluation, a save, a stop), the next batch is
        fetched first (after the data position is recorded) to know whether the step ends the
        epoch: if it does, the epoch's end evaluates and saves, once, after its hooks.
        """
        batch = next(batches, _END)
        if batch is _END and run.position == 0:
            raise ValueError(
                f"Trainer.fit: epoch {self.callbacks.epoch} has no batches. If train_data is an "
                "iterator, pass a re-iterable (a list, a grain dataset) or a function epoch -> "
                "iterable instead: an iterator is exhausted after one epoch."
            )
        if self.steps_per_dispatch > 1:
            return self._train_epoch_dispatched(run, batches, batch)
        while batch is not _END:
            run.epoch_metrics.append(self._train_one(batch))
            run.position += 1
            run.data_state = None
            if not self._due(run):
                batch = next(batches, _END)
                continue
            run.data_state = _data_state(batches)  # where the data stand after this step
            batch = next(batches, _END)
            if self._decide(run, batch):
                return not run.stop
        return True

    def _decide(self, run: _Run, batch: Any) -> bool:
        """At a step where something is due: stop, end the epoch, or evaluate and save.

        Returns whether the epoch's training ends here (``batch``, the next one, is ``_END``
        at the epoch's last step, whose end evaluates and saves).
        """
        if run.stop:
            return True  # preempted, or stopped by a step hook: saved as it is
        if batch is _END:
            return True  # the epoch's last step: its end evaluates and saves
        evaluated = run.eval_due
        if evaluated and run.eval_data is not None:
            run.history.eval.append(self.evaluate(run.eval_data))
        if self.checkpointer and self.checkpointer.should_save(
            self.callbacks.step, evaluated=evaluated
        ):
            self._save(run)
        return self._stops_after_decisions(run)

    def _train_epoch_dispatched(self, run: _Run, batches: Iterator[Any], batch: Any) -> bool:
        """``_train_epoch`` with several steps per dispatch; False if the run stops within.

        While a dispatch trains, the hooks of the one before it run. Where something is due
        at a dispatch's end (an evaluation, a save, ``num_steps``, the epoch's end) or a hook
        stopped the run, no next dispatch starts until its hooks have run: then the same
        decisions follow as with one step per dispatch.
        """
        flight: _Dispatch | None = None
        while batch is not _END:
            start = self.callbacks.step + (flight.length if flight else 0)
            dispatch = self._gather(run, start, batch, batches)
            run.position += len(dispatch)
            due = self._due_at(run, start + len(dispatch))
            if run.held is _END:
                run.data_state = _data_state(batches)  # where the data stand after it
                batch = next(batches, _END)
            else:  # the iterator stands one batch further: a resume replays the position
                run.data_state, batch, run.held = _REPLAY, run.held, _END
            launched = self._launch(dispatch, start)
            if flight is not None:
                self._replay(run, flight, ahead=launched.length)
            flight = launched
            if not (due or batch is _END or run.stop or self.callbacks.stop_training):
                continue
            self._replay(run, flight, ahead=0)
            flight = None
            if self._due(run, polled=True) and self._decide(run, batch):
                return not run.stop
        return True

    def _train_one(self, batch: Any) -> Metrics:
        """Runs the hooks and the compiled train step for one batch; returns its metrics."""
        callbacks = self.callbacks
        callbacks.on_step_begin()
        with self._clearer_errors():
            metrics = self._split_step(self._shard(batch))
        _check_metrics(metrics)
        if self.checkpointer is not None:
            self._unsaved.append((callbacks.step, metrics))  # kept until the next good save
        callbacks.on_step_end(metrics)
        return metrics

    @contextlib.contextmanager
    def _clearer_errors(self) -> Iterator[None]:
        """Turns the error of a model that needs the Trainer's ``rngs`` into one saying so."""
        try:
            yield
        except ValueError as error:
            clearer = _modes.needs_rngs("Trainer.fit", error) if self.rngs is None else None
            if clearer is not None:
                raise clearer from error
            raise

    def _gather(self, run: _Run, start: int, first: Any, batches: Iterator[Any]) -> list[Any]:
        """The batches of the dispatch from step ``start``: to the next multiple of ``k``.

        Fewer at the epoch's end, at ``num_steps``, and before a batch of another shape (a
        smaller last batch): that one is kept in ``run.held`` for the next dispatch.
        """
        length = self.steps_per_dispatch - start % self.steps_per_dispatch
        if run.num_steps is not None:
            length = min(length, run.num_steps - start)
        dispatch, shapes = [first], _shapes(first)
        while len(dispatch) < length:
            batch = next(batches, _END)
            if batch is _END:
                break
            if _shapes(batch) != shapes:
                run.held = batch
                break
            dispatch.append(batch)
        return dispatch

    def _due_at(self, run: _Run, step: int) -> bool:
        """Whether an evaluation, a save or ``num_steps`` falls at ``step``, known ahead."""
        evaluates = run.eval_data is not None and _every(step, run.eval_every_steps)
        return (
            evaluates
            or (run.num_steps is not None and step >= run.num_steps)
            or (self.checkpointer is not None and self.checkpointer.should_save(step))
        )

    def _launch(self, dispatch: list[Any], start: int) -> _Dispatch:
        """Starts the steps of ``dispatch`` as one compiled scan; returns without waiting.

        The hyperparameters a callback writes between steps are asked for in advance
        (``hyperparams_ahead``); the others keep their values.
        """
        length = len(dispatch)
        stacked = self._shard(jax.tree.map(lambda *leaves: np.stack(leaves), *dispatch), axis=1)
        self._split_step.prepare()  # what the hooks left in the objects, split again
        planned = self.callbacks.hyperparams_ahead(start, length)
        if self._at_boundary:  # the hooks ran with nothing ahead: their writes must hold
            self.callbacks.enter_dispatch(planned)
            self._at_boundary = False
        variables = self._split_step.injected()
        values = [
            planned[id(variable)]
            if id(variable) in planned
            else np.broadcast_to(np.asarray(local_copy(variable.get_raw_value())), (length,))
            for variable in variables
        ]
        with self._clearer_errors():
            metrics, applied = self._split_step.run(stacked, values)
        _check_metrics(metrics)
        return _Dispatch(length, metrics, applied)

    def _replay(self, run: _Run, dispatch: _Dispatch, *, ahead: int) -> None:
        """Runs the step hooks of a dispatch that trained, in order, with each step's metrics.

        A hook that reads ``loop.optimizer`` finds in its injected hyperparameters what its
        step applied (as read back from the scan); ``loop.steps_ahead`` counts the updates
        the state has made beyond the step (``ahead`` more: a dispatch training meanwhile),
        and a hook that changes the state while it is ahead is refused (``TrainerLoop``). A
        SIGTERM is polled at the dispatch's end.
        """
        callbacks, last = self.callbacks, dispatch.length - 1
        metrics, applied = jax.device_get((dispatch.metrics, dispatch.applied))
        steps = [{name: value[i] for name, value in metrics.items()} for i in range(last + 1)]
        try:
            for i, step_metrics in enumerate(steps):
                callbacks.steps_ahead = last - i + ahead
                if i < last:
                    callbacks.applied = (applied, i)  # put in place if a hook reads them
                else:  # the last step: put in place now, before its hooks write the next
                    callbacks.applied = None
                    callbacks.show({j: value[i, ...] for j, value in enumerate(applied)})
                callbacks.on_step_begin()
                if self.checkpointer is not None:
                    self._unsaved.append((callbacks.step, step_metrics))
                callbacks.on_step_end(step_metrics)
        finally:
            callbacks.steps_ahead, callbacks.applied = 0, None
        self._at_boundary = ahead == 0
        run.epoch_metrics.extend(steps)
        if not run.stop and run.preempted(callbacks.step):
            run.history.preempted = run.stop = True
            logger.warning(
                "SIGTERM: saving step %d and stopping; run again to resume from it.", callbacks.step
            )

    def _due(self, run: _Run, *, polled: bool = False) -> bool:
        """After a step: notes a stop and what is due; whether anything is (then it looks ahead).

        A SIGTERM (agreed across processes) or a step hook's ``stop_training`` stops the run at
        this step, before any evaluation. ``polled``: the SIGTERM was polled at this step.
        """
        step = self.callbacks.step
        if not polled and run.preempted(step):
            run.history.preempted = run.stop = True
            logger.warning(
                "SIGTERM: saving step %d and stopping; run again to resume from it.", step
            )
        elif self.callbacks.stop_training:
            run.history.stopped = run.stop = True
        run.eval_due = run.eval_data is not None and _every(step, run.eval_every_steps)
        return (
            run.stop
            or run.eval_due
            or self._reached(run)
            or (
                self.checkpointer is not None
                and self.checkpointer.should_save(step, evaluated=run.eval_due)
            )
        )

    def _reached(self, run: _Run) -> bool:
        return run.num_steps is not None and self.callbacks.step >= run.num_steps

    def _stops_after_decisions(self, run: _Run) -> bool:
        """Whether a decision (e.g. early stopping) or ``num_steps`` ends the run here."""
        if self.callbacks.stop_training:
            run.history.stopped = run.stop = True
        elif self._reached(run):
            run.stop = True
        return run.stop

    def _end_epoch(self, run: _Run) -> None:
        """The end of an epoch: its train means, evaluation, hooks, then the save."""
        callbacks = self.callbacks
        summary = self._epoch_summary(run) if run.epoch_metrics else {}
        evaluated = run.eval_data is not None
        if run.eval_data is not None:
            run.history.eval.append(self.evaluate(run.eval_data))
        callbacks.on_epoch_end(summary)
        run.position, run.data_state, run.epoch_metrics = 0, None, []
        if self.checkpointer and self.checkpointer.should_save(
            callbacks.step, epoch_end=True, evaluated=evaluated
        ):
            self._save(run)
        self._stops_after_decisions(run)

    def _say_complete(
        self, num_epochs: int | None, num_steps: int | None, resumed: _Resumed
    ) -> None:
        """Says why this ``fit`` trains nothing, and how to train on."""
        length = f"num_steps={num_steps}" if num_steps is not None else f"num_epochs={num_epochs}"
        done = f"step {self.callbacks.step}, epoch {self.callbacks.epoch}"
        if self.checkpointer is None or not resumed.resumed:
            logger.warning(
                "Trainer.fit: nothing to train: this trainer has completed %s, and %s counts "
                "from the start of the run. Raise %s to train longer.",
                done,
                length,
                length.split("=")[0],
            )
        elif resumed.stopped:
            logger.warning(
                "The run in %s stopped early at step %d (%s set stop_training): it is complete "
                "and is not trained further. To train on from here, run it without that "
                "callback (or with one on another metric, e.g. another monitor); to start over, "
                "use a new checkpoint directory.",
                self.checkpointer.directory,
                self.callbacks.step,
                self.callbacks.stopped_by or "a callback",
            )
        else:
            logger.warning(
                "The run in %s is complete at step %d (%s): nothing left to train. Raise %s "
                "to train longer, or use a new checkpoint directory to start over.",
                self.checkpointer.directory,
                self.callbacks.step,
                length,
                length.split("=")[0],
            )

    def _place_on_mesh(self) -> None:
        """Replicates every model and optimizer array that is not yet sharded on the mesh."""
        if self.mesh is None:
            return
        replicated = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec())

        def place(leaf: Any) -> Any:
            sharding = getattr(leaf, "sharding", None)
            if isinstance(sharding, jax.sharding.NamedSharding) and sharding.mesh == self.mesh:
                return leaf
            return jax.device_put(leaf, replicated)

        for obj in (self.model, self.optimizer):
            nnx.update(obj, jax.tree.map(place, nnx.state(obj)))

    def _shard(self, batch: Any, axis: int = 0) -> Any:
        """Places a batch on the mesh, split over the data axis (this process's part of it).

        ``axis``: the batch dimension, 1 for the batches of a dispatch stacked on axis 0.
        """
        if self._batch_sharding is None:
            return batch
        sharding = self._batch_sharding
        if axis:
            sharding = jax.sharding.NamedSharding(
                sharding.mesh, jax.sharding.PartitionSpec(None, self._data_axis)
            )

        def place(path: Any, leaf: Any) -> jax.Array:
            local = np.asarray(leaf)
            parts = self._data_parts
            if local.ndim <= axis or local.shape[axis] % parts:
                shape = "a scalar" if local.ndim <= axis else f"of shape {local.shape[axis:]}"
                raise ValueError(
                    f"Trainer: the batch leaf {jax.tree_util.keystr(path) or 'batch'} is {shape},"
                    f" but each batch leaf is split over the mesh axis {self._data_axis!r} on its "
                    f"first dimension, into {parts} parts on this process: give every leaf a "
                    f"leading batch dimension that is a multiple of {parts}."
                )
            return jax.make_array_from_process_local_data(sharding, local)

        return jax.tree_util.tree_map_with_path(place, batch)

    def _resume(self, history: History) -> _Resumed:
        """Restores the newest checkpoint into the run; returns where the run stands."""
        self._saved_step: int | None = None
        if self.checkpointer is None:
            return _Resumed()
        restored = self.checkpointer.restore(
            model=self.model, optimizer=self.optimizer, extra=self._extra()
        )
        if restored is None:
            logger.info("No checkpoint in %s: starting fresh.", self.checkpointer.directory)
            return _Resumed()
        try:
            self.callbacks.load_state_dict(restored.callbacks)
            trainer = {key: restored.trainer[key] for key in _TRAINER_KEYS}
            epoch_metrics = _metrics_from_json(restored.trainer.get("epoch_metrics"))
        except (ValueError, TypeError, KeyError) as error:
            raise CheckpointError(
                f"The checkpoint at step {restored.step} in {self.checkpointer.directory} does "
                f"not fit this run: {_reason(error)}"
            ) from error
        if trainer["step"] != restored.step:
            raise CheckpointError(
                f"The checkpoint at step {restored.step} in {self.checkpointer.directory} says "
                f"the trainer had completed {trainer['step']} steps: it was edited or mixed "
                "with another run's files. Remove that step directory to resume from the one "
                "before, or use a new checkpoint directory."
            )
        self.callbacks.step, self.callbacks.epoch = trainer["step"], trainer["epoch"]
        self._saved_step = restored.step
        history.resumed_from = restored.step
        logger.info(
            "Resumed from the checkpoint at step %d in %s (epoch %d, %d batches into it).",
            restored.step,
            self.checkpointer.directory,
            trainer["epoch"],
            trainer["position"],
        )
        return _Resumed(
            resumed=True,
            position=trainer["position"],
            data_state=trainer["data_state"],
            epoch_metrics=epoch_metrics,
            stopped=self._still_stopped(restored.trainer),
        )

    def _still_stopped(self, trainer: Mapping[str, Any]) -> bool:
        """Whether a run a callback stopped is still complete: that callback is still in it."""
        if not trainer.get("stopped", False):
            return False
        stopped_by = trainer.get("stopped_by")
        keys = [callback.state_key for callback in self.callbacks.callbacks]
        if stopped_by is None or stopped_by in keys:
            self.callbacks.stopped_by = stopped_by
            return True
        logger.warning(
            "The run in %s was stopped at step %d by %s, which is not in this run: training on.",
            self.checkpointer.directory if self.checkpointer else "?",
            trainer["step"],
            stopped_by,
        )
        return False

    def _save(self, run: _Run) -> None:
        """Saves the run as it stands after the current step."""
        try:
            self._save_checked(run)
        except NonFiniteError as error:
            raise self._diverged(error) from error
        self._saved_step = self.callbacks.step
        self._unsaved = []

    def _save_checked(self, run: _Run) -> None:
        assert self.checkpointer is not None
        position = run.position
        if position and run.data_state is None:
            run.data_state = _data_state(run.batches)
        data_state = None if run.data_state is _REPLAY else run.data_state
        self.checkpointer.save(
            self.callbacks.step,
            model=self.model,
            optimizer=self.optimizer,
            callbacks=self.callbacks.state_dict(),
            trainer={
                "step": self.callbacks.step,
                "epoch": self.callbacks.epoch,
                "position": position,
                "data_state": data_state if position else None,
                # The epoch's train metrics so far: a resumed epoch's mean covers all its steps.
                "epoch_metrics": _metrics_to_json(run.epoch_metrics) if position else None,
                "stopped": bool(self.callbacks.stop_training),
                "stopped_by": self.callbacks.stopped_by if self.callbacks.stop_training else None,
            },
            metrics=self._evaluated_here(),
            extra=self._extra(),
        )

    def _extra(self) -> dict[str, Any] | None:
        """What the Trainer owns beside the model and optimizer: its ``rngs``.

        Read after ``self.model``, which brings the training state up to date.
        """
        return None if self.rngs is None else {"rngs": self.rngs}

    def _evaluated_here(self) -> dict[str, float] | None:
        """The last evaluation's metrics, by logged name, if it evaluated this very state."""
        if self._last_eval is None or self._last_eval[0] != self.callbacks.step:
            return None
        return {f"eval/{name}": value for name, value in self._last_eval[1].items()}

    def _diverged(self, error: NonFiniteError) -> NonFiniteError:
        """The error for a save refused as non-finite, naming the first non-finite step."""
        first = None
        host = jax.device_get([metrics for _, metrics in self._unsaved])  # one transfer
        for (step, _), metrics in zip(self._unsaved, host, strict=True):
            bad = {name: float(v) for name, v in metrics.items() if not np.all(np.isfinite(v))}
            if bad:
                first = (step, bad)
                break
        if first is None:
            seen = "no train metric was non-finite since the last checkpoint"
        else:
            step, bad = first
            shown = ", ".join(f"{name}={value}" for name, value in bad.items())
            seen = f"the metrics were first non-finite at train step {step} ({shown})"
        latest = self.checkpointer.latest_step() if self.checkpointer else None
        kept = (
            f"the newest checkpoint, step {latest}, is good and a resume starts there"
            if latest is not None
            else "there is no earlier checkpoint"
        )
        return NonFiniteError(
            f"Trainer.fit: training diverged: {seen}. {error} So {kept}. Lower the learning "
            "rate (e.g. max_lr), clip the gradients (optax.clip_by_global_norm), or add "
            "TerminateOnNaN() to stop at the first non-finite loss."
        )

    def _more(self, num_epochs: int | None, num_steps: int | None) -> bool:
        if num_steps is not None:
            return self.callbacks.step < num_steps
        assert num_epochs is not None  # one of the two is given
        return self.callbacks.epoch < num_epochs

    def evaluate(self, eval_data: Iterable[Any]) -> dict[str, float]:
        """Evaluates the model on ``eval_data`` and reports it to the callbacks.

        ``fit`` calls it as configured; call it directly for a final evaluation, e.g. after
        a run that resumed from its last checkpoint and had nothing left to train. The model
        is evaluated in evaluation mode (NNX's ``model.eval()``: ``nnx.Dropout`` off,
        ``nnx.BatchNorm`` on its running averages, nothing updated), and left in the mode it
        was in: evaluating changes neither the model nor the training that follows.

        Args:
            eval_data: Batches (re-iterable) for ``eval_step``.

        Returns:
            ``step``, ``epoch`` and the mean of each eval metric over the batches (give
                batches of equal size for exact per-example means).

        Raises:
            ValueError: If ``eval_data`` has no batches.
            TypeError: If ``eval_step`` does not return a mapping of metric names to scalars.
        """
        self.callbacks.on_eval_begin()
        model = self.model
        with _modes.mode(model, training=False):
            metrics = [self._eval_step(model, self._shard(batch)) for batch in eval_data]
        if not metrics:
            raise ValueError("Trainer.evaluate: eval_data has no batches.")
        if not isinstance(metrics[0], Mapping):
            raise TypeError(
                "Trainer.evaluate: eval_step must return a mapping of metric names to scalars, "
                f"e.g. {{'loss': loss}}; it returned {type(metrics[0]).__name__}."
            )
        summary: dict[str, float] = {"step": self.callbacks.step, "epoch": self.callbacks.epoch}
        means = mean_metrics(metrics)
        summary |= means
        self._last_eval = (self.callbacks.step, means)
        self.callbacks.on_eval_end(summary)
        return summary

    @staticmethod
    def _check_lengths(num_epochs: Any, num_steps: Any) -> tuple[int | None, int | None]:
        if (num_epochs is None) == (num_steps is None):
            raise ValueError(
                "Trainer.fit: give exactly one of num_epochs and num_steps, got "
                f"num_epochs={num_epochs!r}, num_steps={num_steps!r}."
            )
        hint = "The length of the run, e.g. 3."
        if num_epochs is not None:
            return _checks.integer(
                "Trainer.fit", "num_epochs", num_epochs, minimum=1, hint=hint
            ), None
        return None, _checks.integer("Trainer.fit", "num_steps", num_steps, minimum=1, hint=hint)


def _dispatching(steps_per_dispatch: Any, unroll_dispatch: Any) -> tuple[int, int | bool]:
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


def _check_metrics(metrics: Any) -> None:
    if not isinstance(metrics, Mapping):
        raise TypeError(
            "Trainer.fit: train_step must return a mapping of metric names "
            f"to scalars, e.g. {{'loss': loss}}; it returned {type(metrics).__name__}."
        )


def _logs_lr(callback: Callback) -> bool:
    return isinstance(callback, (LRSchedulerCallback, LearningRateMonitor))


_END = object()  # the end of an epoch's batches
_REPLAY = object()  # a data state to save as none: a resume replays the epoch's position


@dataclasses.dataclass
class _Run:
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
    held: Any = _END  # a batch fetched but left for the next dispatch (another shape)


class _Dispatch(NamedTuple):
    """Steps started as one compiled scan, whose hooks have yet to run."""

    length: int
    metrics: Mapping[str, Any]  # stacked, on the device
    applied: list[Any]  # per injected variable, the value each step applied


@dataclasses.dataclass
class _Resumed:
    """Where a run stands when ``fit`` begins: at the start, or as a checkpoint left it."""

    resumed: bool = False
    position: int = 0
    data_state: Any = None
    epoch_metrics: list[Mapping[str, Any]] = dataclasses.field(default_factory=list)
    stopped: bool = False


_TRAINER_KEYS = ("step", "epoch", "position", "data_state")


def _batch_placement(mesh: Any, data_axis: str) -> tuple[jax.sharding.NamedSharding | None, int]:
    """The batch's sharding on ``mesh`` (checked) and into how many parts this process's is split.

    ``(None, 1)`` without a mesh.
    """
    if mesh is None:
        return None, 1
    if not isinstance(mesh, jax.sharding.Mesh):
        raise TypeError(f"Trainer: `mesh` must be a jax.sharding.Mesh, got {mesh!r}.")
    if data_axis not in mesh.axis_names:
        raise ValueError(
            f"Trainer: `data_axis` must name an axis of the mesh, got data_axis="
            f"{data_axis!r} for a mesh with axes {mesh.axis_names}."
        )
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(data_axis))
    return sharding, _local_data_parts(mesh, data_axis)


def _local_data_parts(mesh: jax.sharding.Mesh, data_axis: str) -> int:
    """Into how many parts this process's batch is split: its devices along the data axis."""
    axis = mesh.axis_names.index(data_axis)
    local = {device.id for device in jax.local_devices()}
    return len(
        {index[axis] for index, device in np.ndenumerate(mesh.devices) if device.id in local}
    )


def _every(step: int, interval: int | None) -> bool:
    """Whether ``step`` is a multiple of ``interval`` (never for ``None``)."""
    return interval is not None and step % interval == 0


def _shapes(batch: Any) -> Any:
    """The structure and leaf shapes of a batch: batches stack into a dispatch if equal."""
    return jax.tree.structure(batch), [np.shape(leaf) for leaf in jax.tree.leaves(batch)]


def _data_state(batches: Any) -> Any:
    """A data iterator's own state (e.g. grain's), or ``None`` where it has none."""
    get_state = getattr(batches, "get_state", None)
    return get_state() if callable(get_state) else None


def _metrics_to_json(metrics: list[Mapping[str, Any]]) -> dict[str, Any] | None:
    """An epoch's per-step train metrics as JSON: values as floats, and their dtypes."""
    if not metrics:
        return None
    host = [{name: np.asarray(local_copy(v)) for name, v in m.items()} for m in metrics]
    return {
        "values": {name: [float(m[name]) for m in host] for name in host[0]},
        "dtypes": {name: str(value.dtype) for name, value in host[0].items()},
    }


def _metrics_from_json(saved: Any) -> list[Mapping[str, Any]]:
    """Inverse of ``_metrics_to_json``: the same values in the same dtypes (exact)."""
    if not saved:
        return []
    values, dtypes = saved["values"], saved["dtypes"]
    length = len(next(iter(values.values())))
    return [
        {name: np.asarray(values[name][i], dtype=dtypes[name]) for name in values}
        for i in range(length)
    ]


def _reason(error: BaseException) -> str:
    if isinstance(error, KeyError):
        return f"its saved state has no entry {error.args[0]!r}."
    return str(error)


def _seek(batches: Iterator[Any], position: int, data_state: Any) -> Iterator[Any]:
    """Moves a fresh epoch iterator to ``position`` batches in."""
    if position == 0:
        return batches
    set_state = getattr(batches, "set_state", None)
    if data_state is not None and callable(set_state):
        set_state(data_state)  # e.g. a grain DatasetIterator
        return batches
    for consumed in range(position):  # replay: the order is the same on every pass
        if next(batches, _END) is _END:
            raise ValueError(
                f"Trainer.fit: resuming {position} batches into the epoch, but this epoch has "
                f"only {consumed}: the training data changed since the checkpoint."
            )
    return batches


@contextlib.contextmanager
def _preemption(enabled: bool, start: int) -> Iterator[Callable[[int], bool]]:
    """Turns SIGTERM into a stop that the loop polls after each step: ``preempted(step)``.

    One process: a SIGTERM handler sets a flag (main thread only). Several processes
    (``jax.distributed``): JAX's preemption service hears a SIGTERM to any of them and picks a
    step that all reach (``multihost_utils.reached_preemption_sync_point``), so every
    process stops and saves the same step.
    """
    if not enabled:
        yield lambda step: False
        return
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        try:
            at_start = multihost_utils.reached_preemption_sync_point(start)
        except RuntimeError as error:  # the preemption service is off
            logger.warning(
                "No SIGTERM handling across processes (%s): a SIGTERM stops no process.",
                str(error).splitlines()[0],
            )
            yield lambda step: False
            return
        yield lambda step: at_start or multihost_utils.reached_preemption_sync_point(step)
        return
    requested = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield lambda step: False
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: requested.set())
    try:
        yield lambda step: requested.is_set()
    finally:
        # None: the previous handler was not installed from Python and cannot be put back.
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def _epoch_length(train_data: Any, num_epochs: int | None) -> int | None:
    """Total train steps of ``num_epochs`` epochs, when the data knows its length."""
    try:
        return num_epochs * len(train_data) if num_epochs else None
    except TypeError:
        return None


def _epoch_source(train_data: Any) -> Callable[[int], Iterator[Any]]:
    if callable(train_data) and not hasattr(train_data, "__iter__"):
        return lambda epoch: iter(train_data(epoch))
    if not hasattr(train_data, "__iter__"):
        raise TypeError(
            f"Trainer.fit: `train_data` must be an iterable of batches or a function "
            f"epoch -> iterable, got {type(train_data).__name__}."
        )
    return lambda epoch: iter(train_data)
