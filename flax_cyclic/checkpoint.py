"""Checkpoints of a whole training run through ``orbax.checkpoint.CheckpointManager``.

One Orbax step holds, through ``ocp.args.Composite``: the model state, the optimizer state (both
``nnx.state``, saved as arrays), every callback's ``state_dict()`` keyed by ``state_key`` and the
trainer's own position (JSON). Nothing is pickled.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
from collections.abc import Mapping
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath  # type: ignore[import-untyped]
from flax import nnx

from flax_cyclic import _checks, _improvement, _logging
from flax_cyclic._cadence import every
from flax_cyclic._checkpoint_items import (
    RESTORE_HINT,
    SAVE_HINT,
    abstract_state,
    as_metadata,
    callback_states,
    checked_step,
    extra_states,
    extra_unmatched,
    leaf_problems,
    non_finite_leaves,
    put_back,
    saved_kind,
    trainer_state,
    training_state,
)
from flax_cyclic._checkpointed_run import CheckpointedRun
from flax_cyclic._errors import CheckpointError, NonFiniteError

__all__ = ["CheckpointError", "CheckpointedRun", "Checkpointer", "NonFiniteError", "Restored"]

logger = _logging.logger


@dataclasses.dataclass(frozen=True)
class Restored:
    """What [`Checkpointer.restore`][flax_cyclic.Checkpointer.restore] read back.

    The model and optimizer, and the NNX objects among ``extra`` (an ``nnx.Rngs``, an
    ``nnx.MultiMetric``), are updated in place; ``extra`` holds every extra state asked for,
    plain pytrees as read back. A checkpoint saved with ``state=`` (a pytree: a Linen
    ``TrainState``, optax's ``(params, opt_state)``) comes back as ``state``, a new pytree of
    the template's structure; ``None`` for a checkpoint of a model and optimizer.
    """

    step: int
    callbacks: Mapping[str, Any]
    trainer: Mapping[str, Any]
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    state: Any = None


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
            while they are the newest, so a resume always finds the newest state. A NaN or
            infinite metric ranks below every finite one: it is never the best.
        best_mode: ``'auto'`` (from the metric's name: loss / error -> ``'min'``; accuracy,
            acc, auc, f1, precision, recall -> ``'max'``; the rule EarlyStopping and
            ReduceLROnPlateau use), ``'max'`` (higher is better) or ``'min'``.

    A checkpoint is only written when every floating-point array of the model and the
    optimizer is finite (one reduction on the device per save): a diverged run cannot replace
    the good checkpoints with NaN weights, and a resume starts from the newest good one.

    The directory records the retention rule (``best_metric`` and the resolved ``best_mode``)
    in a small JSON file beside Orbax's steps, written once: a ``Checkpointer`` with another
    rule on a directory that holds checkpoints is refused, since its retention would delete
    the checkpoints the first rule kept.

    Raises:
        ValueError, TypeError: For non-positive or non-integer counts, flags that are not
            ``True`` or ``False``, a ``best_metric`` that is not ``'eval/<name>'``, an unknown
            ``best_mode``, or ``'auto'`` for a name that says no direction.
        NotADirectoryError, PermissionError: For a ``directory`` that is (or lies under) a
            file, or that cannot be created or written.
        CheckpointError: If the directory holds checkpoints kept by another ``best_metric`` or
            ``best_mode`` (or none).
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
        best_mode: str = "auto",
    ) -> None:
        owner = type(self).__name__
        if every_steps is not None:
            every_steps = _checks.integer(
                owner, "every_steps", every_steps, minimum=1, hint="e.g. 1000, or None."
            )
        self.every_steps = every_steps
        self.every_epoch = _checks.flag(owner, "every_epoch", every_epoch)
        async_save = _checks.flag(owner, "async_save", async_save)
        self.max_to_keep = _checks.integer(
            owner, "max_to_keep", max_to_keep, minimum=1, hint="e.g. 3."
        )
        self.best_metric: str | None = _check_best_metric(owner, best_metric)
        best_mode = _checks.choice(owner, "best_mode", best_mode, _improvement.MODES)
        self.best_mode: str | None = None
        if self.best_metric is not None:
            self.best_mode = _improvement.resolve_mode(
                owner, "best_mode", best_mode, self.best_metric
            )
        self.directory = _checks.writable_directory(owner, "directory", directory)
        self.manager = ocp.CheckpointManager(
            self.directory,
            item_handlers={
                "model": ocp.StandardCheckpointHandler(),
                "optimizer": ocp.StandardCheckpointHandler(),
                "state": ocp.StandardCheckpointHandler(),
                "callbacks": ocp.JsonCheckpointHandler(),
                "trainer": ocp.JsonCheckpointHandler(),
                "extra": ocp.StandardCheckpointHandler(),
            },
            options=self._options(async_save),
        )
        _await_tmp_cleanup(self.manager)
        self._check_retention()

    def _options(self, async_save: bool) -> ocp.CheckpointManagerOptions:
        """Orbax's options: the newest ``max_to_keep``, or the best by a metric and the newest."""
        common: dict[str, Any] = dict(
            enable_async_checkpointing=async_save,
            # A kill during an async save leaves <step>.orbax-checkpoint-tmp-*: remove it.
            cleanup_tmp_directories=True,
            create=True,
        )
        if self.best_metric is None:
            return ocp.CheckpointManagerOptions(max_to_keep=self.max_to_keep, **common)
        policies = ocp.checkpoint_managers
        score = self._score
        return ocp.CheckpointManagerOptions(
            best_fn=score,  # higher is better in either mode; non-finite lowest
            best_mode="max",
            preservation_policy=policies.AnyPreservationPolicy(
                [
                    policies.BestN(
                        get_metric_fn=score,
                        n=self.max_to_keep,
                        keep_checkpoints_without_metrics=False,
                    ),
                    policies.LatestN(n=1),
                ]
            ),
            **common,
        )

    def _score(self, metrics: Mapping[str, float]) -> float:
        """A checkpoint's rank by its saved metrics: higher is better; non-finite lowest."""
        return _improvement.rank(float(metrics[str(self.best_metric)]), str(self.best_mode))

    def _check_retention(self) -> None:
        """Refuses a directory whose checkpoints another retention rule kept; records this one."""
        wanted = {"best_metric": self.best_metric, "best_mode": self.best_mode}
        path = epath.Path(self.directory) / RETENTION_FILE
        recorded = json.loads(path.read_text()) if path.exists() else None
        steps = self.manager.all_steps()
        kept_by = _kept_by(recorded, [self.manager.metrics(step) for step in steps], wanted)
        if steps and kept_by is not None:
            raise CheckpointError(
                f"Checkpointer: the checkpoints in {self.directory} (steps {sorted(steps)}) were "
                f"kept with {kept_by}, but this Checkpointer has best_metric="
                f"{self.best_metric!r}, best_mode={self.best_mode!r}: its retention would "
                f"delete checkpoints the other rule kept. Build it with the same best_metric "
                "and best_mode, or use a new directory."
            )
        record = {**_RETENTION_HEADER, **wanted}
        if (recorded is None or not steps) and recorded != record and jax.process_index() == 0:
            path.write_text(json.dumps(record))

    def should_save(self, step: int, *, epoch_end: bool = False, evaluated: bool = False) -> bool:
        """Whether the state after ``step`` train updates is saved now: the one cadence rule.

        True at a multiple of ``every_steps``, at an epoch's end with ``every_epoch``, and after
        an evaluation of this state with a ``best_metric`` (the save ranks it). The
        [`Trainer`][flax_cyclic.Trainer] asks it; a hand-written loop asks it after each
        update, once the step's evaluation (if any) is done, and saves once per step:

        ```python
        for batch in batches:
            metrics = train_step(model, optimizer, batch)
            step += 1
            evaluation = evaluate(model) if step % 100 == 0 else None  # {'eval/loss': ...}
            if checkpointer.should_save(step, evaluated=evaluation is not None):
                checkpointer.save(step, model=model, optimizer=optimizer, callbacks={},
                                  trainer={"step": step}, metrics=evaluation)
        ```

        Args:
            step: Train updates completed (the step the checkpoint is saved as).
            epoch_end: Whether ``step`` ends an epoch.
            evaluated: Whether the state after ``step`` was just evaluated.

        Returns:
            Whether to save now.

        Examples:
            >>> import tempfile
            >>> checkpointer = Checkpointer(tempfile.mkdtemp(), every_steps=3, every_epoch=False)
            >>> [step for step in range(10) if checkpointer.should_save(step)]
            [3, 6, 9]
        """
        return (
            every(step, self.every_steps)
            or (epoch_end and self.every_epoch)
            or (evaluated and self.best_metric is not None)
        )

    def latest_step(self) -> int | None:
        """The newest checkpoint's step, or ``None``.

        Like every method that lists, ranks or reads the checkpoints kept (``all_steps``,
        ``best_step``, ``metrics``, ``restore``), it first waits for a save still being
        written in the background (``wait()``), so it counts that save and the retention that
        follows it: the answer is the same right after ``save()`` as later.
        """
        self.wait()
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        """The steps of every checkpoint kept, in increasing order (after a save in flight)."""
        self.wait()
        return sorted(self.manager.all_steps())

    def best_step(self) -> int | None:
        """The step of the best checkpoint by ``best_metric``; ``None`` before the first.

        A checkpoint whose metric is NaN or infinite is never the best; of equal ones, the
        newest. A save still being written counts: it waits for it first (``wait()``).

        Returns:
            The step to pass to ``restore(step=...)``, or ``None``.

        Raises:
            ValueError: If the checkpointer has no ``best_metric``.
        """
        if self.best_metric is None:
            raise ValueError(
                "Checkpointer.best_step: this checkpointer ranks no checkpoints; build it with "
                "best_metric='eval/<name>' (and best_mode) to keep the best ones."
            )
        self.wait()
        ranked = [
            (self._score(metrics), step)
            for step in self.manager.all_steps()
            if (metrics := self.manager.metrics(step))
        ]
        finite = [(score, step) for score, step in ranked if math.isfinite(score)]
        return max(finite)[1] if finite else None

    def metrics(self, step: int) -> dict[str, float] | None:
        """The evaluation metrics saved with the checkpoint at ``step``, if it has any.

        A save of ``step`` still being written is waited for first (``wait()``).
        """
        self.wait()
        saved = self.manager.metrics(step) if step in self.manager.all_steps() else None
        return None if saved is None else dict(saved)

    def save(
        self,
        step: int,
        *,
        model: nnx.Module | None = None,
        optimizer: nnx.Optimizer | None = None,
        state: Any = None,
        callbacks: Mapping[str, Any] | None = None,
        trainer: Mapping[str, Any] | None = None,
        metrics: Mapping[str, float] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> bool:
        """Saves one checkpoint at ``step`` (asynchronously if enabled).

        A step is saved once: if a complete checkpoint of ``step`` is kept already, nothing is
        written and it returns False (the state after ``step`` updates is that checkpoint's),
        unless this call brings the evaluation that checkpoint lacks, which is an error (see
        [`should_save`][flax_cyclic.Checkpointer.should_save]: save after evaluating).

        Everything is checked before anything is written: a save that raises leaves the
        directory as it was (no step directory, no unfinished Orbax directory).

        Args:
            step: The train step the state belongs to: an integer ``>= 0`` (a NumPy integer
                too), checked as ``restore(step=...)`` checks it.
            model: The model (an NNX module), with ``optimizer``.
            optimizer: Its ``nnx.Optimizer``.
            state: Instead of ``model`` and ``optimizer``: the training state as a pytree of
                arrays, e.g. a Linen ``TrainState`` or optax's ``(params, opt_state)``.
                Python numbers among its leaves (a ``TrainState``'s first ``step``) are saved
                too.
            callbacks: Every callback's ``state_dict()``, keyed by ``state_key``: JSON
                values (dicts with string keys, lists, ``int``, ``float``, ``bool``, ``str``,
                ``None``). NumPy and JAX scalars and 0-d arrays of a bool, integer or real
                dtype are saved as the Python number of the same value, tuples as lists.
                ``None``: none (``{}``).
            trainer: The loop's position, JSON values as for ``callbacks``; ``None``: ``{}``.
            metrics: The evaluation of these weights, by logged name (``{'eval/loss': ...}``),
                each a real scalar; with a ``best_metric`` it ranks the checkpoint. ``None``:
                not evaluated.
            extra: More state of the run, by name: NNX objects (an ``nnx.Rngs`` the loop
                draws from, an ``nnx.MultiMetric``) or pytrees of arrays, saved as arrays
                beside the model and restored exactly by ``restore(..., extra=...)``.

        Returns:
            True if it saved, False if the step's checkpoint exists already.

        Raises:
            TypeError: If ``step`` is not an integer, a metric is not a real scalar, a
                callback's state (or ``trainer``) holds what JSON cannot hold exactly (an
                array with elements, an object, a complex number, a non-string key); the
                error names the ``state_key`` and the key path inside the state. If
                neither ``model`` and ``optimizer`` nor ``state`` is given, or both, or a
                leaf of ``state`` is not an array or a number.
            ValueError: If ``step`` is negative.
            NonFiniteError: If the model or optimizer state holds a NaN or an infinity; nothing
                is written then.
            KeyError: If ``metrics`` lacks the ``best_metric``.
            CheckpointError: If the step's checkpoint exists without the metrics given now.
        """
        step = checked_step("Checkpointer.save", step, SAVE_HINT)
        states = training_state("Checkpointer.save", model, optimizer, state)
        metrics = self._ranked_metrics(metrics)
        json_states = {
            "callbacks": callback_states({} if callbacks is None else callbacks, self.directory),
            "trainer": trainer_state({} if trainer is None else trainer, self.directory),
        }
        if step in self.manager.all_steps():
            return self._exists(step, metrics)
        if extra:
            states["extra"] = extra_states(extra)
        bad = non_finite_leaves(states)
        if bad:
            shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
            raise NonFiniteError(
                f"Checkpointer.save: the state to save at step {step} is not finite ({shown}), "
                f"so nothing was written to {self.directory}."
            )
        items = {name: ocp.args.StandardSave(state) for name, state in states.items()}
        saved = self.manager.save(
            step,
            args=ocp.args.Composite(
                **items,
                **{name: ocp.args.JsonSave(state) for name, state in json_states.items()},
            ),
            metrics=metrics,
            force=True,
        )
        logger.debug("Saving the checkpoint at step %d to %s.", step, self.directory)
        return saved

    def _ranked_metrics(self, metrics: Mapping[str, Any] | None) -> dict[str, float] | None:
        """``metrics`` checked (real scalars, the ``best_metric`` among them) as floats."""
        if metrics is None:
            return None
        if not isinstance(metrics, Mapping):
            raise TypeError(
                "Checkpointer.save: `metrics` must map metric names to real scalars or be None, "
                f"got {type(metrics).__name__}; e.g. metrics={{'eval/loss': 0.42}}."
            )
        bad = [f"{n}={v!r:.60}" for n, v in metrics.items() if not _checks.is_real_scalar(v)]
        if bad:
            raise TypeError(
                f"Checkpointer.save: `metrics` must map metric names to real scalars, got "
                f"{', '.join(bad[:3])}; pass the evaluation's means, e.g. "
                "metrics={'eval/loss': 0.42}."
            )
        if self.best_metric is None:
            return None
        if self.best_metric not in metrics:
            raise KeyError(
                f"Checkpointer.save: best_metric={self.best_metric!r}, but the evaluation "
                f"reported {sorted(metrics)}; rank by one of those."
            )
        return {name: float(value) for name, value in metrics.items()}

    def _exists(self, step: int, metrics: dict[str, float] | None) -> bool:
        """False for a step saved already; an error if that save lacks the metrics given now."""
        if metrics is not None and self.metrics(step) is None:
            raise CheckpointError(
                f"Checkpointer.save: the checkpoint of step {step} in {self.directory} was saved "
                f"before its evaluation ({metrics}), so "
                "best-k cannot rank it and would drop it. Evaluate first and save once per "
                "step, with the metrics: Checkpointer.should_save(step, epoch_end=..., "
                "evaluated=...) says when."
            )
        logger.debug("The checkpoint of step %d exists: not saved again.", step)
        return False

    def resume(
        self,
        *,
        model: nnx.Module | None = None,
        optimizer: nnx.Optimizer | None = None,
        state: Any = None,
        callbacks: Any = None,
        extra: Mapping[str, Any] | None = None,
        data: Any = None,
    ) -> CheckpointedRun:
        """A hand-written loop's checkpoints in one ``with`` block: resume, save, save on exit.

        Entering the block restores the newest checkpoint, if any, into everything given
        (model and optimizer, or ``state``; the callbacks' state and step; ``extra``; the data
        position); ``run.step`` is where to start. ``run.step_done()`` at the end of each step
        counts the update and saves on this checkpointer's cadence (``should_save``). A SIGTERM
        saves the step it arrives in and ends ``run.steps()``. Leaving the block saves the last
        step completed (on an error too, when the state is still that step's) and waits until
        every save is on disk; the checkpointer stays usable (``best_step()``, ``restore``).

        ```python
        with checkpointer.resume(model=model, optimizer=optimizer, callbacks=callbacks) as run:
            callbacks.on_train_begin()
            for step in run.steps(num_steps):  # from the restored step
                callbacks.on_step_begin()
                callbacks.on_step_end(train_step(model, optimizer, batch_at(step)))
                run.step_done()
            callbacks.on_train_end()
        ```

        Args:
            model: The NNX model, with ``optimizer``; restored in place.
            optimizer: Its ``nnx.Optimizer``.
            state: Instead of ``model`` and ``optimizer``: the training state as a pytree (a
                Linen ``TrainState``, optax's ``(params, opt_state)``), the template to restore
                onto; the run's ``state`` is then the one to train from, and each
                ``step_done(state=...)`` passes the new one.
            callbacks: A [`CallbackList`][flax_cyclic.CallbackList] (its state and its
                ``step`` are restored), or a mapping of names to objects with
                ``state_dict()`` / ``load_state_dict()``, e.g. ``{'scheduler': scheduler}``.
            extra: More state by name (an ``nnx.Rngs``, an ``nnx.MultiMetric``, pytrees), as
                for ``save`` and ``restore``.
            data: A data iterator with ``get_state()`` / ``set_state()`` (a grain
                ``DatasetIterator``): its position is saved and restored. Leave it out when
                the step picks the batch.

        Returns:
            The [`CheckpointedRun`][flax_cyclic.CheckpointedRun], to enter with ``with``.

        Raises:
            TypeError: For ``callbacks`` or ``data`` of another kind, or a training state
                given in neither form or both (on entering: as ``restore``).
            CheckpointError: On entering, if the newest checkpoint does not match what is
                given (as ``restore``; also the callbacks' names and the data position).
        """
        training_state("Checkpointer.resume", model, optimizer, state)
        return CheckpointedRun(
            self,
            model=model,
            optimizer=optimizer,
            state=state,
            callbacks=callbacks,
            extra=extra,
            data=data,
        )

    def wait(self) -> None:
        """Blocks until a background save has finished (returns at once if none is running).

        Raises:
            Exception: The error of a background save that failed, as Orbax reports it.
        """
        self.manager.wait_until_finished()

    def close(self) -> None:
        """Waits for pending saves and releases the manager's resources."""
        self.manager.close()

    def restore(
        self,
        *,
        model: nnx.Module | None = None,
        optimizer: nnx.Optimizer | None = None,
        state: Any = None,
        step: int | None = None,
        extra: Mapping[str, Any] | None = None,
        skip_extra: bool = False,
    ) -> Restored | None:
        """Restores a checkpoint into ``model`` and ``optimizer``: the newest, or ``step``.

        Without ``step``, the newest checkpoint that reads back: a damaged checkpoint (a
        missing or truncated file) is reported in the log and the one before it is tried (the
        [`Trainer`][flax_cyclic.Trainer] resumes this way). The damaged step directories newer
        than the one restored are then moved aside, as ``<step>.damaged-<n>`` in the same
        directory (nothing is deleted; a warning names them), so the run saves those steps
        again. With ``step``, exactly that one, e.g. ``step=checkpointer.best_step()``. A save
        still being written is waited for first, so it is restored as it will be on disk.

        A checkpoint that does not match the targets is an error at once, never a silent
        change: other leaves, shapes or dtypes (a dtype is never cast: restore into the saved
        dtype and cast afterwards), extra state saved but not asked for (unless
        ``skip_extra=True``), or asked for but not saved.

        Args:
            model: The model to restore into, with ``optimizer``.
            optimizer: Its optimizer.
            state: Instead of ``model`` and ``optimizer``, for a checkpoint saved with
                ``save(..., state=...)``: a pytree of the saved structure, shapes and dtypes
                (e.g. the freshly built ``TrainState``), or of ``jax.ShapeDtypeStruct``; the
                restored pytree is the result's ``state``.
            step: The checkpoint to restore (one of ``all_steps()``); ``None`` for the newest.
                An integer ``>= 0``, checked as ``save``'s ``step``.
            extra: The extra state saved with ``save(..., extra=...)``, by the same names, as
                targets of the same structure, shapes and dtypes: NNX objects are updated in
                place, and every entry is in the result's ``extra``. A
                [`Trainer`][flax_cyclic.Trainer] passes its ``rngs=`` as ``{'rngs': rngs}``.
            skip_extra: Leave the extra state a checkpoint holds unread (only without
                ``extra``): e.g. to restore the weights of a run whose ``nnx.Rngs`` this one
                does not use.

        Returns:
            The callbacks' and trainer's saved states (and ``state``), or ``None`` if there is
            no checkpoint (and no ``step`` was asked for).

        Raises:
            TypeError, ValueError: For a ``step`` that is not an integer ``>= 0``, a
                ``skip_extra`` that is not ``True`` or ``False``, both ``extra`` and
                ``skip_extra=True``, or neither ``model`` and ``optimizer`` nor ``state`` (or
                both).
            CheckpointError: If the checkpoints do not match this model and optimizer (or
                ``state``, or ``extra``), none of them can be read, or the ``step`` asked for
                is not there or cannot be read.
        """
        skip_extra = _checks.flag("Checkpointer.restore", "skip_extra", skip_extra)
        targets = training_state("Checkpointer.restore", model, optimizer, state)
        if skip_extra and extra:
            raise ValueError(
                "Checkpointer.restore: skip_extra=True leaves the saved extra state unread, but "
                f"extra= asks for {sorted(extra)}; pass one of them."
            )
        self.wait()
        asked = None if step is None else self._kept_step(step)
        steps = [asked] if asked is not None else sorted(self.manager.all_steps(), reverse=True)
        if not steps:
            return None
        if extra:
            targets["extra"] = extra_states(extra)
        failures: dict[int, str] = {}
        for candidate in steps:
            try:
                restored = self._read(candidate, targets, skip_extra)
            except _Damaged as damaged:
                failures[candidate] = self._damaged(candidate, damaged.__cause__ or damaged)
                continue
            if failures:
                self._set_aside(sorted(failures), candidate)
            if model is not None:
                nnx.update(model, restored["model"])
                nnx.update(optimizer, restored["optimizer"])
            return Restored(
                candidate,
                restored["callbacks"],
                restored["trainer"],
                put_back(extra or {}, restored["extra"]) if extra else {},
                restored["state"] if state is not None else None,
            )
        failed = "; ".join(failures.values())
        if asked is not None:
            raise CheckpointError(
                f"The checkpoint of step {asked} in {self.directory} could not be restored: "
                f"{failed}. Restore another step (Checkpointer.all_steps()), or repair the files."
            )
        raise CheckpointError(
            f"None of the checkpoints in {self.directory} (steps {steps}) could be restored: "
            f"{failed}. Nothing was started from scratch. Repair or remove the damaged step "
            "directories, or point the run at a new checkpoint directory."
        )

    def _read(self, step: int, targets: Mapping[str, Any], skip_extra: bool) -> Any:
        """The checkpoint of ``step``, read onto ``targets``; ``_Damaged`` if it cannot be."""
        try:
            mismatch = self._mismatch(step, targets, skip_extra)
        except Exception as error:  # unreadable metadata: a damaged checkpoint
            raise _Damaged from error
        if mismatch:
            raise CheckpointError(f"The checkpoint at step {step} in {self.directory} {mismatch}")
        try:
            return self.manager.restore(
                step,
                args=ocp.args.Composite(
                    **{
                        name: ocp.args.StandardRestore(abstract_state(target))
                        for name, target in targets.items()
                    },
                    callbacks=ocp.args.JsonRestore(),
                    trainer=ocp.args.JsonRestore(),
                ),
            )
        except Exception as error:
            raise _Damaged from error

    def _set_aside(self, steps: list[int], restored: int) -> None:
        """Moves damaged step directories to ``<step>.damaged-<n>``, so the run saves them anew."""
        root = epath.Path(self.directory)
        moved = [_free_name(root, f"{step}.damaged") for step in steps]
        if jax.process_index() == 0:
            for step, target in zip(steps, moved, strict=True):
                (root / str(step)).rename(root / target)
        if jax.process_count() > 1:
            ocp.multihost.sync_global_processes("flax_cyclic_checkpointer_set_aside")
        self.manager.reload()
        logger.warning(
            "Checkpointer.restore: the damaged checkpoint(s) of step(s) %s, newer than step %d "
            "(restored), were moved aside to %s in %s: nothing was deleted, and the run saves "
            "those steps again. Inspect or remove them.",
            steps,
            restored,
            moved,
            self.directory,
        )

    def _kept_step(self, step: Any) -> int:
        """``step``, checked to be the step of a checkpoint kept here."""
        step = checked_step("Checkpointer.restore", step, RESTORE_HINT)
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

    def _mismatch(self, step: int, targets: Mapping[str, Any], skip_extra: bool) -> str | None:
        """How the checkpoint does not match ``targets`` (leaves, shapes, dtypes, extra state)."""
        metadata = self.manager.item_metadata(step)
        kind = saved_kind(metadata)
        if kind is not None and kind not in targets:
            return _KIND_MISMATCH[kind]
        saved_extra = metadata.get("extra")
        unmatched = extra_unmatched(
            None if saved_extra is None else sorted(saved_extra.tree),
            sorted(targets.get("extra", {})),
            skip_extra,
        )
        if unmatched:
            return unmatched
        problems = {
            item: leaf_problems(item, metadata[item].tree, as_metadata(target))
            for item, target in targets.items()
        }
        found = [problem for item_problems in problems.values() for problem in item_problems]
        if not found:
            return None
        cast = (
            " A dtype is never cast: restore into the saved dtypes, then cast."
            if any(" dtypes " in problem for problem in found)
            else ""
        )
        if not any(problems[item] for item in targets if item != "extra"):
            return (
                f"holds other extra state than extra= describes: {'; '.join(found)}. Pass "
                f"extra= with targets of the structure it was saved with.{cast}"
            )
        if "state" in targets:
            return (
                f"was saved from a state of another structure: {'; '.join(found)}. Restore "
                f"with a state= built as the saved one was, or use a new checkpoint "
                f"directory.{cast}"
            )
        return (
            f"was saved from a different model or optimizer: {'; '.join(found)}. Restore "
            f"with the model and optimizer it was made with, or use a new checkpoint "
            f"directory.{cast}"
        )


_KIND_MISMATCH = {
    "state": (
        "was saved with state= (a pytree, e.g. a Linen TrainState), not from a model and "
        "optimizer. Restore it with restore(state=<a state of the saved structure>)."
    ),
    "model": (
        "was saved from an NNX model and optimizer, not with state=. Restore it with "
        "restore(model=..., optimizer=...)."
    ),
}


class _Damaged(Exception):
    """A checkpoint that cannot be read back (its cause is the reader's error)."""


#: The file in a checkpoint directory that records its retention rule.
RETENTION_FILE = "flax_cyclic_checkpointer.json"
_RETENTION_HEADER = {"format": "flax_cyclic.Checkpointer", "version": 1}


def _kept_by(
    recorded: Mapping[str, Any] | None,
    saved_metrics: list[Any],
    wanted: Mapping[str, str | None],
) -> str | None:
    """The other retention rule the saved checkpoints were kept by; None if it is ``wanted``.

    Without a record (a directory of an earlier release), the rule is read from the
    checkpoints: best-k keeps at most one checkpoint without metrics, a plain one none with.
    """
    if recorded is not None:
        saved = {key: recorded.get(key) for key in wanted}
        if saved == dict(wanted):
            return None
        return ", ".join(f"{key}={value!r}" for key, value in saved.items())
    ranked = [metrics for metrics in saved_metrics if metrics]
    names = sorted({name for metrics in ranked for name in metrics})
    if wanted["best_metric"] is None:
        return f"the best by an evaluation metric (saved metrics {names})" if ranked else None
    if len(saved_metrics) - len(ranked) > 1:
        return "best_metric=None (no metrics saved with them)"
    if ranked and wanted["best_metric"] not in names:
        return f"the best by another metric (saved metrics {names})"
    return None


def _check_best_metric(owner: str, best_metric: Any) -> str | None:
    """``best_metric``: ``None`` or an evaluation metric as it is logged, ``'eval/<name>'``."""
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
    return best_metric


def _free_name(root: epath.Path, stem: str) -> str:
    """``<stem>-<n>`` with the smallest ``n >= 1`` not taken in ``root``."""
    return next(f"{stem}-{n}" for n in itertools.count(1) if not (root / f"{stem}-{n}").exists())


def _await_tmp_cleanup(manager: ocp.CheckpointManager) -> None:
    """Waits for the removal of unfinished saves Orbax starts in the background.

    Left running, it fails at interpreter exit with a traceback when the checkpointer is
    never used.
    """
    wait = getattr(manager, "_maybe_await_cleanup_tmp_directory", None)
    if callable(wait):
        wait()
