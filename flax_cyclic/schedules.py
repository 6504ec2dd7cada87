"""Pure, jit-safe optax schedules: a function of the step, for any optax optimizer.

The formulas live in ``flax_cyclic._policies``, shared with the stateful schedulers of
``flax_cyclic.schedulers``: both give PyTorch's numbers, here through ``jax.numpy`` (float32
under jit, exact phases from integer arithmetic).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optax

from flax_cyclic import _checks
from flax_cyclic._math import make_schedule
from flax_cyclic._policies import (
    LR_HINT,
    CosinePolicy,
    CyclePolicy,
    LinearRamp,
    OneCyclePolicy,
    RestartPolicy,
    triangular_policy,
)

__all__ = [
    "cosine_annealing_schedule",
    "cosine_warm_restarts_schedule",
    "cyclic_schedule",
    "linear_schedule",
    "onecycle_schedule",
    "triangular_schedule",
]


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

    The value at step ``t`` is PyTorch's ``CyclicLR`` formula. With ``up = step_size_up``,
    ``down = step_size_down`` and ``T = up + down``, the cycle index ``c = t // T`` and the
    position within the cycle ``p = t % T`` are exact integers; then

    ```text
    f    = p / up              if p <= up
           (T - p) / down      otherwise

    lr_t = base_lr + (max_lr - base_lr) * f * s
    ```

    where the amplitude scale ``s`` is 1 (``'triangular'``), ``2**-c``
    (``'triangular2'``: halves every cycle), ``gamma**t`` (``'exp_range'``), or
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
            ``scale_fn``, a list of learning rates: use [`CyclicLR`][flax_cyclic.CyclicLR]
            for parameter groups).
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
    low, high = _single_lrs(owner, "CyclicLR", base_lr=base_lr, max_lr=max_lr)
    policy = CyclePolicy.create(
        owner, step_size_up, step_size_down, mode, gamma, scale_fn, scale_mode
    )
    return make_schedule(policy, (low, high), owner)


def triangular_schedule(base_lr: float, max_lr: float, step_size: int = 2000) -> optax.Schedule:
    r"""The basic triangular cycle (Smith, 2017) as a pure, jit-safe optax schedule.

    The learning rate rises linearly from ``base_lr`` to ``max_lr`` over ``step_size`` steps and
    falls back over as many, forever: with ``s = step_size``, Smith's

    ```text
    c    = floor(1 + t / (2 * s))
    x    = |t / s - 2 * c + 1|
    lr_t = base_lr + (max_lr - base_lr) * max(0, 1 - x)
    ```

    with exact integer phase arithmetic. It is [`cyclic_schedule`][flax_cyclic.cyclic_schedule]
    with ``mode='triangular'`` and ``step_size_up = step_size_down = step_size``.

    Args:
        base_lr: The learning rate at the troughs (step 0, ``2 * step_size``, ...); >= 0.
        max_lr: The learning rate at the peaks (step ``step_size``, ``3 * step_size``, ...).
        step_size: Steps in each half of a cycle; a positive integer.

    Returns:
        An ``optax.Schedule`` of the integer step.

    Raises:
        TypeError, ValueError: For invalid arguments, naming the argument.

    Examples:
        >>> from flax_cyclic import triangular_schedule
        >>> schedule = triangular_schedule(base_lr=0.1, max_lr=0.5, step_size=2)
        >>> [round(float(schedule(t)), 6) for t in range(6)]
        [0.1, 0.3, 0.5, 0.3, 0.1, 0.3]
    """
    owner = "triangular_schedule"
    low, high = _single_lrs(owner, "TriangularLR", base_lr=base_lr, max_lr=max_lr)
    return make_schedule(triangular_policy(owner, step_size), (low, high), owner)


def onecycle_schedule(
    max_lr: float,
    total_steps: int,
    pct_start: float = 0.3,
    anneal_strategy: str = "cos",
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    three_phase: bool = False,
) -> optax.Schedule:
    r"""The 1cycle policy (Smith & Topin, 2017) as a pure, jit-safe optax schedule.

    PyTorch's ``OneCycleLR`` numbers. The learning rate rises from
    ``initial = max_lr / div_factor`` to ``max_lr`` until step ``pct_start * total_steps - 1``,
    then falls to ``initial / final_div_factor`` at step ``total_steps - 1``. With
    ``three_phase=True`` it falls back to ``initial`` symmetrically first (until step
    ``2 * pct_start * total_steps - 2``) and then to the minimum. Each phase anneals from its
    start value ``a`` to its end value ``b`` over the fraction ``f`` of the phase as
    ``b + (a - b) * (1 + cos(pi * f)) / 2`` (``'cos'``) or ``a + (b - a) * f`` (``'linear'``).

    From step ``total_steps - 1`` on, the value stays at the minimum (a jitted schedule cannot
    raise); the stateful [`OneCycleLR`][flax_cyclic.OneCycleLR] refuses to step past the end.

    Float32 values are within four float32 ulps of the largest learning rate of the exact
    value: the phase comes from integer arithmetic and the cosine is evaluated at angles of at
    most ``pi / 4``.

    Args:
        max_lr: The peak learning rate; >= 0.
        total_steps: The number of optimizer updates in the run; a positive integer.
        pct_start: Fraction of the steps spent rising, in [0, 1) (at most 0.5 with
            ``three_phase``). 1 is refused: the rise would take every step and leave none to
            anneal. Any value below 1 reaches the minimum at step ``total_steps - 1``; when
            ``pct_start * total_steps >= total_steps - 1`` the fall takes that single step
            and the rise may stop short of ``max_lr``, with PyTorch's numbers.
        anneal_strategy: ``'cos'`` or ``'linear'``.
        div_factor: ``max_lr / div_factor`` is the initial learning rate; > 0.
        final_div_factor: ``initial / final_div_factor`` is the final learning rate; > 0.
        three_phase: Whether to fall back to the initial learning rate before the final phase.

    Returns:
        An ``optax.Schedule`` of the integer step.

    Raises:
        TypeError: For an argument of the wrong type (a float ``total_steps``, a string
            learning rate, a non-bool ``three_phase``, ...), naming the argument.
        ValueError: For an out-of-range argument, naming the argument and the fix; among
            them ``pct_start >= 1`` (at 1 no step is left to anneal; PyTorch divides by
            zero there) and ``pct_start > 0.5`` with ``three_phase=True``.

    Examples:
        >>> from flax_cyclic import onecycle_schedule
        >>> schedule = onecycle_schedule(25.0, total_steps=10, anneal_strategy="linear",
        ...                              final_div_factor=2.0)
        >>> [round(float(schedule(t)), 4) for t in range(10)]
        [1.0, 13.0, 25.0, 21.5, 18.0, 14.5, 11.0, 7.5, 4.0, 0.5]
    """
    owner = "onecycle_schedule"
    (peak,) = _single_lrs(owner, "OneCycleLR", max_lr=max_lr)
    policy = OneCyclePolicy.create(
        owner, total_steps, None, None, pct_start, anneal_strategy, three_phase
    )
    divisors = OneCyclePolicy.check_divisors(owner, div_factor, final_div_factor)
    return make_schedule(policy, policy.lr_bounds(peak, *divisors), owner)


def cosine_annealing_schedule(base_lr: float, T_max: int, eta_min: float = 0.0) -> optax.Schedule:
    r"""Cosine annealing (Loshchilov & Hutter, 2017) as a pure, jit-safe optax schedule.

    PyTorch's ``CosineAnnealingLR`` in closed form:

    ```text
    lr_t = eta_min + (base_lr - eta_min) * (1 + cos(pi * t / T_max)) / 2
    ```

    with ``t`` taken modulo ``2 * T_max`` in integers. Past ``T_max`` the value rises
    again, as PyTorch's does; stop at ``T_max`` or use warm restarts for a sawtooth.

    Float32 values are within four float32 ulps of the largest learning rate of the exact
    value: the phase comes from integer arithmetic and the cosine is evaluated at angles of at
    most ``pi / 4``.

    Args:
        base_lr: The learning rate at step 0; >= 0.
        T_max: Steps from ``base_lr`` down to ``eta_min``; a positive integer.
        eta_min: The learning rate at step ``T_max``; >= 0.

    Returns:
        An ``optax.Schedule`` of the integer step.

    Raises:
        TypeError, ValueError: For invalid arguments, naming the argument.

    Examples:
        >>> from flax_cyclic import cosine_annealing_schedule
        >>> schedule = cosine_annealing_schedule(base_lr=1.0, T_max=4)
        >>> [round(float(schedule(t)), 4) for t in range(6)]
        [1.0, 0.8536, 0.5, 0.1464, 0.0, 0.1464]
    """
    owner = "cosine_annealing_schedule"
    low, high = _single_lrs(owner, "CosineAnnealingLR", eta_min=eta_min, base_lr=base_lr)
    return make_schedule(CosinePolicy.create(owner, T_max), (low, high), owner)


def cosine_warm_restarts_schedule(
    base_lr: float,
    T_0: int,
    T_mult: int = 1,
    eta_min: float = 0.0,
    *,
    decay: float = 1.0,
    warmup_steps: int = 0,
    warmup: str = "first",
) -> optax.Schedule:
    r"""Cosine annealing with warm restarts (SGDR) as a pure, jit-safe optax schedule.

    PyTorch's ``CosineAnnealingWarmRestarts``: cycle ``i`` (from 0) lasts
    ``T_i = T_0 * T_mult**i`` steps, and at position ``p`` within it

    ```text
    lr = eta_min + (base_lr - eta_min) * d**i * (1 + cos(pi * (p - w) / (T_i - w))) / 2
    ```

    where ``d`` is ``decay`` (1 in PyTorch) and ``w`` the warm-up steps of this cycle
    (0 in PyTorch). During a warm-up (``p < w``) the factor after ``d**i`` is the
    linear ramp ``p / w`` instead. The cycle index comes from exact integer arithmetic.

    Float32 values are within four float32 ulps of the largest learning rate of the exact
    value: the phase comes from integer arithmetic and the cosine is evaluated at angles of at
    most ``pi / 4``.

    Args:
        base_lr: The peak learning rate of the first cycle; >= 0.
        T_0: Length of the first cycle in steps; a positive integer.
        T_mult: Each cycle is ``T_mult`` times longer than the one before; an integer >= 1.
        eta_min: The lowest learning rate; >= 0.
        decay: Each restart multiplies the peak's height above ``eta_min`` by ``decay``, in
            (0, 1] (PyTorch issue #62640).
        warmup_steps: Steps of linear warm-up from ``eta_min`` to the peak at the start of a
            cycle; 0 (default) for none; smaller than ``T_0`` (PyTorch issue #80308).
        warmup: ``'first'``: warm up in the first cycle only; ``'every'``: in every cycle.

    Returns:
        An ``optax.Schedule`` of the integer step.

    Raises:
        TypeError, ValueError: For invalid arguments, naming the argument.

    Examples:
        >>> from flax_cyclic import cosine_warm_restarts_schedule
        >>> schedule = cosine_warm_restarts_schedule(1.0, T_0=2, T_mult=2, decay=0.5)
        >>> [round(float(schedule(t)), 4) for t in range(8)]
        [1.0, 0.5, 0.5, 0.4268, 0.25, 0.0732, 0.25, 0.2405]
    """
    owner = "cosine_warm_restarts_schedule"
    low, high = _single_lrs(owner, "CosineAnnealingWarmRestarts", eta_min=eta_min, base_lr=base_lr)
    policy = RestartPolicy.create(owner, T_0, T_mult, decay, warmup_steps, warmup)
    return make_schedule(policy, (low, high), owner)


def linear_schedule(
    base_lr: float,
    start_factor: float = 1.0 / 3,
    end_factor: float = 1.0,
    total_iters: int = 5,
) -> optax.Schedule:
    r"""A linear warm-up (or decay) factor as a pure, jit-safe optax schedule.

    PyTorch's ``LinearLR`` in closed form: ``base_lr`` times a factor that moves linearly from
    ``start_factor`` at step 0 to ``end_factor`` at step ``total_iters``, then holds:

    ```text
    f    = min(t, total_iters) / total_iters
    lr_t = base_lr * (start_factor + (end_factor - start_factor) * f)
    ```

    It is the schedule of [`LinearLR`][flax_cyclic.LinearLR] (one formula for both); unlike
    ``optax.linear_schedule`` it takes PyTorch's arguments, factors of ``base_lr``. Chain it
    before another schedule with ``optax.join_schedules``, or use
    [`SequentialLR`][flax_cyclic.SequentialLR].

    Args:
        base_lr: The learning rate the factors multiply; >= 0.
        start_factor: The factor at step 0, in (0, 1].
        end_factor: The factor from step ``total_iters`` on, in [0, 1].
        total_iters: Steps from ``start_factor`` to ``end_factor``; a positive integer.

    Returns:
        An ``optax.Schedule`` of the integer step.

    Raises:
        TypeError, ValueError: For invalid arguments, naming the argument.

    Examples:
        >>> import jax
        >>> from flax_cyclic import linear_schedule
        >>> schedule = linear_schedule(base_lr=1.0, start_factor=0.2, total_iters=4)
        >>> [round(float(schedule(t)), 6) for t in range(6)]
        [0.2, 0.4, 0.6, 0.8, 1.0, 1.0]
        >>> round(float(jax.jit(schedule)(1)), 6)
        0.4
    """
    owner = "linear_schedule"
    (base,) = _single_lrs(owner, "LinearLR", base_lr=base_lr)
    ramp = LinearRamp.create(owner, start_factor, end_factor, total_iters)
    return make_schedule(ramp.policy, ramp.bounds(base), owner)


def _single_lrs(owner: str, scheduler: str, **values: Any) -> tuple[float, ...]:
    """Checks the learning rates of a pure schedule: single numbers, finite and >= 0."""
    checked = []
    for name, value in values.items():
        if isinstance(value, (list, tuple)):
            raise TypeError(
                f"{owner}: `{name}` must be a single number, got {name}={value!r}. For "
                f"parameter groups use flax_cyclic.{scheduler}, whose as_schedule(group) gives "
                "one schedule per group."
            )
        checked.append(_checks.real(owner, name, value, hint=LR_HINT))
    return tuple(checked)
