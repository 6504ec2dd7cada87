"""Training steps in dispatches: one step, or ``k`` stacked batches as one compiled scan.

With one step per dispatch the hooks run around each step. With ``k``, a dispatch trains while
the hooks of the one before it run (``replay``), each step's hooks with that step's metrics and
applied hyperparameters, ``loop.steps_ahead`` saying how far the state is ahead of them.

How a dispatch's steps run (``unroll_dispatch``) is chosen at the first dispatch of each fit,
from what the step holds and where it runs, and compiled then, before any step trains
(``Program``): a scan over ``k`` (rolled, or unrolled), one program for every length (a
shorter dispatch masks its padded steps), or, for convolutions on a CPU, ``k`` calls of the
one-step program. The choice and the compilation's seconds go to the log.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping
from typing import Any, Literal, NamedTuple, cast

import jax
import numpy as np

from flax_cyclic import _checks, _logging, _modes
from flax_cyclic._loop.data import shapes
from flax_cyclic._loop.placement import Placement
from flax_cyclic._loop.resume import RunCheckpoints
from flax_cyclic._loop.riding import Riders
from flax_cyclic._loop.run import END, Run
from flax_cyclic._loop.state import TrainerLoop
from flax_cyclic._metrics import check_scalar_metrics, local_copy
from flax_cyclic._split_step import SplitStep

__all__ = ["Dispatch", "Dispatcher", "Program", "check_metrics", "dispatching"]

logger = _logging.logger

Unroll = int | bool | Literal["auto", "per_step"]
"""``Trainer(unroll_dispatch=...)``, checked: see ``dispatching``."""

CONVOLUTION = "conv_general_dilated"
# XLA:CPU (jax 0.10) runs the gradients of a convolution inside a scan's loop as plain loops
# instead of its convolution kernels: 7-15 times slower. Unrolled, the Flax NNX tutorial CNN ran
# no faster than one step per call (0.8-1.0x) and compiled 3-4 times longer (docs/benchmarks.md,
# "How a dispatch runs its steps").
SLOW_IN_A_LOOP = {"cpu": CONVOLUTION}


class Dispatch(NamedTuple):
    """Steps started in one dispatch, whose hooks have yet to run."""

    length: int
    metrics: Mapping[str, Any]  # stacked (or a list: one array per step), on the device
    applied: list[Any]  # per injected variable, the value each step applied (stacked or a list)
    last: list[Any]  # per injected variable, the value the last step applied (as it returned it)


class Program(NamedTuple):
    """How the dispatches of a fit run their steps, as chosen at its first dispatch."""

    per_step: bool  # k calls of the one-step program (else one scan over k)
    unroll: int | bool  # the scan's unroll (given, or 1 for "auto")
    why: str  # the choice, in words
    seconds: float  # tracing and compiling it, before the first step

    def describe(self, steps: int) -> str:
        """The lifecycle line: what runs a dispatch, why, and what compiling it cost."""
        if self.per_step:
            how = "one compiled call per step (no scan)"
        elif self.unroll is True or self.unroll >= steps:
            how = "one scan, unrolled"
        elif self.unroll is False or self.unroll == 1:
            how = "one scan, rolled"
        else:
            how = f"one scan, {self.unroll} steps inlined per iteration"
        return (
            f"{steps} steps per dispatch as {how}: {self.why}. Compiled before the first "
            f"step in {self.seconds:.1f} s; a shorter dispatch (an epoch's end, num_steps) "
            "compiles nothing more."
        )


class Dispatcher:
    """Runs the train steps of a run, ``steps`` per dispatch, and their step hooks.

    Args:
        loop: The Trainer's callback list.
        split_step: The compiled step over split, donated state.
        placement: Where batches go (a mesh, or none).
        checkpoints: The run's checkpoints (each step's metrics are noted until a save).
        steps: Train steps per dispatch.
        unroll: How a dispatch runs its steps (``Trainer(unroll_dispatch=...)``, checked).
        has_rngs: Whether the Trainer passes ``rngs`` to the step (for a clearer error).
    """

    def __init__(
        self,
        loop: TrainerLoop,
        split_step: SplitStep,
        placement: Placement,
        checkpoints: RunCheckpoints,
        *,
        steps: int,
        unroll: Unroll = "auto",
        has_rngs: bool,
    ) -> None:
        self._loop = loop
        self._split_step = split_step
        self._placement = placement
        self._checkpoints = checkpoints
        self.steps = steps
        self._has_rngs = has_rngs
        self.unroll = unroll
        self.at_boundary = True  # the hooks before the next dispatch ran with nothing ahead
        self.metrics_checked = False  # whether the step's metrics were checked this run
        self.program: Program | None = None  # chosen and compiled at the fit's first dispatch
        self.riders = Riders(loop, split_step, steps)

    def start(self) -> None:
        """A new fit: nothing ahead, metrics unchecked, the program chosen again.

        The callbacks' riders ([`Callback.rider`][flax_cyclic.Callback.rider]) are asked for
        again: those inside the step given to it, the others run between dispatches.
        """
        self.at_boundary, self.metrics_checked, self.program = True, False, None
        self.riders.start()

    def train_one(self, batch: Any) -> Mapping[str, Any]:
        """Runs the hooks and the compiled train step for one batch; returns its metrics."""
        callbacks = self._loop
        callbacks.on_step_begin()
        flags = self.riders.step_flags(callbacks.step) if self.riders.inside else ()
        try:  # ``_clearer_errors``, without a context manager's cost at every step
            metrics = self._split_step(self._placement.shard(batch), flags)
            self.riders.take(callbacks.step, 1)
        except ValueError as error:
            clearer = self._clearer(error)
            if clearer is not None:
                raise clearer from error
            raise
        if not self.metrics_checked:  # a compiled step's metrics keep their shapes
            check_metrics(metrics)
            self.metrics_checked = True
        self._checkpoints.trained(callbacks.step, metrics)
        callbacks.on_step_end(metrics)
        return metrics

    @contextlib.contextmanager
    def _clearer_errors(self) -> Iterator[None]:
        """Turns the error of a model that needs the Trainer's ``rngs`` into one saying so."""
        try:
            yield
        except ValueError as error:
            clearer = self._clearer(error)
            if clearer is not None:
                raise clearer from error
            raise

    def _clearer(self, error: ValueError) -> ValueError | None:
        """The error saying that the model needs the Trainer's ``rngs``, where it does."""
        return _modes.needs_rngs("Trainer.fit", error) if not self._has_rngs else None

    def gather(self, run: Run, start: int, first: Any, batches: Iterator[Any]) -> list[Any]:
        """The batches of the dispatch from step ``start``: to the next multiple of ``k``.

        Fewer at the epoch's end, at ``num_steps``, and before a batch of another shape (a
        smaller last batch): that one is kept in ``run.held`` for the next dispatch.
        """
        length = self.steps - start % self.steps
        if run.num_steps is not None:
            length = min(length, run.num_steps - start)
        length = self.riders.end(start, length)  # a rider between dispatches acts at its end
        dispatch, first_shapes = [first], shapes(first)
        while len(dispatch) < length:
            batch = next(batches, END)
            if batch is END:
                break
            if shapes(batch) != first_shapes:
                run.held = batch
                break
            dispatch.append(batch)
        return dispatch

    def launch(self, dispatch: list[Any], start: int) -> Dispatch:
        """Starts the steps of ``dispatch`` as one dispatch; returns without waiting.

        The hyperparameters a callback writes between steps are asked for in advance
        (``hyperparams_ahead``); the others keep their values. A scan runs ``k`` steps, the
        ones beyond ``dispatch`` padded (the last batch and values again) and masked.
        """
        length = len(dispatch)
        self._split_step.prepare()  # what the hooks left in the objects, split again
        values = [
            value
            if length == self.steps
            else np.concatenate([value, value[-1:].repeat(self.steps - length)])
            for value in self._values(start, length)
        ]
        flags = self.riders.flags(start, length)
        if self.program is not None and self.program.per_step:
            with self._clearer_errors():
                launched = self._launch_each(dispatch, values, flags)
            self.riders.take(start, length)
            return launched
        padded = dispatch + dispatch[-1:] * (self.steps - length)
        stacked = self._placement.shard(_stacked(padded), axis=1)
        with self._clearer_errors():
            if self.program is None:
                self.program = self._choose(dispatch[0], stacked, values)
                if self.program.per_step:
                    launched = self._launch_each(dispatch, values, flags)
                    self.riders.take(start, length)
                    return launched
            metrics, applied, last = self._split_step.run(stacked, values, length, flags)
        self.riders.take(start, length)
        check_metrics(metrics, stacked=True)
        return Dispatch(length, metrics, applied, last)

    def _values(self, start: int, length: int) -> list[np.ndarray]:
        """Each injected variable's values for the dispatch's steps: planned, or kept."""
        planned = self._loop.hyperparams_ahead(start, length)
        if self.at_boundary:  # the hooks ran with nothing ahead: their writes must hold
            self._loop.enter_dispatch(planned)
            self.at_boundary = False
        variables = self._split_step.injected()
        unknown = set(planned) - {id(variable) for variable in variables}
        if unknown:
            planners = sorted({self._loop.planners[key] for key in unknown})
            raise ValueError(
                f"Trainer.fit: {', '.join(planners)} gave values ahead (hyperparams_ahead) for "
                "a variable that is not an injected hyperparameter of the optimizer the loop "
                "trains, so they would never be applied. Return the optimizer's own injected "
                "variables (loop.optimizer.opt_state.hyperparams[...]), found anew after an "
                "opt_state is assigned."
            )
        return [
            np.asarray(planned[id(variable)])
            if id(variable) in planned
            else np.broadcast_to(np.asarray(local_copy(variable.get_raw_value())), (length,))
            for variable in variables
        ]

    def _launch_each(
        self, dispatch: list[Any], values: list[np.ndarray], flags: list[np.ndarray]
    ) -> Dispatch:
        """Starts the steps of ``dispatch`` one compiled call each."""
        steps = self._split_step.run_each(
            [self._placement.shard(batch) for batch in dispatch], values, flags
        )
        check_metrics(steps[0][1])
        metrics = {name: [step[name] for _, step in steps] for name in steps[0][1]}
        applied = [[returned[j] for returned, _ in steps] for j in range(len(values))]
        return Dispatch(len(dispatch), metrics, applied, list(steps[-1][0]))

    def _choose(self, first: Any, stacked: Any, values: list[np.ndarray]) -> Program:
        """Chooses how the fit's dispatches run (``unroll_dispatch``), compiles it, logs it."""
        began = time.perf_counter()
        traced = self._split_step.traced(stacked, values)
        platform = _platform(self._split_step.prepare())
        slow = SLOW_IN_A_LOOP.get(platform)
        slow_here = slow is not None and holds(traced.jaxpr, slow)
        unroll = self.unroll
        if unroll == "auto" and slow_here:
            why = (
                f"unroll_dispatch='auto' and the step holds {slow} on a {platform.upper()}, "
                "which XLA runs many times slower inside a scan's loop and, unrolled, no "
                "faster than one step per call (give unroll_dispatch=True to unroll anyway)"
            )
            unroll = "per_step"
        elif unroll == "auto":
            why = "unroll_dispatch='auto', and the step holds nothing that runs slower in a loop"
            unroll = 1
        else:
            why = f"unroll_dispatch={unroll!r} as given"
        if unroll == "per_step":
            given = [value[0] for value in values]
            self._split_step.traced_step(self._placement.shard(first), given).lower().compile()
            program = Program(True, 1, why, time.perf_counter() - began)
        else:
            traced.lower().compile()
            program = Program(False, unroll, why, time.perf_counter() - began)
        logger.info("%s", program.describe(self.steps))
        if slow_here and not program.per_step and program.unroll is not True:
            logger.warning(
                "Trainer: the step holds %s, which XLA:%s runs many times slower inside a "
                "scan's loop: give unroll_dispatch='auto' (the default) or True.",
                slow,
                platform.upper(),
            )
        return program

    def replay(self, run: Run, dispatch: Dispatch, *, ahead: int) -> None:
        """Runs the step hooks of a dispatch that trained, in order, with each step's metrics.

        A hook that reads ``loop.optimizer`` finds in its injected hyperparameters what its
        step applied (as read back from the scan); ``loop.steps_ahead`` counts the updates
        the state has made beyond the step (``ahead`` more: a dispatch training meanwhile),
        and a hook that changes the state while it is ahead is refused (``TrainerLoop``). A
        SIGTERM is polled at the dispatch's end.
        """
        callbacks, last = self._loop, dispatch.length - 1
        callbacks.forget_held()  # the Trainer may have synced the objects since the last hooks
        metrics, applied = jax.tree.map(_on_host, (dispatch.metrics, dispatch.applied))
        applied = [np.asarray(value) for value in applied]  # one array per step: stacked
        steps = [{name: value[i] for name, value in metrics.items()} for i in range(last + 1)]
        try:
            for i, step_metrics in enumerate(steps):
                # Ahead of what step i's hooks see with one step per dispatch: before update i
                # at on_step_begin (one update more), after it at on_step_end.
                callbacks.steps_ahead = last - i + 1 + ahead
                if i < last:
                    callbacks.applied = (applied, i)  # put in place if a hook reads them
                else:  # the last step: put in place now, before its hooks write the next
                    callbacks.applied = None
                    shown = {j: value[i, ...] for j, value in enumerate(applied)}
                    callbacks.show(shown, on_device=dispatch.last)
                callbacks.on_step_begin()
                callbacks.steps_ahead -= 1
                self._checkpoints.trained(callbacks.step, step_metrics)
                callbacks.on_step_end(step_metrics)
        finally:
            callbacks.steps_ahead, callbacks.applied = 0, None
            callbacks.forget_held()
        self.at_boundary = ahead == 0
        run.epoch_metrics.extend(steps)
        run.poll_preemption(callbacks.step)


def _stacked(batches: list[Any]) -> Any:
    """Batches of one structure stacked leaf by leaf on a new leading axis (NumPy arrays)."""
    first = batches[0]
    if type(first) is tuple and all(type(leaf) is np.ndarray for leaf in first):
        # The common batch, a tuple of arrays (gather saw the others' structure equal to it):
        # no tree walk per batch.
        return tuple(np.stack(leaves) for leaves in zip(*batches, strict=True))
    return jax.tree.map(lambda *leaves: np.stack(leaves), *batches)


def _on_host(leaf: Any) -> Any:
    """``jax.device_get`` of one leaf: an array read with ``np.asarray``, as ``mean_metrics`` does.

    For the few arrays of a dispatch that has trained, about a sixth of ``jax.device_get``'s
    time (which first starts a copy of each and walks the tree twice).
    """
    if isinstance(leaf, jax.Array) and not jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.extended):
        return np.asarray(leaf)
    return jax.device_get(leaf)


def dispatching(steps_per_dispatch: Any, unroll_dispatch: Any) -> tuple[int, Unroll]:
    """``steps_per_dispatch`` and ``unroll_dispatch``, checked."""
    steps = _checks.integer(
        "Trainer",
        "steps_per_dispatch",
        steps_per_dispatch,
        minimum=1,
        hint="Train steps per dispatch, e.g. 1 (the default) or 32.",
    )
    if isinstance(unroll_dispatch, bool):
        return steps, unroll_dispatch
    if isinstance(unroll_dispatch, str) and unroll_dispatch in ("auto", "per_step"):
        return steps, cast(Unroll, unroll_dispatch)
    fix = (
        "Give 'auto' (the default: chosen from the step and the device), True (a scan "
        "unrolled), False or 1 (a scan, rolled), n > 1 (n steps inlined per iteration) or "
        "'per_step' (one compiled call per step)."
    )
    if isinstance(unroll_dispatch, str) or not isinstance(unroll_dispatch, int | np.integer):
        raise TypeError(
            "Trainer: `unroll_dispatch` must be 'auto', 'per_step', a bool or a positive "
            f"integer, got unroll_dispatch={unroll_dispatch!r}. {fix}"
        )
    if unroll_dispatch < 1:
        raise ValueError(
            "Trainer: `unroll_dispatch` must be 'auto', 'per_step', a bool or a positive "
            f"integer, got unroll_dispatch={unroll_dispatch!r}. {fix}"
        )
    return steps, int(unroll_dispatch)


def holds(jaxpr: Any, primitive: str) -> bool:
    """Whether ``jaxpr`` (or a jaxpr inside it: a call, a scan, a branch) holds ``primitive``."""
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)  # a ClosedJaxpr's own
    for equation in jaxpr.eqns:
        if equation.primitive.name == primitive:
            return True
        for param in equation.params.values():
            inner = param if isinstance(param, list | tuple) else [param]
            for candidate in inner:
                candidate = getattr(candidate, "jaxpr", candidate)  # a ClosedJaxpr's own
                if hasattr(candidate, "eqns") and holds(candidate, primitive):
                    return True
    return False


def _platform(leaves: list[Any]) -> str:
    """The platform the carried state lives on (``'cpu'``, ``'gpu'``, ``'tpu'``)."""
    for leaf in jax.tree.leaves(leaves):
        devices = getattr(leaf, "devices", None)
        if devices is not None:
            return str(next(iter(devices())).platform)
    return jax.default_backend()


def check_metrics(metrics: Any, *, stacked: bool = False) -> None:
    """Refuses train metrics that are not a mapping of names to scalars (shapes only: no sync).

    ``stacked``: the metrics of a dispatch's steps, stacked on a first axis.
    """
    if not isinstance(metrics, Mapping):
        raise TypeError(
            "Trainer.fit: train_step must return a mapping of metric names "
            f"to scalars, e.g. {{'loss': loss}}; it returned {type(metrics).__name__}."
        )
    check_scalar_metrics("Trainer.fit", metrics, stacked=stacked)
