"""Invariants over random configurations (hypothesis)."""

from __future__ import annotations

import json
import math
from fractions import Fraction

import numpy as np
from helpers import float32_ulp, host_lrs
from hypothesis import given, settings
from hypothesis import strategies as st

from flax_cyclic import CyclicLR, cyclic_schedule

learning_rates = st.floats(min_value=0.0, max_value=10.0, allow_nan=False, allow_infinity=False)
step_sizes = st.integers(min_value=1, max_value=50)
steps = st.integers(min_value=0, max_value=10**6)


@st.composite
def configs(draw):
    """Keyword arguments of a CyclicLR whose values stay within its bounds."""
    mode = draw(st.sampled_from(["triangular", "triangular2", "exp_range"]))
    return dict(
        base_lr=draw(learning_rates),
        max_lr=draw(learning_rates),
        step_size_up=draw(step_sizes),
        step_size_down=draw(st.none() | step_sizes),
        mode=mode,
        gamma=draw(st.floats(min_value=0.5, max_value=1.0)) if mode == "exp_range" else 1.0,
    )


@settings(max_examples=200, deadline=None)
@given(configs(), steps)
def test_lr_stays_within_the_bounds(config, step):
    low, high = sorted((config["base_lr"], config["max_lr"]))
    lr = CyclicLR(**config, last_epoch=step).get_last_lr()[0]
    assert low <= lr <= high


@settings(max_examples=200, deadline=None)
@given(configs(), steps, st.integers(min_value=1, max_value=10**6))
def test_triangular_is_periodic(config, step, cycles):
    config = {**config, "mode": "triangular"}
    total = CyclicLR(**config).total_size
    first = CyclicLR(**config, last_epoch=step).get_last_lr()
    assert CyclicLR(**config, last_epoch=step + cycles * total).get_last_lr() == first


@settings(max_examples=200, deadline=None)
@given(configs(), steps)
def test_triangular2_halves_the_amplitude_each_cycle(config, step):
    config = {**config, "mode": "triangular2"}
    total = CyclicLR(**config).total_size
    base = config["base_lr"]
    now = CyclicLR(**config, last_epoch=step).get_last_lr()[0] - base
    later = CyclicLR(**config, last_epoch=step + total).get_last_lr()[0] - base
    assert math.isclose(later, now / 2, rel_tol=1e-12, abs_tol=4 * math.ulp(max(base, 1e-300)))


@settings(max_examples=200, deadline=None)
@given(configs(), steps)
def test_symmetric_cycles_match_the_seed_formula(config, step):
    # braintools' documented form max(0, 1 - |x - 1|), exact for symmetric cycles.
    config = {**config, "mode": "triangular", "step_size_down": None}
    up = config["step_size_up"]
    cycle = 1 + step // (2 * up)
    x = abs(Fraction(step, up) - 2 * cycle + 1)
    exact = Fraction(config["base_lr"]) + (
        Fraction(config["max_lr"]) - Fraction(config["base_lr"])
    ) * max(Fraction(0), 1 - x)
    lr = CyclicLR(**config, last_epoch=step).get_last_lr()[0]
    bound = max(config["base_lr"], config["max_lr"])
    assert abs(Fraction(lr) - exact) <= 2 * Fraction(math.ulp(bound))


@settings(max_examples=100, deadline=None)
@given(configs(), st.integers(min_value=0, max_value=200), st.integers(min_value=1, max_value=60))
def test_state_round_trip_continues_the_same_trajectory(config, taken, ahead):
    scheduler = CyclicLR(**config)
    for _ in range(taken):
        scheduler.step()
    restored = CyclicLR(**config)
    restored.load_state_dict(json.loads(json.dumps(scheduler.state_dict())))
    assert host_lrs(restored, ahead) == host_lrs(scheduler, ahead)


@settings(max_examples=100, deadline=None)
@given(configs(), st.integers(min_value=0, max_value=300))
def test_last_epoch_resumes_exactly(config, start):
    uninterrupted = host_lrs(CyclicLR(**config), start + 20)
    assert host_lrs(CyclicLR(**config, last_epoch=start), 20) == uninterrupted[start:]


@settings(max_examples=30, deadline=None)
@given(configs(), st.lists(steps, min_size=1, max_size=20))
def test_pure_schedule_agrees_with_the_host_scheduler(config, step_list):
    schedule = cyclic_schedule(**config)
    bound = max(config["base_lr"], config["max_lr"])
    # XLA on CPU flushes float32 subnormals (below 1.2e-38) to zero.
    limit = max(2 * float32_ulp(bound), float(np.finfo(np.float32).tiny))
    for step in step_list:
        host = CyclicLR(**config, last_epoch=step).get_last_lr()[0]
        got = float(np.asarray(schedule(step)))
        assert abs(got - host) <= limit, (step, got, host)
