"""Cross-checks against torch.optim.lr_scheduler.CyclicLR, where PyTorch is installed.

PyTorch is an oracle here, never a dependency: `make test` installs it only where its CPU wheel
is available locally, and these tests are skipped elsewhere.
"""

from __future__ import annotations

import math
import warnings

import pytest
from helpers import host_lrs, host_momentums
from hypothesis import given, settings
from hypothesis import strategies as st

from flax_cyclic import CyclicLR

torch = pytest.importorskip("torch")


def _torch_trajectory(config: dict, steps: int, cycle_momentum: bool):
    groups = config["base_lr"] if isinstance(config["base_lr"], list) else [config["base_lr"]]
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in groups]
    optimizer = torch.optim.SGD([{"params": [p]} for p in params], lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.CyclicLR(
        optimizer, **config, cycle_momentum=cycle_momentum, base_momentum=0.8, max_momentum=0.9
    )
    lrs, momentums = [], []
    for _ in range(steps):
        lrs.append(scheduler.get_last_lr())
        momentums.append([group["momentum"] for group in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    return lrs, momentums


def _assert_same(ours, theirs, scale):
    # PyTorch rounds its phase x = 1 + t/total - cycle in float64, an error that grows with t;
    # ours is exact (see the rational-reference tests). Agreement to 1e-13 of the bounds' scale
    # is still 9 orders of magnitude finer than any difference in the formula would show.
    for step, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        for x, y in zip(a, b, strict=True):
            assert math.isclose(x, y, rel_tol=0, abs_tol=1e-13 * scale), (step, x, y)


@st.composite
def configs(draw):
    mode = draw(st.sampled_from(["triangular", "triangular2", "exp_range"]))
    groups = draw(st.integers(min_value=1, max_value=3))
    lrs = st.floats(min_value=1e-6, max_value=1.0)
    return dict(
        base_lr=draw(st.lists(lrs, min_size=groups, max_size=groups)),
        max_lr=draw(st.lists(lrs, min_size=groups, max_size=groups)),
        step_size_up=draw(st.integers(min_value=1, max_value=40)),
        step_size_down=draw(st.none() | st.integers(min_value=1, max_value=40)),
        mode=mode,
        gamma=draw(st.floats(min_value=0.9, max_value=1.0)) if mode == "exp_range" else 1.0,
    )


@settings(max_examples=60, deadline=None)
@given(configs(), st.booleans())
def test_learning_rates_and_momentums_match_pytorch(config, cycle_momentum):
    steps = 150
    torch_lrs, torch_momentums = _torch_trajectory(config, steps, cycle_momentum)
    ours = CyclicLR(**config, cycle_momentum=cycle_momentum)
    _assert_same(host_lrs(ours, steps), torch_lrs, scale=max(config["base_lr"] + config["max_lr"]))
    if cycle_momentum:
        ours = CyclicLR(**config, cycle_momentum=True)
        _assert_same(host_momentums(ours, steps), torch_momentums, scale=0.9)


@pytest.mark.parametrize("scale_mode", ["cycle", "iterations"])
def test_custom_scale_fn_matches_pytorch(scale_mode):
    config = dict(
        base_lr=[0.001, 0.01],
        max_lr=[0.1, 0.05],
        step_size_up=7,
        step_size_down=3,
        scale_fn=lambda x: 1 / (1 + 0.05 * x),
        scale_mode=scale_mode,
    )
    torch_lrs, _ = _torch_trajectory(config, 100, cycle_momentum=False)
    _assert_same(host_lrs(CyclicLR(**config), 100), torch_lrs, scale=0.1)


def test_pytorch_overflows_in_triangular2_where_we_do_not():
    # pytorch#52989: PyTorch evaluates 1 / 2.0 ** (cycle - 1), which overflows past 1024 cycles.
    up = 2
    step = 1100 * 2 * up
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    theirs = torch.optim.lr_scheduler.CyclicLR(
        optimizer, 0.1, 0.5, step_size_up=up, mode="triangular2", cycle_momentum=False
    )
    theirs.last_epoch = step - 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PyTorch warns about the order of step() calls
        with pytest.raises(OverflowError):
            theirs.step()
    ours = CyclicLR(0.1, 0.5, step_size_up=up, mode="triangular2", last_epoch=step)
    assert ours.get_last_lr() == [0.1]
