"""The pure schedules: traced and vmapped steps, one compilation, optax integration, step checks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import (
    COS_ULPS,
    count_compilations,
    float32_ulp,
    host_lrs,
    host_momentums,
    jit_values,
    raises_exactly,
)

from flax_cyclic import (
    CosineAnnealingLR,
    CyclicLR,
    LinearLR,
    OneCycleLR,
    SequentialLR,
    cosine_warm_restarts_schedule,
    cyclic_schedule,
    linear_schedule,
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


# -- linear_schedule, and SequentialLR.as_schedule() (optax.join_schedules of its phases) ---------


def test_linear_schedule_under_jit_matches_the_host():
    schedule = linear_schedule(0.02, start_factor=0.1, end_factor=0.7, total_iters=33)
    host = [lr[0] for lr in host_lrs(LinearLR(0.02, 0.1, 0.7, 33), 50)]
    jitted = jit_values(schedule, np.arange(50))
    np.testing.assert_allclose(jitted, host, rtol=0, atol=2 * float32_ulp(0.02 * 0.7))
    eager = np.array([schedule(t) for t in range(50)])
    np.testing.assert_array_equal(eager, jitted)
    assert float(jax.jit(schedule)(jnp.asarray(40, jnp.uint32))) == np.float32(0.02 * 0.7)
    with count_compilations() as later:
        for step in range(1, 20):
            schedule(step)
    assert not later


def test_linear_schedule_refuses_parameter_groups_and_bad_factors():
    with raises_exactly(
        TypeError,
        "linear_schedule: `base_lr` must be a single number, got base_lr=[0.1, 0.2]. For "
        "parameter groups use flax_cyclic.LinearLR, whose as_schedule(group) gives one schedule "
        "per group.",
    ):
        linear_schedule([0.1, 0.2])
    with raises_exactly(
        ValueError,
        "linear_schedule: `start_factor` must be in (0, 1], got start_factor=0.0. The learning "
        "rate at step 0 is base_lr * start_factor, e.g. 1/3 or 0.1.",
    ):
        linear_schedule(0.1, start_factor=0.0)


def test_linear_schedule_as_a_warm_up_in_optax():
    warmup = linear_schedule(0.1, start_factor=0.01, total_iters=10)
    schedule = optax.join_schedules([warmup, optax.cosine_decay_schedule(0.1, 90)], [10])
    values = jit_values(schedule, np.arange(12))
    np.testing.assert_allclose(values[[0, 5, 9, 10]], [0.001, 0.0505, 0.0901, 0.1], rtol=1e-6)


def _chain(**kwargs) -> SequentialLR:
    return SequentialLR(
        [
            LinearLR([0.3, 0.01], start_factor=0.02, total_iters=50),
            CyclicLR([0.01, 0.001], [0.3, 0.01], step_size_up=17, mode="triangular2"),
            CosineAnnealingLR([0.3, 0.01], T_max=40, eta_min=[0.001, 0.0]),
            OneCycleLR([0.3, 0.01], total_steps=120, anneal_strategy="linear", three_phase=True),
        ],
        milestones=[40, 150, 230],
        **kwargs,
    )


def test_sequential_as_schedule_under_jit_matches_the_host():
    steps = 230 + 120
    scheduler = _chain()
    host = np.array(host_lrs(_chain(), steps))
    for group, bound in enumerate([0.3, 0.01]):
        jitted = jit_values(scheduler.as_schedule(group), np.arange(steps))
        np.testing.assert_allclose(
            jitted, host[:, group], rtol=0, atol=COS_ULPS * float32_ulp(bound)
        )
    momentums = np.array(host_momentums(_chain(), steps))
    for group in range(2):
        jitted = jit_values(scheduler.as_momentum_schedule(group), np.arange(steps))
        np.testing.assert_allclose(
            jitted, momentums[:, group], rtol=0, atol=COS_ULPS * float32_ulp(0.95)
        )
    assert scheduler.total_steps == steps
    # Past the end the pure schedule holds the minimum, like onecycle_schedule.
    final = jit_values(scheduler.as_schedule(0), [steps - 1, steps + 5, 10**6])
    np.testing.assert_array_equal(final, np.float32(host[-1, 0]))


def test_sequential_schedule_compiles_once():
    scheduler = _chain()
    with count_compilations() as first:
        scheduler(0)
    with count_compilations() as later:
        for step in (1, 39, 40, 41, 149, 150, 300, 10**6):
            scheduler(step)
    assert first
    assert not later
