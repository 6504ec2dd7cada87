"""A compact fit loop for Flax NNX that runs callbacks.

The loop's parts live in ``flax_cyclic._loop``, one concern per module: the run and its
History (``run``), what is due at a step (``due``), dispatching steps and replaying their hooks
(``dispatch``), the state the hooks see (``state``), checkpoints (``resume``), the mesh
(``placement``), the data (``data``) and the epochs with what is decided at their steps
(``epochs``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

import jax
from flax import nnx

from flax_cyclic import _modes
from flax_cyclic._loop.checks import check_plan
from flax_cyclic._loop.data import epoch_length, epoch_source, preemption
from flax_cyclic._loop.dispatch import Dispatcher, dispatching
from flax_cyclic._loop.due import Due
from flax_cyclic._loop.epochs import EpochRunner
from flax_cyclic._loop.placement import Placement
from flax_cyclic._loop.resume import RunCheckpoints
from flax_cyclic._loop.run import History, Run
from flax_cyclic._loop.state import TrainerLoop
from flax_cyclic._metrics import mean_metrics
from flax_cyclic._split_step import SplitStep
from flax_cyclic.callbacks.base import Callback, MetricWriter, check_optimizer
from flax_cyclic.callbacks.defaults import with_defaults
from flax_cyclic.checkpoint import Checkpointer
from flax_cyclic.steps import Metrics, classification_eval_step, classification_train_step

__all__ = ["History", "Trainer", "classification_eval_step", "classification_train_step"]


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
        unroll_dispatch: How a dispatch of ``k > 1`` runs its steps, chosen and compiled at
            the first dispatch of each ``fit`` (before any step trains) and said in the log
            with the compilation's seconds. ``'auto'`` (the default): one call of the
            one-step program per step where the step holds convolutions and runs on a CPU
            (XLA:CPU runs them many times slower inside a scan's loop, and unrolled they
            measured no faster than one step per call on the Flax NNX tutorial's CNN), and a
            rolled ``jax.lax.scan`` over the ``k`` steps otherwise. ``True``: the scan
            unrolled (no loop, a longer compilation); ``False`` or ``1``: rolled; ``n > 1``:
            ``n`` steps inlined per iteration (``jax.lax.scan``'s ``unroll``); ``'per_step'``:
            one compiled call per step, always. A scan compiles once for every dispatch
            length: a shorter dispatch (an epoch's end, ``num_steps``) pads its batches and
            masks the padded steps, which leave the state as they found it. Every step's
            learning rate and update are those of ``k = 1`` whatever runs them.

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
        unroll_dispatch: int | bool | Literal["auto", "per_step"] = "auto",
    ) -> None:
        check_optimizer("Trainer", optimizer)
        self.steps_per_dispatch, unroll_dispatch = dispatching(steps_per_dispatch, unroll_dispatch)
        for name, step in (("train_step", train_step), ("eval_step", eval_step)):
            if not callable(step):
                raise TypeError(f"Trainer: `{name}` must be callable, got {step!r}.")
        if checkpointer is not None and not isinstance(checkpointer, Checkpointer):
            raise TypeError(
                f"Trainer: `checkpointer` must be a flax_cyclic.Checkpointer, got "
                f"{type(checkpointer).__name__}."
            )
        if rngs is not None and not isinstance(rngs, nnx.Rngs):
            raise TypeError(f"Trainer: `rngs` must be an nnx.Rngs, got {type(rngs).__name__}.")
        if rngs is not None:
            _modes.check_takes_rngs("Trainer", train_step, "train_step")
            if train_step is classification_train_step:
                _modes.check_takes_rngs("Trainer", model, "the model (by the default step)")
        self.checkpointer = checkpointer
        self.rngs = rngs
        callbacks = with_defaults(
            callbacks, writer=writer, log_every_steps=log_every_steps, progress=progress
        )
        scan_unroll = unroll_dispatch if not isinstance(unroll_dispatch, str) else 1
        self._split_step = SplitStep(train_step, model, optimizer, rngs=rngs, unroll=scan_unroll)
        self.callbacks = TrainerLoop(
            callbacks, model=model, optimizer=optimizer, split_step=self._split_step
        )
        self.callbacks.steps_per_dispatch = self.steps_per_dispatch
        self.callbacks.checkpointer = checkpointer  # EarlyStopping names its kept steps
        self._eval_step = nnx.jit(eval_step)
        self._placement = Placement(mesh, data_axis)
        self.mesh = mesh
        self._checkpoints = RunCheckpoints(checkpointer, self.callbacks, rngs)
        self._dispatcher = Dispatcher(
            self.callbacks,
            self._split_step,
            self._placement,
            self._checkpoints,
            steps=self.steps_per_dispatch,
            unroll=unroll_dispatch,
            has_rngs=rngs is not None,
        )

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
        num_epochs, num_steps, eval_every_steps = check_plan(
            num_epochs,
            num_steps,
            eval_data,
            eval_every_steps,
            steps_per_dispatch=self.steps_per_dispatch,
            checkpointer=self.checkpointer,
            callbacks=self.callbacks.callbacks,
        )
        history = History()
        self.callbacks.stop_training, self.callbacks.stopped_by = False, None
        self._checkpoints.start()
        self._placement.place((self.model, self.optimizer))
        # Then the callbacks' riders, made from the placed model: sharded like its parameters.
        self._placement.place([rider for _, rider in self.callbacks.riders()])
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
        checkpoints, callbacks = self._checkpoints, self.callbacks
        resumed = checkpoints.resume(history)
        self._split_step.refresh()
        callbacks.total_steps = num_steps or epoch_length(train_data, num_epochs)
        self._dispatcher.start()
        with preemption(checkpoints.checkpointer is not None, callbacks.step) as preempted:
            run = Run(
                epoch_source(train_data), num_epochs, num_steps, eval_data, eval_every_steps,
                preempted, history, resumed.position, resumed.data_state, resumed.epoch_metrics,
            )  # fmt: skip
            epochs = EpochRunner(
                callbacks, self._dispatcher, checkpoints, Due(run, self.checkpointer),
                self.evaluate, steps_per_dispatch=self.steps_per_dispatch,
            )  # fmt: skip
            if not run.more(callbacks.step, callbacks.epoch) or resumed.stopped:
                checkpoints.say_complete(num_epochs, num_steps, resumed)
            run.stop = run.history.stopped = resumed.stopped
            try:
                callbacks.on_train_begin()
                while not run.stop and run.more(callbacks.step, callbacks.epoch):
                    epochs.run_epoch(run)
                if self.steps_per_dispatch > 1:  # the last hooks' writes, as before a dispatch
                    callbacks.check_writes()
                checkpoints.finish(run)
                self._split_step.sync()
                callbacks.on_train_end()
            except BaseException as error:
                self._split_step.sync(check=False)  # the NNX objects hold the last step's state
                callbacks.on_exception(error)
                checkpoints.wait()  # a save in flight completes: nothing complete is lost
                raise
        return history

    def evaluate(self, eval_data: Iterable[Any]) -> dict[str, float]:
        """Evaluates the model on ``eval_data`` and reports it to the callbacks.

        ``fit`` calls it as configured; call it directly for a final evaluation, e.g. after
        a run that resumed from its last checkpoint and had nothing left to train. The model
        is evaluated in evaluation mode (NNX's ``model.eval()``: ``nnx.Dropout`` off,
        ``nnx.BatchNorm`` on its running averages, nothing updated), and left in the mode it
        was in: evaluating changes neither the model nor the training that follows.

        After ``fit`` has ended, the evaluation is reported to the callbacks (``on_eval_end``:
        a writer logs it at the trainer's step, where training ended) but decides nothing:
        [`EarlyStopping`][flax_cyclic.EarlyStopping] does not count it, a scheduler driven by
        an ``eval/`` metric is not stepped, and no checkpoint is saved or ranked by it. After
        ``EarlyStopping(restore_best=True)``, the model it evaluates holds the best check's
        weights while its step stays the one training ended at.

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
            metrics = [self._eval_step(model, self._placement.shard(batch)) for batch in eval_data]
        if not metrics:
            raise ValueError("Trainer.evaluate: eval_data has no batches.")
        if not isinstance(metrics[0], Mapping):
            raise TypeError(
                "Trainer.evaluate: eval_step must return a mapping of metric names to scalars, "
                f"e.g. {{'loss': loss}}; it returned {type(metrics[0]).__name__}."
            )
        summary: dict[str, float] = {"step": self.callbacks.step, "epoch": self.callbacks.epoch}
        means = mean_metrics(metrics)
        for name, other in self.callbacks.evaluated_beside().items():
            with _modes.mode(other, training=False):
                theirs = [self._eval_step(other, self._placement.shard(b)) for b in eval_data]
            means |= {f"{name}/{metric}": value for metric, value in mean_metrics(theirs).items()}
        summary |= means
        self._checkpoints.evaluated(self.callbacks.step, means)
        self.callbacks.on_eval_end(summary)
        return summary
