"""docs/own_loop.md: the Linen, scanned Linen, plain optax and fast NNX loops train with the
scheduler's values.

The page's code runs here in one namespace; its loops recorded the learning rate each update used
(read back from the optimizer state after the update, or from inside the scan). Running each loop
again checks that writing the values compiles nothing new.
"""

from __future__ import annotations

from pathlib import Path

import jax
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


def test_the_scanned_loop_uses_the_schedulers_lr_at_every_update(page):
    # 20 batches at 8 per dispatch: two full chunks and a last one of 4.
    assert page["scan_used"] == _planned(CyclicLR(0.01, 0.1, step_size_up=5), 20)


def test_the_scanned_loop_trains_as_the_per_step_loop(page):
    # Same scheduler, batches and initial state: the same parameters. Measured maximum difference
    # on this CPU: 0.0 (bitwise equal); another backend may fuse the scanned step differently.
    per_step, scanned = page["state"].params, page["scan_state"].params
    assert jax.tree.structure(per_step) == jax.tree.structure(scanned)
    for a, b in zip(jax.tree.leaves(per_step), jax.tree.leaves(scanned), strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-6, atol=1e-7)
    assert len(page["scan_losses"]) == 20
    assert np.all(np.isfinite(page["scan_losses"]))


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


def test_the_scanned_loop_compiles_once_per_chunk_length(page):
    scheduler = CyclicLR(0.01, 0.1, step_size_up=5, cycle_momentum=True)
    state = page["new_linen_state"]()
    with count_compilations() as compiled:  # chunks of 8, 8 and 4: lengths compiled on the page
        state, _, used = page["train_linen_scan"](state, scheduler, page["make_batches"](20), k=8)
    assert compiled == []
    assert used == _planned(CyclicLR(0.01, 0.1, step_size_up=5), 20)
    with count_compilations() as compiled:  # a last chunk of 3: one new length
        page["train_linen_scan"](state, scheduler, page["make_batches"](11), k=8)
    assert len(compiled) == 1
