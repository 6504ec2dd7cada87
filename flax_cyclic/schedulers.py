"""Stateful learning-rate schedulers with the braintools / PyTorch interface.

A scheduler stands at a step (``last_epoch``), reports the learning rate of every parameter
group there (``get_last_lr()``), advances with ``step()``, and saves and restores its position as
plain JSON (``state_dict()`` / ``load_state_dict()``). It evaluates the formulas of
``flax_cyclic.schedules`` with Python floats (float64) on the host: no device round trip per
step. Calling a scheduler, ``scheduler(count)``, evaluates the same formula for group 0 with
``jax.numpy``, so the object can be handed to optax as ``learning_rate``.
"""

from __future__ import annotations

import abc
import bisect
import hashlib
import sys
import types
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar

import jax
import optax

from flax_cyclic import _checks
from flax_cyclic._math import HOST, Policy, make_schedule, step_array
from flax_cyclic._policies import (
    LR_HINT,
    CosinePolicy,
    CyclePolicy,
    LinearRamp,
    OneCyclePolicy,
    RampPolicy,
    RestartPolicy,
    triangular_step_size,
)

__all__ = [
    "CosineAnnealingLR",
    "CosineAnnealingWarmRestarts",
    "CyclicLR",
    "LRScheduler",
    "LinearLR",
    "OneCycleLR",
    "SequentialLR",
    "TriangularLR",
]

_STATE_KEYS = ("format", "version", "last_epoch", "config")


class LRScheduler(abc.ABC):
    """Base class of the stateful schedulers.

    A subclass validates its arguments into a policy of ``flax_cyclic.schedules`` and the
    bounds of each parameter group, passes them to ``super().__init__``, and implements
    [`base_lrs`][flax_cyclic.LRScheduler.base_lrs] and ``_config()``. The base class evaluates
    the policy on the host for ``get_last_lr()`` and with ``jax.numpy`` for
    [`as_schedule`][flax_cyclic.LRScheduler.as_schedule]: one formula for both. A scheduler
    whose values are not one policy of the step calls ``_start`` instead and overrides
    ``_values_at``; one with more state than the step counter saves it through
    ``_EXTRA_STATE_KEYS``, ``_extra_state()`` and ``_restore()``.

    The scheduler's position is ``last_epoch``: the number of ``step()`` calls so far (plus the
    ``last_epoch`` it was built with). ``get_last_lr()`` is the learning rate to use for the
    update with that index.
    """

    #: Version of the layout of ``state_dict()``; bumped on incompatible changes.
    STATE_VERSION: ClassVar[int] = 1

    def __init__(
        self,
        policy: Policy,
        lr_bounds: Iterable[tuple[float, ...]],
        momentum_bounds: Iterable[tuple[float, ...]] | None = None,
        last_epoch: int = 0,
    ) -> None:
        owner = type(self).__name__
        self._policy = policy
        self._lr_bounds = tuple(lr_bounds)
        self._momentum_bounds = None if momentum_bounds is None else tuple(momentum_bounds)
        # Built once: each is compiled on first use, and reused by every later call.
        self._start(
            len(self._lr_bounds),
            tuple(make_schedule(policy, b, owner) for b in self._lr_bounds),
            None
            if self._momentum_bounds is None
            else tuple(make_schedule(policy, b, owner) for b in self._momentum_bounds),
            last_epoch,
        )

    def _start(
        self,
        num_groups: int,
        lr_schedules: tuple[optax.Schedule, ...],
        momentum_schedules: tuple[optax.Schedule, ...] | None,
        last_epoch: int,
    ) -> None:
        """Sets up what every scheduler has, and stands at ``last_epoch``.

        ``__init__`` calls it for a scheduler of one policy. A scheduler whose values are not
        one policy of the step ([`SequentialLR`][flax_cyclic.SequentialLR],
        [`ReduceLROnPlateau`][flax_cyclic.ReduceLROnPlateau]) calls it instead of
        ``__init__`` and overrides ``_values_at``.

        Args:
            num_groups: The number of parameter groups.
            lr_schedules: One jit-safe schedule per group (empty where there is none).
            momentum_schedules: One per group, or ``None`` where the momentum is not cycled.
            last_epoch: The step to stand at, checked here.
        """
        self._num_groups = num_groups
        self._lr_schedules = lr_schedules
        self._momentum_schedules = momentum_schedules
        self._move_to(self._check_epoch("last_epoch", last_epoch))
        # Two drivers of one scheduler (see _two_drivers): optax's count and step().
        self._optax_evaluates = False  # optax called it as a schedule
        self._stepped = False  # step() (or last_epoch=) moved it
        self._warned_two_drivers = False

    # -- the subclass interface -------------------------------------------------------------

    @property
    @abc.abstractmethod
    def base_lrs(self) -> tuple[float, ...]:
        """The base learning rate of each parameter group (PyTorch's ``base_lrs``)."""

    @abc.abstractmethod
    def _config(self) -> dict[str, Any]:
        """JSON-serialisable configuration, stored in and checked against a state dict."""

    @property
    def preview_steps(self) -> int:
        """A number of steps that shows the schedule's shape, e.g. for a plot."""
        return 1000

    # -- position -----------------------------------------------------------------------------

    @property
    def last_epoch(self) -> int:
        """The step the scheduler stands at. Assigning to it is the same as ``step(epoch=...)``."""
        return self._last_epoch

    @last_epoch.setter
    def last_epoch(self, epoch: int) -> None:
        self._move_to(self._check_epoch("epoch", epoch))
        self._moved_by_hand()

    @property
    def num_groups(self) -> int:
        """The number of parameter groups."""
        return self._num_groups

    @property
    def cycle_momentum(self) -> bool:
        """Whether the scheduler sets the momentum too (``get_last_momentum()`` is not None)."""
        return self._momentum_schedules is not None

    def next_cycle_end(self, count: int) -> int | None:
        """The first step from ``count`` whose update ends a cycle at its lowest value.

        A cycle's end is the update that applies the cycle's lowest learning rate, after which
        the next cycle rises again: the point where weight averaging and snapshot ensembles
        take the model ([`WeightAveraging`][flax_cyclic.WeightAveraging]). ``None`` here: the
        scheduler has no cycles.

        Args:
            count: A scheduler step (``last_epoch``), ``>= 0``.

        Returns:
            The scheduler step at or after ``count`` whose update ends a cycle, or ``None``.
        """
        del count
        return None

    @property
    def requires_metric(self) -> bool:
        """Whether ``step()`` takes the monitored metric instead of advancing by one step.

        False here. True for [`ReduceLROnPlateau`][flax_cyclic.ReduceLROnPlateau]:
        ``step()`` takes the monitored metric; the LR callback feeds it at each evaluation
        (``LRSchedulerCallback(..., monitor='eval/loss')``).
        """
        return False

    def step(self, epoch: int | None = None) -> None:
        """Advances the scheduler by one step, or moves it to step ``epoch``.

        Call it once after each optimizer update (per-step schedules) or each epoch
        (per-epoch schedules).

        Args:
            epoch: If given, the step to move to (any integer >= 0, backwards included).

        Warns:
            UserWarning: Once, if optax also evaluates this scheduler (it was passed to optax
                as ``learning_rate=scheduler``): optax then computes the learning rate from its
                own update count, and ``step()`` / ``get_last_lr()`` do not follow what trains.
        """
        self._move_to(self._last_epoch + 1 if epoch is None else self._check_epoch("epoch", epoch))
        self._moved_by_hand()

    def _moved_by_hand(self) -> None:
        """Notes a ``step()``; warns once if optax evaluates the scheduler too."""
        self._stepped = True
        if self._optax_evaluates and not self._warned_two_drivers:
            self._two_drivers(f"step() moved it to last_epoch={self._last_epoch}")

    def _two_drivers(self, what: str) -> None:
        """Warns (once) that optax's update count and ``step()`` both drive this scheduler.

        Not an error: where the two counters happen to agree (one ``step()`` per update from
        step 0, no gradient accumulation), the values agree too. Nothing checks that they do.
        """
        self._warned_two_drivers = True
        owner = type(self).__name__
        warnings.warn(
            f"{owner}: optax evaluates this scheduler as a schedule (it was passed to optax, "
            f"e.g. optax.sgd(learning_rate=scheduler)) and {what}. optax computes the "
            "learning rate from its own update count, inside the compiled step; step() "
            "changes nothing it applies, so get_last_lr() is not necessarily the learning rate "
            "that trains. Use one of the two ways: (1) pass the scheduler to optax and never "
            "step it; to read the learning rate optax applied, inject it, "
            "optax.inject_hyperparams(optax.sgd)(learning_rate=scheduler), and read "
            "opt_state.hyperparams['learning_rate'] or log it with LearningRateMonitor; or (2) "
            "inject a number, optax.inject_hyperparams(optax.sgd)(learning_rate=0.0), and let "
            f"LRSchedulerCallback({owner}(...)) write the scheduler's value before each update "
            "and step it (by hand: set_hyperparams(opt_state, learning_rate=get_last_lr()), "
            "then step()).",
            UserWarning,
            stacklevel=4,
        )

    def _move_to(self, step: int) -> None:
        """Stands at ``step``; on an error the scheduler stays where it was."""
        self._last_lr, self._last_momentum = self._values_at(step)
        self._last_epoch = step

    def _values_at(self, step: int) -> tuple[list[float], list[float] | None]:
        """Learning rates (one per group) and momentums (or ``None``) at ``step``, on the host."""
        policy = self._policy
        progress = policy.progress(step, HOST)
        lrs = [policy.value(progress, bounds, HOST) for bounds in self._lr_bounds]
        if self._momentum_bounds is None:
            return lrs, None
        return lrs, [policy.value(progress, bounds, HOST) for bounds in self._momentum_bounds]

    def _check_epoch(self, name: str, value: Any) -> int:
        return _checks.integer(
            type(self).__name__,
            name,
            value,
            minimum=0,
            maximum=None,  # the host path is exact for any Python int
            hint="Steps count from 0; a scheduler built with last_epoch=N stands at step N.",
        )

    # -- values ---------------------------------------------------------------------------------

    def get_lr(self) -> list[float]:
        """Computes the learning rate of each parameter group at ``last_epoch``."""
        return self._values_at(self._last_epoch)[0]

    def get_last_lr(self) -> list[float]:
        """The learning rate of each parameter group at ``last_epoch``, as last computed."""
        return list(self._last_lr)

    def get_last_momentum(self) -> list[float] | None:
        """Each group's momentum at ``last_epoch``, as last computed; ``None`` if not cycled."""
        return None if self._last_momentum is None else list(self._last_momentum)

    def as_schedule(self, group: int = 0) -> optax.Schedule:
        """The jit-safe ``optax.Schedule`` of one group's learning rate (same formula).

        The same object is returned on every call, so it compiles once.

        Args:
            group: Index of the parameter group.

        Returns:
            A function of the integer step, e.g. for ``optax.multi_transform`` per group.
        """
        return self._lr_schedules[self._check_group(group)]

    def as_momentum_schedule(self, group: int = 0) -> optax.Schedule:
        """The jit-safe ``optax.Schedule`` of one group's cycled momentum.

        Args:
            group: Index of the parameter group.

        Returns:
            A function of the integer step, e.g. for ``optax.inject_hyperparams(optax.sgd)``.

        Raises:
            ValueError: If the scheduler does not cycle the momentum.
        """
        group = self._check_group(group)
        if self._momentum_schedules is None:
            raise ValueError(
                f"{type(self).__name__}: the momentum is not cycled; build the scheduler with "
                "cycle_momentum=True to get a momentum schedule."
            )
        return self._momentum_schedules[group]

    def __call__(self, count: int | jax.Array) -> jax.Array:
        """The learning rate of group 0 at step ``count``, with ``jax.numpy`` (jit-safe).

        This makes the scheduler a valid ``optax.Schedule``: ``optax.sgd(scheduler)`` works.
        The optimizer's own update count drives it then; ``last_epoch`` is not consulted, and
        the scheduler is not stepped: a scheduler that optax evaluates and that is also
        stepped (by hand or by [`LRSchedulerCallback`][flax_cyclic.LRSchedulerCallback])
        warns once, as its ``get_last_lr()`` is then not what trains.
        """
        # Under jit this runs once, at trace time; afterwards one attribute read per call.
        if not self._optax_evaluates and _called_by_optax():
            self._optax_evaluates = True
            if self._stepped and not self._warned_two_drivers:
                self._two_drivers(f"it had been stepped to last_epoch={self._last_epoch}")
        return self.as_schedule(0)(count)

    def _check_group(self, group: Any) -> int:
        if isinstance(group, bool) or not isinstance(group, int):
            raise TypeError(f"{type(self).__name__}: `group` must be an int, got group={group!r}.")
        if not 0 <= group < self.num_groups:
            raise ValueError(
                f"{type(self).__name__}: `group` must be in [0, {self.num_groups - 1}] "
                f"for {self.num_groups} parameter group(s), got group={group}."
            )
        return group

    # -- state ------------------------------------------------------------------------------------

    @property
    def _format(self) -> str:
        return f"flax_cyclic.{type(self).__name__}"

    def state_dict(self) -> dict[str, Any]:
        """The scheduler's state as plain JSON-serialisable data.

        It holds the step counter and the configuration it was made with (to check a restore
        against). No pickles and no callables: a custom ``scale_fn`` is code, which comes from
        the constructor; its name and a hash of its code are recorded, so that a restore with
        another function is refused even where both are lambdas.
        """
        return {
            "format": self._format,
            "version": self.STATE_VERSION,
            "last_epoch": self._last_epoch,
            "config": self._config(),
            **self._extra_state(),
        }

    def load_state_dict(self, state: Mapping[str, Any], *, strict: bool = True) -> None:
        """Restores the position saved by [`state_dict`][flax_cyclic.LRScheduler.state_dict].

        Args:
            state: A mapping made by [`state_dict`][flax_cyclic.LRScheduler.state_dict]
                (possibly after a JSON round trip).
            strict: If True (default), a state saved with a different configuration is an
                error that lists the differing fields. If False, only the position (the step
                counter, and the counters of a scheduler that has more) is taken and this
                scheduler keeps its own configuration.

        Raises:
            TypeError: If ``state`` or one of its fields has the wrong type.
            ValueError: If keys are missing or unexpected, the format or version is not this
                scheduler's, or (with ``strict``) the configuration differs.
        """
        owner = f"{type(self).__name__}.load_state_dict"
        self._check_state_layout(owner, state)
        last_epoch = self._check_epoch("last_epoch", state["last_epoch"])
        saved = state["config"]
        if not isinstance(saved, Mapping):
            raise TypeError(f"{owner}: `config` must be a mapping, got {type(saved).__name__}.")
        current = self._config()
        differences = [
            f"{key}: saved {saved.get(key, '<missing>')!r}, now {current.get(key, '<missing>')!r}"
            for key in sorted({*current, *saved})
            if saved.get(key, _MISSING) != current.get(key, _MISSING)
        ]
        if strict and differences:
            raise _ConfigurationError(
                f"{owner}: the state was saved with a different configuration ("
                + "; ".join(differences)
                + ")."
            )
        self._restore(state, last_epoch, strict=strict)

    def _check_state_layout(self, owner: str, state: Any) -> None:
        """Refuses what is not a state dict of this scheduler: keys, version and format."""
        if not isinstance(state, Mapping):
            raise TypeError(
                f"{owner}: `state` must be a mapping made by state_dict(), got "
                f"{type(state).__name__}."
            )
        if "format" in state and state["format"] != self._format:  # first: the clearest
            raise ValueError(
                f"{owner}: the state was saved by {state['format']!r}, not {self._format!r}."
            )
        keys = (*_STATE_KEYS, *self._EXTRA_STATE_KEYS)
        missing = [key for key in keys if key not in state]
        unexpected = sorted(str(key) for key in state if key not in keys)
        if missing or unexpected:
            raise ValueError(
                f"{owner}: `state` is not a {type(self).__name__} state dict: "
                f"missing keys {missing}, unexpected keys {unexpected}."
            )
        version = state["version"]
        if isinstance(version, bool) or not isinstance(version, int):
            raise TypeError(f"{owner}: `version` must be an int, got {version!r}.")
        if version != self.STATE_VERSION:
            raise ValueError(
                f"{owner}: state version {version} is not supported; this flax_cyclic reads "
                f"version {self.STATE_VERSION}."
            )

    # -- state of schedulers with more than a step counter ---------------------------------------

    #: The keys ``_extra_state()`` adds to the state dict.
    _EXTRA_STATE_KEYS: ClassVar[tuple[str, ...]] = ()

    def _extra_state(self) -> dict[str, Any]:
        """JSON-serialisable state beyond the step counter, under ``_EXTRA_STATE_KEYS``."""
        return {}

    def _restore(self, state: Mapping[str, Any], last_epoch: int, *, strict: bool) -> None:
        """Takes the position from a checked ``state``; on an error, nothing changes.

        A scheduler with ``_EXTRA_STATE_KEYS`` checks and takes them here.
        """
        self._move_to(last_epoch)

    def __repr__(self) -> str:
        config = ", ".join(f"{key}={value!r}" for key, value in self._config().items())
        return f"{type(self).__name__}({config}, last_epoch={self._last_epoch})"


_MISSING = object()


class _ConfigurationError(ValueError):
    """A state saved with another configuration, refused by a strict ``load_state_dict``.

    ``what`` says what differs; the message adds the way out of whoever restores the state:
    ``load_state_dict(..., strict=False)`` here, ``LRSchedulerCallback(..., strict=False)``
    where the callback restores it.
    """

    def __init__(
        self,
        what: str,
        way_out: str = "Build the scheduler with the saved configuration, or pass strict=False "
        "to take only the step counter and keep the new configuration.",
    ) -> None:
        super().__init__(f"{what} {way_out}")
        self.what = what


def _called_by_optax() -> bool:
    """Whether the caller of ``LRScheduler.__call__`` is optax's code (a transformation)."""
    return str(sys._getframe(2).f_globals.get("__name__", "")).startswith("optax.")


def _fingerprint(fn: Callable[..., Any]) -> str:
    """A custom ``scale_fn`` as a JSON string that changes when its code does.

    Two lambdas share the name ``'<lambda>'``; the fingerprint also hashes the code (bytecode,
    constants, names), the defaults, the closure's values and the simple globals it reads,
    so a resume with another formula is refused. What cannot be described by value (a
    callable object, a closure over an object without a stable ``repr``) is marked not
    comparable: it equals only itself within one process.
    """
    name = getattr(fn, "__qualname__", type(fn).__qualname__)
    parts: list[str] = []
    if _describe(fn, parts, depth=0):
        digest = hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:16]
        return f"{name} (code {digest})"
    return f"{name} (not comparable by its code: object {id(fn):x})"


def _describe(value: Any, parts: list[str], depth: int) -> bool:
    """Appends a by-value description of ``value``; False where there is none."""
    if depth > 8:
        return False
    if isinstance(value, types.FunctionType):
        simple = (bool, int, float, str, bytes, type(None))
        names = value.__code__.co_names
        globals_ = [(n, value.__globals__[n]) for n in names if n in value.__globals__]
        parts.append(f"globals {[(n, g) for n, g in globals_ if isinstance(g, simple)]!r}")
        return (
            _describe(value.__code__, parts, depth + 1)
            and _describe(value.__defaults__, parts, depth + 1)
            and _describe(value.__kwdefaults__, parts, depth + 1)
            and all(
                _describe(cell.cell_contents, parts, depth + 1) for cell in value.__closure__ or ()
            )
        )
    if isinstance(value, types.CodeType):
        parts += [value.co_code.hex(), repr(value.co_names), repr(value.co_varnames)]
        return all(_describe(const, parts, depth + 1) for const in value.co_consts)
    if isinstance(value, (tuple, list)):
        return all(_describe(item, parts, depth + 1) for item in value)
    if isinstance(value, dict):
        return _describe(sorted(value.items(), key=repr), parts, depth + 1)
    described = repr(value)
    if " at 0x" in described:  # an object's default repr: not a value
        return False
    parts.append(described)
    return True


def _check_momentum_order(owner: str, groups: Mapping[str, tuple[float, ...]]) -> None:
    pairs = zip(groups["base_momentum"], groups["max_momentum"], strict=True)
    for i, (low, high) in enumerate(pairs):
        if low > high:
            raise ValueError(
                f"{owner}: base_momentum must not exceed max_momentum, got "
                f"base_momentum={low!r} > max_momentum={high!r} (group {i}). "
                "base_momentum is used at the learning-rate peaks, max_momentum at the "
                "troughs."
            )


_MOMENTUM_HINT = "Momentums are finite numbers >= 0 with base_momentum <= max_momentum, e.g. 0.8."


class CyclicLR(LRScheduler):
    r"""Cyclical learning rate scheduler, with the API of ``braintools.optim.CyclicLR``.

    The learning rate of each parameter group cycles between ``base_lr`` and ``max_lr``:
    ``step_size_up`` steps up, ``step_size_down`` steps down, with the amplitude scaled per
    ``mode`` (or ``scale_fn``). The numbers are PyTorch's ``CyclicLR`` formula, evaluated with
    exact integer phase arithmetic; see [`cyclic_schedule`][flax_cyclic.cyclic_schedule] for the
    formula.
    Optionally the momentum cycles the other way, from ``max_momentum`` down to
    ``base_momentum`` as the learning rate rises.

    ``last_epoch=0`` (default) starts at step 0 (``get_lr()`` is ``base_lr``);
    ``last_epoch=N`` stands at step N, so the scheduler yields exactly the learning rates an
    uninterrupted run has from step N on.

    Args:
        base_lr: Lower bound of the cycle; a number, or a list with one per parameter group.
        max_lr: Upper bound of the cycle; a number or a list (scalars broadcast against lists).
        step_size_up: Steps in the rising half of a cycle; a positive integer.
        step_size_down: Steps in the falling half; ``None`` (default) means ``step_size_up``.
        mode: ``'triangular'`` (constant amplitude), ``'triangular2'`` (amplitude halves every
            cycle) or ``'exp_range'`` (amplitude times ``gamma**step``).
        gamma: Base of the exp_range scale; > 0.
        scale_fn: Custom amplitude scale of one argument; overrides ``mode``. On the host it
            receives a Python int; under ``__call__`` /
            [`as_schedule`][flax_cyclic.LRScheduler.as_schedule] an integer array.
        scale_mode: What ``scale_fn`` receives: ``'cycle'`` (cycle number, from 1) or
            ``'iterations'`` (the step).
        last_epoch: The step to start at; an integer >= 0.
        cycle_momentum: Whether to cycle the momentum inversely to the learning rate.
        base_momentum: Momentum at the learning-rate peaks; a number or a list per group.
        max_momentum: Momentum at the learning-rate troughs; a number or a list per group.

    Raises:
        TypeError: For an argument of the wrong type (float step sizes, a non-callable
            ``scale_fn``, a string learning rate, ...).
        ValueError: For an out-of-range value (non-positive step sizes, negative or non-finite
            learning rates or momentums, ``base_momentum > max_momentum``, ``gamma <= 0``,
            ``last_epoch < 0``, unknown ``mode`` / ``scale_mode``, per-group lists of different
            lengths).

    Examples:
        >>> from flax_cyclic import CyclicLR
        >>> scheduler = CyclicLR(base_lr=1.0, max_lr=5.0, step_size_up=4, mode="triangular2")
        >>> lrs = []
        >>> for _ in range(12):
        ...     lrs.append(scheduler.get_last_lr()[0])
        ...     scheduler.step()
        >>> lrs
        [1.0, 2.0, 3.0, 4.0, 5.0, 4.0, 3.0, 2.0, 1.0, 1.5, 2.0, 2.5]
        >>> scheduler.cycle, scheduler.cycle_position
        (2, 0.5)
        >>> CyclicLR(1.0, 5.0, step_size_up=4, last_epoch=10).get_lr()
        [3.0]

        The scheduler is itself an optax schedule (group 0), usable inside ``jax.jit``:

        >>> import optax
        >>> optimizer = optax.sgd(learning_rate=scheduler, momentum=0.9)
    """

    _policy: CyclePolicy

    def __init__(
        self,
        base_lr: float | list[float] = 1e-3,
        max_lr: float | list[float] = 1e-2,
        step_size_up: int = 2000,
        step_size_down: int | None = None,
        mode: str = "triangular",
        gamma: float = 1.0,
        scale_fn: Callable[[Any], Any] | None = None,
        scale_mode: str = "cycle",
        last_epoch: int = 0,
        *,
        cycle_momentum: bool = False,
        base_momentum: float | list[float] = 0.8,
        max_momentum: float | list[float] = 0.9,
    ) -> None:
        owner = type(self).__name__
        policy = CyclePolicy.create(
            owner, step_size_up, step_size_down, mode, gamma, scale_fn, scale_mode
        )
        _checks.flag(owner, "cycle_momentum", cycle_momentum)
        groups = _checks.per_group(
            owner,
            {
                "base_lr": base_lr,
                "max_lr": max_lr,
                "base_momentum": base_momentum,
                "max_momentum": max_momentum,
            },
            {
                "base_lr": LR_HINT,
                "max_lr": LR_HINT,
                "base_momentum": _MOMENTUM_HINT,
                "max_momentum": _MOMENTUM_HINT,
            },
        )
        _check_momentum_order(owner, groups)
        self._base_lrs = groups["base_lr"]
        self._max_lrs = groups["max_lr"]
        self._base_momentums = groups["base_momentum"]
        self._max_momentums = groups["max_momentum"]
        super().__init__(
            policy,
            zip(self._base_lrs, self._max_lrs, strict=True),
            # Momentum runs the other way: max_momentum at the troughs, base_momentum at peaks.
            zip(self._max_momentums, self._base_momentums, strict=True) if cycle_momentum else None,
            last_epoch,
        )

    # -- configuration (read-only) ----------------------------------------------------------------

    @property
    def base_lrs(self) -> tuple[float, ...]:
        """Lower learning-rate bound of each parameter group."""
        return self._base_lrs

    @property
    def max_lrs(self) -> tuple[float, ...]:
        """Upper learning-rate bound of each parameter group."""
        return self._max_lrs

    @property
    def step_size_up(self) -> int:
        """Steps in the rising half of a cycle."""
        return self._policy.step_size_up

    @property
    def step_size_down(self) -> int:
        """Steps in the falling half of a cycle."""
        return self._policy.step_size_down

    @property
    def total_size(self) -> int:
        """Steps in one cycle: ``step_size_up + step_size_down``."""
        return self._policy.total_size

    @property
    def mode(self) -> str:
        """``'triangular'``, ``'triangular2'`` or ``'exp_range'`` (ignored with ``scale_fn``)."""
        return self._policy.mode

    @property
    def gamma(self) -> float:
        """Base of the exp_range amplitude scale ``gamma**step``."""
        return self._policy.gamma

    @property
    def scale_fn(self) -> Callable[[Any], Any] | None:
        """The custom amplitude scale, or ``None`` for the built-in ``mode``."""
        return self._policy.scale_fn

    @property
    def scale_mode(self) -> str:
        """What a custom ``scale_fn`` receives: ``'cycle'`` or ``'iterations'``."""
        return self._policy.scale_mode

    @property
    def base_momentums(self) -> tuple[float, ...]:
        """Momentum of each group at the learning-rate peaks."""
        return self._base_momentums

    @property
    def max_momentums(self) -> tuple[float, ...]:
        """Momentum of each group at the learning-rate troughs."""
        return self._max_momentums

    @property
    def preview_steps(self) -> int:
        """Three cycles: the number of steps the planned-schedule plot shows by default."""
        return min(3 * self.total_size, _checks.MAX_STEP)

    # -- position within the cycle --------------------------------------------------------------

    @property
    def cycle(self) -> int:
        """The current cycle number, from 1 (PyTorch's ``cycle``)."""
        return self._policy.phase(self._last_epoch)[0] + 1

    @property
    def cycle_position(self) -> float:
        """Fraction of the current cycle completed, in [0, 1) (PyTorch's ``x``)."""
        return self._policy.phase(self._last_epoch)[1] / self.total_size

    def next_cycle_end(self, count: int) -> int | None:
        """The first step from ``count`` whose update applies ``base_lr`` after a full cycle.

        A cycle of ``step_size_up + step_size_down`` steps ends where the next one starts:
        the update at step ``total_size`` (and every multiple) applies the lowest value.

        Example:
            >>> CyclicLR(base_lr=0.1, max_lr=1.0, step_size_up=2).next_cycle_end(1)
            4
        """
        return -(-max(count, 1) // self.total_size) * self.total_size

    def _config(self) -> dict[str, Any]:
        return {
            "base_lrs": list(self._base_lrs),
            "max_lrs": list(self._max_lrs),
            **self._policy.config(),
            "scale_fn": None if self.scale_fn is None else _fingerprint(self.scale_fn),
            "cycle_momentum": self.cycle_momentum,
            "base_momentums": list(self._base_momentums),
            "max_momentums": list(self._max_momentums),
        }


class TriangularLR(CyclicLR):
    """The basic triangular cycle: [`CyclicLR`][flax_cyclic.CyclicLR] with equal halves, unscaled.

    The learning rate of each group rises linearly from ``base_lr`` to ``max_lr`` over
    ``step_size`` steps and falls back over as many, forever (Smith, 2017, Section 3.1). See
    [`triangular_schedule`][flax_cyclic.triangular_schedule] for the formula.

    Args:
        base_lr: The learning rate at the troughs; a number or a list per parameter group.
        max_lr: The learning rate at the peaks; a number or a list per parameter group.
        step_size: Steps in each half of a cycle; a positive integer.
        last_epoch: The step to start at; an integer >= 0.

    Examples:
        >>> from flax_cyclic import TriangularLR
        >>> scheduler = TriangularLR(base_lr=0.1, max_lr=0.5, step_size=2)
        >>> lrs = []
        >>> for _ in range(6):
        ...     lrs.append(round(scheduler.get_last_lr()[0], 6))
        ...     scheduler.step()
        >>> lrs
        [0.1, 0.3, 0.5, 0.3, 0.1, 0.3]
        >>> scheduler.cycle
        2
    """

    def __init__(
        self,
        base_lr: float | list[float] = 1e-3,
        max_lr: float | list[float] = 1e-2,
        step_size: int = 2000,
        last_epoch: int = 0,
    ) -> None:
        size = triangular_step_size(type(self).__name__, step_size)
        super().__init__(base_lr, max_lr, size, last_epoch=last_epoch)

    @property
    def step_size(self) -> int:
        """Steps in each half of a cycle."""
        return self.step_size_up

    def _config(self) -> dict[str, Any]:
        return {
            "base_lrs": list(self.base_lrs),
            "max_lrs": list(self.max_lrs),
            "step_size": self.step_size,
        }


class OneCycleLR(LRScheduler):
    """The 1cycle policy, with the API and the numbers of PyTorch's ``OneCycleLR``.

    The learning rate of each group rises from ``max_lr / div_factor`` to ``max_lr``, then
    anneals to ``max_lr / div_factor / final_div_factor`` at step ``total_steps - 1``; with
    ``cycle_momentum`` the momentum moves the other way between ``max_momentum`` and
    ``base_momentum``. See [`onecycle_schedule`][flax_cyclic.onecycle_schedule] for the formula.

    The schedule has ``total_steps`` updates, at steps ``0 .. total_steps - 1``. ``step()`` after
    the last update moves to step ``total_steps``, where the learning rate stays at the minimum;
    stepping further raises a ``ValueError`` that says how far (PyTorch extrapolates at
    ``total_steps``; its message counted one step too many until pytorch#92040).

    Args:
        max_lr: The peak learning rate; a number or a list per parameter group.
        total_steps: The number of optimizer updates; or give ``epochs`` and
            ``steps_per_epoch``.
        epochs: With ``steps_per_epoch``, ``total_steps = epochs * steps_per_epoch``.
        steps_per_epoch: See ``epochs``.
        pct_start: Fraction of the steps spent rising, in [0, 1) (at most 0.5 with
            ``three_phase``). 1 is refused: the rise would take every step and leave none to
            anneal. Any value below 1 reaches the minimum at step ``total_steps - 1``; when
            ``pct_start * total_steps >= total_steps - 1`` the fall takes that single step
            and the rise may stop short of ``max_lr``, with PyTorch's numbers.
        anneal_strategy: ``'cos'`` (default) or ``'linear'``.
        cycle_momentum: Whether to cycle the momentum (PyTorch's default: True).
        base_momentum: Momentum at the learning-rate peak; a number or a list per group.
        max_momentum: Momentum at the start and the end; a number or a list per group.
        div_factor: ``max_lr / div_factor`` is the initial learning rate; > 0.
        final_div_factor: ``initial / final_div_factor`` is the final learning rate; > 0.
        three_phase: Whether to anneal back to the initial learning rate symmetrically before
            annealing to the final one (the paper's schedule).
        last_epoch: The step to start at, in ``[0, total_steps]``.

    Raises:
        TypeError: For an argument of the wrong type (a float ``total_steps``, a string
            learning rate, a non-bool ``three_phase``, ...), naming the argument.
        ValueError: For an out-of-range argument, naming the argument and the fix; among
            them ``pct_start >= 1`` (at 1 no step is left to anneal; PyTorch divides by
            zero there) and ``pct_start > 0.5`` with ``three_phase=True``.

    Examples:
        >>> from flax_cyclic import OneCycleLR
        >>> scheduler = OneCycleLR(max_lr=25.0, total_steps=10, anneal_strategy="linear",
        ...                        final_div_factor=2.0, base_momentum=1.0, max_momentum=22.0)
        >>> lrs, momentums = [], []
        >>> for _ in range(10):
        ...     lrs.append(round(scheduler.get_last_lr()[0], 6))
        ...     momentums.append(round(scheduler.get_last_momentum()[0], 6))
        ...     scheduler.step()
        >>> lrs
        [1.0, 13.0, 25.0, 21.5, 18.0, 14.5, 11.0, 7.5, 4.0, 0.5]
        >>> momentums
        [22.0, 11.5, 1.0, 4.0, 7.0, 10.0, 13.0, 16.0, 19.0, 22.0]
        >>> scheduler.step()  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: OneCycleLR: step 11 is past the end of the schedule: total_steps=10 ...
    """

    _policy: OneCyclePolicy

    def __init__(
        self,
        max_lr: float | list[float] = 1e-2,
        total_steps: int | None = None,
        epochs: int | None = None,
        steps_per_epoch: int | None = None,
        pct_start: float = 0.3,
        anneal_strategy: str = "cos",
        cycle_momentum: bool = True,
        base_momentum: float | list[float] = 0.85,
        max_momentum: float | list[float] = 0.95,
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
        three_phase: bool = False,
        last_epoch: int = 0,
    ) -> None:
        owner = type(self).__name__
        policy = OneCyclePolicy.create(
            owner, total_steps, epochs, steps_per_epoch, pct_start, anneal_strategy, three_phase
        )
        _checks.flag(owner, "cycle_momentum", cycle_momentum)
        groups = _checks.per_group(
            owner,
            {"max_lr": max_lr, "base_momentum": base_momentum, "max_momentum": max_momentum},
            {"max_lr": LR_HINT, "base_momentum": _MOMENTUM_HINT, "max_momentum": _MOMENTUM_HINT},
        )
        _check_momentum_order(owner, groups)
        self._div_factor, self._final_div_factor = OneCyclePolicy.check_divisors(
            owner, div_factor, final_div_factor
        )
        self._max_lrs = groups["max_lr"]
        self._base_momentums = groups["base_momentum"]
        self._max_momentums = groups["max_momentum"]
        super().__init__(
            policy,
            [policy.lr_bounds(m, self._div_factor, self._final_div_factor) for m in self._max_lrs],
            [
                policy.momentum_bounds(low, high)
                for low, high in zip(self._base_momentums, self._max_momentums, strict=True)
            ]
            if cycle_momentum
            else None,
            last_epoch,
        )

    @property
    def base_lrs(self) -> tuple[float, ...]:
        """The initial learning rate of each group, ``max_lr / div_factor``."""
        return tuple(bounds[0] for bounds in self._lr_bounds)

    @property
    def max_lrs(self) -> tuple[float, ...]:
        """The peak learning rate of each group."""
        return self._max_lrs

    @property
    def min_lrs(self) -> tuple[float, ...]:
        """The final learning rate of each group, ``base_lr / final_div_factor``."""
        return tuple(bounds[-1] for bounds in self._lr_bounds)

    @property
    def total_steps(self) -> int:
        """The number of optimizer updates the schedule covers."""
        return self._policy.total_steps

    @property
    def pct_start(self) -> float:
        """Fraction of the steps spent rising to ``max_lr``."""
        return self._policy.pct_start

    @property
    def anneal_strategy(self) -> str:
        """``'cos'`` or ``'linear'``."""
        return self._policy.anneal_strategy

    @property
    def three_phase(self) -> bool:
        """Whether the learning rate falls back to the initial one before the final phase."""
        return self._policy.three_phase

    @property
    def div_factor(self) -> float:
        """``max_lr / div_factor`` is the initial learning rate."""
        return self._div_factor

    @property
    def final_div_factor(self) -> float:
        """``initial / final_div_factor`` is the final learning rate."""
        return self._final_div_factor

    @property
    def base_momentums(self) -> tuple[float, ...]:
        """Momentum of each group at the learning-rate peak (used with ``cycle_momentum``)."""
        return self._base_momentums

    @property
    def max_momentums(self) -> tuple[float, ...]:
        """Momentum of each group at the start and the end (used with ``cycle_momentum``)."""
        return self._max_momentums

    @property
    def preview_steps(self) -> int:
        """The whole schedule."""
        return self.total_steps

    def _values_at(self, step: int) -> tuple[list[float], list[float] | None]:
        total = self.total_steps
        if step > total:
            raise ValueError(
                f"{type(self).__name__}: step {step} is past the end of the schedule: "
                f"total_steps={total} covers the updates at steps 0..{total - 1}, and one "
                f"step() after the last of them (to step {total}). Step {step} is {step} step() "
                f"calls from step 0, {step - total} more than the schedule allows. Build it with "
                "total_steps (or epochs * steps_per_epoch) covering every update of the run."
            )
        return super()._values_at(step)

    def _config(self) -> dict[str, Any]:
        return {
            "max_lrs": list(self._max_lrs),
            **self._policy.config(),
            "div_factor": self._div_factor,
            "final_div_factor": self._final_div_factor,
            "cycle_momentum": self.cycle_momentum,
            "base_momentums": list(self._base_momentums),
            "max_momentums": list(self._max_momentums),
        }


class _CosineScheduler(LRScheduler):
    """The shared part of the cosine schedulers: between ``eta_min`` and ``base_lr`` per group."""

    def __init__(
        self,
        policy: Policy,
        base_lr: float | list[float],
        eta_min: float | list[float],
        last_epoch: int,
    ) -> None:
        groups = _checks.per_group(
            type(self).__name__,
            {"base_lr": base_lr, "eta_min": eta_min},
            {"base_lr": LR_HINT, "eta_min": LR_HINT},
        )
        self._base_lrs, self._eta_mins = groups["base_lr"], groups["eta_min"]
        super().__init__(policy, zip(self._eta_mins, self._base_lrs, strict=True), None, last_epoch)

    @property
    def base_lrs(self) -> tuple[float, ...]:
        """The peak learning rate of each group (at step 0)."""
        return self._base_lrs

    @property
    def eta_mins(self) -> tuple[float, ...]:
        """The lowest learning rate of each group."""
        return self._eta_mins

    def _config(self) -> dict[str, Any]:
        return {
            "base_lrs": list(self._base_lrs),
            "eta_mins": list(self._eta_mins),
            **self._policy.config(),
        }


class CosineAnnealingLR(_CosineScheduler):
    """Cosine annealing, with the API and the numbers of PyTorch's ``CosineAnnealingLR``.

    The learning rate of each group follows a half cosine from ``base_lr`` at step 0 to
    ``eta_min`` at step ``T_max`` (and, as in PyTorch, back up after that, periodically). See
    [`cosine_annealing_schedule`][flax_cyclic.cosine_annealing_schedule] for the formula;
    PyTorch's recursive update gives the same numbers up to rounding.

    Args:
        base_lr: The learning rate at step 0; a number or a list per parameter group.
        T_max: Steps from ``base_lr`` down to ``eta_min``; a positive integer.
        eta_min: The lowest learning rate; a number or a list per group.
        last_epoch: The step to start at; an integer >= 0.

    Examples:
        >>> from flax_cyclic import CosineAnnealingLR
        >>> scheduler = CosineAnnealingLR(base_lr=1.0, T_max=4, eta_min=0.5)
        >>> scheduler.step(2)
        >>> scheduler.get_last_lr()
        [0.75]
    """

    _policy: CosinePolicy

    def __init__(
        self,
        base_lr: float | list[float],
        T_max: int,
        eta_min: float | list[float] = 0.0,
        last_epoch: int = 0,
    ) -> None:
        policy = CosinePolicy.create(type(self).__name__, T_max)
        super().__init__(policy, base_lr, eta_min, last_epoch)

    @property
    def T_max(self) -> int:
        """Steps from ``base_lr`` down to ``eta_min``."""
        return self._policy.T_max

    @property
    def preview_steps(self) -> int:
        """One annealing, ``T_max`` steps."""
        return self.T_max + 1


class CosineAnnealingWarmRestarts(_CosineScheduler):
    """SGDR, with the API and the numbers of PyTorch's ``CosineAnnealingWarmRestarts``.

    The learning rate of each group anneals along a cosine from ``base_lr`` to ``eta_min`` over
    ``T_0`` steps, then restarts; cycle ``i`` lasts ``T_0 * T_mult**i`` steps. Two options go
    beyond PyTorch: ``decay`` multiplies the peak's height above ``eta_min`` at every restart
    (pytorch#62640), and ``warmup_steps`` opens the first cycle (or every one) with a linear
    warm-up to the peak (pytorch#80308). See
    [`cosine_warm_restarts_schedule`][flax_cyclic.cosine_warm_restarts_schedule] for the formula.
    Steps are integers (PyTorch also takes fractional epochs).

    Args:
        base_lr: The peak learning rate of the first cycle; a number or a list per group.
        T_0: Length of the first cycle in steps; a positive integer.
        T_mult: Growth factor of the cycle length; an integer >= 1.
        eta_min: The lowest learning rate; a number or a list per group.
        last_epoch: The step to start at; an integer >= 0.
        decay: Factor applied to the peak's height above ``eta_min`` at each restart, in
            (0, 1].
        warmup_steps: Steps of linear warm-up from ``eta_min`` at the start of a cycle;
            smaller than ``T_0``.
        warmup: ``'first'`` (the first cycle only) or ``'every'`` (every cycle).

    Examples:
        >>> from flax_cyclic import CosineAnnealingWarmRestarts
        >>> scheduler = CosineAnnealingWarmRestarts(base_lr=1.0, T_0=4, decay=0.5)
        >>> scheduler.step(4)
        >>> scheduler.get_last_lr(), scheduler.cycle, scheduler.cycle_position
        ([0.5], 2, 0.0)
    """

    _policy: RestartPolicy

    def __init__(
        self,
        base_lr: float | list[float],
        T_0: int,
        T_mult: int = 1,
        eta_min: float | list[float] = 0.0,
        last_epoch: int = 0,
        *,
        decay: float = 1.0,
        warmup_steps: int = 0,
        warmup: str = "first",
    ) -> None:
        owner = type(self).__name__
        policy = RestartPolicy.create(owner, T_0, T_mult, decay, warmup_steps, warmup)
        super().__init__(policy, base_lr, eta_min, last_epoch)

    @property
    def T_0(self) -> int:
        """Length of the first cycle in steps."""
        return self._policy.T_0

    @property
    def T_mult(self) -> int:
        """Growth factor of the cycle length."""
        return self._policy.T_mult

    @property
    def T_i(self) -> int:
        """Length of the current cycle in steps (PyTorch's ``T_i``)."""
        return self._policy.locate(self._last_epoch, HOST)[2]

    @property
    def T_cur(self) -> int:
        """Steps since the last restart (PyTorch's ``T_cur``)."""
        return self._policy.locate(self._last_epoch, HOST)[1]

    @property
    def cycle(self) -> int:
        """The current cycle number, from 1."""
        return self._policy.locate(self._last_epoch, HOST)[0] + 1

    @property
    def cycle_position(self) -> float:
        """Fraction of the current cycle completed, in [0, 1)."""
        return self.T_cur / self.T_i

    def next_cycle_end(self, count: int) -> int | None:
        """The first step from ``count`` whose update is the last before a restart.

        Example:
            >>> CosineAnnealingWarmRestarts(base_lr=1.0, T_0=3, T_mult=2).next_cycle_end(3)
            8
        """
        _, position, length = self._policy.locate(count, HOST)
        return int(count + length - 1 - position)

    @property
    def preview_steps(self) -> int:
        """Three cycles."""
        return min(sum(self.T_0 * self.T_mult**i for i in range(3)), _checks.MAX_STEP)


class LinearLR(LRScheduler):
    """A linear warm-up (or decay) factor, with the API and the numbers of PyTorch's ``LinearLR``.

    The learning rate of each group is ``base_lr`` times a factor that moves linearly from
    ``start_factor`` at step 0 to ``end_factor`` at step ``total_iters``, and stays there:

    ```text
    f    = min(t, total_iters) / total_iters
    lr_t = base_lr * (start_factor + (end_factor - start_factor) * f)
    ```

    See [`linear_schedule`][flax_cyclic.linear_schedule] for the pure schedule. PyTorch's
    recursive update gives the same numbers up to rounding. The usual use is a warm-up before
    another scheduler, with [`SequentialLR`][flax_cyclic.SequentialLR].

    Args:
        base_lr: The learning rate the factors multiply; a number or a list per parameter
            group.
        start_factor: The factor at step 0, in (0, 1].
        end_factor: The factor from step ``total_iters`` on, in [0, 1].
        total_iters: Steps from ``start_factor`` to ``end_factor``; a positive integer.
        last_epoch: The step to start at; an integer >= 0.

    Raises:
        TypeError: For an argument of the wrong type (a float ``total_iters``, a string
            factor, ...), naming the argument.
        ValueError: For an out-of-range argument, naming the argument and the range.

    Examples:
        >>> from flax_cyclic import LinearLR
        >>> scheduler = LinearLR(base_lr=1.0, start_factor=0.2, total_iters=4)
        >>> lrs = []
        >>> for _ in range(6):
        ...     lrs.append(round(scheduler.get_last_lr()[0], 6))
        ...     scheduler.step()
        >>> lrs
        [0.2, 0.4, 0.6, 0.8, 1.0, 1.0]
    """

    _policy: RampPolicy

    def __init__(
        self,
        base_lr: float | list[float],
        start_factor: float = 1.0 / 3,
        end_factor: float = 1.0,
        total_iters: int = 5,
        last_epoch: int = 0,
    ) -> None:
        owner = type(self).__name__
        self._ramp = LinearRamp.create(owner, start_factor, end_factor, total_iters)
        self._base_lrs = _checks.per_group(owner, {"base_lr": base_lr}, {"base_lr": LR_HINT})[
            "base_lr"
        ]
        bounds = [self._ramp.bounds(base) for base in self._base_lrs]
        super().__init__(self._ramp.policy, bounds, None, last_epoch)

    @property
    def base_lrs(self) -> tuple[float, ...]:
        """The learning rate of each group that the factors multiply."""
        return self._base_lrs

    @property
    def start_factor(self) -> float:
        """The factor at step 0."""
        return self._ramp.start_factor

    @property
    def end_factor(self) -> float:
        """The factor from step ``total_iters`` on."""
        return self._ramp.end_factor

    @property
    def total_iters(self) -> int:
        """Steps from ``start_factor`` to ``end_factor``."""
        return self._ramp.total_iters

    @property
    def preview_steps(self) -> int:
        """The ramp and its end, ``total_iters + 1`` steps."""
        return min(self.total_iters + 1, _checks.MAX_STEP)

    def _config(self) -> dict[str, Any]:
        return {"base_lrs": list(self._base_lrs), **self._ramp.config()}


class SequentialLR(LRScheduler):
    """Schedulers one after the other, with the API and the numbers of PyTorch's ``SequentialLR``.

    ``schedulers[0]`` runs from step 0; ``schedulers[i]`` takes over at step
    ``milestones[i - 1]`` and runs on its own local step, ``t - milestones[i - 1]`` (so it
    starts at its own step 0). A linear warm-up, then a cyclical learning rate, is one line:

    ```python
    SequentialLR(
        [LinearLR(0.01, start_factor=0.1, total_iters=100), CyclicLR(0.01, 0.1, step_size_up=500)],
        milestones=[100],
    )
    ```

    The pure counterpart of group ``g`` is
    ``optax.join_schedules([s.as_schedule(g) for s in schedulers], milestones)``, which
    [`as_schedule`][flax_cyclic.SequentialLR.as_schedule] returns. The schedulers are read,
    never stepped: they must stand at step 0, and their own ``last_epoch`` does not move.

    The momentum: if no scheduler cycles it, ``get_last_momentum()`` is ``None``. If some do,
    the whole ``SequentialLR`` cycles it (``cycle_momentum`` is True), and in the phase of a
    scheduler that does not, the momentum is PyTorch's: the last value a cycling scheduler set.
    That is its value at the last step of the latest cycling phase before; before any, the
    step-0 momentum of the last cycling scheduler in the list (PyTorch's ``CyclicLR`` and
    ``OneCycleLR`` write it into the optimizer when they are built, in list order, and
    ``SequentialLR`` does not reset it).

    Args:
        schedulers: The schedulers, in the order they run; each stands at step 0, and all
            have the same number of parameter groups. A
            [`ReduceLROnPlateau`][flax_cyclic.ReduceLROnPlateau] is refused (it follows a
            metric, not the step), as in PyTorch.
        milestones: The step at which each scheduler after the first takes over: strictly
            increasing positive integers, one fewer than ``schedulers``.
        last_epoch: The step to start at; an integer >= 0.

    Raises:
        TypeError: For a scheduler that is not a flax_cyclic scheduler, or milestones that are
            not a list of integers.
        ValueError: For an empty list, schedulers with different numbers of groups or not at
            step 0, milestones of the wrong number or order, or a scheduler with
            ``total_steps`` (``OneCycleLR``) shorter than its phase.

    Examples:
        >>> from flax_cyclic import CyclicLR, LinearLR, SequentialLR
        >>> warmup = LinearLR(base_lr=1.0, start_factor=0.25, total_iters=3)
        >>> cyclic = CyclicLR(base_lr=1.0, max_lr=5.0, step_size_up=2)
        >>> scheduler = SequentialLR([warmup, cyclic], milestones=[3])
        >>> lrs = []
        >>> for _ in range(9):
        ...     lrs.append(round(scheduler.get_last_lr()[0], 6))
        ...     scheduler.step()
        >>> lrs
        [0.25, 0.5, 0.75, 1.0, 3.0, 5.0, 3.0, 1.0, 3.0]
        >>> [round(float(scheduler.as_schedule()(t)), 6) for t in (2, 3, 5)]
        [0.75, 1.0, 5.0]
    """

    def __init__(
        self,
        schedulers: Sequence[LRScheduler],
        milestones: Sequence[int],
        last_epoch: int = 0,
    ) -> None:
        owner = type(self).__name__
        self._schedulers = _check_children(owner, schedulers)
        self._milestones = _check_milestones(owner, milestones, len(self._schedulers))
        self._starts = (0, *self._milestones)
        _check_phase_lengths(owner, self._schedulers, self._starts)
        self._held = _held_momentums(self._schedulers, self._starts)
        groups = range(self._schedulers[0].num_groups)
        lr_schedules = tuple(
            _joined(owner, [child.as_schedule(g) for child in self._schedulers], self._milestones)
            for g in groups
        )
        momentum_schedules = None
        if self._held is not None:
            momentum_schedules = tuple(
                _joined(owner, self._momentum_phases(g), self._milestones) for g in groups
            )
        self._start(len(groups), lr_schedules, momentum_schedules, last_epoch)

    def _momentum_phases(self, group: int) -> list[optax.Schedule]:
        """Each phase's momentum schedule of ``group``: cycled, or held at a constant."""
        assert self._held is not None
        return [
            child.as_momentum_schedule(group)
            if held is None
            else optax.constant_schedule(held[group])
            for child, held in zip(self._schedulers, self._held, strict=True)
        ]

    @property
    def schedulers(self) -> tuple[LRScheduler, ...]:
        """The schedulers, in the order they run."""
        return self._schedulers

    @property
    def milestones(self) -> tuple[int, ...]:
        """The step at which each scheduler after the first takes over."""
        return self._milestones

    @property
    def base_lrs(self) -> tuple[float, ...]:
        """The first scheduler's ``base_lrs``."""
        return self._schedulers[0].base_lrs

    @property
    def preview_steps(self) -> int:
        """Every phase: the last milestone plus the last scheduler's ``preview_steps``."""
        return min(self._starts[-1] + self._schedulers[-1].preview_steps, _checks.MAX_STEP)

    @property
    def total_steps(self) -> int:
        """The last milestone plus the last scheduler's ``total_steps``.

        Only where the last scheduler has one ([`OneCycleLR`][flax_cyclic.OneCycleLR]);
        otherwise the attribute does not exist (``hasattr`` is False): the schedule goes on.
        """
        length = getattr(self._schedulers[-1], "total_steps", None)
        if length is None:
            raise AttributeError(
                f"{type(self).__name__}: no total_steps: the last scheduler, "
                f"{type(self._schedulers[-1]).__name__}, has no end."
            )
        return self._starts[-1] + length

    def as_schedule(self, group: int = 0) -> optax.Schedule:
        """``optax.join_schedules([s.as_schedule(group) for s in schedulers], milestones)``.

        The pure, jit-safe counterpart of one group's learning rate. The same object is
        returned on every call, so it compiles once.

        Args:
            group: Index of the parameter group.

        Returns:
            A function of the integer step.
        """
        return super().as_schedule(group)

    def _values_at(self, step: int) -> tuple[list[float], list[float] | None]:
        index = bisect.bisect_right(self._milestones, step)
        child, local = self._schedulers[index], step - self._starts[index]
        try:
            lrs, momentums = child._values_at(local)
        except ValueError as error:
            raise ValueError(
                f"{type(self).__name__}: step {step} is step {local} of schedulers[{index}] "
                f"({type(child).__name__}), which refuses it: {error}"
            ) from None
        if self._held is None:
            return lrs, None
        held = self._held[index]
        return lrs, momentums if held is None else list(held)

    def _config(self) -> dict[str, Any]:
        return {
            "milestones": list(self._milestones),
            "schedulers": [type(child).__name__ for child in self._schedulers],
        }

    _EXTRA_STATE_KEYS = ("scheduler_states",)

    def _extra_state(self) -> dict[str, Any]:
        return {"scheduler_states": [child.state_dict() for child in self._schedulers]}

    def _restore(self, state: Mapping[str, Any], last_epoch: int, *, strict: bool) -> None:
        owner = f"{type(self).__name__}.load_state_dict"
        states = state["scheduler_states"]
        if not isinstance(states, (list, tuple)) or len(states) != len(self._schedulers):
            raise ValueError(
                f"{owner}: `scheduler_states` must be a list of {len(self._schedulers)} "
                f"scheduler states, one per scheduler, got {states!r}."
            )
        self._values_at(last_epoch)  # refuses a step past the end before anything changes
        before = [child.state_dict() for child in self._schedulers]
        try:
            for index, (child, saved) in enumerate(zip(self._schedulers, states, strict=True)):
                try:
                    child.load_state_dict(saved, strict=strict)
                except _ConfigurationError as error:
                    raise _ConfigurationError(
                        f"{owner}: schedulers[{index}]: {error.what}"
                    ) from None
                except (TypeError, ValueError) as error:
                    raise type(error)(f"{owner}: schedulers[{index}]: {error}") from None
        except Exception:
            for child, previous in zip(self._schedulers, before, strict=True):
                child.load_state_dict(previous)
            raise
        self._move_to(last_epoch)

    def __repr__(self) -> str:
        children = ", ".join(repr(child) for child in self._schedulers)
        return (
            f"{type(self).__name__}([{children}], milestones={list(self._milestones)}, "
            f"last_epoch={self._last_epoch})"
        )


def _check_children(owner: str, schedulers: Any) -> tuple[LRScheduler, ...]:
    """The schedulers of a ``SequentialLR``: flax_cyclic step schedulers at step 0, alike."""
    if not isinstance(schedulers, (list, tuple)) or not schedulers:
        raise (ValueError if isinstance(schedulers, (list, tuple)) else TypeError)(
            f"{owner}: `schedulers` must be a non-empty list of schedulers, got "
            f"schedulers={schedulers!r}. Pass them in the order they run, e.g. "
            "[LinearLR(...), CyclicLR(...)]."
        )
    for index, child in enumerate(schedulers):
        name = type(child).__name__
        if not isinstance(child, LRScheduler):
            raise TypeError(
                f"{owner}: `schedulers[{index}]` must be a flax_cyclic scheduler (e.g. "
                f"LinearLR or CyclicLR), got {name}. Chain pure schedules with "
                "optax.join_schedules instead."
            )
        if child.requires_metric:
            raise ValueError(
                f"{owner}: `schedulers[{index}]` must be a schedule of the step, got {name}, "
                "whose learning rate follows a metric (step(metric)). Use it on its own."
            )
        if child.last_epoch != 0:
            raise ValueError(
                f"{owner}: `schedulers[{index}]` must stand at step 0, got {name} at "
                f"last_epoch={child.last_epoch}. Each scheduler runs from its own step 0 when "
                "its phase begins; build them with last_epoch=0, and SequentialLR with "
                "last_epoch=N to start at step N."
            )
    groups = [child.num_groups for child in schedulers]
    if len(set(groups)) > 1:
        raise ValueError(
            f"{owner}: every scheduler must have the same number of parameter groups, got "
            + ", ".join(f"{n} in schedulers[{i}]" for i, n in enumerate(groups))
            + ". Give each one a learning rate per group of the same groups."
        )
    return tuple(schedulers)


def _check_milestones(owner: str, milestones: Any, count: int) -> tuple[int, ...]:
    """Strictly increasing positive integers, one fewer than the schedulers."""
    hint = "Each milestone is the step at which the next scheduler takes over."
    if not isinstance(milestones, (list, tuple)):
        raise TypeError(
            f"{owner}: `milestones` must be a list of integers, got milestones={milestones!r}. "
            f"{hint}"
        )
    if len(milestones) != count - 1:
        raise ValueError(
            f"{owner}: `milestones` must have one entry fewer than `schedulers`, got "
            f"{len(milestones)} for {count} scheduler(s): milestones={list(milestones)!r}. {hint}"
        )
    checked = tuple(
        _checks.integer(owner, f"milestones[{i}]", m, minimum=1, hint=hint)
        for i, m in enumerate(milestones)
    )
    for i in range(1, len(checked)):
        if checked[i] <= checked[i - 1]:
            raise ValueError(
                f"{owner}: `milestones` must be strictly increasing, got "
                f"milestones={list(checked)!r}: milestones[{i}]={checked[i]} is not after "
                f"milestones[{i - 1}]={checked[i - 1]}. {hint}"
            )
    return checked


def _check_phase_lengths(
    owner: str, schedulers: tuple[LRScheduler, ...], starts: tuple[int, ...]
) -> None:
    """Refuses a scheduler with ``total_steps`` (``OneCycleLR``) shorter than its phase."""
    phases = zip(schedulers[:-1], starts[:-1], starts[1:], strict=True)
    for index, (child, start, end) in enumerate(phases):
        length = getattr(child, "total_steps", None)
        if length is not None and end - start > length:
            raise ValueError(
                f"{owner}: `schedulers[{index}]` must cover its phase, got "
                f"{type(child).__name__}(total_steps={length}) for a phase of {end - start} "
                f"updates (steps {start} to {end - 1}, until milestones[{index}]={end}): update "
                f"{length} of the phase would be past its end. Build it with "
                f"total_steps={end - start}, or move milestones[{index}] to {start + length}."
            )


def _held_momentums(
    schedulers: tuple[LRScheduler, ...], starts: tuple[int, ...]
) -> tuple[tuple[float, ...] | None, ...] | None:
    """The momentum PyTorch's optimizer holds in each phase whose scheduler does not cycle it.

    ``None`` if no scheduler cycles the momentum; else, per phase, ``None`` where the
    scheduler cycles it and the held value of each group where it does not.
    """
    cycling = [i for i, child in enumerate(schedulers) if child.cycle_momentum]
    if not cycling:
        return None
    # Before any cycling phase: the step-0 momentum the last cycling constructor wrote.
    held = tuple(schedulers[cycling[-1]]._values_at(0)[1] or ())
    phases: list[tuple[float, ...] | None] = []
    for index, child in enumerate(schedulers):
        if not child.cycle_momentum:
            phases.append(held)
            continue
        phases.append(None)
        if index + 1 < len(schedulers):  # its value at the last step of its phase stays
            held = tuple(child._values_at(starts[index + 1] - starts[index] - 1)[1] or ())
    return tuple(phases)


def _joined(
    owner: str, schedules: list[optax.Schedule], milestones: Sequence[int]
) -> optax.Schedule:
    """``optax.join_schedules(schedules, milestones)``, jitted, for any integer step."""
    joined = jax.jit(optax.join_schedules(schedules, list(milestones)))

    def schedule(count: Any) -> jax.Array:
        # An integer array first: the later schedules get step - milestone, negative before
        # their phase (their values there are discarded), which a Python int would refuse.
        return joined(step_array(owner, count))

    return schedule
