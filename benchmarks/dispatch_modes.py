"""How a dispatch runs its steps: the Trainer's default at k = 1, 4, 8 and 32, on three models.

The ``Trainer`` with an ``LRSchedulerCallback`` driving ``CyclicLR`` trains, at its default
settings (``unroll_dispatch='auto'``), three models: the tiny MLP of the tables above (batch 64,
SGD with momentum), the CNN of examples/mnist (two convolutions, two dense layers; batch 128,
SGD with momentum, as its configuration) and the CNN of the Flax NNX MNIST tutorial (two
convolutions with BatchNorm, Dropout, average pooling, two dense layers; batch 32, AdamW; the
model called as ``model(x, rngs=rngs)``). Steps/s are steady state: a whole ``fit`` of the same
number of steps (a multiple of every ``k``) on programs compiled before, waiting for the last
update, every ``k`` side by side in each round (medians over the rounds; a ratio is the median
of the per-round ratios). "Compile s" is
the time JAX spent tracing, lowering and compiling during a fit's first dispatch (all
programs); for ``k > 1`` the Trainer says it in its log line. On the tiny MLP a hand-written
per-step loop (one ``jax.jit`` call of split, donated state per step) is the baseline.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import logging
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any, NamedTuple

import jax
import optax
from callback_overhead import MLP, _batches
from dispatch import PER_STEP, _per_step
from flax import nnx

from flax_cyclic import CyclicLR, LRSchedulerCallback, Trainer

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(_HERE, "..", "examples", "mnist"))
from train import CNN as ExampleCNN  # noqa: E402  (the example's own model)

SCHEDULE = dict(base_lr=0.001, max_lr=0.01, step_size_up=50)
KS = (1, 4, 8, 32)
COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)


class TutorialCNN(nnx.Module):
    """The CNN of the Flax NNX MNIST tutorial, as it writes it."""

    def __init__(self, *, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(1, 32, kernel_size=(3, 3), rngs=rngs)
        self.batch_norm1 = nnx.BatchNorm(32, rngs=rngs)
        self.dropout1 = nnx.Dropout(rate=0.025)
        self.conv2 = nnx.Conv(32, 64, kernel_size=(3, 3), rngs=rngs)
        self.batch_norm2 = nnx.BatchNorm(64, rngs=rngs)
        self.avg_pool = partial(nnx.avg_pool, window_shape=(2, 2), strides=(2, 2))
        self.linear1 = nnx.Linear(3136, 256, rngs=rngs)
        self.dropout2 = nnx.Dropout(rate=0.025)
        self.linear2 = nnx.Linear(256, 10, rngs=rngs)

    def __call__(self, x, rngs: nnx.Rngs | None = None):
        x = self.avg_pool(nnx.relu(self.batch_norm1(self.dropout1(self.conv1(x), rngs=rngs))))
        x = self.avg_pool(nnx.relu(self.batch_norm2(self.conv2(x))))
        x = x.reshape(x.shape[0], -1)  # flatten 64x7x7 = 3136
        x = nnx.relu(self.dropout2(self.linear1(x), rngs=rngs))
        return self.linear2(x)


class Model(NamedTuple):
    """A model of the table and how it trains."""

    make: Callable[[], nnx.Module]
    tx: Callable[[], optax.GradientTransformation]
    shape: tuple[int, ...]  # one batch of inputs
    rngs: bool  # called as model(x, rngs=rngs)
    steps: int  # timed steps per round (a multiple of every k)
    rounds: int


def _sgd() -> optax.GradientTransformation:
    return optax.inject_hyperparams(optax.sgd)(learning_rate=0.0, momentum=0.9)


def _adamw() -> optax.GradientTransformation:
    return optax.inject_hyperparams(optax.adamw)(learning_rate=0.005, b1=0.9)


MLP_NAME = "tiny MLP, batch 64"
MODELS = {
    MLP_NAME: Model(lambda: MLP(nnx.Rngs(0)), _sgd, (64, 32), False, 4096, 7),
    "example CNN (examples/mnist), batch 128": Model(
        lambda: ExampleCNN(rngs=nnx.Rngs(0)), _sgd, (128, 28, 28, 1), False, 32, 7
    ),
    "Flax NNX tutorial CNN, batch 32": Model(
        lambda: TutorialCNN(rngs=nnx.Rngs(0)), _adamw, (32, 28, 28, 1), True, 64, 9
    ),
}
# The evidence for the rule: at k = 8, each way of running a dispatch, forced.
FORCED = {"scan, rolled": 1, "scan, unrolled": True, "one call per step": "per_step"}
FORCED_ROUNDS, FORCED_STEPS = 5, 16


class _Compiles:
    """Seconds JAX spends tracing, lowering and compiling while it is ``on``."""

    def __init__(self) -> None:
        self.on, self.seconds = False, 0.0
        jax.monitoring.register_event_duration_secs_listener(self._heard)

    def _heard(self, event: str, duration: float, **kwargs: Any) -> None:
        if self.on and event in COMPILE_EVENTS:
            self.seconds += duration


COMPILES = _Compiles()


class Runner(NamedTuple):
    """A Trainer ready to time, and what its first dispatch spent compiling."""

    run: Callable[[int], float]  # runs that many steps, returns steps/s
    compile_seconds: float


def _trainer(model: Model, batches: list, k: int, unroll: Any = "auto") -> Runner:
    net = model.make()
    trainer = Trainer(
        net,
        nnx.Optimizer(net, model.tx(), wrt=nnx.Param),
        callbacks=[LRSchedulerCallback(CyclicLR(**SCHEDULE))],
        progress=False,
        rngs=nnx.Rngs(1) if model.rngs else None,
        steps_per_dispatch=k,
        unroll_dispatch=unroll,
    )

    def epoch_of_batches(epoch: int) -> Iterator[Any]:
        return itertools.islice(itertools.cycle(batches), 4096)  # no epoch end while timed

    def run(steps: int) -> float:
        # A whole fit of `steps` steps (a multiple of k) on the compiled program: its set-up,
        # every dispatch and hook, and the wait for the last update.
        start = time.perf_counter()
        trainer.fit(epoch_of_batches, num_steps=trainer.step + steps)
        jax.block_until_ready(nnx.state(trainer.model))
        return steps / (time.perf_counter() - start)

    COMPILES.on, COMPILES.seconds = True, 0.0
    trainer.fit(epoch_of_batches, num_steps=k)  # the first dispatch: compile
    COMPILES.on = False
    run(k)  # warm up
    return Runner(run, COMPILES.seconds)


def _rounds(runners: dict[str, Runner], steps: int, rounds: int) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, runner in runners.items():  # interleaved: drift hits every variant alike
            results[name].append(runner.run(steps))
    return results


def _ratio(a: list[float], b: list[float]) -> float:
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


class Result(NamedTuple):
    """The tables, and the figures the text quotes."""

    lines: list[str]  # the table of the defaults
    forced: list[str]  # the table of the ways forced at k = 8
    ratios: dict[tuple[str, int], float]  # (model, k): to k = 1
    to_loop: float  # the tiny MLP at k = 32, to the per-step loop
    compilations: int  # XLA compilations during the timed rounds, after the first dispatch


def measure(models: dict[str, Model] = MODELS) -> Result:
    """Runs the rounds; returns the tables and the ratios the text quotes."""
    lines = [
        "| model | loop | k | steps/s | / k=1 | compile s |",
        "|---|---|---:|---:|---:|---:|",
    ]
    ratios: dict[tuple[str, int], float] = {}
    to_loop = 0.0
    compiled: list[str] = []
    listener = partial(_note_compilation, compiled)
    log = logging.getLogger("flax_cyclic")
    level = log.level
    log.setLevel(logging.ERROR)  # the Trainer's line at every fit
    for name, model in models.items():
        batches = _batches(model.shape, count=16)
        runners = {f"k={k}": _trainer(model, batches, k) for k in KS}
        if name == MLP_NAME:
            loop = _per_step(MLP, batches)
            loop(64)
            runners[PER_STEP] = Runner(loop, 0.0)
        jax.monitoring.register_event_duration_secs_listener(listener)
        results = _rounds(runners, model.steps, model.rounds)
        jax.monitoring.unregister_event_duration_listener(listener)
        if name == MLP_NAME:
            median = statistics.median(results[PER_STEP])
            lines.append(f"| {name} | {PER_STEP} | 1 | {median:,.1f} | | |")
            to_loop = _ratio(results["k=32"], results[PER_STEP])
        for k in KS:
            ratios[name, k] = _ratio(results[f"k={k}"], results["k=1"])
            lines.append(
                f"| {name} | Trainer, default | {k} | {statistics.median(results[f'k={k}']):,.1f}"
                f" | {ratios[name, k]:.2f}x | {runners[f'k={k}'].compile_seconds:.1f} |"
            )
    forced = measure_forced(models)
    log.setLevel(level)
    return Result(lines, forced, ratios, to_loop, len(compiled))


def _note_compilation(compiled: list[str], event: str, duration: float, **kwargs: Any) -> None:
    if event == "/jax/core/compile/backend_compile_duration":
        compiled.append(event)


def measure_forced(models: dict[str, Model] = MODELS) -> list[str]:
    """The CNNs at k = 8 with each way of running a dispatch forced, next to k = 1."""
    lines = [
        "| model | k | unroll_dispatch | steps/s | / k=1 | compile s |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for name, model in models.items():
        if name == MLP_NAME:
            continue
        batches = _batches(model.shape, count=16)
        runners = {"k=1": _trainer(model, batches, 1)}
        for label, unroll in FORCED.items():
            runners[label] = _trainer(model, batches, 8, unroll)
        results = _rounds(runners, FORCED_STEPS, FORCED_ROUNDS)
        for label, runner in runners.items():
            k, unroll = (1, "") if label == "k=1" else (8, f"`{FORCED[label]!r}` ({label})")
            lines.append(
                f"| {name} | {k} | {unroll} | {statistics.median(results[label]):,.1f} | "
                f"{_ratio(results[label], results['k=1']):.2f}x | {runner.compile_seconds:.1f} |"
            )
    return lines


def text(result: Result) -> str:
    """The findings in words, against the goals."""
    cnns = [name for name in MODELS if name != MLP_NAME]
    at8 = " and ".join(f"{result.ratios[name, 8]:.2f}x on the {name}" for name in cnns)
    return (
        f"With the default settings, k=8 runs at {at8} of k=1 (goal: at least 1.0x), and the "
        f"tiny MLP at k=32 at {result.to_loop:.2f}x the per-step loop (goal: at least 3x). "
        "The rule of `unroll_dispatch='auto'`: a step that holds convolutions and runs on a "
        "CPU runs as one compiled call per step, every other step as one rolled scan. On a "
        "CPU a convolutional step gains nothing from a scan: rolled, XLA:CPU runs the "
        "convolutions' gradients inside the loop as plain loops instead of its convolution "
        "kernels; unrolled, it ran faster than one step per call on one CNN and slower on the "
        "other, and compiled several times longer (the second table). One call per step runs "
        "the program of k=1 itself, so the CNNs' ratios are 1 up to the host's work per "
        "dispatch and the noise of this shared machine. A scan compiles one program for every "
        "dispatch length (a shorter dispatch at an epoch's end masks its padded steps): "
        f"{result.compilations} XLA compilations happened during the timed rounds."
    )


TITLE = "## How a dispatch runs its steps"
COMMAND = "python benchmarks/dispatch_modes.py --output docs/benchmarks.md"


def section(result: Result, machine: str) -> str:
    """The page's section: what was measured, the command, the date, the tables, the findings."""
    return (
        f"{TITLE}\n\n"
        + " ".join(__doc__.split("\n", 2)[2].split())
        + f"\n\nMeasured {datetime.date.today().isoformat()} on {machine} with `{COMMAND}` "
        "(also part of `make bench`).\n\n"
        + "\n".join(result.lines)
        + "\n\nAt k = 8, each way of running a dispatch forced "
        "(`Trainer(..., unroll_dispatch=...)`), next to k = 1:\n\n"
        + "\n".join(result.forced)
        + f"\n\n{text(result)}\n"
    )


def splice(page: str, new: str) -> str:
    """``page`` with its section titled ``TITLE`` replaced by ``new`` (or ``new`` appended)."""
    start = page.find(f"\n{TITLE}\n")
    if start < 0:
        return page.rstrip("\n") + "\n\n" + new
    end = page.find("\n## ", start + len(TITLE) + 2)
    return page[: start + 1] + new + (page[end:] if end >= 0 else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", help="replace this section of this Markdown page")
    args = parser.parse_args(argv)
    measured = measure()
    machine = (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"jax {jax.__version__} ({jax.default_backend()})"
    )
    new = section(measured, machine)
    print(new)
    if args.output:
        with open(args.output, encoding="utf-8") as f:
            page = f.read()
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(splice(page, new))
    return 0


if __name__ == "__main__":
    sys.exit(main())
