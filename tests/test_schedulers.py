"""The stateful schedulers, CyclicLR and its family (LinearLR and SequentialLR among them):
position semantics, attributes, reference vectors, state dict, host/jit agreement."""

from __future__ import annotations

import json
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import (
    COS_ULPS,
    float32_ulp,
    host_lrs,
    host_momentums,
    isclose_lists,
    jit_values,
    raises_exactly,
)

from flax_cyclic import (
    CosineAnnealingLR,
    CosineAnnealingWarmRestarts,
    CyclicLR,
    LinearLR,
    LRScheduler,
    OneCycleLR,
    ReduceLROnPlateau,
    SequentialLR,
    TriangularLR,
    linear_schedule,
    onecycle_schedule,
)

CONFIGS = {
    "triangular": dict(base_lr=0.1, max_lr=0.5, step_size_up=3, step_size_down=5),
    "triangular2": dict(base_lr=[0.1, 0.2], max_lr=[0.5, 1.0], step_size_up=4, mode="triangular2"),
    "exp_range": dict(base_lr=0.1, max_lr=0.5, step_size_up=2, mode="exp_range", gamma=0.95),
    "scale_fn_cycle": dict(
        base_lr=0.1, max_lr=0.5, step_size_up=3, scale_fn=lambda c: 1 / c, scale_mode="cycle"
    ),
    "scale_fn_iterations": dict(
        base_lr=0.1, max_lr=0.5, step_size_up=3, scale_fn=lambda t: 0.99**t, scale_mode="iterations"
    ),
    "momentum": dict(
        base_lr=[0.1, 0.2],
        max_lr=0.5,
        step_size_up=3,
        cycle_momentum=True,
        base_momentum=[0.8, 0.85],
        max_momentum=0.95,
    ),
}


@pytest.fixture(params=sorted(CONFIGS), name="config")
def _config(request):
    return CONFIGS[request.param]


def test_default_last_epoch_starts_at_base_lr():
    scheduler = CyclicLR()
    assert scheduler.last_epoch == 0
    assert scheduler.get_lr() == scheduler.get_last_lr() == [1e-3]
    assert (scheduler.base_lrs, scheduler.max_lrs) == ((1e-3,), (1e-2,))
    assert (scheduler.step_size_up, scheduler.step_size_down, scheduler.total_size) == (
        2000,
        2000,
        4000,
    )
    assert scheduler.get_last_momentum() is None


@pytest.mark.parametrize("start", [0, 1, 3, 7, 8, 29])
def test_last_epoch_n_yields_the_uninterrupted_run_from_n_on(config, start):
    uninterrupted = host_lrs(CyclicLR(**config), start + 30)
    resumed = host_lrs(CyclicLR(**config, last_epoch=start), 30)
    assert resumed == uninterrupted[start:]
    if config.get("cycle_momentum"):
        momentums = host_momentums(CyclicLR(**config), start + 30)
        assert host_momentums(CyclicLR(**config, last_epoch=start), 30) == momentums[start:]


def test_step_with_epoch_jumps_and_setter_is_the_same(config):
    reference = host_lrs(CyclicLR(**config), 40)
    scheduler = CyclicLR(**config)
    for epoch in (17, 3, 39, 0):  # forwards and backwards
        scheduler.step(epoch=epoch)
        assert scheduler.last_epoch == epoch
        assert scheduler.get_last_lr() == scheduler.get_lr() == reference[epoch]
    scheduler.last_epoch = 25
    assert scheduler.get_last_lr() == reference[25]
    scheduler.step()
    assert (scheduler.last_epoch, scheduler.get_last_lr()) == (26, reference[26])


def test_get_last_lr_returns_a_copy():
    scheduler = CyclicLR(0.1, 0.5, step_size_up=3)
    scheduler.get_last_lr().append(99.0)
    scheduler.get_last_lr()[0] = 99.0
    assert scheduler.get_last_lr() == [0.1]


@pytest.mark.parametrize(
    "name",
    [
        *("base_lrs", "max_lrs", "step_size_up", "step_size_down", "mode", "gamma", "scale_fn"),
        *("scale_mode", "cycle_momentum", "base_momentums", "max_momentums", "total_size"),
    ],
)
def test_configuration_is_read_only(name):
    scheduler = CyclicLR(0.1, 0.5, step_size_up=3)
    with pytest.raises(AttributeError):
        setattr(scheduler, name, getattr(scheduler, name))


def test_attributes_report_the_configuration():
    def scale_fn(x):
        return 1.0

    scheduler = CyclicLR(
        [0.1, 0.2], 0.5, 3, 5, "exp_range", 0.9, scale_fn, "iterations", 4, cycle_momentum=True
    )
    assert scheduler.base_lrs == (0.1, 0.2)
    assert scheduler.max_lrs == (0.5, 0.5)
    assert (scheduler.step_size_up, scheduler.step_size_down) == (3, 5)
    assert (scheduler.mode, scheduler.gamma, scheduler.scale_mode) == (
        "exp_range",
        0.9,
        "iterations",
    )
    assert scheduler.scale_fn is scale_fn
    assert scheduler.cycle_momentum is True
    assert (scheduler.base_momentums, scheduler.max_momentums) == ((0.8, 0.8), (0.9, 0.9))
    assert scheduler.num_groups == 2
    assert scheduler.last_epoch == 4


def test_cycle_and_position_follow_the_asymmetric_cycle():
    scheduler = CyclicLR(1.0, 5.0, step_size_up=2, step_size_down=6)
    seen = []
    for _ in range(17):
        seen.append((scheduler.cycle, scheduler.cycle_position))
        scheduler.step()
    assert seen == [(1 + t // 8, (t % 8) / 8) for t in range(17)]


def test_custom_scale_fn_receives_cycle_numbers_or_steps():
    received = {"cycle": [], "iterations": []}
    for scale_mode, calls in received.items():

        def scale_fn(x, calls=calls):
            calls.append(x)
            return 1.0

        host_lrs(CyclicLR(1.0, 2.0, step_size_up=2, scale_fn=scale_fn, scale_mode=scale_mode), 9)
    # scale_fn runs once at construction and once per step() (9 steps).
    assert received["cycle"] == [1, 1, 1, 1, 2, 2, 2, 2, 3, 3]
    assert received["iterations"] == list(range(10))
    assert all(type(x) is int for calls in received.values() for x in calls)


def test_custom_scale_fn_returning_nan_or_garbage_is_an_error():
    with pytest.raises(ValueError, match=r"scale_fn\(1\) returned nan"):
        CyclicLR(0.1, 0.5, scale_fn=lambda c: float("nan"))
    with pytest.raises(TypeError, match=r"scale_fn\(0\) returned 'x'"):
        CyclicLR(0.1, 0.5, scale_fn=lambda t: "x", scale_mode="iterations")


def test_host_and_jit_paths_agree(config):
    # float32 against float64: within two float32 ulps of the larger bound.
    scheduler = CyclicLR(**config)
    host = np.array(host_lrs(CyclicLR(**config), 50))
    for group in range(scheduler.num_groups):
        jitted = jit_values(scheduler.as_schedule(group), np.arange(50))
        ulp = float32_ulp(max(scheduler.base_lrs[group], scheduler.max_lrs[group]))
        np.testing.assert_allclose(jitted, host[:, group], rtol=0, atol=2 * ulp)
    if scheduler.cycle_momentum:
        momentums = np.array(host_momentums(CyclicLR(**config), 50))
        for group in range(scheduler.num_groups):
            jitted = jit_values(scheduler.as_momentum_schedule(group), np.arange(50))
            ulp = float32_ulp(scheduler.max_momentums[group])
            np.testing.assert_allclose(jitted, momentums[:, group], rtol=0, atol=2 * ulp)


def test_host_and_jit_paths_agree_in_float64(config):
    # With x64 the jitted path computes in float64 too: the same formula, to the last bits.
    scheduler = CyclicLR(**config)
    host = np.array(host_lrs(CyclicLR(**config), 50))
    with jax.enable_x64(True):
        for group in range(scheduler.num_groups):
            schedule = jax.jit(jax.vmap(scheduler.as_schedule(group)))
            jitted = np.asarray(schedule(np.arange(50, dtype=np.int64)))
            assert jitted.dtype == np.float64
            np.testing.assert_allclose(jitted, host[:, group], rtol=4e-16, atol=0)


def test_calling_the_scheduler_is_group_zero():
    scheduler = CyclicLR([0.1, 0.2], [0.5, 0.6], step_size_up=3)
    assert float(scheduler(4)) == float(scheduler.as_schedule(0)(4))
    assert float(jax.jit(scheduler)(2)) == np.float32(0.1 + 0.4 * 2 / 3)


def test_group_index_is_checked():
    scheduler = CyclicLR([0.1, 0.2], 0.5)
    with pytest.raises(ValueError, match=r"group.*\[0, 1\].*got group=2"):
        scheduler.as_schedule(2)
    with pytest.raises(TypeError, match="group=True"):
        scheduler.as_schedule(True)
    with pytest.raises(ValueError, match="cycle_momentum=True"):
        scheduler.as_momentum_schedule(0)


# -- state dict ---------------------------------------------------------------------------------


def test_state_dict_is_plain_versioned_json():
    scheduler = CyclicLR([0.1, 0.2], 0.5, step_size_up=3, last_epoch=7)
    state = scheduler.state_dict()
    assert json.loads(json.dumps(state)) == state
    assert state["format"] == "flax_cyclic.CyclicLR"
    assert state["version"] == LRScheduler.STATE_VERSION == 1
    assert state["last_epoch"] == 7
    assert state["config"]["base_lrs"] == [0.1, 0.2]


def test_state_round_trips_through_json(config):
    scheduler = CyclicLR(**config)
    for _ in range(11):
        scheduler.step()
    restored = CyclicLR(**config)
    restored.load_state_dict(json.loads(json.dumps(scheduler.state_dict())))
    assert restored.last_epoch == 11
    assert host_lrs(restored, 20) == host_lrs(scheduler, 20)


def test_state_records_a_custom_scale_fn_by_name_and_code():
    def decay(cycle):
        return 0.5**cycle

    state = CyclicLR(0.1, 0.5, scale_fn=decay).state_dict()
    assert state["config"]["scale_fn"].startswith(
        "test_state_records_a_custom_scale_fn_by_name_and_code.<locals>.decay (code "
    )
    assert "<function" not in json.dumps(state)


def _halving(factor):
    return lambda cycle: factor**cycle


class _Scale:
    def __call__(self, cycle):
        return 1 / cycle


@pytest.mark.parametrize(
    ("saved_fn", "new_fn", "same"),
    [
        (lambda c: 1 / c, lambda c: 1 / c, True),
        (lambda c: 1 / c, lambda c: 1 / c**2, False),  # both named '<lambda>'
        (_halving(0.5), _halving(0.5), True),
        (_halving(0.5), _halving(0.7), False),  # the same code, another closure value
        (_Scale(), _Scale(), False),  # not comparable by code: refused
    ],
    ids=["same lambda", "other lambda", "same closure", "other closure", "callable object"],
)
def test_a_resume_with_another_scale_fn_is_refused(saved_fn, new_fn, same):
    saved = json.loads(json.dumps(CyclicLR(0.1, 0.5, scale_fn=saved_fn, last_epoch=3).state_dict()))
    restored = CyclicLR(0.1, 0.5, scale_fn=new_fn)
    if same:
        restored.load_state_dict(saved)
        assert restored.last_epoch == 3
        return
    with pytest.raises(ValueError, match=r"^CyclicLR.load_state_dict: the state was saved with a "):
        restored.load_state_dict(saved)
    restored.load_state_dict(saved, strict=False)  # the position, with the new function
    assert restored.last_epoch == 3


def test_load_with_a_different_config_lists_the_differences():
    saved = CyclicLR(0.1, 0.5, step_size_up=3, mode="triangular2", last_epoch=9).state_dict()
    other = CyclicLR(0.1, 0.6, step_size_up=4, mode="triangular2")
    with pytest.raises(ValueError, match="different configuration") as error:
        other.load_state_dict(saved)
    message = str(error.value)
    assert "max_lrs: saved [0.5], now [0.6]" in message
    assert "step_size_up: saved 3, now 4" in message
    assert "step_size_down: saved 3, now 4" in message
    assert "mode" not in message
    assert "strict=False" in message
    assert other.last_epoch == 0  # a failed load changes nothing


def test_load_non_strict_keeps_the_new_config_and_takes_the_counter():
    saved = CyclicLR(0.1, 0.5, step_size_up=3, last_epoch=9).state_dict()
    other = CyclicLR(0.2, 0.6, step_size_up=3)
    other.load_state_dict(saved, strict=False)
    assert other.last_epoch == 9
    assert other.max_lrs == (0.6,)
    assert other.get_last_lr() == CyclicLR(0.2, 0.6, step_size_up=3, last_epoch=9).get_last_lr()


def _state(**changes):
    state = CyclicLR(0.1, 0.5, step_size_up=3, last_epoch=5).state_dict()
    state.update(changes)
    return state


@pytest.mark.parametrize(
    ("state", "error", "match"),
    [
        ([("last_epoch", 3)], TypeError, "must be a mapping made by state_dict"),
        ({"last_epoch": 3}, ValueError, r"missing keys \['format', 'version', 'config'\]"),
        (_state(extra=1), ValueError, r"unexpected keys \['extra'\]"),
        (_state(version=2), ValueError, "state version 2 is not supported.*version 1"),
        (_state(version="1"), TypeError, "`version` must be an int"),
        (_state(format="torch.CyclicLR"), ValueError, "saved by 'torch.CyclicLR'"),
        (_state(last_epoch="5"), TypeError, r"`last_epoch` must be an integer, got last_epoch='5'"),
        (_state(last_epoch=5.0), TypeError, r"`last_epoch` must be an integer"),
        (_state(last_epoch=-2), ValueError, "last_epoch=-2"),
        (_state(config=[1]), TypeError, "`config` must be a mapping"),
    ],
)
def test_load_rejects_malformed_states(state, error, match):
    scheduler = CyclicLR(0.1, 0.5, step_size_up=3)
    with pytest.raises(error, match=match):
        scheduler.load_state_dict(state)
    assert scheduler.last_epoch == 0


def test_repr_names_the_configuration_and_position():
    text = repr(CyclicLR(0.1, 0.5, step_size_up=3, last_epoch=2))
    assert text.startswith("CyclicLR(base_lrs=[0.1], max_lrs=[0.5], step_size_up=3")
    assert text.endswith("last_epoch=2)")


# -- the family: OneCycleLR, CosineAnnealingLR, CosineAnnealingWarmRestarts, TriangularLR ------


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
    "LinearLR": lambda **kw: LinearLR(
        base_lr=[0.1, 0.05], start_factor=0.1, end_factor=0.8, total_iters=23, **kw
    ),
    "SequentialLR": lambda **kw: SequentialLR(
        [
            LinearLR([0.1, 0.05], start_factor=0.1, total_iters=10),
            CyclicLR([0.01, 0.02], 0.1, step_size_up=4, cycle_momentum=True),
            CosineAnnealingLR([0.1, 0.05], T_max=9, eta_min=0.001),
        ],
        milestones=[8, 19],
        **kw,
    ),
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


def test_onecycle_configuration_is_read_only_and_reported():
    scheduler = OneCycleLR(
        [0.1, 0.2],
        total_steps=50,
        pct_start=0.25,
        anneal_strategy="linear",
        base_momentum=[0.8, 0.75],
        max_momentum=0.9,
        div_factor=10.0,
        final_div_factor=100.0,
        three_phase=True,
    )
    assert (scheduler.base_momentums, scheduler.max_momentums) == ((0.8, 0.75), (0.9, 0.9))
    assert (scheduler.pct_start, scheduler.anneal_strategy, scheduler.three_phase) == (
        0.25,
        "linear",
        True,
    )
    assert (scheduler.div_factor, scheduler.final_div_factor) == (10.0, 100.0)
    assert scheduler.max_lrs == (0.1, 0.2)
    assert scheduler.base_lrs == pytest.approx((0.01, 0.02))
    assert scheduler.min_lrs == pytest.approx((1e-4, 2e-4))
    assert scheduler.total_steps == 50
    for name in (
        *("base_momentums", "max_momentums", "pct_start", "div_factor", "final_div_factor"),
        *("anneal_strategy", "three_phase", "max_lrs", "min_lrs", "total_steps"),
    ):
        with pytest.raises(AttributeError):
            setattr(scheduler, name, getattr(scheduler, name))
    defaults = OneCycleLR(0.1, total_steps=10)
    assert (defaults.pct_start, defaults.anneal_strategy, defaults.three_phase) == (
        0.3,
        "cos",
        False,
    )
    assert (defaults.div_factor, defaults.final_div_factor) == (25.0, 1e4)
    assert (defaults.base_momentums, defaults.max_momentums) == ((0.85,), (0.95,))


@pytest.mark.parametrize("name", sorted(FAMILY))
def test_step_schedulers_do_not_require_a_metric(name):
    scheduler = FAMILY[name]()
    assert scheduler.requires_metric is False
    with pytest.raises(AttributeError):
        scheduler.requires_metric = True


# -- LinearLR -------------------------------------------------------------------------------------


def test_linear_lr_values_and_attributes():
    scheduler = LinearLR([0.5, 2.0], start_factor=0.5, total_iters=4)
    assert host_lrs(scheduler, 7) == [
        [0.25, 1.0],
        [0.3125, 1.25],
        [0.375, 1.5],
        [0.4375, 1.75],
        [0.5, 2.0],
        [0.5, 2.0],
        [0.5, 2.0],
    ]
    assert (scheduler.base_lrs, scheduler.start_factor, scheduler.end_factor) == (
        (0.5, 2.0),
        0.5,
        1.0,
    )
    assert (scheduler.total_iters, scheduler.preview_steps) == (4, 5)
    assert scheduler.get_last_momentum() is None
    defaults = LinearLR(0.3)
    assert (defaults.start_factor, defaults.end_factor, defaults.total_iters) == (1 / 3, 1.0, 5)
    decay = LinearLR(1.0, start_factor=1.0, end_factor=0.0, total_iters=2)
    assert host_lrs(decay, 4) == [[1.0], [0.5], [0.0], [0.0]]
    for name in ("base_lrs", "start_factor", "end_factor", "total_iters"):
        with pytest.raises(AttributeError):
            setattr(scheduler, name, getattr(scheduler, name))


def test_linear_lr_shares_its_formula_with_linear_schedule():
    scheduler = LinearLR(0.3, start_factor=0.05, end_factor=0.9, total_iters=37)
    pure = linear_schedule(0.3, start_factor=0.05, end_factor=0.9, total_iters=37)
    steps = np.arange(60)
    np.testing.assert_array_equal(
        jit_values(pure, steps), jit_values(scheduler.as_schedule(), steps)
    )
    host = [lr[0] for lr in host_lrs(scheduler, 60)]
    np.testing.assert_allclose(jit_values(pure, steps), host, rtol=0, atol=2 * float32_ulp(0.3))


LINEAR_HINT_START = "The learning rate at step 0 is base_lr * start_factor, e.g. 1/3 or 0.1."
LINEAR_HINT_END = "The learning rate from step total_iters on is base_lr * end_factor, e.g. 1.0."
LINEAR_HINT_ITERS = "Pass the number of steps from start_factor to end_factor, e.g. 5."


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            dict(start_factor=0),
            ValueError,
            f"LinearLR: `start_factor` must be in (0, 1], got start_factor=0. {LINEAR_HINT_START}",
        ),
        (
            dict(start_factor=1.5),
            ValueError,
            f"LinearLR: `start_factor` must be in (0, 1], got start_factor=1.5. "
            f"{LINEAR_HINT_START}",
        ),
        (
            dict(start_factor=float("nan")),
            ValueError,
            f"LinearLR: `start_factor` must be in (0, 1], got start_factor=nan. "
            f"{LINEAR_HINT_START}",
        ),
        (
            dict(start_factor="0.1"),
            TypeError,
            f"LinearLR: `start_factor` must be a real number, got start_factor='0.1' (str). "
            f"{LINEAR_HINT_START}",
        ),
        (
            dict(end_factor=-0.1),
            ValueError,
            f"LinearLR: `end_factor` must be in [0, 1], got end_factor=-0.1. {LINEAR_HINT_END}",
        ),
        (
            dict(end_factor=2),
            ValueError,
            f"LinearLR: `end_factor` must be in [0, 1], got end_factor=2. {LINEAR_HINT_END}",
        ),
        (
            dict(total_iters=0),
            ValueError,
            "LinearLR: `total_iters` must be an integer in [1, 2**31 - 1], got total_iters=0 "
            f"(int). {LINEAR_HINT_ITERS}",
        ),
        (
            dict(total_iters=5.0),
            TypeError,
            f"LinearLR: `total_iters` must be an integer, got total_iters=5.0 (float). "
            f"{LINEAR_HINT_ITERS}",
        ),
        (
            dict(base_lr=[0.1, -1.0]),
            ValueError,
            "LinearLR: `base_lr[1]` must be a non-negative finite number, got base_lr[1]=-1.0 "
            "(float). Learning rates are finite numbers >= 0, e.g. 1e-3.",
        ),
    ],
)
def test_linear_lr_refuses_bad_arguments(kwargs, error, message):
    with raises_exactly(error, message):
        LinearLR(**{"base_lr": 0.1, **kwargs})


# -- SequentialLR ---------------------------------------------------------------------------------


def warmup_then_cyclic(**kwargs) -> SequentialLR:
    """The one-liner of the docs: a linear warm-up, then CyclicLR."""
    return SequentialLR(
        [LinearLR(0.01, start_factor=0.1, total_iters=100), CyclicLR(0.01, 0.1, step_size_up=500)],
        milestones=[100],
        **kwargs,
    )


def test_warm_up_then_cycle_in_one_line():
    scheduler = warmup_then_cyclic()
    lrs = [lr[0] for lr in host_lrs(scheduler, 1101)]
    assert lrs[0] == pytest.approx(0.001)
    assert lrs[50] == pytest.approx(0.0055)
    assert lrs[99] == pytest.approx(0.00991)  # the warm-up ends one step short of base_lr
    assert (lrs[100], lrs[600], lrs[1100]) == (0.01, 0.1, 0.01)  # CyclicLR from its step 0
    assert scheduler.milestones == (100,)
    assert [type(child).__name__ for child in scheduler.schedulers] == ["LinearLR", "CyclicLR"]
    assert scheduler.base_lrs == (0.01,)
    assert scheduler.num_groups == 1
    assert scheduler.preview_steps == 100 + 3 * 1000
    assert not hasattr(scheduler, "total_steps")  # CyclicLR runs on without end
    assert scheduler.get_last_momentum() is None
    assert not scheduler.cycle_momentum
    with pytest.raises(ValueError, match="cycle_momentum=True"):
        scheduler.as_momentum_schedule()


def test_sequential_children_are_read_not_stepped():
    scheduler = warmup_then_cyclic()
    host_lrs(scheduler, 250)
    scheduler.step(epoch=700)
    assert [child.last_epoch for child in scheduler.schedulers] == [0, 0]
    # Stepping a child by hand does not move the chain either: the children are formulas.
    scheduler.schedulers[1].step(epoch=123)
    assert scheduler.get_last_lr() == warmup_then_cyclic(last_epoch=700).get_last_lr()


def test_sequential_position_semantics():
    reference = host_lrs(warmup_then_cyclic(), 1300)
    scheduler = warmup_then_cyclic()
    for epoch in (650, 99, 100, 1299, 0):  # forwards and backwards, across the milestone
        scheduler.step(epoch=epoch)
        assert scheduler.get_last_lr() == scheduler.get_lr() == reference[epoch]
    scheduler.last_epoch = 101
    scheduler.step()
    assert (scheduler.last_epoch, scheduler.get_last_lr()) == (102, reference[102])
    assert host_lrs(warmup_then_cyclic(last_epoch=97), 10) == reference[97:107]


def test_sequential_as_schedule_is_optax_join_schedules():
    scheduler = FAMILY["SequentialLR"]()
    steps = np.arange(60)
    for group in range(2):
        joined = optax.join_schedules(
            [child.as_schedule(group) for child in scheduler.schedulers], [8, 19]
        )
        np.testing.assert_array_equal(
            jit_values(scheduler.as_schedule(group), steps), jit_values(joined, steps)
        )
        assert scheduler.as_schedule(group) is scheduler.as_schedule(group)  # compiles once
    # Any integer step, as for the other schedules: Python ints (before the later phases
    # too), unsigned counts, and traced steps.
    assert float(scheduler(3)) == float(scheduler.as_schedule(0)(np.uint32(3)))
    assert float(jax.jit(scheduler)(25)) == float(jit_values(scheduler.as_schedule(0), [25])[0])
    with pytest.raises(TypeError, match="step must be an integer"):
        scheduler(2.5)


def test_sequential_momentum_is_held_in_the_phases_that_do_not_cycle_it():
    scheduler = FAMILY["SequentialLR"]()
    assert scheduler.cycle_momentum
    momentums = [m[0] for m in host_momentums(FAMILY["SequentialLR"](), 30)]
    # The warm-up holds CyclicLR's step-0 momentum (what PyTorch's constructor wrote), the
    # cosine phase the momentum of CyclicLR's last step (step 18: local 10, position 2 of 8).
    assert momentums[:8] == [0.9] * 8
    cyclic = [m[0] for m in host_momentums(CyclicLR(0.01, 0.1, 4, cycle_momentum=True), 11)]
    assert momentums[8:19] == cyclic
    assert momentums[19:] == [cyclic[-1]] * 11
    jitted = jit_values(scheduler.as_momentum_schedule(0), np.arange(30))
    np.testing.assert_allclose(jitted, momentums, rtol=0, atol=2 * float32_ulp(0.9))


def test_sequential_total_steps_comes_from_a_last_onecycle():
    scheduler = SequentialLR(
        [LinearLR(0.004, total_iters=10), OneCycleLR(0.1, total_steps=90)], milestones=[10]
    )
    assert (scheduler.total_steps, scheduler.preview_steps) == (100, 100)
    assert scheduler.cycle_momentum  # OneCycleLR cycles it by default
    scheduler.step(epoch=100)  # one step() after the last update, as OneCycleLR allows
    assert scheduler.get_last_lr() == [pytest.approx(0.1 / 25 / 1e4)]
    with raises_exactly(
        ValueError,
        "SequentialLR: step 101 is step 91 of schedulers[1] (OneCycleLR), which refuses it: "
        "OneCycleLR: step 91 is past the end of the schedule: total_steps=90 covers the updates "
        "at steps 0..89, and one step() after the last of them (to step 90). Step 91 is 91 "
        "step() calls from step 0, 1 more than the schedule allows. Build it with total_steps "
        "(or epochs * steps_per_epoch) covering every update of the run.",
    ):
        scheduler.step()
    assert scheduler.last_epoch == 100


def test_a_sequential_lr_may_be_a_phase_of_another():
    inner = SequentialLR([LinearLR(0.1, total_iters=3), CosineAnnealingLR(0.1, 10)], [3])
    nested = SequentialLR([inner, CyclicLR(0.01, 0.1, 5)], milestones=[8])
    flat = SequentialLR(
        [LinearLR(0.1, total_iters=3), CosineAnnealingLR(0.1, 10), CyclicLR(0.01, 0.1, 5)],
        milestones=[3, 8],
    )
    assert host_lrs(nested, 30) == host_lrs(flat, 30)
    np.testing.assert_array_equal(
        jit_values(nested.as_schedule(), np.arange(30)),
        jit_values(flat.as_schedule(), np.arange(30)),
    )


def test_sequential_lr_plots():
    pytest.importorskip("matplotlib")
    from flax_cyclic.plotting import plot_schedule, schedule_values

    scheduler = FAMILY["SequentialLR"]()
    image = plot_schedule(scheduler, scheduler.preview_steps)
    assert image.shape[-1] == 3
    values = schedule_values(scheduler, np.arange(40))
    np.testing.assert_allclose(
        values, host_lrs(FAMILY["SequentialLR"](), 40), rtol=0, atol=COS_ULPS * float32_ulp(0.1)
    )


MILESTONE_HINT = "Each milestone is the step at which the next scheduler takes over."


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (
            lambda: SequentialLR([], []),
            ValueError,
            "SequentialLR: `schedulers` must be a non-empty list of schedulers, got "
            "schedulers=[]. Pass them in the order they run, e.g. [LinearLR(...), CyclicLR(...)].",
        ),
        (
            lambda: SequentialLR([LinearLR(0.1), "cyclic"], [3]),
            TypeError,
            "SequentialLR: `schedulers[1]` must be a flax_cyclic scheduler (e.g. LinearLR or "
            "CyclicLR), got str. Chain pure schedules with optax.join_schedules instead.",
        ),
        (
            lambda: SequentialLR([LinearLR(0.1), ReduceLROnPlateau(0.1)], [3]),
            ValueError,
            "SequentialLR: `schedulers[1]` must be a schedule of the step, got "
            "ReduceLROnPlateau, whose learning rate follows a metric (step(metric)). Use it on "
            "its own.",
        ),
        (
            lambda: SequentialLR([LinearLR(0.1), CyclicLR(last_epoch=3)], [3]),
            ValueError,
            "SequentialLR: `schedulers[1]` must stand at step 0, got CyclicLR at last_epoch=3. "
            "Each scheduler runs from its own step 0 when its phase begins; build them with "
            "last_epoch=0, and SequentialLR with last_epoch=N to start at step N.",
        ),
        (
            lambda: SequentialLR([LinearLR(0.1), CyclicLR([0.1, 0.2])], [3]),
            ValueError,
            "SequentialLR: every scheduler must have the same number of parameter groups, got "
            "1 in schedulers[0], 2 in schedulers[1]. Give each one a learning rate per group of "
            "the same groups.",
        ),
        (
            lambda: SequentialLR([LinearLR(0.1), CyclicLR()], 3),
            TypeError,
            f"SequentialLR: `milestones` must be a list of integers, got milestones=3. "
            f"{MILESTONE_HINT}",
        ),
        (
            lambda: SequentialLR([LinearLR(0.1), CyclicLR()], [3, 5]),
            ValueError,
            "SequentialLR: `milestones` must have one entry fewer than `schedulers`, got 2 for "
            f"2 scheduler(s): milestones=[3, 5]. {MILESTONE_HINT}",
        ),
        (
            lambda: SequentialLR([LinearLR(0.1), CyclicLR()], [0]),
            ValueError,
            "SequentialLR: `milestones[0]` must be an integer in [1, 2**31 - 1], got "
            f"milestones[0]=0 (int). {MILESTONE_HINT}",
        ),
        (
            lambda: SequentialLR([LinearLR(0.1), CyclicLR()], [2.5]),
            TypeError,
            "SequentialLR: `milestones[0]` must be an integer, got milestones[0]=2.5 (float). "
            f"{MILESTONE_HINT}",
        ),
        (
            lambda: SequentialLR([LinearLR(0.1), CyclicLR(), CyclicLR()], [30, 30]),
            ValueError,
            "SequentialLR: `milestones` must be strictly increasing, got milestones=[30, 30]: "
            f"milestones[1]=30 is not after milestones[0]=30. {MILESTONE_HINT}",
        ),
        (
            lambda: SequentialLR([OneCycleLR(0.1, total_steps=10), CyclicLR()], [12]),
            ValueError,
            "SequentialLR: `schedulers[0]` must cover its phase, got OneCycleLR(total_steps=10) "
            "for a phase of 12 updates (steps 0 to 11, until milestones[0]=12): update 10 of "
            "the phase would be past its end. Build it with total_steps=12, or move "
            "milestones[0] to 10.",
        ),
        (
            lambda: SequentialLR([LinearLR(0.1), CyclicLR()], [3], last_epoch=-1),
            ValueError,
            "SequentialLR: `last_epoch` must be an integer >= 0, got last_epoch=-1 (int). "
            "Steps count from 0; a scheduler built with last_epoch=N stands at step N.",
        ),
    ],
)
def test_sequential_refuses_bad_arguments(make, error, message):
    with raises_exactly(error, message):
        make()


def test_sequential_state_holds_the_children_and_round_trips_through_json():
    scheduler = FAMILY["SequentialLR"]()
    scheduler.step(epoch=23)
    state = json.loads(json.dumps(scheduler.state_dict(), allow_nan=False))
    assert state["config"] == {
        "milestones": [8, 19],
        "schedulers": ["LinearLR", "CyclicLR", "CosineAnnealingLR"],
    }
    assert [child["format"] for child in state["scheduler_states"]] == [
        "flax_cyclic.LinearLR",
        "flax_cyclic.CyclicLR",
        "flax_cyclic.CosineAnnealingLR",
    ]
    restored = FAMILY["SequentialLR"]()
    restored.load_state_dict(state)
    assert restored.last_epoch == 23
    assert host_lrs(restored, 30) == host_lrs(scheduler, 30)
    assert restored.get_last_momentum() == scheduler.get_last_momentum()


def test_sequential_load_checks_each_child_and_changes_nothing_on_an_error():
    state = FAMILY["SequentialLR"](last_epoch=12).state_dict()
    state["scheduler_states"][0]["last_epoch"] = 5  # taken first, then undone
    other = SequentialLR(
        [
            LinearLR([0.1, 0.05], start_factor=0.1, total_iters=10),
            CyclicLR([0.01, 0.02], 0.2, step_size_up=4, cycle_momentum=True),  # max_lr differs
            CosineAnnealingLR([0.1, 0.05], T_max=9, eta_min=0.001),
        ],
        milestones=[8, 19],
    )
    with raises_exactly(
        ValueError,
        "SequentialLR.load_state_dict: schedulers[1]: CyclicLR.load_state_dict: the state was "
        "saved with a different configuration (max_lrs: saved [0.1, 0.1], now [0.2, 0.2]). "
        "Build the scheduler with the saved configuration, or pass strict=False to take only "
        "the step counter and keep the new configuration.",
    ):
        other.load_state_dict(state)
    assert other.last_epoch == 0
    assert [child.last_epoch for child in other.schedulers] == [0, 0, 0]
    other.load_state_dict(state, strict=False)  # the position; its own configuration
    assert other.last_epoch == 12
    assert other.get_last_lr() != FAMILY["SequentialLR"](last_epoch=12).get_last_lr()
    state["scheduler_states"] = state["scheduler_states"][:2]
    with pytest.raises(ValueError, match=r"`scheduler_states` must be a list of 3 scheduler"):
        other.load_state_dict(state)
    changed = FAMILY["SequentialLR"]().state_dict()
    changed["config"]["milestones"] = [8, 20]
    with pytest.raises(ValueError, match=r"milestones: saved \[8, 20\], now \[8, 19\]"):
        FAMILY["SequentialLR"]().load_state_dict(changed)


def test_sequential_repr_shows_the_children():
    text = repr(warmup_then_cyclic(last_epoch=4))
    assert text.startswith("SequentialLR([LinearLR(base_lrs=[0.01], start_factor=0.1")
    assert "CyclicLR(base_lrs=[0.01], max_lrs=[0.1], step_size_up=500" in text
    assert text.endswith("], milestones=[100], last_epoch=4)")


def test_sequential_lr_drives_a_training_run_through_the_lr_callback():
    from flax import nnx
    from helpers import RecordingWriter, tiny_batches, tiny_mlp

    from flax_cyclic import LRSchedulerCallback, Trainer

    model = tiny_mlp(0)
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.0, momentum=0.9)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    scheduler = SequentialLR(
        [
            LinearLR(0.01, start_factor=0.1, total_iters=3),
            CyclicLR(0.01, 0.1, step_size_up=2, cycle_momentum=True),
        ],
        milestones=[3],
    )
    writer = RecordingWriter(plan=True)
    callback = LRSchedulerCallback(scheduler, writer=writer)
    Trainer(model, optimizer, callbacks=[callback], writer=writer, progress=False).fit(
        tiny_batches(16, 8), num_steps=8
    )
    expected = host_lrs(SequentialLR(scheduler.schedulers, milestones=[3]), 8)
    # Logged as applied: the float32 values the optimizer holds.
    logged = [lr for _, lr in writer.series("learning_rate")]
    assert logged == [float(np.float32(lr[0])) for lr in expected]
    momentums = [m for _, m in writer.series("momentum")]
    assert momentums[:4] == [float(np.float32(0.9))] * 4  # the warm-up holds CyclicLR's
    assert momentums[5] == pytest.approx(0.8)  # CyclicLR's peak
    assert [name for _, images in writer.images for name in images] == ["lr_schedule"]
    assert json.loads(json.dumps(callback.state_dict()))["scheduler"]["last_epoch"] == 8


# -- a scheduler that optax evaluates and that is also stepped: two drivers, one warning --

_TWO_DRIVERS = r"CyclicLR: optax evaluates this scheduler as a schedule"


def _sgd_run(scheduler):
    """SGD on w with every gradient 1, jitted: ``update(state) -> (the lr applied, state)``."""
    tx = optax.sgd(learning_rate=scheduler)
    params = {"w": jnp.zeros(())}

    @jax.jit
    def update(state):
        updates, state = tx.update({"w": jnp.ones(())}, state, params)
        return -updates["w"], state

    return update, tx.init(params)


def test_stepping_a_scheduler_that_optax_evaluates_warns_once():
    scheduler = CyclicLR(0.1, 0.5, step_size_up=4)
    update, state = _sgd_run(scheduler)
    applied, state = update(state)  # traces: optax calls the scheduler with its count
    with pytest.warns(UserWarning, match=_TWO_DRIVERS) as caught:
        scheduler.step()
    (warning,) = caught
    message = str(warning.message)
    assert "step() moved it to last_epoch=1" in message
    assert "get_last_lr() is not necessarily the learning rate that trains" in message
    assert "pass the scheduler to optax and never step it" in message
    assert "opt_state.hyperparams['learning_rate']" in message
    assert "LearningRateMonitor" in message
    assert "inject_hyperparams(optax.sgd)(learning_rate=0.0)" in message
    assert "LRSchedulerCallback(CyclicLR(...))" in message
    assert warning.filename == __file__  # points at the step() call
    # Once per scheduler: stepping on (twice per update here) says nothing more, and what
    # get_last_lr() reports is then not what optax applies, which is the point of the warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(3):
            scheduler.step()
            scheduler.step()
            applied, state = update(state)
    assert scheduler.get_last_lr() == pytest.approx([0.2])  # step 7
    assert float(applied) == pytest.approx(0.4)  # update 3


def test_a_stepped_scheduler_that_optax_then_evaluates_warns():
    scheduler = CyclicLR(0.1, 0.5, step_size_up=4)
    scheduler.step()
    update, state = _sgd_run(scheduler)
    with pytest.warns(UserWarning, match=_TWO_DRIVERS) as caught:
        update(state)
    assert "it had been stepped to last_epoch=1" in str(caught[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scheduler.step()  # warned once already


def test_assigning_last_epoch_counts_as_stepping():
    scheduler = CyclicLR(0.1, 0.5, step_size_up=4)
    update, state = _sgd_run(scheduler)
    update(state)
    with pytest.warns(UserWarning, match=_TWO_DRIVERS):
        scheduler.last_epoch = 3


def test_one_driver_alone_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # optax alone: evaluated at every update, never stepped.
        evaluated = CyclicLR(0.1, 0.5, step_size_up=4)
        update, state = _sgd_run(evaluated)
        lrs = []
        for _ in range(5):
            applied, state = update(state)
            lrs.append(float(applied))
        np.testing.assert_allclose(lrs, [0.1, 0.2, 0.3, 0.4, 0.5], rtol=1e-6)
        # Stepped alone, and read or jitted by the user (not by optax): a preview or a check.
        stepped = CyclicLR(0.1, 0.5, step_size_up=4)
        for t in range(5):
            assert float(jax.jit(stepped)(t)) == pytest.approx(stepped.get_last_lr()[0])
            assert float(stepped(t)) == pytest.approx(stepped.get_last_lr()[0])
            stepped.step()
        # optax with the scheduler's pure schedule, while the scheduler itself is stepped.
        other = CyclicLR(0.1, 0.5, step_size_up=4)
        update, state = _sgd_run(other.as_schedule())
        update(state)
        other.step()
