"""Throughput of a train step whose learning rate comes from the LR callback.

Three variants of the same SGD-with-momentum step, timed side by side in one process:
(a) a constant learning rate (``optax.sgd``), (b) the in-graph schedule
``inject_hyperparams(sgd)(learning_rate=cyclic_schedule(...))``, the physical limit for a
scheduled learning rate, and (c) ``LRSchedulerCallback`` writing the stateful ``CyclicLR`` value
into ``inject_hyperparams(sgd)(learning_rate=0.0)`` before every update.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from flax_cyclic import CallbackList, CyclicLR, LRSchedulerCallback, cyclic_schedule

VARIANTS = ("constant", "in-graph schedule", "callback")
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
    # name: (model class, input shape, steps per timing round, rounds). Many short rounds for
    # the CNN: its steps are slow, so a long round would likely catch other load on the machine.
    "tiny MLP, batch 64": (MLP, (64, 32), 300, 30),
    "MNIST CNN, batch 128": (CNN, (128, 28, 28, 1), 1, 150),
}


@nnx.jit
def train_step(model, optimizer, x, y):
    def loss_fn(model):
        return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss


def _runner(variant: str, model_cls: type, x: jax.Array, y: jax.Array) -> Callable[[int], float]:
    model = model_cls(nnx.Rngs(0))
    callbacks = []
    if variant == "constant":
        tx = optax.sgd(0.01, momentum=0.9)
    elif variant == "in-graph schedule":
        tx = optax.inject_hyperparams(optax.sgd)(
            learning_rate=cyclic_schedule(**SCHEDULE), momentum=0.9
        )
    else:
        tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.0, momentum=0.9)
        callbacks = [LRSchedulerCallback(CyclicLR(**SCHEDULE))]
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    loop = CallbackList(callbacks, model=model, optimizer=optimizer)
    loop.on_train_begin()

    def run(steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            loop.on_step_begin()
            loss = train_step(model, optimizer, x, y)
            loop.on_step_end()
        jax.block_until_ready(loss)
        return steps / (time.perf_counter() - start)

    return run


class Result(NamedTuple):
    """What :func:`measure` measured."""

    lines: list[str]
    """The Markdown table, then a line with the callback's host time per step."""
    compilations: int
    """XLA compilations during the timed rounds, all models and variants."""
    models: dict[str, dict[str, float]]
    """Per model: the median steps/s of each variant (keyed by its name in ``VARIANTS``) and
    the paired ratios "callback / in-graph schedule", "callback / constant" and
    "in-graph schedule / constant"."""
    host_us: float
    """Host time the callback adds per step, in microseconds."""


def measure() -> Result:
    """Times every variant on every model, and the callback's host cost on its own.

    Steps/s are medians over the rounds; each ratio is the median of per-round ratios, since
    the variants of one round run back to back under the same load.
    """
    compilations = []

    def listener(event: str, duration: float, **kwargs) -> None:
        if event == "/jax/core/compile/backend_compile_duration":
            compilations.append(event)

    lines = [
        "| model | constant steps/s | in-graph schedule steps/s | callback steps/s "
        "| callback / in-graph | callback / constant |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    models: dict[str, dict[str, float]] = {}
    for name, (model_cls, shape, steps, rounds) in MODELS.items():
        x, y = jnp.ones(shape), jnp.zeros((shape[0],), jnp.int32)
        runners = {variant: _runner(variant, model_cls, x, y) for variant in VARIANTS}
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
        a, b, c = (statistics.median(rates[variant]) for variant in VARIANTS)
        # Paired ratios: each round's rate over the same round's rate of the other variant.
        c_b, c_a, b_a = (
            statistics.median(x / y for x, y in zip(rates[mine], rates[other], strict=True))
            for mine, other in (
                ("callback", "in-graph schedule"),
                ("callback", "constant"),
                ("in-graph schedule", "constant"),
            )
        )
        models[name] = {
            "constant": a,
            "in-graph schedule": b,
            "callback": c,
            "callback / in-graph schedule": c_b,
            "callback / constant": c_a,
            "in-graph schedule / constant": b_a,
        }
        lines.append(f"| {name} | {a:.1f} | {b:.1f} | {c:.1f} | {c_b:.3f} | {c_a:.3f} |")
    host_us = host_overhead_us()
    lines.append("")
    lines.append(
        f"Host time the callback adds per step (hooks, scheduler step, hyperparameter writes; "
        f"measured alone): {host_us:.1f} µs."
    )
    return Result(lines, len(compilations), models, host_us)


def host_overhead_us(steps: int = 20_000) -> float:
    """Per-step host cost of CallbackList hooks driving an LRSchedulerCallback, no train step."""
    model = MLP(nnx.Rngs(0))
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.0, momentum=0.9)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    loop = CallbackList(
        [LRSchedulerCallback(CyclicLR(**SCHEDULE))], model=model, optimizer=optimizer
    )
    loop.on_train_begin()
    loop.on_step_begin()
    loop.on_step_end()  # the one-time check after the first update
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(steps):
            loop.on_step_begin()
            loop.on_step_end()
        best = min(best, (time.perf_counter() - start) / steps * 1e6)
    return best
