"""The formulas (flax_cyclic/_policies.py): closed forms, exact phases, float32 accuracy."""

from __future__ import annotations

import math
from fractions import Fraction

import jax
import numpy as np
import pytest
from helpers import COS_ULPS, assert_close_to_exact, exact_lr, float32_ulp, host_lrs, jit_values

from flax_cyclic import (
    CosineAnnealingLR,
    CosineAnnealingWarmRestarts,
    CyclicLR,
    LinearLR,
    OneCycleLR,
    TriangularLR,
    cosine_annealing_schedule,
    cosine_warm_restarts_schedule,
    cyclic_schedule,
    linear_schedule,
    onecycle_schedule,
    triangular_schedule,
)
from flax_cyclic._math import HOST
from flax_cyclic._policies import LinearRamp, RampPolicy, in_unit_interval

# The host path agrees to two float64 ulps with the formulas written out PyTorch's way and
# evaluated in extended precision (np.longdouble).
F64 = 2 * 2.0**-52


# The largest float below 1, the largest pct_start OneCycleLR accepts.
ALMOST_1 = float(np.nextafter(1.0, 0.0))


PI = np.longdouble("3.14159265358979323846264338327950288")


def cos_weight(numerator, denominator) -> np.longdouble:
    """(1 + cos(pi * numerator / denominator)) / 2, in extended precision."""
    return (1 + np.cos(PI * np.longdouble(numerator) / np.longdouble(denominator))) / 2


def test_onecycle_cos_matches_the_formula_in_float64():
    # PyTorch's cosine annealing, written out independently of the library.
    def anneal(start, end, pct):
        return float(end + (start - end) * cos_weight(pct, 1))

    total, peak = 1000, 0.4
    initial, final = peak / 25.0, peak / 25.0 / 1e4
    up = 0.3 * total - 1
    expected = [
        anneal(initial, peak, t / up)
        if t <= up
        else anneal(peak, final, (t - up) / (total - 1 - up))
        for t in range(total)
    ]
    got = [lr[0] for lr in host_lrs(OneCycleLR(max_lr=peak, total_steps=total), total)]
    np.testing.assert_allclose(got, expected, rtol=0, atol=F64 * peak)
    jitted = jit_values(onecycle_schedule(peak, total), np.arange(total))
    assert np.max(np.abs(jitted - np.array(expected))) <= COS_ULPS * float32_ulp(peak)


def test_onecycle_edge_phases():
    # pct_start * total_steps == 1: the rise has no length; PyTorch divides by zero there.
    scheduler = OneCycleLR(max_lr=2.0, total_steps=10, pct_start=0.1)
    assert scheduler.get_last_lr() == [2.0]
    # pct_start == 0 and just below 1 are valid; a one-step schedule too.
    assert OneCycleLR(max_lr=2.0, total_steps=4, pct_start=0.0, anneal_strategy="linear").get_lr()[
        0
    ] == pytest.approx(2.0 - (2.0 - 0.08 / 1e4) / 4)
    assert OneCycleLR(max_lr=2.0, total_steps=1).get_last_lr() == [2.0 / 25 / 1e4]
    for config in (
        dict(pct_start=0.0),
        dict(pct_start=0.95),
        dict(pct_start=ALMOST_1),
        dict(pct_start=0.5, three_phase=True),
    ):
        scheduler = OneCycleLR(max_lr=2.0, total_steps=13, **config)
        lrs = [lr[0] for lr in host_lrs(scheduler, 13)]
        assert all(0 < lr <= 2.0 for lr in lrs)
        jitted = jit_values(scheduler.as_schedule(), np.arange(13))
        np.testing.assert_allclose(jitted, lrs, rtol=0, atol=COS_ULPS * float32_ulp(2.0))


@pytest.mark.parametrize(
    ("total_steps", "pct_start", "lrs"),
    [
        # PyTorch's numbers (torch 2.13): the rise ends at step pct_start * total_steps - 1 >=
        # total_steps - 2, and the fall to the minimum takes the last step alone.
        (10, 0.9, [1.0, 4.0, 7.0, 10.0, 13.0, 16.0, 19.0, 22.0, 25.0, 0.5]),
        (10, 0.95, [1 + i * 24 / 8.5 for i in range(9)] + [0.5]),
        (3, 0.7, [1.0, 1 + 24 / 1.1, 0.5]),
        (2, 0.9, [1.0, 0.5]),
        (1, 0.99, [0.5]),
        # The largest float below 1: the rise ends at step 11.999999999999998, which float32
        # rounds to 12, the last step.
        (13, ALMOST_1, [1 + i * 24 / (ALMOST_1 * 13 - 1) for i in range(12)] + [0.5]),
    ],
)
def test_onecycle_pct_start_near_1_falls_in_the_last_step(total_steps, pct_start, lrs):
    config = dict(
        max_lr=25.0,
        total_steps=total_steps,
        pct_start=pct_start,
        anneal_strategy="linear",
        final_div_factor=2.0,
    )
    got = [lr[0] for lr in host_lrs(OneCycleLR(**config), total_steps)]
    np.testing.assert_allclose(got, lrs, rtol=0, atol=F64 * 25)
    jitted = jit_values(onecycle_schedule(**config), np.arange(total_steps + 2))
    np.testing.assert_allclose(jitted[:total_steps], lrs, rtol=0, atol=COS_ULPS * float32_ulp(25))
    np.testing.assert_array_equal(jitted[total_steps - 1 :], np.float32(0.5))


def test_cosine_annealing_closed_form_and_periodicity():
    base, eta_min, t_max = 0.1, 0.001, 50
    scheduler = CosineAnnealingLR(base_lr=base, T_max=t_max, eta_min=eta_min)
    got = [lr[0] for lr in host_lrs(scheduler, 4 * t_max + 1)]
    expected = [
        float(eta_min + (base - eta_min) * cos_weight(t, t_max)) for t in range(4 * t_max + 1)
    ]
    np.testing.assert_allclose(got, expected, rtol=0, atol=F64 * base)
    assert got[0] == base
    assert got[t_max] == eta_min
    assert got[2 * t_max] == base
    # Exact integer phase: at any step the jitted value is the one of step % (2 * T_max).
    big = np.array([2**31 - 1, 2**30 + 7, 123456789])
    np.testing.assert_array_equal(
        jit_values(scheduler.as_schedule(), big),
        jit_values(scheduler.as_schedule(), big % (2 * t_max)),
    )
    pure = cosine_annealing_schedule(base, t_max, eta_min)
    steps = np.arange(4 * t_max + 1)
    np.testing.assert_array_equal(
        jit_values(pure, steps), jit_values(scheduler.as_schedule(), steps)
    )
    assert np.max(np.abs(jit_values(pure, steps) - np.array(expected))) <= COS_ULPS * float32_ulp(
        base
    )


def _pytorch_warm_restarts(base, eta_min, t_0, t_mult, steps):
    """PyTorch's CosineAnnealingWarmRestarts.step() bookkeeping, written out."""
    t_cur, t_i, out = 0, t_0, []
    for _ in range(steps):
        out.append(float(eta_min + (base - eta_min) * cos_weight(t_cur, t_i)))
        t_cur += 1
        if t_cur >= t_i:
            t_cur -= t_i
            t_i *= t_mult
    return out


@pytest.mark.parametrize(("t_0", "t_mult"), [(5, 1), (3, 2), (2, 3), (1, 2)])
def test_warm_restarts_match_pytorch_bookkeeping(t_0, t_mult):
    steps = 200
    scheduler = CosineAnnealingWarmRestarts(base_lr=0.5, T_0=t_0, T_mult=t_mult, eta_min=0.01)
    expected = _pytorch_warm_restarts(0.5, 0.01, t_0, t_mult, steps)
    got = [lr[0] for lr in host_lrs(scheduler, steps)]
    np.testing.assert_allclose(got, expected, rtol=0, atol=F64 * 0.5)
    jitted = jit_values(scheduler.as_schedule(), np.arange(steps))
    assert np.max(np.abs(jitted - np.array(expected))) <= COS_ULPS * float32_ulp(0.5)
    pure = cosine_warm_restarts_schedule(0.5, t_0, t_mult, 0.01)
    np.testing.assert_array_equal(jit_values(pure, np.arange(steps)), jitted)


def test_warm_restarts_phase_is_exact_at_large_steps():
    # T_0=1, T_mult=2: cycles start at 2**k - 1. Check the cycle bookkeeping near int32 max.
    scheduler = CosineAnnealingWarmRestarts(base_lr=1.0, T_0=1, T_mult=2)
    for k in (20, 30, 31):
        start = 2**k - 1
        scheduler.step(start)
        assert (scheduler.cycle, scheduler.T_cur, scheduler.T_i) == (k + 1, 0, 2**k)
        assert scheduler.get_last_lr() == [1.0]
    steps = np.array([2**30 - 1, 2**30, 2**30 + 2**28, 2**31 - 1])
    host = [
        CosineAnnealingWarmRestarts(1.0, 1, 2, last_epoch=int(t)).get_last_lr()[0] for t in steps
    ]
    jitted = jit_values(scheduler.as_schedule(), steps)
    np.testing.assert_allclose(jitted, host, rtol=0, atol=COS_ULPS * float32_ulp(1.0))
    # Past 2**24 the cycle starts are not float32 numbers: the position must stay exact.
    warm = CosineAnnealingWarmRestarts(1.0, T_0=100, T_mult=2, warmup_steps=50, warmup="every")
    start = 100 * (2**24 - 1)
    steps = np.array([start + 10, start + 25, start + 60])
    host = [type(warm)(**_kwargs(warm), last_epoch=int(t)).get_last_lr()[0] for t in steps]
    assert host[:2] == [0.2, 0.5]
    np.testing.assert_allclose(jit_values(warm.as_schedule(), steps), host, rtol=0, atol=1e-7)
    host = [
        CosineAnnealingWarmRestarts(1.0, 1, 2, last_epoch=int(t)).get_last_lr()[0]
        for t in (2**30 - 1, 2**30, 2**30 + 2**28)
    ]
    assert host[0] == 1.0
    assert host[2] == pytest.approx(0.5 + 0.5 * math.cos(math.pi / 4))


def test_warm_restarts_decay_and_warmup():
    base, eta_min = 1.0, 0.1
    # decay: the peak's height above eta_min is multiplied by decay at every restart.
    decayed = CosineAnnealingWarmRestarts(base, T_0=4, T_mult=2, eta_min=eta_min, decay=0.5)
    lrs = [lr[0] for lr in host_lrs(decayed, 28)]
    for i, start in enumerate((0, 4, 12)):
        assert lrs[start] == pytest.approx(eta_min + (base - eta_min) * 0.5**i, rel=1e-15)
    plain = [lr[0] for lr in host_lrs(CosineAnnealingWarmRestarts(base, 4, 2, eta_min), 28)]
    for t in range(28):
        cycle = 0 if t < 4 else 1 if t < 12 else 2
        assert lrs[t] - eta_min == pytest.approx((plain[t] - eta_min) * 0.5**cycle, rel=1e-14)
    # warm-up in the first cycle only: linear from eta_min, the cosine over the rest.
    first = [
        lr[0]
        for lr in host_lrs(CosineAnnealingWarmRestarts(base, 8, 1, eta_min, warmup_steps=4), 16)
    ]
    assert first[:5] == pytest.approx([0.1, 0.325, 0.55, 0.775, 1.0], rel=1e-15)
    cosine = [float(eta_min + (base - eta_min) * cos_weight(p, 4)) for p in range(4)]
    assert first[4:8] == pytest.approx(cosine, rel=1e-15)
    assert first[8:16] == pytest.approx(_pytorch_warm_restarts(base, eta_min, 8, 1, 8), rel=1e-15)
    # ...or in every cycle; the restarts stay at T_0 * (1 + T_mult + ...).
    every = CosineAnnealingWarmRestarts(base, 4, 2, eta_min, warmup_steps=2, warmup="every")
    lrs = [lr[0] for lr in host_lrs(every, 12)]
    assert [lrs[0], lrs[4], lrs[2], lrs[6]] == [eta_min, eta_min, base, base]
    assert lrs[5] == pytest.approx((eta_min + base) / 2, rel=1e-15)
    for scheduler in (decayed, every):
        jitted = jit_values(scheduler.as_schedule(), np.arange(28))
        host = [lr[0] for lr in host_lrs(type(scheduler)(**_kwargs(scheduler)), 28)]
        np.testing.assert_allclose(jitted, host, rtol=0, atol=COS_ULPS * float32_ulp(base))


def _kwargs(scheduler):
    config = scheduler.state_dict()["config"]
    return dict(
        base_lr=config["base_lrs"],
        eta_min=config["eta_mins"],
        **{k: config[k] for k in ("T_0", "T_mult", "decay", "warmup_steps", "warmup")},
    )


def test_triangular_is_smiths_formula_exactly():
    base, high, size = 0.001, 0.006, 7
    scheduler = TriangularLR(base_lr=base, max_lr=high, step_size=size)
    got = [lr[0] for lr in host_lrs(scheduler, 60)]
    for t, value in enumerate(got):
        cycle = (1 + Fraction(t, 2 * size)).__floor__()
        x = abs(Fraction(t, size) - 2 * cycle + 1)
        exact = Fraction(base) + (Fraction(high) - Fraction(base)) * max(0, 1 - x)
        assert abs(Fraction(value) - exact) <= Fraction(2 * 2.0**-52 * high)
    cyclic = CyclicLR(base, high, step_size_up=size, step_size_down=size)
    assert got == [lr[0] for lr in host_lrs(cyclic, 60)]
    steps = np.arange(60)
    np.testing.assert_array_equal(
        jit_values(triangular_schedule(base, high, size), steps),
        jit_values(cyclic.as_schedule(), steps),
    )


def test_float32_accuracy_of_the_cosines():
    rng = np.random.default_rng(0)
    worst = 0.0
    for _ in range(12):
        base = float(10 ** rng.uniform(-4, 0))
        eta_min = base * float(rng.uniform(0, 0.5))
        total = int(rng.integers(1, 2500))
        for scheduler in (
            CosineAnnealingLR(base, T_max=int(rng.integers(1, 1000)), eta_min=eta_min),
            CosineAnnealingWarmRestarts(
                base, T_0=int(rng.integers(1, 60)), T_mult=int(rng.integers(1, 4)), eta_min=eta_min
            ),
            OneCycleLR(
                base,
                total,
                pct_start=float(rng.uniform(0, 0.5)),
                three_phase=bool(rng.integers(0, 2)),
                anneal_strategy=str(rng.choice(["cos", "linear"])),
            ),
        ):
            steps = min(total, 2500) if isinstance(scheduler, OneCycleLR) else 2500
            host = np.array([lr[0] for lr in host_lrs(scheduler, steps)])
            jitted = jit_values(scheduler.as_schedule(), np.arange(steps))
            worst = max(worst, float(np.max(np.abs(jitted - host))) / float32_ulp(base))
    assert worst <= COS_ULPS, worst


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


# -- LinearLR: PyTorch's LinearLR through the range test's linear ramp ----------------------------


@pytest.mark.parametrize(
    ("base", "start", "end", "total"),
    [(0.05, 0.05, 1.0, 40), (1.0, 1 / 3, 1.0, 5), (0.3, 1.0, 0.0, 7), (2.0, 0.5, 0.5, 3)],
)
def test_linear_is_pytorchs_closed_form_exactly(base, start, end, total):
    # PyTorch's _get_closed_form_lr: base * (start + (end - start) * min(total, t) / total),
    # in exact rational arithmetic; the host value is within two float64 ulps of the larger end.
    got = [lr[0] for lr in host_lrs(LinearLR(base, start, end, total), total + 5)]
    for t, value in enumerate(got):
        exact = Fraction(base) * (
            Fraction(start) + (Fraction(end) - Fraction(start)) * Fraction(min(t, total), total)
        )
        assert abs(Fraction(value) - exact) <= Fraction(F64 * base * max(start, end)), t
    assert got[0] == base * start
    assert got[total:] == [base * end] * 5  # from total_iters on, exactly the end


def test_linear_ramp_is_the_range_tests_ramp():
    ramp = LinearRamp.create("owner", 0.25, 0.75, 8)
    assert ramp.policy == RampPolicy(9, "linear")
    assert ramp.bounds(2.0) == (0.5, 1.5)
    assert ramp.config() == {"start_factor": 0.25, "end_factor": 0.75, "total_iters": 8}
    values = [
        ramp.policy.value(ramp.policy.progress(t, HOST), ramp.bounds(2.0), HOST) for t in range(10)
    ]
    assert values == [0.5 + 0.125 * t for t in range(9)] + [1.5]


def test_linear_float32_is_within_two_ulps_of_the_larger_end():
    rng = np.random.default_rng(1)
    for _ in range(20):
        base = float(10 ** rng.uniform(-5, 0))
        start, end = float(rng.uniform(1e-3, 1)), float(rng.uniform(0, 1))
        total = int(rng.integers(1, 5000))
        steps = np.arange(min(total + 10, 6000))
        host = [lr[0] for lr in host_lrs(LinearLR(base, start, end, total), len(steps))]
        jitted = jit_values(linear_schedule(base, start, end, total), steps)
        bound = base * max(start, end)
        np.testing.assert_allclose(jitted, host, rtol=0, atol=2 * float32_ulp(bound))
    # The ramp holds at the end for any step, up to int32 max.
    schedule = linear_schedule(0.3, 0.1, 0.9, 2**31 - 2)
    np.testing.assert_allclose(
        jit_values(schedule, [0, 2**30, 2**31 - 1]), [0.03, 0.15, 0.27], rtol=2e-7
    )


@pytest.mark.parametrize(
    ("interval", "inside", "outside"),
    [
        ("(0, 1]", [1e-300, 0.5, 1, np.float32(1.0)], [0, -0.1, 1.0000001, math.nan, math.inf]),
        ("[0, 1]", [0, 0.0, 1, 1.0], [-1e-300, 1.5, math.nan, -math.inf]),
        ("[0, 1)", [0, 0.999999], [1, 1.0, -0.5, math.nan]),
    ],
)
def test_in_unit_interval(interval, inside, outside):
    for value in inside:
        assert in_unit_interval("owner", "x", value, interval, hint="hint") == float(value)
    for value in outside:
        with pytest.raises(ValueError, match=rf"owner: `x` must be in \{interval[0]}0, 1"):
            in_unit_interval("owner", "x", value, interval, hint="hint")
    for value in ("0.5", True, [0.5], None):
        with pytest.raises(TypeError, match="`x` must be a real number"):
            in_unit_interval("owner", "x", value, interval, hint="hint")
