"""The stateful scheduler: position semantics, attributes, state dict, host/jit agreement."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from helpers import float32_ulp, host_lrs, host_momentums, jit_values

from flax_cyclic import CyclicLR, LRScheduler

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
