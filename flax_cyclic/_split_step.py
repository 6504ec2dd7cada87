"""A train step run as one ``jax.jit`` function of split, donated state.

``nnx.jit`` walks the model and optimizer graphs on every call, which costs more than the step
itself for small models. [`SplitStep`] splits them once, keeps their arrays in a list while
training runs, and calls a ``jax.jit`` function of that list: the arrays are donated, so the
step updates them in place and no second copy of the parameters and optimizer state is alive
across it. The NNX objects get the arrays back only when something reads them
([`SplitStep.sync`]: the Trainer calls it for evaluation, checkpoints, callbacks that read
``loop.model`` / ``loop.optimizer``, and the end of ``fit``).

The hyperparameters injected by ``optax.inject_hyperparams`` are the exception: they are read
from the optimizer before every step and not donated, so an LR callback that writes them in
place between steps (``InjectedHyperparams.write``) is heard without a sync.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx

from flax_cyclic._hyperparams import find_injected_hyperparams
from flax_cyclic._metrics import local_copy

__all__ = ["SplitStep"]


class SplitStep:
    """``train_step(model, optimizer, batch) -> metrics`` as a pure function of split state.

    Args:
        train_step: The step, written against the NNX objects (as for ``nnx.jit``).
        model: The ``nnx.Module``.
        optimizer: Its ``nnx.Optimizer``.
        rngs: An ``nnx.Rngs`` the step draws from, passed as ``train_step(..., rngs=rngs)``
            and carried with the state (its counters advance); ``None``: not passed.
        donate: Donate the carried state to the step (``False``: for comparison only).
        unroll: ``jax.lax.scan``'s ``unroll`` for ``run``: steps inlined per loop iteration
            (``True``: all of them, no loop).
    """

    def __init__(
        self,
        train_step: Callable[..., Any],
        model: Any,
        optimizer: Any,
        *,
        rngs: Any = None,
        donate: bool = True,
        unroll: int | bool = 1,
    ) -> None:
        self._train_step = train_step
        self._donate = donate
        self._unroll = unroll
        self._base = (model, optimizer) if rngs is None else (model, optimizer, rngs)
        self._objects: tuple[Any, ...] = self._base
        self._names = ("model", "optimizer", "rngs")[: len(self._base)]
        self._graphdef: Any = None
        self._variables: list[Any] = []
        self._leaves: list[Any] | None = None  # the carried arrays, while the objects are stale
        self.refresh()

    def refresh(self) -> None:
        """Splits the objects again if their structure changed since the last split.

        Call it while the objects are up to date (after ``sync``): the step calls it itself
        before it takes the arrays from the objects again, so that whatever a hook left there
        (a Variable or submodule replaced, an ``opt_state`` assigned) is what trains next. The
        compiled functions are kept where the new structure traces the same (the same graph,
        Variable types and metadata): replacing Variables by equal ones compiles nothing.
        """
        assert self._leaves is None, "refresh() needs the objects up to date: sync() first"
        graphdef, flat = nnx.graph.flatten(self._objects)
        unchanged = len(flat) == len(self._variables) and all(
            variable is known for (_, variable), known in zip(flat, self._variables, strict=True)
        )
        if unchanged and graphdef == self._graphdef:
            return
        injected = find_injected_hyperparams(self._objects[1].opt_state)
        inputs = {id(value) for state in injected for value in state.values.values()}
        variables = [variable for _, variable in flat]
        is_input = [id(variable) in inputs for variable in variables]
        same_trace = (
            graphdef == self._graphdef
            and is_input == getattr(self, "_is_input", None)
            and all(
                type(new) is type(old) and new.get_metadata() == old.get_metadata()
                for new, old in zip(variables, self._variables, strict=True)
            )
        )
        self._graphdef = graphdef
        self._paths = [path for path, _ in flat]
        self._variables = variables
        self._is_input = is_input
        self._carried, self._inputs = self._divided(self._variables)
        self._taken: list[Any] = []  # what the carried variables held when the list was taken
        self._given: list[Any] = []  # the inputs of the last step, and what it returned for them
        self._returned: list[Any] = []
        self._last: int | None = None  # where _returned holds several steps (run): the last
        if same_trace:
            return
        donated = 0 if self._donate else ()
        self._compiled = jax.jit(self._pure_step, donate_argnums=donated)
        self._between: dict[int, Any] = {}  # take_between's compiled calls, by rider
        self._scanned = jax.jit(self._pure_scan, donate_argnums=donated)

    def ride(self, riders: Sequence[Any]) -> None:
        """Has the step update ``riders`` after every update, as the flags of each step say.

        A rider is an ``nnx.Module`` with a method ``take(model, flag)`` (pure NNX code, e.g.
        ``AveragedWeights``): its state is carried and
        donated with the model's, its ``take`` runs after each update with that step's flag
        (``0``: the rider should do nothing), and ``sync`` writes its state back. Call it while
        the objects are up to date; ``()`` removes them.
        """
        assert self._leaves is None, "ride() needs the objects up to date: sync() first"
        self._objects = (*self._base, *riders)
        self._names = (*self._names[: len(self._base)], *(type(r).__name__ for r in riders))
        self.refresh()

    @property
    def riders(self) -> int:
        """How many riders the step updates (the flags each step takes, one per rider)."""
        return len(self._objects) - len(self._base)

    def prepare(self) -> list[Any]:
        """The carried arrays; after a sync, taken from the objects again (split again first).

        The steps call it; call it before ``injected()`` where a sync may have come between.
        """
        if self._leaves is None:
            self.refresh()
            self._leaves = self._taken = [variable.get_raw_value() for variable in self._carried]
        return self._leaves

    def __call__(self, batch: Any, flags: Sequence[Any] = ()) -> Any:
        """Runs one step on ``batch`` (``flags``: one per rider); returns its metrics."""
        leaves = self._leaves if self._leaves is not None else self.prepare()
        given = [variable.get_raw_value() for variable in self._inputs]
        self._leaves, returned, metrics = self._compiled(leaves, given, list(flags), batch)
        self._returned, self._given, self._last = _as_returned(returned, given), given, None
        return metrics

    def injected(self) -> list[Any]:
        """The injected-hyperparameter variables, in the order ``run`` takes their values.

        The list the step holds (read it, do not change it): asked for around every hook.
        """
        return self._inputs

    def run(
        self, batches: Any, values: list[np.ndarray], length: int, flags: Sequence[Any] = ()
    ) -> tuple[Any, list[Any], list[Any]]:
        """Runs the first ``length`` of ``k`` stacked steps in one dispatch: a scan over ``k``.

        One program for every ``length``: the steps from ``length`` on (batches and values
        padded to ``k``) leave the carried state as they found it, so a shorter dispatch (an
        epoch's end) compiles nothing more. Returns without waiting for the device.

        Args:
            batches: ``k`` batches stacked on a new leading axis.
            values: For each variable of ``injected()``, ``k`` values, one per step: the
                value is written into the injected state before that step's update.
            length: The steps that count, from the first.
            flags: For each rider, ``k`` flags, one per step (padded steps take nothing).

        Returns:
            The ``k`` steps' metrics, stacked; for each injected variable the ``k`` values its
            updates applied (read back from inside the scan), of which the first ``length``
            count; and for each, the value step ``length - 1`` applied: device arrays.
        """
        leaves = self.prepare()
        self._given = [variable.get_raw_value() for variable in self._inputs]
        self._leaves, applied, metrics, last = self._scanned(
            leaves, values, list(flags), batches, np.int32(length)
        )
        self._returned = applied  # stacked: sync takes the last step's values
        self._last = length - 1
        return metrics, applied, last

    def run_each(
        self, batches: list[Any], values: list[np.ndarray], flags: Sequence[Any] = ()
    ) -> list[tuple[list[Any], Any]]:
        """Runs steps one compiled call each: the program of ``__call__``, no scan.

        Returns without waiting for the device.

        Args:
            batches: One batch per step.
            values: As for ``run``, one value per step.
            flags: As for ``run``, one flag per step.

        Returns:
            For each step, the values its update applied (one per injected variable: a device
            array, or the value given where the update passed it through) and its metrics.
        """
        self.prepare()
        self._given = [variable.get_raw_value() for variable in self._inputs]
        steps = []
        for i, batch in enumerate(batches):
            given = [value[i] for value in values]
            step_flags = [flag[i] for flag in flags]
            self._leaves, returned, metrics = self._compiled(self._leaves, given, step_flags, batch)
            steps.append((_as_returned(returned, given), metrics))
        self._returned, self._last = steps[-1][0], None
        return steps

    def traced(self, batches: Any, values: list[np.ndarray]) -> jax.stages.Traced:
        """The scan of ``run`` traced for these arguments: its jaxpr, ``.lower().compile()``."""
        flags = [np.zeros(len(jax.tree.leaves(batches)[0]), np.int32)] * self.riders
        return self._scanned.trace(self.prepare(), values, flags, batches, np.int32(0))

    def traced_step(self, batch: Any, values: list[Any]) -> jax.stages.Traced:
        """The step of ``run_each`` traced for one batch and its injected ``values``."""
        flags = [np.int32(0)] * self.riders
        return self._compiled.trace(self.prepare(), values, flags, batch)

    def show(self, values: Mapping[int, Any]) -> None:
        """Puts values into injected variables (by index in ``injected()``), for hooks to read."""
        for index, value in values.items():
            self._inputs[index].set_raw_value(value)

    @property
    def carried_bytes(self) -> int:
        """Bytes of the state the step carries and donates (all but the hyperparameters)."""
        leaves = self._leaves
        if leaves is None:
            leaves = [variable.get_raw_value() for variable in self._carried]
        return sum(getattr(leaf, "nbytes", 0) for leaf in jax.tree.leaves(leaves))

    def lower(self, batch: Any) -> jax.stages.Lowered:
        """The step lowered for ``batch``: ``.compile().memory_analysis()`` gives its buffers."""
        carried = self._leaves
        if carried is None:
            carried = [variable.get_raw_value() for variable in self._carried]
        given = [variable.get_raw_value() for variable in self._inputs]
        return self._compiled.lower(carried, given, [np.int32(0)] * self.riders, batch)

    def sync(self, *, check: bool = True) -> None:
        """Writes the arrays of the last step back into the NNX objects.

        An injected hyperparameter written since the last step (by an LR callback) keeps its
        new value; every other variable gets the step's result.

        Args:
            check: Refuse variables replaced behind the step's back (see Raises); ``False``
                on the way out of an error, where the step's results are put back regardless.

        Raises:
            RuntimeError: If a carried variable was replaced since the list was taken, through
                a reference held outside the loop: the write would be lost.
        """
        if self._leaves is None:
            return
        if check:
            replaced = [
                self._named(path)
                for path, variable, taken in zip(
                    self._carried_paths(), self._carried, self._taken, strict=True
                )
                if variable.get_raw_value() is not taken
            ]
            if replaced:
                raise RuntimeError(
                    f"Trainer: {replaced} of the model or optimizer were assigned during fit "
                    "through a reference the loop does not see, and training would overwrite "
                    "them. Inside fit, read and write them through the hooks' loop "
                    "(loop.model, loop.optimizer), which brings them up to date first."
                )
        for variable, value in zip(self._carried, self._leaves, strict=True):
            variable.set_raw_value(value)
        for variable, given, returned in zip(
            self._inputs, self._given, self._returned, strict=False
        ):
            if variable.get_raw_value() is given:  # not written since the step
                # A dispatch's last value, taken on the host: no slicing program per length.
                last = returned
                if self._last is not None:
                    last = np.asarray(local_copy(returned))[self._last, ...]
                variable.set_raw_value(last)
        self._leaves = None
        self._given, self._returned, self._taken = [], [], []
        self._last = None

    def snapshot(self, *, walk: bool = True) -> list[tuple[Any, Any, Any]]:
        """Every variable of the objects (up to date) with its path and the array it holds.

        Args:
            walk: Walk the objects' graph; ``False`` takes the variables of the last split
                (a few microseconds, where nothing can have changed the structure since).
        """
        pairs: list[tuple[Any, Any]] = list(zip(self._paths, self._variables, strict=True))
        if walk:
            pairs = list(nnx.graph.flatten(self._objects)[1])
        return [(path, variable, variable.get_raw_value()) for path, variable in pairs]

    def changed_since(self, snapshot: list[tuple[Any, Any, Any]]) -> list[str]:
        """The variables changed since ``snapshot``, in words: written, replaced, added, removed.

        Identity, not equality: a value written in place is a new array, a replaced Variable
        or submodule a new object; nothing is read from the device.
        """
        now = self.snapshot()
        before = {id(variable): (path, value) for path, variable, value in snapshot}
        after = {id(variable) for _, variable, _ in now}
        changed = {
            self._named(path)
            for path, variable, value in now
            if id(variable) not in before or before[id(variable)][1] is not value
        }
        changed |= {self._named(path) for key, (path, _) in before.items() if key not in after}
        return sorted(changed)

    def _named(self, path: tuple[Any, ...]) -> str:
        """A variable's path in words: ``(0, 'out', 'bias')`` -> ``'model.out.bias'``."""
        return ".".join([self._names[path[0]], *map(str, path[1:])])

    def _carried_paths(self) -> list[Any]:
        return self._divided(self._paths)[0]

    def _pure(
        self, carried: list[Any], inputs: list[Any], flags: list[Any], batch: Any
    ) -> tuple[list[Any], list[Any], Any]:
        objects = self._merged(carried, inputs)
        if len(self._base) == 3:
            metrics = self._train_step(objects[0], objects[1], batch, rngs=objects[2])
        else:
            metrics = self._train_step(objects[0], objects[1], batch)
        for rider, flag in zip(objects[len(self._base) :], flags, strict=True):
            rider.take(objects[0], flag)
        _, flat = nnx.graph.flatten(objects)
        paths = [path for path, _ in flat]
        if paths != self._paths:
            added = sorted(map(self._named, set(map(tuple, paths)) - set(map(tuple, self._paths))))
            removed = sorted(
                map(self._named, set(map(tuple, self._paths)) - set(map(tuple, paths)))
            )
            raise ValueError(
                "Trainer: train_step changed the structure of the model or optimizer (added "
                f"{added}, removed {removed}); a train step may change values, not add or remove "
                "variables. Create every variable before training."
            )
        new = [variable.get_raw_value() for _, variable in flat]
        carried_out, inputs_out = self._divided(new)
        return carried_out, inputs_out, metrics

    def _pure_step(
        self, carried: list[Any], inputs: list[Any], flags: list[Any], batch: Any
    ) -> tuple[list[Any], list[Any], Any]:
        """``_pure`` for one step per call: an input the step left as given is not returned.

        A hyperparameter injected as a number comes out of the update as the very value that
        went in (the same tracer): returning it would make XLA copy a parameter it may not
        alias into a new output buffer, which cost a quarter of a tiny MLP's step on a CPU
        (63.6 vs 48.1 us). ``None`` stands for it; ``_as_returned`` puts the given value back
        on the host. One that the update computes (injected as a schedule) is returned.
        """
        carried_out, inputs_out, metrics = self._pure(carried, inputs, flags, batch)
        passed = [
            None if out is given else out for out, given in zip(inputs_out, inputs, strict=True)
        ]
        return carried_out, passed, metrics

    def _merged(self, carried: list[Any], inputs: list[Any]) -> Any:
        """The objects (traced) holding ``carried`` and ``inputs`` (one list each)."""
        carried_values, input_values = iter(carried), iter(inputs)
        values = [next(input_values if is_input else carried_values) for is_input in self._is_input]
        state = nnx.from_flat_state(
            [
                (path, variable.replace(value))
                for path, variable, value in zip(self._paths, self._variables, values, strict=True)
            ]
        )
        return nnx.merge(self._graphdef, state)

    def take_between(self, rider: Any, flag: Any) -> None:
        """Runs ``rider.take(model, flag)`` on the state the last step left: a call of its own.

        For a rider that acts at few steps (it never enters the step): queued on the device
        behind the step, before the next one. The rider's state is donated and updated in place;
        the model's is only read.
        """
        carried = self.prepare()
        given = [variable.get_raw_value() for variable in self._inputs]
        graphdef, state = nnx.split(rider)
        compiled = self._between.get(id(rider))
        if compiled is None:

            def pure(state: Any, carried: list[Any], inputs: list[Any], flag: Any) -> Any:
                merged = nnx.merge(graphdef, state)
                merged.take(self._merged(carried, inputs)[0], flag)
                return nnx.state(merged)

            compiled = self._between[id(rider)] = jax.jit(pure, donate_argnums=0)
        nnx.update(rider, compiled(state, carried, given, np.int32(flag)))

    def _pure_scan(
        self,
        carried: list[Any],
        values: list[Any],
        flags: list[Any],
        batches: Any,
        length: jax.Array,
    ) -> tuple[list[Any], list[Any], Any, list[Any]]:
        def one(carried: list[Any], step: tuple[Any, ...]) -> tuple[list[Any], Any]:
            index, values, flags, batch = step
            new, applied, metrics = self._pure(carried, values, flags, batch)
            # A padded step keeps the state it was given: where(True, new, old) is `new`,
            # bit for bit, so the steps that count compute what one step per call does.
            live = index < length
            kept = [jax.lax.select(live, a, b) for a, b in zip(new, carried, strict=True)]
            return kept, (applied, metrics)

        steps = np.arange(len(jax.tree.leaves(batches)[0]), dtype=np.int32)
        carried, (applied, metrics) = jax.lax.scan(
            one, carried, (steps, values, flags, batches), unroll=self._unroll
        )
        # The last step's values as device scalars, for the hooks to find in the variables
        # (no transfer back to the device at every dispatch).
        last = [jax.lax.dynamic_index_in_dim(a, length - 1, keepdims=False) for a in applied]
        return carried, applied, metrics, last

    def _divided(self, values: list[Any]) -> tuple[list[Any], list[Any]]:
        """``values`` (one per variable) parted into the carried ones and the inputs."""
        pairs = list(zip(values, self._is_input, strict=True))
        return [v for v, is_input in pairs if not is_input], [
            v for v, is_input in pairs if is_input
        ]


def _as_returned(returned: list[Any], given: list[Any]) -> list[Any]:
    """What a step returned for each input, its given value where it passed it through."""
    return [value if out is None else out for out, value in zip(returned, given, strict=True)]
