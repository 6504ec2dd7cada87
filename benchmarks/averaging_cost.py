"""What weight averaging costs the Trainer: SWA at the cycle ends and an EMA of every step.

The same Trainer (LR callback with ``CyclicLR``, tiny MLP or a wider one, batch 64) runs side by
side in rounds: without averaging, with ``WeightAveraging()`` (a snapshot at each cycle's end:
every 500 steps here, the example's cycles are 936 steps) and with
``WeightAveraging(every_steps=1, decay=0.999)`` (an EMA updated inside every step), at one and at
32 steps per dispatch. Each round times every variant for the same number of steps (hooks
included, compilation excluded); the table shows the median over the rounds of each variant's
speed relative to the Trainer without averaging of the same k.

    python benchmarks/averaging_cost.py [ROUNDS] [STEPS]
"""

from __future__ import annotations

import itertools
import statistics
import sys
from collections.abc import Callable

import jax
import optax
from callback_overhead import _batches
from dispatch import _Clock
from flax import nnx

from flax_cyclic import Callback, CyclicLR, LRSchedulerCallback, Trainer, WeightAveraging

SCHEDULE = dict(base_lr=0.001, max_lr=0.01, step_size_up=250)  # a cycle end every 500 steps
VARIANTS: dict[str, Callable[[], list[Callback]]] = {
    "no averaging": lambda: [],
    "SWA at cycle ends": lambda: [WeightAveraging()],
    "EMA every step": lambda: [WeightAveraging(every_steps=1, decay=0.999)],
}
MODELS = {"tiny MLP 32-64-10": (32, 64), "MLP 784-512-10": (784, 512)}


class Wide(nnx.Module):
    """A one-hidden-layer MLP of the given widths (10 classes)."""

    def __init__(self, rngs: nnx.Rngs, inputs: int, hidden: int) -> None:
        self.hidden = nnx.Linear(inputs, hidden, rngs=rngs)
        self.out = nnx.Linear(hidden, 10, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.out(nnx.relu(self.hidden(x)))


def _runner(widths: tuple[int, int], k: int, extra: list[Callback]) -> Callable[[int], float]:
    model = Wide(nnx.Rngs(0), *widths)
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.0, momentum=0.9)
    clock = _Clock()
    trainer = Trainer(
        model,
        nnx.Optimizer(model, tx, wrt=nnx.Param),
        callbacks=[LRSchedulerCallback(CyclicLR(**SCHEDULE)), *extra, clock],
        progress=False,
        steps_per_dispatch=k,
    )
    batches = _batches((64, widths[0]))

    def run(steps: int) -> float:
        first = trainer.step + k - 1
        clock.at = (first, first + steps)
        epochs = lambda epoch: itertools.islice(itertools.cycle(batches), 4096)  # noqa: E731
        trainer.fit(epochs, num_steps=first + steps + 1)
        return steps / (clock.marks[first + steps] - clock.marks[first])

    return run


def table(rounds: int = 5, steps: int = 1024) -> str:
    """The markdown table: speed relative to no averaging, per model and k (medians)."""
    lines = [
        "| model | k | " + " | ".join(VARIANTS) + " |",
        "|---|---:|" + "---:|" * len(VARIANTS),
    ]
    for name, widths in MODELS.items():
        for k in (1, 32):
            runners = {v: _runner(widths, k, make()) for v, make in VARIANTS.items()}
            for run in runners.values():
                run(max(steps // 4, 512))  # compiled, warm (past a cycle end)
            ratios: dict[str, list[float]] = {v: [] for v in VARIANTS}
            for _ in range(rounds):
                speeds = {v: run(steps) for v, run in runners.items()}
                for v, speed in speeds.items():
                    ratios[v].append(speed / speeds["no averaging"])
            cells = [f"{statistics.median(ratios[v]):.2f}x" for v in VARIANTS]
            lines.append(f"| {name} | {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(*(int(a) for a in sys.argv[1:3])))
