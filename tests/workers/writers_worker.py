"""A run logging through two writers of one log directory, in its own process.

    python tests/workers/writers_worker.py LOGDIR START STEPS OFFSET [LOGDIR START STEPS OFFSET ...]

Makes ``two_writer_run(LOGDIR, start=START, steps=STEPS, offset=OFFSET)`` for each group, one
after the other. tests/test_writers.py also calls ``two_writer_run`` in its own process, for the
earlier runs a new process's run then finds in the log directory.
"""

from __future__ import annotations

import sys

from flax_cyclic import Callback, CallbackList, MetricsLogger, create_writer


class _Rates(Callback):
    """Writes `learning_rate` at each step through its own writer, as an LR callback does."""

    def __init__(self, writer, offset: int):
        self.writer = writer
        self.offset = offset

    def on_step_end(self, loop, step, metrics):
        self.writer.write_scalars(step + 1, {"learning_rate": rate(self.offset, step)})


def loss(offset: int, update: int) -> float:
    return float(offset + update)


def rate(offset: int, update: int) -> float:
    return (offset + update) / 8  # exact in float32


def two_writer_run(logdir, *, start: int, steps: int, offset: int) -> None:
    """A run of `steps` updates from step `start` with two writers of `logdir`, as a Trainer and
    an LR callback given one each: before the run starts, one writes the baseline evaluation at
    `start` (`eval/loss` = -offset, as `Trainer.evaluate()` before `fit`); in the run, a
    MetricsLogger writes `train/loss` (update i: `loss(offset, i)`) and the final evaluation
    (`eval/loss` = offset + 0.5) through it, and `_Rates` writes `learning_rate` (`rate(offset,
    i)`) through the other."""
    metrics, rates = create_writer(logdir), create_writer(logdir)
    metrics.write_scalars(start, {"eval/loss": -float(offset)})
    loop = CallbackList(
        [MetricsLogger(metrics, log_every_steps=1), _Rates(rates, offset)], step=start
    )
    loop.on_train_begin()
    for update in range(start, start + steps):
        loop.on_step_begin()
        loop.on_step_end({"loss": loss(offset, update)})
    loop.on_eval_end({"loss": offset + 0.5})
    loop.on_train_end()
    metrics.close()
    rates.close()


if __name__ == "__main__":
    args = sys.argv[1:]
    for i in range(0, len(args), 4):
        logdir, start, steps, offset = args[i], *map(int, args[i + 1 : i + 4])
        two_writer_run(logdir, start=start, steps=steps, offset=offset)
