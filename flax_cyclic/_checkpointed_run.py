"""A hand-written loop's checkpoints: resume on entry, save on the cadence, save on the way out.

[`Checkpointer.resume`][flax_cyclic.Checkpointer.resume] builds a
[`CheckpointedRun`][flax_cyclic.CheckpointedRun]; this module holds it. It does for a loop of
one's own what the [`Trainer`][flax_cyclic.Trainer] does for its own: the bookkeeping of a
resume (the callbacks' state and step, the extra state, the data position), the cadence, the
final save, SIGTERM.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator, Mapping
from typing import Any

import jax
from flax import nnx

from flax_cyclic import _checks, _logging
from flax_cyclic._checkpoint_items import resumable
from flax_cyclic._errors import CheckpointError
from flax_cyclic._loop.data import data_state, preemption
from flax_cyclic.callbacks.base import CallbackList

__all__ = ["CheckpointedRun"]

logger = _logging.logger

_OWNER = "CheckpointedRun"


class CheckpointedRun:
    """The checkpoints of a hand-written loop, as a context manager: see ``Checkpointer.resume``.

    Entering it restores the newest checkpoint, if there is one, into everything given; each
    ``step_done()`` counts an update and saves on the checkpointer's cadence; a SIGTERM saves
    the step it arrives in and ends ``steps()``; leaving it saves the last step completed
    (unless it is saved already) and waits until every save is on disk.

    Attributes:
        step: Train updates completed: the restored checkpoint's step, or 0; one more after
            each ``step_done()``. It is the index of the next step, the step a checkpoint of
            the current state is saved as, and what picks the next batch of a loop whose data
            position is its step.
        resumed_from: The step of the checkpoint restored, or ``None`` on a fresh start.
        state: With ``state=``: the training state, as restored (or as given on a fresh
            start), then as the last ``step_done(state=...)`` gave it.
        extra: The extra state as restored (NNX objects are also updated in place); ``{}`` on
            a fresh start.
        preempted: Whether a SIGTERM ended the run (after saving the step it arrived in).
    """

    def __init__(
        self,
        checkpointer: Any,
        *,
        model: Any,
        optimizer: Any,
        state: Any,
        callbacks: Any,
        extra: Mapping[str, Any] | None,
        data: Any,
    ) -> None:
        self._checkpointer = checkpointer
        self._model, self._optimizer = model, optimizer
        self._callbacks = _stateful(callbacks)
        self._extra_targets = extra
        self._extra_asked = list(extra or {})  # the user's, without the callbacks' riders
        self._data = _data(data)
        self.state = state
        self.step = 0
        self.resumed_from: int | None = None
        self.extra: dict[str, Any] = {}
        self.preempted = False
        self._saved_step: int | None = None
        self._updates_at_start: int | None = None
        self._exits = contextlib.ExitStack()
        self._preempted_at = lambda step: False
        self._entered = False

    def __enter__(self) -> CheckpointedRun:
        """Restores the newest checkpoint, if any, and starts listening for SIGTERM."""
        if self._entered:
            raise RuntimeError(
                f"{_OWNER}: this run is entered already; call Checkpointer.resume(...) once per "
                "`with` block."
            )
        self._entered = True
        self._restore()
        self._updates_at_start = _update_count(self._optimizer)
        self._preempted_at = self._exits.enter_context(preemption(True, self.step))
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: types.TracebackType | None,
    ) -> None:
        """Saves the last completed step (unless saved, or no longer the state) and waits."""
        with self._exits:
            try:
                if error is None:
                    self._check_counted("leaving the `with` block")
                    self._final_save()
                else:
                    self._save_on_error(error)
            finally:  # a save still being written finishes on every way out
                self._checkpointer.wait()

    def steps(self, num_steps: int) -> Iterator[int]:
        """The steps from ``step`` to ``num_steps - 1``; ends early after a SIGTERM.

        Args:
            num_steps: Train updates in the whole run, counted from its start (not from the
                resume), an integer ``>= 0``.

        Yields:
            The index of each step to run: ``step`` before it.

        Raises:
            RuntimeError: If a step ends without exactly one ``step_done()``.
        """
        self._check_entered("steps")
        num_steps = _checks.integer(
            f"{_OWNER}.steps", "num_steps", num_steps, minimum=0, maximum=None, hint="e.g. 1000."
        )
        while self.step < num_steps and not self.preempted:
            begun = self.step
            yield begun
            if self.step != begun + 1:
                raise RuntimeError(
                    f"{_OWNER}.steps: step {begun} ended after {self.step - begun} calls of "
                    "step_done(); call run.step_done() exactly once, at the end of each step "
                    "(after the update and its callbacks' on_step_end)."
                )

    def step_done(
        self,
        *,
        state: Any = None,
        epoch_end: bool = False,
        metrics: Mapping[str, float] | None = None,
    ) -> bool:
        """Counts one train update and saves when the checkpointer's cadence says so.

        Call it at the end of each step: after the update, after the callbacks'
        ``on_step_end`` (so their saved state counts the update) and after the step's
        evaluation, if it has one.

        Args:
            state: With ``Checkpointer.resume(state=...)``: the state after this update (a
                new pytree each step); required then, refused otherwise.
            epoch_end: Whether this step ends an epoch (``every_epoch`` saves then).
            metrics: The evaluation of the state after this step, by logged name
                (``{'eval/loss': ...}``), if it was evaluated: ranks the checkpoint for a
                ``best_metric``.

        Returns:
            Whether a checkpoint was saved.

        Raises:
            TypeError: For ``state`` given or left out against how the run was built.
        """
        self._check_entered("step_done")
        self._take_state("step_done", state)
        self.step += 1
        evaluated = metrics is not None
        saved = False
        if self._checkpointer.should_save(self.step, epoch_end=epoch_end, evaluated=evaluated):
            saved = self.save(metrics=metrics)
        if self._preempted_at(self.step):
            saved = self.save() or saved
            self.preempted = True
            logger.warning(
                "SIGTERM: saved step %d to %s and stopping; run again to resume from it.",
                self.step,
                self._checkpointer.directory,
            )
        return saved

    def save(self, *, metrics: Mapping[str, float] | None = None) -> bool:
        """Saves the state after ``step`` updates now (a step saved already is not saved again).

        Args:
            metrics: The evaluation of this state, by logged name, if it was evaluated.

        Returns:
            Whether a checkpoint was written.

        Raises:
            RuntimeError: If the callbacks counted another number of steps than the run.
        """
        self._check_entered("save")
        if isinstance(self._callbacks, CallbackList) and self._callbacks.step != self.step:
            raise RuntimeError(
                f"{_OWNER}.save: the callbacks counted {self._callbacks.step} steps, the run "
                f"{self.step}: call callbacks.on_step_end(...) once per step, before "
                "run.step_done(), so the checkpoint's callbacks' state counts every update."
            )
        trainer: dict[str, Any] = {"step": self.step}
        if self._data is not None:
            trainer["data_state"] = data_state(self._data)
        saved = self._checkpointer.save(
            self.step,
            **self._training_state(),
            callbacks=self._callbacks_state(),
            trainer=trainer,
            metrics=metrics,
            extra=self._extra_targets,
        )
        self._saved_step = self.step
        return bool(saved)

    def _restore(self) -> None:
        if isinstance(self._callbacks, CallbackList):  # the callbacks' riders, saved beside
            riders = self._callbacks.rider_states()
            self._extra_targets = resumable(self._checkpointer, self._extra_targets or {}, riders)
        restored = self._checkpointer.restore(**self._training_state(), extra=self._extra_targets)
        if restored is None:
            logger.info("No checkpoint in %s: starting fresh.", self._checkpointer.directory)
            return
        where = f"The checkpoint at step {restored.step} in {self._checkpointer.directory}"
        if restored.trainer.get("step") != restored.step:
            raise CheckpointError(
                f"{where} was not saved by a CheckpointedRun (its trainer state is "
                f"{dict(restored.trainer)}): resume it the way it was saved, e.g. with the "
                "Trainer, or use a new checkpoint directory."
            )
        self._load_callbacks(restored.callbacks, where)
        self._load_data(restored.trainer, where)
        if self.state is not None:
            self.state = restored.state
        self.extra = {name: restored.extra[name] for name in self._extra_asked}
        self.step = self.resumed_from = self._saved_step = restored.step
        if isinstance(self._callbacks, CallbackList):
            self._callbacks.step = restored.step
        logger.info(
            "Resumed from the checkpoint at step %d in %s.",
            restored.step,
            self._checkpointer.directory,
        )

    def _load_callbacks(self, saved: Mapping[str, Any], where: str) -> None:
        if isinstance(self._callbacks, CallbackList):
            self._callbacks.load_state_dict(saved)
            return
        names, kept = sorted(self._callbacks), sorted(saved)
        if names != kept:
            raise CheckpointError(
                f"{where} holds the states of {kept}, but callbacks= names {names}: pass the "
                "objects it was saved with, by the same names."
            )
        for name, stateful in self._callbacks.items():
            stateful.load_state_dict(saved[name])

    def _load_data(self, trainer: Mapping[str, Any], where: str) -> None:
        saved = trainer.get("data_state")
        if self._data is None and saved is not None:
            raise CheckpointError(
                f"{where} holds the position of the data iterator it was saved with; pass "
                "data=<that iterator> so the run goes on where it stopped."
            )
        if self._data is not None and "data_state" not in trainer:
            raise CheckpointError(
                f"{where} holds no data position, but data= was given: resume it without data= "
                "(and seek the data yourself), or use a new checkpoint directory."
            )
        if self._data is not None and saved is not None:
            self._data.set_state(saved)

    def _training_state(self) -> dict[str, Any]:
        if self.state is not None:
            return {"state": self.state}
        return {"model": self._model, "optimizer": self._optimizer}

    def _callbacks_state(self) -> dict[str, Any]:
        if isinstance(self._callbacks, CallbackList):
            return self._callbacks.state_dict()
        return {name: stateful.state_dict() for name, stateful in self._callbacks.items()}

    def _take_state(self, method: str, state: Any) -> None:
        if (state is None) != (self.state is None):
            given = "was built without state= (it saves its model and optimizer)"
            if self.state is not None:
                given = "was built with state=: pass the state after this update"
            raise TypeError(f"{_OWNER}.{method}: the run {given}; got state={state!r:.60}.")
        if state is not None:
            self.state = state

    def _check_entered(self, method: str) -> None:
        if not self._entered:
            raise RuntimeError(
                f"{_OWNER}.{method}: enter the run first: `with checkpointer.resume(...) as run:`."
            )

    def _check_counted(self, when: str) -> None:
        """Refuses to save when the optimizer made updates that ``step_done`` did not count."""
        made = self._updates_since_start()
        counted = self.step - (self.resumed_from or 0)
        if made is not None and made != counted:
            raise RuntimeError(
                f"{_OWNER}: {when}, the optimizer made {made} updates but step_done() counted "
                f"{counted}; nothing was saved (step {self.step} would hold another state). "
                "Call run.step_done() once after each update."
            )

    def _updates_since_start(self) -> int | None:
        now = _update_count(self._optimizer)
        if now is None or self._updates_at_start is None:
            return None
        return now - self._updates_at_start

    def _final_save(self) -> None:
        if self._saved_step != self.step:
            self.save()

    def _save_on_error(self, error: BaseException) -> None:
        """Saves the last step completed, if the state is still that step's; never raises."""
        try:
            self._check_counted(f"after {type(error).__name__}")
            self._final_save()
        except Exception as failure:  # the loop's own error is the one to see
            logger.warning(
                "%s: step %d was not saved on the way out of %s (%s); the newest checkpoint in "
                "%s is the one to resume from.",
                _OWNER,
                self.step,
                type(error).__name__,
                failure,
                self._checkpointer.directory,
            )


def _update_count(optimizer: Any) -> int | None:
    """An ``nnx.Optimizer``'s count of updates (one read from the device), if it keeps one."""
    count = getattr(optimizer, "step", None)
    return int(jax.device_get(count[...])) if isinstance(count, nnx.Variable) else None


def _stateful(callbacks: Any) -> CallbackList | Mapping[str, Any]:
    if callbacks is None:
        return {}
    if isinstance(callbacks, CallbackList):
        return callbacks
    if isinstance(callbacks, Mapping) and all(
        isinstance(name, str) and callable(getattr(obj, "state_dict", None))
        for name, obj in callbacks.items()
    ):
        return callbacks
    raise TypeError(
        f"Checkpointer.resume: callbacks= must be a CallbackList or a mapping of names to "
        f"objects with state_dict() and load_state_dict() (e.g. {{'scheduler': scheduler}}), "
        f"got {type(callbacks).__name__}."
    )


def _data(data: Any) -> Any:
    if data is not None and not all(
        callable(getattr(data, name, None)) for name in ("get_state", "set_state")
    ):
        raise TypeError(
            "Checkpointer.resume: data= must be an iterator with get_state() and set_state() "
            f"(e.g. a grain DatasetIterator), got {type(data).__name__}; for data whose "
            "position is the step, leave data= out and pick the batch by run.step."
        )
    return data
