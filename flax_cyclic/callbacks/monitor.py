"""The learning-rate monitor: logs the hyperparameters the optimizer actually used."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import jax

from flax_cyclic._hyperparams import (
    InjectedHyperparams,
    find_injected_hyperparams,
    nested_accumulation_state,
)
from flax_cyclic._metrics import local_copy
from flax_cyclic.callbacks._writing import WritingCallback
from flax_cyclic.callbacks.base import (
    Loop,
    MetricWriter,
    loop_optimizer,
)
from flax_cyclic.callbacks.lr import LRSchedulerCallback

__all__ = ["LearningRateMonitor"]


class _Read(NamedTuple):
    """One logged value: the tag it is written under and the variable that holds it."""

    tag: str
    variable: Any  # the nnx.Variable of an injected hyperparameter


class LearningRateMonitor(WritingCallback):
    """Logs the learning rate (and momentum) that the optimizer used, read from its state.

    The monitor only reads; something else sets the values: an
    [`LRSchedulerCallback`][flax_cyclic.LRSchedulerCallback], a schedule injected into the
    optimizer (``inject_hyperparams(optax.sgd)(learning_rate=cyclic_schedule(...))``, which
    optax recomputes inside every update), or your own code. After update ``i`` (counted from
    0) an ``optax.inject_hyperparams`` state holds the values update ``i`` used, whichever way
    they were set, and those are the values logged, at step ``i + 1``: step ``s`` means ``s``
    updates completed, as for every tag the library writes.

    Tags: ``learning_rate`` and, where the optimizer injects one, ``momentum`` (its
    ``'momentum'``, or Adam's ``'b1'``). With several injected states that hold a learning
    rate (``optax.multi_transform`` groups, or a ``chain``), one pair per state:
    ``learning_rate/<label>`` and ``momentum/<label>``, the label being the
    ``multi_transform`` label or, without one, the state's index among them (from 0, in the
    order of the optimizer state).

    When: every ``log_every_steps`` train steps, at the last update of each window, as the
    [`MetricsLogger`][flax_cyclic.MetricsLogger] writes its means: with
    ``log_every_steps=3``, the values of updates 2, 5, 8, ... at steps 3, 6, 9, ... (after
    train step ``i`` with ``(i + 1) % log_every_steps == 0``), so ``learning_rate`` and
    ``train/loss`` share their steps. A write reads all values with one ``jax.device_get``;
    steps without a write touch nothing on the device.

    Gradient accumulation (``optax.MultiSteps``): the optimizer updates once every ``k`` train
    steps and its state then holds the values of its last update. The monitor reads every
    ``log_every_steps`` train steps as above, at the loop's step (train steps completed, the
    step numbering of checkpoints), and writes only when the optimizer updated within the
    window: ``MultiSteps``' ``gradient_step`` (updates made) is above 0 and its ``mini_step``
    (train steps since the last update), read in the same transfer, is below
    ``log_every_steps``. Pass a multiple of ``k`` (e.g. ``log_every_steps=k``) to read once
    per update or fewer.

    Where the values go: with a ``writer``, to ``writer.write_scalars(step, scalars)`` on
    process 0 only (other processes read nothing); the writer is flushed at the end of
    training and when the loop raises. With ``writer=None``, to the list ``history`` on every
    process, for inspection in a notebook or a test.

    Order of callbacks: the monitor reads in ``on_step_end``, so it must come before a
    callback that writes the next update's values in its own ``on_step_end``; a per-step
    ``LRSchedulerCallback`` listed before it is refused at ``on_train_begin``.

    The monitor keeps no state, for checkpoints or otherwise: a resumed run logs what the
    uninterrupted run logs from there on, with the monitor added or removed.

    Args:
        writer: A CLU ``MetricWriter`` (anything with ``write_scalars(step, scalars)``), e.g.
            from [`create_writer`][flax_cyclic.create_writer]; ``None`` keeps the values in
            ``history`` instead.
        log_every_steps: Read and log every this many train steps.

    Attributes:
        history: ``(step, {tag: value})`` for every write, when there is no ``writer``.

    Raises:
        TypeError: If ``writer`` has no ``write_scalars`` method or ``log_every_steps`` is not
            an integer.
        ValueError: If ``log_every_steps`` is below 1.

    Examples:
        >>> import jax.numpy as jnp
        >>> import optax
        >>> from flax import nnx
        >>> from flax_cyclic import CallbackList, cyclic_schedule
        >>> from flax_cyclic import LearningRateMonitor
        >>> model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
        >>> schedule = cyclic_schedule(0.01, 0.1, step_size_up=4)
        >>> tx = optax.inject_hyperparams(optax.sgd)(learning_rate=schedule, momentum=0.9)
        >>> optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
        >>> @nnx.jit
        ... def train_step(model, optimizer):
        ...     grads = nnx.grad(lambda m: m(jnp.ones((1, 2))).sum())(model)
        ...     optimizer.update(model, grads)
        >>> monitor = LearningRateMonitor(log_every_steps=2)
        >>> loop = CallbackList([monitor], model=model, optimizer=optimizer)
        >>> loop.on_train_begin()
        >>> for _ in range(6):
        ...     loop.on_step_begin()
        ...     train_step(model, optimizer)
        ...     loop.on_step_end()
        >>> loop.on_train_end()
        >>> for update, scalars in monitor.history:
        ...     print(update, scalars)
        2 {'learning_rate': 0.0325, 'momentum': 0.9}
        4 {'learning_rate': 0.0775, 'momentum': 0.9}
        6 {'learning_rate': 0.0775, 'momentum': 0.9}
    """

    def __init__(self, writer: MetricWriter | None = None, *, log_every_steps: int = 1) -> None:
        super().__init__(
            writer,
            log_every_steps=log_every_steps,
            required=False,
            hint=" Pass one, e.g. create_writer(logdir), or None to keep the values in `history`.",
        )
        self.history: list[tuple[int, dict[str, float]]] = []
        self._reads: list[_Read] | None = None  # set by on_train_begin
        self._bound: Any = None  # the opt_state the reads were found in
        self._accumulation: Any = None  # the optax.MultiStepsState, if it accumulates
        self._active = False  # whether this process reads and logs

    # -- hooks --

    def on_train_begin(self, loop: Loop) -> None:
        """Finds the injected learning rates (and momentums) to read.

        Raises:
            TypeError: If the loop's optimizer is not an ``nnx.Optimizer``.
            ValueError: If the loop has no optimizer, the optimizer injects no learning rate,
                or a per-step ``LRSchedulerCallback`` runs before the monitor.
        """
        owner = type(self).__name__
        optimizer = loop_optimizer(owner, loop)
        self._check_order(loop)
        self._bind(optimizer.opt_state)
        dispatched = getattr(loop, "steps_per_dispatch", 1)
        if self._accumulation is not None and dispatched > 1:
            raise ValueError(
                f"{owner}: with optax.MultiSteps it reads the optimizer's update counters at "
                f"each logged step, but the loop runs {dispatched} steps per dispatch, so they "
                "would be those of the dispatch's end. Log the learning rate through the "
                "LRSchedulerCallback(writer=...) that drives it, or use steps_per_dispatch=1."
            )
        self._active = self.writer is None or self.writes_here

    def on_step_end(self, loop: Loop, step: int, metrics: Mapping[str, Any]) -> None:
        """At the last train step of each window, reads the values used and logs them."""
        if self._reads is None:
            raise RuntimeError(
                f"{type(self).__name__}.on_step_end: called before on_train_begin, so there "
                "is nothing to read yet. Call on_train_begin(loop) once before the first step "
                "(CallbackList.on_train_begin() does)."
            )
        if not self._active or not self.due(step + 1):
            return
        optimizer = loop_optimizer(type(self).__name__, loop)  # brings them up to date
        if optimizer.opt_state is not self._bound:  # assigned since: read what trains now
            self._bind(optimizer.opt_state)
        values = {read.tag: local_copy(read.variable.get_value()) for read in self._reads}
        if self._accumulation is None:
            host = jax.device_get(values)
        else:
            counters = (self._accumulation.gradient_step, self._accumulation.mini_step)
            host, (updates, since) = jax.device_get(
                (values, [local_copy(counter.get_value()) for counter in counters])
            )
            if updates == 0 or since >= self.log_every_steps:
                return  # no parameter update within this window
        scalars = {tag: float(value) for tag, value in host.items()}
        if self.writer is None:
            self.history.append((step + 1, scalars))
        else:
            self.writer.write_scalars(step + 1, scalars)

    def _check_order(self, loop: Loop) -> None:
        """Refuses a per-step LRSchedulerCallback that runs before the monitor."""
        callbacks = list(getattr(loop, "callbacks", None) or ())
        mine = next((i for i, c in enumerate(callbacks) if c is self), None)
        if mine is None:
            return
        before = [
            type(c).__name__
            for c in callbacks[:mine]
            if isinstance(c, LRSchedulerCallback) and c.interval == "step"
        ]
        if before:
            names = [type(c).__name__ for c in callbacks]
            raise ValueError(
                f"{type(self).__name__}: it must run before the {before[0]}, which writes the "
                f"next update's learning rate in its on_step_end, got the callbacks {names}; "
                "the monitor would log every value one update early. List the "
                "LearningRateMonitor before it."
            )

    @property
    def logs_learning_rate(self) -> bool:
        """Whether it writes the learning rate to a writer: with a ``writer``."""
        return self.writer is not None

    def _bind(self, opt_state: Any) -> None:
        """Finds what to read in ``opt_state`` (again, where a hook assigned a new one)."""
        self._reads = self._resolve_reads(find_injected_hyperparams(opt_state), opt_state)
        self._accumulation = nested_accumulation_state(opt_state)
        self._bound = opt_state

    def _resolve_reads(self, injected: list[InjectedHyperparams], opt_state: Any) -> list[_Read]:
        owner = type(self).__name__
        if not injected:
            raise ValueError(
                f"{owner}: the optimizer must keep its learning rate in an "
                "optax.inject_hyperparams state, got an optimizer state with none "
                f"({_describe(opt_state)}). Build its transformation with "
                "optax.inject_hyperparams, e.g. optax.inject_hyperparams(optax.sgd)"
                "(learning_rate=0.01, momentum=0.9); a schedule works as well as a number."
            )
        states = [state for state in injected if "learning_rate" in state.values]
        if not states:
            described = "; ".join(f"{s.where} injects {sorted(s.values)}" for s in injected)
            raise ValueError(
                f"{owner}: the optimizer must inject a 'learning_rate', got {described}. "
                "Inject the learning rate, e.g. optax.inject_hyperparams(optax.sgd)"
                "(learning_rate=0.01)."
            )
        reads = []
        for key, state in zip(_keys(states), states, strict=True):
            suffix = "" if key is None else f"/{key}"
            reads.append(_Read(f"learning_rate{suffix}", state.values["learning_rate"]))
            momentum = state.momentum_name()
            if momentum is not None:
                reads.append(_Read(f"momentum{suffix}", state.values[momentum]))
        return reads


def _keys(states: list[InjectedHyperparams]) -> list[str | None]:
    """The tag suffix of each state: none for one state, else its label or its index."""
    if len(states) == 1:
        return [None]
    keys = [state.label if state.label is not None else str(i) for i, state in enumerate(states)]
    # Two states of one multi_transform group (a chain inside it) share a label.
    return [key if keys.count(key) == 1 else f"{key}/{i}" for i, key in enumerate(keys)]


def _describe(opt_state: Any) -> str:
    """The types of an optimizer state's parts, e.g. ``'ScaleByAdamState, EmptyState'``."""
    parts = opt_state if type(opt_state) is tuple else (opt_state,)
    return ", ".join(type(part).__name__ for part in parts)
