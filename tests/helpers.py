"""Shared helpers: trajectories on both paths and an exact rational reference of the formula."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np


def host_lrs(scheduler, steps: int) -> list[list[float]]:
    """The per-group learning rates a training loop sees for `steps` updates."""
    return _before_each_step(scheduler, steps, scheduler.get_last_lr)


def host_momentums(scheduler, steps: int) -> list[list[float]]:
    """The per-group momentums a training loop sees for `steps` updates."""
    return _before_each_step(scheduler, steps, scheduler.get_last_momentum)


def _before_each_step(scheduler, steps: int, read) -> list:
    out = []
    for _ in range(steps):
        out.append(read())
        scheduler.step()
    return out


def jit_values(schedule, steps) -> np.ndarray:
    """Evaluates a pure schedule under jit + vmap with a traced integer step."""
    return np.asarray(jax.jit(jax.vmap(schedule))(jnp.asarray(steps, dtype=jnp.int32)))


def exact_lr(
    step: int,
    base: float,
    high: float,
    up: int,
    down: int,
    mode: str = "triangular",
) -> Fraction:
    """The formula in exact rational arithmetic (triangular and triangular2 only).

    Written the way the seed docs state it (x in [0, 1) of the cycle, rising for x <= ratio),
    not the way the library computes it, so the two are independent.
    """
    total = up + down
    cycle = 1 + Fraction(step, total).__floor__()
    x = 1 + Fraction(step, total) - cycle
    ratio = Fraction(up, total)
    factor = x / ratio if x <= ratio else (x - 1) / (ratio - 1)
    if mode == "triangular":
        scale = Fraction(1)
    else:
        # Past 1100 halvings the amplitude is below 2**-1100 of itself: under any float's
        # resolution next to base_lr, and 2**(cycle - 1) itself would be a huge integer.
        scale = Fraction(1, 2 ** (cycle - 1)) if cycle <= 1100 else Fraction(0)
    return Fraction(base) + (Fraction(high) - Fraction(base)) * factor * scale


def float32_ulp(value: float) -> float:
    return float(np.spacing(np.float32(abs(value))))


def assert_close_to_exact(got: np.ndarray, exact: list[Fraction], bound: float, ulps: float):
    """Asserts |got - exact| <= ulps * ulp_float32(bound) elementwise, reporting the worst."""
    errors = [abs(Fraction(float(g)) - e) for g, e in zip(got, exact, strict=True)]
    worst = max(errors)
    limit = Fraction(ulps * float32_ulp(bound))
    assert worst <= limit, f"worst error {float(worst):.3e} exceeds {float(limit):.3e}"


def isclose_lists(a, b, rel=4 * 2.0**-52) -> bool:
    return all(
        math.isclose(x, y, rel_tol=rel, abs_tol=1e-300)
        for row_a, row_b in zip(a, b, strict=True)
        for x, y in zip(row_a, row_b, strict=True)
    )


@contextlib.contextmanager
def count_compilations() -> Iterator[list[str]]:
    """Collects one entry per XLA backend compilation inside the block."""
    compiled: list[str] = []

    def listener(event: str, duration: float, **kwargs) -> None:
        if event == "/jax/core/compile/backend_compile_duration":
            compiled.append(event)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield compiled
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def tensorboard_series(logdir) -> dict[str, list[tuple[int, float | None]]]:
    """Every tag of the event files in `logdir`: (step, value) for scalars, (step, None) else."""
    from tensorboard.backend.event_processing import event_accumulator
    from tensorboard.util import tensor_util

    accumulator = event_accumulator.EventAccumulator(
        str(logdir), size_guidance={event_accumulator.TENSORS: 0}
    )
    accumulator.Reload()
    series = {}
    for tag in accumulator.Tags()["tensors"]:
        scalar = accumulator.SummaryMetadata(tag).plugin_data.plugin_name == "scalars"
        series[tag] = [
            (e.step, tensor_util.make_ndarray(e.tensor_proto).item() if scalar else None)
            for e in accumulator.Tensors(tag)
        ]
    return series


def tiny_mlp(seed: int = 0):
    """The small MLP (8 -> 32 -> 3) of the multi-device workers."""
    from flax import nnx

    class MLP(nnx.Module):
        def __init__(self, rngs: nnx.Rngs):
            self.hidden = nnx.Linear(8, 32, rngs=rngs)
            self.out = nnx.Linear(32, 3, rngs=rngs)

        def __call__(self, x):
            return self.out(jax.nn.relu(self.hidden(x)))

    return MLP(nnx.Rngs(seed))


def tiny_batches(batch_size: int = 32, count: int = 6) -> list[tuple[np.ndarray, np.ndarray]]:
    """Deterministic 3-class batches for `tiny_mlp`: the label is the bucket of the row sum."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(count, batch_size, 8)).astype(np.float32)
    return [(xb, np.digitize(xb.sum(1), [-1.5, 1.5]).astype(np.int32)) for xb in x]


@contextlib.contextmanager
def raises_exactly(error: type[BaseException], message: str) -> Iterator[None]:
    """Asserts that the block raises `error` with exactly `message` (the whole text)."""
    import pytest

    with pytest.raises(error) as raised:
        yield
    assert str(raised.value) == message
