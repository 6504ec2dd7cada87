"""A training run in its own process, for the kill / preemption / resume tests.

    python tests/workers/checkpoint_worker.py WORKDIR NUM_STEPS EVERY_STEPS
        [--ballast MB] [--sleep S] [--tensorboard] [--average]

Trains a small classifier with the Trainer, an LRSchedulerCallback and a Checkpointer in
WORKDIR/checkpoints, prints one line per step ("step N") and the library's log lines, and at
the end writes WORKDIR/final.npz (parameters, optimizer state, the learning-rate log).
`--ballast` adds a large non-trainable variable so that saves take long enough to be killed
mid-way; `--sleep` slows each step so that a signal can land during training; `--tensorboard`
also writes the metrics through `create_writer` to WORKDIR/tensorboard; `--average` adds a
`WeightAveraging` at the cycle ends (and the averaged weights to final.npz).
"""

from __future__ import annotations

import argparse
import logging
import os
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from flax_cyclic import (
    Callback,
    Checkpointer,
    CyclicLR,
    LRSchedulerCallback,
    Trainer,
    WeightAveraging,
)

# The shared test helpers live one folder up, in tests/.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
from helpers import MLP, RecordingWriter, tiny_batches


class Model(MLP):
    """The shared MLP (hidden 16) with a large non-trainable ballast variable."""

    def __init__(self, rngs: nnx.Rngs, ballast_mb: int):
        super().__init__(rngs, hidden=16)
        self.ballast = nnx.Variable(jnp.zeros((max(ballast_mb * 2**18, 1),)))  # Orbax: size > 0


def data(epoch: int) -> list:
    return tiny_batches(16, 5, seed=epoch)  # deterministic per epoch, different across epochs


class Progress(Callback):
    def __init__(self, sleep: float):
        self.sleep = sleep

    def on_step_end(self, loop, step, metrics):
        print(f"step {step}", flush=True)
        time.sleep(self.sleep)

    def on_train_end(self, loop):
        print(f"train end at step {loop.step}", flush=True)


def build(
    workdir: str, every_steps: int, ballast_mb: int, sleep: float, tensorboard: bool, average: bool
):
    model = Model(nnx.Rngs(0), ballast_mb)
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.0, momentum=0.9)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    scheduler = CyclicLR(0.01, 0.1, step_size_up=3, step_size_down=4, mode="triangular2")
    writer = RecordingWriter()
    if tensorboard:
        from flax_cyclic import create_writer

        writer = RecordingWriter(create_writer(os.path.join(workdir, "tensorboard")))
    checkpointer = Checkpointer(
        os.path.join(workdir, "checkpoints"), every_steps=every_steps, max_to_keep=3
    )
    callbacks = [LRSchedulerCallback(scheduler, writer=writer), Progress(sleep)]
    if average:
        callbacks.append(WeightAveraging())
    trainer = Trainer(model, optimizer, callbacks=callbacks, checkpointer=checkpointer)
    return trainer, writer


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("workdir")
    parser.add_argument("num_steps", type=int)
    parser.add_argument("every_steps", type=int)
    parser.add_argument("--ballast", type=int, default=0, help="MB of extra state to save")
    parser.add_argument("--sleep", type=float, default=0.0, help="seconds to wait per step")
    parser.add_argument("--tensorboard", action="store_true", help="also write event files")
    parser.add_argument("--average", action="store_true", help="average at the cycle ends")
    args = parser.parse_args()
    log = logging.getLogger("flax_cyclic")  # the library says what it saves (DEBUG) and resumes
    log.setLevel(logging.DEBUG)
    log.addHandler(logging.StreamHandler(sys.stdout))
    trainer, writer = build(
        args.workdir, args.every_steps, args.ballast, args.sleep, args.tensorboard, args.average
    )
    history = trainer.fit(data, num_steps=args.num_steps)
    if history.preempted:
        print("preempted", flush=True)
        return 0
    trainer.checkpointer.close()
    leaves = {
        f"model{i}": np.asarray(leaf)
        for i, leaf in enumerate(jax.tree.leaves(nnx.state(trainer.model)))
    }
    leaves.update(
        {
            f"opt{i}": np.asarray(leaf)
            for i, leaf in enumerate(jax.tree.leaves(nnx.state(trainer.optimizer)))
        }
    )
    for callback in trainer.callbacks.callbacks:
        if isinstance(callback, WeightAveraging):
            averaged = nnx.state(callback.averaged_model(), nnx.Param)
            leaves.update(
                {f"avg{i}": np.asarray(a) for i, a in enumerate(jax.tree.leaves(averaged))}
            )
            leaves["snapshots"] = np.asarray(callback.snapshots)
    steps = sorted(writer.lrs)
    np.savez(
        os.path.join(args.workdir, "final.npz"),
        lr_steps=np.array(steps),
        lrs=np.array([writer.lrs[s] for s in steps]),
        **leaves,
    )
    print("finished", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
