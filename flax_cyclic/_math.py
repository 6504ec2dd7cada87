"""The arithmetic the schedule formulas are written over, and the plumbing around them.

Each formula in ``flax_cyclic.schedules`` is written once, over a tiny namespace: ``HOST``
evaluates it with Python ints and floats (float64) for the stateful schedulers, ``JAX`` with
``jax.numpy`` for the pure schedules (eagerly, or traced under ``jax.jit`` / ``jax.vmap``). Only
the handful of operations that Python and ``jax.numpy`` spell differently live here.
"""

from __future__ import annotations

import bisect
import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import optax


class _HostMath:
    """Python arithmetic (exact ints, float64), for the stateful schedulers."""

    pi = math.pi
    cos = staticmethod(math.cos)
    sin = staticmethod(math.sin)
    minimum = staticmethod(min)

    @staticmethod
    def where(condition: Any, if_true: Any, if_false: Any) -> Any:
        return if_true if condition else if_false

    @staticmethod
    def full_like(like: Any, value: float) -> float:
        return value

    @staticmethod
    def to_float(value: Any) -> float:
        return float(value)

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
    def switch(index: int, branch: Callable[[int], Any], count: int) -> Any:
        """``branch(index)``, for ``index`` in ``range(count)``: only that branch is evaluated."""
        return branch(index)

    @staticmethod
    def search(boundaries: Sequence[int], value: int) -> tuple[int, int]:
        """``(i, boundaries[i])`` for the last boundary with ``boundaries[i] <= value``."""
        index = bisect.bisect_right(boundaries, value) - 1
        return index, boundaries[index]

    @staticmethod
    def take(values: Sequence[Any], index: int) -> Any:
        return values[index]

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

    pi = math.pi
    cos = staticmethod(jnp.cos)
    sin = staticmethod(jnp.sin)
    minimum = staticmethod(jnp.minimum)
    full_like = staticmethod(jnp.full_like)

    @staticmethod
    def where(condition: Any, if_true: Any, if_false: Any) -> jax.Array:
        return jnp.where(condition, if_true, if_false)

    @staticmethod
    def to_float(value: jax.Array) -> jax.Array:
        return value.astype(jax.dtypes.canonicalize_dtype(jnp.float64))

    @staticmethod
    def half_power(k: jax.Array) -> jax.Array:
        return jnp.ldexp(1.0, -k)

    @staticmethod
    def power(base: float, exponent: jax.Array) -> jax.Array:
        # exp(t * log(base)) with log(base) taken in float64 on the host: the base rounded to
        # float32 first (as jnp.power would) loses ~1e-4 relative accuracy for a base near 1.
        return jnp.exp(exponent * math.log(base))

    @staticmethod
    def switch(index: jax.Array, branch: Callable[[int], Any], count: int) -> jax.Array:
        """Every ``branch(i)`` is evaluated (they are cheap), and the one at ``index`` returned."""
        values = [branch(i) for i in range(count)]
        return jnp.select([index == i for i in range(count)], values, values[-1])

    @staticmethod
    def search(boundaries: Sequence[int], value: jax.Array) -> tuple[jax.Array, jax.Array]:
        # In the step's integer dtype, so the boundary is exact (in float32 it would not be).
        limit = jnp.iinfo(value.dtype).max
        table = jnp.asarray([b for b in boundaries if b <= limit], value.dtype)
        index = jnp.searchsorted(table, value, side="right") - 1
        return index, table[index]

    @staticmethod
    def take(values: Sequence[Any], index: jax.Array) -> jax.Array:
        return jnp.asarray(values, jax.dtypes.canonicalize_dtype(jnp.float64))[index]

    @staticmethod
    def scale_fn_value(value: Any, scale_fn: Callable, argument: jax.Array) -> jax.Array:
        return jnp.asarray(value)


class Math(Protocol):
    """The arithmetic a formula computes with: ``HOST`` (exact Python) or ``JAX`` (traceable)."""

    pi: float

    def cos(self, x: Any, /) -> Any: ...
    def sin(self, x: Any, /) -> Any: ...
    def minimum(self, a: Any, b: Any, /) -> Any: ...
    def where(self, condition: Any, if_true: Any, if_false: Any, /) -> Any: ...
    def full_like(self, like: Any, value: float, /) -> Any: ...
    def to_float(self, value: Any, /) -> Any: ...
    def half_power(self, k: Any, /) -> Any: ...
    def power(self, base: float, exponent: Any, /) -> Any: ...
    def switch(self, index: Any, branch: Callable[[int], Any], count: int, /) -> Any: ...
    def search(self, boundaries: Sequence[int], value: Any, /) -> tuple[Any, Any]: ...
    def take(self, values: Sequence[Any], index: Any, /) -> Any: ...
    def scale_fn_value(self, value: Any, scale_fn: Callable, argument: Any, /) -> Any: ...


HOST: Math = _HostMath()
JAX: Math = _JaxMath()


class Policy(Protocol):
    """The shape of a schedule: what every formula in ``flax_cyclic.schedules`` provides.

    ``progress(step, xp)`` is the part shared by all parameter groups (computed once per step);
    ``value(progress, bounds, xp)`` turns it into one group's value, given that group's bounds.
    """

    def progress(self, step: Any, xp: Math) -> Any: ...

    def value(self, progress: Any, bounds: tuple[float, ...], xp: Math) -> Any: ...

    def config(self) -> dict[str, Any]: ...


def interpolate(low: float, high: float, weight: Any, xp: Math) -> Any:
    """PyTorch's ``low + (high - low) * weight``, rounded so that it stays in bounds.

    The value is computed from the nearer end: as ``low + (high - low) * w`` for ``w <= 1/2``
    and as ``high - (high - low) * (1 - w)`` above (``1 - w`` is exact there). The two agree
    mathematically; this form is ``high`` exactly at ``w = 1``, ``low`` exactly at ``w = 0``,
    and never leaves ``[low, high]`` for ``0 <= w <= 1`` through rounding (the one-sided form
    can overshoot ``high`` by an ulp, or give 0 for ``low=1, high=1e-300``). ``high < low``
    (a falling segment) is fine.
    """
    amplitude = high - low
    if amplitude == 0:  # A constant schedule, whatever the weight (even an overflowed one).
        return xp.full_like(weight, low)
    return xp.where(weight <= 0.5, low + amplitude * weight, high - amplitude * (1 - weight))


def step_array(owner: str, count: Any) -> jax.Array:
    """Converts a schedule's ``count`` to an integer array, rejecting values it cannot hold."""
    if isinstance(count, numbers.Integral) and not isinstance(count, bool):
        count = int(count)
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


def make_schedule(policy: Policy, bounds: tuple[float, ...], owner: str) -> optax.Schedule:
    """The jit-safe ``optax.Schedule`` of ``policy`` for one parameter group's ``bounds``."""

    # Compiled even when called eagerly: XLA rewrites float arithmetic (it folds constants into
    # ``position * ((high - low) / up)`` and fuses multiply-adds), so op-by-op evaluation would
    # round differently from the same schedule inside a jitted training step.
    @jax.jit
    def compiled(step: jax.Array) -> jax.Array:
        return policy.value(policy.progress(step, JAX), bounds, JAX)

    def schedule(count: Any) -> jax.Array:
        return compiled(step_array(owner, count))

    return schedule
