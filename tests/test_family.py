"""The scheduler family: OneCycleLR, CosineAnnealingLR, CosineAnnealingWarmRestarts, TriangularLR.

Reference vectors, both paths (host float64 and jitted float32), state round trips, and each
scheduler driving an optimizer through LRSchedulerCallback, checkpoints and resume.
"""

from __future__ import annotations

import json
import math
import re
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from helpers import float32_ulp, host_lrs, host_momentums, isclose_lists, jit_values

from flax_cyclic import (
    Checkpointer,
    CosineAnnealingLR,
    CosineAnnealingWarmRestarts,
    CyclicLR,
    LRSchedulerCallback,
    OneCycleLR,
    Trainer,
    TriangularLR,
    cosine_annealing_schedule,
    cosine_warm_restarts_schedule,
    onecycle_schedule,
    triangular_schedule,
)

# The jitted float32 cosine schedules are within 4 float32 ulps of the largest learning rate of the
# float64 values (measured: at most 3.0 over random configurations; the weight alone errs by up
# to ~1.3 ulps of 1, ~2.5 ulps of a bound just below a power of two).
COS_ULPS = 4
# The host path agrees to two float64 ulps with the formulas written out PyTorch's way and
# evaluated in extended precision (np.longdouble).
F64 = 2 * 2.0**-52
# The largest float below 1, the largest pct_start OneCycleLR accepts.
ALMOST_1 = float(np.nextafter(1.0, 0.0))
PI = np.longdouble("3.14159265358979323846264338327950288")


def cos_weight(numerator, denominator) -> np.longdouble:
    """(1 + cos(pi * numerator / denominator)) / 2, in extended precision."""
    return (1 + np.cos(PI * np.longdouble(numerator) / np.longdouble(denominator))) / 2


# PyTorch's test_lrscheduler.py vectors (LR and momentum at t = 0..9).
ONECYCLE_VECTORS = [
    (
        dict(max_lr=25.0, total_steps=10, anneal_strategy="linear", pct_start=0.3),
        dict(final_div_factor=2.0),
        [1, 13, 25, 21.5, 18, 14.5, 11, 7.5, 4, 0.5],
        [22, 11.5, 1, 4, 7, 10, 13, 16, 19, 22],
    ),
    (
        dict(max_lr=25.0, total_steps=10, anneal_strategy="linear", pct_start=0.4),
        dict(final_div_factor=4.0, three_phase=True),
        [1, 9, 17, 25, 17, 9, 1, 0.75, 0.5, 0.25],
        [22, 15, 8, 1, 8, 15, 22, 22, 22, 22],
    ),
]


def _onecycle(config, extra, **kwargs):
    return OneCycleLR(**config, **extra, base_momentum=1.0, max_momentum=22.0, **kwargs)


@pytest.mark.parametrize(("config", "extra", "lrs", "momentums"), ONECYCLE_VECTORS)
def test_onecycle_reference_vectors_on_both_paths(config, extra, lrs, momentums):
    scheduler = _onecycle(config, extra)
    assert isclose_lists(host_lrs(scheduler, 10), [[v] for v in lrs])
    assert isclose_lists(host_momentums(_onecycle(config, extra), 10), [[v] for v in momentums])
    steps = np.arange(10)
    for schedule, expected in (
        (scheduler.as_schedule(0), lrs),
        (scheduler.as_momentum_schedule(0), momentums),
    ):
        jitted = jit_values(schedule, steps)
        np.testing.assert_allclose(jitted, expected, rtol=0, atol=float32_ulp(25.0))
        eager = np.array([schedule(int(t)) for t in steps])
        np.testing.assert_array_equal(eager, jitted)  # eager == jit, bitwise
    pure = onecycle_schedule(**config, **extra)
    np.testing.assert_array_equal(
        jit_values(pure, steps), jit_values(scheduler.as_schedule(), steps)
    )


def test_onecycle_from_epochs_and_steps_per_epoch():
    a = OneCycleLR(max_lr=0.1, epochs=3, steps_per_epoch=7)
    b = OneCycleLR(max_lr=0.1, total_steps=21)
    assert a.total_steps == 21
    assert host_lrs(a, 21) == host_lrs(b, 21)


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


def test_onecycle_stops_at_the_end_with_the_right_counts():
    scheduler = OneCycleLR(max_lr=1.0, total_steps=10)
    for _ in range(10):  # updates 0..9, each followed by step()
        scheduler.step()
    assert scheduler.last_epoch == 10
    assert scheduler.get_last_lr() == [scheduler.min_lrs[0]]  # holds the minimum
    with pytest.raises(ValueError, match="past the end") as caught:
        scheduler.step()
    message = str(caught.value)
    assert "step 11 is past the end" in message
    assert "total_steps=10 covers the updates at steps 0..9" in message
    assert "11 step() calls from step 0, 1 more than the schedule allows" in message
    assert scheduler.last_epoch == 10  # the failed step changed nothing
    with pytest.raises(ValueError, match="step 12 is past the end"):
        OneCycleLR(max_lr=1.0, total_steps=10, last_epoch=12)
    with pytest.raises(ValueError, match="step 13 is past the end"):
        scheduler.step(13)
    state = scheduler.state_dict()
    state["last_epoch"] = 11
    with pytest.raises(ValueError, match="step 11 is past the end"):
        scheduler.load_state_dict(state)
    assert scheduler.last_epoch == 10
    # The pure schedule cannot raise under jit: it holds the minimum.
    values = jit_values(scheduler.as_schedule(), [9, 10, 11, 10**6])
    np.testing.assert_array_equal(values, np.float32(scheduler.min_lrs[0]))


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


PCT_START_1_MESSAGE = (
    "{owner}: `pct_start` must be below 1, got pct_start={value!r} ({kind}): the rise to "
    "max_lr would take every step, leaving none to anneal (PyTorch divides by zero there). "
    "Pass a value below 1, e.g. 0.3; for a pure rise, use a constant or linear warm-up "
    "schedule such as optax.linear_schedule."
)


@pytest.mark.parametrize(
    ("make", "owner"),
    [
        (lambda pct: OneCycleLR(max_lr=2.0, total_steps=10, pct_start=pct), "OneCycleLR"),
        (
            lambda pct: OneCycleLR(max_lr=2.0, epochs=2, steps_per_epoch=5, pct_start=pct),
            "OneCycleLR",
        ),
        (lambda pct: OneCycleLR(max_lr=2.0, total_steps=1, pct_start=pct), "OneCycleLR"),
        (
            lambda pct: onecycle_schedule(2.0, total_steps=10, pct_start=pct),
            "onecycle_schedule",
        ),
        (
            lambda pct: onecycle_schedule(2.0, total_steps=1, pct_start=pct),
            "onecycle_schedule",
        ),
    ],
)
@pytest.mark.parametrize("value", [1.0, 1, np.float32(1.0)], ids=["float", "int", "float32"])
def test_onecycle_refuses_pct_start_1(make, owner, value):
    # With pct_start == 1 the rise ends at step total_steps - 1: the value would hold max_lr to
    # the end instead of annealing.
    message = PCT_START_1_MESSAGE.format(owner=owner, value=value, kind=type(value).__name__)
    with pytest.raises(ValueError, match=re.escape(message)) as caught:
        make(value)
    assert str(caught.value) == message


def test_onecycle_pct_start_above_1_names_the_range():
    message = (
        "OneCycleLR: `pct_start` must be in [0, 1), got pct_start=1.5. It is the fraction of "
        "the steps spent rising to max_lr, e.g. 0.3."
    )
    with pytest.raises(ValueError, match=re.escape(message)) as caught:
        OneCycleLR(max_lr=0.1, total_steps=10, pct_start=1.5)
    assert str(caught.value) == message


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


FAMILY = {
    "OneCycleLR": lambda **kw: OneCycleLR(
        max_lr=[0.1, 0.05], total_steps=40, three_phase=True, **kw
    ),
    "CosineAnnealingLR": lambda **kw: CosineAnnealingLR(
        base_lr=[0.1, 0.05], T_max=15, eta_min=0.001, **kw
    ),
    "CosineAnnealingWarmRestarts": lambda **kw: CosineAnnealingWarmRestarts(
        base_lr=[0.1, 0.05], T_0=4, T_mult=2, decay=0.8, warmup_steps=2, warmup="every", **kw
    ),
    "TriangularLR": lambda **kw: TriangularLR(base_lr=[0.01, 0.02], max_lr=0.1, step_size=5, **kw),
}


@pytest.mark.parametrize("name", sorted(FAMILY))
def test_state_round_trip_and_last_epoch_resume(name):
    make = FAMILY[name]
    scheduler = make()
    for _ in range(17):
        scheduler.step()
    state = json.loads(json.dumps(scheduler.state_dict()))
    assert state["format"] == f"flax_cyclic.{name}"
    restored = make()
    restored.load_state_dict(state)
    assert restored.last_epoch == 17
    assert host_lrs(restored, 20) == host_lrs(scheduler, 20)
    # last_epoch=N continues exactly as an uninterrupted run does.
    full = host_lrs(make(), 40)
    assert host_lrs(make(last_epoch=11), 29) == full[11:]
    if make().get_last_momentum() is not None:
        assert host_momentums(make(last_epoch=11), 29) == host_momentums(make(), 40)[11:]
    # A different configuration is refused, with the differing fields named.
    other = FAMILY["TriangularLR" if name != "TriangularLR" else "CosineAnnealingLR"]()
    with pytest.raises(ValueError, match="not 'flax_cyclic"):
        other.load_state_dict(state)
    changed = json.loads(json.dumps(state))
    key = sorted(changed["config"])[0]
    changed["config"][key] = "something else"
    with pytest.raises(ValueError, match=f"{key}: saved 'something else'"):
        make().load_state_dict(changed)


@pytest.mark.parametrize("name", sorted(FAMILY))
def test_every_group_and_both_paths(name):
    scheduler = FAMILY[name]()
    host = np.array(host_lrs(FAMILY[name](), 40))
    for group in range(2):
        jitted = jit_values(scheduler.as_schedule(group), np.arange(40))
        np.testing.assert_allclose(jitted, host[:, group], rtol=0, atol=COS_ULPS * float32_ulp(0.1))
        eager = np.array([scheduler.as_schedule(group)(t) for t in range(0, 40, 7)])
        np.testing.assert_array_equal(eager, jitted[::7])
    assert scheduler(5) == scheduler.as_schedule(0)(5)


# -- through the callback, the Trainer, checkpoints and resume --------------------------------


class MLP(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(8, 16, rngs=rngs)
        self.out = nnx.Linear(16, 3, rngs=rngs)

    def __call__(self, x):
        return self.out(jax.nn.relu(self.hidden(x)))


class Log:
    def __init__(self):
        self.scalars: dict[int, dict] = {}

    def write_scalars(self, step, scalars):
        self.scalars[int(step)] = dict(scalars)


def _data(count=6):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(count, 16, 8)).astype(np.float32)
    return [(xb, np.digitize(xb.sum(1), [-1.5, 1.5]).astype(np.int32)) for xb in x]


SINGLE = {
    "OneCycleLR": lambda: OneCycleLR(max_lr=0.1, total_steps=20),
    "CosineAnnealingLR": lambda: CosineAnnealingLR(base_lr=0.1, T_max=20, eta_min=0.001),
    "CosineAnnealingWarmRestarts": lambda: CosineAnnealingWarmRestarts(
        base_lr=0.1, T_0=3, T_mult=2, decay=0.7, warmup_steps=1
    ),
    "TriangularLR": lambda: TriangularLR(base_lr=0.01, max_lr=0.1, step_size=4),
}


def _trainer(directory, name, crash_at=None):
    from test_checkpoint import CrashAt  # the same simulated Ctrl-C

    model = MLP(nnx.Rngs(0))
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.0, momentum=0.9)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    log = Log()
    callbacks = [LRSchedulerCallback(SINGLE[name](), writer=log)]
    if crash_at is not None:
        callbacks.append(CrashAt(crash_at))
    checkpointer = Checkpointer(directory, every_steps=4, max_to_keep=10)
    return Trainer(model, optimizer, callbacks=callbacks, checkpointer=checkpointer), log


def _leaves(trainer):
    return jax.tree.leaves(
        jax.tree.map(np.asarray, (nnx.state(trainer.model), nnx.state(trainer.optimizer)))
    )


@pytest.mark.parametrize("name", sorted(SINGLE))
def test_each_scheduler_drives_the_optimizer_and_resumes_exactly(tmp_path, name):
    reference, reference_log = _trainer(tmp_path / "reference", name)
    reference.fit(_data(), num_steps=20)
    expected = SINGLE[name]()
    assert sorted(reference_log.scalars) == list(range(20))
    for step, scalars in reference_log.scalars.items():
        expected.step(step)
        assert scalars["learning_rate"] == expected.get_last_lr()[0]
        if expected.get_last_momentum() is not None:
            assert scalars["momentum"] == expected.get_last_momentum()[0]
    # The optimizer holds the value for the next update: step 20's (OneCycleLR: its minimum).
    expected.step(20)
    held = reference.optimizer.opt_state.hyperparams["learning_rate"].get_value()
    assert held == np.float32(expected.get_last_lr()[0])

    crashed, _first_log = _trainer(tmp_path / "run", name, crash_at=10)
    with pytest.raises(KeyboardInterrupt):
        crashed.fit(_data(), num_steps=20)
    crashed.checkpointer.wait()
    resumed, log = _trainer(tmp_path / "run", name)
    assert resumed.fit(_data(), num_steps=20).resumed_from == 8
    for a, b in zip(_leaves(resumed), _leaves(reference), strict=True):
        np.testing.assert_array_equal(a, b)
    assert sorted(log.scalars) == list(range(8, 20))
    assert all(log.scalars[s] == reference_log.scalars[s] for s in log.scalars)


@pytest.mark.parametrize(("num_steps", "refused"), [(5, False), (6, True)])
def test_onecycle_run_longer_than_its_schedule_is_refused_before_training(num_steps, refused):
    model = MLP(nnx.Rngs(0))
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.0, momentum=0.9)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    callback = LRSchedulerCallback(OneCycleLR(max_lr=0.1, total_steps=5))
    trainer = Trainer(model, optimizer, callbacks=[callback], progress=False)
    if not refused:  # total_steps updates: the whole schedule
        trainer.fit(_data(), num_steps=num_steps)
        assert int(optimizer.step.get_value()) == 5
        return
    with pytest.raises(
        ValueError, match=r"plans 6 parameter updates but OneCycleLR\(total_steps=5"
    ):
        trainer.fit(_data(), num_steps=num_steps)
    assert int(optimizer.step.get_value()) == 0  # before the first update


def test_onecycle_momentum_reaches_adam_b1():
    model = MLP(nnx.Rngs(0))
    tx = optax.inject_hyperparams(optax.adam)(learning_rate=0.0)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    scheduler = OneCycleLR(max_lr=0.01, total_steps=10)
    Trainer(model, optimizer, callbacks=[LRSchedulerCallback(scheduler)]).fit(_data(), num_steps=3)
    b1 = optimizer.opt_state.hyperparams["b1"].get_value()
    assert b1 == np.float32(scheduler.get_last_momentum()[0])
    assert scheduler.last_epoch == 3
    assert 0.85 < float(b1) < 0.95


# -- bad input -----------------------------------------------------------------------------------

BAD = [
    (lambda: OneCycleLR(max_lr=0.1), ValueError, "pass total_steps, or both epochs"),
    (lambda: OneCycleLR(max_lr=0.1, epochs=3), ValueError, "steps_per_epoch=None"),
    (
        lambda: OneCycleLR(max_lr=0.1, total_steps=0),
        ValueError,
        "`total_steps` must be an integer in [1, 2**31 - 1], got total_steps=0 (int).",
    ),
    (lambda: OneCycleLR(max_lr=0.1, total_steps=-3), ValueError, "total_steps=-3"),
    (lambda: OneCycleLR(max_lr=0.1, total_steps=10.0), TypeError, "must be an integer"),
    (
        lambda: OneCycleLR(max_lr=0.1, total_steps=10, epochs=2, steps_per_epoch=5),
        ValueError,
        "not both",
    ),
    (lambda: OneCycleLR(max_lr=0.1, epochs=0, steps_per_epoch=5), ValueError, "`epochs`"),
    (lambda: OneCycleLR(max_lr=0.1, total_steps=10, pct_start=1.5), ValueError, "pct_start=1.5"),
    (lambda: OneCycleLR(max_lr=0.1, total_steps=10, pct_start=-0.1), ValueError, "pct_start=-0.1"),
    (
        lambda: OneCycleLR(max_lr=0.1, total_steps=10, pct_start=0.6, three_phase=True),
        ValueError,
        "at most 0.5",
    ),
    (
        lambda: OneCycleLR(max_lr=0.1, total_steps=10, anneal_strategy="cosine"),
        ValueError,
        "'cos', 'linear'",
    ),
    (lambda: OneCycleLR(max_lr=0.1, total_steps=10, div_factor=0), ValueError, "div_factor=0"),
    (
        lambda: OneCycleLR(max_lr=0.1, total_steps=10, final_div_factor=-1.0),
        ValueError,
        "final_div_factor",
    ),
    (lambda: OneCycleLR(max_lr=0.1, total_steps=10, three_phase=1), TypeError, "three_phase=1"),
    (
        lambda: OneCycleLR(max_lr=0.1, total_steps=10, base_momentum=0.99),
        ValueError,
        "must not exceed",
    ),
    (
        lambda: OneCycleLR(max_lr=[0.1, 0.2], total_steps=10, max_momentum=[0.9] * 3),
        ValueError,
        "same length",
    ),
    (
        lambda: CosineAnnealingLR(0.1, T_max=0),
        ValueError,
        "`T_max` must be an integer in [1, 1073741823], got T_max=0 (int).",
    ),
    (
        lambda: CosineAnnealingLR(0.1, T_max=2**30),
        ValueError,
        "`T_max` must be an integer in [1, 1073741823], got T_max=1073741824 (int).",
    ),
    (lambda: CosineAnnealingLR(-0.1, T_max=5), ValueError, "base_lr=-0.1"),
    (lambda: CosineAnnealingLR(0.1, T_max=5, eta_min=math.nan), ValueError, "eta_min=nan"),
    (
        lambda: CosineAnnealingWarmRestarts(0.1, T_0=0),
        ValueError,
        "`T_0` must be an integer in [1, 2**31 - 1], got T_0=0 (int).",
    ),
    (lambda: CosineAnnealingWarmRestarts(0.1, T_0=5, T_mult=0), ValueError, "`T_mult`"),
    (lambda: CosineAnnealingWarmRestarts(0.1, T_0=5, T_mult=1.5), TypeError, "T_mult=1.5"),
    (lambda: CosineAnnealingWarmRestarts(0.1, T_0=5, decay=1.5), ValueError, "decay=1.5"),
    (lambda: CosineAnnealingWarmRestarts(0.1, T_0=5, decay=0), ValueError, "decay=0"),
    (
        lambda: CosineAnnealingWarmRestarts(0.1, T_0=5, warmup_steps=5),
        ValueError,
        "smaller than T_0",
    ),
    (
        lambda: CosineAnnealingWarmRestarts(0.1, T_0=5, warmup="each"),
        ValueError,
        "'first', 'every'",
    ),
    (
        lambda: TriangularLR(0.1, 0.2, step_size=0),
        ValueError,
        "`step_size` must be an integer in [1, 1073741823], got step_size=0 (int).",
    ),
    (lambda: triangular_schedule([0.1], 0.2), TypeError, "flax_cyclic.TriangularLR"),
    (lambda: onecycle_schedule(0.1, total_steps=None), ValueError, "pass total_steps"),
    (lambda: cosine_annealing_schedule(0.1, T_max=3.5), TypeError, "T_max=3.5"),
    (
        lambda: cosine_warm_restarts_schedule(0.1, T_0=4, warmup_steps=-1),
        ValueError,
        "warmup_steps=-1",
    ),
]


@pytest.mark.parametrize(("make", "error", "fragment"), BAD)
def test_bad_input_is_a_clear_error(make, error, fragment):
    with pytest.raises(error) as caught:
        make()
    assert fragment in str(caught.value)


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


def test_pure_schedules_take_traced_and_unsigned_steps():
    schedule = cosine_warm_restarts_schedule(1.0, T_0=3, T_mult=2)
    step = jnp.asarray(7, jnp.uint32)
    assert jax.jit(schedule)(step) == schedule(7)
    with pytest.raises(TypeError, match="must be an integer"):
        schedule(jnp.asarray(1.0))
