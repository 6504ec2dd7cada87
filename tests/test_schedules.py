"""The pure schedules: traced and vmapped steps, one compilation, optax integration, step checks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import (
    count_compilations,
    host_lrs,
    jit_values,
)

from flax_cyclic import (
    CyclicLR,
    cosine_warm_restarts_schedule,
    cyclic_schedule,
)


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


def test_pure_schedules_take_traced_and_unsigned_steps():
    schedule = cosine_warm_restarts_schedule(1.0, T_0=3, T_mult=2)
    step = jnp.asarray(7, jnp.uint32)
    assert jax.jit(schedule)(step) == schedule(7)
    with pytest.raises(TypeError, match="must be an integer"):
        schedule(jnp.asarray(1.0))
