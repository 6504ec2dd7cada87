"""Pure, jit-safe learning-rate schedules: functions ``step -> value`` usable as ``optax.Schedule``.

This module is the one place the schedule math lives. Each formula is a small frozen *policy*
written once over the arithmetic namespaces of ``flax_cyclic._math``: the stateful schedulers
in ``flax_cyclic.schedulers`` evaluate it with Python numbers (float64) on the host, the
schedules below with ``jax.numpy`` (eagerly, or traced under ``jax.jit`` / ``jax.vmap``). A
policy's ``progress(step, xp)`` is shared by all parameter groups; ``value(progress, bounds, xp)``
gives one group's value from its bounds. Phases come from integer arithmetic on the step, so
they are exact at any step.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable
from typing import Any

import optax

from flax_cyclic import _checks
from flax_cyclic._math import Math, interpolate, make_schedule

__all__ = [
    "cosine_annealing_schedule",
    "cosine_warm_restarts_schedule",
    "cyclic_schedule",
    "onecycle_schedule",
    "triangular_schedule",
]

MODES = ("triangular", "triangular2", "exp_range")
SCALE_MODES = ("cycle", "iterations")
ANNEAL_STRATEGIES = ("cos", "linear")
WARMUP_MODES = ("first", "every")

#: Longest cosine half-period: the phase is taken modulo ``2 * T_max`` in int32.
MAX_T_MAX = _checks.MAX_STEP // 2


@dataclasses.dataclass(frozen=True)
class CyclePolicy:
    """The shape of a cyclic schedule, independent of the learning-rate bounds.

    Built with ``create()``, which validates every argument.
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
        up, down = _step_sizes(owner, step_size_up, step_size_down)
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

    def progress(self, step: Any, xp: Math) -> Any:
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

    def value(self, progress: Any, bounds: tuple[float, ...], xp: Math) -> Any:
        """The value for ``bounds = (low, high)``: ``low`` at troughs, ``high`` at full peaks."""
        return interpolate(bounds[0], bounds[1], progress, xp)

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


def _step_sizes(owner: str, step_size_up: Any, step_size_down: Any) -> tuple[int, int]:
    """The checked rising and falling lengths of a cycle; ``None`` falls as long as it rises."""
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
    return up, down


@dataclasses.dataclass(frozen=True)
class RampPolicy:
    """The ramp of an LR range test: from ``start`` to ``end`` over ``num_steps`` steps.

    ``'exponential'`` multiplies the learning rate by the same factor every step (even steps in
    log-LR); ``'linear'`` adds the same amount. From step ``num_steps - 1`` on it stays at
    ``end``.
    """

    num_steps: int
    mode: str

    def progress(self, step: Any, xp: Math) -> Any:
        """Returns the fraction of the ramp done at ``step``, in [0, 1]."""
        return xp.minimum(step, self.num_steps - 1) / (self.num_steps - 1)

    def value(self, progress: Any, bounds: tuple[float, ...], xp: Math) -> Any:
        """The value for ``bounds = (start, end)``."""
        start, end = bounds
        if self.mode == "linear":
            return interpolate(start, end, progress, xp)
        return start * xp.power(end / start, progress)

    def config(self) -> dict[str, Any]:
        """JSON-serialisable description."""
        return {"num_steps": self.num_steps, "mode": self.mode}


def _cosine_weight(numerator: Any, denominator: Any, xp: Math) -> Any:
    """``(1 + cos(pi * n / d)) / 2`` for ``0 <= n <= d``: 1 at ``n = 0``, 0 at ``n = d``.

    Computed as ``cos(pi * n / (2 * d)) ** 2`` in the first half and
    ``sin(pi * (d - n) / (2 * d)) ** 2`` in the second (``d - n`` is exact), so the angle is at
    most ``pi / 4`` (its rounding costs little) and there is no cancellation in ``1 + cos``
    near the end: the weight is accurate relative to itself even where it is tiny.
    """
    rising = 2 * numerator <= denominator
    angle = xp.pi * xp.where(rising, numerator, denominator - numerator) / (2 * denominator)
    return xp.where(rising, xp.cos(angle) ** 2, xp.sin(angle) ** 2)


@dataclasses.dataclass(frozen=True)
class CosinePolicy:
    """PyTorch's ``CosineAnnealingLR`` in closed form: a cosine from ``high`` to ``low``.

    The weight is ``(1 + cos(pi * t / T_max)) / 2``, with ``t`` taken modulo ``2 * T_max``
    in integers: past ``T_max`` the value rises again, periodically, as PyTorch's does.
    """

    T_max: int

    @classmethod
    def create(cls, owner: str, T_max: Any) -> CosinePolicy:
        """Validates the arguments of ``owner``."""
        return cls(
            _checks.integer(
                owner,
                "T_max",
                T_max,
                minimum=1,
                maximum=MAX_T_MAX,
                hint="Pass the number of steps from base_lr down to eta_min, e.g. the run length.",
            )
        )

    def progress(self, step: Any, xp: Math) -> Any:
        """Returns the weight of ``high`` at ``step``: 1 at ``t = 0``, 0 at ``t = T_max``."""
        position = step % (2 * self.T_max)
        # cos is symmetric about T_max: fold the second half of the period onto the first.
        return _cosine_weight(xp.minimum(position, 2 * self.T_max - position), self.T_max, xp)

    def value(self, progress: Any, bounds: tuple[float, ...], xp: Math) -> Any:
        """The value for ``bounds = (eta_min, base_lr)``."""
        return interpolate(bounds[0], bounds[1], progress, xp)

    def config(self) -> dict[str, Any]:
        """JSON-serialisable description, used to check a restored scheduler state."""
        return {"T_max": self.T_max}


@dataclasses.dataclass(frozen=True)
class RestartPolicy:
    """SGDR: cosine annealing with warm restarts (PyTorch's ``CosineAnnealingWarmRestarts``).

    Cycle ``i`` (from 0) lasts ``T_0 * T_mult**i`` steps. Beyond PyTorch, the amplitude of cycle
    ``i`` is scaled by ``decay**i``, and a cycle may open with a linear warm-up of
    ``warmup_steps`` steps from the low bound to its peak (the first cycle only, or every one);
    the cosine then spans the rest of the cycle, so the restarts stay where they are.
    """

    T_0: int
    T_mult: int
    decay: float
    warmup_steps: int
    warmup: str
    starts: tuple[int, ...] = dataclasses.field(init=False, repr=False)
    """The first step of each cycle, up to the first one past ``2**64``."""
    lengths: tuple[int, ...] = dataclasses.field(init=False, repr=False)
    """The length of each cycle in ``starts`` but the last."""

    def __post_init__(self) -> None:
        starts = [0]
        if self.T_mult > 1:
            length = self.T_0
            while starts[-1] <= 2**64:
                starts.append(starts[-1] + length)
                length *= self.T_mult
        object.__setattr__(self, "starts", tuple(starts))
        object.__setattr__(self, "lengths", tuple(b - a for a, b in itertools.pairwise(starts)))

    @classmethod
    def create(
        cls, owner: str, T_0: Any, T_mult: Any, decay: Any, warmup_steps: Any, warmup: Any
    ) -> RestartPolicy:
        """Validates the arguments of ``owner``."""
        first = _checks.integer(
            owner, "T_0", T_0, minimum=1, hint="Pass the length of the first cycle in steps."
        )
        mult = _checks.integer(
            owner,
            "T_mult",
            T_mult,
            minimum=1,
            hint="Each cycle is T_mult times longer than the one before; 1 keeps them equal.",
        )
        factor = _checks.real(
            owner,
            "decay",
            decay,
            positive=True,
            hint="Each restart multiplies the peak's height above eta_min by decay; "
            "use 0 < decay <= 1 (1: no decay).",
        )
        if factor > 1:
            raise ValueError(
                f"{owner}: `decay` must be in (0, 1], got decay={decay!r}. Each restart "
                "multiplies the peak's height above eta_min by decay; 1 means no decay."
            )
        warm = _checks.integer(
            owner,
            "warmup_steps",
            warmup_steps,
            minimum=0,
            hint="Pass the number of warm-up steps at the start of a cycle, or 0.",
        )
        if warm >= first:
            raise ValueError(
                f"{owner}: `warmup_steps` must be smaller than T_0, got warmup_steps={warm} "
                f"and T_0={first}: the warm-up is part of a cycle and the cosine needs at "
                "least one step after it."
            )
        return cls(first, mult, factor, warm, _checks.choice(owner, "warmup", warmup, WARMUP_MODES))

    def locate(self, step: Any, xp: Math) -> tuple[Any, Any, Any]:
        """Returns ``(cycle_index, position, cycle_length)`` at ``step``, in exact integers."""
        if self.T_mult == 1:
            index, position = divmod(step, self.T_0)
            return index, position, self.T_0
        index, start = xp.search(self.starts, step)
        return index, step - start, xp.take(self.lengths, index)

    def progress(self, step: Any, xp: Math) -> Any:
        """Returns the weight of the peak at ``step``: ``decay**cycle * shape``."""
        index, position, length = self.locate(step, xp)
        warmup = self.warmup_steps
        if warmup and self.warmup == "first":
            warmup = xp.where(index == 0, warmup, 0)
        shape = _cosine_weight(position - warmup, length - warmup, xp)
        if self.warmup_steps:
            shape = xp.where(position < warmup, position / self.warmup_steps, shape)
        if self.decay != 1:
            shape = shape * xp.power(self.decay, index)
        return shape

    def value(self, progress: Any, bounds: tuple[float, ...], xp: Math) -> Any:
        """The value for ``bounds = (eta_min, base_lr)``."""
        return interpolate(bounds[0], bounds[1], progress, xp)

    def config(self) -> dict[str, Any]:
        """JSON-serialisable description, used to check a restored scheduler state."""
        return {
            "T_0": self.T_0,
            "T_mult": self.T_mult,
            "decay": self.decay,
            "warmup_steps": self.warmup_steps,
            "warmup": self.warmup,
        }


@dataclasses.dataclass(frozen=True)
class OneCyclePolicy:
    """The 1cycle policy (PyTorch's ``OneCycleLR``): two or three annealing phases.

    Phase ``k`` runs from step ``ends[k-1]`` (0 for the first) to ``ends[k]``, with PyTorch's
    boundaries ``pct_start * total_steps - 1`` (and ``2 * pct_start * total_steps - 2`` for
    three phases) and ``total_steps - 1``. A group's bounds are the start and end value of each
    phase in turn. From the last step on, the value holds at the final end value.
    """

    total_steps: int
    pct_start: float
    anneal_strategy: str
    three_phase: bool
    ends: tuple[float, ...] = dataclasses.field(init=False, repr=False)
    phases: tuple[tuple[int, float, float], ...] = dataclasses.field(init=False, repr=False)
    """Per phase: its start's integer part, the rest of the start, and its length."""

    def __post_init__(self) -> None:
        first = float(self.pct_start * self.total_steps) - 1
        middle = (float(2 * self.pct_start * self.total_steps) - 2,) if self.three_phase else ()
        ends = (first, *middle, float(self.total_steps - 1))
        # The integer part of a start is subtracted from the step exactly, in integers: in
        # float32 a boundary like 1838.85 is only known to 1e-4, a large error in a short phase.
        phases = []
        for start, end in zip((0.0, *ends[:-1]), ends, strict=True):
            whole = math.floor(start)
            phases.append((whole, start - whole, end - start))
        object.__setattr__(self, "ends", ends)
        object.__setattr__(self, "phases", tuple(phases))

    @classmethod
    def create(
        cls,
        owner: str,
        total_steps: Any,
        epochs: Any,
        steps_per_epoch: Any,
        pct_start: Any,
        anneal_strategy: Any,
        three_phase: Any,
    ) -> OneCyclePolicy:
        """Validates the arguments of ``owner``; ``total_steps`` may come from the epochs."""
        total_steps = _one_cycle_length(owner, total_steps, epochs, steps_per_epoch)
        fraction = _checks.real(
            owner,
            "pct_start",
            pct_start,
            hint="pct_start is the fraction of the steps spent rising, in [0, 1), e.g. 0.3.",
        )
        if fraction > 1:
            raise ValueError(
                f"{owner}: `pct_start` must be in [0, 1), got pct_start={pct_start!r}. It is "
                "the fraction of the steps spent rising to max_lr, e.g. 0.3."
            )
        if fraction == 1:
            # The rise would end at step total_steps - 1 and the fall have no length: the value
            # would hold max_lr to the end. Any pct_start < 1 leaves the fall a positive length
            # (pct_start * total_steps < total_steps in floating point too), and it reaches the
            # final learning rate at step total_steps - 1, as in PyTorch.
            raise ValueError(
                f"{owner}: `pct_start` must be below 1, got pct_start={pct_start!r} "
                f"({type(pct_start).__name__}): the rise to max_lr would take every step, "
                "leaving none to anneal (PyTorch divides by zero there). Pass a value below 1, "
                "e.g. 0.3; for a pure rise, use a constant or linear warm-up schedule such as "
                "optax.linear_schedule."
            )
        if not isinstance(three_phase, bool):
            raise TypeError(
                f"{owner}: `three_phase` must be True or False, got three_phase={three_phase!r}."
            )
        if three_phase and fraction > 0.5:
            raise ValueError(
                f"{owner}: with three_phase=True, `pct_start` must be at most 0.5, got "
                f"pct_start={pct_start!r}: the rise and the symmetric fall take "
                "2 * pct_start of the steps, and the final phase the rest."
            )
        strategy = _checks.choice(owner, "anneal_strategy", anneal_strategy, ANNEAL_STRATEGIES)
        return cls(total_steps, fraction, strategy, three_phase)

    def progress(self, step: Any, xp: Math) -> tuple[Any, Any]:
        """Returns ``(phase_index, step)``, with the step held at ``total_steps - 1``."""
        step = xp.minimum(step, self.total_steps - 1)
        # The phase is the first whose end is >= step: count the ends before the step. For an
        # integer step, step > end is step > floor(end), compared exactly in integers: in
        # float32 an end like 11.999999999999998 (pct_start just below 1) would round to 12.
        return sum(xp.where(step > math.floor(end), 1, 0) for end in self.ends[:-1]), step

    def value(self, progress: tuple[Any, Any], bounds: tuple[float, ...], xp: Math) -> Any:
        """The value for ``bounds = (start_0, end_0, start_1, end_1, ...)``, one pair per phase."""
        index, step = progress
        return xp.switch(
            index, lambda phase: self._anneal(step, phase, bounds, xp), len(self.phases)
        )

    def _anneal(self, step: Any, phase: int, bounds: tuple[float, ...], xp: Math) -> Any:
        """Phase ``phase``: from its start value to its end value, linearly or as a cosine."""
        whole, offset, length = self.phases[phase]
        low, high = bounds[2 * phase], bounds[2 * phase + 1]
        if length <= 0:  # An empty phase (pct_start * total_steps == 1): only its end is seen.
            return xp.full_like(xp.to_float(step), high)
        if phase == len(self.phases) - 1 and length < 1:
            # The last phase ends at step total_steps - 1, and one shorter than a step holds no
            # other step (pct_start * total_steps > total_steps - 1): the fall takes that step
            # alone, as in PyTorch. Its fraction, 1, would be lost to float32 rounding of the
            # start in a phase this short.
            return xp.full_like(xp.to_float(step), high)
        fraction = (xp.to_float(step - whole) - offset) / length
        if self.anneal_strategy == "cos":  # PyTorch: high + (low - high) * (1 + cos(pi f)) / 2
            return interpolate(high, low, _cosine_weight(fraction, 1, xp), xp)
        return interpolate(low, high, fraction, xp)

    def config(self) -> dict[str, Any]:
        """JSON-serialisable description, used to check a restored scheduler state."""
        return {
            "total_steps": self.total_steps,
            "pct_start": self.pct_start,
            "anneal_strategy": self.anneal_strategy,
            "three_phase": self.three_phase,
        }

    @staticmethod
    def check_divisors(owner: str, div_factor: Any, final_div_factor: Any) -> tuple[float, float]:
        """Validates ``div_factor`` and ``final_div_factor`` of ``owner``: finite and > 0."""
        hint = "It divides a learning rate; use a finite number > 0, e.g. 25."
        return (
            _checks.real(owner, "div_factor", div_factor, positive=True, hint=hint),
            _checks.real(owner, "final_div_factor", final_div_factor, positive=True, hint=hint),
        )

    def lr_bounds(self, max_lr: float, div_factor: float, final_div_factor: float) -> tuple:
        """A group's learning-rate bounds per phase, from its ``max_lr`` (PyTorch's rule)."""
        initial = max_lr / div_factor
        final = initial / final_div_factor
        if self.three_phase:
            return (initial, max_lr, max_lr, initial, initial, final)
        return (initial, max_lr, max_lr, final)

    def momentum_bounds(self, base_momentum: float, max_momentum: float) -> tuple:
        """A group's momentum bounds per phase: down while the learning rate rises, then up."""
        if self.three_phase:
            return (max_momentum, base_momentum, base_momentum, max_momentum) + (max_momentum,) * 2
        return (max_momentum, base_momentum, base_momentum, max_momentum)


def _one_cycle_length(owner: str, total_steps: Any, epochs: Any, steps_per_epoch: Any) -> int:
    """``total_steps``, given as such or as ``epochs * steps_per_epoch``, checked."""
    hint = "Pass the number of optimizer updates in the run."
    if total_steps is not None and (epochs is not None or steps_per_epoch is not None):
        raise ValueError(
            f"{owner}: pass either total_steps or epochs and steps_per_epoch, not both; got "
            f"total_steps={total_steps!r}, epochs={epochs!r}, "
            f"steps_per_epoch={steps_per_epoch!r}."
        )
    if total_steps is None:
        if epochs is None or steps_per_epoch is None:
            raise ValueError(
                f"{owner}: the length of the schedule is missing: pass total_steps, or both "
                f"epochs and steps_per_epoch (total_steps = epochs * steps_per_epoch); got "
                f"epochs={epochs!r}, steps_per_epoch={steps_per_epoch!r}."
            )
        epochs = _checks.integer(owner, "epochs", epochs, minimum=1, hint=hint)
        per_epoch = _checks.integer(owner, "steps_per_epoch", steps_per_epoch, minimum=1, hint=hint)
        total_steps = _checks.integer(
            owner,
            "total_steps",
            epochs * per_epoch,
            minimum=1,
            hint=f"epochs * steps_per_epoch = {epochs} * {per_epoch} is too many steps.",
        )
    else:
        total_steps = _checks.integer(owner, "total_steps", total_steps, minimum=1, hint=hint)
    return total_steps


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


def triangular_policy(owner: str, step_size: Any) -> CyclePolicy:
    """The ``CyclePolicy`` of a symmetric triangular cycle, checking ``step_size``."""
    size = _checks.integer(
        owner,
        "step_size",
        step_size,
        minimum=1,
        maximum=_checks.MAX_STEP // 2,
        hint="Pass the number of steps in each half of a cycle, e.g. 2000.",
    )
    return CyclePolicy.create(owner, size, size, "triangular", 1.0, None, "cycle")


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


LR_HINT = "Learning rates are finite numbers >= 0, e.g. 1e-3."
