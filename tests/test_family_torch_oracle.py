"""Cross-checks of the scheduler family against torch.optim.lr_scheduler, where it is installed.

OneCycleLR, CosineAnnealingLR and CosineAnnealingWarmRestarts against PyTorch's schedulers of
the same names, TriangularLR against PyTorch's ``CyclicLR(mode='triangular')``; PyTorch gets one
SGD parameter group per group. PyTorch is an oracle here, never a dependency (see
test_torch_oracle.py). Its trajectory is read the way a training loop sees it: the value before
each ``step()``, starting at step 0.

The deliberate differences are tested as such: at step ``total_steps`` OneCycleLR holds the
minimum (PyTorch extrapolates), refuses ``three_phase`` with ``pct_start > 0.5`` and
``pct_start=1`` (PyTorch divides by zero on the step after the last update), and gives
``max_lr`` at step 0 where the rise has no length (PyTorch divides by zero).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import numpy as np
import pytest
from helpers import float32_ulp, host_lrs, host_momentums, jit_values
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from flax_cyclic import CosineAnnealingLR, CosineAnnealingWarmRestarts, OneCycleLR, TriangularLR

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
