"""How long the training loop blocks per checkpoint save, with async saving on and off.

The same 128 MB run state (64 MB of weights, their SGD momentum, callback and trainer JSON) is saved
by a ``Checkpointer`` with ``async_save=True`` and one with ``async_save=False``, alternately;
the figure is the wall time of ``Checkpointer.save`` itself, the time a training loop stands
still. The background write of an async save is waited for outside the timed region.
"""

from __future__ import annotations

import statistics
import tempfile
import time

import jax.numpy as jnp
import optax
from flax import nnx

from flax_cyclic import Checkpointer


class Model(nnx.Module):
    """Two dense layers holding 16M float32 weights (64 MB)."""

    def __init__(self, rngs: nnx.Rngs):
        self.a = nnx.Linear(2048, 4096, rngs=rngs)
        self.b = nnx.Linear(4096, 2048, rngs=rngs)


def measure(saves: int = 6) -> list[str]:
    """Returns Markdown table lines: median blocking time per save, async vs sync."""
    model = Model(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.sgd(0.01, momentum=0.9), wrt=nnx.Param)
    blocked: dict[str, list[float]] = {"async": [], "sync": []}
    with tempfile.TemporaryDirectory() as root:
        checkpointers = {
            mode: Checkpointer(f"{root}/{mode}", max_to_keep=2, async_save=mode == "async")
            for mode in blocked
        }
        for step in range(1, saves + 1):
            for mode, checkpointer in checkpointers.items():
                model.a.kernel[...] = model.a.kernel[...] + 1.0  # new values to write
                jnp.zeros(()).block_until_ready()
                start = time.perf_counter()
                checkpointer.save(
                    step,
                    model=model,
                    optimizer=optimizer,
                    callbacks={"LRSchedulerCallback": {"step": step}},
                    trainer={"step": step, "epoch": 0, "position": step, "data_state": None},
                )
                blocked[mode].append(time.perf_counter() - start)
                checkpointer.wait()
        for checkpointer in checkpointers.values():
            checkpointer.close()
    sync, async_ = (statistics.median(blocked[mode]) * 1e3 for mode in ("sync", "async"))
    return [
        "| state saved | sync: blocked per save | async: blocked per save | sync / async |",
        "|---|---:|---:|---:|",
        f"| 128 MB (weights + momentum) | {sync:.0f} ms | {async_:.0f} ms | {sync / async_:.1f}x |",
    ]
