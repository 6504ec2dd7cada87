"""Argument checks: a clear TypeError / ValueError at construction naming the argument and value."""

from __future__ import annotations

import math
import re

import jax.numpy as jnp
import numpy as np
import pytest

from flax_cyclic import (
    CosineAnnealingLR,
    CosineAnnealingWarmRestarts,
    CyclicLR,
    OneCycleLR,
    TriangularLR,
    cosine_annealing_schedule,
    cosine_warm_restarts_schedule,
    cyclic_schedule,
    lr_find,
    onecycle_schedule,
    triangular_schedule,
)

# (keyword arguments, exception, fragments the message must contain)
SHARED_BAD_INPUT = [
    (
        {"step_size_up": 0},
        ValueError,
        ["`step_size_up` must be an integer in [1, 2**31 - 1], got step_size_up=0 (int)."],
    ),
    ({"step_size_up": -5}, ValueError, ["step_size_up=-5"]),
    ({"step_size_up": 2.5}, TypeError, ["step_size_up=2.5", "float", "integer"]),
    ({"step_size_up": 2000.0}, TypeError, ["step_size_up=2000.0"]),
    ({"step_size_up": "10"}, TypeError, ["step_size_up='10'"]),
    ({"step_size_up": True}, TypeError, ["step_size_up=True"]),
    ({"step_size_up": None}, TypeError, ["step_size_up=None"]),
    ({"step_size_down": 0}, ValueError, ["step_size_down=0", "None to use step_size_up"]),
    ({"step_size_down": 1.5}, TypeError, ["step_size_down=1.5"]),
    ({"step_size_up": 2**31}, ValueError, ["step_size_up=2147483648", "2**31 - 1"]),
    ({"step_size_up": 2**30, "step_size_down": 2**30}, ValueError, ["2147483648 steps"]),
    ({"mode": "cosine"}, ValueError, ["mode='cosine'", "'triangular', 'triangular2', 'exp_range'"]),
    ({"mode": "Triangular"}, ValueError, ["mode='Triangular'"]),
    ({"mode": None}, ValueError, ["mode=None"]),
    ({"scale_mode": "epoch"}, ValueError, ["scale_mode='epoch'", "'cycle', 'iterations'"]),
    ({"gamma": 0}, ValueError, ["gamma=0", "positive"]),
    ({"gamma": -0.5}, ValueError, ["gamma=-0.5"]),
    ({"gamma": math.nan}, ValueError, ["gamma=nan", "finite"]),
    ({"gamma": math.inf}, ValueError, ["gamma=inf"]),
    ({"gamma": "0.9"}, TypeError, ["gamma='0.9'", "real number"]),
    ({"scale_fn": 3}, TypeError, ["scale_fn=3", "callable"]),
    ({"scale_fn": "linear"}, TypeError, ["scale_fn='linear'"]),
    ({"base_lr": -1e-3}, ValueError, ["base_lr=-0.001", "non-negative finite"]),
    ({"base_lr": math.nan}, ValueError, ["base_lr=nan"]),
    ({"max_lr": math.inf}, ValueError, ["max_lr=inf"]),
    ({"max_lr": -math.inf}, ValueError, ["max_lr=-inf"]),
    ({"base_lr": "1e-3"}, TypeError, ["base_lr='1e-3'", "real number"]),
    ({"base_lr": None}, TypeError, ["base_lr=None"]),
    ({"base_lr": True}, TypeError, ["base_lr=True"]),
    ({"max_lr": np.array([0.1, 0.2])}, TypeError, ["max_lr=array([0.1, 0.2])"]),
]

SCHEDULER_BAD_INPUT = [
    ({"base_lr": [0.1, -0.1]}, ValueError, ["base_lr[1]=-0.1"]),
    ({"max_lr": [0.1, math.nan]}, ValueError, ["max_lr[1]=nan"]),
    ({"base_lr": []}, ValueError, ["`base_lr` must not be an empty list"]),
    (
        {"base_lr": [0.1, 0.2], "max_lr": [1, 2, 3]},
        ValueError,
        ["same length", "base_lr has 2", "max_lr has 3"],
    ),
    (
        {"base_lr": [0.1, 0.2], "base_momentum": [0.8, 0.8, 0.8]},
        ValueError,
        ["base_lr has 2", "base_momentum has 3"],
    ),
    (
        {"last_epoch": -1},
        ValueError,
        ["`last_epoch` must be an integer >= 0, got last_epoch=-1 (int)."],
    ),
    ({"last_epoch": 3.0}, TypeError, ["last_epoch=3.0"]),
    ({"last_epoch": "3"}, TypeError, ["last_epoch='3'"]),
    ({"base_momentum": -0.1}, ValueError, ["base_momentum=-0.1"]),
    ({"base_momentum": math.nan}, ValueError, ["base_momentum=nan"]),
    ({"max_momentum": math.inf}, ValueError, ["max_momentum=inf"]),
    ({"max_momentum": [0.9, -1.0]}, ValueError, ["max_momentum[1]=-1.0"]),
    (
        {"base_momentum": 0.95, "max_momentum": 0.9},
        ValueError,
        ["base_momentum=0.95 > max_momentum=0.9", "group 0"],
    ),
    ({"cycle_momentum": "yes"}, TypeError, ["cycle_momentum='yes'"]),
    ({"cycle_momentum": 1}, TypeError, ["cycle_momentum=1"]),
]


def _message_has(error: pytest.ExceptionInfo, owner: str, fragments: list[str]) -> None:
    message = str(error.value)
    assert message.startswith(owner + ":"), message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


@pytest.mark.parametrize(("kwargs", "error", "fragments"), SHARED_BAD_INPUT + SCHEDULER_BAD_INPUT)
def test_cyclic_lr_rejects(kwargs, error, fragments):
    with pytest.raises(error) as info:
        CyclicLR(**kwargs)
    _message_has(info, "CyclicLR", fragments)


@pytest.mark.parametrize(("kwargs", "error", "fragments"), SHARED_BAD_INPUT)
def test_cyclic_schedule_rejects(kwargs, error, fragments):
    arguments = {"base_lr": 1e-3, "max_lr": 1e-2, **kwargs}
    with pytest.raises(error) as info:
        cyclic_schedule(**arguments)
    _message_has(info, "cyclic_schedule", fragments)


@pytest.mark.parametrize(
    ("epoch", "error"), [(-1, ValueError), (1.5, TypeError), ("2", TypeError), (True, TypeError)]
)
def test_step_to_a_bad_epoch_is_rejected_and_changes_nothing(epoch, error):
    scheduler = CyclicLR(0.1, 0.5, step_size_up=3, last_epoch=2)
    with pytest.raises(error, match=f"epoch={epoch!r}"):
        scheduler.step(epoch=epoch)
    assert scheduler.last_epoch == 2
    assert scheduler.get_last_lr() == CyclicLR(0.1, 0.5, step_size_up=3, last_epoch=2).get_lr()


@pytest.mark.parametrize(
    "value", [np.float32(0.1), np.float64(0.1), np.int64(1), jnp.float32(0.1), np.array(0.1)]
)
def test_numpy_and_jax_scalars_are_accepted_as_numbers(value):
    scheduler = CyclicLR(base_lr=value, max_lr=2.0, step_size_up=np.int64(4))
    assert scheduler.base_lrs == (float(value),)
    assert type(scheduler.base_lrs[0]) is float
    assert scheduler.step_size_up == 4


def test_inverted_bounds_are_allowed_and_cycle_downwards():
    # Not an error: base_lr > max_lr is how momentum cycles, and PyTorch allows it.
    scheduler = CyclicLR(base_lr=0.9, max_lr=0.8, step_size_up=2)
    assert scheduler.get_lr() == [0.9]
    scheduler.step(epoch=2)
    assert scheduler.get_last_lr() == [0.8]


# -- integer ranges: the message states the real minimum and maximum ----------------------------

INTEGER_RANGE_MESSAGES = [
    pytest.param(
        lambda: cosine_warm_restarts_schedule(0.1, T_0=4, warmup_steps=-1),
        "cosine_warm_restarts_schedule: `warmup_steps` must be an integer in [0, 2**31 - 1], "
        "got warmup_steps=-1 (int). Pass the number of warm-up steps at the start of a cycle, "
        "or 0.",
        id="minimum-0",
    ),
    pytest.param(
        lambda: CyclicLR(step_size_up=0),
        "CyclicLR: `step_size_up` must be an integer in [1, 2**31 - 1], got step_size_up=0 "
        "(int). Pass the number of steps in the rising half of a cycle, e.g. 2000.",
        id="minimum-1",
    ),
    pytest.param(
        # The arguments are checked before the model and the optimizer are used.
        lambda: lr_find(None, None, [], num_steps=1),
        "lr_find: `num_steps` must be an integer in [2, 2**31 - 1], got num_steps=1 (int). "
        "The ramp needs at least 2 steps; 100 is typical.",
        id="minimum-2",
    ),
    pytest.param(
        lambda: CyclicLR(last_epoch=-1),
        "CyclicLR: `last_epoch` must be an integer >= 0, got last_epoch=-1 (int). Steps count "
        "from 0; a scheduler built with last_epoch=N stands at step N.",
        id="no-maximum",
    ),
    pytest.param(
        lambda: CyclicLR(step_size_up=2**31),
        "CyclicLR: `step_size_up` must be an integer in [1, 2**31 - 1], got "
        "step_size_up=2147483648 (int). Pass the number of steps in the rising half of a "
        "cycle, e.g. 2000.",
        id="maximum-max-step",
    ),
    pytest.param(
        lambda: CosineAnnealingLR(0.1, T_max=2**30),
        "CosineAnnealingLR: `T_max` must be an integer in [1, 1073741823], got "
        "T_max=1073741824 (int). Pass the number of steps from base_lr down to eta_min, e.g. "
        "the run length.",
        id="maximum-below-max-step",
    ),
]


@pytest.mark.parametrize(("make", "message"), INTEGER_RANGE_MESSAGES)
def test_an_out_of_range_integer_names_the_real_range(make, message):
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        make()
    assert str(info.value) == message


def test_a_negative_step_names_the_range_without_a_maximum():
    scheduler = CyclicLR(0.1, 0.5, step_size_up=3)
    message = (
        "CyclicLR: `epoch` must be an integer >= 0, got epoch=-1 (int). Steps count from 0; a "
        "scheduler built with last_epoch=N stands at step N."
    )
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        scheduler.step(epoch=-1)
    assert str(info.value) == message


# -- the family's schedulers -------------------------------------------------------------------


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
