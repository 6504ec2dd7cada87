"""docs/own_loop.md: the Linen, scanned Linen, plain optax and fast NNX loops train with the
scheduler's values; the checkpointed NNX loop resumes bitwise after an interruption.

The page's code runs here in one namespace; its loops recorded the learning rate each update used
(read back from the optimizer state after the update, or from inside the scan). Running each loop
again checks that writing the values compiles nothing new. The checkpointed loop runs whole, and
stopped after an update that is not saved (by an exception here, by SIGKILL in a worker process)
then resumed: the final arrays and the learning rate of every update must be the same.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from helpers import count_compilations, host_lrs
from test_docs import python_blocks
from workers.own_loop_worker import Instrumented, Interrupted

from flax_cyclic import Checkpointer, CyclicLR, OneCycleLR

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


# -- Checkpoints and resume in your own loop ---------------------------------------------------
#
# The page's `train(workdir, num_steps)` (a Checkpointer with every_steps=5) runs through
# `Instrumented` (tests/workers/own_loop_worker.py), which records the learning rate each update
# applied and can stop the run after a given update: by an exception here, by SIGKILL in a worker.

WORKER = Path(__file__).resolve().parent / "workers" / "own_loop_worker.py"
NUM_STEPS = 30
STOP_AFTER = 13  # not a multiple of every_steps=5: updates 11 to 13 are not saved


@pytest.fixture
def loop(page):
    instrumented = Instrumented(page)
    yield instrumented
    instrumented.restore()


@pytest.fixture(scope="module")
def uninterrupted(page, tmp_path_factory):
    """The final arrays and the learning rate of every update of a run never interrupted."""
    instrumented = Instrumented(page)
    try:
        arrays = instrumented.run(tmp_path_factory.mktemp("uninterrupted"), NUM_STEPS)
    finally:
        instrumented.restore()
    assert sorted(instrumented.lrs) == list(range(NUM_STEPS))
    return arrays, instrumented.lrs


def _assert_bitwise(got: dict, expected: dict) -> None:
    assert sorted(got) == sorted(expected)
    for kind in ("model", "optimizer", "rngs", "metrics"):  # each of them is compared
        assert any(name.startswith(f"{kind}/") for name in expected), kind
    for name, array in expected.items():
        assert got[name].dtype == array.dtype, name
        np.testing.assert_array_equal(got[name], array, err_msg=name)


def test_a_run_interrupted_after_an_unsaved_step_resumes_bitwise(
    uninterrupted, loop, tmp_path, capsys
):
    arrays, lrs = uninterrupted
    assert loop.lrs == {}  # the uninterrupted run was recorded apart
    with pytest.raises(Interrupted):
        loop.run(tmp_path, NUM_STEPS, stop_after=STOP_AFTER)
    capsys.readouterr()
    resumed = loop.run(tmp_path, NUM_STEPS)
    # The checkpoint of step 10 is the newest: updates 10 to 12 are made again, with the same
    # learning rates (Instrumented checks it), and every update used the uninterrupted run's.
    assert "resumed at step 10\n" in capsys.readouterr().out
    assert loop.lrs == lrs
    _assert_bitwise(resumed, arrays)
    # The dropout stream and the metric sums are part of what is compared: both moved.
    assert int(resumed["rngs/dropout/count"]) == NUM_STEPS  # one dropout key per update
    assert int(resumed["metrics/loss/count"]) == NUM_STEPS % 8  # steps since the report at 24


def test_every_steps_acts_through_should_save(page, tmp_path, monkeypatch):
    saved: list[tuple[int, bool]] = []

    class Recording(page["Checkpointer"]):  # the real Checkpointer, its saves listed
        def save(self, step, **kwargs):
            written = super().save(step, **kwargs)
            saved.append((step, written))
            return written

    monkeypatch.setitem(page, "Checkpointer", Recording)
    page["train"](str(tmp_path / "a"), 23)
    assert saved == [(5, True), (10, True), (15, True), (20, True), (23, True)]  # 23: the end
    saved.clear()
    page["train"](str(tmp_path / "b"), 20)
    assert saved == [(5, True), (10, True), (15, True), (20, True)]  # 20 is saved already
    kept = Checkpointer(tmp_path / "b")
    try:
        assert kept.all_steps() == [10, 15, 20]  # max_to_keep=3
    finally:
        kept.close()


@pytest.mark.slow  # two processes that import JAX and compile the step: ~13 s of CPU here
def test_a_run_killed_after_an_unsaved_step_resumes_bitwise_in_a_new_process(
    uninterrupted, tmp_path
):
    arrays, lrs = uninterrupted
    killed = _worker(tmp_path, NUM_STEPS, "--kill-after", str(STOP_AFTER))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert not (tmp_path / "final.npz").exists()
    resumed = _worker(tmp_path, NUM_STEPS)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # The save of step 10 may still have been written in the background at the kill: the run
    # resumes from step 10 or, if that save was cut, from step 5 (Orbax starts a save once the
    # one before it has finished, so a checkpoint existed when the process was killed).
    started = re.search(r"^resumed at step (\d+)$", resumed.stdout, re.MULTILINE)
    assert started is not None, resumed.stdout
    assert int(started.group(1)) in (5, 10)
    used: dict[int, float] = {}
    for line in (killed.stdout + resumed.stdout).splitlines():
        if line.startswith("update "):
            _, update, lr = line.split()
            assert used.setdefault(int(update), float(lr)) == float(lr), line  # made again: same
    assert used == lrs
    with np.load(tmp_path / "final.npz") as final:
        _assert_bitwise(dict(final), arrays)


def _worker(workdir: Path, num_steps: int, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(WORKER), str(workdir), str(num_steps), *extra],
        capture_output=True,
        text=True,
        timeout=300,
    )
