"""The resume-equivalence oracle's harness: draw a run, run it, read back what it left.

A configuration is a JSON-able dict drawn from a seed (`draw`). `fit` builds every object
afresh from it (model, optimizer, callbacks, Checkpointer, writer) in one work directory,
calls ``Trainer.fit`` once, optionally interrupted at one point of the run, and returns what
the run left: the final state, the History, the checkpoints kept, the hyperparameters of
every update and every TensorBoard series. The test in test_oracle_resume.py compares the
outcome of an uninterrupted run with that of an interrupted and resumed one; the worker script
tests/workers/oracle_worker.py runs `fit` in a process that kills itself with SIGKILL.

`campaign` chooses which generated cases a test run checks, for every oracle: the quick tier
runs an oracle's first cases, the complete tier (CI) a slice of the rest chosen by the commit,
``make test-oracles`` all of them.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pathlib
import signal
import subprocess
from collections.abc import Callable, Sequence
from functools import cache
from typing import Any

import jax
import numpy as np
import optax
import pytest
from flax import nnx
from helpers import tiny_batches
from jax.experimental.compilation_cache import compilation_cache

from flax_cyclic import (
    Callback,
    Checkpointer,
    CosineAnnealingWarmRestarts,
    CyclicLR,
    EarlyStopping,
    LearningRateMonitor,
    LinearLR,
    LRSchedulerCallback,
    OneCycleLR,
    ReduceLROnPlateau,
    SequentialLR,
    TerminateOnNaN,
    Trainer,
    WeightAveraging,
    create_writer,
    read_scalars,
)

MODES = {"eval/loss": "min", "eval/accuracy": "max", "train/loss": "min"}


# -- campaigns: which generated cases a test run checks ----------------------------------------

SEED_ENV = "FLAX_CYCLIC_ORACLE_SEED"  # picks the complete tier's slice (default: the commit)
CAMPAIGN_ENV = "FLAX_CYCLIC_ORACLE_CAMPAIGN"  # "full": every case (make test-oracles)
CASES_ENV = "FLAX_CYCLIC_ORACLE_CASES"  # "17,1234": only these cases (to rerun a failure)


def campaign(
    cases: int | Sequence[int], quick: int, complete: int, *, ids: Callable[[int], str] = str
) -> list[Any]:
    """The cases of an oracle's campaign that this test run checks, as pytest parameters.

    Parametrize the oracle's one test with it: ``@pytest.mark.parametrize("seed",
    campaign(200, quick=20, complete=40))``. A case is its seed.

    Args:
        cases: The whole campaign: its case seeds in order, or a count ``n`` for ``0..n-1``.
        quick: The first this many cases run in the quick tier (they are not marked).
        complete: The complete tier (marked slow, CI) runs at most this many of the rest: one
            of the ``ceil(rest / complete)`` interleaved slices ``rest[j::slices]``, ``j``
            chosen by the campaign key (`campaign_key`: the commit, or the variable
            ``FLAX_CYCLIC_ORACLE_SEED``). Successive commits draw other slices, so the whole
            campaign keeps being covered while each CI run checks a fixed-size part of it.
        ids: The test id of a case, from its seed (by default the seed itself).

    Returns:
        ``pytest.param`` objects with the ``oracle_case`` mark (a failure prints the command
        that reruns its case alone). With ``FLAX_CYCLIC_ORACLE_CAMPAIGN=full``, every case
        after the first ``quick``, marked slow (``make test-oracles``); with
        ``FLAX_CYCLIC_ORACLE_CASES=17,1234``, exactly those cases, unmarked.
    """
    seeds = list(range(cases) if isinstance(cases, int) else cases)
    chosen = os.environ.get(CASES_ENV, "").strip()
    if chosen:
        return [_case(int(seed), ids, slow=False) for seed in chosen.split(",")]
    head, rest = seeds[:quick], seeds[quick:]
    if os.environ.get(CAMPAIGN_ENV, "").strip().lower() != "full":
        rest = campaign_slice(rest, complete)
    return [_case(seed, ids, slow=False) for seed in head] + [
        _case(seed, ids, slow=True) for seed in rest
    ]


def campaign_slice(rest: Sequence[int], complete: int, key: str | None = None) -> list[int]:
    """The complete tier's slice of `rest` (at most `complete` cases) for `key`."""
    if complete < 1 or not rest:
        return []
    slices = math.ceil(len(rest) / complete)
    digest = hashlib.sha256((campaign_key() if key is None else key).encode()).hexdigest()
    return list(rest[int(digest, 16) % slices :: slices])


@cache
def campaign_key() -> str:
    """``$FLAX_CYCLIC_ORACLE_SEED`` if set, else the checkout's commit (``git rev-parse HEAD``).

    The same in every process of a run (pytest-xdist's workers each collect the tests).
    """
    key = os.environ.get(SEED_ENV, "").strip()
    if key:
        return key
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=pathlib.Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return "no-commit"
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else "no-commit"


def rerun_command(test: str, seed: int) -> str:
    """The command that reruns the case `seed` of `test` (``path::function``) alone."""
    return f"{CASES_ENV}={seed} .venv/bin/python -m pytest '{test}' -q"


def describe_campaign(ran: int) -> str:
    """A line for the end of a test run: which cases of the campaigns ran, how to get them again."""
    chosen = os.environ.get(CASES_ENV, "").strip()
    if chosen:
        return f"oracles: {ran} case(s) chosen by {CASES_ENV}={chosen}"
    if os.environ.get(CAMPAIGN_ENV, "").strip().lower() == "full":
        return f"oracles: {ran} cases, every case of the campaigns ({CAMPAIGN_ENV}=full)"
    key = campaign_key()
    source = SEED_ENV if os.environ.get(SEED_ENV, "").strip() else "the commit"
    return (
        f"oracles: {ran} cases; the complete tier's slice of each campaign is chosen by the key "
        f"{key} ({source}). The same cases again: {SEED_ENV}={key} make test-slow; every "
        "case: make test-oracles"
    )


def _case(seed: int, ids: Callable[[int], str], *, slow: bool) -> Any:
    import pytest  # here, not above: the worker script imports this module too

    marks = [pytest.mark.oracle_case(seed)] + ([pytest.mark.slow] if slow else [])
    return pytest.param(seed, marks=marks, id=ids(seed))


# -- drawing -----------------------------------------------------------------------------------


def draw(seed: int, *, kill: bool = False) -> dict[str, Any]:
    """A random run configuration, the same for the same seed."""
    rng = np.random.default_rng(seed)

    def pick(options):
        return options[int(rng.integers(len(options)))]

    epoch_len = int(rng.integers(3, 8))
    length = (
        {"num_epochs": int(rng.integers(2, 4))}
        if rng.random() < 0.5
        else {"num_steps": int(rng.integers(epoch_len + 1, 3 * epoch_len + 1))}
    )
    total = length.get("num_steps") or epoch_len * length["num_epochs"]
    optimizer = pick(["sgd", "adam"])
    writer = rng.random() < 0.8
    best_metric = pick([None, None, "eval/loss", "eval/accuracy"])
    config = {
        "seed": seed,
        "kill": kill,
        "epoch_len": epoch_len,
        **length,
        "eval_every_steps": pick([None, None, 2, 3, 4, 5]),
        "model": {
            "batchnorm": bool(rng.random() < 0.4),
            "dropout": pick([None, None, "own", "call"]),
        },
        "optimizer": optimizer,
        "multisteps": pick([1, 1, 1, 2]),
        "scheduler": _draw_scheduler(rng, pick, total, 0.1 if optimizer == "sgd" else 0.01),
        "early_stopping": None
        if rng.random() < 0.5
        else {"monitor": pick(list(MODES)), "patience": int(rng.integers(1, 4))},
        "terminate_on_nan": bool(rng.random() < 0.3),
        "writer": writer,
        "lr_logging": pick(["trainer", "callback", "monitor"]) if writer else None,
        "log_every_steps": int(rng.integers(1, 4)),
        "checkpointer": {
            "every_steps": pick([None, 2, 3, 4, 5]),
            "every_epoch": bool(rng.random() < 0.6),
            "best_metric": best_metric,
            "max_to_keep": int(rng.integers(1, 4)),
            "async_save": bool(rng.random() < 0.15),
        },
    }
    config = with_dispatch(config, pick([1, 1, 2, 4, 8]))  # drawn last: the rest stays as it was
    config["averaging"] = _draw_averaging(seed, config, total)  # its own stream: the same
    # create_writer's backend, from a stream of its own too: CLU's writer or TensorBoard's.
    config["writer_backend"] = ["clu", "tensorboard"][np.random.default_rng([seed, 3]).integers(2)]
    return config


def with_dispatch(config: dict[str, Any], k: int) -> dict[str, Any]:
    """`config` with `k` train steps per dispatch: its intervals rounded up to multiples of k."""
    config["steps_per_dispatch"] = k
    if k == 1:
        return config
    for holder, key in ((config, "eval_every_steps"), (config["checkpointer"], "every_steps")):
        if holder[key] is not None:
            holder[key] = -(-holder[key] // k) * k
    if config["multisteps"] > 1 and config["lr_logging"] in ("trainer", "monitor"):
        # LearningRateMonitor reads MultiSteps' counters, which a dispatch only has at its end.
        config["lr_logging"] = "callback"
    return config


def _draw_averaging(seed: int, config: dict[str, Any], total: int) -> dict[str, Any] | None:
    """A WeightAveraging (or none) that takes a snapshot within the run: at the cycle ends of
    a cyclic scheduler stepped per update that ends a cycle in time, else every few steps."""
    rng = np.random.default_rng([seed, 2])
    if rng.random() < 0.5:
        return None
    decay = None if rng.random() < 0.6 else 0.9
    spec, every = config["scheduler"], config["multisteps"]
    first_end = None  # the train step (from 0) whose update ends the first cycle
    if spec["interval"] == "step" and spec["kind"] == "cyclic":
        cycle = spec["step_size_up"] + (spec["step_size_down"] or spec["step_size_up"])
        first_end = (cycle + 1) * every - 1
    elif spec["interval"] == "step" and spec["kind"] == "warm_restarts":
        first_end = spec["T_0"] * every - 1
    if first_end is not None and first_end < total and rng.random() < 0.8:
        return {"decay": decay}
    return {"every_steps": int(rng.integers(1, max(2, total // 2))), "decay": decay}


def _draw_scheduler(rng, pick, total: int, top: float) -> dict[str, Any]:
    kind = pick(["cyclic", "onecycle", "warm_restarts", "sequential", "plateau"])
    interval = "epoch" if kind != "plateau" and rng.random() < 0.2 else "step"
    spec: dict[str, Any] = {"kind": kind, "interval": interval, "top": top}
    if kind == "cyclic":
        spec |= {
            "mode": pick(["triangular", "triangular2", "exp_range"]),
            "step_size_up": int(rng.integers(1, 6)),
            "step_size_down": pick([None, 2, 3]),
            "cycle_momentum": bool(rng.random() < 0.5),
        }
    elif kind == "onecycle":
        spec |= {"total_steps": total, "three_phase": bool(rng.random() < 0.3)}
    elif kind == "warm_restarts":
        spec |= {"T_0": int(rng.integers(2, 6)), "T_mult": int(rng.integers(1, 3))}
    elif kind == "sequential":
        spec |= {"warmup": int(rng.integers(1, 5)), "step_size_up": int(rng.integers(1, 5))}
    else:
        monitor = pick(list(MODES))
        spec |= {"monitor": monitor, "patience": int(rng.integers(0, 3))}
    return spec


def interruptions(seed: int, events: list[list[Any]]) -> list[list[Any]]:
    """One or two points of the uninterrupted run's events (in order) to interrupt at."""
    rng = np.random.default_rng([seed, 1])
    count = min(len(events), 1 if rng.random() < 0.75 else 2)
    chosen = sorted(rng.choice(len(events), size=count, replace=False))
    return [events[int(i)] for i in chosen]


# -- building and running ----------------------------------------------------------------------


class Net(nnx.Module):
    """8 -> 16 (BatchNorm, ReLU, Dropout) -> 3.

    ``dropout``: ``None``, ``'own'`` (the Dropout draws from its own rngs stream) or ``'call'``
    (called as ``model(x, rngs=rngs)``, the Flax NNX tutorials' style: the Trainer's ``rngs``).
    """

    def __init__(self, batchnorm: bool, dropout: str | None):
        rngs = nnx.Rngs(params=0, dropout=1)
        self.hidden = nnx.Linear(8, 16, rngs=rngs)
        self.norm = nnx.BatchNorm(16, rngs=rngs) if batchnorm else None
        own = rngs if dropout == "own" else None
        self.drop = nnx.Dropout(0.2, rngs=own) if dropout else None
        self.out = nnx.Linear(16, 3, rngs=rngs)

    def __call__(self, x, rngs: nnx.Rngs | None = None):
        h = self.hidden(x)
        if self.norm is not None:
            h = self.norm(h)
        h = jax.nn.relu(h)
        if self.drop is not None:
            h = self.drop(h, rngs=rngs)
        return self.out(h)


class Interrupted(Exception):
    """The in-process interruption."""


class _Points(Callback):
    """Calls ``at(hook, loop)`` at every point a run can be interrupted at."""

    def at(self, hook: str, loop) -> None:
        raise NotImplementedError

    def on_epoch_begin(self, loop, epoch):
        self.at("epoch_begin", loop)

    def on_step_begin(self, loop, step):
        self.at("step_begin", loop)

    def on_step_end(self, loop, step, metrics):
        self.at("step_end", loop)

    def on_eval_end(self, loop, metrics):
        self.at("eval_end", loop)

    def on_epoch_end(self, loop, epoch, metrics):
        self.at("epoch_end", loop)


class Probe(_Points):
    """Records the run's points ``[hook, loop.step]`` and every update's hyperparameters.

    It must be the first callback: it reads in ``on_step_end`` before a scheduler callback
    writes the next update's values. The values go to a JSON-lines file, one line per update
    (line-buffered: a SIGKILL loses none), so the record of a run spans all its processes.
    """

    def __init__(self, record: pathlib.Path):
        self.record = record
        self.events: list[list[Any]] = []

    def at(self, hook: str, loop) -> None:
        self.events.append([hook, loop.step])

    def on_step_end(self, loop, step, metrics):
        super().on_step_end(loop, step, metrics)
        line = json.dumps({"update": loop.step, "values": injected(loop.optimizer)})
        with open(self.record, "a", buffering=1) as file:
            file.write(line + "\n")


class Interrupt(_Points):
    """Stops the run at one point: raises `Interrupted`, or kills the process (SIGKILL)."""

    def __init__(self, point: list[Any], kill: bool):
        self.point = list(point)
        self.kill = kill

    def at(self, hook: str, loop) -> None:
        if [hook, loop.step] != self.point:
            return
        if self.kill:
            os.kill(os.getpid(), signal.SIGKILL)
        raise Interrupted(f"interrupted at {hook} of step {loop.step}")


def injected(optimizer: nnx.Optimizer) -> dict[str, float]:
    """Every injected hyperparameter in the optimizer state, by path: one device read."""
    leaves = jax.tree_util.tree_flatten_with_path(nnx.state(optimizer))[0]
    found = {}
    for path, leaf in leaves:
        names = [
            str(getattr(key, "key", getattr(key, "name", getattr(key, "idx", key)))) for key in path
        ]
        if "hyperparams" in names:
            found["/".join(names[names.index("hyperparams") + 1 :])] = leaf
    return {name: float(value) for name, value in jax.device_get(found).items()}


def _scheduler(spec: dict[str, Any]):
    top = spec["top"]
    kind = spec["kind"]
    if kind == "cyclic":
        return CyclicLR(
            base_lr=top / 10,
            max_lr=top,
            step_size_up=spec["step_size_up"],
            step_size_down=spec["step_size_down"],
            mode=spec["mode"],
            gamma=0.9,
            cycle_momentum=spec["cycle_momentum"],
        )
    if kind == "onecycle":
        return OneCycleLR(
            max_lr=top, total_steps=spec["total_steps"], three_phase=spec["three_phase"]
        )
    if kind == "warm_restarts":
        return CosineAnnealingWarmRestarts(
            top, T_0=spec["T_0"], T_mult=spec["T_mult"], eta_min=top / 100
        )
    if kind == "sequential":
        warmup = LinearLR(top / 10, start_factor=0.1, total_iters=spec["warmup"])
        cyclic = CyclicLR(top / 10, top, step_size_up=spec["step_size_up"])
        return SequentialLR([warmup, cyclic], milestones=[spec["warmup"]])
    return ReduceLROnPlateau(
        top, mode=MODES[spec["monitor"]], factor=0.5, patience=spec["patience"]
    )


def train_data(config: dict[str, Any]) -> Callable[[int], list]:
    return lambda epoch: tiny_batches(8, config["epoch_len"], seed=100 + epoch)


EVAL_DATA = tiny_batches(16, 2, seed=99)


def build(config: dict[str, Any], workdir: pathlib.Path, point=None):
    """The Trainer (and writer, probe) of `config`, every object new, in `workdir`."""
    model = Net(**config["model"])
    if config["optimizer"] == "sgd":
        tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.0, momentum=0.9)
    else:
        tx = optax.inject_hyperparams(optax.adam)(learning_rate=0.0)
    if config["multisteps"] > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=config["multisteps"]).gradient_transformation()
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    writer = (
        create_writer(workdir / "tensorboard", backend=config["writer_backend"])
        if config["writer"]
        else None
    )
    spec = config["scheduler"]
    lr_callback = LRSchedulerCallback(
        _scheduler(spec),
        interval=spec["interval"],
        monitor=spec.get("monitor"),
        writer=writer if config["lr_logging"] == "callback" else None,
        log_every_steps=config["log_every_steps"],
        plot_steps=0,
    )
    probe = Probe(workdir / "updates.jsonl")
    callbacks: list[Callback] = [probe]
    if config["lr_logging"] == "monitor":
        callbacks.append(LearningRateMonitor(writer, log_every_steps=config["log_every_steps"]))
    callbacks.append(lr_callback)
    if config["early_stopping"]:
        stopping = config["early_stopping"]
        callbacks.append(
            EarlyStopping(
                stopping["monitor"], mode=MODES[stopping["monitor"]], patience=stopping["patience"]
            )
        )
    if config.get("averaging") is not None:
        callbacks.append(WeightAveraging(**config["averaging"]))
    if config["terminate_on_nan"]:
        callbacks.append(TerminateOnNaN())
    if point is not None:
        callbacks.append(Interrupt(point, config["kill"]))
    saving = dict(config["checkpointer"])
    best_metric = saving["best_metric"]
    checkpointer = Checkpointer(
        workdir / "checkpoints",
        **saving,
        **({"best_mode": MODES[best_metric]} if best_metric else {}),
    )
    trainer = Trainer(
        model,
        optimizer,
        callbacks=callbacks,
        checkpointer=checkpointer,
        writer=writer,
        log_every_steps=config["log_every_steps"],
        progress=False,
        rngs=nnx.Rngs(dropout=2) if config["model"]["dropout"] == "call" else None,
        steps_per_dispatch=config.get("steps_per_dispatch", 1),
    )
    return trainer, writer, probe


def fit(config: dict[str, Any], workdir: pathlib.Path, point=None) -> dict[str, Any]:
    """One ``fit`` of `config` in `workdir`, every object new; returns what the run left.

    Raises:
        Interrupted: If the run reached `point`.
    """
    trainer, writer, probe = build(config, workdir, point)
    checkpointer = trainer.checkpointer
    assert checkpointer is not None
    lengths = {key: config[key] for key in ("num_epochs", "num_steps") if key in config}
    try:
        history = trainer.fit(
            train_data(config),
            **lengths,
            eval_data=EVAL_DATA,
            eval_every_steps=config["eval_every_steps"],
        )
        kept = checkpointer.all_steps()
        best = checkpointer.best_step() if checkpointer.best_metric else None
    finally:  # what the end of the process would do
        checkpointer.close()
        if writer is not None:
            writer.close()
    return {
        "state": arrays(trainer),
        "train": history.train,
        "eval": history.eval,
        "resumed_from": history.resumed_from,
        "stopped": history.stopped,
        "preempted": history.preempted,
        "all_steps": kept,
        "best_step": best,
        "updates": updates(workdir),
        "tensorboard": read_scalars(workdir / "tensorboard") if writer else {},
        "events": probe.events,
    }


# -- what a run left ---------------------------------------------------------------------------


def arrays(trainer: Trainer) -> dict[str, np.ndarray]:
    """The model's and the optimizer's state (and a weight average's), leaf by path, as host
    arrays (keys as data)."""
    out = {
        f"{key}[{i}]": np.asarray(leaf)
        for key, rider in trainer.callbacks.rider_states().items()
        for i, leaf in enumerate(jax.tree.leaves(nnx.state(rider)))
    }
    for name, obj in (("model", trainer.model), ("optimizer", trainer.optimizer)):
        for path, leaf in jax.tree_util.tree_flatten_with_path(nnx.state(obj))[0]:
            if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
                leaf = jax.random.key_data(leaf)
            out[name + jax.tree_util.keystr(path)] = np.asarray(leaf)
    return out


def updates(workdir: pathlib.Path) -> dict[str, dict[str, float]]:
    """The hyperparameters of every update the run's processes made, by update index.

    An update trained again after a resume replaces the earlier record of it.
    """
    found: dict[int, dict[str, float]] = {}
    with open(workdir / "updates.jsonl") as file:
        for line in file:
            record = json.loads(line)
            found[record["update"]] = record["values"]
    return {str(update): values for update, values in sorted(found.items())}


def save_outcome(result: dict, path: pathlib.Path) -> None:
    np.savez(path / "state.npz", **result["state"])
    (path / "outcome.json").write_text(
        json.dumps({k: v for k, v in result.items() if k != "state"})
    )


def load_outcome(path: pathlib.Path) -> dict:
    result = json.loads((path / "outcome.json").read_text())
    with np.load(path / "state.npz") as state:
        result["state"] = {name: state[name] for name in state.files}
    return result


# Every Trainer compiles its train step anew (a second on this machine), the same program for
# the same configuration: an XLA cache on disk lets the runs of a case (and the workers) share
# it. An oracle turns it on for its module: ``pytestmark = pytest.mark.usefixtures(...)``
# does not reach a module fixture, so each imports ``shared_compilation_cache`` as a fixture.
CACHE_OPTIONS = {
    "jax_compilation_cache_dir": None,
    "jax_persistent_cache_min_compile_time_secs": 0,
    "jax_persistent_cache_min_entry_size_bytes": 0,
}


@pytest.fixture(scope="module", autouse=True)
def shared_compilation_cache(tmp_path_factory):
    """An XLA compilation cache on disk for the module that imports this fixture."""
    options = CACHE_OPTIONS | {"jax_compilation_cache_dir": str(tmp_path_factory.mktemp("xla"))}
    before = {name: getattr(jax.config, name) for name in options}
    for name, value in options.items():
        jax.config.update(name, value)
    compilation_cache.reset_cache()
    yield
    for name, value in before.items():
        jax.config.update(name, value)
    compilation_cache.reset_cache()
