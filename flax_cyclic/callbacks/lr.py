"""The learning-rate callback: a scheduler drives ``optax.inject_hyperparams`` in an optimizer."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax

from flax_cyclic import _checks
from flax_cyclic.callbacks.base import Callback
from flax_cyclic.hyperparams import (
    InjectedHyperparams,
    accumulation_state,
    find_injected_hyperparams,
)
from flax_cyclic.schedulers import LRScheduler

__all__ = ["LRSchedulerCallback"]

logger = logging.getLogger("flax_cyclic")

_INTERVALS = ("step", "epoch")


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
        learning_rate: Name of the injected hyperparameter that receives the learning rate.
        momentum: Name of the one that receives the cycled momentum; ``'auto'`` picks
            ``'momentum'`` (SGD) or ``'b1'`` (Adam); ``None`` leaves momentum alone.
        groups: ``multi_transform`` labels, one per scheduler group, or ``None``.
        accumulation_steps: Train steps per parameter update, for ``optax.MultiSteps``
            (its ``every_k_schedule``); 1 otherwise.
        writer: Optional CLU ``MetricWriter`` (anything with ``write_scalars(step, scalars)``).
        log_every_steps: Log every this many updates.
        strict: On restore, refuse a saved scheduler state made with another configuration;
            ``False`` takes the saved position and keeps this scheduler's configuration.
        plot_steps: On a fresh start with a ``writer``, the scheduler's configuration is
            written once as hparams and a plot of the planned learning rate over this many
            steps as the image ``lr_schedule`` (also saved as ``lr_schedule.png`` in the
            writer's ``logdir``, if it has one). ``None``: the scheduler's ``preview_steps``
            (three cycles of a cyclic schedule, all of a one-cycle schedule); 0: no plot.

    Raises:
        TypeError: For a scheduler that is not an [`LRScheduler`][flax_cyclic.LRScheduler], or
            bad option types.
        ValueError: For unknown ``interval`` values or non-positive counts.
    """

    def __init__(
        self,
        scheduler: LRScheduler,
        *,
        interval: str = "step",
        learning_rate: str = "learning_rate",
        momentum: str | None = "auto",
        groups: Sequence[str] | None = None,
        accumulation_steps: int = 1,
        writer: Any = None,
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
        self.learning_rate = learning_rate
        self.momentum = momentum
        if groups is not None and len(groups) != scheduler.num_groups:
            raise ValueError(
                f"{owner}: `groups` names {len(groups)} labels but the scheduler has "
                f"{scheduler.num_groups} parameter group(s); give one label per group."
            )
        self.groups = None if groups is None else [str(label) for label in groups]
        self.accumulation_steps = _checks.integer(
            owner,
            "accumulation_steps",
            accumulation_steps,
            minimum=1,
            hint="Pass optax.MultiSteps' every_k_schedule, or 1 without accumulation.",
        )
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
        self._plan_written = False  # by this run, or by the run it is restored from
        self._targets: list[tuple[str, list[InjectedHyperparams]]] = []
        self._train_steps = 0
        self._checked_first_update = False

    # -- hooks --

    def on_train_begin(self, loop: Any) -> None:
        """Finds the injected hyperparameters and writes the scheduler's current values."""
        optimizer = getattr(loop, "optimizer", None)
        if optimizer is None:
            raise ValueError(
                f"{type(self).__name__}: the loop has no optimizer yet. Pass optimizer= to the "
                "CallbackList (or use the Trainer) before training begins."
            )
        opt_state = optimizer.opt_state
        self._check_accumulation(opt_state)
        injected = find_injected_hyperparams(opt_state)
        if not injected:
            raise ValueError(
                f"{type(self).__name__}: the optimizer has no injected hyperparameters. Build "
                "its transformation with optax.inject_hyperparams, e.g. "
                "optax.inject_hyperparams(optax.sgd)(learning_rate=0.0, momentum=0.9)."
            )
        per_group = self._match_groups(injected)
        self._targets = [("lr", per_group)]
        if self.momentum is not None and self.scheduler.get_last_momentum() is not None:
            self._targets.append(("momentum", per_group))
        self._resolve_names(per_group)
        self._write()
        if self.writer is not None and not self._plan_written and jax.process_index() == 0:
            self._write_plan()
        self._plan_written = True

    def on_step_end(self, loop: Any, step: int, metrics: Mapping[str, Any]) -> None:
        """Counts the update, logs the values it used, and advances a per-step scheduler."""
        self._train_steps += 1
        if self._train_steps % self.accumulation_steps:
            return  # a micro-batch of optax.MultiSteps: no parameter update yet
        update = self._train_steps // self.accumulation_steps - 1
        if not self._checked_first_update:
            self._check_not_overwritten()
        if self.writer is not None and update % self.log_every_steps == 0:
            self._log(update)
        if self.interval == "step":
            self.scheduler.step()
            self._write()

    def on_train_end(self, loop: Any) -> None:
        """Flushes the writer."""
        self._flush()

    def on_exception(self, loop: Any, exception: BaseException) -> None:
        """Flushes the writer, so that nothing logged before the error is lost."""
        self._flush()

    def _flush(self) -> None:
        # write_scalars is all a writer must have; the rest of CLU's interface is optional.
        flush = getattr(self.writer, "flush", None)
        if callable(flush):
            flush()

    def on_epoch_end(self, loop: Any, epoch: int, metrics: Mapping[str, Any]) -> None:
        """Advances a per-epoch scheduler."""
        if self.interval == "epoch":
            self.scheduler.step()
            self._write()

    # -- state --

    def state_dict(self) -> dict[str, Any]:
        """The scheduler's state and the train-step counter, as JSON-serialisable data."""
        return {"scheduler": self.scheduler.state_dict(), "train_steps": self._train_steps}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restores [`state_dict`][flax_cyclic.LRSchedulerCallback.state_dict]'s output.

        The scheduler checks its configuration.
        """
        self.scheduler.load_state_dict(state["scheduler"], strict=self.strict)
        self._plan_written = True
        self._train_steps = _checks.integer(
            type(self).__name__,
            "train_steps",
            state["train_steps"],
            minimum=0,
            maximum=None,
            hint="Restore a state made by LRSchedulerCallback.state_dict().",
        )
        if self._targets:
            self._write()

    # -- internals --

    def _check_accumulation(self, opt_state: Any) -> None:
        accumulates = accumulation_state(opt_state) is not None
        if accumulates and self.accumulation_steps == 1:
            raise ValueError(
                f"{type(self).__name__}: the optimizer accumulates gradients with "
                "optax.MultiSteps; pass accumulation_steps=k (its every_k_schedule) so the "
                "scheduler advances once per parameter update, not per micro-batch."
            )
        if not accumulates and self.accumulation_steps > 1:
            raise ValueError(
                f"{type(self).__name__}: accumulation_steps={self.accumulation_steps} but the "
                "optimizer is not an optax.MultiSteps; pass accumulation_steps=1."
            )

    def _match_groups(self, injected: list[InjectedHyperparams]) -> list[list[InjectedHyperparams]]:
        """For each scheduler group, the injected states it drives."""
        owner = type(self).__name__
        if self.groups is not None:
            labels = {state.label: state for state in injected if state.label is not None}
            unknown = [label for label in self.groups if label not in labels]
            if unknown:
                raise ValueError(
                    f"{owner}: no multi_transform group is labelled {unknown}; the optimizer's "
                    f"labels are {sorted(labels)}."
                )
            return [[labels[label]] for label in self.groups]
        groups = self.scheduler.num_groups
        if groups == 1:
            return [injected]
        if groups != len(injected):
            described = ", ".join(state.label or state.path for state in injected)
            raise ValueError(
                f"{owner}: the scheduler has {groups} parameter groups but the optimizer has "
                f"{len(injected)} injected hyperparameter states ({described}). Give the "
                "scheduler one learning rate per group, or pass groups=[labels]."
            )
        return [[state] for state in injected]

    def _resolve_names(self, per_group: list[list[InjectedHyperparams]]) -> None:
        owner = type(self).__name__
        names = {"lr": self.learning_rate}
        if len(self._targets) > 1:
            present = set.intersection(
                *(set(state.variables) for group in per_group for state in group)
            )
            if self.momentum == "auto":
                candidates = [name for name in ("momentum", "b1") if name in present]
                if not candidates:
                    raise ValueError(
                        f"{owner}: the scheduler cycles momentum but the optimizer injects "
                        f"neither 'momentum' nor 'b1' (it injects {sorted(present)}). Inject "
                        "one, e.g. optax.inject_hyperparams(optax.sgd)(learning_rate=0.0, "
                        "momentum=0.9), or pass momentum=None."
                    )
                names["momentum"] = candidates[0]
            else:
                names["momentum"] = self.momentum
        for group in per_group:
            for state in group:
                for name in names.values():
                    if name not in state.variables:
                        raise ValueError(
                            f"{owner}: the injected hyperparameters at {state.path} have no "
                            f"{name!r}; they are {sorted(state.variables)}. Pass the right name "
                            "(learning_rate=..., momentum=...) or inject it."
                        )
        self._names = names

    def _values(self) -> dict[str, list[float]]:
        values = {"lr": self.scheduler.get_last_lr()}
        momentum = self.scheduler.get_last_momentum()
        if momentum is not None:
            values["momentum"] = momentum
        return values

    def _write(self) -> None:
        values = self._values()
        for kind, per_group in self._targets:
            name = self._names[kind]
            for value, states in zip(values[kind], per_group, strict=True):
                for state in states:
                    state.write(name, value)

    def _check_not_overwritten(self) -> None:
        # One device read, after the first update: a learning rate injected as a schedule is
        # recomputed by optax inside the update, so writes to it would silently do nothing.
        self._checked_first_update = True
        expected = self.scheduler.get_last_lr()
        for value, states in zip(expected, self._targets[0][1], strict=True):
            for state in states:
                held = float(state.variables[self._names["lr"]].get_value())
                if abs(held - value) > 1e-6 * max(abs(value), 1e-30):
                    raise ValueError(
                        f"{type(self).__name__}: the optimizer changed the injected "
                        f"{self._names['lr']!r} at {state.path} itself (wrote {value}, found "
                        f"{held}): it was injected as a schedule. Inject a number instead, e.g. "
                        "inject_hyperparams(optax.sgd)(learning_rate=0.0); the callback sets it."
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
        if not self.plot_steps or not callable(getattr(self.writer, "write_images", None)):
            return
        from flax_cyclic.plotting import plot_schedule

        logdir = getattr(self.writer, "logdir", None)
        path = os.path.join(logdir, "lr_schedule.png") if logdir else None
        try:
            image = plot_schedule(self.scheduler, self.plot_steps, path=path)
        except ImportError as error:
            logger.warning("No picture of the planned schedule: %s", error)
            return
        self.writer.write_images(0, {"lr_schedule": image[None]})

    def _log(self, update: int) -> None:
        if jax.process_index() != 0:
            return
        values = self._values()
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
        self.writer.write_scalars(update, scalars)
