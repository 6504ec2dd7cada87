"""The resume-equivalence oracle: an interrupted and resumed run equals the uninterrupted one.

Each case draws a run from its seed (scheduler of the family, early stopping, TerminateOnNaN,
learning-rate logging, a Checkpointer saving every N steps / every epoch / the best k, periodic
evaluation, epoch length, optax.MultiSteps, BatchNorm and Dropout in the model), trains it
once without interruption, then again in its own directories interrupted at one or two points
of the run (any hook of any step: epoch starts and ends, steps, evaluations, the steps that
save) and resumed by the same code each time, with every object built anew. The two must agree:
the final parameters and optimizer state bit for bit, the History (the resumed call's entries
against the uninterrupted run's from the same steps on), the stopped and preempted flags, every
TensorBoard series as TensorBoard's reader shows it, the checkpoints kept and the best step,
and the injected hyperparameters of every update.

Interruptions are an exception raised in-process; in the cases of `_killed` the run is a
subprocess (tests/workers/oracle_worker.py) that kills itself with SIGKILL at the point.

The campaign is ``CASES``; `campaign` (tests/oracle_support.py) picks the cases a test run
checks: the first ``QUICK`` in the quick tier, a slice of at most ``COMPLETE`` of the rest in
the complete tier (chosen by the commit), all of them with ``make test-oracles``. Rerun one
case alone (its seed is the test id; a failure prints this command):

    FLAX_CYCLIC_ORACLE_CASES=17 .venv/bin/python -m pytest \
        'tests/test_oracle_resume.py::test_an_interrupted_run_resumes_to_the_uninterrupted_one'
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
from typing import Any

import jax
import numpy as np
import pytest
from oracle_support import (  # noqa: F401 (a fixture)
    CACHE_OPTIONS,
    Interrupted,
    campaign,
    draw,
    fit,
    interruptions,
    load_outcome,
    shared_compilation_cache,
    with_dispatch,
)

WORKER = pathlib.Path(__file__).parent / "workers" / "oracle_worker.py"

CASES = [*range(30), *range(1000, 1330)]  # the whole campaign: 360 cases
QUICK = 10  # the quick tier's cases: the first ten
# The complete tier (CI) runs one of 7 slices of the other 350: about 3.4 s a case on two cores
# with two workers, under 3 minutes; successive commits go through all 7.
COMPLETE = 50


def _killed(seed: int) -> bool:
    """The cases run as a subprocess killed with SIGKILL: seed 7 and a tenth of those from 1000."""
    return seed == 7 or (seed >= 1000 and seed % 10 == 0)


@pytest.mark.parametrize("seed", campaign(CASES, quick=QUICK, complete=COMPLETE))
def test_an_interrupted_run_resumes_to_the_uninterrupted_one(seed, tmp_path):
    check(seed, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [7, 3])
def test_a_run_killed_at_8_steps_per_dispatch_resumes_bitwise(seed, tmp_path):
    # Killed (SIGKILL) within a dispatch's hooks or between dispatches, and resumed.
    check(seed, tmp_path, dispatch=8, kill=True)


def check(
    seed: int, tmp_path: pathlib.Path, *, dispatch: int | None = None, kill: bool | None = None
) -> None:
    """Runs the case of `seed` both ways and asserts that the two outcomes agree.

    ``dispatch`` / ``kill``: the case with that many steps per dispatch / killed or not.
    """
    config = draw(seed, kill=_killed(seed) if kill is None else kill)
    if dispatch is not None:
        config = with_dispatch(config, dispatch)
    reference = fit(config, tmp_path / "uninterrupted")
    points = interruptions(seed, reference["events"])
    if config["kill"]:
        points = points[:1]  # a worker process costs seconds to start: one kill, one resume
    resumed, problems = resume(config, tmp_path / "interrupted", points)
    if resumed is not None:
        problems += compare(reference, resumed)
    assert not problems, report(seed, config, points, problems)


def resume(config: dict[str, Any], workdir: pathlib.Path, points: list) -> tuple[Any, list[str]]:
    """Runs `config` interrupted at each point in turn, then to its end; (outcome, problems).

    The last run must resume from the newest checkpoint the interrupted ones left: a run that
    started over would reach the same end, but not by resuming.
    """
    workdir.mkdir()
    for point in points:
        if _run(config, workdir, point) is not None:
            return None, [f"the run ended without reaching the interruption point {point}"]
    newest = max(
        (int(path.name) for path in (workdir / "checkpoints").iterdir() if path.name.isdigit()),
        default=None,
    )
    outcome = _run(config, workdir, None)
    if outcome["resumed_from"] != newest:
        return outcome, [
            f"resumed_from: expected the newest checkpoint, {newest}, got {outcome['resumed_from']}"
        ]
    return outcome, []


def _run(config: dict[str, Any], workdir: pathlib.Path, point: list | None) -> Any:
    """One run of `config` in `workdir`: its outcome, or None if it stopped at `point`."""
    if config["kill"]:
        return load_outcome(workdir / "outcome") if _worker(workdir, config, point) else None
    try:
        return fit(config, workdir, point)
    except Interrupted:
        return None


def _worker(workdir: pathlib.Path, config: dict[str, Any], point: list | None) -> bool:
    """Runs the worker; True if it ran to the end, False if it killed itself at `point`."""
    command = [sys.executable, str(WORKER), str(workdir), json.dumps(config)]
    if point is not None:
        command.append(json.dumps(point))
    cache = {name.upper(): str(getattr(jax.config, name)) for name in CACHE_OPTIONS}
    env = {**os.environ, **cache, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    if done.returncode == -signal.SIGKILL and point is not None:
        return False
    assert done.returncode == 0, f"worker failed ({done.returncode}):\n{done.stderr[-4000:]}"
    return True


def compare(expected: dict[str, Any], got: dict[str, Any]) -> list[str]:
    """What differs between the uninterrupted run's outcome and the resumed one's."""
    problems = _compare_state(expected["state"], got["state"])
    expected, got = _plain(expected), _plain(got)
    start = -1 if got["resumed_from"] is None else got["resumed_from"]
    for kind in ("train", "eval"):
        want = [entry for entry in expected[kind] if entry["step"] > start]
        if got[kind] != want:
            problems.append(f"History.{kind} after step {start}: expected {want}, got {got[kind]}")
    for key in ("stopped", "preempted", "all_steps", "best_step"):
        if got[key] != expected[key]:
            problems.append(f"{key}: expected {expected[key]}, got {got[key]}")
    if got["updates"] != expected["updates"]:
        differing = [
            f"update {update}: expected {expected['updates'].get(update)}, got "
            f"{got['updates'].get(update)}"
            for update in sorted(set(expected["updates"]) | set(got["updates"]), key=int)
            if expected["updates"].get(update) != got["updates"].get(update)
        ]
        problems.append(f"injected hyperparameters differ: {'; '.join(differing[:5])}")
    problems += _compare_tensorboard(expected["tensorboard"], got["tensorboard"])
    return problems


def _compare_state(expected: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> list[str]:
    if set(got) != set(expected):
        return [f"state leaves differ: {sorted(set(got) ^ set(expected))}"]
    differing = []
    for name, array in expected.items():
        try:
            np.testing.assert_array_equal(got[name], array, strict=True)
        except AssertionError:
            difference = np.max(np.abs(got[name].astype(float) - array.astype(float)))
            differing.append(f"{name} (max |difference| {difference:.3g})")
    return [f"state not bitwise equal: {', '.join(differing)}"] if differing else []


def _compare_tensorboard(expected: dict[str, list], got: dict[str, list]) -> list[str]:
    problems = []
    if set(got) != set(expected):
        problems.append(f"TensorBoard tags: expected {sorted(expected)}, got {sorted(got)}")
    for tag in sorted(set(got) & set(expected)):
        want, have = expected[tag], got[tag]
        if "steps_per_sec" in tag:  # a measured time: only its steps must agree
            want, have = [s for s, _ in want], [s for s, _ in have]
        if have != want:
            problems.append(f"TensorBoard {tag!r}: expected {want}, got {have}")
    return problems


def _plain(outcome: dict[str, Any]) -> dict[str, Any]:
    """The outcome without its arrays, as JSON would give it back (tuples as lists)."""
    return json.loads(json.dumps({k: v for k, v in outcome.items() if k != "state"}))


def report(seed: int, config: dict[str, Any], points: list, problems: list[str]) -> str:
    return (
        f"seed {seed}: the interrupted run differs from the uninterrupted one.\n"
        f"configuration: {json.dumps(config)}\ninterrupted at: {points}\n"
        + "\n".join(f"- {problem}" for problem in problems)
    )


def _outcome() -> dict[str, Any]:
    """A small outcome as `fit` returns it: one resumed run's worth of everything compared."""
    return {
        "state": {"model['w']": np.array([1.0, 2.0], np.float32)},
        "train": [{"step": 3, "epoch": 0, "loss": 0.5}, {"step": 6, "epoch": 1, "loss": 0.25}],
        "eval": [{"step": 6, "epoch": 1, "loss": 0.75}],
        "resumed_from": None,
        "stopped": False,
        "preempted": False,
        "all_steps": [3, 6],
        "best_step": 6,
        "updates": {"0": {"learning_rate": 0.1}, "1": {"learning_rate": 0.2}},
        "tensorboard": {"train/loss": [(3, 0.5), (6, 0.25)], "steps_per_sec": [(3, 9.0)]},
        "events": [],
    }


def test_compare_sees_every_kind_of_difference():
    expected = _outcome()
    resumed = _outcome() | {
        "train": [{"step": 6, "epoch": 1, "loss": 0.25}],
        "resumed_from": 3,
        "tensorboard": {"train/loss": [[3, 0.5], [6, 0.25]], "steps_per_sec": [[3, 7.5]]},
    }
    assert compare(expected, resumed) == []  # entries from the resumed step on; times aside
    changes = {
        "state not bitwise equal": {
            "state": {"model['w']": np.array([1.0, 2.0000002], np.float32)}
        },
        "History.train after step -1": {"train": expected["train"][:1]},
        "History.eval after step -1": {"eval": []},
        "stopped": {"stopped": True},
        "all_steps": {"all_steps": [6]},
        "best_step": {"best_step": 3},
        "injected hyperparameters differ: update 1": {"updates": {"0": {"learning_rate": 0.1}}},
        "TensorBoard 'train/loss'": {
            "tensorboard": {
                "train/loss": [(3, 0.5), (3, 0.5), (6, 0.25)],
                "steps_per_sec": [(3, 1.0)],
            }
        },
        "TensorBoard tags": {"tensorboard": {"train/loss": [(3, 0.5), (6, 0.25)]}},
    }
    for start, change in changes.items():
        problems = compare(expected, _outcome() | change)
        assert [problem[: len(start)] for problem in problems] == [start], problems
