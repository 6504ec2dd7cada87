"""Callbacks: small objects with no-op hooks that a training loop calls at fixed points."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple, Protocol

import numpy as np
from flax import nnx

from flax_cyclic import _checks, _logging
from flax_cyclic.callbacks._planned import check_planned

__all__ = ["Callback", "CallbackList", "Loop", "MetricWriter"]

logger = _logging.logger


class MetricWriter(Protocol):
    """What a callback writes metrics through: CLU's ``MetricWriter``, or any ``write_scalars``.

    ``flush``, ``write_hparams`` and ``write_images`` are used where present.
    """

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        """Writes scalar values at ``step``."""


class Loop(Protocol):
    """What the hooks read from the loop that calls them (a ``CallbackList``).

    ``step`` is the number of train steps done; a callback may set it in ``on_train_begin``
    (the LR callback does, for a scheduler that starts part-way). ``total_steps`` is the planned
    length of the whole run, when known. A callback sets ``stop_training`` to end the run after
    the current step (the [`Trainer`][flax_cyclic.Trainer] ends it through its normal end:
    final save, ``on_train_end``; a hand-written loop checks it).

    Read ``model`` and ``optimizer`` from the loop in the hook that needs them, not through a
    reference kept from before training: the [`Trainer`][flax_cyclic.Trainer] keeps the
    training state apart from the NNX objects between steps, and reading them from the loop
    puts it back first.
    """

    model: Any
    optimizer: Any
    step: int
    epoch: int
    total_steps: int | None
    stop_training: bool
    callbacks: list[Callback]
    steps_ahead: int


class Callback:
    """Base class of training-loop callbacks: every hook is a no-op until overridden.

    Hooks receive the ``loop``: a [`CallbackList`][flax_cyclic.CallbackList] (or the
    [`Trainer`][flax_cyclic.Trainer] driving one), with ``model``, ``optimizer``, ``step`` (train
    steps completed) and ``epoch``. The order of hooks is:

        on_train_begin
          on_epoch_begin(epoch)
            on_step_begin(step) -> the train step -> on_step_end(step, metrics)   (repeated)
            on_eval_begin -> evaluation -> on_eval_end(metrics)                  (optional)
          on_epoch_end(epoch, metrics)
        on_train_end                          (on_exception(error) instead, if the loop fails)

    A loop that runs several steps per dispatch (``Trainer(steps_per_dispatch=k)``) runs them
    first and then the step hooks of each, in order: ``loop.steps_ahead`` says how many
    updates the model and optimizer have made beyond what the hook would see with one step per
    dispatch (before update ``i`` in ``on_step_begin(i)``, after it in ``on_step_end(i)``; 0
    otherwise), and a hook may change them only where it is 0. A
    callback that writes injected hyperparameters between steps tells such a loop its values
    in advance through
    [`hyperparams_ahead`][flax_cyclic.Callback.hyperparams_ahead].

    A callback that keeps state for checkpoints overrides
    [`state_dict`][flax_cyclic.Callback.state_dict] and
    [`load_state_dict`][flax_cyclic.Callback.load_state_dict] (JSON-serialisable data) and may
    override [`state_key`][flax_cyclic.Callback.state_key].
    """

    @property
    def state_key(self) -> str:
        """The key of this callback's state in a checkpoint; unique within a loop."""
        return type(self).__name__

    @property
    def logs_learning_rate(self) -> bool:
        """Whether this callback writes the learning rate to a writer.

        The [`Trainer`][flax_cyclic.Trainer] adds a
        [`LearningRateMonitor`][flax_cyclic.LearningRateMonitor] to log it only where no
        callback does. ``False`` unless overridden (a scheduler callback or a monitor with a
        writer says ``True``).
        """
        return False

    def on_train_begin(self, loop: Loop) -> None:
        """Called once before the first step."""

    def on_train_end(self, loop: Loop) -> None:
        """Called once after the last step."""

    def on_epoch_begin(self, loop: Loop, epoch: int) -> None:
        """Called before the first step of each epoch."""

    def on_epoch_end(self, loop: Loop, epoch: int, metrics: Mapping[str, Any]) -> None:
        """Called after the last step (and evaluation) of each epoch."""

    def on_step_begin(self, loop: Loop, step: int) -> None:
        """Called before train step ``step`` (counted from 0 over the whole run)."""

    def on_step_end(self, loop: Loop, step: int, metrics: Mapping[str, Any]) -> None:
        """Called after train step ``step`` with the metrics it returned (device arrays)."""

    def on_eval_begin(self, loop: Loop) -> None:
        """Called before an evaluation."""

    def hyperparams_ahead(self, loop: Loop, start: int, steps: int) -> list[tuple[Any, np.ndarray]]:
        """The injected hyperparameters this callback writes, for train steps ahead.

        A loop that runs train steps ``start`` to ``start + steps - 1`` in one dispatch asks
        before it (``start`` may lie ahead of ``loop.step``, while the hooks of an earlier
        dispatch have yet to run). A callback that writes injected hyperparameters in its
        step hooks (as an [`LRSchedulerCallback`][flax_cyclic.LRSchedulerCallback] does)
        returns the values those steps will apply, computed without moving its own state:
        its hooks still run for every step afterwards, and then see in the optimizer the
        values their step applied. The default writes nothing.

        The loop checks the values before the dispatch, as ``set_hyperparams`` checks a value:
        exactly ``steps`` of them in one dimension (a NumPy array, or a list, tuple or JAX
        array, converted), each finite, non-negative and held by the hyperparameter's dtype
        (float16 turns 1e-9 into 0: refused). A callback should return them in that dtype,
        e.g. ``np.full(steps, value, variable.get_raw_value().dtype)``.

        Returns:
            ``(variable, values)`` pairs: an injected hyperparameter's ``nnx.Variable`` and
                its ``steps`` values, value ``i`` applied by step ``start + i``.

        Raises:
            TypeError: (raised by the loop) For values that are not real numbers.
            ValueError: (raised by the loop) For other than ``steps`` values in one dimension,
                or a value ``set_hyperparams`` refuses; the message names the callback's
                ``state_key`` and the hyperparameter.
        """
        return []

    def rider(self, loop: Loop) -> Any:
        """State this callback keeps on the device and updates after every update, or ``None``.

        A rider is an ``nnx.Module`` with a method ``take(model, flag)``: pure NNX code run
        after each update with the flag [`rides_ahead`][flax_cyclic.Callback.rides_ahead]
        planned for that step (``0``: nothing to do), e.g. the running average of
        [`WeightAveraging`][flax_cyclic.WeightAveraging]. The
        [`Trainer`][flax_cyclic.Trainer] runs it inside its compiled step (within a dispatch
        of several steps too), or, for a module with ``sparse = True`` (it acts at few steps),
        as a compiled call of its own after each update it acts on (a dispatch ending there);
        it places the rider's state like the model's and saves it in every checkpoint (restored
        in place on resume; ``checkpointed = False`` on the module: not saved); a hand-written
        loop's
        [`CallbackList`][flax_cyclic.CallbackList] does not run it (``loop.runs_riders`` is
        ``False``), so the callback runs it in ``on_step_end``. Asked once per ``fit``, before
        the resume; return the same module each time. The default keeps none.
        """
        return None

    def rides_ahead(self, loop: Loop, start: int, steps: int) -> np.ndarray:
        """What the rider does at train steps ``start`` to ``start + steps - 1``: one flag each.

        Asked before those steps run (one step, or a dispatch of several, whose ``start`` may
        lie ahead of ``loop.step``), without moving the callback's state. Only for a callback
        with a [`rider`][flax_cyclic.Callback.rider]; the default: nothing at any step.

        Returns:
            ``steps`` integers (``0``: nothing), flag ``i`` given to the rider after the update
                of step ``start + i``.
        """
        return np.zeros(steps, np.int32)

    def evaluated_beside(self, loop: Loop) -> dict[str, Any]:
        """Models the [`Trainer`][flax_cyclic.Trainer] evaluates beside the loop's, by name.

        Each is evaluated with the same ``eval_step`` and batches, in evaluation mode; its
        metrics join the evaluation's as ``'<name>/<metric>'`` (e.g. ``avg/accuracy`` for
        [`WeightAveraging`][flax_cyclic.WeightAveraging]), written as ``eval/<name>/<metric>``.
        Asked before every evaluation; the default: none.
        """
        return {}

    def on_eval_end(self, loop: Loop, metrics: Mapping[str, Any]) -> None:
        """Called after an evaluation with its metrics."""

    def on_exception(self, loop: Loop, exception: BaseException) -> None:
        """Called when the loop raises; the exception propagates afterwards."""

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state to checkpoint; empty for stateless callbacks."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restores the state made by [`state_dict`][flax_cyclic.Callback.state_dict]."""


class CallbackList:
    """Drives a list of callbacks with one call per hook; the ``loop`` the callbacks see.

    A hand-written loop creates one with its model and optimizer and calls its hooks:

        callbacks = CallbackList([LRSchedulerCallback(scheduler)], model=model, optimizer=optimizer)
        callbacks.on_train_begin()
        for epoch in range(num_epochs):
            callbacks.on_epoch_begin(epoch)
            for batch in data:
                callbacks.on_step_begin()
                metrics = train_step(model, optimizer, batch)
                callbacks.on_step_end(metrics)
            callbacks.on_epoch_end()
        callbacks.on_train_end()

    The step and epoch hooks refuse to run before ``on_train_begin``: a callback that was never
    started would train with placeholder values.

    A callback that wants training to end (e.g. [`EarlyStopping`][flax_cyclic.EarlyStopping])
    sets ``stop_training = True``; a hand-written loop checks it after each step and
    evaluation (``if callbacks.stop_training: break``), as the
    [`Trainer`][flax_cyclic.Trainer] does. ``stopped_by`` then holds the ``state_key`` of the
    callback that set it (the Trainer saves it: a stopped run stays complete while that
    callback is in it).

    Args:
        callbacks: The callbacks, called in this order.
        model: The ``nnx.Module`` being trained.
        optimizer: Its ``nnx.Optimizer``.
        step: The train step the loop starts at (steps completed before it), e.g. when it
            continues an earlier run. A callback may also set it in ``on_train_begin``: an
            [`LRSchedulerCallback`][flax_cyclic.LRSchedulerCallback] whose scheduler was built
            with ``last_epoch=N`` starts a loop at 0 at step ``N``.

    Raises:
        TypeError: If an element is not a [`Callback`][flax_cyclic.Callback], or ``optimizer``
            is not an ``nnx.Optimizer``.
        ValueError: If two callbacks share a ``state_key``, or ``step`` is negative.
    """

    def __init__(
        self,
        callbacks: Iterable[Callback] = (),
        *,
        model: Any = None,
        optimizer: Any = None,
        step: int = 0,
    ) -> None:
        self.callbacks = list(callbacks)
        for i, callback in enumerate(self.callbacks):
            if not isinstance(callback, Callback):
                raise TypeError(
                    f"CallbackList: callbacks[{i}] is a {type(callback).__name__}, not a "
                    f"flax_cyclic.Callback; {_what_instead(callback)}"
                )
        keys = [callback.state_key for callback in self.callbacks]
        duplicates = sorted({key for key in keys if keys.count(key) > 1})
        if duplicates:
            raise ValueError(
                f"CallbackList: callbacks share the state_key {duplicates}; give each a "
                "distinct state_key so their checkpointed states do not collide."
            )
        check_optimizer("CallbackList", optimizer, allow_none=True)
        self._model = model
        self._optimizer = optimizer
        self.step = _checks.integer(
            "CallbackList",
            "step",
            step,
            minimum=0,
            maximum=None,
            hint="The number of train steps completed before this loop, e.g. 0.",
        )
        self.epoch = 0
        self.total_steps: int | None = None  # planned train steps, when known
        self.stop_training = False  # set by a callback to end the run after this step
        self.stopped_by: str | None = None  # the state_key of the callback that set it
        self.steps_ahead = 0  # updates made beyond the step whose hooks run (see Callback)
        self.planners: dict[int, str] = {}  # by variable id: who planned it (hyperparams_ahead)
        self.runs_riders = False  # whether the loop runs the callbacks' riders (Callback.rider)
        self._hooks: dict[str, tuple[list[Callback], int, list[Callback]]] = {}
        self._began = False

    @property
    def model(self) -> Any:
        """The model being trained, up to date with every step run so far."""
        self._bring_up_to_date()
        return self._model

    @model.setter
    def model(self, model: Any) -> None:
        self._model = model

    @property
    def optimizer(self) -> Any:
        """Its ``nnx.Optimizer``, up to date with every step run so far."""
        self._bring_up_to_date()
        return self._optimizer

    @optimizer.setter
    def optimizer(self, optimizer: Any) -> None:
        check_optimizer("CallbackList", optimizer, allow_none=True)
        self._optimizer = optimizer

    @property
    def optimizer_object(self) -> Any:
        """The optimizer object itself, without bringing its training state up to date.

        For a callback that only needs to know *which* optimizer the loop trains (an identity
        check at every step) or that writes injected hyperparameters, which a loop reads
        before every update: reading it costs nothing, where ``optimizer`` may first copy the
        training state back into the NNX objects.
        """
        return self._optimizer

    def _bring_up_to_date(self) -> None:
        """Puts the training state back into the NNX objects, for a loop that keeps it apart.

        A no-op here; the Trainer's loop, which trains on split state, overrides it.
        """

    def _each(self, hook: str, args: tuple[Any, ...], *, attribute_stop: bool = True) -> None:
        """Calls ``hook`` on every callback in order; notes which one asked to stop.

        A callback that does not override the hook (the base class's no-op) is passed over.
        """
        guarded = self._guards_hooks
        for callback in self._overriding(hook):
            if guarded:
                self._call(callback, hook, args)
            else:
                getattr(callback, hook)(self, *args)
            if attribute_stop and self.stop_training and self.stopped_by is None:
                self.stopped_by = callback.state_key

    def _overriding(self, hook: str) -> list[Callback]:
        """The callbacks whose ``hook`` does something: those that override the no-op."""
        callbacks = self.callbacks
        cached = self._hooks.get(hook)
        if cached is None or cached[0] is not callbacks or cached[1] != len(callbacks):
            base = getattr(Callback, hook)
            # The bound method's function: an override in the class or on the instance shows.
            doing = [c for c in callbacks if getattr(getattr(c, hook), "__func__", 0) is not base]
            cached = self._hooks[hook] = (callbacks, len(callbacks), doing)
        return cached[2]

    @property
    def _guards_hooks(self) -> bool:
        """Whether each hook is called through ``_call``: a loop that guards its state wraps it."""
        return False

    def _call(self, callback: Callback, hook: str, args: tuple[Any, ...]) -> None:
        """Calls one callback's hook; a loop that guards its state wraps this call."""
        getattr(callback, hook)(self, *args)

    def on_train_begin(self) -> None:
        """Starts the callbacks' writers at the loop's step, then calls every ``on_train_begin``.

        A callback's ``writer`` with a ``start(step)`` method (the writer of
        [`create_writer`][flax_cyclic.create_writer]) is started once, before any callback
        writes: TensorBoard then shows none of the events earlier runs wrote in the log
        directory at steps after ``step`` (none at all when ``step`` is 0), and all that this
        run's writers wrote, before the start too. A callback that moves the loop's step (an
        [`LRSchedulerCallback`][flax_cyclic.LRSchedulerCallback] whose scheduler stands
        further) moves the writers' start with it.
        """
        self._began = True
        step = self.step
        start_writers(self.callbacks, step)
        self._each("on_train_begin", (), attribute_stop=False)
        if self.step != step:
            start_writers(self.callbacks, self.step)

    def on_train_end(self) -> None:
        """Calls ``on_train_end`` on every callback."""
        self._each("on_train_end", (), attribute_stop=False)

    def on_epoch_begin(self, epoch: int | None = None) -> None:
        """Calls ``on_epoch_begin``; ``epoch`` defaults to the loop's epoch counter."""
        if not self._began:
            raise _not_begun("on_epoch_begin")
        if epoch is not None:
            self.epoch = epoch
        self._each("on_epoch_begin", (self.epoch,), attribute_stop=False)

    def on_epoch_end(self, metrics: Mapping[str, Any] | None = None) -> None:
        """Calls ``on_epoch_end``, then advances the epoch counter."""
        if not self._began:
            raise _not_begun("on_epoch_end")
        self._each("on_epoch_end", (self.epoch, metrics or {}))
        self.epoch += 1

    def on_step_begin(self) -> None:
        """Calls ``on_step_begin`` with the index of the step about to run."""
        if not self._began:
            raise _not_begun("on_step_begin")
        self._each("on_step_begin", (self.step,))

    def on_step_end(self, metrics: Mapping[str, Any] | None = None) -> None:
        """Calls ``on_step_end`` for the step that just ran, then counts it."""
        if not self._began:
            raise _not_begun("on_step_end")
        self._each("on_step_end", (self.step, metrics or {}))
        self.step += 1

    def hyperparams_ahead(self, start: int, steps: int) -> dict[int, np.ndarray]:
        """Every callback's [`Callback.hyperparams_ahead`][flax_cyclic.Callback.hyperparams_ahead].

        ``planners`` then holds, by the ``id`` of each variable planned, the ``state_key`` of
        the callback that planned it.

        Returns:
            The values of train steps ``start`` to ``start + steps - 1``, keyed by the ``id``
                of the variable.

        Raises:
            TypeError: For planned values that are not real numbers.
            ValueError: If two callbacks write the same hyperparameter, or for planned values
                that are not one per step or that ``set_hyperparams`` would refuse.
        """
        planned: dict[int, np.ndarray] = {}
        owners: dict[int, str] = {}
        self.planners = owners
        for callback in self.callbacks:
            for variable, given in callback.hyperparams_ahead(self, start, steps):
                values = check_planned(callback.state_key, variable, given, steps, self._optimizer)
                key = id(variable)
                if key in planned:
                    raise ValueError(
                        f"CallbackList: {owners[key]} and {callback.state_key} both write the "
                        "same injected hyperparameter, so only one of them would be applied. "
                        "Let one callback drive each hyperparameter."
                    )
                planned[key], owners[key] = values, callback.state_key
        return planned

    def riders(self) -> list[tuple[Callback, Any]]:
        """Every callback with a [`rider`][flax_cyclic.Callback.rider], with its rider."""
        found = []
        for callback in self.callbacks:
            rider = callback.rider(self)
            if rider is not None:
                found.append((callback, rider))
        return found

    def rider_states(self) -> dict[str, Any]:
        """The riders by the name a checkpoint keeps them under: ``'rider_<state_key>'``.

        A rider whose ``checkpointed`` attribute is ``False`` is left out.

        The extra state that [`Checkpointer.save`][flax_cyclic.Checkpointer.save] writes
        beside the model and ``restore`` puts back in place.
        """
        return {
            f"rider_{callback.state_key}": rider
            for callback, rider in self.riders()
            if getattr(rider, "checkpointed", True)
        }

    def evaluated_beside(self) -> dict[str, Any]:
        """Every callback's [`Callback.evaluated_beside`][flax_cyclic.Callback.evaluated_beside].

        Raises:
            ValueError: If two callbacks name a model alike.
        """
        models: dict[str, Any] = {}
        for callback in self._overriding("evaluated_beside"):
            for name, model in callback.evaluated_beside(self).items():
                if name in models:
                    raise ValueError(
                        f"CallbackList: two callbacks evaluate a model named {name!r} beside the "
                        "loop's; give them distinct names so their metrics do not collide."
                    )
                models[name] = model
        return models

    def on_eval_begin(self) -> None:
        """Calls ``on_eval_begin`` on every callback."""
        self._each("on_eval_begin", (), attribute_stop=False)

    def on_eval_end(self, metrics: Mapping[str, Any]) -> None:
        """Calls ``on_eval_end`` on every callback."""
        self._each("on_eval_end", (metrics,))

    def on_exception(self, exception: BaseException) -> None:
        """Calls ``on_exception`` on every callback."""
        for callback in self.callbacks:
            callback.on_exception(self, exception)  # unguarded: the loop is failing already

    def state_dict(self) -> dict[str, dict[str, Any]]:
        """Every callback's state, keyed by its ``state_key``."""
        return {callback.state_key: callback.state_dict() for callback in self.callbacks}

    def load_state_dict(self, states: Mapping[str, Mapping[str, Any]]) -> None:
        """Restores [`state_dict`][flax_cyclic.CallbackList.state_dict]'s output, per callback.

        A stateless callback (empty ``state_dict()``) needs no saved state, so a run can be
        resumed with, say, a progress bar or a metrics logger added or removed. A saved state
        that no callback claims is reported in the log, unless it is empty.

        Raises:
            ValueError: If the state of a stateful callback is missing.
        """
        states = _with_legacy_keys(self.callbacks, states)
        missing = [
            c.state_key for c in self.callbacks if c.state_key not in states and c.state_dict()
        ]
        if missing:
            raise ValueError(
                f"CallbackList.load_state_dict: no saved state for the callbacks {missing}; "
                f"the saved states are for {sorted(states)}."
            )
        # An empty saved state (a progress bar's, a logger's between writes) holds nothing to
        # lose: a stateless callback may be left out of the resumed run.
        claimed = {c.state_key for c in self.callbacks}
        unclaimed = sorted(key for key, state in states.items() if key not in claimed and state)
        if unclaimed:
            logger.warning("Saved callback states not restored (no such callback): %s", unclaimed)
        for callback in self.callbacks:
            if callback.state_key in states:
                callback.load_state_dict(states[callback.state_key])


class Monitored(NamedTuple):
    """A metric a callback watches, named as it is logged: ``'eval/<name>'`` or ``'train/<name>'``.

    ``eval/<name>`` is read at each evaluation (``on_eval_end``); ``train/<name>`` at each epoch
    end, as the mean over the epoch's train steps (``on_epoch_end``).
    """

    source: str  # "eval" or "train"
    name: str

    @classmethod
    def parse(cls, owner: str, monitor: Any) -> Monitored:
        """``monitor`` as a ``Monitored``; a clear error for anything else."""
        source, _, name = monitor.partition("/") if isinstance(monitor, str) else ("", "", "")
        if source not in ("eval", "train") or not name:
            raise ValueError(
                f"{owner}: `monitor` must name a logged metric as 'eval/<name>' (read at each "
                f"evaluation) or 'train/<name>' (the epoch's train mean), got monitor="
                f"{monitor!r}; e.g. monitor='eval/loss'."
            )
        return cls(source, name)

    def __str__(self) -> str:
        return f"{self.source}/{self.name}"

    def value(self, owner: str, metrics: Mapping[str, Any]) -> float:
        """The watched metric's value in one hook's ``metrics``, as a Python float."""
        if self.name not in metrics:
            names = [f"{self.source}/{name}" for name in metrics if name not in ("step", "epoch")]
            raise KeyError(
                f"{owner}: monitor={str(self)!r}, but the "
                f"{'evaluation' if self.source == 'eval' else 'epoch'} reported {sorted(names)}; "
                "monitor one of those."
            )
        return float(metrics[self.name])


def _with_legacy_keys(
    callbacks: list[Callback], states: Mapping[str, Mapping[str, Any]]
) -> Mapping[str, Mapping[str, Any]]:
    """``states``, with a state saved under a callback's class name handed to its callback.

    Releases up to 0.2 keyed every state by the class name (e.g. ``'EarlyStopping'``); a
    callback whose key now says more (``'EarlyStopping[eval/loss]'``) gets that state when it
    is the only callback of its class and has none under its own key.
    """
    renamed = dict(states)
    own_keys = {c.state_key for c in callbacks}
    for callback in callbacks:
        legacy = type(callback).__name__
        alone = sum(type(c).__name__ == legacy for c in callbacks) == 1
        if alone and callback.state_key not in states and legacy in set(states) - own_keys:
            renamed[callback.state_key] = renamed.pop(legacy)
    return renamed


def start_writers(callbacks: Iterable[Callback], step: int) -> None:
    """Calls ``start(step)`` once on each writer of ``callbacks`` that has the method.

    Several callbacks may share one writer, or wrap it (the method's owner counts).
    """
    started: set[int] = set()
    for callback in callbacks:
        writer = getattr(callback, "writer", None)
        start = getattr(writer, "start", None)
        owner = id(getattr(start, "__self__", writer))
        if callable(start) and owner not in started:
            started.add(owner)
            start(step)


def flush_writer(writer: MetricWriter | None) -> None:
    """Flushes ``writer`` if it can be flushed: ``write_scalars`` is all a writer must have."""
    flush = getattr(writer, "flush", None)
    if callable(flush):
        flush()


def _what_instead(obj: Any) -> str:
    """Where an object given as a callback belongs, for the error that refuses it."""
    if callable(getattr(obj, "should_save", None)) and callable(getattr(obj, "restore", None)):
        return "a Checkpointer is passed as Trainer(checkpointer=...), not among the callbacks."
    if callable(getattr(obj, "write_scalars", None)):
        return (
            "a writer is passed as Trainer(writer=...) (or to a callback, e.g. "
            "LRSchedulerCallback(..., writer=...)), not among the callbacks."
        )
    return "subclass Callback to make one."


def _not_begun(hook: str) -> RuntimeError:
    return RuntimeError(
        f"CallbackList.{hook}: called before on_train_begin. Call callbacks.on_train_begin() "
        "once before the first epoch and step, so that every callback (e.g. the LR callback "
        "writing the first learning rate) is set up."
    )


def loop_optimizer(owner: str, loop: Loop) -> nnx.Optimizer:
    """The loop's ``nnx.Optimizer``; a clear error where there is none yet, or another object."""
    optimizer = getattr(loop, "optimizer", None)
    if optimizer is None:
        raise ValueError(
            f"{owner}: the loop has no optimizer, got loop.optimizer=None. Pass optimizer= to "
            "the CallbackList (or use the Trainer) before training begins."
        )
    check_optimizer(owner, optimizer)
    return optimizer


def check_optimizer(owner: str, optimizer: Any, *, allow_none: bool = False) -> None:
    """Raises a ``TypeError`` unless ``optimizer`` is an ``nnx.Optimizer``."""
    if (optimizer is None and allow_none) or isinstance(optimizer, nnx.Optimizer):
        return
    hint = ""
    if callable(getattr(optimizer, "init", None)) and callable(getattr(optimizer, "update", None)):
        hint = (
            " It looks like an optax transformation: wrap it, e.g. "
            "nnx.Optimizer(model, optax.inject_hyperparams(optax.sgd)(learning_rate=0.0), "
            "wrt=nnx.Param)."
        )
    raise TypeError(
        f"{owner}: `optimizer` must be an nnx.Optimizer, got {type(optimizer).__name__}.{hint}"
    )
