"""The learning-rate callback: a scheduler drives ``optax.inject_hyperparams`` in an optimizer."""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, cast

import jax
import numpy as np

from flax_cyclic import _checks, _logging
from flax_cyclic._errors import CheckpointError
from flax_cyclic._hyperparams import (
    InjectedHyperparams,
    Target,
    accumulation_counters,
    accumulation_every_k,
    accumulation_state,
    find_injected_hyperparams,
    held_value,
    match_groups,
    refuse_integer,
    resolve_targets,
)
from flax_cyclic._metrics import local_copy
from flax_cyclic.callbacks.base import (
    Callback,
    Loop,
    MetricWriter,
    Monitored,
    flush_writer,
    loop_optimizer,
)
from flax_cyclic.schedulers import LRScheduler

__all__ = ["LRSchedulerCallback"]

logger = _logging.logger

_INTERVALS = ("step", "epoch")


class _Applied(NamedTuple):
    """A value the optimizer applied in one update, to compare once the device has it."""

    update: int
    target: int  # index into the callback's targets
    held: Any  # the injected value after the update (a device array, not waited for)
    written: float  # the scheduler's value written before the update


class LRSchedulerCallback(Callback):
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
        if not isinstance(scheduler, LRScheduler):
            raise TypeError(
                f"{owner}: `scheduler` must be a flax_cyclic scheduler (e.g. CyclicLR), got "
                f"{type(scheduler).__name__}. Pure schedules go straight into optax instead."
            )
        self.scheduler = scheduler
        self.interval = _checks.choice(owner, "interval", interval, _INTERVALS)
        self.monitor = self._check_monitor(monitor)
        self.learning_rate = learning_rate
        self.momentum = momentum
        if groups is not None and len(groups) != scheduler.num_groups:
            raise ValueError(
                f"{owner}: `groups` names {len(groups)} labels but the scheduler has "
                f"{scheduler.num_groups} parameter group(s); give one label per group."
            )
        self.groups = None if groups is None else [str(label) for label in groups]
        if accumulation_steps is not None:
            accumulation_steps = _checks.integer(
                owner,
                "accumulation_steps",
                accumulation_steps,
                minimum=1,
                hint="Pass optax.MultiSteps' every_k_schedule, or leave it out to read it.",
            )
        self.accumulation_steps = accumulation_steps
        self.log_every_steps = _checks.integer(
            owner, "log_every_steps", log_every_steps, minimum=1, hint="e.g. 100."
        )
        if writer is not None and not callable(getattr(writer, "write_scalars", None)):
            raise TypeError(
                f"{owner}: `writer` must have CLU's MetricWriter interface "
                f"(write_scalars(step, scalars)), got {type(writer).__name__}."
            )
        self.writer = writer
        self.strict = bool(strict)
        if plot_steps is None:
            plot_steps = scheduler.preview_steps
        self.plot_steps = _checks.integer(
            owner, "plot_steps", plot_steps, minimum=0, hint="e.g. the run's length, or 0."
        )
        self._init_state()

    def _init_state(self) -> None:
        self._plan_written = False  # by this run, or by the run it is restored from
        self._restored = False
        self._targets: list[Target] = []
        self._train_steps = 0
        self._updates_per_step = 1  # the resolved accumulation_steps
        self._position = self.scheduler.last_epoch  # where the callback last left the scheduler
        # The checks of _verify_applied (device values read once ready, never waited for)
        # and _verify_counts (the first 2k train steps, powers of two, epoch ends).
        self._applied: list[_Applied] = []
        self._unconfirmed: dict[int, float | None] = {}
        self._recorded: dict[int, float] = {}  # the last value written, per target, recorded
        self._optimizer: Any = None  # the optimizer on_train_begin found in the loop
        self._dtypes: dict[tuple[str, int], np.dtype] = {}  # per (kind, group) written
        self._began_at = 0  # the train steps counted when this run began
        self._update_offset = 0  # the optimizer's update count minus the train steps
        self._accumulation_offsets: list[int] = []  # per optax.MultiSteps, likewise
        self._epoch_steps = 0  # train steps since the last epoch end
        # hyperparams_ahead: the values computed ahead per train step, and the stepped copy.
        self._planned: dict[int, tuple[list[float], list[float] | None]] = {}
        self._ahead: tuple[int, LRScheduler] | None = None

    @property
    def train_steps(self) -> int:
        """Train steps (micro-batches with gradient accumulation) this callback has counted."""
        return self._train_steps

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
        optimizer = loop_optimizer(owner, loop)
        opt_state = optimizer.opt_state
        self._optimizer = optimizer
        self._updates_per_step = self._resolve_accumulation(optimizer)
        injected = find_injected_hyperparams(opt_state)
        if not injected:
            raise ValueError(
                f"{owner}: the optimizer has no injected hyperparameters. Build "
                "its transformation with optax.inject_hyperparams, e.g. "
                "optax.inject_hyperparams(optax.sgd)(learning_rate=0.0, momentum=0.9)."
            )
        self._targets = self._resolve_targets(self._match_groups(injected))
        refuse_integer(owner, self._targets)
        self._dtypes = self._dtype_per_group()
        fresh = not self._restored and self._train_steps == 0
        started_at = self.scheduler.last_epoch
        self._align_with_loop(loop)
        self._check_length(loop)
        self._position = self.scheduler.last_epoch
        self._planned, self._ahead = {}, None
        self._write()
        self._start_verification(optimizer)
        first_run = fresh and started_at == 0 and not self._plan_written
        if first_run and self.writer is not None and jax.process_index() == 0:
            self._write_plan()
        self._plan_written = True

    def on_step_begin(self, loop: Loop, step: int) -> None:
        """Checks, on the host, that the loop still trains the optimizer the callback writes."""
        if self._targets:
            self._check_same_optimizer(loop)

    def on_step_end(self, loop: Loop, step: int, metrics: Mapping[str, Any]) -> None:
        """Counts the update, logs the values it used, and advances a per-step scheduler."""
        if not self._targets:
            raise self._not_begun("on_step_end")
        if self.scheduler.last_epoch != self._position:
            raise self._moved_elsewhere()
        self._check_same_optimizer(loop)
        if self._planned:
            self._check_planned(self._train_steps)
        self._train_steps += 1
        self._epoch_steps += 1
        run = self._train_steps - self._began_at
        if run <= 2 * self._updates_per_step or run & (run - 1) == 0:  # the first, then 2^n
            self._verify_counts(loop)
        if self._train_steps % self._updates_per_step:
            return  # a micro-batch of optax.MultiSteps: no parameter update yet
        update = self._train_steps // self._updates_per_step - 1
        if self._unconfirmed:
            self._verify_applied(loop, update)
        if self.writer is not None and (update + 1) % self.log_every_steps == 0:
            self._log(self._train_steps)  # at the loop step the update completed
        if self._per_update:
            # Within a dispatch of several steps, the values were applied already; the last
            # step's hooks write the next update's.
            self._advance(write=getattr(loop, "steps_ahead", 0) == 0)

    def _check_planned(self, step: int) -> None:
        """Refuses values that differ from those ``hyperparams_ahead`` gave for ``step``."""
        planned = self._planned.pop(step, None)
        scheduler = self.scheduler
        if planned is not None and planned != (
            scheduler.get_last_lr(),
            scheduler.get_last_momentum(),
        ):
            raise RuntimeError(
                f"{type(self).__name__}: at train step {step} the scheduler gives "
                f"{self._values()}, but computed ahead for the loop's dispatch (on a copy of "
                f"the scheduler) it gave {{'lr': {planned[0]}, 'momentum': {planned[1]}}}, and "
                "those were applied. A scheduler whose "
                "values depend on more than its own state (e.g. a scale_fn that keeps a "
                "counter of its own) cannot be computed ahead: train with "
                "steps_per_dispatch=1, or make the scale_fn a function of its argument only."
            )

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
        if not self._targets:
            raise self._not_begun("hyperparams_ahead")
        if self.scheduler.last_epoch != self._position:
            raise self._moved_elsewhere()
        if not self._per_update:
            rows = [_scheduler_values(self.scheduler)] * steps
        else:
            rows = self._rows_ahead(start, steps)
        owner = type(self).__name__
        return [
            (
                target.state.values[target.name],
                held_value(
                    owner,
                    target.state,
                    target.name,
                    np.array([row[target.kind][target.group] for row in rows]),
                ),
            )
            for target in self._targets
        ]

    def _rows_ahead(self, start: int, steps: int) -> list[dict[str, list[float]]]:
        """The scheduler's values at train steps ``start`` onwards, from a copy stepped ahead.

        Each step's values are also kept for ``on_step_end`` to compare with the scheduler's.
        """
        every = self._updates_per_step
        if self._ahead is None or self._ahead[0] != start:
            copied = copy.deepcopy(self.scheduler)
            for done in range(self._train_steps, start):
                if (done + 1) % every == 0:
                    copied.step()
            self._ahead = (start, copied)
        scheduler = self._ahead[1]
        rows, planned = [], self._planned
        for done in range(start, start + steps):
            lr, momentum = scheduler.get_last_lr(), scheduler.get_last_momentum()
            planned[done] = (lr, momentum)
            rows.append({"lr": lr} if momentum is None else {"lr": lr, "momentum": momentum})
            if (done + 1) % every == 0:
                scheduler.step()
        self._ahead = (start + steps, scheduler)
        return rows

    def on_eval_end(self, loop: Loop, metrics: Mapping[str, Any]) -> None:
        """Steps a scheduler driven by an ``eval/`` metric with its value."""
        if self.monitor is not None and self.monitor.source == "eval":
            self._step_on(metrics, "on_eval_end")

    def on_train_end(self, loop: Loop) -> None:
        """Finishes the pending checks (waiting for their values now) and flushes the writer."""
        try:
            if self._applied:
                self._check_applied(block=True)
            if self._targets and self._train_steps != self._began_at:
                self._verify_counts(loop)
        finally:
            flush_writer(self.writer)

    def on_exception(self, loop: Loop, exception: BaseException) -> None:
        """Flushes the writer, so that nothing logged before the error is lost."""
        flush_writer(self.writer)

    def on_epoch_end(self, loop: Loop, epoch: int, metrics: Mapping[str, Any]) -> None:
        """Advances a per-epoch scheduler, or steps one driven by a ``train/`` metric.

        Raises:
            ValueError: For a ``train/<name>`` monitor, if the epoch trained but its end
                reports no metrics (``callbacks.on_epoch_end()`` without the epoch's means):
                the scheduler would never act.
        """
        trained, self._epoch_steps = self._epoch_steps, 0
        if self._targets and trained:
            self._verify_counts(loop)
        if self.monitor is not None:
            if self.monitor.source != "train":
                return
            if metrics:
                self._step_on(metrics, "on_epoch_end")
            elif trained:  # none after no step: an epoch resumed at its end
                raise self._no_epoch_metrics(epoch, trained)
            return
        if not self._targets:
            raise self._not_begun("on_epoch_end")
        if self.scheduler.last_epoch != self._position:
            raise self._moved_elsewhere()
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
        if not self._targets:
            raise self._not_begun(hook)
        if self.scheduler.last_epoch != self._position:
            raise self._moved_elsewhere()
        assert self.monitor is not None  # only a metric-driven scheduler steps here
        self._advance(self.monitor.value(type(self).__name__, metrics))

    def _check_monitor(self, monitor: Any) -> Monitored | None:
        """``monitor`` for a scheduler driven by a metric; refused for the others."""
        owner, name = type(self).__name__, type(self.scheduler).__name__
        if self.scheduler.requires_metric and monitor is None:
            raise ValueError(
                f"{owner}: {name} steps on a metric, not on the update count; pass the metric it "
                f"watches, e.g. LRSchedulerCallback({name}(...), monitor='eval/loss')."
            )
        if monitor is not None and not self.scheduler.requires_metric:
            raise ValueError(
                f"{owner}: `monitor` is for a scheduler driven by a metric (ReduceLROnPlateau); "
                f"{name} follows the update count, got monitor={monitor!r}. Leave monitor out."
            )
        if monitor is None:
            return None
        parsed = Monitored.parse(owner, monitor)
        resolve_mode = getattr(self.scheduler, "resolve_mode", None)
        if callable(resolve_mode):  # ReduceLROnPlateau(mode='auto'): min or max by the name
            resolve_mode(str(parsed))
        return parsed

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
                count of steps would be read as epochs, or the reverse), or the scheduler
                refuses its state.
        """
        owner = type(self).__name__
        keys = ("scheduler", "train_steps")
        missing = [key for key in keys if not isinstance(state, Mapping) or key not in state]
        if missing:
            found = sorted(state) if isinstance(state, Mapping) else type(state).__name__
            raise ValueError(
                f"{owner}.load_state_dict: the saved state has no {missing} (it has {found}). "
                "Restore a state made by LRSchedulerCallback.state_dict()."
            )
        train_steps = _checks.integer(
            owner,
            "train_steps",
            state["train_steps"],
            minimum=0,
            maximum=None,
            hint="Restore a state made by LRSchedulerCallback.state_dict().",
        )
        saved_interval = state.get("interval", self.interval)  # absent: saved before 0.3
        if saved_interval != self.interval:
            raise ValueError(
                f"{owner}.load_state_dict: the state was saved with interval="
                f"{saved_interval!r}, but this callback has interval={self.interval!r}: the "
                f"scheduler's position counts {saved_interval}s and would be read as "
                f"{self.interval}s. Build the callback with interval={saved_interval!r} to "
                "resume this run, or start a new run."
            )
        self.scheduler.load_state_dict(state["scheduler"], strict=self.strict)
        self._position = self.scheduler.last_epoch
        self._planned, self._ahead = {}, None
        self._plan_written = True
        self._restored = True
        self._train_steps = train_steps
        if self._targets:
            self._write()

    # -- internals: set-up --

    def _resolve_accumulation(self, optimizer: Any) -> int:
        """Train steps per parameter update: 1, or optax.MultiSteps' every_k_schedule."""
        owner = type(self).__name__
        given = self.accumulation_steps
        counters = accumulation_counters(optimizer.opt_state)
        if not counters:
            if given not in (None, 1):
                raise ValueError(
                    f"{owner}: accumulation_steps={given} but the optimizer is not an "
                    "optax.MultiSteps; leave accumulation_steps out (or pass 1)."
                )
            return 1
        if len(counters) > 1:
            raise ValueError(
                f"{owner}: the optimizer has {len(counters)} optax.MultiSteps (at "
                f"{', '.join(where for where, _ in counters)}); their updates cannot be counted "
                "as one. Accumulate gradients with one optax.MultiSteps."
            )
        ((where, _),) = counters
        root = accumulation_state(optimizer.opt_state) is not None
        read = accumulation_every_k(getattr(optimizer, "tx", None)) if root else None
        if given is None and read is None:
            why = (
                "its every_k_schedule cannot be read as one number (a function of the step)"
                if root
                else f"it is nested at {where}, where its every_k_schedule cannot be read"
            )
            raise ValueError(
                f"{owner}: the optimizer accumulates gradients with optax.MultiSteps, and {why}; "
                "pass accumulation_steps=k, the train steps per parameter update, so the "
                "scheduler advances once per update, not per micro-batch."
            )
        if given is not None and read is not None and given != read:
            raise ValueError(
                f"{owner}: accumulation_steps={given} but the optimizer's optax.MultiSteps "
                f"updates every {read} train steps (every_k_schedule={read}): the scheduler "
                f"would run {read / given:g} times too fast. Pass accumulation_steps={read}, or "
                "leave it out to read it from the optimizer."
            )
        return cast(int, given if given is not None else read)

    def _match_groups(self, injected: list[InjectedHyperparams]) -> list[list[InjectedHyperparams]]:
        """For each scheduler group, the injected states it drives."""
        groups = self.scheduler.num_groups
        if self.groups is None and groups not in (1, len(injected)):
            described = ", ".join(state.label or state.where for state in injected)
            raise ValueError(
                f"{type(self).__name__}: the scheduler has {groups} parameter groups but the "
                f"optimizer has {len(injected)} injected hyperparameter states ({described}). "
                "Give the scheduler one learning rate per group, or pass groups=[labels]."
            )
        return match_groups(type(self).__name__, injected, groups, self.groups)

    def _resolve_targets(self, per_group: list[list[InjectedHyperparams]]) -> list[Target]:
        """The hyperparameters to write, with ``momentum='auto'`` resolved per injected state."""
        cycles_momentum = self.momentum is not None and self.scheduler.cycle_momentum
        names = {"lr": self.learning_rate}
        if cycles_momentum:
            assert self.momentum is not None
            names["momentum"] = self.momentum
        targets, problems = resolve_targets(per_group, names)
        if problems:
            fix = "Pass the right name (learning_rate=..., momentum=...) or inject it"
            if cycles_momentum:
                fix += (
                    ", e.g. optax.inject_hyperparams(optax.sgd)(learning_rate=0.0, "
                    "momentum=0.9); or pass momentum=None to leave momentum alone"
                )
            raise ValueError(
                f"{type(self).__name__}: the optimizer does not inject what the scheduler sets"
                f"{' (it cycles momentum)' if cycles_momentum else ''}: "
                + "; ".join(problems)
                + f". {fix}."
            )
        return targets

    def _dtype_per_group(self) -> dict[tuple[str, int], np.dtype]:
        """The dtype each scheduler value is applied in; one per value, or an error."""
        dtypes: dict[tuple[str, int], set[np.dtype]] = {}
        for target in self._targets:
            dtypes.setdefault((target.kind, target.group), set()).add(
                target.state.dtypes[target.name]
            )
        mixed = {key: kinds for key, kinds in dtypes.items() if len(kinds) > 1}
        if mixed:
            (kind, group), kinds = next(iter(mixed.items()))
            raise ValueError(
                f"{type(self).__name__}: the {kind} of scheduler group {group} goes to "
                f"hyperparameters of dtypes {sorted(map(str, kinds))}, so it would be applied "
                "as different values and only one could be logged. Inject them with one dtype."
            )
        return {key: next(iter(kinds)) for key, kinds in dtypes.items()}

    def _align_with_loop(self, loop: Loop) -> None:
        """Agrees with the loop on the train step: the loop learns it, or both must match."""
        per_update = self._updates_per_step
        position = self.scheduler.last_epoch
        if self._train_steps == 0 and self._per_update:
            self._train_steps = position * per_update  # a scheduler built with last_epoch=N
        elif self._per_update and position != self._train_steps // per_update:
            kind = CheckpointError if self._restored else RuntimeError
            updates = self._train_steps // per_update
            raise kind(
                f"{type(self).__name__}: the scheduler stands at step {position}, but the "
                f"callback counted {self._train_steps} train steps ({updates} parameter "
                "updates) with it: the two were saved or changed apart. Restore a "
                "state saved by this callback unedited, or start a new run."
            )
        loop_step = getattr(loop, "step", 0)
        if not self._per_update and self._train_steps == 0:
            self._train_steps = loop_step  # epochs, not steps, position an epoch scheduler
        if loop_step == self._train_steps:
            return
        if loop_step == 0 and hasattr(loop, "step"):
            loop.step = self._train_steps  # e.g. CyclicLR(..., last_epoch=N) in a new loop
            logger.info(
                "%s: the loop starts at train step %d, where the scheduler stands.",
                type(self).__name__,
                self._train_steps,
            )
            return
        error: type[Exception] = CheckpointError if self._restored else ValueError
        raise error(
            f"{type(self).__name__}: the loop is at train step {loop_step} but the scheduler's "
            f"position is train step {self._train_steps} (scheduler step {position}): the "
            "learning rates and the logs would not belong to the steps they are used at. Build "
            f"the scheduler with last_epoch={loop_step // per_update} to continue at step "
            f"{loop_step}, or start the loop at step {self._train_steps} (CallbackList(..., "
            f"step={self._train_steps}))."
        )

    def _check_length(self, loop: Loop) -> None:
        """Refuses a finite scheduler (``total_steps``) shorter than the loop's planned run."""
        length = getattr(self.scheduler, "total_steps", None)
        planned = getattr(loop, "total_steps", None)
        if not self._per_update or length is None or planned is None:
            return
        updates = planned // self._updates_per_step
        if updates > length:
            name = type(self.scheduler).__name__
            raise ValueError(
                f"{type(self).__name__}: the run plans {updates} parameter updates but "
                f"{name}(total_steps={length}) has {length}: update {length} would fail "
                f"part-way through training. Build it with total_steps={updates} (or the "
                "run's epochs and steps_per_epoch), or train for fewer steps."
            )

    # -- internals: writing and checking --

    def _values(self) -> dict[str, list[float]]:
        return _scheduler_values(self.scheduler)

    @property
    def applied_values(self) -> dict[str, list[float]]:
        """What the next update applies, per kind (``'lr'``, ``'momentum'``) and group.

        The scheduler's values as the optimizer holds them: cast to each hyperparameter's
        dtype (float16 or bfloat16 round them), for what the callback drives only (no
        momentum with ``momentum=None``). These are the values logged.

        Raises:
            RuntimeError: Before ``on_train_begin``.
        """
        if not self._targets:
            raise self._not_begun("applied_values")
        values = self._values()
        return {
            kind: [
                float(np.asarray(value, dtype=self._dtypes[kind, group]))
                for group, value in enumerate(values[kind])
            ]
            for kind in dict.fromkeys(kind for kind, _ in self._dtypes)
        }

    def _write(self) -> None:
        values = self._values()
        owner = type(self).__name__
        for target in self._targets:
            target.state.write(target.name, values[target.kind][target.group], owner)

    def _start_verification(self, optimizer: Any) -> None:
        """Arms the checks that compare the optimizer's own counters and values with ours.

        One device read at the start: the update counts the optimizer has made so far.
        """
        self._applied = []
        self._unconfirmed = {i: None for i in range(len(self._targets))}
        self._recorded = {}
        self._began_at = self._train_steps
        self._epoch_steps = 0
        self._update_offset = _update_count(optimizer) - self._train_steps
        k = self._updates_per_step
        self._accumulation_offsets = [
            int(_host_value(count.get_value())) - self._train_steps // k
            for _, count in accumulation_counters(optimizer.opt_state)
        ]

    def _verify_applied(self, loop: Loop, update: int) -> None:
        """Records the values the optimizer applied in ``update`` and checks those ready.

        A hyperparameter injected as a schedule is recomputed by optax inside the update, so
        the value it applied can differ from the one written. The value applied is recorded at
        the first update and at each update whose written value differs from the last one
        recorded (a scheduler driven by a metric changes it rarely); it is read once the device
        has computed it (never waiting). The check ends for a hyperparameter once it has
        matched a value that differs from its first one: a schedule that agreed with the
        scheduler's values at two different points is no longer a suspect.
        """
        values = self._values()
        due = []
        for index in self._unconfirmed:
            target = self._targets[index]
            written = values[target.kind][target.group]
            if self._recorded.get(index) != written:
                due.append((index, target, written))
        if due:
            loop_optimizer(type(self).__name__, loop)  # brings the injected values up to date
        for index, target, written in due:
            self._recorded[index] = written
            held = target.state.values[target.name].get_value()
            self._applied.append(_Applied(update, index, held, written))
        if self._applied:
            self._check_applied(block=False)

    def _check_applied(self, *, block: bool) -> None:
        while self._applied and (block or _is_ready(self._applied[0].held)):
            applied = self._applied.pop(0)
            if applied.target not in self._unconfirmed:
                continue
            target = self._targets[applied.target]
            held = _host_value(applied.held)
            written = float(np.asarray(applied.written, dtype=target.state.dtypes[target.name]))
            if abs(held - written) > 1e-6 * max(abs(written), 1e-30):
                raise ValueError(
                    f"{type(self).__name__}: update {applied.update} applied {target.name!r}="
                    f"{held:.7g} at {target.state.where}, but the scheduler set {written:.7g}: "
                    "the transformation computes it itself (it was injected as a schedule, "
                    "e.g. inject_hyperparams(optax.sgd)(learning_rate=cyclic_schedule(...))), "
                    "so the callback's values are neither used nor what is logged. Inject a "
                    "number instead, e.g. inject_hyperparams(optax.sgd)(learning_rate=0.0); "
                    "the callback sets it."
                )
            first = self._unconfirmed[applied.target]
            if first is None:
                self._unconfirmed[applied.target] = written
            elif written != first:
                del self._unconfirmed[applied.target]
        if not self._unconfirmed:
            self._applied.clear()

    def _verify_counts(self, loop: Loop) -> None:
        """Compares the optimizer's update counts with the train steps the callback counted.

        Called at the first ``2 * k`` train steps of a run, at each power of two, at epoch ends
        and at the end: each reads the counts from the device (the step donates its state, so
        they are read before the next step reuses it). ``nnx.Optimizer.step`` counts every
        update call (micro-batches too); ``optax.MultiSteps``' ``gradient_step`` the
        parameter updates.
        """
        owner = type(self).__name__
        optimizer = loop_optimizer(owner, loop)
        self._check_same_optimizer(loop)
        # A loop that dispatches several steps at once runs their hooks afterwards.
        ahead = getattr(loop, "steps_ahead", 0)
        made = _update_count(optimizer) - self._update_offset - ahead
        if made != self._train_steps:
            raise self._not_the_update(made)
        k = self._updates_per_step
        counters = accumulation_counters(optimizer.opt_state)
        for (where, count), offset in zip(counters, self._accumulation_offsets, strict=True):
            made = int(_host_value(count.get_value())) - offset
            expected = (self._train_steps + ahead) // k
            if made != expected:
                raise ValueError(
                    f"{owner}: optax.MultiSteps (at {where}) made {made} parameter updates in "
                    f"{self._train_steps + ahead} train steps, but accumulation_steps={k} means "
                    f"{expected}: the scheduler would not advance once per update. Pass its "
                    "every_k_schedule as accumulation_steps (a constant one)."
                )

    def _check_same_optimizer(self, loop: Loop) -> None:
        """Refuses a ``loop.optimizer`` replaced after ``on_train_begin`` (a host check)."""
        held = _held_optimizer(loop)
        if held is not None and held is not self._optimizer:
            raise RuntimeError(
                f"{type(self).__name__}: loop.optimizer was replaced after on_train_begin: "
                "the callback writes the learning rate into the optimizer it began with, so "
                "the new one would train at its own injected value (e.g. 0.0). Give the loop "
                "its optimizer before callbacks.on_train_begin(), or start a new CallbackList "
                "for the new optimizer."
            )

    def _not_the_update(self, made: int) -> ValueError:
        counted = self._train_steps - self._began_at
        made -= self._began_at
        if made < counted:
            why = (
                "the updates were made on another copy of the optimizer state (a functional "
                "loop over nnx.split state trains that copy, so the values written here are "
                "never used), or on_step_end ran more than once per update. In a jax.jit step "
                "of split state, set the values inside the step with set_hyperparams("
                "opt_state, learning_rate=...) and step the scheduler yourself "
                "(docs/own_loop.md), or call on_step_end once per update"
            )
        else:
            why = (
                "the optimizer made updates without on_step_end, so the scheduler fell behind. "
                "Call callbacks.on_step_end() after every update, and no update outside the "
                "hooks"
            )
        return ValueError(
            f"{type(self).__name__}: the optimizer it writes made {made} updates while the "
            f"callback counted {counted} train steps (on_step_end calls): {why}."
        )

    def _no_epoch_metrics(self, epoch: int, trained: int) -> ValueError:
        assert self.monitor is not None
        name = self.monitor.name
        return ValueError(
            f"{type(self).__name__}: monitor={str(self.monitor)!r} is the epoch's train mean, "
            f"but epoch {epoch} ended after {trained} train steps with no metrics reported "
            f"(on_epoch_end got {{}}), so {type(self.scheduler).__name__} would never act. "
            f"Pass the epoch's means: callbacks.on_epoch_end({{{name!r}: mean_{name}}}), as "
            "the Trainer does."
        )

    def _not_begun(self, hook: str) -> RuntimeError:
        return RuntimeError(
            f"{type(self).__name__}.{hook}: called before on_train_begin, so no learning rate "
            "has been written into the optimizer. Call on_train_begin(loop) once before the "
            "first step (CallbackList.on_train_begin() does)."
        )

    def _moved_elsewhere(self) -> RuntimeError:
        return RuntimeError(
            f"{type(self).__name__}: the scheduler stands at step {self.scheduler.last_epoch}, "
            f"but the callback left it at step {self._position}: something else moved it "
            "(scheduler.step() or load_state_dict in the loop as well?). The callback owns its "
            "scheduler and steps it after every update; remove the other calls, or drive the "
            "scheduler yourself without the callback."
        )

    def _write_plan(self) -> None:
        """Writes the configuration as hparams and a picture of the planned schedule, once."""
        write_hparams = getattr(self.writer, "write_hparams", None)
        if callable(write_hparams):
            config = self.scheduler.state_dict()["config"]
            plain = (bool, int, float, str)
            write_hparams(
                {
                    f"scheduler/{key}": value if isinstance(value, plain) else str(value)
                    for key, value in config.items()
                }
            )
        write_images = getattr(self.writer, "write_images", None)
        if not self.plot_steps or self.monitor is not None or not callable(write_images):
            # A scheduler driven by a metric has no plan to draw.
            return
        from flax_cyclic._figures import plot_schedule

        logdir = getattr(self.writer, "logdir", None)
        path = os.path.join(logdir, "lr_schedule.png") if logdir else None
        try:
            image = plot_schedule(self.scheduler, self.plot_steps, path=path)
        except ImportError as error:
            logger.warning("No picture of the planned schedule: %s", error)
            return
        write_images(0, {"lr_schedule": image[None]})

    def _log(self, step: int) -> None:
        if jax.process_index() != 0:
            return
        values = self.applied_values
        scalars: dict[str, float] = {}
        for kind, tag in (("lr", "learning_rate"), ("momentum", "momentum")):
            if kind not in values:
                continue
            per_group = values[kind]
            if len(per_group) == 1:
                scalars[tag] = per_group[0]
            else:
                labels = self.groups or [str(i) for i in range(len(per_group))]
                scalars.update(
                    {f"{tag}/{label}": v for label, v in zip(labels, per_group, strict=True)}
                )
        for attribute, tag in (("cycle", "lr_cycle"), ("cycle_position", "lr_cycle_position")):
            if hasattr(self.scheduler, attribute):
                scalars[tag] = getattr(self.scheduler, attribute)
        assert self.writer is not None  # _log runs only with a writer
        self.writer.write_scalars(step, scalars)


def _scheduler_values(scheduler: LRScheduler) -> dict[str, list[float]]:
    """The scheduler's current values per kind (``'lr'``, ``'momentum'``) and group."""
    values = {"lr": scheduler.get_last_lr()}
    momentum = scheduler.get_last_momentum()
    if momentum is not None:
        values["momentum"] = momentum
    return values


def _is_ready(value: Any) -> bool:
    """Whether reading ``value`` would not wait for the device."""
    return not isinstance(value, jax.Array) or bool(value.is_ready())  # type: ignore[attr-defined]


def _update_count(optimizer: Any) -> int:
    """The optimizer's update calls so far (``nnx.Optimizer.step``): one device read."""
    step = getattr(optimizer, "step", None)
    return 0 if step is None else int(_host_value(step.get_value()))


def _held_optimizer(loop: Any) -> Any:
    """The loop's optimizer object as it holds it, without bringing the state up to date."""
    attributes = getattr(loop, "__dict__", {})
    return attributes.get("_optimizer", attributes.get("optimizer"))


def _host_value(value: Any) -> float:
    """A scalar on the host; for a global array, this process's copy of it."""
    return float(np.asarray(local_copy(value)))
