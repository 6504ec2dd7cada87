"""One process of a multi-process (``jax.distributed``) training run on CPU.

    python tests/workers/distributed_worker.py PROCESS_ID NUM_PROCESSES PORT WORKDIR NUM_STEPS
        SAVE_EVERY [SLEEP]

Every process runs the same loop: 2 CPU devices each, one data-parallel mesh over all of
them, gloo collectives, each process feeding its own part of every global batch. Checkpoints
are saved and restored collectively in WORKDIR/checkpoints (a run with checkpoints resumes);
TensorBoard events go to WORKDIR/tensorboard (process 0 writes them). Prints one JSON line.
With SLEEP, every step waits that many seconds and each process writes the steps it has
completed to WORKDIR/process-<ID>.step, so that a test can send a signal part-way.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import sys
import time

import jax

# The shared test helpers live one folder up, in tests/.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

process_id, num_processes, port = (int(a) for a in sys.argv[1:4])
workdir = pathlib.Path(sys.argv[4])
num_steps, save_every = int(sys.argv[5]), int(sys.argv[6])
sleep = float(sys.argv[7]) if len(sys.argv) > 7 else 0.0
jax.config.update("jax_num_cpu_devices", 2)
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(
    coordinator_address=f"127.0.0.1:{port}",
    num_processes=num_processes,
    process_id=process_id,
    heartbeat_timeout_seconds=30,
)

import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402
from helpers import tiny_batches, tiny_mlp  # noqa: E402

from flax_cyclic import (  # noqa: E402
    Callback,
    Checkpointer,
    CyclicLR,
    LRSchedulerCallback,
    Trainer,
    create_writer,
)

GLOBAL_BATCH = 32


def local_batches() -> list:
    """This process's rows of every global batch (the same global data on every process)."""
    rows = slice(
        process_id * GLOBAL_BATCH // num_processes,
        (process_id + 1) * GLOBAL_BATCH // num_processes,
    )
    return [(x[rows], y[rows]) for x, y in tiny_batches(GLOBAL_BATCH)]


class Pace(Callback):
    """Slows every step and records the steps completed, for a signal to land part-way."""

    def on_step_end(self, loop, step, metrics):
        time.sleep(sleep)
        (workdir / f"process-{process_id}.step").write_text(str(step + 1))

    def on_train_end(self, loop):
        self.ended_at = loop.step


def main() -> None:
    model = tiny_mlp()
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.0, momentum=0.9)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    scheduler = CyclicLR(base_lr=0.01, max_lr=0.1, step_size_up=3, mode="triangular2")
    writer = create_writer(str(workdir / "tensorboard"))
    checkpointer = Checkpointer(workdir / "checkpoints", every_steps=save_every)
    trainer = Trainer(
        model,
        optimizer,
        callbacks=[LRSchedulerCallback(scheduler, writer=writer), pace := Pace()],
        checkpointer=checkpointer,
        writer=writer,
        log_every_steps=1,
        mesh=jax.make_mesh((jax.device_count(),), ("data",)),
        progress=False,
    )
    history = trainer.fit(local_batches(), num_steps=num_steps)
    writer.flush()
    saved_steps = checkpointer.manager.all_steps()
    checkpointer.close()
    # Replicated parameters: every process holds them whole on its devices.
    leaves = [np.asarray(leaf.addressable_data(0)) for leaf in jax.tree.leaves(nnx.state(model))]
    # Every array of the optimizer's state can be read shard by shard, as Orbax reads it to save
    # (a hyperparameter no step returns keeps the array the Trainer placed on the mesh).
    for leaf in jax.tree.leaves(nnx.state(optimizer)):
        if isinstance(leaf, jax.Array):
            assert [np.asarray(shard.data) for shard in leaf.addressable_shards]
    if process_id == 0 and not history.preempted:
        np.savez(workdir / f"params-{num_steps}.npz", *leaves)
    state = json.dumps(scheduler.state_dict(), sort_keys=True)
    print(
        json.dumps(
            {
                "process": jax.process_index(),
                "pid": os.getpid(),
                "processes": jax.process_count(),
                "devices": jax.device_count(),
                "local_devices": jax.local_device_count(),
                "resumed_from": history.resumed_from,
                "preempted": history.preempted,
                "train_end_at": getattr(pace, "ended_at", None),
                "saved_steps": sorted(saved_steps),
                "scheduler_state": hashlib.sha256(state.encode()).hexdigest(),
                "last_epoch": scheduler.last_epoch,
            }
        ),
        flush=True,
    )
    jax.distributed.shutdown()


if __name__ == "__main__":
    main()
