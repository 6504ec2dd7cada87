"""A training process for the multi-device tests: simulated CPU devices, optionally a mesh.

    python tests/workers/mesh_worker.py DEVICES WORKDIR NUM_STEPS [--mesh] [--save-every N]

Trains a small MLP with a CyclicLR callback for NUM_STEPS steps (resuming from WORKDIR's
checkpoints if there are any, when --save-every is given), then writes ``params-<steps>.npz``
and a JSON line with the result. With ``--mesh``, DEVICES simulated CPU devices form a
data-parallel mesh; without it, training runs on one device.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys

# The shared test helpers live one folder up, in tests/.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

parser = argparse.ArgumentParser()
parser.add_argument("devices", type=int)
parser.add_argument("workdir", type=pathlib.Path)
parser.add_argument("num_steps", type=int)
parser.add_argument("--mesh", action="store_true")
parser.add_argument("--save-every", type=int, default=0)
parser.add_argument("--average", action="store_true", help="add WeightAveraging(every_steps=2)")
args = parser.parse_args()
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.devices}"

import jax  # noqa: E402
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
    WeightAveraging,
)


class CompilationsAfterFirstStep(Callback):
    """Counts XLA compilations inside the train steps after the first one (which compiles).

    Only the train step itself is watched (from ``on_step_begin`` to ``on_step_end``):
    checkpoint saves between steps compile their own small transfer programs.
    """

    def __init__(self):
        self.count = 0
        self.counting = False
        jax.monitoring.register_event_duration_secs_listener(self._listen)

    def _listen(self, event: str, duration: float, **kwargs) -> None:
        if self.counting and event == "/jax/core/compile/backend_compile_duration":
            self.count += 1

    def on_step_begin(self, loop, step):
        self.counting = self.started
        self.started = True

    def on_step_end(self, loop, step, metrics):
        self.counting = False

    started = False


def main() -> None:
    model = tiny_mlp()
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.0, momentum=0.9)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    scheduler = CyclicLR(base_lr=0.01, max_lr=0.1, step_size_up=3, mode="triangular2")
    counter = CompilationsAfterFirstStep()
    mesh = jax.make_mesh((args.devices,), ("data",)) if args.mesh else None
    checkpointer = (
        Checkpointer(args.workdir / "checkpoints", every_steps=args.save_every)
        if args.save_every
        else None
    )
    averaging = [WeightAveraging(every_steps=2)] if args.average else []
    trainer = Trainer(
        model,
        optimizer,
        callbacks=[LRSchedulerCallback(scheduler), counter, *averaging],
        checkpointer=checkpointer,
        mesh=mesh,
        progress=False,
    )
    history = trainer.fit(tiny_batches(), num_steps=args.num_steps)
    if checkpointer is not None:
        checkpointer.close()
    leaves = jax.tree.leaves(nnx.state(model, nnx.Param))
    kernel = leaves[0]
    if averaging:  # the averaged weights after the parameters, and where the means live
        mean = averaging[0].rider(trainer.callbacks).means[0][...]
        averaged = nnx.state(averaging[0].averaged_model(), nnx.Param)
        leaves += jax.tree.leaves(averaged)
    np.savez(
        args.workdir / f"params-{args.num_steps}.npz",
        *[np.asarray(jax.device_get(leaf)) for leaf in leaves],
    )
    print(
        json.dumps(
            {
                "devices": len(jax.devices()),
                "kernel_devices": len(kernel.sharding.device_set),
                "average_devices": len(mean.sharding.device_set) if averaging else None,
                "compilations_after_first_step": counter.count,
                "resumed_from": history.resumed_from,
                "last_epoch": scheduler.last_epoch,
                "lr": scheduler.get_last_lr()[0],
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
    sys.exit(0)
