"""The checkpointed hand-written loop of docs/own_loop.md in its own process, for the kill test.

    python tests/workers/own_loop_worker.py WORKDIR NUM_STEPS [--kill-after K]

Runs the blocks of the page's section "Checkpoints and resume in your own loop" that define its
``train`` (not the example run after it) and calls ``train(WORKDIR/checkpoints, NUM_STEPS)``,
which resumes from the checkpoints there. Prints "update I LR" for every update, as it is made
(the learning rate it applied, read back from the optimizer state); with ``--kill-after K`` the
process kills itself with SIGKILL once K updates are made, before the loop's hooks and saves see
the last one. A run that ends writes WORKDIR/final.npz: every array of the model, the optimizer,
the dropout rngs and the metrics (see ``final_arrays``).

tests/test_own_loop.py runs the same loop in its own process through ``Instrumented``.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import re
import signal
import sys
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from flax import nnx

PAGE = pathlib.Path(__file__).resolve().parents[2] / "docs" / "own_loop.md"
SECTION = "## Checkpoints and resume in your own loop"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)  # as tests/test_docs.py


class Interrupted(Exception):
    """Where an in-process run stops (a worker kills itself there instead)."""


def section_namespace() -> dict[str, Any]:
    """The namespace of the section's blocks up to the one that defines ``train``."""
    text = PAGE.read_text(encoding="utf-8")
    section = text[text.index(SECTION) :].split("\n## ", 1)[0]
    blocks = BLOCK.findall(section)
    last = next(i for i, block in enumerate(blocks) if "\ndef train(" in block)
    namespace: dict[str, Any] = {"__name__": "docs_own_loop_checkpoints"}
    for number, block in enumerate(blocks[: last + 1], start=1):
        exec(compile(block, f"own_loop.md (checkpoint block {number})", "exec"), namespace)
    return namespace


class Instrumented:
    """The page's ``train``, recording the learning rate of every update, optionally stopped.

    Puts a wrapper of the page's ``train_step`` into the page's namespace (``train`` looks it up
    there): after each update it reads the update's index and the learning rate it applied from
    the optimizer state (a device read per step: a test's cost), and once ``stop_after`` updates
    are made it raises ``Interrupted``, or kills the process with SIGKILL (``kill=True``).
    ``restore()`` puts the page's ``train_step`` back.
    """

    def __init__(
        self,
        namespace: dict[str, Any],
        *,
        kill: bool = False,
        report: Callable[[int, float], None] | None = None,
    ) -> None:
        self.namespace = namespace
        self.kill = kill
        self.report = report
        self.lrs: dict[int, float] = {}  # update index -> learning rate applied
        self.stop_after: int | None = None
        self._page_step = namespace["train_step"]
        namespace["train_step"] = self._train_step

    def restore(self) -> None:
        self.namespace["train_step"] = self._page_step

    def run(self, workdir: Any, num_steps: int, stop_after: int | None = None) -> dict:
        """``train(workdir, num_steps)``; its final state as ``final_arrays``."""
        self.stop_after = stop_after
        return final_arrays(*self.namespace["train"](str(workdir), num_steps))

    def _train_step(self, model, optimizer, metrics, rngs, batch):
        loss = self._page_step(model, optimizer, metrics, rngs, batch)
        update = int(optimizer.step[...]) - 1
        lr = float(optimizer.opt_state.hyperparams["learning_rate"][...])
        first = self.lrs.setdefault(update, lr)
        if first != lr:  # an update made again after a resume
            raise AssertionError(f"update {update} made again with lr {lr!r}, first {first!r}")
        if self.report is not None:
            self.report(update, lr)
        if update + 1 == self.stop_after:
            if self.kill:
                os.kill(os.getpid(), signal.SIGKILL)
            raise Interrupted(f"stopped after update {update}")
        return loss


def final_arrays(*objects: Any) -> dict[str, np.ndarray]:
    """Every array of the model, optimizer, rngs and metrics ``train`` returns, by path.

    PRNG keys as their raw key data, so that they compare with ``np.testing``.
    """
    names = ("model", "optimizer", "rngs", "metrics")
    arrays = {}
    for name, obj in zip(names, objects, strict=True):
        for path, leaf in jax.tree_util.tree_flatten_with_path(nnx.state(obj))[0]:
            if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
                leaf = jax.random.key_data(leaf)
            keys = [str(getattr(key, "key", getattr(key, "name", key))) for key in path]
            if keys[-1] == "value":  # the Variable's own field
                keys.pop()
            arrays["/".join([name, *keys])] = np.asarray(leaf)
    return arrays


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("workdir", type=pathlib.Path)
    parser.add_argument("num_steps", type=int)
    parser.add_argument("--kill-after", type=int, default=None, help="updates before SIGKILL")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]  # SIGKILL loses none
    loop = Instrumented(
        section_namespace(), kill=True, report=lambda update, lr: print(f"update {update} {lr!r}")
    )
    arrays = loop.run(args.workdir / "checkpoints", args.num_steps, stop_after=args.kill_after)
    np.savez(args.workdir / "final.npz", **arrays)
    print("finished")
    return 0


if __name__ == "__main__":
    sys.exit(main())
