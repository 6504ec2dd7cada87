"""The learning-rate callback: a scheduler drives ``optax.inject_hyperparams`` in an optimizer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

import numpy as np

from flax_cyclic import _checks, _logging
from flax_cyclic.callbacks._lr_binding import Binding, bind, rebound
from flax_cyclic.callbacks._lr_cycles import Cycles, cycles_of
from flax_cyclic.callbacks._lr_guards import (
    AppliedCheck,
    CountCheck,
    check_same_optimizer,
    moved_elsewhere,
    not_begun,
    replaced_state,
)
from flax_cyclic.callbacks._lr_logging import logged_scalars, write_plan
from flax_cyclic.callbacks._lr_lookahead import Lookahead, planned_values, scheduler_values
from flax_cyclic.callbacks._lr_setup import (
    align_with_loop,
    check_accumulation,
    check_groups,
    check_length,
    check_monitor,
    check_plot_steps,
    check_scheduler,
    epoch_metrics,
    load_saved_state,
)
from flax_cyclic.callbacks._writing import WritingCallback
from flax_cyclic.callbacks.base import Loop, MetricWriter, flush_writer, loop_optimizer
from flax_cyclic.schedulers import LRScheduler

__all__ = ["LRSchedulerCallback"]

logger = _logging.logger

_INTERVALS = ("step", "epoch")


class LRSchedulerCallback(WritingCallback):
    """Owns a scheduler and writes its values into the optimizer before every update.

    The optimizer must inject its learning rate as a *value*:
    ``nnx.Optimizer(model, optax.inject_hyperparams(optax.sgd)(learning_rate=0.0), wrt=...)``.
    At the start of training and after every advance, the callback replaces that value (and
    the momentum, or Adam's ``b1``, when the scheduler cycles momentum) with the scheduler's,
    so update ``k`` uses exactly the scheduler's value at ``k``. Replacing a value never
    retraces the compiled train step.

    Parameter groups: with one scheduler group, the value goes to every injected state. With
    ``N`` groups it goes to ``N`` injected states, matched by ``groups`` (the
    ``multi_transform`` labels, in scheduler-group order) or, without ``groups``, in the
    order of the optimizer state: a ``chain``'s order, and ``multi_transform`` labels sorted.

    Args:
        scheduler: The scheduler to own, e.g. a [`CyclicLR`][flax_cyclic.CyclicLR].
        interval: ``'step'`` advances the scheduler after every parameter update, ``'epoch'``
            after every epoch.
        monitor: For a scheduler driven by a metric
            ([`ReduceLROnPlateau`][flax_cyclic.ReduceLROnPlateau], whose ``requires_metric``
            is true): the metric it steps on, as it is logged. ``'eval/<name>'`` steps it after
            each evaluation, ``'train/<name>'`` at each epoch end on the epoch's train mean;
            ``interval`` does not apply then. Required for such a scheduler, refused for the
            others.
        learning_rate: Name of the injected hyperparameter that receives the learning rate.
        momentum: Name of the one that receives the cycled momentum; ``'auto'`` picks
            ``'momentum'`` (SGD) or ``'b1'`` (Adam); ``None`` leaves momentum alone.
        groups: ``multi_transform`` labels, one per scheduler group, or ``None``.
        accumulation_steps: Train steps per parameter update with ``optax.MultiSteps``;
            ``None`` (default) reads its integer ``every_k_schedule`` from the optimizer. Give
            it only where it cannot be read (an ``every_k_schedule`` function); it is checked
            against the optimizer's update counter over the first ``2 * k`` train steps.
        writer: Optional CLU ``MetricWriter`` (anything with ``write_scalars(step, scalars)``).
            The learning rate (and the momentum, when the callback drives it) that update
            ``i`` applied is logged at step ``i + 1``: the updates completed.
        log_every_steps: Log at every step that is a multiple of this.
        strict: On restore, refuse a saved scheduler state made with another configuration;
            ``False`` takes the saved position and keeps this scheduler's configuration.
        plot_steps: On a fresh start with a ``writer``, the scheduler's configuration is
            written once as hparams and a plot of the planned learning rate over this many
            steps as the image ``lr_schedule`` (also saved as ``lr_schedule.png`` in the
            writer's ``logdir``, if it has one). ``None``: the scheduler's ``preview_steps``
            (three cycles of a cyclic schedule, all of a one-cycle schedule); 0: no plot.

    The callback owns its scheduler and guards that what optax applies is what it reports:

    - A hyperparameter injected as a schedule (optax recomputes it inside every update, so
      writes would do nothing) is detected by comparing the values the optimizer applied with
      those written, without waiting on the device, until the scheduler's value has changed
      once (by the scheduler's second distinct value at the latest).
    - ``accumulation_steps`` that disagrees with ``optax.MultiSteps`` (at the root of the
      optimizer or nested in it) is refused.
    - An integer injected hyperparameter (``learning_rate=0`` instead of ``0.0``) is refused at
      ``on_train_begin``; with float16 or bfloat16 the values logged are the ones the optimizer
      holds (cast), and a value the dtype turns into 0 or infinity is an error.
    - The optimizer it writes must be the one that makes the updates: its update count is
      compared with the train steps the callback counted at the first ``2 * k`` train steps,
      at each power of two, at each epoch end and at the end of training (where a functional
      ``nnx.split`` + ``jax.jit`` loop trains a copy of the state, or ``on_step_end`` runs
      twice per update); a ``loop.optimizer`` replaced after ``on_train_begin`` is refused
      at the next step hook.
    - A scheduler moved by anyone else (``scheduler.step()`` in the loop as well) is a
      ``RuntimeError`` at the next hook; so is a step hook before ``on_train_begin``.
    - A scheduler built with ``last_epoch=N`` starts a loop at step 0 at step ``N`` (the loop
      learns it), so logs continue an earlier run's; a loop at another step is refused.
    - A finite scheduler (``OneCycleLR``) shorter than the run planned by the loop
      (``loop.total_steps``) is refused before the first update.

    Raises:
        TypeError: For a scheduler that is not an [`LRScheduler`][flax_cyclic.LRScheduler], or
            bad option types.
        ValueError: For unknown ``interval`` values or non-positive counts; a scheduler driven
            by a metric without ``monitor``, or a ``monitor`` for one that is not.

    Examples:
        >>> import optax
        >>> from flax import nnx
        >>> from flax_cyclic import CallbackList, CyclicLR, LRSchedulerCallback
        >>> model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
        >>> tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.0)
        >>> optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
        >>> callback = LRSchedulerCallback(CyclicLR(0.01, 0.1, step_size_up=4, last_epoch=2))
        >>> loop = CallbackList([callback], model=model, optimizer=optimizer)
        >>> loop.on_train_begin()  # the loop learns its step from the scheduler
        >>> loop.step, float(optimizer.opt_state.hyperparams["learning_rate"].get_value())
        (2, 0.055)
    """

    def __init__(
        self,
        scheduler: LRScheduler,
        *,
        interval: str = "step",
        monitor: str | None = None,
        learning_rate: str = "learning_rate",
        momentum: str | None = "auto",
        groups: Sequence[str] | None = None,
        accumulation_steps: int | None = None,
        writer: MetricWriter | None = None,
        log_every_steps: int = 1,
        strict: bool = True,
        plot_steps: int | None = None,
    ) -> None:
        owner = type(self).__name__
        self.scheduler = scheduler = check_scheduler(owner, scheduler)
        self.interval = _checks.choice(owner, "interval", interval, _INTERVALS)
        self.monitor = check_monitor(owner, scheduler, monitor)
        self.learning_rate = learning_rate
        self.momentum = momentum
        self.groups = check_groups(owner, scheduler, groups)
        self.accumulation_steps = check_accumulation(owner, accumulation_steps)
        WritingCallback.__init__(self, writer, log_every_steps=log_every_steps, required=False)
        self.strict = bool(strict)
        self.plot_steps = check_plot_steps(owner, scheduler, plot_steps)
        self._init_state()

    def _init_state(self) -> None:
        owner = type(self).__name__
        self._plan_written = False  # by this run, or by the run it is restored from
        self._restored = False
        self._binding: Binding | None = None  # what on_train_begin found to write
        self._train_steps = 0
        self._position = self.scheduler.last_epoch  # where the callback last left the scheduler
        self._epoch_steps = 0  # train steps since the last epoch end
        self._ended = False  # on_train_end ran: an evaluation now is not a decision
        # The guards, armed at on_train_begin: the values applied (read once ready, never
        # waited for) and the update counts (the first 2k train steps, powers of two, epoch ends).
        self._applied_check = AppliedCheck(owner)
        self._counts = CountCheck(owner)
        self._lookahead = Lookahead()  # hyperparams_ahead's copy of the scheduler

    @property
    def train_steps(self) -> int:
        """Train steps (micro-batches with gradient accumulation) this callback has counted."""
        return self._train_steps

    def cycles(self) -> Cycles:
        """Where the cycles end in train steps (errors as ``_bound``, ``cycles_of``)."""
        every = self._bound("cycles").updates_per_step if self._per_update else None
        return cycles_of(type(self).__name__, self.scheduler, self._train_steps, every)

    @property
    def logs_learning_rate(self) -> bool:
        """Whether it writes the learning rate it applied to a writer: with a ``writer``."""
        return self.writer is not None

    # -- hooks --

    def on_train_begin(self, loop: Loop) -> None:
        """Finds the injected hyperparameters and writes the scheduler's current values.

        Raises:
            ValueError: If the optimizer does not inject what the scheduler sets, its
                gradient accumulation disagrees with ``accumulation_steps``, the scheduler is
                shorter than the planned run, or the loop's step disagrees with the
                scheduler's position.
            CheckpointError: If a restored state disagrees with itself or with the loop.
        """
        owner = type(self).__name__
        self._ended = False
        optimizer = loop_optimizer(owner, loop)
        self._binding = binding = self._bind(optimizer)
        fresh = not self._restored and self._train_steps == 0
        started_at = self.scheduler.last_epoch
        self._train_steps = align_with_loop(
            owner,
            loop,
            self.scheduler,
            self._train_steps,
            updates_per_step=binding.updates_per_step,
            follows_updates=self._per_update,
            restored=self._restored,
        )
        if self._per_update:
            check_length(owner, loop, self.scheduler, binding.updates_per_step)
        self._position = self.scheduler.last_epoch
        self._lookahead.reset()
        self._write()
        # Arms the checks that compare the optimizer's own counters and values with ours.
        self._applied_check.start(binding.targets)
        self._counts.start(optimizer, self._train_steps, binding.updates_per_step)
        self._epoch_steps = 0
        if fresh and started_at == 0 and not self._plan_written and self.writes_here:
            plot_steps = 0 if self.monitor is not None else self.plot_steps  # no plan to draw
            write_plan(self.writer, self.scheduler, plot_steps)
        self._plan_written = True

    def on_step_begin(self, loop: Loop, step: int) -> None:
        """Checks, on the host, that the loop still trains the optimizer the callback writes.

        Raises:
            RuntimeError: If ``loop.optimizer`` was replaced, or its ``opt_state`` assigned
                after the callback last wrote into it (by a callback after it in the list).
        """
        binding = self._binding
        if binding is None:
            return
        owner = type(self).__name__
        check_same_optimizer(owner, loop, binding.optimizer)
        # With several steps per dispatch, this step ran already; the loop guards its hooks.
        if getattr(loop, "steps_ahead", 0) == 0 and not binding.is_current():
            raise replaced_state(owner, binding.targets)

    def on_step_end(self, loop: Loop, step: int, metrics: Mapping[str, Any]) -> None:
        """Counts the update, logs the values it used, and advances a per-step scheduler."""
        owner = type(self).__name__
        binding = self._bound("on_step_end")
        check_same_optimizer(owner, loop, binding.optimizer)
        if self._lookahead.pending:
            self._lookahead.check(owner, self.scheduler, self._train_steps)
        self._train_steps += 1
        self._epoch_steps += 1
        every = binding.updates_per_step
        if self._counts.due(self._train_steps, every):
            self._counts.verify_loop(loop, binding.optimizer, self._train_steps)
        if self._train_steps % every:
            return  # a micro-batch of optax.MultiSteps: no parameter update yet
        update = self._train_steps // every - 1
        if self._applied_check.unconfirmed:
            values = scheduler_values(self.scheduler)
            # Brings the injected values up to date before they are read.
            up_to_date = lambda: loop_optimizer(owner, loop)  # noqa: E731
            self._applied_check.record(update, binding.targets, values, up_to_date)
        if self.writer is not None and self.due(update + 1) and self.writes_here:
            scalars = logged_scalars(self.applied_values, self.groups, self.scheduler)
            self.write_scalars(self._train_steps, scalars)  # the loop step the update completed
        # Within a dispatch of several steps, the values were applied already; the last
        # step's hooks write the next update's.
        last = getattr(loop, "steps_ahead", 0) == 0
        if self._per_update:
            self._advance(write=last)
        elif last and not binding.is_current():
            self._write()  # into the opt_state assigned by a callback before this one

    def hyperparams_ahead(self, loop: Loop, start: int, steps: int) -> list[tuple[Any, np.ndarray]]:
        """The values train steps ``start`` to ``start + steps - 1`` apply, computed ahead.

        For a loop that runs several steps per dispatch. Computed on a copy of the scheduler,
        stepped as ``on_step_end`` steps the scheduler itself (once per parameter update) and
        kept for the next call; the callback's own state does not move. Its ``on_step_end``
        then checks, for every step, that the scheduler gives the values computed here (a
        ``scale_fn`` with state of its own would not). A scheduler that steps per epoch or on
        a metric holds its values within a dispatch, which never crosses an epoch end or an
        evaluation.

        Raises:
            RuntimeError: Before ``on_train_begin``, or if the scheduler was moved by another.
            ValueError: For a value the optimizer could not apply as given (see ``write``).
        """
        owner = type(self).__name__
        binding = self._bound("hyperparams_ahead")
        if not binding.is_current():
            raise replaced_state(owner, binding.targets)
        every = binding.updates_per_step if self._per_update else None
        rows = self._lookahead.rows(self.scheduler, self._train_steps, start, steps, every)
        return planned_values(owner, binding.targets, rows)

    def on_eval_end(self, loop: Loop, metrics: Mapping[str, Any]) -> None:
        """Steps a scheduler driven by an ``eval/`` metric with its value.

        Not after the end of training (``Trainer.evaluate`` after ``fit``, a final test): that
        evaluation trains nothing more, and a next run resumes the plateau's counters as
        training left them.
        """
        if self.monitor is not None and self.monitor.source == "eval" and not self._ended:
            self._step_on(metrics, "on_eval_end")

    def on_train_end(self, loop: Loop) -> None:
        """Finishes the pending checks (waiting for their values now) and flushes the writer."""
        self._ended = True
        try:
            if self._applied_check.pending:
                self._applied_check.check(block=True)
            binding = self._binding
            if binding is not None and self._train_steps != self._counts.began_at:
                self._counts.verify_loop(loop, binding.optimizer, self._train_steps)
        finally:
            flush_writer(self.writer)

    def on_epoch_end(self, loop: Loop, epoch: int, metrics: Mapping[str, Any]) -> None:
        """Advances a per-epoch scheduler, or steps one driven by a ``train/`` metric.

        Raises:
            ValueError: For a ``train/<name>`` monitor, if the epoch trained but its end
                reports no metrics (``callbacks.on_epoch_end()`` without the epoch's means):
                the scheduler would never act.
        """
        trained, self._epoch_steps = self._epoch_steps, 0
        binding = self._binding
        if binding is not None and trained:
            self._counts.verify_loop(loop, binding.optimizer, self._train_steps)
        if self.monitor is not None:
            owner = type(self).__name__
            means = epoch_metrics(owner, self.monitor, self.scheduler, epoch, metrics, trained)
            if means is not None:
                self._step_on(means, "on_epoch_end")
            return
        self._bound("on_epoch_end")
        if self.interval == "epoch":
            self._advance()

    @property
    def _per_update(self) -> bool:
        """Whether the scheduler advances once per parameter update (and follows the step)."""
        return self.interval == "step" and self.monitor is None

    def _advance(self, metric: float | None = None, *, write: bool = True) -> None:
        """Steps the scheduler (with the metric, if it is driven by one) and writes its values."""
        if metric is None:
            self.scheduler.step()
        else:  # ReduceLROnPlateau.step(metric)
            cast(Any, self.scheduler).step(metric)
        self._position = self.scheduler.last_epoch
        if write:
            self._write()

    def _step_on(self, metrics: Mapping[str, Any], hook: str) -> None:
        """Steps a metric-driven scheduler with the monitored value of this hook's metrics."""
        self._bound(hook)
        assert self.monitor is not None  # only a metric-driven scheduler steps here
        self._advance(self.monitor.value(type(self).__name__, metrics))

    def _bound(self, hook: str) -> Binding:
        """The binding of ``on_train_begin``, with the scheduler where the callback left it.

        Raises:
            RuntimeError: Before ``on_train_begin``, or if the scheduler was moved by another.
        """
        if self._binding is None:
            raise not_begun(type(self).__name__, hook)
        if self.scheduler.last_epoch != self._position:
            raise moved_elsewhere(type(self).__name__, self.scheduler.last_epoch, self._position)
        return self._binding

    # -- state --

    def state_dict(self) -> dict[str, Any]:
        """The scheduler's state, the train-step counter and their interval, as JSON data."""
        return {
            "scheduler": self.scheduler.state_dict(),
            "train_steps": self._train_steps,
            "interval": self.interval,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restores [`state_dict`][flax_cyclic.LRSchedulerCallback.state_dict]'s output.

        The scheduler checks its configuration; ``on_train_begin`` then checks the restored
        position against the loop's step.

        Raises:
            ValueError: If ``state`` lacks an entry, was saved with another ``interval`` (its
                count of steps would be read as epochs, or the scheduler refuses its state;
                one saved with another configuration, unless the callback was built with
                ``strict=False`` (the message says so).
        """
        owner = type(self).__name__
        train_steps = load_saved_state(owner, self.scheduler, state, self.interval, self.strict)
        self._position = self.scheduler.last_epoch
        self._lookahead.reset()
        self._plan_written = True
        self._restored = True
        self._train_steps = train_steps
        if self._binding is not None:
            self._write()

    # -- internals --

    def _bind(self, optimizer: Any) -> Binding:
        return bind(
            type(self).__name__,
            optimizer,
            self.scheduler,
            learning_rate=self.learning_rate,
            momentum=self.momentum,
            groups=self.groups,
            accumulation_steps=self.accumulation_steps,
        )

    @property
    def applied_values(self) -> dict[str, list[float]]:
        """What the next update applies, per kind (``'lr'``, ``'momentum'``) and group.

        The scheduler's values as the optimizer holds them: cast to each hyperparameter's
        dtype (float16 or bfloat16 round them), for what the callback drives only (no
        momentum with ``momentum=None``). These are the values logged.

        Raises:
            RuntimeError: Before ``on_train_begin``.
        """
        if self._binding is None:
            raise not_begun(type(self).__name__, "applied_values")
        return self._binding.cast(scheduler_values(self.scheduler))

    def _write(self) -> None:
        """Writes the scheduler's values; into an ``opt_state`` assigned since, bound anew."""
        binding = self._binding
        assert binding is not None  # written only once bound
        if not binding.is_current():
            self._binding = binding = rebound(type(self).__name__, binding, self._bind)
            self._applied_check.watch(binding.targets)
        binding.write(scheduler_values(self.scheduler), type(self).__name__)
