"""Checkpoints of a whole training run through ``orbax.checkpoint.CheckpointManager``.

One Orbax step holds, through ``ocp.args.Composite``: the model state, the optimizer state (both
``nnx.state``, saved as arrays), every callback's ``state_dict()`` keyed by ``state_key`` and the
trainer's own position (JSON). Nothing is pickled.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Mapping
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
        max_to_keep: Keep the last this many checkpoints; with ``best_metric``, the this many
            best by the metric, and the newest as well.
        async_save: Write in the background (Orbax's async checkpointing): the loop blocks
            only while the arrays are copied off the device.
        best_metric: Keep the best checkpoints by this evaluation metric, as it is logged
            (``'eval/accuracy'``, ``'eval/loss'``), through Orbax's own best-k retention. The
            [`Trainer`][flax_cyclic.Trainer] then saves after every evaluation, with the
            evaluation's metrics; checkpoints saved at other steps carry none and are kept only
            while they are the newest, so a resume always finds the newest state.
        best_mode: ``'max'`` (higher is better, e.g. accuracy) or ``'min'`` (e.g. loss).

    A checkpoint is only written when every floating-point array of the model and the
    optimizer is finite (one reduction on the device per save): a diverged run cannot replace
    the good checkpoints with NaN weights, and a resume starts from the newest good one.

    Raises:
        ValueError, TypeError: For non-positive or non-integer counts, a ``best_metric`` that
            is not ``'eval/<name>'`` or an unknown ``best_mode``.
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
        best_metric: str | None = None,
        best_mode: str = "max",
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
            options=self._options(owner, best_metric, best_mode, async_save),
        )

    def _options(
        self, owner: str, best_metric: Any, best_mode: Any, async_save: bool
    ) -> ocp.CheckpointManagerOptions:
        """Orbax's options: the newest ``max_to_keep``, or the best by a metric and the newest."""
        if best_metric is not None and (
            not isinstance(best_metric, str)
            or not best_metric.startswith("eval/")
            or best_metric == "eval/"
        ):
            raise ValueError(
                f"{owner}: `best_metric` must name an evaluation metric as it is logged, "
                f"'eval/<name>', got best_metric={best_metric!r}; e.g. 'eval/accuracy'. A "
                "checkpoint is ranked by the evaluation of its own weights."
            )
        self.best_metric: str | None = best_metric
        self.best_mode = _checks.choice(owner, "best_mode", best_mode, ("min", "max"))
        common: dict[str, Any] = dict(
            enable_async_checkpointing=async_save,
            # A kill during an async save leaves <step>.orbax-checkpoint-tmp-*: remove it.
            cleanup_tmp_directories=True,
            create=True,
        )
        if best_metric is None:
            return ocp.CheckpointManagerOptions(max_to_keep=self.max_to_keep, **common)
        policies = ocp.checkpoint_managers
        rank = _metric_of(best_metric)
        return ocp.CheckpointManagerOptions(
            best_fn=rank,  # what best_step() ranks by
            best_mode=self.best_mode,
            preservation_policy=policies.AnyPreservationPolicy(
                [
                    policies.BestN(
                        get_metric_fn=rank,
                        reverse=self.best_mode == "min",
                        n=self.max_to_keep,
                        keep_checkpoints_without_metrics=False,
                    ),
                    policies.LatestN(n=1),
                ]
            ),
            **common,
        )

    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step, or ``None``."""
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        """The steps of every complete checkpoint kept, in increasing order."""
        return sorted(self.manager.all_steps())

    def best_step(self) -> int | None:
        """The step of the best checkpoint by ``best_metric``; ``None`` before the first.

        Raises:
            ValueError: If the checkpointer has no ``best_metric``.
        """
        if self.best_metric is None:
            raise ValueError(
                "Checkpointer.best_step: this checkpointer ranks no checkpoints; build it with "
                "best_metric='eval/<name>' (and best_mode) to keep the best ones."
            )
        if not any(self.manager.metrics(step) for step in self.manager.all_steps()):
            return None
        return self.manager.best_step()

    def metrics(self, step: int) -> dict[str, float] | None:
        """The evaluation metrics saved with the checkpoint at ``step``, if it has any."""
        saved = self.manager.metrics(step) if step in self.manager.all_steps() else None
        return None if saved is None else dict(saved)

    def save(
        self,
        step: int,
        *,
        model: nnx.Module,
        optimizer: nnx.Optimizer,
        callbacks: Mapping[str, Any],
        trainer: Mapping[str, Any],
        metrics: Mapping[str, float] | None = None,
    ) -> bool:
        """Saves one checkpoint at ``step`` (asynchronously if enabled); False if it exists.

        Args:
            step: The train step the state belongs to.
            model: The model.
            optimizer: Its optimizer.
            callbacks: Every callback's JSON state, keyed by ``state_key``.
            trainer: The loop's JSON position.
            metrics: The evaluation of these weights, by logged name (``{'eval/loss': ...}``);
                with a ``best_metric`` it ranks the checkpoint. ``None``: not evaluated.

        Raises:
            NonFiniteError: If the model or optimizer state holds a NaN or an infinity; nothing
                is written then.
            KeyError: If ``metrics`` lacks the ``best_metric``.
        """
        if step in self.manager.all_steps():
            return False
        if metrics is not None and self.best_metric is not None:
            if self.best_metric not in metrics:
                raise KeyError(
                    f"Checkpointer.save: best_metric={self.best_metric!r}, but the evaluation "
                    f"reported {sorted(metrics)}; rank by one of those."
                )
            metrics = {name: float(value) for name, value in metrics.items()}
        else:
            metrics = None
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
            metrics=metrics,
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

    def restore(
        self, *, model: nnx.Module, optimizer: nnx.Optimizer, step: int | None = None
    ) -> Restored | None:
        """Restores a checkpoint into ``model`` and ``optimizer``: the newest, or ``step``.

        Without ``step``, the newest checkpoint that reads back: a damaged checkpoint (a
        missing or truncated file) is reported in the log and the one before it is tried (the
        [`Trainer`][flax_cyclic.Trainer] resumes this way). With ``step``, exactly that one,
        e.g. ``step=checkpointer.best_step()``. A checkpoint of a different model or optimizer
        structure is an error at once.

        Args:
            model: The model to restore into.
            optimizer: Its optimizer.
            step: The checkpoint to restore (one of ``all_steps()``); ``None`` for the newest.

        Returns:
            The callbacks' and trainer's saved states, or ``None`` if there is no checkpoint
            (and no ``step`` was asked for).

        Raises:
            CheckpointError: If the checkpoints do not match this model and optimizer, none of
                them can be read, or the ``step`` asked for is not there or cannot be read.
        """
        asked = None if step is None else self._kept_step(step)
        steps = [asked] if asked is not None else sorted(self.manager.all_steps(), reverse=True)
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
        if asked is not None:
            raise CheckpointError(
                f"The checkpoint of step {asked} in {self.directory} could not be restored: "
                + "; ".join(failures)
                + ". Restore another step (Checkpointer.all_steps()), or repair the files."
            )
        raise CheckpointError(
            f"None of the checkpoints in {self.directory} (steps {steps}) could be restored: "
            + "; ".join(failures)
            + ". Nothing was started from scratch. Repair or remove the damaged step "
            "directories, or point the run at a new checkpoint directory."
        )

    def _kept_step(self, step: Any) -> int:
        """``step``, checked to be the step of a checkpoint kept here."""
        step = _checks.integer(
            "Checkpointer.restore",
            "step",
            step,
            minimum=0,
            maximum=None,
            hint="One of Checkpointer.all_steps(), or None for the newest.",
        )
        if step not in self.manager.all_steps():
            raise CheckpointError(
                f"Checkpointer.restore: there is no checkpoint of step {step} in "
                f"{self.directory}; its checkpoints are of steps {self.all_steps()}."
            )
        return step

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


def _metric_of(name: str) -> Callable[[Mapping[str, float]], float]:
    """Orbax's ``best_fn``: a checkpoint's saved metrics -> the value it is ranked by."""

    def metric(metrics: Mapping[str, float]) -> float:
        return float(metrics[name])

    return metric


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
