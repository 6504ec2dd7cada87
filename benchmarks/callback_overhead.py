"""Train-loop throughput against the limit: a functional ``jax.jit`` loop.

The reference is the loop a JAX user writes by hand: model and optimizer split once
(``nnx.split``), one ``jax.jit`` function of that state, donated, that runs the step, with the
optimizer the LR callback drives, ``inject_hyperparams(sgd)(..., momentum=0.9)``, and the
learning rate computed in the graph by ``cyclic_schedule``. Timed side by side with it in one
process, with the same step and data: the same loop without ``inject_hyperparams``
(``optax.sgd(schedule, momentum=0.9)``) and with a constant learning rate, to show what
injecting costs; the ``Trainer`` with an ``LRSchedulerCallback`` driving ``CyclicLR``; and two
hand-written NNX loops with the same callback, one calling an ``nnx.jit`` step, one the fast
pattern of Flax's performance guide (``nnx.cached_partial``). Every variant runs the same
number of steps per round, waits for the device at both ends, and reports steps/s; a ratio is
to the reference in the same round.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np
import optax
from flax import nnx

from flax_cyclic import (
    Callback,
    CallbackList,
    CyclicLR,
    LRSchedulerCallback,
    Trainer,
    cyclic_schedule,
)
from flax_cyclic._split_step import SplitStep
from flax_cyclic.steps import classification_train_step

REFERENCE = "functional jit, injected in-graph schedule"
VARIANTS = (
    "functional jit, constant LR",
    "functional jit, in-graph schedule",
    REFERENCE,
    "Trainer + LR callback",
    "nnx.jit loop + LR callback",
    "nnx.cached_partial loop + LR callback",
)
SCHEDULE = dict(base_lr=0.001, max_lr=0.01, step_size_up=50)


class MLP(nnx.Module):
    """A tiny MLP: 32 -> 64 -> 10."""

    def __init__(self, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(32, 64, rngs=rngs)
        self.out = nnx.Linear(64, 10, rngs=rngs)

    def __call__(self, x):
        return self.out(jax.nn.relu(self.hidden(x)))


class CNN(nnx.Module):
    """The CNN of Flax's MNIST example: two 3x3 convolutions, two dense layers."""

    def __init__(self, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(1, 32, (3, 3), rngs=rngs)
        self.conv2 = nnx.Conv(32, 64, (3, 3), rngs=rngs)
        self.dense1 = nnx.Linear(7 * 7 * 64, 256, rngs=rngs)
        self.dense2 = nnx.Linear(256, 10, rngs=rngs)

    def __call__(self, x):
        x = nnx.avg_pool(jax.nn.relu(self.conv1(x)), (2, 2), (2, 2))
        x = nnx.avg_pool(jax.nn.relu(self.conv2(x)), (2, 2), (2, 2))
        return self.dense2(jax.nn.relu(self.dense1(x.reshape(x.shape[0], -1))))


MODELS = {
    # name: (model class, input shape, steps per timing round, rounds).
    "tiny MLP, batch 64": (MLP, (64, 32), 2000, 15),
    "MNIST CNN, batch 128": (CNN, (128, 28, 28, 1), 20, 15),
}

Runner = Callable[[int], float]  # runs that many steps, returns steps/s


def _batches(shape: tuple[int, ...], count: int = 50) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [
        (rng.normal(size=shape).astype(np.float32), rng.integers(0, 10, shape[0]).astype(np.int32))
        for _ in range(count)
    ]


def _optimizer(model: nnx.Module, variant: str) -> nnx.Optimizer:
    if variant == "functional jit, constant LR":
        tx = optax.sgd(0.01, momentum=0.9)
    elif variant == "functional jit, in-graph schedule":
        tx = optax.sgd(cyclic_schedule(**SCHEDULE), momentum=0.9)
    elif variant == REFERENCE:
        tx = optax.inject_hyperparams(optax.sgd)(
            learning_rate=cyclic_schedule(**SCHEDULE), momentum=0.9
        )
    else:
        tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.0, momentum=0.9)
    return nnx.Optimizer(model, tx, wrt=nnx.Param)


def _timed(batches: list, step: Callable[[Any], Any]) -> Runner:
    def run(steps: int) -> float:
        start = time.perf_counter()
        for i in range(steps):
            out = step(batches[i % len(batches)])
        jax.block_until_ready(out)
        return steps / (time.perf_counter() - start)

    return run


def _functional(model_cls: type, variant: str, batches: list) -> Runner:
    model = model_cls(nnx.Rngs(0))
    graphdef, state = nnx.split((model, _optimizer(model, variant)))

    def pure(state, batch):
        model, optimizer = nnx.merge(graphdef, state)
        metrics = classification_train_step(model, optimizer, batch)
        return nnx.state((model, optimizer)), metrics

    compiled = jax.jit(pure, donate_argnums=0)

    def step(batch):
        nonlocal state
        state, metrics = compiled(state, batch)
        return metrics

    return _timed(batches, step)


def _hand_written(model_cls: type, variant: str, batches: list) -> Runner:
    model = model_cls(nnx.Rngs(0))
    optimizer = _optimizer(model, variant)
    loop = CallbackList(
        [LRSchedulerCallback(CyclicLR(**SCHEDULE))], model=model, optimizer=optimizer
    )
    loop.on_train_begin()
    if variant.startswith("nnx.jit"):
        compiled = nnx.jit(classification_train_step)

        def train_step(batch):
            return compiled(model, optimizer, batch)
    else:
        train_step = nnx.cached_partial(nnx.jit(classification_train_step), model, optimizer)

    def step(batch):
        loop.on_step_begin()
        metrics = train_step(batch)
        loop.on_step_end(metrics)
        return metrics

    return _timed(batches, step)


class _Clock(Callback):
    """Marks the time of the first and last step of a fit, after waiting for the device."""

    def __init__(self) -> None:
        self.first = self.last = 0.0
        self.start_step = self.end_step = 0

    def on_step_end(self, loop: Any, step: int, metrics: Any) -> None:
        if step == self.start_step or step == self.end_step:
            jax.block_until_ready(metrics)
            now = time.perf_counter()
            self.first, self.last = (
                (now, self.last) if step == self.start_step else (self.first, now)
            )


def _trainer(model_cls: type, variant: str, batches: list) -> Runner:
    model = model_cls(nnx.Rngs(0))
    clock = _Clock()
    trainer = Trainer(
        model,
        _optimizer(model, variant),
        callbacks=[LRSchedulerCallback(CyclicLR(**SCHEDULE)), clock],
        progress=False,
    )

    def run(steps: int) -> float:
        # One fit per round; the clock times its steps after the first, so the set-up of
        # each fit call (once per run for a user) is not counted.
        clock.start_step = trainer.step
        clock.end_step = trainer.step + steps
        trainer.fit(batches, num_steps=clock.end_step + 1)
        return steps / (clock.last - clock.first)

    return run


def _runner(model_cls: type, variant: str, batches: list) -> Runner:
    if variant.startswith("functional"):
        return _functional(model_cls, variant, batches)
    if variant.startswith("Trainer"):
        return _trainer(model_cls, variant, batches)
    return _hand_written(model_cls, variant, batches)


class Result(NamedTuple):
    """What :func:`measure` measured."""

    lines: list[str]
    """The Markdown tables: throughput, then buffer bytes with and without donation."""
    compilations: int
    """XLA compilations during the timed rounds, all models and variants."""
    models: dict[str, dict[str, float]]
    """Per model: the median steps/s of each variant and, under "<variant> / reference", the
    median of its per-round ratios to the reference."""
    host_us: float
    """Host time the callback adds per step, in microseconds."""
    buffers: dict[str, dict[bool, dict[str, int]]]
    """Per model, with (True) and without (False) donation: :func:`buffer_bytes`."""


def measure() -> Result:
    """Times every variant on every model, then the step's buffers and the callback's cost."""
    compilations = []

    def listener(event: str, duration: float, **kwargs) -> None:
        if event == "/jax/core/compile/backend_compile_duration":
            compilations.append(event)

    lines = [
        "| model | loop | steps/s | ratio to the reference |",
        "|---|---|---:|---:|",
    ]
    models: dict[str, dict[str, float]] = {}
    for name, (model_cls, shape, steps, rounds) in MODELS.items():
        batches = _batches(shape)
        runners = {variant: _runner(model_cls, variant, batches) for variant in VARIANTS}
        for run in runners.values():
            run(3)  # compile and warm up
        jax.monitoring.register_event_duration_secs_listener(listener)
        rates: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
        for round_index in range(rounds):
            # Interleaved, so that neighbours share the noise, and rotated, so that no variant
            # always runs first or last.
            shift = round_index % len(VARIANTS)
            for variant in VARIANTS[shift:] + VARIANTS[:shift]:
                rates[variant].append(runners[variant](steps))
        jax.monitoring.unregister_event_duration_listener(listener)
        result = {variant: statistics.median(rates[variant]) for variant in VARIANTS}
        for variant in VARIANTS:
            result[f"{variant} / reference"] = statistics.median(
                mine / ref for mine, ref in zip(rates[variant], rates[REFERENCE], strict=True)
            )
        models[name] = result
        for variant in VARIANTS:
            shown = f"**{variant}** (reference)" if variant == REFERENCE else variant
            lines.append(
                f"| {name} | {shown} | {_rate(result[variant])} "
                f"| {result[f'{variant} / reference']:.3f} |"
            )
    buffers = {
        name: {donate: buffer_bytes(model_cls, shape, donate) for donate in (True, False)}
        for name, (model_cls, shape, _, _) in MODELS.items()
    }
    lines += ["", *buffer_lines(buffers)]
    host_us = host_overhead_us()
    lines += [
        "",
        "Host time the LR callback adds per step (hooks, scheduler step, hyperparameter "
        f"writes; measured alone): {host_us:.1f} µs.",
    ]
    return Result(lines, len(compilations), models, host_us, buffers)


def _rate(steps_per_second: float) -> str:
    """Steps/s with three significant digits or more: ``12,814``, ``23.4``."""
    return f"{steps_per_second:,.0f}" if steps_per_second >= 100 else f"{steps_per_second:.1f}"


def buffer_bytes(model_cls: type, shape: tuple[int, ...], donate: bool) -> dict[str, int]:
    """XLA's buffer sizes for one Trainer step of ``model_cls``, with or without donation.

    ``state`` is the parameters and optimizer state the step carries (all but the injected
    hyperparameters, which are inputs written by the host). ``peak`` is what one step keeps
    alive at once: its arguments, its outputs not written into a donated argument, and its
    temporaries.
    """
    model = model_cls(nnx.Rngs(0))
    optimizer = _optimizer(model, "Trainer + LR callback")
    step = SplitStep(classification_train_step, model, optimizer, donate=donate)
    stats = step.lower(_batches(shape, 1)[0]).compile().memory_analysis()
    return {
        "state": step.carried_bytes,
        "arguments": stats.argument_size_in_bytes,
        "outputs": stats.output_size_in_bytes,
        "aliased": stats.alias_size_in_bytes,
        "temporaries": stats.temp_size_in_bytes,
        "peak": stats.argument_size_in_bytes
        + stats.output_size_in_bytes
        - stats.alias_size_in_bytes
        + stats.temp_size_in_bytes,
    }


def buffer_lines(buffers: dict[str, dict[bool, dict[str, int]]]) -> list[str]:
    """The table of buffer bytes per step, with and without donation, for every model."""
    lines = [
        "| model | donation | model + optimizer state | outputs written in place "
        "| new output buffers | peak live buffers per step |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, per_donation in buffers.items():
        for donate, b in per_donation.items():
            lines.append(
                f"| {name} | {'yes' if donate else 'no'} | {b['state']:,} | {b['aliased']:,} "
                f"| {b['outputs'] - b['aliased']:,} | {b['peak']:,} |"
            )
    return lines


def host_overhead_us(steps: int = 20_000) -> float:
    """Per-step host cost of CallbackList hooks driving an LRSchedulerCallback, no train step.

    The optimizer's update count, which the callback checks at its first steps and at powers of
    two, is advanced by setting it on the host, as an update would; that setting is timed alone
    and taken off.
    """
    model = MLP(nnx.Rngs(0))
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.0, momentum=0.9)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    loop = CallbackList(
        [LRSchedulerCallback(CyclicLR(**SCHEDULE))], model=model, optimizer=optimizer
    )
    count = optimizer.step
    counts = [np.asarray(i, count.get_value().dtype) for i in range(3 * steps + 2)]
    loop.on_train_begin()

    def timed(hooks: bool) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            if hooks:
                count.set_raw_value(counts[loop.step + 1])  # the update
                loop.on_step_begin()
                loop.on_step_end()
            else:
                count.set_raw_value(counts[loop.step])
        return (time.perf_counter() - start) / steps * 1e6

    best, update = float("inf"), float("inf")
    for _ in range(3):
        best, update = min(best, timed(True)), min(update, timed(False))
    return best - update
