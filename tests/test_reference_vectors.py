"""PyTorch's reference vectors (test_lrscheduler.py) on both paths: host scheduler and jit."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from helpers import host_lrs, host_momentums, isclose_lists, jit_values

from flax_cyclic import CyclicLR, cyclic_schedule

XS = [0, 0.25, 0.5, 0.75, 1, 0.75, 0.5, 0.25, 0, 0.25, 0.5, 0.75, 1]

VECTORS = {
    "triangular": (
        {"base_lr": 1, "max_lr": 5, "step_size_up": 4},
        [1, 2, 3, 4, 5, 4, 3, 2, 1, 2, 3],
        [5, 4, 3, 2, 1, 2, 3, 4, 5, 4, 3],
    ),
    "triangular2": (
        {"base_lr": 1, "max_lr": 5, "step_size_up": 4, "mode": "triangular2"},
        [1, 2, 3, 4, 5, 4, 3, 2, 1, 1.5, 2, 2.5, 3, 2.5, 2, 1.5, 1, 1.25, 1.5, 1.75, 2, 1.75],
        None,
    ),
    "exp_range": (
        {"base_lr": 1, "max_lr": 5, "step_size_up": 4, "mode": "exp_range", "gamma": 0.9},
        [1 + x * 4 * 0.9**t for t, x in enumerate(XS)],
        None,
    ),
    "triangular_asymmetric": (
        {"base_lr": 1, "max_lr": 5, "step_size_up": 4, "step_size_down": 6},
        [1, 2, 3, 4, 5, 13 / 3, 11 / 3, 3, 7 / 3, 5 / 3, 1],
        [5, 4, 3, 2, 1, 5 / 3, 7 / 3, 3, 11 / 3, 13 / 3, 5],
    ),
    "triangular2_asymmetric": (
        {"base_lr": 1, "max_lr": 5, "step_size_up": 2, "step_size_down": 6, "mode": "triangular2"},
        [
            *(1, 3, 5, 13 / 3, 11 / 3, 3, 7 / 3, 5 / 3),
            *(1, 2, 3, 8 / 3, 7 / 3, 2, 5 / 3, 4 / 3),
            *(1, 1.5, 2, 11 / 6, 10 / 6, 9 / 6, 8 / 6, 7 / 6),
        ],
        None,
    ),
}


WITH_MOMENTUM = sorted(name for name, (_, _, momentums) in VECTORS.items() if momentums)


@pytest.fixture(params=sorted(VECTORS), name="vector")
def _vector(request):
    return VECTORS[request.param]


@pytest.fixture(params=WITH_MOMENTUM, name="momentum_vector")
def _momentum_vector(request):
    return VECTORS[request.param]


def test_host_scheduler_matches_vector(vector):
    kwargs, lrs, _ = vector
    got = host_lrs(CyclicLR(**kwargs), len(lrs))
    assert isclose_lists(got, [[lr] for lr in lrs]), got


def test_host_momentum_matches_vector(momentum_vector):
    kwargs, _, momentums = momentum_vector
    scheduler = CyclicLR(**kwargs, cycle_momentum=True, base_momentum=1, max_momentum=5)
    assert isclose_lists(host_momentums(scheduler, len(momentums)), [[m] for m in momentums])


def test_jit_schedule_matches_vector_to_float32_rounding(vector):
    kwargs, lrs, _ = vector
    got = jit_values(cyclic_schedule(**kwargs), np.arange(len(lrs)))
    assert got.dtype == np.float32
    # At most one float32 ulp of the largest value from the float64 reference.
    np.testing.assert_array_max_ulp(got, np.float32(lrs), maxulp=1)


def test_jit_equals_eager_bitwise(vector):
    kwargs, lrs, _ = vector
    schedule = cyclic_schedule(**kwargs)
    eager = np.array([np.asarray(schedule(t)) for t in range(len(lrs))])
    np.testing.assert_array_equal(jit_values(schedule, np.arange(len(lrs))), eager)


def test_jit_momentum_schedule_matches_vector(momentum_vector):
    kwargs, _, momentums = momentum_vector
    scheduler = CyclicLR(**kwargs, cycle_momentum=True, base_momentum=1, max_momentum=5)
    got = jit_values(scheduler.as_momentum_schedule(), np.arange(len(momentums)))
    np.testing.assert_array_max_ulp(got, np.float32(momentums), maxulp=1)


def test_parameter_groups_shift_the_vectors(vector):
    kwargs, lrs, momentums = vector
    grouped = {**kwargs, "base_lr": [1, 2], "max_lr": [5, 6]}
    expected = [[lr, lr + 1] for lr in lrs]
    assert isclose_lists(host_lrs(CyclicLR(**grouped), len(lrs)), expected)
    scheduler = CyclicLR(**grouped)
    for group, shift in ((0, 0), (1, 1)):
        got = jit_values(scheduler.as_schedule(group), np.arange(len(lrs)))
        np.testing.assert_array_max_ulp(got, np.float32(lrs) + shift, maxulp=1)
    if momentums is not None:
        scheduler = CyclicLR(
            **grouped, cycle_momentum=True, base_momentum=[1, 2], max_momentum=[5, 6]
        )
        expected = [[m, m + 1] for m in momentums]
        assert isclose_lists(host_momentums(scheduler, len(momentums)), expected)


def test_scalar_broadcasts_against_list():
    scheduler = CyclicLR(base_lr=1, max_lr=[5, 9], step_size_up=4)
    assert scheduler.base_lrs == (1.0, 1.0)
    assert host_lrs(scheduler, 3) == [[1.0, 1.0], [2.0, 3.0], [3.0, 5.0]]


def test_callable_scheduler_is_group_zero_schedule_under_jit():
    kwargs, lrs, _ = VECTORS["triangular2_asymmetric"]
    scheduler = CyclicLR(**{**kwargs, "base_lr": [1, 2], "max_lr": [5, 6]})
    got = np.array([float(jax.jit(scheduler)(t)) for t in range(len(lrs))])
    np.testing.assert_array_max_ulp(np.float32(got), np.float32(lrs), maxulp=1)
