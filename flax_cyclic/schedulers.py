"""Stateful learning-rate schedulers with the braintools / PyTorch interface.

A scheduler stands at a step (``last_epoch``), reports the learning rate of every parameter
group there (``get_last_lr()``), advances with ``step()``, and saves and restores its position as
plain JSON (``state_dict()`` / ``load_state_dict()``). It evaluates the formulas of
:mod:`flax_cyclic.schedules` with Python floats (float64) on the host: no device round trip per
step. Calling a scheduler, ``scheduler(count)``, evaluates the same formula for group 0 with
``jax.numpy``, so the object can be handed to optax as ``learning_rate``.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import jax
import optax

from flax_cyclic import _checks
from flax_cyclic.schedules import HOST, CyclePolicy, interpolate, make_schedule

__all__ = ["CyclicLR", "LRScheduler"]

_STATE_KEYS = ("format", "version", "last_epoch", "config")


class LRScheduler(abc.ABC):
    """Base class of the stateful schedulers.

    Subclasses validate their arguments, then call ``super().__init__(last_epoch)``, and
    implement :meth:`_values_at`, :meth:`_config` and :meth:`as_schedule`.

    The scheduler's position is ``last_epoch``: the number of ``step()`` calls so far (plus the
    ``last_epoch`` it was built with). ``get_last_lr()`` is the learning rate to use for the
    update with that index.
    """

    #: Version of the layout of :meth:`state_dict`; bumped on incompatible changes.
    STATE_VERSION: ClassVar[int] = 1

    def __init__(self, last_epoch: int = 0) -> None:
        self._last_epoch = self._check_epoch("last_epoch", last_epoch)
        self._refresh()

    # -- the subclass interface -------------------------------------------------------------

    @property
    @abc.abstractmethod
    def base_lrs(self) -> tuple[float, ...]:
        """The learning rate of each parameter group at step 0."""

    @abc.abstractmethod
    def _values_at(self, step: int) -> tuple[list[float], list[float] | None]:
        """Learning rates (one per group) and momentums (or ``None``) at ``step``, on the host."""

    @abc.abstractmethod
    def _config(self) -> dict[str, Any]:
        """JSON-serialisable configuration, stored in and checked against a state dict."""

    @abc.abstractmethod
    def as_schedule(self, group: int = 0) -> optax.Schedule:
        """The jit-safe ``optax.Schedule`` of one parameter group's learning rate.

        Implementations return the same object on every call, so it compiles once.
        """

    # -- position -----------------------------------------------------------------------------

    @property
    def last_epoch(self) -> int:
        """The step the scheduler stands at. Assigning to it is the same as ``step(epoch=...)``."""
        return self._last_epoch

    @last_epoch.setter
    def last_epoch(self, epoch: int) -> None:
        self.step(epoch)

    @property
    def num_groups(self) -> int:
        """The number of parameter groups."""
        return len(self.base_lrs)

    def step(self, epoch: int | None = None) -> None:
        """Advances the scheduler by one step, or moves it to step ``epoch``.

        Call it once after each optimizer update (per-step schedules) or each epoch
        (per-epoch schedules).

        Args:
            epoch: If given, the step to move to (any integer >= 0, backwards included).
        """
        if epoch is None:
            self._last_epoch += 1
        else:
            self._last_epoch = self._check_epoch("epoch", epoch)
        self._refresh()

    def _refresh(self) -> None:
        self._last_lr, self._last_momentum = self._values_at(self._last_epoch)

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

    def get_momentum(self) -> list[float] | None:
        """Computes the momentum of each group at ``last_epoch``; ``None`` if not cycled."""
        return self._values_at(self._last_epoch)[1]

    def get_last_momentum(self) -> list[float] | None:
        """Each group's momentum at ``last_epoch``, as last computed; ``None`` if not cycled."""
        return None if self._last_momentum is None else list(self._last_momentum)

    def __call__(self, count: int | jax.Array) -> jax.Array:
        """The learning rate of group 0 at step ``count``, with ``jax.numpy`` (jit-safe).

        This makes the scheduler a valid ``optax.Schedule``: ``optax.sgd(scheduler)`` works.
        The optimizer's own update count drives it then; ``last_epoch`` is not consulted.
        """
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
        the constructor; only its name is recorded.
        """
        return {
            "format": self._format,
            "version": self.STATE_VERSION,
            "last_epoch": self._last_epoch,
            "config": self._config(),
        }

    def load_state_dict(self, state: Mapping[str, Any], *, strict: bool = True) -> None:
        """Restores the position saved by :meth:`state_dict`.

        Args:
            state: A mapping made by :meth:`state_dict` (possibly after a JSON round trip).
            strict: If True (default), a state saved with a different configuration is an
                error that lists the differing fields. If False, only the step counter is
                taken and this scheduler keeps its own configuration.

        Raises:
            TypeError: If ``state`` or one of its fields has the wrong type.
            ValueError: If keys are missing or unexpected, the format or version is not this
                scheduler's, or (with ``strict``) the configuration differs.
        """
        owner = f"{type(self).__name__}.load_state_dict"
        if not isinstance(state, Mapping):
            raise TypeError(
                f"{owner}: `state` must be a mapping made by state_dict(), got "
                f"{type(state).__name__}."
            )
        missing = [key for key in _STATE_KEYS if key not in state]
        unexpected = sorted(str(key) for key in state if key not in _STATE_KEYS)
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
        if state["format"] != self._format:
            raise ValueError(
                f"{owner}: the state was saved by {state['format']!r}, not {self._format!r}."
            )
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
            raise ValueError(
                f"{owner}: the state was saved with a different configuration ("
                + "; ".join(differences)
                + "). Build the scheduler with the saved configuration, or pass strict=False to "
                "take only the step counter and keep the new configuration."
            )
        self._last_epoch = last_epoch
        self._refresh()

    def __repr__(self) -> str:
        config = ", ".join(f"{key}={value!r}" for key, value in self._config().items())
        return f"{type(self).__name__}({config}, last_epoch={self._last_epoch})"


_MISSING = object()

_LR_HINT = "Learning rates are finite numbers >= 0, e.g. 1e-3."
_MOMENTUM_HINT = "Momentums are finite numbers >= 0 with base_momentum <= max_momentum, e.g. 0.8."


class CyclicLR(LRScheduler):
    r"""Cyclical learning rate scheduler, with the API of ``braintools.optim.CyclicLR``.

    The learning rate of each parameter group cycles between ``base_lr`` and ``max_lr``:
    ``step_size_up`` steps up, ``step_size_down`` steps down, with the amplitude scaled per
    ``mode`` (or ``scale_fn``). The numbers are PyTorch's ``CyclicLR`` formula, evaluated with
    exact integer phase arithmetic; see :func:`flax_cyclic.cyclic_schedule` for the formula.
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
            receives a Python int; under ``__call__`` / :meth:`as_schedule` an integer array.
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
        self._policy = CyclePolicy.create(
            owner, step_size_up, step_size_down, mode, gamma, scale_fn, scale_mode
        )
        if not isinstance(cycle_momentum, bool):
            raise TypeError(
                f"{owner}: `cycle_momentum` must be True or False, got "
                f"cycle_momentum={cycle_momentum!r}."
            )
        groups = _checks.per_group(
            owner,
            {
                "base_lr": base_lr,
                "max_lr": max_lr,
                "base_momentum": base_momentum,
                "max_momentum": max_momentum,
            },
            {
                "base_lr": _LR_HINT,
                "max_lr": _LR_HINT,
                "base_momentum": _MOMENTUM_HINT,
                "max_momentum": _MOMENTUM_HINT,
            },
        )
        for i, (low, high) in enumerate(
            zip(groups["base_momentum"], groups["max_momentum"], strict=True)
        ):
            if low > high:
                raise ValueError(
                    f"{owner}: base_momentum must not exceed max_momentum, got "
                    f"base_momentum={low!r} > max_momentum={high!r} (group {i}). "
                    "base_momentum is used at the learning-rate peaks, max_momentum at the "
                    "troughs."
                )
        self._base_lrs = groups["base_lr"]
        self._max_lrs = groups["max_lr"]
        self._base_momentums = groups["base_momentum"]
        self._max_momentums = groups["max_momentum"]
        self._cycle_momentum = cycle_momentum
        self._lr_bounds = tuple(zip(self._base_lrs, self._max_lrs, strict=True))
        # Momentum runs the other way: max_momentum at the troughs, base_momentum at the peaks.
        self._momentum_bounds = (
            tuple(zip(self._max_momentums, self._base_momentums, strict=True))
            if cycle_momentum
            else None
        )
        # Built once: each is compiled on first use, and reused by every later call.
        self._lr_schedules = tuple(
            make_schedule(self._policy, low, high, owner) for low, high in self._lr_bounds
        )
        self._momentum_schedules = tuple(
            make_schedule(self._policy, low, high, owner)
            for low, high in self._momentum_bounds or ()
        )
        super().__init__(last_epoch)

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
    def cycle_momentum(self) -> bool:
        """Whether the momentum cycles inversely to the learning rate."""
        return self._cycle_momentum

    @property
    def base_momentums(self) -> tuple[float, ...]:
        """Momentum of each group at the learning-rate peaks."""
        return self._base_momentums

    @property
    def max_momentums(self) -> tuple[float, ...]:
        """Momentum of each group at the learning-rate troughs."""
        return self._max_momentums

    # -- position within the cycle --------------------------------------------------------------

    @property
    def cycle(self) -> int:
        """The current cycle number, from 1 (PyTorch's ``cycle``)."""
        return self._policy.phase(self._last_epoch)[0] + 1

    @property
    def cycle_position(self) -> float:
        """Fraction of the current cycle completed, in [0, 1) (PyTorch's ``x``)."""
        return self._policy.phase(self._last_epoch)[1] / self.total_size

    # -- evaluation ------------------------------------------------------------------------------

    def _values_at(self, step: int) -> tuple[list[float], list[float] | None]:
        weight = self._policy.weight(step, HOST)
        lrs = [interpolate(low, high, weight, HOST) for low, high in self._lr_bounds]
        if self._momentum_bounds is None:
            return lrs, None
        return lrs, [interpolate(low, high, weight, HOST) for low, high in self._momentum_bounds]

    def as_schedule(self, group: int = 0) -> optax.Schedule:
        """The jit-safe ``optax.Schedule`` of one group's learning rate (same formula).

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
            ValueError: If the scheduler was built with ``cycle_momentum=False``.
        """
        group = self._check_group(group)
        if not self._cycle_momentum:
            raise ValueError(
                f"{type(self).__name__}: the momentum is not cycled; build the scheduler with "
                "cycle_momentum=True to get a momentum schedule."
            )
        return self._momentum_schedules[group]

    def _config(self) -> dict[str, Any]:
        return {
            "base_lrs": list(self._base_lrs),
            "max_lrs": list(self._max_lrs),
            **self._policy.config(),
            "cycle_momentum": self._cycle_momentum,
            "base_momentums": list(self._base_momentums),
            "max_momentums": list(self._max_momentums),
        }
