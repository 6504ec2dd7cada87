"""docs/own_loop.md: the Linen, plain optax and fast NNX loops train with the scheduler's values.

The page's code runs here in one namespace; its loops recorded the learning rate each update used
(read back from the optimizer state after the update). Running each loop again checks that
writing the values compiles nothing new.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import count_compilations, host_lrs
from test_docs import python_blocks

from flax_cyclic import CyclicLR, OneCycleLR

PAGE = Path(__file__).resolve().parents[1] / "docs" / "own_loop.md"


@pytest.fixture(scope="module")
def page() -> dict:
    namespace: dict = {"__name__": "docs_own_loop"}
    for number, block in enumerate(python_blocks(PAGE), start=1):
        exec(compile(block, f"own_loop.md (block {number})", "exec"), namespace)
    return namespace


def _planned(scheduler, steps: int) -> list[float]:
    return [float(np.float32(lrs[0])) for lrs in host_lrs(scheduler, steps)]


def test_the_linen_loop_uses_the_schedulers_lr_at_every_update(page):
    assert page["linen_used"] == _planned(CyclicLR(0.01, 0.1, step_size_up=5), 20)


def test_the_optax_loop_uses_the_schedulers_lr_at_every_update(page):
    assert page["optax_used"] == _planned(OneCycleLR(max_lr=0.05, total_steps=40), 20)


def test_the_fast_nnx_loop_uses_the_schedulers_lr_at_every_update(page):
    assert page["nnx_used"] == _planned(CyclicLR(0.01, 0.1, step_size_up=5), 20)


def test_no_loop_compiles_again(page):
    more = page["make_batches"](5)
    with count_compilations() as compiled:
        page["train_linen"](page["state"], page["linen_scheduler"], more)
        page["train_optax"](page["params"], page["opt_state"], page["optax_scheduler"], more)
        page["train_nnx"](more)
    assert compiled == []
