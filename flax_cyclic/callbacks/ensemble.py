"""Snapshot ensembles: the model at each cycle's end, kept on disk, predicted with together."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from flax_cyclic import _checks, _logging, _modes
from flax_cyclic._averaged import SNAPSHOT, SnapshotBuffer, averaged_paths, state_values
from flax_cyclic.callbacks._snapshot_steps import SnapshotSteps
from flax_cyclic.callbacks.base import Callback, Loop

__all__ = ["SnapshotEnsemble"]

logger = _logging.logger


class SnapshotEnsemble(Callback):
    """Keeps the model of each cycle's end on disk; predicts with their mean probability.

    Snapshot ensembles (Huang et al., 2017) take one model per cycle of a restarted schedule
    and average their predicted probabilities, for the training cost of one model. The
    snapshots are the models after the updates that end a cycle of the run's
    [`LRSchedulerCallback`][flax_cyclic.LRSchedulerCallback] (``at='cycle_end'``, the rule of
    [`WeightAveraging`][flax_cyclic.WeightAveraging]) or after every ``every_steps``-th step.
    Each is saved as an Orbax checkpoint of the floating-point parameters and BatchNorm
    running statistics in ``directory/<step>``, the newest ``max_snapshots`` kept: apart from
    the run's checkpoints and their best-k retention.

    With several steps per dispatch, the [`Trainer`][flax_cyclic.Trainer] ends a dispatch at
    each snapshot's step and copies the parameters into a buffer on the device before the next
    dispatch starts; that step's hook saves it. Two snapshots must then not end two dispatches
    in a row (be more than ``steps_per_dispatch`` steps apart). A resumed
    run first removes the snapshots of steps beyond the checkpoint it resumed from (a killed
    run's, which it takes again), so it ends with the snapshots of the uninterrupted run.

    Args:
        directory: Where the snapshots go; ``None``: ``snapshots/`` in the Trainer's
            checkpoint directory (required in a hand-written loop).
        max_snapshots: How many of the newest snapshots to keep (the ensemble's members).
        at: ``'cycle_end'``: at each cycle's end (the default unless ``every_steps`` is given).
        every_steps: A snapshot after every ``every_steps``-th train step instead.
        start_step: No snapshot until more than ``start_step`` train steps are done.
        state_key: The key of the callback's state in a checkpoint.

    Raises:
        ValueError: For ``max_snapshots`` below 1, and the settings ``WeightAveraging`` refuses.

    Example:
        >>> import optax, tempfile
        >>> from flax import nnx
        >>> from flax_cyclic import (
        ...     CosineAnnealingWarmRestarts, LRSchedulerCallback, SnapshotEnsemble, Trainer)
        >>> model = nnx.Linear(4, 3, rngs=nnx.Rngs(0))
        >>> tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1)
        >>> optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
        >>> scheduler = CosineAnnealingWarmRestarts(base_lr=0.1, T_0=3)
        >>> ensemble = SnapshotEnsemble(tempfile.mkdtemp(), max_snapshots=2)
        >>> trainer = Trainer(
        ...     model, optimizer, progress=False,
        ...     callbacks=[LRSchedulerCallback(scheduler), ensemble],
        ... )
        >>> batches = [(np.ones((8, 4), np.float32), np.zeros(8, np.int32))] * 9
        >>> _ = trainer.fit(batches, num_epochs=1)
        >>> ensemble.steps  # the restarts after 3, 6 and 9 steps: the newest two kept
        [6, 9]
        >>> inputs, labels = batches[0]
        >>> ensemble.predict(inputs).shape
        (8, 3)
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        max_snapshots: int = 5,
        at: Literal["cycle_end"] | None = None,
        every_steps: int | None = None,
        start_step: int = 0,
        state_key: str | None = None,
    ) -> None:
        owner = "SnapshotEnsemble"
        self._steps = SnapshotSteps(owner, at, every_steps, start_step)
        self.max_snapshots = _checks.integer(
            owner, "max_snapshots", max_snapshots, minimum=1, maximum=None, hint="e.g. 5."
        )
        self._directory = None if directory is None else os.fspath(directory)
        self._state_key = state_key
        self._manager: ocp.CheckpointManager | None = None
        self._buffer: SnapshotBuffer | None = None
        self._loop: Loop | None = None
        # The last snapshot step planned, and the dispatch it falls in (counted).
        self._planned: tuple[int, int] | None = None
        self._dispatches = 0

    @property
    def state_key(self) -> str:
        """``'SnapshotEnsemble'``, or the ``state_key`` given."""
        return self._state_key or type(self).__name__

    @property
    def directory(self) -> str:
        """Where the snapshots are kept.

        Raises:
            ValueError: Without ``directory=`` outside a Trainer with a checkpointer.
        """
        if self._directory is None:
            checkpointer = getattr(self._loop, "checkpointer", None)
            if checkpointer is None:
                raise ValueError(
                    "SnapshotEnsemble: give directory= (where the snapshots go): only a "
                    "Trainer with a checkpointer offers one of its own (snapshots/ in it)."
                )
            self._directory = os.path.join(os.fspath(checkpointer.directory), "snapshots")
        return self._directory

    # -- the rider and the hooks --------------------------------------------------------------

    def rider(self, loop: Loop) -> SnapshotBuffer:
        """The device buffer the compiled step copies a snapshot's parameters into."""
        self._loop = loop
        if self._buffer is None:
            self._buffer = SnapshotBuffer(loop.model)
        return self._buffer

    def rides_ahead(self, loop: Loop, start: int, steps: int) -> np.ndarray:
        """``step + 1`` at each of the steps that take a snapshot (the buffer notes it), else 0.

        Raises:
            ValueError: With several steps per dispatch, if two snapshots end two dispatches in
                a row: the hooks of a dispatch run while the next one trains, so the second
                would overwrite the buffer before the first is saved.
        """
        flags = np.zeros(steps, np.int32)
        self._dispatches += 1
        for i in range(steps):
            step = start + i
            if not self._steps.takes(step):
                continue
            planned, dispatch = self._planned, getattr(loop, "steps_per_dispatch", 1)
            if planned is None or planned[0] != step:
                if dispatch > 1 and planned is not None and self._dispatches - planned[1] <= 1:
                    raise ValueError(
                        f"SnapshotEnsemble: the snapshots after train steps {planned[0] + 1} "
                        f"and {step + 1} end two dispatches of up to {dispatch} steps in a row, "
                        "so the second would overwrite the first before it is saved. Lower "
                        "steps_per_dispatch, or take snapshots less often."
                    )
                self._planned = (step, self._dispatches)
            flags[i] = step + 1
        return flags

    def on_train_begin(self, loop: Loop) -> None:
        """Checks the run's snapshots; removes those beyond the step the run resumes from."""
        self.rider(loop)
        self._planned, self._dispatches = None, 0
        manager = self._open()
        stale = [step for step in manager.all_steps() if step > loop.step]
        for step in stale:
            manager.delete(step)
        if stale:
            logger.info(
                "SnapshotEnsemble: removed the snapshots after step %d: %s", loop.step, stale
            )
        self._steps.begin(loop, self, any_taken=bool(manager.all_steps()))

    def on_step_end(self, loop: Loop, step: int, metrics: Mapping[str, Any]) -> None:
        """Saves the snapshot of this step, if it takes one (from the buffer, in a Trainer).

        Raises:
            RuntimeError: If the buffer holds another step's parameters (never, with the
                spacing ``rides_ahead`` checks).
        """
        if not self._steps.takes(step):
            return
        model = loop.model  # brings the training state (and the buffer) up to date
        if getattr(loop, "runs_riders", False):
            buffer = self.rider(loop)
            held = int(jax.device_get(buffer.step[...])) - 1
            if held != step:
                raise RuntimeError(
                    f"SnapshotEnsemble: the snapshot buffer holds train step {held}, not {step}: "
                    "a later snapshot overwrote it. Lower steps_per_dispatch."
                )
            params = [leaf.get_value() for leaf in buffer.params]
        else:
            params = _params(model)
        self._open().save(step + 1, args=ocp.args.StandardSave(params))

    def on_train_end(self, loop: Loop) -> None:
        """Waits for the snapshots' writes."""
        if self._manager is not None:
            self._manager.wait_until_finished()

    def on_exception(self, loop: Loop, exception: BaseException) -> None:
        """Waits for a snapshot's write in flight: a complete snapshot is never lost."""
        self.on_train_end(loop)

    # -- the ensemble ---------------------------------------------------------------------

    @property
    def steps(self) -> list[int]:
        """The steps of the snapshots kept, oldest first (updates completed, as checkpoints)."""
        return sorted(self._open().all_steps())

    def members(self, model: nnx.Module | None = None, *, last: int | None = None) -> list[Any]:
        """Copies of ``model`` with each kept snapshot's parameters, oldest first.

        Args:
            model: The model (of the structure trained); the loop's by default.
            last: Only the newest ``last`` snapshots.

        Raises:
            ValueError: If no snapshot is kept, ``last`` is not a positive count, or the
                snapshots do not fit ``model``.
        """
        steps = self.steps
        if last is not None:
            last = _checks.integer(
                "SnapshotEnsemble", "last", last, minimum=1, maximum=None, hint="e.g. 3."
            )
            steps = steps[-last:]
        if not steps:
            raise ValueError(
                f"SnapshotEnsemble: no snapshot in {self.directory} yet: an ensemble of zero "
                "members predicts nothing. Train past the first cycle end first."
            )
        if model is None:
            if self._loop is None:
                raise ValueError("SnapshotEnsemble.members: give the model (of its structure).")
            model = self._loop.model
        template = _params(model)
        members = []
        for step in steps:
            restored = self._open().restore(step, args=ocp.args.StandardRestore(template))
            member = nnx.clone(model)
            _set_params(member, restored)
            members.append(member)
        return members

    def predict(
        self, inputs: Any, model: nnx.Module | None = None, *, last: int | None = None
    ) -> jax.Array:
        """The members' mean softmax probabilities for ``inputs`` (in evaluation mode)."""
        probabilities = [
            _probabilities(member, inputs) for member in self.members(model, last=last)
        ]
        return jnp.mean(jnp.stack(probabilities), axis=0)

    def evaluate(
        self, batches: Iterable[Any], model: nnx.Module | None = None, *, last: int | None = None
    ) -> dict[str, float]:
        """The ensemble's ``loss`` (cross-entropy of the mean probability) and ``accuracy``.

        Args:
            batches: ``(inputs, labels)`` pairs or mappings with ``'image'`` and ``'label'``.
            model: As for ``members``.
            last: Only the newest ``last`` snapshots.

        Returns:
            ``loss``, ``accuracy`` (per example over all batches) and ``members``.
        """
        members = self.members(model, last=last)
        total_loss, correct, count = 0.0, 0, 0
        for batch in batches:
            inputs, labels = (
                (batch["image"], batch["label"]) if isinstance(batch, Mapping) else batch
            )
            mean = jnp.mean(jnp.stack([_probabilities(m, inputs) for m in members]), axis=0)
            labels = np.asarray(labels)
            picked = np.asarray(mean)[np.arange(len(labels)), labels]
            total_loss += float(-np.log(np.maximum(picked, np.finfo(np.float32).tiny)).sum())
            correct += int((np.asarray(mean).argmax(-1) == labels).sum())
            count += len(labels)
        if count == 0:
            raise ValueError("SnapshotEnsemble.evaluate: `batches` has no examples.")
        return {"loss": total_loss / count, "accuracy": correct / count, "members": len(members)}

    def _open(self) -> ocp.CheckpointManager:
        if self._manager is None:
            options = ocp.CheckpointManagerOptions(
                max_to_keep=self.max_snapshots, cleanup_tmp_directories=True, create=True
            )
            self._manager = ocp.CheckpointManager(self.directory, options=options)
        return self._manager


def _params(model: nnx.Module) -> list[jax.Array]:
    """A snapshot of ``model``: its parameters and BatchNorm statistics (``SNAPSHOT``)."""
    return state_values(model, tuple(averaged_paths(model, SNAPSHOT)), SNAPSHOT)


def _set_params(model: nnx.Module, values: list[Any]) -> None:
    state = nnx.state(model, SNAPSHOT)
    flat = dict(nnx.to_flat_state(state))
    for path, value in zip(averaged_paths(model, SNAPSHOT), values, strict=True):
        flat[path].set_value(jnp.asarray(value))
    nnx.update(model, nnx.from_flat_state(list(flat.items())))


def _probabilities(model: nnx.Module, inputs: Any) -> jax.Array:
    with _modes.mode(model, training=False):
        return _softmax(model, jnp.asarray(inputs))


@nnx.jit
def _softmax(model: nnx.Module, inputs: jax.Array) -> jax.Array:
    return jax.nn.softmax(model(inputs).astype(jnp.float32), axis=-1)
