"""Pure, jit-safe learning-rate schedules: functions ``step -> value`` usable as ``optax.Schedule``.

This module is the one place the schedule math lives. Each formula is written once, over a tiny
arithmetic namespace: :data:`HOST` evaluates it with Python floats (float64) for the stateful
schedulers in :mod:`flax_cyclic.schedulers`, :data:`JAX` evaluates it with ``jax.numpy`` for the
schedules below (eagerly, or traced under ``jax.jit`` / ``jax.vmap``). Only the handful of
operations that Python and ``jax.numpy`` spell differently live in the namespaces.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from flax_cyclic import _checks

__all__ = ["cyclic_schedule"]

MODES = ("triangular", "triangular2", "exp_range")
SCALE_MODES = ("cycle", "iterations")


class _HostMath:
    """Python-float arithmetic (float64), for the stateful schedulers."""

    @staticmethod
    def where(condition: Any, if_true: Any, if_false: Any) -> Any:
        return if_true if condition else if_false

    @staticmethod
    def full_like(like: Any, value: float) -> float:
        return value

    @staticmethod
    def half_power(k: int) -> float:
        """``2 ** -k``, exact; underflows to 0.0 for large ``k`` instead of raising."""
        return math.ldexp(1.0, -k)

    @staticmethod
    def power(base: float, exponent: int) -> float:
        """``base ** exponent``; ``inf`` where the float64 result overflows."""
        try:
            return base**exponent
        except OverflowError:
            return math.inf

    @staticmethod
    def scale_fn_value(value: Any, scale_fn: Callable, argument: int) -> float:
        try:
            result = float(value)
        except (TypeError, ValueError):
            raise TypeError(
                f"scale_fn({argument}) returned {value!r} ({type(value).__name__}); "
                "scale_fn must return a real number."
            ) from None
        if math.isnan(result):
            raise ValueError(
                f"scale_fn({argument}) returned nan; scale_fn must return a real number "
                f"(scale_fn={scale_fn!r})."
            )
        return result


class _JaxMath:
    """``jax.numpy`` arithmetic, traceable under ``jax.jit`` and ``jax.vmap``."""

    where = staticmethod(jnp.where)
    full_like = staticmethod(jnp.full_like)

    @staticmethod
    def half_power(k: jax.Array) -> jax.Array:
        return jnp.ldexp(1.0, -k)

    @staticmethod
    def power(base: float, exponent: jax.Array) -> jax.Array:
        # exp(t * log(gamma)) with log(gamma) taken in float64 on the host: gamma rounded to
        # float32 first (as jnp.power would) loses ~1e-4 relative accuracy for gamma near 1.
        return jnp.exp(exponent * math.log(base))

    @staticmethod
    def scale_fn_value(value: Any, scale_fn: Callable, argument: jax.Array) -> jax.Array:
        return jnp.asarray(value)


HOST = _HostMath()
JAX = _JaxMath()


@dataclasses.dataclass(frozen=True)
class CyclePolicy:
    """The shape of a cyclic schedule, independent of the learning-rate bounds.

    Built with :meth:`create`, which validates every argument.
    """

    step_size_up: int
    step_size_down: int
    mode: str
    gamma: float
    scale_fn: Callable[[Any], Any] | None
    scale_mode: str
    total_size: int = dataclasses.field(init=False)
    """The number of steps in one cycle."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "total_size", self.step_size_up + self.step_size_down)

    @classmethod
    def create(
        cls,
        owner: str,
        step_size_up: Any,
        step_size_down: Any,
        mode: Any,
        gamma: Any,
        scale_fn: Any,
        scale_mode: Any,
    ) -> CyclePolicy:
        """Validates the cycle arguments of ``owner`` (a function or class name)."""
        up = _checks.integer(
            owner,
            "step_size_up",
            step_size_up,
            minimum=1,
            hint="Pass the number of steps in the rising half of a cycle, e.g. 2000.",
        )
        down = up
        if step_size_down is not None:
            down = _checks.integer(
                owner,
                "step_size_down",
                step_size_down,
                minimum=1,
                hint="Pass the number of steps in the falling half of a cycle, "
                "or None to use step_size_up.",
            )
        if up + down > _checks.MAX_STEP:
            raise ValueError(
                f"{owner}: a cycle of step_size_up + step_size_down = {up + down} steps is longer "
                "than 2**31 - 1, the largest step count optax can represent. Use shorter cycles."
            )
        return cls(
            step_size_up=up,
            step_size_down=down,
            mode=_checks.choice(owner, "mode", mode, MODES),
            gamma=_checks.real(
                owner,
                "gamma",
                gamma,
                positive=True,
                hint="exp_range scales the amplitude by gamma**step; use 0 < gamma <= 1.",
            ),
            scale_fn=_checks.optional_callable(
                owner,
                "scale_fn",
                scale_fn,
                hint="Pass a function of one argument (the cycle number or the step).",
            ),
            scale_mode=_checks.choice(owner, "scale_mode", scale_mode, SCALE_MODES),
        )

    def phase(self, step: Any) -> tuple[Any, Any]:
        """Returns ``(cycle_index, position)``: ``divmod(step, total_size)``, in exact integers."""
        return divmod(step, self.total_size)

    def weight(self, step: Any, xp: _HostMath | _JaxMath) -> Any:
        """Returns ``scale_factor * scale`` at ``step``: how far from ``low`` towards ``high``.

        ``scale_factor`` is the triangle wave in [0, 1]: PyTorch's ``x / ratio`` while rising and
        ``(x - 1) / (ratio - 1)`` while falling, which with ``x = position / total`` and
        ``ratio = up / total`` are ``position / up`` and ``(total - position) / down``. The
        integer ``position`` comes from ``divmod``, so the phase is exact at any step, and one
        correctly rounded division gives exactly 1 at peaks. At a trough the weight is exactly
        0, even where ``scale`` overflowed to ``inf`` (exp_range with ``gamma > 1``).
        """
        cycle_index, position = self.phase(step)
        up, down = self.step_size_up, self.step_size_down
        scale_factor = xp.where(position <= up, position / up, (self.total_size - position) / down)
        if self.scale_fn is not None:
            argument = cycle_index + 1 if self.scale_mode == "cycle" else step
            scale = xp.scale_fn_value(self.scale_fn(argument), self.scale_fn, argument)
        elif self.mode == "triangular":
            return scale_factor
        elif self.mode == "triangular2":
            scale = xp.half_power(cycle_index)
        else:
            scale = xp.power(self.gamma, step)
        return xp.where(position == 0, 0.0, scale_factor * scale)

    def config(self) -> dict[str, Any]:
        """JSON-serialisable description, used to check a restored scheduler state."""
        fn = self.scale_fn
        return {
            "step_size_up": self.step_size_up,
            "step_size_down": self.step_size_down,
            "mode": self.mode,
            "gamma": self.gamma,
            "scale_fn": None if fn is None else getattr(fn, "__qualname__", type(fn).__qualname__),
            "scale_mode": self.scale_mode,
        }


def interpolate(low: float, high: float, weight: Any, xp: _HostMath | _JaxMath) -> Any:
    """PyTorch's ``low + (high - low) * weight``, rounded so that it stays in bounds.

    The value is computed from the nearer end: as ``low + (high - low) * w`` for ``w <= 1/2``
    and as ``high - (high - low) * (1 - w)`` above (``1 - w`` is exact there). The two agree
    mathematically; this form is ``high`` exactly at a full peak, ``low`` exactly at a trough,
    and never leaves ``[low, high]`` for ``0 <= w <= 1`` through rounding (the one-sided form
    can overshoot ``high`` by an ulp, or give 0 for ``low=1, high=1e-300``).
    """
    amplitude = high - low
    if amplitude == 0:  # A constant schedule, whatever the weight (even an overflowed one).
        return xp.full_like(weight, low)
    return xp.where(weight <= 0.5, low + amplitude * weight, high - amplitude * (1 - weight))


def step_array(owner: str, count: Any) -> jax.Array:
    """Converts a schedule's ``count`` to an integer array, rejecting values it cannot hold."""
    if isinstance(count, numbers.Integral) and not isinstance(count, bool):
        limit = jnp.iinfo(jax.dtypes.canonicalize_dtype(jnp.int64)).max
        if not 0 <= count <= limit:
            raise ValueError(
                f"{owner}: the step must be in [0, {limit}], got step={count}. "
                "Steps count optimizer updates from 0"
                + ("; enable jax_enable_x64 for larger steps." if count > limit else ".")
            )
    step = jnp.asarray(count)
    if not jnp.issubdtype(step.dtype, jnp.integer):
        raise TypeError(
            f"{owner}: the step must be an integer, got an array of dtype {step.dtype}. "
            "Pass the optimizer's update count (optax passes an int32 count)."
        )
    if jnp.issubdtype(step.dtype, jnp.unsignedinteger):
        # e.g. nnx.Optimizer.step (uint32): negating an unsigned cycle index would wrap around.
        step = step.astype(jax.dtypes.canonicalize_dtype(jnp.int64))
    return step


def make_schedule(policy: CyclePolicy, low: float, high: float, owner: str) -> optax.Schedule:
    """The jit-safe schedule going from ``low`` (troughs) to ``high`` (peaks) under ``policy``."""

    # Compiled even when called eagerly: XLA rewrites float arithmetic (it folds constants into
    # ``position * ((high - low) / up)`` and fuses multiply-adds), so op-by-op evaluation would
    # round differently from the same schedule inside a jitted training step.
    @jax.jit
    def compiled(step: jax.Array) -> jax.Array:
        return interpolate(low, high, policy.weight(step, JAX), JAX)

    def schedule(count: Any) -> jax.Array:
        return compiled(step_array(owner, count))

    return schedule


def cyclic_schedule(
    base_lr: float,
    max_lr: float,
    step_size_up: int = 2000,
    step_size_down: int | None = None,
    mode: str = "triangular",
    gamma: float = 1.0,
    scale_fn: Callable[[Any], Any] | None = None,
    scale_mode: str = "cycle",
) -> optax.Schedule:
    r"""Cyclical learning rate (Smith, 2017) as a pure, jit-safe optax schedule.

    The value at step :math:`t` is PyTorch's ``CyclicLR`` formula. With
    :math:`T = \text{up} + \text{down}`, the cycle index and the position within the cycle
    are exact integers, :math:`c = \lfloor t / T \rfloor` and :math:`p = t \bmod T`; then

    .. math::

        f = \begin{cases} p / \text{up} & p \le \text{up} \\
                          (T - p) / \text{down} & \text{otherwise} \end{cases}
        \qquad
        \text{lr}_t = \text{base\_lr} + (\text{max\_lr} - \text{base\_lr}) \cdot f \cdot s

    where the amplitude scale :math:`s` is 1 (``'triangular'``), :math:`2^{-c}`
    (``'triangular2'``: halves every cycle), :math:`\gamma^t` (``'exp_range'``), or
    ``scale_fn(c + 1)`` / ``scale_fn(t)`` for a custom ``scale_fn`` with ``scale_mode``
    ``'cycle'`` / ``'iterations'``. ``scale_mode`` applies to a custom ``scale_fn`` only.

    Because the phase comes from integer arithmetic, the float32 value is exact to float32
    rounding (within two ulps of the larger bound) at every step up to ``2**31 - 1`` for any
    cycle shorter than ``2**24`` steps, where a float32 ``t / T`` is thousands of ulps off;
    triangular2 stays finite after any number of cycles and exp_range decays to ``base_lr``,
    never ``nan``. The value is computed from the nearer bound, so it is ``max_lr`` exactly at
    a full peak and never leaves the bounds through rounding.

    Args:
        base_lr: Lower bound of the cycle (the value at step 0 and at every trough); >= 0.
        max_lr: Upper bound of the cycle (reached at the first peak); >= 0. ``max_lr < base_lr``
            gives an inverted cycle, which is how momentum is cycled.
        step_size_up: Steps in the rising half of a cycle; a positive integer.
        step_size_down: Steps in the falling half; ``None`` (default) means ``step_size_up``.
        mode: ``'triangular'``, ``'triangular2'`` or ``'exp_range'``.
        gamma: Base of the exp_range scale ``gamma**step``; > 0 (``gamma > 1`` grows without
            bound).
        scale_fn: Custom amplitude scale of one argument; overrides ``mode``. It is traced under
            ``jax.jit``, so write it with operators or ``jax.numpy``, not ``math``.
        scale_mode: What ``scale_fn`` receives: ``'cycle'`` (the cycle number, from 1) or
            ``'iterations'`` (the step).

    Returns:
        An ``optax.Schedule``: a function of an integer step (a Python int or an integer array,
        concrete or traced) returning the learning rate as a JAX array.

    Raises:
        TypeError: For an argument of the wrong type (e.g. a float step size, a non-callable
            ``scale_fn``, a list of learning rates: use :class:`flax_cyclic.CyclicLR` for
            parameter groups).
        ValueError: For an out-of-range value (non-positive step size, negative or non-finite
            learning rate, ``gamma <= 0``, unknown ``mode`` or ``scale_mode``).

    Examples:
        >>> import jax, optax
        >>> from flax_cyclic import cyclic_schedule
        >>> schedule = cyclic_schedule(base_lr=1.0, max_lr=5.0, step_size_up=4)
        >>> [float(schedule(t)) for t in range(10)]
        [1.0, 2.0, 3.0, 4.0, 5.0, 4.0, 3.0, 2.0, 1.0, 2.0]
        >>> float(jax.jit(schedule)(6))
        3.0
        >>> optimizer = optax.sgd(learning_rate=schedule, momentum=0.9)
    """
    owner = "cyclic_schedule"
    bounds = {}
    for name, value in (("base_lr", base_lr), ("max_lr", max_lr)):
        if isinstance(value, (list, tuple)):
            raise TypeError(
                f"{owner}: `{name}` must be a single number, got {name}={value!r}. For "
                "parameter groups use flax_cyclic.CyclicLR, whose as_schedule(group) gives one "
                "schedule per group."
            )
        bounds[name] = _checks.real(owner, name, value, hint=_LR_HINT)
    policy = CyclePolicy.create(
        owner, step_size_up, step_size_down, mode, gamma, scale_fn, scale_mode
    )
    return make_schedule(policy, bounds["base_lr"], bounds["max_lr"], owner)


_LR_HINT = "Learning rates are finite numbers >= 0, e.g. 1e-3."
