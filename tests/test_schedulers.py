"""The stateful schedulers, CyclicLR and its family: position semantics, attributes, reference
vectors, state dict, host/jit agreement."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from helpers import (
    COS_ULPS,
    float32_ulp,
    host_lrs,
    host_momentums,
    isclose_lists,
    jit_values,
)

from flax_cyclic import (
    CosineAnnealingLR,
    CosineAnnealingWarmRestarts,
    CyclicLR,
    LRScheduler,
    OneCycleLR,
    TriangularLR,
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


def test_state_records_a_custom_scale_fn_by_name_only():
    def decay(cycle):
        return 0.5**cycle

    state = CyclicLR(0.1, 0.5, scale_fn=decay).state_dict()
    assert (
        state["config"]["scale_fn"]
        == "test_state_records_a_custom_scale_fn_by_name_only.<locals>.decay"
    )
    assert "<function" not in json.dumps(state)


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
