"""The checkpointed Linen loop of docs/linen.md in its own process, for the kill test.

    python tests/workers/linen_worker.py WORKDIR NUM_STEPS [--kill-after K --once-saved S]

Runs the page's first block (model, step, state) and the block that defines ``train``, then calls
``train(WORKDIR, NUM_STEPS)``, which resumes from WORKDIR/checkpoints and logs to
WORKDIR/tensorboard. Prints "update I LR MOMENTUM COMPILED" for every update, as it is made: the
learning rate and momentum it applied (read back from the optimizer state) and how many times
this process has compiled ``train_step`` so far. With ``--kill-after K --once-saved S`` the
process kills itself with SIGKILL once K updates are made, before the loop counts or saves the
last one, and once the checkpoint of step S is on disk (it waits for its background save), so
that the run resumes from S. A run that ends writes WORKDIR/final.npz: every array of the final
``TrainState`` (see ``final_arrays``).

tests/test_linen.py runs the same loops in its own process through ``Instrumented``.
"""

from __future__ import annotations

import argparse
import collections
import os
import pathlib
import re
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

PAGE = pathlib.Path(__file__).resolve().parents[2] / "docs" / "linen.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)  # as tests/test_docs.py
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


class Interrupted(Exception):
    """Where an in-process run stops (a worker kills itself there instead)."""


def page_namespace(*functions: str) -> dict[str, Any]:
    """A new namespace of the page's first block and of the blocks that define ``functions``.

    Each call defines the page's functions anew, so a jitted step starts with no compilation.
    """
    blocks = BLOCK.findall(PAGE.read_text(encoding="utf-8"))
    chosen = [blocks[0]]
    for name in functions:
        defines = re.compile(rf"^def {name}\(", re.MULTILINE)
        chosen.append(next(block for block in blocks if defines.search(block)))
    namespace: dict[str, Any] = {"__name__": "docs_linen"}
    for number, block in enumerate(chosen, start=1):
        exec(compile(block, f"linen.md (block {number} run)", "exec"), namespace)
    return namespace


#: The XLA compilations in this process since this module was imported, by the name JAX gives
#: the compiled function: ``COMPILED["jit(train_step)"]``.
COMPILED: collections.Counter[str] = collections.Counter()


def _count_compilation(event: str, duration: float, **kwargs: Any) -> None:
    if event == COMPILE_EVENT:
        COMPILED[str(kwargs.get("fun_name"))] += 1


jax.monitoring.register_event_duration_secs_listener(_count_compilation)


def linen_update(outputs: tuple) -> tuple[int, tuple[float, float]]:
    """The index of the update ``train_step`` made, and the learning rate and momentum it used."""
    state, _ = outputs
    hyperparams = state.opt_state.hyperparams
    values = (float(hyperparams["learning_rate"]), float(hyperparams["momentum"]))
    return int(state.step) - 1, values


def optax_update(outputs: tuple) -> tuple[int, tuple[float, float]]:
    """The same for ``optax_step``: the injected Adam's count, learning rate and ``b1``."""
    _, opt_state, _ = outputs
    adam = opt_state[1]
    values = (float(adam.hyperparams["learning_rate"]), float(adam.hyperparams["b1"]))
    return int(adam.count) - 1, values


class Instrumented:
    """A page's step, recording what every update used, optionally stopped after an update.

    Replaces the jitted step ``step`` in the page's namespace (the loop looks it up there) by a
    wrapper that reads, after each update, its index and the values it used (``read``: a device
    read per step, a test's cost), checks that an update made again after a resume used the same
    values, and once ``stop_after`` updates are made calls ``stop`` (by default: raises
    ``Interrupted``). ``restore()`` puts the page's step back.
    """

    def __init__(
        self,
        namespace: dict[str, Any],
        step: str,
        read: Callable[[tuple], tuple[int, tuple[float, float]]],
        *,
        report: Callable[[int, tuple[float, float]], None] | None = None,
        stop: Callable[[], None] | None = None,
    ) -> None:
        self.namespace, self.name, self.read = namespace, step, read
        self.report, self.stop = report, stop or _interrupt
        self.used: dict[int, tuple[float, float]] = {}  # update -> (learning rate, momentum)
        self.stop_after: int | None = None
        self._page_step = namespace[step]
        namespace[step] = self._step

    def restore(self) -> None:
        self.namespace[self.name] = self._page_step

    def _step(self, *args: Any) -> Any:
        outputs = self._page_step(*args)
        update, values = self.read(outputs)
        first = self.used.setdefault(update, values)
        if first != values:  # an update made again after a resume
            raise AssertionError(f"update {update} made again with {values!r}, first {first!r}")
        if self.report is not None:
            self.report(update, values)
        if update + 1 == self.stop_after:
            self.stop()
        return outputs


def _interrupt() -> None:
    raise Interrupted("stopped after the update")


def kill_once_saved(checkpoint: pathlib.Path, timeout: float = 120.0) -> None:
    """Kills this process with SIGKILL once ``checkpoint`` (a step's directory) is on disk."""
    deadline = time.monotonic() + timeout
    while not checkpoint.exists():  # Orbax renames the step's directory when the save ends
        if time.monotonic() > deadline:
            raise TimeoutError(f"{checkpoint} was not saved within {timeout} s")
        time.sleep(0.01)
    os.kill(os.getpid(), signal.SIGKILL)


def final_arrays(state: Any) -> dict[str, np.ndarray]:
    """Every array of a state pytree (a ``TrainState``, ``(params, opt_state)``), by path."""
    leaves = jax.tree_util.tree_flatten_with_path(state)[0]
    return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("workdir", type=pathlib.Path)
    parser.add_argument("num_steps", type=int)
    parser.add_argument("--kill-after", type=int, default=None, help="updates before SIGKILL")
    parser.add_argument("--once-saved", type=int, default=0, help="the step saved before it")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]  # SIGKILL loses none
    namespace = page_namespace("train")

    def report(update: int, values: tuple[float, float]) -> None:
        print(f"update {update} {values[0]!r} {values[1]!r} {COMPILED['jit(train_step)']}")

    saved = args.workdir / "checkpoints" / str(args.once_saved)
    loop = Instrumented(
        namespace, "train_step", linen_update, report=report, stop=lambda: kill_once_saved(saved)
    )
    loop.stop_after = args.kill_after
    state = namespace["train"](str(args.workdir), args.num_steps)
    np.savez(args.workdir / "final.npz", **final_arrays(state))
    print("finished")
    return 0


if __name__ == "__main__":
    sys.exit(main())
