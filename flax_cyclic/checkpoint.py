"""Checkpoints of a whole training run through ``orbax.checkpoint.CheckpointManager``.

One Orbax step holds, through ``ocp.args.Composite``: the model state, the optimizer state (both
``nnx.state``, saved as arrays), every callback's ``state_dict()`` keyed by ``state_key`` and the
trainer's own position (JSON). Nothing is pickled.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from flax_cyclic import _checks
from flax_cyclic._errors import CheckpointError, NonFiniteError
from flax_cyclic._metrics import local_copy

__all__ = ["CheckpointError", "Checkpointer", "NonFiniteError", "Restored"]

logger = logging.getLogger("flax_cyclic")


@dataclasses.dataclass(frozen=True)
class Restored:
    """What [`Checkpointer.restore`][flax_cyclic.Checkpointer.restore] read back.

    The model and optimizer are updated in place.
    """

    step: int
    callbacks: Mapping[str, Any]
    trainer: Mapping[str, Any]


class Checkpointer:
    """Saves and restores a training run; hand it to [`Trainer`][flax_cyclic.Trainer].

    Args:
        directory: Where the checkpoints live (created if missing).
        every_steps: Save every this many train steps; ``None`` for no step-based saves.
        every_epoch: Save at the end of every epoch.
        max_to_keep: Keep the last this many checkpoints.
        async_save: Write in the background (Orbax's async checkpointing): the loop blocks
            only while the arrays are copied off the device.

    A checkpoint is only written when every floating-point array of the model and the
    optimizer is finite (one reduction on the device per save): a diverged run cannot replace
    the good checkpoints with NaN weights, and a resume starts from the newest good one.

    Raises:
        ValueError, TypeError: For non-positive or non-integer counts.
        NotADirectoryError, PermissionError: For a ``directory`` that is (or lies under) a
            file, or that cannot be created or written.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        every_steps: int | None = None,
        every_epoch: bool = True,
        max_to_keep: int = 3,
        async_save: bool = True,
    ) -> None:
        owner = type(self).__name__
        if every_steps is not None:
            every_steps = _checks.integer(
                owner, "every_steps", every_steps, minimum=1, hint="e.g. 1000, or None."
            )
        self.every_steps = every_steps
        self.every_epoch = bool(every_epoch)
        self.max_to_keep = _checks.integer(
            owner, "max_to_keep", max_to_keep, minimum=1, hint="e.g. 3."
        )
        self.directory = _checks.writable_directory(owner, "directory", directory)
        self.manager = ocp.CheckpointManager(
            self.directory,
            item_handlers={
                "model": ocp.StandardCheckpointHandler(),
                "optimizer": ocp.StandardCheckpointHandler(),
                "callbacks": ocp.JsonCheckpointHandler(),
                "trainer": ocp.JsonCheckpointHandler(),
            },
            options=ocp.CheckpointManagerOptions(
                max_to_keep=self.max_to_keep,
                enable_async_checkpointing=async_save,
                # A kill during an async save leaves <step>.orbax-checkpoint-tmp-*: remove it.
                cleanup_tmp_directories=True,
                create=True,
            ),
        )

    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step, or ``None``."""
        return self.manager.latest_step()

    def save(
        self,
        step: int,
        *,
        model: nnx.Module,
        optimizer: nnx.Optimizer,
        callbacks: Mapping[str, Any],
        trainer: Mapping[str, Any],
    ) -> bool:
        """Saves one checkpoint at ``step`` (asynchronously if enabled); False if it exists.

        Raises:
            NonFiniteError: If the model or optimizer state holds a NaN or an infinity; nothing
                is written then.
        """
        if step in self.manager.all_steps():
            return False
        states = {"model": nnx.state(model), "optimizer": nnx.state(optimizer)}
        bad = _non_finite_leaves(states)
        if bad:
            shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
            raise NonFiniteError(
                f"Checkpointer.save: the state to save at step {step} is not finite ({shown}), "
                f"so nothing was written to {self.directory}."
            )
        saved = self.manager.save(
            step,
            args=ocp.args.Composite(
                model=ocp.args.StandardSave(states["model"]),
                optimizer=ocp.args.StandardSave(states["optimizer"]),
                callbacks=ocp.args.JsonSave(dict(callbacks)),
                trainer=ocp.args.JsonSave(dict(trainer)),
            ),
            force=True,
        )
        logger.info("Saving the checkpoint at step %d to %s.", step, self.directory)
        return saved

    def wait(self) -> None:
        """Blocks until a background save has finished."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        """Waits for pending saves and releases the manager's resources."""
        self.manager.close()

    def restore(self, *, model: nnx.Module, optimizer: nnx.Optimizer) -> Restored | None:
        """Restores the newest checkpoint that reads back, into ``model`` and ``optimizer``.

        A damaged checkpoint (a missing or truncated file) is reported in the log and the one
        before it is tried. A checkpoint of a different model or optimizer structure is an
        error at once.

        Returns:
            The callbacks' and trainer's saved states, or ``None`` if there is no checkpoint.

        Raises:
            CheckpointError: If the checkpoints do not match this model and optimizer, or none
                of them can be read.
        """
        steps = sorted(self.manager.all_steps(), reverse=True)
        if not steps:
            return None
        model_state, optimizer_state = nnx.state(model), nnx.state(optimizer)
        targets = {"model": model_state, "optimizer": optimizer_state}
        failures = []
        for step in steps:
            try:
                mismatch = self._mismatch(step, targets)
            except Exception as error:  # unreadable metadata: a damaged checkpoint
                failures.append(self._damaged(step, error))
                continue
            if mismatch:
                raise CheckpointError(
                    f"The checkpoint at step {step} in {self.directory} was saved from a "
                    f"different model or optimizer: {mismatch}. Restore with the model and "
                    "optimizer it was made with, or use a new checkpoint directory."
                )
            try:
                restored = self.manager.restore(
                    step,
                    args=ocp.args.Composite(
                        model=ocp.args.StandardRestore(_abstract(model_state)),
                        optimizer=ocp.args.StandardRestore(_abstract(optimizer_state)),
                        callbacks=ocp.args.JsonRestore(),
                        trainer=ocp.args.JsonRestore(),
                    ),
                )
            except Exception as error:
                failures.append(self._damaged(step, error))
                continue
            nnx.update(model, restored["model"])
            nnx.update(optimizer, restored["optimizer"])
            return Restored(step, restored["callbacks"], restored["trainer"])
        raise CheckpointError(
            f"None of the checkpoints in {self.directory} (steps {steps}) could be restored: "
            + "; ".join(failures)
            + ". Nothing was started from scratch. Repair or remove the damaged step "
            "directories, or point the run at a new checkpoint directory."
        )

    def _damaged(self, step: int, error: BaseException) -> str:
        text = f"step {step}: {type(error).__name__}: {str(error).splitlines()[0][:300]}"
        logger.warning("Checkpoint %s is damaged and is skipped (%s).", step, text)
        return text

    def _mismatch(self, step: int, targets: Mapping[str, nnx.State]) -> str | None:
        """Compares the saved leaves (paths and shapes) with the targets'; None if they agree."""
        metadata = self.manager.item_metadata(step)
        problems = []
        for item, target in targets.items():
            saved = _leaf_shapes(metadata[item].tree)
            wanted = _leaf_shapes(nnx.to_pure_dict(target))
            missing = sorted(set(wanted) - set(saved))
            extra = sorted(set(saved) - set(wanted))
            reshaped = sorted(
                f"{path} {saved[path]} -> {wanted[path]}"
                for path in set(saved) & set(wanted)
                if None not in (saved[path], wanted[path]) and saved[path] != wanted[path]
            )
            for label, paths in (
                ("not in the checkpoint", missing),
                ("only in the checkpoint", extra),
            ):
                if paths:
                    problems.append(f"{item} leaves {label}: {', '.join(paths[:5])}")
            if reshaped:
                problems.append(f"{item} leaves with other shapes: {', '.join(reshaped[:5])}")
        return "; ".join(problems) or None


def _leaf_shapes(tree: Any) -> dict[str, tuple[int, ...] | None]:
    """Leaf path -> shape; ``None`` for PRNG keys (saved as raw key data of another shape)."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    shapes = {}
    for path, leaf in leaves:
        dtype = getattr(leaf, "dtype", None)
        is_key = dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)
        names = [_key_name(k) for k in path]
        if names and names[-1] == "value":  # the Variable wrapper in saved metadata
            names.pop()
        shapes["/".join(names)] = None if is_key else tuple(getattr(leaf, "shape", ()))
    return shapes


@jax.jit
def _finite_flags(arrays: list[jax.Array]) -> jax.Array:
    return jnp.stack([jnp.all(jnp.isfinite(array)) for array in arrays])


def _non_finite_leaves(states: Mapping[str, nnx.State]) -> list[str]:
    """Paths of the floating-point leaves holding a NaN or an infinity: one device reduction."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(states)
    floats = [
        (path, leaf)
        for path, leaf in leaves
        if jnp.issubdtype(getattr(leaf, "dtype", np.int32), jnp.inexact)
    ]
    if not floats:
        return []
    flags = local_copy(_finite_flags([leaf for _, leaf in floats]))
    return [
        "/".join(name for name in map(_key_name, path) if name != "value")
        for (path, _), finite in zip(floats, np.asarray(flags), strict=True)
        if not finite
    ]


def _key_name(key: Any) -> str:
    return str(getattr(key, "key", getattr(key, "name", getattr(key, "idx", key))))


def _abstract(state: nnx.State) -> Any:
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
