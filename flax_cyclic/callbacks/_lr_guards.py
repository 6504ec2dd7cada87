"""The LR callback's guards: what optax applies is what the callback wrote and reports.

- [`AppliedCheck`] compares the values the optimizer applied with those written, without
  waiting on the device: a hyperparameter injected as a schedule, or written again by someone
  after the callback, is found.
- [`CountCheck`] compares the optimizer's update counts with the train steps the callback
  counted: a loop that trains another copy of the state, or calls the hooks more or less often
  than it updates, is found.
- The optimizer (and its ``opt_state``) the callback writes must be the ones the loop trains.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np

from flax_cyclic._hyperparams import Target, accumulation_counters
from flax_cyclic._metrics import local_copy
from flax_cyclic.callbacks.base import loop_optimizer


class _Applied(NamedTuple):
    """A value the optimizer applied in one update, to compare once the device has it."""

    update: int
    target: Target
    held: Any  # the injected value after the update (a device array, not waited for)
    written: float  # the scheduler's value written before the update


class AppliedCheck:
    """Whether each hyperparameter written is the one the optimizer applies.

    The value applied is recorded at the first update and at each update whose written value
    differs from the last one recorded (a scheduler driven by a metric changes it rarely); it
    is read once the device has computed it (never waiting). The check ends for a
    hyperparameter once it has matched a value that differs from its first one: a schedule
    that agreed with the scheduler's values at two different points is no longer a suspect.

    Attributes:
        unconfirmed: Per variable still checked (by ``id``), the first value it matched.
        pending: The values recorded and not compared yet.
    """

    def __init__(self, owner: str) -> None:
        self._owner = owner
        self.start([])

    def start(self, targets: Sequence[Target]) -> None:
        """Checks these targets from the next update on, forgetting what was recorded."""
        self.unconfirmed: dict[int, float | None] = {}
        self.pending: list[_Applied] = []
        self._recorded: dict[int, float] = {}  # the last value recorded, per variable
        self._confirmed: set[int] = set()
        self.watch(targets)

    def watch(self, targets: Sequence[Target]) -> None:
        """Checks these targets from now on (a new binding): those not confirmed yet."""
        keys = [id(target.state.values[target.name]) for target in targets]
        self.unconfirmed = {
            key: self.unconfirmed.get(key) for key in keys if key not in self._confirmed
        }

    def record(
        self,
        update: int,
        targets: Sequence[Target],
        values: Mapping[str, list[float]],
        bring_up_to_date: Callable[[], Any],
    ) -> None:
        """Records what ``update`` applied where its written value is new; checks those ready.

        ``bring_up_to_date`` is called before the first read (the loop's state sync).
        """
        due = []
        for target in targets:
            key = id(target.state.values[target.name])
            written = values[target.kind][target.group]
            if key in self.unconfirmed and self._recorded.get(key) != written:
                due.append((key, target, written))
        if due:
            bring_up_to_date()
        for key, target, written in due:
            self._recorded[key] = written
            held = target.state.values[target.name].get_value()
            self.pending.append(_Applied(update, target, held, written))
        if self.pending:
            self.check(block=False)

    def check(self, *, block: bool) -> None:
        """Compares the values recorded, waiting for the device only with ``block``.

        Raises:
            ValueError: If an update applied another value than the one written.
        """
        while self.pending and (block or _is_ready(self.pending[0].held)):
            applied = self.pending.pop(0)
            target = applied.target
            key = id(target.state.values[target.name])
            if key not in self.unconfirmed:
                continue
            held = host_value(applied.held)
            written = float(np.asarray(applied.written, dtype=target.state.dtypes[target.name]))
            if abs(held - written) > 1e-6 * max(abs(written), 1e-30):
                raise self._not_applied(applied, held, written)
            first = self.unconfirmed[key]
            if first is None:
                self.unconfirmed[key] = written
            elif written != first:
                del self.unconfirmed[key]
                self._confirmed.add(key)
        if not self.unconfirmed:
            self.pending.clear()

    def _not_applied(self, applied: _Applied, held: float, written: float) -> ValueError:
        """The error for a value applied that is not the one written, naming both causes."""
        target = applied.target
        name = target.name
        found = (
            "a schedule"
            if name in target.state.scheduled
            else "a number, so another writer changed it"
        )
        return ValueError(
            f"{self._owner}: update {applied.update} applied {name!r}={held:.7g} at "
            f"{target.state.where}, but the scheduler set {written:.7g}, so the callback's "
            "values are neither what trains nor what is logged. Either another writer sets it "
            "after this callback (a callback later in the list, or the loop itself): one "
            "callback drives each hyperparameter; to scale the schedule, use the scheduler's "
            "scale_fn or a custom scheduler instead of a second writer. Or it was injected as "
            "a schedule (e.g. inject_hyperparams(optax.sgd)(learning_rate=cyclic_schedule("
            "...))), which the transformation computes itself at every update: inject a number "
            "instead, e.g. inject_hyperparams(optax.sgd)(learning_rate=0.0); the callback sets "
            f"it. Here {name!r} is injected as {found}."
        )


class CountCheck:
    """The optimizer's update counts against the train steps the callback counted.

    ``nnx.Optimizer.step`` counts every update call (micro-batches too); ``optax.MultiSteps``'
    ``gradient_step`` the parameter updates.
    """

    def __init__(self, owner: str) -> None:
        self._owner = owner
        self._every = 1
        self.began_at = 0  # the train steps counted when the run began
        self._update_offset = 0  # the optimizer's update count minus the train steps
        self._accumulation_offsets: list[int] = []  # per optax.MultiSteps, likewise

    def start(self, optimizer: Any, train_steps: int, updates_per_step: int) -> None:
        """Starts a run: one device read, the updates the optimizer made so far."""
        self._every = updates_per_step
        self.began_at = train_steps
        self._update_offset = update_count(optimizer) - train_steps
        self._accumulation_offsets = [
            int(host_value(count.get_value())) - train_steps // updates_per_step
            for _, count in accumulation_counters(optimizer.opt_state)
        ]

    def due(self, train_steps: int, every: int) -> bool:
        """Whether the counts are read at ``train_steps``: the run's first ``2 * every``, then 2^n.

        ``every`` is the train steps per parameter update.
        """
        run = train_steps - self.began_at
        return run <= 2 * every or run & (run - 1) == 0

    def verify_loop(self, loop: Any, written: Any, train_steps: int) -> None:
        """``verify`` on the loop's optimizer, once it is the one written (``written``).

        Called at the first ``2 * k`` train steps of a run, at each power of two, at epoch ends
        and at the end: each reads the counts from the device (the step donates its state, so
        they are read before the next step reuses it).

        Raises:
            RuntimeError: If the loop holds another optimizer than ``written``.
            ValueError: If the optimizer made more or fewer updates.
        """
        optimizer = loop_optimizer(self._owner, loop)
        check_same_optimizer(self._owner, loop, written)
        # A loop that dispatches several steps at once runs their hooks afterwards.
        self.verify(optimizer, train_steps, getattr(loop, "steps_ahead", 0))

    def verify(self, optimizer: Any, train_steps: int, ahead: int) -> None:
        """Reads the counts (device reads) and compares them with ``train_steps``.

        Args:
            optimizer: The optimizer written, up to date.
            train_steps: The train steps counted.
            ahead: Updates the optimizer made beyond them (a loop that dispatches several
                steps at once runs their hooks afterwards).

        Raises:
            ValueError: If the optimizer made more or fewer updates.
        """
        made = update_count(optimizer) - self._update_offset - ahead
        if made != train_steps:
            raise self._not_the_update(made, train_steps)
        k = self._every
        counters = accumulation_counters(optimizer.opt_state)
        for (where, count), offset in zip(counters, self._accumulation_offsets, strict=True):
            made = int(host_value(count.get_value())) - offset
            expected = (train_steps + ahead) // k
            if made != expected:
                raise ValueError(
                    f"{self._owner}: optax.MultiSteps (at {where}) made {made} parameter updates "
                    f"in {train_steps + ahead} train steps, but accumulation_steps={k} means "
                    f"{expected}: the scheduler would not advance once per update. Pass its "
                    "every_k_schedule as accumulation_steps (a constant one)."
                )

    def _not_the_update(self, made: int, train_steps: int) -> ValueError:
        counted = train_steps - self.began_at
        made -= self.began_at
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
            f"{self._owner}: the optimizer it writes made {made} updates while the "
            f"callback counted {counted} train steps (on_step_end calls): {why}."
        )


_ABSENT = object()  # an attribute the loop does not have


def held_optimizer(loop: Any) -> Any:
    """The loop's optimizer object as it holds it, without bringing its state up to date.

    ``CallbackList.optimizer_object``; a loop without it gives ``loop.optimizer``.
    """
    held = getattr(loop, "optimizer_object", _ABSENT)  # read once: a property, at every step
    return getattr(loop, "optimizer", None) if held is _ABSENT else held


def check_same_optimizer(owner: str, loop: Any, optimizer: Any) -> None:
    """Refuses a ``loop.optimizer`` replaced after ``on_train_begin`` (a host check).

    Raises:
        RuntimeError: If the loop holds another optimizer than ``optimizer``.
    """
    held = held_optimizer(loop)
    if held is not None and held is not optimizer:
        raise RuntimeError(
            f"{owner}: loop.optimizer was replaced after on_train_begin: "
            "the callback writes the learning rate into the optimizer it began with, so "
            "the new one would train at its own injected value (e.g. 0.0). Give the loop "
            "its optimizer before callbacks.on_train_begin(), or start a new CallbackList "
            "for the new optimizer."
        )


def replaced_state(owner: str, targets: Sequence[Target]) -> RuntimeError:
    """The error for an ``opt_state`` assigned after the callback's last write into it."""
    names = ", ".join(dict.fromkeys(repr(target.name) for target in targets))
    return RuntimeError(
        f"{owner}: optimizer.opt_state was assigned after this callback last wrote {names} "
        "into it, so the next update would train with values the callback did not write. "
        "Assign it before the callback runs: put the callback that assigns it before "
        "LRSchedulerCallback in the callback order, or in a loop of your own assign the "
        "set_hyperparams(...) result before calling the hooks; or write the other "
        "hyperparameter in place (optimizer.opt_state.hyperparams['momentum'][...] = 0.8), "
        "which keeps the state the callback writes."
    )


def not_begun(owner: str, hook: str) -> RuntimeError:
    """The error for a hook (or ``hyperparams_ahead``) called before ``on_train_begin``."""
    return RuntimeError(
        f"{owner}.{hook}: called before on_train_begin, so no learning rate "
        "has been written into the optimizer. Call on_train_begin(loop) once before the "
        "first step (CallbackList.on_train_begin() does)."
    )


def moved_elsewhere(owner: str, position: int, left_at: int) -> RuntimeError:
    """The error for a scheduler moved by another than its callback."""
    return RuntimeError(
        f"{owner}: the scheduler stands at step {position}, "
        f"but the callback left it at step {left_at}: something else moved it "
        "(scheduler.step() or load_state_dict in the loop as well?). The callback owns its "
        "scheduler and steps it after every update; remove the other calls, or drive the "
        "scheduler yourself without the callback."
    )


def _is_ready(value: Any) -> bool:
    """Whether reading ``value`` would not wait for the device."""
    return not isinstance(value, jax.Array) or bool(value.is_ready())  # type: ignore[attr-defined]


def update_count(optimizer: Any) -> int:
    """The optimizer's update calls so far (``nnx.Optimizer.step``): one device read."""
    step = getattr(optimizer, "step", None)
    return 0 if step is None else int(host_value(step.get_value()))


def host_value(value: Any) -> float:
    """A scalar on the host; for a global array, this process's copy of it."""
    return float(np.asarray(local_copy(value)))
