"""docs/linen.md: the Linen loop trains with the scheduler's values, compiles its step once per
run, resumes bitwise after an interruption (by an exception here, by SIGKILL in a worker process)
with one TensorBoard value per step; the plain optax loop resumes as exactly.

tests/test_docs.py runs the whole page; here its loops run in new namespaces of the page's blocks
(`page_namespace`), so that the compilations of a jitted step are counted from none, through
`Instrumented` (tests/workers/linen_worker.py), which records the learning rate and momentum each
update used, read back from the optimizer state after the update, and can stop a run after it.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import host_lrs, host_momentums
from workers.linen_worker import (
    COMPILED,
    Instrumented,
    Interrupted,
    final_arrays,
    linen_update,
    optax_update,
    page_namespace,
)

from flax_cyclic import CyclicLR, OneCycleLR, read_scalars

WORKER = Path(__file__).resolve().parent / "workers" / "linen_worker.py"
NUM_STEPS = 30
STOP_AFTER = 13  # not a multiple of every_steps=5: updates 11 to 13 are not saved
# The kill: after update 16, before it is counted, once the background save of step 15 is on
# disk (the worker waits for it), so that the new process resumes from step 15.
KILL_AFTER, SAVED = 16, 15
TAGS = ("learning_rate", "train/loss")


def _planned(make_scheduler, steps: int) -> dict[int, tuple[float, float]]:
    """The learning rate and momentum of each update, as the float32 the optimizer holds."""
    lrs = host_lrs(make_scheduler(), steps)
    momentums = host_momentums(make_scheduler(), steps)
    return {
        update: (float(np.float32(lr[0])), float(np.float32(momentum[0])))
        for update, (lr, momentum) in enumerate(zip(lrs, momentums, strict=True))
    }


def _linen_plan() -> dict[int, tuple[float, float]]:
    return _planned(lambda: CyclicLR(0.01, 0.1, step_size_up=6, cycle_momentum=True), NUM_STEPS)


def _assert_bitwise(got: dict, expected: dict, parts=(".params", ".opt_state", ".step")) -> None:
    assert sorted(got) == sorted(expected)
    for part in parts:  # each part of the state is compared
        assert any(name.startswith(part) for name in expected), part
    for name, array in expected.items():
        assert got[name].dtype == array.dtype, name
        np.testing.assert_array_equal(got[name], array, err_msg=name)


def _run(
    namespace,
    workdir: Path,
    num_steps: int,
    stop_after: int | None = None,
    *,
    train: str = "train",
    step: str = "train_step",
    read=linen_update,
) -> dict:
    """The page's `train(workdir, num_steps)` (or `train_optax`, with `**OPTAX`) through
    `Instrumented`: the values each update used, the final arrays unless stopped, and the XLA
    compilations of the jitted step."""
    loop = Instrumented(namespace, step, read)
    loop.stop_after = stop_after
    outcome: dict = {"used": loop.used}
    before = COMPILED[f"jit({step})"]
    try:
        outcome["arrays"] = final_arrays(namespace[train](str(workdir), num_steps))
    except Interrupted:
        pass
    finally:
        loop.restore()
    outcome["compiled"] = COMPILED[f"jit({step})"] - before
    return outcome


OPTAX = {"train": "train_optax", "step": "optax_step", "read": optax_update}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """A run never interrupted: its final arrays, the values of each update, its TensorBoard."""
    workdir = tmp_path_factory.mktemp("uninterrupted")
    outcome = _run(page_namespace("train"), workdir, NUM_STEPS)
    outcome["series"] = read_scalars(workdir / "tensorboard", tags=TAGS)
    return outcome


def test_every_update_uses_the_schedulers_learning_rate_and_momentum(uninterrupted):
    assert uninterrupted["used"] == _linen_plan()


def test_tensorboard_holds_the_learning_rate_of_every_update(uninterrupted):
    series = uninterrupted["series"]
    plan = _linen_plan()
    # Step s: after s updates; the learning rate update s - 1 used.
    assert series["learning_rate"] == [(update + 1, plan[update][0]) for update in plan]
    assert [step for step, _ in series["train/loss"]] == list(range(1, NUM_STEPS + 1))


def test_the_step_compiles_once_in_a_run(uninterrupted):
    assert uninterrupted["compiled"] == 1


def test_an_interrupted_run_resumes_bitwise_compiling_once_per_run(uninterrupted, tmp_path, capsys):
    namespace = page_namespace("train")
    stopped = _run(namespace, tmp_path, NUM_STEPS, stop_after=STOP_AFTER)
    assert "arrays" not in stopped
    assert sorted(stopped["used"]) == list(range(STOP_AFTER))
    capsys.readouterr()
    resumed = _run(namespace, tmp_path, NUM_STEPS)
    # Leaving the `with` block on the exception saved step 12, the last one counted: update 12
    # is made again, with the same values (Instrumented checks it).
    assert "resumed at step 12\n" in capsys.readouterr().out
    assert stopped["used"] | resumed["used"] == uninterrupted["used"]
    _assert_bitwise(resumed["arrays"], uninterrupted["arrays"])
    # The restored arrays are placed on the device, the fresh ones were not: one compilation
    # for each run, none within a run.
    assert (stopped["compiled"], resumed["compiled"]) == (1, 1)
    # Step 13, written by both runs, is there once: the resumed run's writer.start(12) hides
    # what the first run wrote after step 12.
    assert read_scalars(tmp_path / "tensorboard", tags=TAGS) == uninterrupted["series"]


def test_a_trainstate_with_a_python_int_step_compiles_twice_when_resumed(tmp_path):
    # What the page's `new_state` avoids: TrainState.create's step, the number 0, comes back
    # from the checkpoint as a number beside committed arrays; the first update returns it as a
    # committed array, a second signature.
    namespace = page_namespace("train")
    page_state = namespace["new_state"]
    namespace["new_state"] = lambda: page_state().replace(step=0)
    assert _run(namespace, tmp_path, 5)["compiled"] == 1
    assert _run(namespace, tmp_path, 8)["compiled"] == 2


@pytest.mark.slow  # two processes that import JAX and TensorFlow and compile the step: ~14 s here
def test_a_run_killed_after_an_unsaved_step_resumes_bitwise_in_a_new_process(
    uninterrupted, tmp_path
):
    killed = _worker(tmp_path, "--kill-after", str(KILL_AFTER), "--once-saved", str(SAVED))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert not (tmp_path / "final.npz").exists()
    resumed = _worker(tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed at step {SAVED}\n" in resumed.stdout  # update 15 is made again
    used: dict[int, tuple[float, float]] = {}
    for process in (killed, resumed):
        compiled = []
        for line in process.stdout.splitlines():
            if line.startswith("update "):
                _, update, lr, momentum, count = line.split()
                values = (float(lr), float(momentum))
                assert used.setdefault(int(update), values) == values, line  # made again: same
                compiled.append(int(count))
        assert compiled, process.stdout
        assert set(compiled) == {1}, process.stdout  # compiled once, before the first update
    assert used == uninterrupted["used"]
    with np.load(tmp_path / "final.npz") as final:
        _assert_bitwise(dict(final), uninterrupted["arrays"])
    # One value per step, 1 to 30, each the uninterrupted run's: what the killed process wrote
    # after the checkpoint it resumed from is hidden, what it wrote up to it is on disk.
    assert read_scalars(tmp_path / "tensorboard", tags=TAGS) == uninterrupted["series"]


def _worker(workdir: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(WORKER), str(workdir), str(NUM_STEPS), *extra],
        capture_output=True,
        text=True,
        timeout=300,
    )


# -- plain optax: (params, opt_state) ------------------------------------------------------------


def test_the_optax_loop_resumes_exactly(tmp_path):
    before = COMPILED["jit(optax_step)"]
    # The page's example runs on the way: 12 steps, then resumed to 20, compiling the step once
    # in each (the restored arrays are placed on the device, the fresh ones were not).
    namespace = page_namespace("train_optax")
    assert COMPILED["jit(optax_step)"] - before == 2
    whole = _run(namespace, tmp_path / "whole", 20, **OPTAX)
    assert whole["used"] == _planned(lambda: OneCycleLR(max_lr=0.05, total_steps=40), 20)
    stopped = _run(namespace, tmp_path / "stopped", 20, STOP_AFTER, **OPTAX)
    assert "arrays" not in stopped
    resumed = _run(namespace, tmp_path / "stopped", 20, **OPTAX)
    assert sorted(resumed["used"]) == list(range(12, 20))  # from the checkpoint of step 12
    assert stopped["used"] | resumed["used"] == whole["used"]
    # (params, opt_state): the parameters, and the optimizer state with its update counts.
    _assert_bitwise(resumed["arrays"], whole["arrays"], parts=("[0]", "[1]"))
    assert any(name.startswith("[1]") and "count" in name for name in whole["arrays"])
    assert (whole["compiled"], stopped["compiled"], resumed["compiled"]) == (0, 0, 0)  # cached
