"""Who owns the training state: the loop's objects are the truth at every hook.

The Trainer trains a split, donated copy of the model and optimizer state
([`SplitStep`][flax_cyclic._split_step.SplitStep]), and with several steps per dispatch runs
ahead of the hooks. [`TrainerLoop`] keeps the invariant of docs/concepts.md over it:

- One step per dispatch: a hook that reaches ``loop.model`` or ``loop.optimizer`` gets the
  objects with that step's state (the copy is put back: a *sync*), and whatever it leaves there
  is what the next update trains with (the step takes the arrays from the objects again after a
  sync, and splits them again if their structure changed). Steps on which no hook reaches the
  objects pay nothing.
- Several steps per dispatch: reads see the dispatch's end (``loop.steps_ahead``). A hook that
  changes the state while the loop is ahead is refused, naming it: found by comparing what the
  hook left with what it was given (the identity of every array and Variable, and the graph),
  not by a list of patterns. The injected hyperparameters, which a hook can write without
  reaching the objects through the loop, are compared around every hook.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from flax_cyclic._metrics import local_copy
from flax_cyclic._split_step import SplitStep
from flax_cyclic.callbacks.base import Callback, CallbackList

__all__ = ["TrainerLoop"]


class TrainerLoop(CallbackList):
    """The Trainer's callback list, keeping the loop's objects the truth at every hook."""

    def __init__(
        self, callbacks: Sequence[Callback], *, model: Any, optimizer: Any, split_step: SplitStep
    ) -> None:
        super().__init__(callbacks, model=model, optimizer=optimizer)
        self._split_step = split_step
        self.steps_per_dispatch = 1
        self.runs_riders = True  # the split step runs them (Dispatcher)
        self.checkpointer: Any = None  # the Trainer's Checkpointer, for the callbacks to name
        # Within the hooks of a dispatch: the values its steps applied and the step's index,
        # put into the injected hyperparameters when a hook reads the optimizer.
        self.applied: tuple[list[np.ndarray], int] | None = None
        self._current: tuple[Callback, str] | None = None  # the hook running, when checked
        self._raws: list[Any] = []  # what the injected variables held before it
        self._copies: list[Any] | None = None  # copies of host arrays among them
        self._snapshot: list[Any] | None = None  # the whole state, when it reached it ahead
        # The last callback that wrote each injected hyperparameter (by its index).
        self.writers: dict[int, str] = {}
        # What the injected variables held after the last hook checked ahead, which wrote
        # nothing: what the next hook is given, unless the loop changed them in between (all
        # that does forgets it: ``forget_held``).
        self._clean: tuple[list[Any], list[Any]] | None = None

    def forget_held(self) -> None:
        """Forgets what the injected variables held after the last hook: the loop changes them."""
        self._clean = None

    def _bring_up_to_date(self) -> None:
        self._clean = None
        self._split_step.sync()
        if self.applied is not None:
            applied, step = self.applied
            self.applied = None
            self.show({index: value[step, ...] for index, value in enumerate(applied)})
        if self._current is None:
            return
        # What the hook is given: compared with what it leaves when it returns.
        self._held()
        if self.steps_ahead and self._snapshot is None:
            # The structure is the dispatch's, split at its launch: a hook that changed it
            # since was refused.
            self._snapshot = self._split_step.snapshot(walk=False)

    def show(self, values: dict[int, Any], on_device: Sequence[Any] | None = None) -> None:
        """Puts a step's applied values into the injected variables, for its hooks to read.

        As JAX arrays, which a hook cannot change in place: a write replaces them, and shows.
        Every value is put, an unchanged one too: skipping a value equal to the one put last
        (compared on the host, where a value can be a view of an array the loop reuses) left
        stale values in the variables with gradient accumulation, and trained them (the
        applied oracle's seeds 1126 and 1285).
        ``on_device``: by index, the same values as a dispatch returned them, put instead of a
        copy of ``values`` where they are JAX arrays (a value one call per step passed through
        is the host value it was given, and is copied).
        """
        self._clean = None
        shown = {}
        for index, value in values.items():
            returned = None if on_device is None else on_device[index]
            shown[index] = returned if isinstance(returned, jax.Array) else jnp.asarray(value)
        self._split_step.show(shown)

    def _held(self) -> None:
        """Notes what each injected variable holds, to tell a hook's writes afterwards.

        Where nothing runs ahead (rare: dispatch boundaries) a host array is also copied, as a
        hook could write into it in place; ahead, the variables hold JAX arrays (``show``,
        ``enter_dispatch``), and identity tells.
        """
        self._raws = [variable.get_raw_value() for variable in self._split_step.injected()]
        self._copies = None
        if not self.steps_ahead:
            self._copies = [
                np.array(raw) if isinstance(raw, np.ndarray) else None for raw in self._raws
            ]

    def _written(self) -> list[int]:
        """The injected variables written since ``_held``, by index."""
        raws = self._raws
        written = [
            index
            for index, variable in enumerate(self._split_step.injected())
            if variable.get_raw_value() is not raws[index]
        ]
        for index, copy in enumerate(self._copies or ()):
            if copy is not None and index not in written and not np.array_equal(copy, raws[index]):
                written.append(index)
        return written

    @property
    def _guards_hooks(self) -> bool:
        return self.steps_per_dispatch != 1  # one step per dispatch: nothing runs ahead

    def _call(self, callback: Callback, hook: str, args: tuple[Any, ...]) -> None:
        if not self.steps_ahead:
            self._call_checked(callback, hook, args)
            return
        # Ahead (every step hook within a dispatch): the variables hold JAX arrays, so their
        # identity tells a write; ``_held`` and ``_written`` inlined, as this runs per hook.
        injected, clean = self._split_step.injected(), self._clean
        if clean is not None and clean[0] is injected:  # read after the hook before this one
            self._raws = clean[1]
        else:
            self._raws = [variable.get_raw_value() for variable in injected]
        self._copies, self._current, self._snapshot, self._clean = (
            None,
            (callback, hook),
            None,
            None,
        )
        try:
            getattr(callback, hook)(self, *args)
        finally:
            self._current = None
        raws = self._raws  # a hook that read the optimizer was given these (``_held`` again)
        now = [variable.get_raw_value() for variable in injected]
        written = [index for index, raw in enumerate(now) if raw is not raws[index]]
        if self._copies is not None:  # the hook took the loop off ahead, then read it
            written = self._written()
        if written or self._snapshot is not None:
            self._check_ahead(callback, hook, written)
        self._clean = (injected, now)  # nothing written: what the next hook is given

    def _call_checked(self, callback: Callback, hook: str, args: tuple[Any, ...]) -> None:
        """``_call`` where nothing runs ahead: notes the hook's writes (and what it wrote)."""
        self._clean = None
        self._held()
        self._current, self._snapshot = (callback, hook), None
        try:
            getattr(callback, hook)(self, *args)
        finally:
            self._current = None
        self._check_ahead(callback, hook, self._written())

    def _check_ahead(self, callback: Callback, hook: str, written: list[int]) -> None:
        """Notes the hook's writes; refuses what it changed while the state was ahead."""
        for index in written:
            self.writers[index] = callback.state_key
        if not self.steps_ahead:
            return
        changed: list[str] = (
            [] if self._snapshot is None else self._split_step.changed_since(self._snapshot)
        )
        if written or changed:
            names = changed or [f"injected hyperparameter #{index}" for index in written]
            self._undo(written)  # the objects hold what trained, as the error says
            raise self._refused(callback, hook, names)

    def _undo(self, written: list[int]) -> None:
        """Puts back the values a refused hook wrote (Variables it replaced stay replaced)."""
        self._clean = None
        for index in written:
            self._split_step.injected()[index].set_raw_value(self._raws[index])
        for _, variable, value in self._snapshot or ():
            variable.set_raw_value(value)

    def _refused(self, callback: Callback, hook: str, names: list[str]) -> RuntimeError:
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        return RuntimeError(
            f"Trainer.fit: {callback.state_key}.{hook} changed {shown} at train step "
            f"{self.step}, while the model and optimizer were {self.steps_ahead} step(s) ahead "
            f"of it (steps_per_dispatch={self.steps_per_dispatch}): those steps have trained "
            "already, so the change would not act where the callback meant it. Make the change "
            "where nothing runs ahead (on_epoch_end, on_eval_end, or a step hook when "
            "loop.steps_ahead == 0), give injected hyperparameters through "
            "Callback.hyperparams_ahead, or train with steps_per_dispatch=1."
        )

    def enter_dispatch(self, planned: dict[int, np.ndarray]) -> None:
        """Before a dispatch that follows hooks run with nothing ahead (epoch end, evaluation).

        The hooks' writes are checked (``check_writes``), then the injected values are held as
        JAX arrays, which no hook can change in place unseen while the dispatch runs ahead.
        """
        self.check_writes(planned)
        self._clean = None
        for variable in self._split_step.injected():
            held = np.asarray(local_copy(variable.get_raw_value()))
            variable.set_raw_value(jnp.asarray(held))

    def check_writes(self, planned: dict[int, np.ndarray] | None = None) -> None:
        """Refuses a hyperparameter written, where nothing ran ahead, over its planner's values.

        A hook that wrote a hyperparameter last, after the callback that gives it for the steps
        ahead (``hyperparams_ahead``), would see its value dropped: refused, naming both. Before
        a dispatch (``planned``: its plan) and at the end of a run (the last plan's planners),
        so that the rule does not depend on whether another dispatch follows.
        """
        writers, self.writers = self.writers, {}
        for index, variable in enumerate(self._split_step.injected()):
            planner, writer = self.planners.get(id(variable)), writers.get(index)
            plans = planner is not None if planned is None else id(variable) in planned
            if plans and writer is not None and writer != planner:
                raise RuntimeError(
                    f"Trainer.fit: {writer} wrote an injected hyperparameter before train step "
                    f"{self.step}, after {planner}, which gives it for the steps ahead "
                    "(Callback.hyperparams_ahead), so the value written would not be applied. "
                    "One callback drives each hyperparameter: to scale a schedule, give the "
                    "scheduler a scale_fn (or write a scheduler) instead of writing after it."
                )
