"""Cross-checks of the scheduler family against torch.optim.lr_scheduler, where it is installed.

OneCycleLR, CosineAnnealingLR, CosineAnnealingWarmRestarts, LinearLR, SequentialLR and
ReduceLROnPlateau against PyTorch's schedulers of the same names, TriangularLR against PyTorch's
``CyclicLR(mode='triangular')``; PyTorch gets one SGD parameter group per group. PyTorch is an
oracle here, never a dependency (see test_torch_oracle.py). Its trajectory is read the way a
training loop sees it: the value before each ``step()``, starting at step 0.

The deliberate differences are tested as such: at step ``total_steps`` OneCycleLR holds the
minimum (PyTorch extrapolates), refuses ``three_phase`` with ``pct_start > 0.5`` and
``pct_start=1`` (PyTorch divides by zero on the step after the last update), and gives
``max_lr`` at step 0 where the rise has no length (PyTorch divides by zero). ReduceLROnPlateau
refuses a NaN metric, which PyTorch counts as a bad epoch.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable

import numpy as np
import pytest
from helpers import float32_ulp, host_lrs, host_momentums, jit_values
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from flax_cyclic import (
    CosineAnnealingLR,
    CosineAnnealingWarmRestarts,
    CyclicLR,
    LinearLR,
    OneCycleLR,
    ReduceLROnPlateau,
    SequentialLR,
    TriangularLR,
)

torch = pytest.importorskip("torch")
lr_scheduler = torch.optim.lr_scheduler

# Tolerances, relative to the largest bound of a group. Measured worst cases (thousands of
# random configurations, <= 200 steps): OneCycleLR and CosineAnnealingWarmRestarts 4e-16 (both
# closed forms, rounded differently), TriangularLR 1e-14 (PyTorch's float phase
# x = 1 + t/total - cycle), CosineAnnealingLR 5e-13 for T_max <= 110 (see _RECURSIVE_TOL).
# Hypothesis with 600 examples per test found no more: 4.2e-16, 9.5e-15 and 9.5e-14.
_CLOSED_FORM_TOL = 1e-13
# PyTorch's CosineAnnealingLR is recursive: lr_t - eta_min = (lr_{t-1} - eta_min) * ratio, so a
# rounding error made near the minimum is multiplied by up to (1 + cos 0) / (1 + cos(pi/T_max))
# ~ 0.4 * T_max**2 by the next peak, and the errors of successive periods add up. Measured
# worst for T_max <= 60 over 200 steps: 1.9e-13.
_RECURSIVE_TOL = 2e-12

_STEPS = 200

lrs = st.floats(min_value=1e-6, max_value=1.0)


def _group_lists(draw, groups: int, strategy) -> list:
    return draw(st.lists(strategy, min_size=groups, max_size=groups))


def _torch_trajectory(
    make: Callable, initial_lrs: list[float], steps: int
) -> tuple[list[list[float]], list[list[float]]]:
    """PyTorch's per-group learning rates and momentums at steps 0 .. steps - 1."""
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in initial_lrs]
    optimizer = torch.optim.SGD(
        [{"params": [p], "lr": lr} for p, lr in zip(params, initial_lrs, strict=True)],
        lr=0.1,
        momentum=0.9,
    )
    lrs_out, momentums = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the oracle's own warnings, if a release adds any
        scheduler = make(optimizer)
        for step in range(steps):
            if step:
                optimizer.step()
                scheduler.step()
            lrs_out.append(list(scheduler.get_last_lr()))
            momentums.append([group["momentum"] for group in optimizer.param_groups])
    return lrs_out, momentums


def _assert_same(ours, theirs, scale: float, tol: float, first_step: int = 0) -> float:
    """Asserts agreement to ``tol * scale`` at every step and group; returns the worst / scale."""
    assert len(ours) == len(theirs)
    worst = 0.0
    for step, (a, b) in enumerate(zip(ours, theirs, strict=True), start=first_step):
        for group, (x, y) in enumerate(zip(a, b, strict=True)):
            assert math.isclose(x, y, rel_tol=0, abs_tol=tol * scale), (step, group, x, y)
            worst = max(worst, abs(x - y))
    return worst / scale if scale else 0.0


# -- OneCycleLR -------------------------------------------------------------------------------


@st.composite
def onecycle_configs(draw):
    groups = draw(st.integers(min_value=1, max_value=3))
    three_phase = draw(st.booleans())
    momentums = _group_lists(
        draw, groups, st.tuples(*[st.floats(min_value=0.0, max_value=0.99)] * 2).map(sorted)
    )
    config = dict(
        max_lr=_group_lists(draw, groups, lrs),
        pct_start=draw(  # pct_start=1 is refused; see test_onecycle_pct_start_1_is_refused...
            st.floats(min_value=0.0, max_value=0.5)
            if three_phase
            else st.floats(min_value=0.0, max_value=1.0, exclude_max=True)
        ),
        anneal_strategy=draw(st.sampled_from(["cos", "linear"])),
        base_momentum=[low for low, _ in momentums],
        max_momentum=[high for _, high in momentums],
        div_factor=draw(st.floats(min_value=1.0, max_value=1e3)),
        final_div_factor=draw(st.floats(min_value=1.0, max_value=1e5)),
        three_phase=three_phase,
    )
    if draw(st.booleans()):
        config["total_steps"] = draw(st.integers(min_value=1, max_value=_STEPS))
    else:
        config["epochs"] = draw(st.integers(min_value=1, max_value=10))
        config["steps_per_epoch"] = draw(st.integers(min_value=1, max_value=_STEPS // 10))
    return config


def _total_steps(config: dict) -> int:
    return config.get("total_steps") or config["epochs"] * config["steps_per_epoch"]


@settings(max_examples=40, deadline=None)
@given(onecycle_configs(), st.booleans(), st.data())
def test_onecycle_matches_pytorch_from_step_0_and_from_last_epoch(config, cycle_momentum, data):
    total = _total_steps(config)
    # A rise (or fall) of no length: PyTorch divides by zero; see test_onecycle_zero_length_phase.
    assume(config["pct_start"] * total != 1)
    theirs, their_momentums = _torch_trajectory(
        lambda o: lr_scheduler.OneCycleLR(o, **config, cycle_momentum=cycle_momentum),
        [0.1] * len(config["max_lr"]),
        total,  # steps 0 .. total - 1: PyTorch extrapolates at total, ours holds the minimum
    )
    lr_scale = max(config["max_lr"])
    momentum_scale = max(config["max_momentum"])
    ours = OneCycleLR(**config, cycle_momentum=cycle_momentum)
    _assert_same(host_lrs(ours, total), theirs, lr_scale, _CLOSED_FORM_TOL)
    ours = OneCycleLR(**config, cycle_momentum=cycle_momentum)
    if cycle_momentum:
        _assert_same(host_momentums(ours, total), their_momentums, momentum_scale, _CLOSED_FORM_TOL)
    else:
        assert ours.get_last_momentum() is None

    # Built with last_epoch=N, ours continues PyTorch's uninterrupted trajectory from step N.
    start = data.draw(st.integers(min_value=0, max_value=total - 1), label="last_epoch")
    ours = OneCycleLR(**config, cycle_momentum=cycle_momentum, last_epoch=start)
    _assert_same(host_lrs(ours, total - start), theirs[start:], lr_scale, _CLOSED_FORM_TOL, start)
    if cycle_momentum:
        ours = OneCycleLR(**config, cycle_momentum=True, last_epoch=start)
        _assert_same(
            host_momentums(ours, total - start),
            their_momentums[start:],
            momentum_scale,
            _CLOSED_FORM_TOL,
            start,
        )


@pytest.mark.parametrize(
    ("total_steps", "pct_start", "three_phase", "anneal_strategy"),
    [
        (10, 0.1, False, "cos"),
        (20, 0.05, True, "cos"),
        (4, 0.25, False, "linear"),
        (2, 0.5, False, "cos"),
    ],
)
def test_onecycle_zero_length_phase(total_steps, pct_start, three_phase, anneal_strategy):
    # pct_start * total_steps == 1: the rise ends where it starts, at step 0.
    config = dict(
        total_steps=total_steps,
        pct_start=pct_start,
        three_phase=three_phase,
        anneal_strategy=anneal_strategy,
        base_momentum=[0.8, 0.85],
        max_momentum=[0.95, 0.9],
    )
    with pytest.raises(ZeroDivisionError):
        _torch_trajectory(lambda o: lr_scheduler.OneCycleLR(o, [2.0, 0.5], **config), [0.1] * 2, 1)
    ours = OneCycleLR([2.0, 0.5], **config)
    assert ours.get_last_lr() == [2.0, 0.5]
    assert ours.get_last_momentum() == [0.8, 0.85]
    lrs_seen = [lr[0] for lr in host_lrs(OneCycleLR(2.0, **config), total_steps)]
    assert all(0 < lr <= 2.0 for lr in lrs_seen)


def test_onecycle_deliberate_differences():
    config = dict(total_steps=10, pct_start=0.3)
    theirs, _ = _torch_trajectory(lambda o: lr_scheduler.OneCycleLR(o, 1.0, **config), [0.1], 11)
    ours = OneCycleLR(1.0, **config)
    _assert_same(host_lrs(ours, 10), theirs[:10], 1.0, _CLOSED_FORM_TOL)
    # Steps 0..9 agree. At step 10, after the last update, PyTorch extrapolates the cosine
    # past the minimum (back up, to ~0.05); ours holds the minimum.
    assert ours.last_epoch == 10  # host_lrs stepped after each of the 10 reads
    assert ours.get_last_lr() == list(ours.min_lrs) == [1.0 / 25 / 1e4]
    assert theirs[10][0] > 100 * ours.min_lrs[0]
    # three_phase with pct_start > 0.5: PyTorch builds a schedule whose second phase runs
    # backwards; ours refuses it.
    _torch_trajectory(
        lambda o: lr_scheduler.OneCycleLR(o, 1.0, 10, pct_start=0.6, three_phase=True), [0.1], 1
    )
    with pytest.raises(ValueError, match=r"at most 0\.5"):
        OneCycleLR(1.0, 10, pct_start=0.6, three_phase=True)


@pytest.mark.parametrize(
    ("total_steps", "pct_start"),
    [(10, 0.9), (10, 0.95), (3, 0.7), (2, 0.9), (1, 0.99), (13, float(np.nextafter(1.0, 0.0)))],
)
@pytest.mark.parametrize("anneal_strategy", ["cos", "linear"])
def test_onecycle_pct_start_near_1_matches_pytorch(total_steps, pct_start, anneal_strategy):
    # pct_start * total_steps >= total_steps - 1: the fall takes the last step alone.
    config = dict(total_steps=total_steps, pct_start=pct_start, anneal_strategy=anneal_strategy)
    theirs, _ = _torch_trajectory(
        lambda o: lr_scheduler.OneCycleLR(o, 2.0, **config), [0.1], total_steps
    )
    ours = OneCycleLR(2.0, **config)
    _assert_same(host_lrs(ours, total_steps), theirs, 2.0, _CLOSED_FORM_TOL)
    jitted = jit_values(ours.as_schedule(), np.arange(total_steps))
    np.testing.assert_allclose(jitted, [lr[0] for lr in theirs], rtol=0, atol=4 * float32_ulp(2.0))
    last = OneCycleLR(2.0, **config, last_epoch=total_steps - 1)
    assert last.get_last_lr() == [2.0 / 25 / 1e4]  # the minimum, at the last step


def test_onecycle_pct_start_1_is_refused_where_pytorch_divides_by_zero():
    # PyTorch rises to max_lr at step total_steps - 1, holds no step to anneal, and divides by
    # zero on the step() after the last update; ours refuses pct_start=1 up front.
    theirs, _ = _torch_trajectory(
        lambda o: lr_scheduler.OneCycleLR(o, 2.0, 10, pct_start=1.0), [0.1], 10
    )
    assert theirs[-1] == [2.0]
    with pytest.raises(ZeroDivisionError):
        _torch_trajectory(lambda o: lr_scheduler.OneCycleLR(o, 2.0, 10, pct_start=1.0), [0.1], 11)
    with pytest.raises(ValueError, match=r"`pct_start` must be below 1, got pct_start=1\.0"):
        OneCycleLR(2.0, 10, pct_start=1.0)


# -- CosineAnnealingLR ------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    st.lists(lrs, min_size=1, max_size=3),
    st.integers(min_value=1, max_value=60),
    st.just(0.0) | st.floats(min_value=0.0, max_value=1.0),
    st.booleans(),
    st.integers(min_value=0, max_value=_STEPS - 1),
)
def test_cosine_annealing_matches_pytorch_past_t_max(base_lr, t_max, eta_min, as_list, start):
    # 200 steps with T_max <= 60: down, up again and down again (PyTorch's periodic cosine).
    theirs, _ = _torch_trajectory(
        lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=t_max, eta_min=eta_min), base_lr, _STEPS
    )
    eta = [eta_min] * len(base_lr) if as_list else eta_min
    scale = max([*base_lr, eta_min])
    _assert_same(
        host_lrs(CosineAnnealingLR(base_lr, t_max, eta), _STEPS), theirs, scale, _RECURSIVE_TOL
    )
    ours = CosineAnnealingLR(base_lr, t_max, eta, last_epoch=start)
    _assert_same(host_lrs(ours, _STEPS - start), theirs[start:], scale, _RECURSIVE_TOL, start)


def test_cosine_annealing_per_group_eta_min_matches_one_pytorch_scheduler_per_group():
    # PyTorch's eta_min is one number for all groups; ours may differ per group.
    base_lr, eta_min, t_max = [0.1, 0.003, 0.5], [0.001, 0.0, 0.4], 17
    ours = host_lrs(CosineAnnealingLR(base_lr, t_max, eta_min), _STEPS)
    for group, (base, eta) in enumerate(zip(base_lr, eta_min, strict=True)):
        theirs, _ = _torch_trajectory(
            lambda o, eta=eta: lr_scheduler.CosineAnnealingLR(o, T_max=t_max, eta_min=eta),
            [base],
            _STEPS,
        )
        _assert_same([[lr[group]] for lr in ours], theirs, max(base, eta), _RECURSIVE_TOL)


# -- CosineAnnealingWarmRestarts --------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    st.lists(lrs, min_size=1, max_size=3),
    st.integers(min_value=1, max_value=40),
    st.integers(min_value=1, max_value=3),
    st.just(0.0) | st.floats(min_value=0.0, max_value=1.0),
    st.integers(min_value=0, max_value=_STEPS - 1),
)
def test_warm_restarts_match_pytorch(base_lr, t_0, t_mult, eta_min, start):
    theirs, _ = _torch_trajectory(
        lambda o: lr_scheduler.CosineAnnealingWarmRestarts(o, t_0, t_mult, eta_min), base_lr, _STEPS
    )
    scale = max([*base_lr, eta_min])
    ours = CosineAnnealingWarmRestarts(base_lr, t_0, t_mult, eta_min)
    _assert_same(host_lrs(ours, _STEPS), theirs, scale, _CLOSED_FORM_TOL)
    ours = CosineAnnealingWarmRestarts(base_lr, t_0, t_mult, eta_min, last_epoch=start)
    _assert_same(host_lrs(ours, _STEPS - start), theirs[start:], scale, _CLOSED_FORM_TOL, start)


@pytest.mark.parametrize(("t_0", "t_mult"), [(1, 2), (3, 2), (2, 3), (5, 3), (7, 1)])
def test_warm_restarts_match_pytorch_over_several_restarts(t_0, t_mult):
    base_lr, eta_min = [0.5, 0.02, 1.0], 0.001
    theirs, _ = _torch_trajectory(
        lambda o: lr_scheduler.CosineAnnealingWarmRestarts(o, t_0, t_mult, eta_min), base_lr, _STEPS
    )
    ours = host_lrs(CosineAnnealingWarmRestarts(base_lr, t_0, t_mult, eta_min), _STEPS)
    _assert_same(ours, theirs, 1.0, _CLOSED_FORM_TOL)
    # The restarts are at T_0 * (1 + T_mult + T_mult**2 + ...); at least three are compared.
    restarts, length = [0], t_0
    while restarts[-1] + length < _STEPS:
        restarts.append(restarts[-1] + length)
        length *= t_mult
    assert len(restarts) >= 4
    assert [t for t in range(_STEPS) if ours[t] == base_lr] == restarts


# -- TriangularLR -----------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    st.integers(min_value=1, max_value=3).flatmap(
        lambda n: st.tuples(*[st.lists(lrs, min_size=n, max_size=n)] * 2)
    ),
    st.integers(min_value=1, max_value=40),
    st.integers(min_value=0, max_value=_STEPS - 1),
)
def test_triangular_matches_pytorch_cyclic_triangular(bounds, step_size, start):
    base_lr, max_lr = bounds
    theirs, _ = _torch_trajectory(
        lambda o: lr_scheduler.CyclicLR(
            o, base_lr, max_lr, step_size_up=step_size, mode="triangular", cycle_momentum=False
        ),
        base_lr,
        _STEPS,
    )
    scale = max(base_lr + max_lr)
    _assert_same(
        host_lrs(TriangularLR(base_lr, max_lr, step_size), _STEPS), theirs, scale, _CLOSED_FORM_TOL
    )
    ours = TriangularLR(base_lr, max_lr, step_size, last_epoch=start)
    _assert_same(host_lrs(ours, _STEPS - start), theirs[start:], scale, _CLOSED_FORM_TOL, start)


# -- the jitted float32 schedules -------------------------------------------------------------

# The documented float32 bounds: the triangle within 2 float32 ulps of the larger bound, the
# cosine-based schedules within 4 (the float32 cosine weight alone errs by up to ~1.3 ulps of 1 near
# its middle, ~2.5 ulps of a bound just below a power of two such as 0.99).
TRIANGLE_ULPS, COSINE_ULPS = 2, 4

# (ours, PyTorch's, initial lrs for the PyTorch optimizer, steps, lr bound per group,
#  momentum bound per group or None, the float32 bound in ulps)
_FLOAT32_CASES = [
    pytest.param(
        lambda: TriangularLR([0.001, 0.3], [0.99, 0.05], step_size=7),
        lambda o: lr_scheduler.CyclicLR(o, [0.001, 0.3], [0.99, 0.05], 7, cycle_momentum=False),
        [0.001, 0.3],
        _STEPS,
        [0.99, 0.3],
        None,
        TRIANGLE_ULPS,
        id="triangular",
    ),
    pytest.param(
        lambda: OneCycleLR([1.0, 0.3], total_steps=101, base_momentum=[0.8, 0.85]),
        lambda o: lr_scheduler.OneCycleLR(o, [1.0, 0.3], 101, base_momentum=[0.8, 0.85]),
        [0.1, 0.1],
        101,
        [1.0, 0.3],
        [0.95, 0.95],
        COSINE_ULPS,
        id="onecycle-cos",
    ),
    pytest.param(
        lambda: OneCycleLR(
            [0.5, 0.02], 150, pct_start=0.35, anneal_strategy="linear", three_phase=True
        ),
        lambda o: lr_scheduler.OneCycleLR(
            o, [0.5, 0.02], 150, pct_start=0.35, anneal_strategy="linear", three_phase=True
        ),
        [0.1, 0.1],
        150,
        [0.5, 0.02],
        [0.95, 0.95],
        COSINE_ULPS,
        id="onecycle-linear-three-phase",
    ),
    pytest.param(
        lambda: CosineAnnealingLR([0.1, 1.0], T_max=45, eta_min=0.001),
        lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=45, eta_min=0.001),
        [0.1, 1.0],
        _STEPS,  # down, up again, and down
        [0.1, 1.0],
        None,
        COSINE_ULPS,
        id="cosine-past-t-max",
    ),
    pytest.param(
        lambda: CosineAnnealingWarmRestarts([0.5, 1.0], T_0=5, T_mult=3, eta_min=0.001),
        lambda o: lr_scheduler.CosineAnnealingWarmRestarts(o, 5, 3, eta_min=0.001),
        [0.5, 1.0],
        _STEPS,
        [0.5, 1.0],
        None,
        COSINE_ULPS,
        id="warm-restarts",
    ),
    pytest.param(
        lambda: CosineAnnealingLR(0.99, T_max=45),
        lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=45),
        [0.99],
        46,
        [0.99],
        None,
        COSINE_ULPS,
        id="cosine-bound-below-power-of-two",
    ),
    pytest.param(
        lambda: CosineAnnealingWarmRestarts(0.99, T_0=5, T_mult=3),
        lambda o: lr_scheduler.CosineAnnealingWarmRestarts(o, 5, 3),
        [0.99],
        65,
        [0.99],
        None,
        COSINE_ULPS,
        id="warm-restarts-bound-below-power-of-two",
    ),
]


@pytest.mark.parametrize(
    ("make_ours", "make_theirs", "initial_lrs", "steps", "lr_bounds", "momentum_bounds", "ulps"),
    _FLOAT32_CASES,
)
def test_jitted_float32_within_the_documented_ulps_of_pytorch(
    make_ours, make_theirs, initial_lrs, steps, lr_bounds, momentum_bounds, ulps
):
    theirs, their_momentums = _torch_trajectory(make_theirs, initial_lrs, steps)
    theirs, their_momentums = np.array(theirs), np.array(their_momentums)
    scheduler = make_ours()
    for group, bound in enumerate(lr_bounds):
        jitted = jit_values(scheduler.as_schedule(group), np.arange(steps)).astype(np.float64)
        np.testing.assert_allclose(jitted, theirs[:, group], rtol=0, atol=ulps * float32_ulp(bound))
    for group, bound in enumerate(momentum_bounds or []):
        schedule = scheduler.as_momentum_schedule(group)
        jitted = jit_values(schedule, np.arange(steps)).astype(np.float64)
        np.testing.assert_allclose(
            jitted, their_momentums[:, group], rtol=0, atol=ulps * float32_ulp(bound)
        )


# -- LinearLR, SequentialLR -------------------------------------------------------------------

# PyTorch's LinearLR and CosineAnnealingLR are recursive, ours closed forms; they agree to this
# fraction of each group's largest value at every step. Measured worst over 1500 random
# configurations like the ones below: LinearLR 1.2e-15; after it, CyclicLR 1.5e-14 (momentum
# 1.1e-14) and CosineAnnealingLR 2.2e-13 (its recursion; see _RECURSIVE_TOL).
_CHAINED_TOL = 1e-9


def _scales(trajectory) -> list[float]:
    """The largest |value| of each group."""
    return [max(abs(row[g]) for row in trajectory) for g in range(len(trajectory[0]))]


def _assert_close_per_group(ours, theirs, scales=None, first_step: int = 0) -> None:
    """Asserts |ours - theirs| <= 1e-9 * scale at every step and group.

    ``scales``: each group's largest |value| over the whole run (by default, over ``theirs``).
    """
    assert len(ours) == len(theirs)
    scales = _scales(theirs) if scales is None else scales
    tol = _CHAINED_TOL
    for step, (a, b) in enumerate(zip(ours, theirs, strict=True), start=first_step):
        assert len(a) == len(b), step
        for group, (x, y) in enumerate(zip(a, b, strict=True)):
            assert abs(x - y) <= tol * scales[group], (step, group, x, y)


linear_factors = st.fixed_dictionaries(
    {
        "start_factor": st.floats(min_value=1e-3, max_value=1.0) | st.just(1.0),
        "end_factor": st.floats(min_value=0.0, max_value=1.0) | st.sampled_from([0.0, 1.0]),
        "total_iters": st.integers(min_value=1, max_value=30),
    }
)


@settings(max_examples=40, deadline=None)
@given(st.lists(lrs, min_size=1, max_size=3), linear_factors, st.integers(0, 59))
def test_linear_lr_matches_pytorch(base_lr, factors, start):
    steps = 60  # up to 30 steps of ramp, and the hold after it
    theirs, _ = _torch_trajectory(lambda o: lr_scheduler.LinearLR(o, **factors), base_lr, steps)
    _assert_close_per_group(host_lrs(LinearLR(base_lr, **factors), steps), theirs)
    ours = LinearLR(base_lr, **factors, last_epoch=start)
    _assert_close_per_group(
        host_lrs(ours, steps - start), theirs[start:], _scales(theirs), first_step=start
    )


@st.composite
def cyclic_configs(draw, groups: int):
    momentums = _group_lists(
        draw, groups, st.tuples(*[st.floats(min_value=0.0, max_value=0.99)] * 2).map(sorted)
    )
    mode = draw(st.sampled_from(["triangular", "triangular2", "exp_range"]))
    return dict(
        base_lr=_group_lists(draw, groups, lrs),
        max_lr=_group_lists(draw, groups, lrs),
        step_size_up=draw(st.integers(min_value=1, max_value=20)),
        step_size_down=draw(st.none() | st.integers(min_value=1, max_value=20)),
        mode=mode,
        gamma=draw(st.floats(min_value=0.9, max_value=1.0)) if mode == "exp_range" else 1.0,
        cycle_momentum=draw(st.booleans()),
        base_momentum=[low for low, _ in momentums],
        max_momentum=[high for _, high in momentums],
    )


def _assert_continues_from_any_step(make, theirs, steps, data):
    """Built at a random ``last_epoch``, it continues PyTorch's values; its state survives JSON."""
    start = data.draw(st.integers(min_value=0, max_value=steps - 1), label="last_epoch")
    _assert_close_per_group(
        host_lrs(make(last_epoch=start), steps - start),
        theirs[start:],
        _scales(theirs),
        first_step=start,
    )
    _sequential_state_round_trip(make, steps, start)


def _sequential_state_round_trip(make, steps: int, at: int) -> None:
    """A JSON round trip at step ``at`` continues exactly as the uninterrupted run."""
    scheduler = make()
    scheduler.step(at)
    restored = make()
    restored.load_state_dict(json.loads(json.dumps(scheduler.state_dict())))
    assert restored.last_epoch == at
    assert host_lrs(restored, steps - at) == host_lrs(make(last_epoch=at), steps - at)
    if make().cycle_momentum:
        restored = make()
        restored.load_state_dict(json.loads(json.dumps(scheduler.state_dict())))
        assert host_momentums(restored, steps - at) == host_momentums(scheduler, steps - at)


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=1, max_value=3), st.integers(min_value=1, max_value=40), st.data())
def test_sequential_linear_then_cyclic_matches_pytorch(groups, milestone, data):
    base_lr = data.draw(st.lists(lrs, min_size=groups, max_size=groups), label="base_lr")
    factors = data.draw(linear_factors, label="linear")
    cyclic = data.draw(cyclic_configs(groups), label="cyclic")
    steps = milestone + 150  # several cycles past the milestone

    def theirs_make(o):
        children = [lr_scheduler.LinearLR(o, **factors), lr_scheduler.CyclicLR(o, **cyclic)]
        return lr_scheduler.SequentialLR(o, children, milestones=[milestone])

    def make(**kwargs):
        children = [LinearLR(base_lr, **factors), CyclicLR(**cyclic)]
        return SequentialLR(children, milestones=[milestone], **kwargs)

    theirs, their_momentums = _torch_trajectory(theirs_make, base_lr, steps)
    _assert_close_per_group(host_lrs(make(), steps), theirs)
    if cyclic["cycle_momentum"]:
        # In the warm-up the optimizer holds the momentum CyclicLR's constructor wrote.
        assert make().cycle_momentum
        _assert_close_per_group(host_momentums(make(), steps), their_momentums)
    else:
        assert make().get_last_momentum() is None
    _assert_continues_from_any_step(make, theirs, steps, data)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(lrs, min_size=1, max_size=3),
    linear_factors,
    st.integers(min_value=1, max_value=40),
    st.integers(min_value=1, max_value=60),
    st.just(0.0) | st.floats(min_value=0.0, max_value=1.0),
    st.data(),
)
def test_sequential_linear_then_cosine_matches_pytorch(
    base_lr, factors, milestone, t_max, eta_min, data
):
    steps = milestone + 200  # down to eta_min, up again (PyTorch's periodic cosine), and down

    def theirs_make(o):
        children = [
            lr_scheduler.LinearLR(o, **factors),
            lr_scheduler.CosineAnnealingLR(o, T_max=t_max, eta_min=eta_min),
        ]
        return lr_scheduler.SequentialLR(o, children, milestones=[milestone])

    def make(**kwargs):
        children = [LinearLR(base_lr, **factors), CosineAnnealingLR(base_lr, t_max, eta_min)]
        return SequentialLR(children, milestones=[milestone], **kwargs)

    theirs, _ = _torch_trajectory(theirs_make, base_lr, steps)
    # The cosine starts at base_lr at the milestone, wherever the warm-up got to (PyTorch
    # takes the closed form there).
    _assert_close_per_group(host_lrs(make(), steps), theirs)
    assert make().get_last_momentum() is None
    _assert_continues_from_any_step(make, theirs, steps, data)


def _cyclic_with_momentum(o=None, *, base_lr, max_lr, base_momentum, max_momentum, step=5):
    config = dict(
        base_lr=base_lr,
        max_lr=max_lr,
        step_size_up=step,
        cycle_momentum=True,
        base_momentum=base_momentum,
        max_momentum=max_momentum,
    )
    return CyclicLR(**config) if o is None else lr_scheduler.CyclicLR(o, **config)


# (ours, PyTorch's, the optimizer's initial lrs, milestones, steps): the momentum in the phase
# of a scheduler that does not cycle it is the last value a cycling one set.
_MOMENTUM_CHAINS = [
    pytest.param(
        lambda o=None: [
            LinearLR([0.1, 0.2], 0.1, total_iters=10)
            if o is None
            else lr_scheduler.LinearLR(o, 0.1, total_iters=10),
            _cyclic_with_momentum(
                o, base_lr=[0.01, 0.02], max_lr=0.5, base_momentum=[0.8, 0.7], max_momentum=0.95
            ),
        ],
        [0.1, 0.2],
        [10],
        100,
        id="warm-up-then-cyclic",
    ),
    pytest.param(
        lambda o=None: [
            _cyclic_with_momentum(
                o, base_lr=[0.01, 0.02], max_lr=0.5, base_momentum=0.8, max_momentum=[0.9, 0.95]
            ),
            # PyTorch's base_lrs are the optimizer's initial_lr, which CyclicLR (built first)
            # set to its base_lr.
            CosineAnnealingLR([0.01, 0.02], T_max=30, eta_min=0.001)
            if o is None
            else lr_scheduler.CosineAnnealingLR(o, T_max=30, eta_min=0.001),
        ],
        [0.1, 0.3],
        [13],  # the cyclic phase ends part-way up: step 12 is position 2 of a 10-step cycle
        100,
        id="cyclic-then-cosine",
    ),
    pytest.param(
        lambda o=None: [
            LinearLR(0.1, 0.5, total_iters=4)
            if o is None
            else lr_scheduler.LinearLR(o, 0.5, total_iters=4),
            _cyclic_with_momentum(o, base_lr=0.01, max_lr=0.1, base_momentum=0.7, max_momentum=0.9),
            LinearLR(0.1, 0.2, total_iters=5)
            if o is None
            else lr_scheduler.LinearLR(o, 0.2, total_iters=5),
            _cyclic_with_momentum(
                o, base_lr=0.02, max_lr=0.3, base_momentum=0.1, max_momentum=0.3, step=3
            ),
        ],
        [0.1],
        [6, 18, 30],
        80,
        id="before-any-cycling-phase-the-last-constructor-wins",
    ),
    pytest.param(
        lambda o=None: [
            _cyclic_with_momentum(o, base_lr=0.01, max_lr=0.1, base_momentum=0.8, max_momentum=0.9),
            OneCycleLR(0.5, total_steps=40, base_momentum=0.85, max_momentum=0.95)
            if o is None
            else lr_scheduler.OneCycleLR(o, 0.5, total_steps=40),
        ],
        [0.1],
        [17],
        17 + 40,
        id="cyclic-then-onecycle",
    ),
]


@pytest.mark.parametrize(("make_children", "initial_lrs", "milestones", "steps"), _MOMENTUM_CHAINS)
def test_sequential_momentum_between_cycling_phases_matches_pytorch(
    make_children, initial_lrs, milestones, steps
):
    theirs, their_momentums = _torch_trajectory(
        lambda o: lr_scheduler.SequentialLR(o, make_children(o), milestones=milestones),
        initial_lrs,
        steps,
    )
    ours = SequentialLR(make_children(), milestones=milestones)
    assert ours.cycle_momentum
    _assert_close_per_group(host_lrs(ours, steps), theirs)
    ours = SequentialLR(make_children(), milestones=milestones)
    _assert_close_per_group(host_momentums(ours, steps), their_momentums)
    # The jitted momentum schedules join the cycled ones and the held constants the same way.
    for group in range(ours.num_groups):
        jitted = jit_values(ours.as_momentum_schedule(group), np.arange(steps))
        expected = [row[group] for row in their_momentums]
        np.testing.assert_allclose(jitted, expected, rtol=0, atol=2 * float32_ulp(1.0))


# -- ReduceLROnPlateau ------------------------------------------------------------------------

# Values near each other and repeated, so that ties, thresholds and plateaus all happen.
metrics = st.lists(
    st.sampled_from([1.0, 0.99995, 0.9999, 0.999, 0.5, 0.50004, 0.0, -0.5])
    | st.floats(min_value=-2.0, max_value=2.0),
    min_size=1,
    max_size=60,
)


@st.composite
def plateau_configs(draw):
    groups = draw(st.integers(min_value=1, max_value=3))
    min_lr = draw(
        st.just(0)
        | st.floats(min_value=0.0, max_value=0.01)
        | st.lists(st.floats(min_value=0.0, max_value=0.01), min_size=groups, max_size=groups)
    )
    config = dict(
        mode=draw(st.sampled_from(["min", "max"])),
        factor=draw(st.sampled_from([0.0, 0.1, 0.5]) | st.floats(min_value=0.0, max_value=0.99)),
        patience=draw(st.integers(min_value=0, max_value=5)),
        threshold=draw(st.sampled_from([0.0, 1e-4]) | st.floats(min_value=0.0, max_value=0.5)),
        threshold_mode=draw(st.sampled_from(["rel", "abs"])),
        cooldown=draw(st.integers(min_value=0, max_value=4)),
        min_lr=min_lr,
        eps=draw(st.sampled_from([0.0, 1e-8, 1e-3, 0.05])),
    )
    return _group_lists(draw, groups, lrs), config


def _torch_plateau(base_lr: list[float], config: dict, values: list[float]):
    """PyTorch's lrs and counters after each step(metric)."""
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in base_lr]
    optimizer = torch.optim.SGD(
        [{"params": [p], "lr": lr} for p, lr in zip(params, base_lr, strict=True)], lr=0.1
    )
    scheduler = lr_scheduler.ReduceLROnPlateau(optimizer, **config)
    out = []
    for value in values:
        optimizer.step()
        scheduler.step(value)
        counters = (scheduler.best, scheduler.num_bad_epochs, scheduler.cooldown_counter)
        out.append((list(scheduler.get_last_lr()), counters, scheduler.last_epoch))
    return out


def _plateau_trajectory(scheduler: ReduceLROnPlateau, values: list[float]):
    worst = math.inf if scheduler.mode == "min" else -math.inf
    out = []
    for value in values:
        scheduler.step(value)
        best = worst if scheduler.best is None else scheduler.best
        counters = (best, scheduler.num_bad_epochs, scheduler.cooldown_counter)
        out.append((scheduler.get_last_lr(), counters, scheduler.last_epoch))
    return out


@settings(max_examples=200, deadline=None)
@given(plateau_configs(), metrics, st.data())
def test_reduce_on_plateau_matches_pytorch(config, values, data):
    base_lr, kwargs = config
    theirs = _torch_plateau(base_lr, kwargs, values)
    ours = _plateau_trajectory(ReduceLROnPlateau(base_lr, **kwargs), values)
    for step, ((lr, counters, epoch), (their_lr, their_counters, their_epoch)) in enumerate(
        zip(ours, theirs, strict=True)
    ):
        assert all(
            math.isclose(x, y, rel_tol=_CHAINED_TOL, abs_tol=0)
            for x, y in zip(lr, their_lr, strict=True)
        ), (step, lr, their_lr)
        assert (counters, epoch) == (their_counters, their_epoch), step
    # A JSON round trip anywhere continues exactly.
    at = data.draw(st.integers(min_value=0, max_value=len(values)), label="saved after")
    scheduler = ReduceLROnPlateau(base_lr, **kwargs)
    _plateau_trajectory(scheduler, values[:at])
    restored = ReduceLROnPlateau(base_lr, **kwargs)
    restored.load_state_dict(json.loads(json.dumps(scheduler.state_dict(), allow_nan=False)))
    assert restored.get_last_lr() == scheduler.get_last_lr()
    assert _plateau_trajectory(restored, values[at:]) == ours[at:]


def test_reduce_on_plateau_refuses_the_nan_metric_pytorch_counts_as_bad():
    # PyTorch compares NaN with best (False), counts a bad epoch and reduces after patience:
    # a diverged run looks like a plateau. Ours refuses the metric and changes nothing.
    theirs = _torch_plateau([0.1], dict(patience=1), [1.0, math.nan, math.nan])
    assert [lr for lr, _, _ in theirs] == [[0.1], [0.1], [pytest.approx(0.01)]]
    ours = ReduceLROnPlateau(0.1, mode="min", patience=1)
    ours.step(1.0)
    with pytest.raises(ValueError, match="diverged run, not a plateau"):
        ours.step(math.nan)
    assert (ours.last_epoch, ours.num_bad_epochs, ours.get_last_lr()) == (1, 0, [0.1])
