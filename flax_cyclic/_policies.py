"""The formulas of every schedule, as small frozen *policies* (the one place the math lives).

Each policy is written once over the arithmetic namespaces of ``flax_cyclic._math``: the stateful
schedulers evaluate it with Python numbers (float64) on the host, the pure schedules with
``jax.numpy`` (eagerly, or traced under ``jax.jit`` / ``jax.vmap``). A policy's
``progress(step, xp)`` is shared by all parameter groups; ``value(progress, bounds, xp)`` gives
one group's value from its bounds. Phases come from integer arithmetic on the step, so they
are exact at any step. ``create`` validates a policy's arguments for its owner.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable
from typing import Any

from flax_cyclic import _checks
from flax_cyclic._math import Math, interpolate

__all__ = [
    "ANNEAL_STRATEGIES",
    "LR_HINT",
    "MODES",
    "SCALE_MODES",
    "WARMUP_MODES",
    "CosinePolicy",
    "CyclePolicy",
    "LinearRamp",
    "OneCyclePolicy",
    "RampPolicy",
    "RestartPolicy",
    "in_unit_interval",
    "triangular_policy",
    "triangular_step_size",
]

LR_HINT = "Learning rates are finite numbers >= 0, e.g. 1e-3."
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


@dataclasses.dataclass(frozen=True)
class LinearRamp:
    """PyTorch's ``LinearLR``: ``base_lr`` times a factor that moves linearly, then holds.

    The factor goes from ``start_factor`` at step 0 to ``end_factor`` at step ``total_iters``
    and stays there. The formula is a linear ``RampPolicy`` over ``total_iters + 1`` steps
    between ``base_lr * start_factor`` and ``base_lr * end_factor``: the range test's ramp.
    """

    start_factor: float
    end_factor: float
    total_iters: int

    @classmethod
    def create(cls, owner: str, start_factor: Any, end_factor: Any, total_iters: Any) -> LinearRamp:
        """Validates the arguments of ``owner`` as PyTorch does, with this package's messages."""
        start = in_unit_interval(
            owner,
            "start_factor",
            start_factor,
            "(0, 1]",
            hint="The learning rate at step 0 is base_lr * start_factor, e.g. 1/3 or 0.1.",
        )
        end = in_unit_interval(
            owner,
            "end_factor",
            end_factor,
            "[0, 1]",
            hint="The learning rate from step total_iters on is base_lr * end_factor, e.g. 1.0.",
        )
        iters = _checks.integer(
            owner,
            "total_iters",
            total_iters,
            minimum=1,
            hint="Pass the number of steps from start_factor to end_factor, e.g. 5.",
        )
        return cls(start, end, iters)

    @property
    def policy(self) -> RampPolicy:
        """The linear ramp: ``end_factor`` is reached at step ``total_iters``."""
        return RampPolicy(self.total_iters + 1, "linear")

    def bounds(self, base_lr: float) -> tuple[float, float]:
        """A group's ramp bounds, from its ``base_lr``."""
        return (base_lr * self.start_factor, base_lr * self.end_factor)

    def config(self) -> dict[str, Any]:
        """JSON-serialisable description, used to check a restored scheduler state."""
        return {
            "start_factor": self.start_factor,
            "end_factor": self.end_factor,
            "total_iters": self.total_iters,
        }


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


def triangular_step_size(owner: str, step_size: Any) -> int:
    """The checked half-cycle of a symmetric triangular cycle."""
    return _checks.integer(
        owner,
        "step_size",
        step_size,
        minimum=1,
        maximum=_checks.MAX_STEP // 2,
        hint="Pass the number of steps in each half of a cycle, e.g. 2000.",
    )


def triangular_policy(owner: str, step_size: Any) -> CyclePolicy:
    """The ``CyclePolicy`` of a symmetric triangular cycle, checking ``step_size``."""
    size = triangular_step_size(owner, step_size)
    return CyclePolicy.create(owner, size, size, "triangular", 1.0, None, "cycle")


_UNIT_INTERVALS = {
    "(0, 1]": lambda x: 0 < x <= 1,
    "[0, 1]": lambda x: 0 <= x <= 1,
    "[0, 1)": lambda x: 0 <= x < 1,
}


def in_unit_interval(owner: str, name: str, value: Any, interval: str, *, hint: str) -> float:
    """Returns ``value`` as a float in ``interval`` (``'(0, 1]'``, ``'[0, 1]'`` or ``'[0, 1)'``).

    A value of the wrong type is a ``TypeError``; any number outside the interval (negative,
    infinite or NaN included) a ``ValueError`` that names the interval.
    """
    try:
        result = _checks.real(owner, name, value, hint=hint)
    except ValueError:  # negative or not finite: outside the interval as well
        result = math.nan
    if not _UNIT_INTERVALS[interval](result):
        raise ValueError(f"{owner}: `{name}` must be in {interval}, got {name}={value!r}. {hint}")
    return result
