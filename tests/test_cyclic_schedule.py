"""The pure schedule: large-step exactness, extreme cycles, optax integration, step checks."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import assert_close_to_exact, count_compilations, exact_lr, host_lrs, jit_values

from flax_cyclic import CyclicLR, cyclic_schedule

MAX_STEP = 2**31 - 1


def _large_steps(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate(
        [
            rng.integers(0, MAX_STEP, 3000),
            2**24 + np.arange(-64, 64),  # where a float32 t / total loses integer resolution
            MAX_STEP - np.arange(64),
        ]
    )


@pytest.mark.parametrize(
    ("base", "high", "up", "down", "mode"),
    [
        (1e-3, 6e-3, 2000, 2000, "triangular"),
        (1e-4, 1e-3, 7, 13, "triangular"),
        (0.1, 0.0, 1_234_567, 7_654_321, "triangular"),  # inverted bounds, long cycles
        (0.02, 0.8, 2**24 - 1, 2**24, "triangular"),  # the longest cycle float32 holds exactly
        (0.0, 1.0, 3, 5, "triangular2"),
        (1e-4, 0.1, 1000, 3000, "triangular2"),
    ],
)
def test_jit_float32_is_exact_to_rounding_up_to_int32_max(base, high, up, down, mode):
    steps = _large_steps(seed=up)
    got = jit_values(cyclic_schedule(base, high, up, down, mode=mode), steps)
    exact = [exact_lr(int(t), base, high, up, down, mode) for t in steps]
    # Within two float32 ulps of the larger bound of the exact rational value: half an ulp
    # from rounding each bound to float32, and at most one from the arithmetic.
    assert_close_to_exact(got, exact, bound=max(base, high), ulps=2)


def test_a_naive_float32_phase_would_fail_the_same_check():
    # The check above has teeth: PyTorch's formula evaluated in float32 is thousands of ulps off.
    base, high, up, down = 1e-3, 6e-3, 2000, 2000
    steps = _large_steps(seed=0)
    t, total, ratio = np.float32(steps), np.float32(up + down), np.float32(up / (up + down))
    cycle = np.floor(np.float32(1) + t / total)
    x = np.float32(1) + t / total - cycle
    factor = np.where(x <= ratio, x / ratio, (x - 1) / (ratio - 1))
    naive = np.float32(base) + np.float32(high - base) * factor
    exact = [exact_lr(int(step), base, high, up, down) for step in steps]
    with pytest.raises(AssertionError, match="worst error"):
        assert_close_to_exact(naive, exact, bound=high, ulps=1000)


def test_host_float64_is_exact_at_huge_steps():
    scheduler = CyclicLR(1e-3, 6e-3, step_size_up=2000, step_size_down=3000)
    for step in (2**40 + 1234, 10**15 + 2500, 2**62 - 1):
        scheduler.step(epoch=step)
        exact = exact_lr(step, 1e-3, 6e-3, 2000, 3000)
        assert math.isclose(scheduler.get_last_lr()[0], float(exact), rel_tol=2**-51)


def test_triangular2_is_finite_and_correct_after_a_million_cycles():
    up, total = 3, 6
    step = 10**6 * total + up  # the peak of cycle 1_000_001
    scheduler = CyclicLR(0.1, 0.9, step_size_up=up, mode="triangular2", last_epoch=step)
    # The amplitude 0.8 * 2**-1_000_000 underflows: the value is base_lr exactly, not inf or nan.
    assert scheduler.get_last_lr() == [0.1]
    schedule = cyclic_schedule(0.1, 0.9, step_size_up=up, mode="triangular2")
    assert float(jax.jit(schedule)(step)) == np.float32(0.1)
    # Far into the run, but before underflow, the halving is still exact.
    scheduler.step(epoch=59 * total + up)  # the peak of cycle 60
    assert scheduler.get_last_lr() == [0.1 + 0.8 * 2.0**-59]
    np.testing.assert_array_max_ulp(
        jit_values(schedule, [59 * total + up, 20 * total + up]),
        np.float32([0.1 + 0.8 * 2.0**-59, 0.1 + 0.8 * 2.0**-20]),
        maxulp=1,
    )


def test_exp_range_underflow_gives_base_lr_never_nan():
    gamma = 0.5
    scheduler = CyclicLR(0.25, 1.0, step_size_up=5, mode="exp_range", gamma=gamma)
    schedule = cyclic_schedule(0.25, 1.0, step_size_up=5, mode="exp_range", gamma=gamma)
    steps = [3000, 3003, 10**6 + 5, MAX_STEP]
    for step in steps:
        scheduler.step(epoch=step)
        assert scheduler.get_last_lr() == [0.25]
    assert list(jit_values(schedule, steps)) == [np.float32(0.25)] * len(steps)


def test_exp_range_with_gamma_above_one_never_gives_nan():
    # gamma > 1 grows the amplitude without bound (PyTorch allows it); once gamma**t overflows
    # the troughs are still base_lr and the rest is +inf, never nan.
    scheduler = CyclicLR(0.5, 1.0, step_size_up=5, mode="exp_range", gamma=1.5)
    schedule = cyclic_schedule(0.5, 1.0, step_size_up=5, mode="exp_range", gamma=1.5)
    trough, peak = 10**6, 10**6 + 5
    scheduler.step(epoch=trough)
    assert scheduler.get_last_lr() == [0.5]
    scheduler.step(epoch=peak)
    assert scheduler.get_last_lr() == [math.inf]
    assert list(jit_values(schedule, [trough, peak])) == [np.float32(0.5), np.float32(np.inf)]


def test_exp_range_near_one_gamma_keeps_float32_accuracy():
    # gamma rounded to float32 would be off by 2e-8, i.e. 3e-4 relative in log(gamma).
    gamma, base, high = 0.99994, 1e-4, 1e-2
    schedule = cyclic_schedule(base, high, step_size_up=500, mode="exp_range", gamma=gamma)
    steps = np.array([500, 1500, 10_500, 30_500, 100_500])
    expected = [base + (high - base) * gamma ** int(t) for t in steps]  # all at peaks
    np.testing.assert_allclose(jit_values(schedule, steps), expected, rtol=3e-7)


def test_custom_scale_fn_under_jit_matches_host():
    def scale_fn(x):
        return 1 / (1 + 0.0005 * x)

    for scale_mode in ("cycle", "iterations"):
        kwargs = dict(step_size_up=7, step_size_down=3, scale_fn=scale_fn, scale_mode=scale_mode)
        host = [lr[0] for lr in host_lrs(CyclicLR(0.01, 0.1, **kwargs), 60)]
        jitted = jit_values(cyclic_schedule(0.01, 0.1, **kwargs), np.arange(60))
        np.testing.assert_allclose(jitted, host, rtol=2e-7)


def test_vmap_over_steps_matches_per_step_calls():
    schedule = cyclic_schedule(0.1, 0.5, step_size_up=3, step_size_down=5, mode="triangular2")
    steps = jnp.arange(40)
    batched = np.asarray(jax.vmap(schedule)(steps))
    single = np.array([np.asarray(schedule(int(t))) for t in steps])
    np.testing.assert_array_equal(batched, single)


def test_one_compilation_serves_every_step():
    schedule = cyclic_schedule(0.1, 0.5, step_size_up=3, mode="exp_range", gamma=0.9)
    jitted = jax.jit(schedule)
    with count_compilations() as first:
        schedule(0)
        jitted(jnp.int32(0))
    with count_compilations() as later:
        for step in range(1, 50):
            schedule(step)
            jitted(jnp.int32(step))
    assert first
    assert not later


def test_scheduler_calls_compile_once():
    scheduler = CyclicLR([0.1, 0.2], 0.5, step_size_up=3, cycle_momentum=True)
    assert scheduler.as_schedule(1) is scheduler.as_schedule(1)
    assert scheduler.as_momentum_schedule(0) is scheduler.as_momentum_schedule(0)
    with count_compilations() as first:
        scheduler(0)
    with count_compilations() as later:
        for step in range(1, 30):
            scheduler(step)
    assert first
    assert not later


@pytest.mark.parametrize("dtype", [jnp.uint8, jnp.uint32, jnp.int16, jnp.int32])
def test_any_integer_dtype_is_a_step(dtype):
    # nnx.Optimizer counts updates in uint32; an unsigned cycle index must not wrap around.
    schedule = cyclic_schedule(1.0, 5.0, step_size_up=4, mode="triangular2")
    steps = jnp.arange(22, dtype=dtype)
    expected = [1, 2, 3, 4, 5, 4, 3, 2, 1, 1.5, 2, 2.5, 3, 2.5, 2, 1.5, 1, 1.25, 1.5, 1.75, 2, 1.75]
    np.testing.assert_array_max_ulp(np.asarray(jax.vmap(schedule)(steps)), np.float32(expected))


def test_drives_optax_sgd_with_the_exact_learning_rate_each_update():
    base, high = 0.1, 0.5
    schedule = cyclic_schedule(base, high, step_size_up=3, step_size_down=5)
    tx = optax.sgd(learning_rate=schedule)
    params = jnp.zeros(())
    state = tx.init(params)

    @jax.jit
    def update(state):
        updates, state = tx.update(jnp.ones(()), state, params)
        return updates, state

    for step in range(20):
        updates, state = update(state)
        # SGD's update is -lr * grad with grad == 1.
        assert float(-updates) == float(schedule(step))


def test_inject_hyperparams_exposes_the_scheduled_learning_rate():
    scheduler = CyclicLR(0.1, 0.5, step_size_up=4)
    tx = optax.inject_hyperparams(optax.adam)(learning_rate=scheduler)
    params = {"w": jnp.zeros(3)}
    state = tx.init(params)
    step = jax.jit(lambda state: tx.update({"w": jnp.ones(3)}, state, params)[1])
    seen = []
    for _ in range(9):
        state = step(state)
        seen.append(float(state.hyperparams["learning_rate"]))
    # inject_hyperparams evaluates the schedule at the count before each update.
    np.testing.assert_allclose(seen, [0.1, 0.2, 0.3, 0.4, 0.5, 0.4, 0.3, 0.2, 0.1], rtol=1e-6)


def test_step_must_be_an_integer():
    schedule = cyclic_schedule(0.1, 0.5, step_size_up=3)
    with pytest.raises(TypeError, match=r"step must be an integer.*float32"):
        schedule(jnp.float32(3.0))
    with pytest.raises(TypeError, match="step must be an integer"):
        jax.jit(schedule)(2.5)


@pytest.mark.parametrize("step", [-1, -(2**40)])
def test_negative_step_is_an_error(step):
    with pytest.raises(ValueError, match=rf"step={step}"):
        cyclic_schedule(0.1, 0.5, step_size_up=3)(step)


@pytest.mark.parametrize("step", [2**31, np.int64(2**40)])
def test_step_beyond_int32_asks_for_x64(step):
    # jnp.asarray would silently wrap these to negative int32 values.
    with pytest.raises(ValueError, match="jax_enable_x64"):
        cyclic_schedule(0.1, 0.5, step_size_up=3)(step)


def test_parameter_group_lists_point_to_cyclic_lr():
    with pytest.raises(TypeError, match=r"base_lr.*\[0\.1, 0\.2\].*CyclicLR.*as_schedule"):
        cyclic_schedule([0.1, 0.2], 0.5)
