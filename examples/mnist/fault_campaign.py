"""A fault campaign: SIGKILL the MNIST example at random moments, resume, compare bitwise.

    python examples/mnist/fault_campaign.py --kills=20 --seed=0 --workdir=/tmp/fault-campaign

First runs ``main.py`` once without interruption (``WORKDIR/reference``). Then runs the same
command with ``WORKDIR/campaign`` as its workdir and kills it with SIGKILL at ``--kills``
moments drawn by a generator seeded with ``--seed``, running the command again after each kill
so that it resumes from its checkpoints; the last run goes to the end. The moments are drawn
uniformly over the training time of the uninterrupted run (from the Trainer's start to its
last step) and found in a resumed run at the uninterrupted run's pace: from the moment its log
says where it resumed, its compilation plus the time the uninterrupted run took from that step
to the moment (or sooner, when the run logs the moment's step first). A moment that a run has
already passed (it resumed from a later checkpoint) falls at a random point of its start-up
instead (imports, restore, compilation). About a third of the kills (``--save_fraction``)
wait instead for an Orbax checkpoint being written in the background (a
``<step>.orbax-checkpoint-tmp`` directory in the checkpoint directory) and kill within 50 ms of
its appearance. A kill counts as one during an async save when it leaves such a directory
behind.

Then it checks that every run after a kill resumed from the newest complete checkpoint, that
no half-written checkpoint is left, and compares the two runs bitwise: the model parameters
and the optimizer state of the final checkpoint (restored with Orbax), the callbacks' and the
trainer's saved state, the steps of the checkpoints kept, the final test metrics, and every
scalar series of the TensorBoard event files (``steps_per_sec`` aside, which measures time):
each step present exactly once, its value the same bits. It prints one line per kill and a
summary, and exits with 1 on any difference, listing them.

``run_campaign(workdir, kills=..., seed=...)`` does all of it and returns a ``Campaign``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

EXAMPLE = pathlib.Path(__file__).resolve().parent
if str(EXAMPLE) not in sys.path:
    sys.path.insert(0, str(EXAMPLE))

import input_pipeline  # noqa: E402

# A few seconds of training: 100 steps of 128 images (4 epochs of 25 steps, each ending with an
# evaluation and a checkpoint), a checkpoint every 10 steps, the learning rate logged every
# step, four cycles of 30 steps.
DEFAULT_OVERRIDES: dict[str, Any] = {
    "dataset": "fashion_mnist",
    "train_subset": 3200,
    "num_train_steps": 100,
    "step_size_up": 15,
    "checkpoint_every_steps": 10,
    "log_every_steps": 1,
    "progress": False,
}

# CLU's logging writer prints every scalar it writes: "... ] [12] learning_rate=0.082, ...".
# A resumed run does not write (nor print) again the steps already in the event files.
_STEP_LINE = re.compile(r"\] \[(\d+)\] learning_rate=")
# The Trainer says where a run starts, just before its first step.
_RESUMED = re.compile(r"Resumed from the checkpoint at step (\d+)")
_FRESH = re.compile(r"No checkpoint in .*: starting fresh")
_TEST_LINE = re.compile(r"Test accuracy after .*")
_TMP = ".orbax-checkpoint-tmp"
_UNTIMED = ("steps_per_sec",)  # a measurement of time: differs between any two runs


@dataclasses.dataclass
class Kill:
    """One SIGKILL: where it was aimed, and what it left behind."""

    index: int
    kind: str  # "step": a moment of training; "save": during a background checkpoint write
    moment: float  # seconds into the uninterrupted run's training
    step: int  # the uninterrupted run's step at that moment (-1: still compiling)
    delay: float  # "save": seconds from the tmp directory's appearance to the kill
    early: float  # a moment the run has already passed: this fraction of its start-up
    seconds: float = 0.0  # from the launch of the run to the kill
    start: int | None = None  # the step the killed run started from (None: not yet known)
    last_logged: int | None = None  # the last step whose learning rate the killed run logged
    save_step: int | None = None  # the step of the checkpoint being written (a tmp dir left)
    newest: int | None = None  # the newest complete checkpoint after the kill
    resumed_from: int | None = None  # where the next run resumed (None: a fresh start)
    checked: bool = False  # whether a later run has said where it resumed
    missed: str | None = None  # why there was nothing to kill

    def describe(self, *, resume: bool = True) -> str:
        """One line for the report; ``resume=False`` before the next run has started."""
        after = f" after step {self.step}" if self.step >= 0 else ""
        if self.kind == "save":
            aim = f"the first async save{after} (+{self.delay * 1000:.0f} ms)"
        else:
            where = f"at step {self.step}" if self.step >= 0 else "before step 0"
            aim = f"{self.moment:.2f} s into training (uninterrupted: {where})"
        head = f"kill {self.index:2d} ({self.kind}) at {aim}"
        if self.missed:
            return f"{head}: missed: {self.missed}"
        started = (
            "before its start was logged"
            if self.start is None
            else (f"resumed from step {self.start}" if self.start else "started fresh")
        )
        logged = (
            "no new step logged"
            if self.last_logged is None
            else f"step {self.last_logged} logged last"
        )
        during = (
            "no save in flight"
            if self.save_step is None
            else f"during the async save of step {self.save_step}"
        )
        newest = "none" if self.newest is None else str(self.newest)
        line = (
            f"{head}: killed {self.seconds:.2f} s after launch (run {started}), {logged}, "
            f"{during}; newest complete checkpoint {newest}"
        )
        if resume:
            line += f"; the next run resumed from {_step_text(self.resumed_from)}"
        return line


@dataclasses.dataclass
class Campaign:
    """What ``run_campaign`` did and found."""

    kills: list[Kill]
    requested: int
    seed: int
    problems: list[str]
    reference_seconds: float
    seconds: float
    workdir: pathlib.Path

    @property
    def resumed(self) -> int:
        """Kills after which the next run resumed from the newest complete checkpoint."""
        return sum(1 for k in self.kills if k.checked and k.resumed_from == k.newest)

    @property
    def during_save(self) -> int:
        """Kills that left a half-written (async) checkpoint behind."""
        return sum(1 for k in self.kills if k.save_step is not None)

    @property
    def ok(self) -> bool:
        """Every kill done and resumed, and the result bitwise the uninterrupted run's."""
        return not self.problems and self.resumed == self.requested

    def summary(self) -> str:
        """The one-line verdict."""
        timing = f"seed {self.seed}, {self.seconds:.0f} s"
        if self.ok:
            return (
                f"fault campaign: {self.resumed}/{self.requested} kills resumed to a "
                f"bitwise-identical run ({self.during_save} during an async save); {timing}"
            )
        return (
            f"fault campaign FAILED: {self.resumed}/{self.requested} kills resumed "
            f"({self.during_save} during an async save), {len(self.problems)} difference(s) "
            f"from the uninterrupted run; {timing}"
        )


class _Launch:
    """One run of main.py; a thread reads its log for where it starts and the steps it logs."""

    def __init__(self, command: Sequence[str], env: Mapping[str, str], logs: pathlib.Path):
        self.err_path = logs.with_suffix(".err")
        self.out_path = logs.with_suffix(".out")
        self.steps: list[tuple[float, int]] = []  # (seconds since launch, step)
        self.started: tuple[float, int] | None = None  # (seconds since launch, first step)
        self.resumed_from: int | None = None
        self.start = time.monotonic()
        with open(self.out_path, "w") as out:
            self.process = subprocess.Popen(
                list(command),
                stdout=out,
                stderr=subprocess.PIPE,
                text=True,
                errors="replace",
                env=dict(env),
            )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        with open(self.err_path, "w") as log, self.process.stderr as lines:
            for line in lines:
                log.write(line)
                if match := _STEP_LINE.search(line):
                    self.steps.append((self.elapsed(), int(match[1])))
                elif match := _RESUMED.search(line):
                    self.resumed_from = int(match[1])
                    self.started = (self.elapsed(), self.resumed_from)
                elif _FRESH.search(line):
                    self.started = (self.elapsed(), 0)

    @property
    def last_step(self) -> int | None:
        return self.steps[-1][1] if self.steps else None

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def running(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> float:
        """SIGKILL; returns the seconds since launch at the kill."""
        seconds = self.elapsed()
        self.process.kill()
        self.process.wait()
        self.reader.join()
        return seconds

    def finish(self, timeout: float) -> int:
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.reader.join()
        return self.process.returncode

    def stdout(self) -> str:
        return self.out_path.read_text()

    def tail(self, lines: int = 25) -> str:
        text = self.err_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


@dataclasses.dataclass(frozen=True)
class _Pace:
    """The uninterrupted run's timing: a resumed run is assumed to train at the same pace."""

    started: float  # seconds from launch to the Trainer's "starting fresh"
    steps: tuple[int, ...]  # the steps whose learning rate it logged, in order
    times: tuple[float, ...]  # seconds from "starting fresh" to each of those lines

    @classmethod
    def of(cls, reference: _Launch) -> _Pace:
        if reference.started is None or len(reference.steps) < 2:
            raise RuntimeError(
                "The uninterrupted run logged neither its start nor its steps: the campaign "
                "needs main.py's INFO log (absl --verbosity=0)."
            )
        started = reference.started[0]
        steps = tuple(step for _, step in reference.steps)
        return cls(started, steps, tuple(t - started for t, _ in reference.steps))

    @property
    def compile(self) -> float:
        """From the start of training to the first step logged: mostly compilation."""
        return self.times[0]

    @property
    def end(self) -> float:
        return self.times[-1]

    def step_at(self, moment: float) -> int:
        """The step the run was at ``moment`` seconds into training (-1: before the first)."""
        if moment < self.times[0]:
            return -1
        return int(np.interp(moment, self.times, self.steps))

    def wait(self, kill: Kill, start: int) -> float | None:
        """Seconds from a run's start at step ``start`` to the kill's moment in that run.

        ``None``: the moment lies before that start; the kill falls into the run's start-up.
        """
        if start == 0:
            return kill.moment
        passed = kill.moment - float(np.interp(start, self.steps, self.times))
        return None if passed < 0 else self.compile + passed


def _checkpoint_names(directory: pathlib.Path) -> tuple[list[int], set[str]]:
    """The complete checkpoint steps and the half-written (tmp) directories."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return [], set()
    steps = sorted(int(name) for name in names if name.isdigit())
    return steps, {name for name in names if _TMP in name}


def _tmp_step(name: str) -> int | None:
    head = name.split(_TMP)[0]
    return int(head) if head.isdigit() else None


def main_command(workdir: pathlib.Path, overrides: Mapping[str, Any]) -> list[str]:
    """The command line of main.py for ``workdir`` (the same for every run of a campaign)."""
    flags = [f"--config.{key}={value}" for key, value in overrides.items()]
    return [
        sys.executable,
        str(EXAMPLE / "main.py"),
        f"--workdir={workdir}",
        f"--config={EXAMPLE / 'configs' / 'default.py'}",
        *flags,
        "--verbosity=0",  # INFO: where a run starts is read from its log
    ]


def _plan(pace: _Pace, kills: int, seed: int, save_fraction: float) -> list[Kill]:
    """``kills`` moments uniform over the uninterrupted run's training, a share for saves."""
    rng = np.random.default_rng(seed)
    moments = np.sort(rng.uniform(0.0, pace.end, size=kills))
    saves = min(kills, max(1, round(kills * save_fraction)))
    kinds = np.array(["step"] * kills, dtype=object)
    kinds[rng.choice(kills, size=saves, replace=False)] = "save"
    delays = rng.uniform(0.0, 0.05, size=kills)  # a save's tmp directory seen -> kill
    early = rng.uniform(0.0, 1.0, size=kills)
    return [
        Kill(
            index=i + 1,
            kind=str(kind),
            moment=float(moment),
            step=pace.step_at(moment),
            delay=float(delay) if kind == "save" else 0.0,
            early=float(fraction),
        )
        for i, (moment, kind, delay, fraction) in enumerate(
            zip(moments, kinds, delays, early, strict=True)
        )
    ]


def _kill_at(
    launch: _Launch, kill: Kill, pace: _Pace, checkpoints: pathlib.Path, timeout: float
) -> None:
    """Waits for the kill's moment in ``launch``, kills it, and notes what it left.

    "step": the moment is located by the uninterrupted run's pace from where this run started
    training (its log says so), or earlier if the run logs the moment's step first; a moment
    before that start falls into the start-up (imports, restore, compilation). "save": as soon
    as (plus ``delay``) a checkpoint directory of a step after ``kill.step`` is being written.
    """
    complete, stale = _checkpoint_names(checkpoints)  # stale: a killed save's leftovers
    early = pace.wait(kill, complete[-1] if complete else 0) is None and kill.kind == "step"
    deadline = time.monotonic() + timeout
    fire_at = kill.early * (pace.started + pace.compile) if early else None  # since launch
    while launch.running() and time.monotonic() < deadline:
        _, tmp = _checkpoint_names(checkpoints)
        stale &= tmp  # once removed (at start-up), a name is this run's when it reappears
        if fire_at is None and launch.started is not None:
            started_at, start = launch.started
            if kill.kind == "save":
                if any((s := _tmp_step(n)) is not None and s > kill.step for n in tmp - stale):
                    fire_at = launch.elapsed() + kill.delay
            else:
                fire_at = started_at + (pace.wait(kill, start) or 0.0)
        if fire_at is not None and launch.elapsed() >= fire_at:
            break
        logged = launch.last_step
        if kill.kind == "step" and not early and logged is not None and logged >= kill.step:
            break  # a run faster than the uninterrupted one: its log says it got there
        time.sleep(0.002)
    if not launch.running():
        launch.finish(timeout=60)
        kill.missed = f"the run ended first (exit code {launch.process.returncode})"
        return
    if fire_at is None or time.monotonic() >= deadline:
        launch.kill()
        kill.missed = f"the moment did not come within {timeout:.0f} s"
        return
    kill.seconds = launch.kill()
    kill.start = launch.started[1] if launch.started else None
    kill.last_logged = launch.last_step
    complete, tmp = _checkpoint_names(checkpoints)
    left = sorted(s for s in map(_tmp_step, tmp - stale) if s is not None)
    kill.save_step = left[-1] if left else None
    kill.newest = complete[-1] if complete else None


def _environment() -> dict[str, str]:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}


def run_campaign(
    workdir: str | os.PathLike,
    *,
    kills: int = 20,
    seed: int = 0,
    save_fraction: float = 0.35,
    overrides: Mapping[str, Any] | None = None,
    data_dir: str | os.PathLike | None = None,
    run_timeout: float = 600.0,
    log: Callable[[str], None] = print,
) -> Campaign:
    """Runs the reference and the killed-and-resumed run of main.py, and compares them.

    Args:
        workdir: A new or empty directory: ``reference/``, ``campaign/`` (the two workdirs of
            main.py) and ``logs/`` (every run's stdout and stderr) go there.
        kills: How many times to SIGKILL the run.
        seed: Seeds the moments of the kills and which of them wait for an async save.
        save_fraction: The share of the kills that wait for an async checkpoint save.
        overrides: ``--config.<field>=<value>`` pairs on top of ``DEFAULT_OVERRIDES``.
        data_dir: The directory of the IDX files; by default ``input_pipeline.locate``'s.
        run_timeout: Seconds one run of main.py may take.
        log: Where the progress lines go.

    Returns:
        A ``Campaign``: the kills, the differences found (``problems``) and the timings.
    """
    begin = time.monotonic()
    workdir = pathlib.Path(workdir).absolute()
    if workdir.exists() and any(workdir.iterdir()):
        raise ValueError(f"workdir must be new or empty, got {workdir} (it holds files).")
    config = {**DEFAULT_OVERRIDES, **(overrides or {})}
    if "data_dir" not in config:
        config["data_dir"] = data_dir or input_pipeline.locate(config["dataset"])
    logs = workdir / "logs"
    logs.mkdir(parents=True)
    env = _environment()
    problems: list[str] = []

    reference = _Launch(main_command(workdir / "reference", config), env, logs / "reference")
    code = reference.finish(run_timeout)
    reference_seconds = reference.elapsed()
    if code != 0:
        raise RuntimeError(
            f"The uninterrupted run failed (exit code {code}); its log ends:\n{reference.tail()}"
        )
    pace = _Pace.of(reference)
    log(
        f"uninterrupted run: {reference_seconds:.1f} s, {pace.end:.1f} s from the start of "
        f"training to step {reference.steps[-1][1]}"
    )

    command = main_command(workdir / "campaign", config)
    checkpoints = workdir / "campaign" / "checkpoints"
    records = _plan(pace, kills, seed, save_fraction)
    pending: list[Kill] = []  # kills whose next run has not yet said where it resumed
    for run, kill in enumerate(records, start=1):
        launch = _Launch(command, env, logs / f"run-{run:02d}")
        _kill_at(launch, kill, pace, checkpoints, run_timeout)
        pending = _check_resume(pending, launch, problems)
        if kill.missed and launch.process.returncode not in (0, None, -9):
            problems.append(
                f"run {run} failed on its own (exit code {launch.process.returncode}); "
                f"its log ends:\n{launch.tail()}"
            )
        log(kill.describe(resume=False))
        if kill.missed:
            break
        pending.append(kill)
    final = _Launch(command, env, logs / f"run-{len(records) + 1:02d}")
    code = final.finish(run_timeout)
    pending = _check_resume(pending, final, problems)
    log(f"the last run resumed from {_step_text(final.resumed_from)}")
    if code != 0:
        problems.append(f"the last run failed (exit code {code}); its log ends:\n{final.tail()}")
    else:
        problems += compare_runs(
            workdir / "reference",
            workdir / "campaign",
            log_every_steps=int(config["log_every_steps"]),
        )
        expected, got = _TEST_LINE.search(reference.stdout()), _TEST_LINE.search(final.stdout())
        if not (expected and got and expected[0] == got[0]):
            problems.append(
                f"the final evaluation differs: {got and got[0]!r} instead of "
                f"{expected and expected[0]!r}"
            )
    missed = [k for k in records if k.missed]
    if missed:
        problems.append(f"{len(missed)} of {kills} kills were not done: {missed[0].missed}")
    return Campaign(
        kills=records,
        requested=kills,
        seed=seed,
        problems=problems,
        reference_seconds=reference_seconds,
        seconds=time.monotonic() - begin,
        workdir=workdir,
    )


def _step_text(step: int | None) -> str:
    return "nothing (a fresh start)" if step is None else f"step {step}"


def _check_resume(pending: list[Kill], launch: _Launch, problems: list[str]) -> list[Kill]:
    """Notes where ``launch`` resumed for the kills before it; those it cannot tell stay."""
    if launch.started is None:  # killed before it restored: the next run will tell
        return pending
    for kill in pending:
        kill.resumed_from, kill.checked = launch.resumed_from, True
        if kill.resumed_from != kill.newest:
            problems.append(
                f"after kill {kill.index} the newest complete checkpoint was "
                f"{_step_text(kill.newest)}, but the next run resumed from "
                f"{_step_text(kill.resumed_from)}"
            )
    return []


# -- comparing two finished runs ------------------------------------------------------------------


def _restore(checkpoints: pathlib.Path, step: int) -> dict[str, Any]:
    import orbax.checkpoint as ocp

    manager = ocp.CheckpointManager(
        checkpoints,
        item_handlers={
            "model": ocp.StandardCheckpointHandler(),
            "optimizer": ocp.StandardCheckpointHandler(),
            "callbacks": ocp.JsonCheckpointHandler(),
            "trainer": ocp.JsonCheckpointHandler(),
        },
        options=ocp.CheckpointManagerOptions(create=False, cleanup_tmp_directories=False),
    )
    try:
        return manager.restore(
            step,
            args=ocp.args.Composite(
                model=ocp.args.StandardRestore(),
                optimizer=ocp.args.StandardRestore(),
                callbacks=ocp.args.JsonRestore(),
                trainer=ocp.args.JsonRestore(),
            ),
        )
    finally:
        manager.close()


def _leaves(tree: Any) -> dict[str, np.ndarray]:
    import jax

    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in flat}


def _compare_arrays(item: str, expected: Any, got: Any) -> list[str]:
    want, have = _leaves(expected), _leaves(got)
    if want.keys() != have.keys():
        return [f"{item}: other leaves: {sorted(want.keys() ^ have.keys())[:5]}"]
    problems = []
    for path, a in want.items():
        b = have[path]
        if a.dtype != b.dtype or a.shape != b.shape:
            problems.append(f"{item}{path}: {b.dtype}{b.shape} instead of {a.dtype}{a.shape}")
        elif a.tobytes() != b.tobytes():
            bits_a, bits_b = (
                np.frombuffer(x.tobytes(), np.uint8).reshape(x.size, x.itemsize) for x in (a, b)
            )
            differ = np.any(bits_a != bits_b, axis=1)
            worst = np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))
            problems.append(
                f"{item}{path}: {int(np.sum(differ))} of {a.size} values differ in their bits "
                f"(largest difference {worst:.3g})"
            )
    return problems


def event_series(logdir: str | os.PathLike) -> dict[str, list[tuple[int, bytes, float]]]:
    """Every scalar tag as TensorBoard shows it: (step, the value's bytes, value).

    Read with TensorBoard's ``plugin_event_accumulator``, which drops what a resumed run's
    restart marker orphans (the killed run's steps after its checkpoint): each step shows the
    value of the training the run kept, and a step written twice after the marker shows twice.
    """
    from tensorboard.backend.event_processing import plugin_event_accumulator as reader
    from tensorboard.util import tensor_util

    accumulator = reader.EventAccumulator(os.fspath(logdir), size_guidance={reader.TENSORS: 0})
    accumulator.Reload()
    series = {}
    for tag in accumulator.Tags()[reader.TENSORS]:
        if accumulator.SummaryMetadata(tag).plugin_data.plugin_name != "scalars":
            continue
        values = []
        for event in accumulator.Tensors(tag):
            array = tensor_util.make_ndarray(event.tensor_proto)
            values.append((event.step, array.dtype.str.encode() + array.tobytes(), array.item()))
        series[tag] = values
    return series


def _ranges(steps: Sequence[int]) -> str:
    """``[1, 2, 3, 7]`` -> ``'1..3, 7'``."""
    parts, steps = [], sorted(steps)
    for i, step in enumerate(steps):
        if i and step == steps[i - 1] + 1:
            parts[-1][1] = step
        else:
            parts.append([step, step])
    text = ", ".join(str(a) if a == b else f"{a}..{b}" for a, b in parts[:8])
    return text + (", ..." if len(parts) > 8 else "")


def _compare_series(tag: str, expected: list, got: list) -> list[str]:
    problems = []
    for name, series in (("the uninterrupted run", expected), ("the resumed run", got)):
        steps = [step for step, _, _ in series]
        twice = sorted({s for s in steps if steps.count(s) > 1})
        if twice:
            problems.append(f"{tag}: {name} wrote steps {_ranges(twice)} more than once")
    want = {step: (raw, value) for step, raw, value in expected}
    have = {step: (raw, value) for step, raw, value in got}
    if missing := sorted(want.keys() - have.keys()):
        problems.append(f"{tag}: steps {_ranges(missing)} missing from the resumed run")
    if extra := sorted(have.keys() - want.keys()):
        problems.append(f"{tag}: steps {_ranges(extra)} only in the resumed run")
    if differ := sorted(s for s in want.keys() & have.keys() if want[s][0] != have[s][0]):
        first = differ[0]
        problems.append(
            f"{tag}: values differ at steps {_ranges(differ)} (step {first}: "
            f"{have[first][1]!r} instead of {want[first][1]!r})"
        )
    return problems


def compare_runs(
    reference: str | os.PathLike, resumed: str | os.PathLike, *, log_every_steps: int = 1
) -> list[str]:
    """The differences between two finished workdirs of main.py; empty when bitwise equal.

    Compares the steps of the checkpoints kept, the final checkpoint's model, optimizer,
    callbacks and trainer items, and every scalar series of the event files except
    ``steps_per_sec``; the uninterrupted run must have logged the learning rate once at every
    ``log_every_steps``-th step.
    """
    reference, resumed = pathlib.Path(reference), pathlib.Path(resumed)
    problems = []
    want_steps, _ = _checkpoint_names(reference / "checkpoints")
    have_steps, leftovers = _checkpoint_names(resumed / "checkpoints")
    if leftovers:
        problems.append(f"half-written checkpoints left behind: {sorted(leftovers)}")
    if want_steps != have_steps:
        problems.append(f"checkpoints kept: {have_steps} instead of {want_steps}")
    if not want_steps or want_steps[-1] not in have_steps:
        problems.append("no final checkpoint to compare")
    else:
        last = want_steps[-1]
        want = _restore(reference / "checkpoints", last)
        have = _restore(resumed / "checkpoints", last)
        for item in ("model", "optimizer"):
            problems += _compare_arrays(item, want[item], have[item])
        for item in ("callbacks", "trainer"):
            a, b = (json.dumps(x[item], sort_keys=True) for x in (want, have))
            if a != b:
                problems.append(f"{item} state at step {last}: {b} instead of {a}")
    want_events = event_series(reference / "tensorboard")
    have_events = event_series(resumed / "tensorboard")
    lrs = [step for step, _, _ in want_events.get("learning_rate", [])]
    if want_steps and lrs != list(range(log_every_steps, want_steps[-1] + 1, log_every_steps)):
        problems.append(
            "the uninterrupted run did not log learning_rate once every "
            f"{log_every_steps} steps from {log_every_steps} to {want_steps[-1]}"
        )
    for tag in sorted(want_events.keys() | have_events.keys()):
        if tag not in _UNTIMED:
            problems += _compare_series(tag, want_events.get(tag, []), have_events.get(tag, []))
    return problems


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Any --config.FIELD=VALUE goes on to main.py, e.g. --config.num_train_steps=60.",
    )
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs to send (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the moments (default 0)")
    parser.add_argument(
        "--workdir",
        default=None,
        help="a new or empty directory for both runs and the logs (default: a new temporary one)",
    )
    parser.add_argument(
        "--save_fraction",
        type=float,
        default=0.35,
        help="the share of the kills aimed at an async checkpoint save (default 0.35)",
    )
    parser.add_argument("--data_dir", default=None, help="the Fashion-MNIST IDX files")
    args, rest = parser.parse_known_args(argv)
    args.overrides = {}
    for flag in rest:
        match = re.fullmatch(r"--config\.(\w+)=(.*)", flag)
        if not match:
            parser.error(f"unrecognized argument {flag!r} (config overrides: --config.FIELD=VALUE)")
        args.overrides[match[1]] = match[2]
    if args.kills < 1:
        parser.error(f"--kills must be at least 1, got {args.kills}")
    if not 0.0 <= args.save_fraction <= 1.0:
        parser.error(f"--save_fraction must be in [0, 1], got {args.save_fraction}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit code."""
    args = _parse(argv)
    # TensorBoard's event reader imports TensorFlow here: quietly (it computes nothing).
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    workdir = args.workdir or tempfile.mkdtemp(prefix="fault-campaign-")
    print(f"fault campaign: {args.kills} kills, seed {args.seed}, workdir {workdir}", flush=True)
    campaign = run_campaign(
        workdir,
        kills=args.kills,
        seed=args.seed,
        save_fraction=args.save_fraction,
        overrides=args.overrides,
        data_dir=args.data_dir,
        log=lambda line: print(line, flush=True),
    )
    print()
    for kill in campaign.kills:
        print(kill.describe())
    for problem in campaign.problems:
        print(f"DIFFERENCE: {problem}")
    print(campaign.summary())
    return 0 if campaign.ok else 1


if __name__ == "__main__":
    sys.exit(main())
