"""Find, read and write the hyperparameters that ``optax.inject_hyperparams`` keeps in a state.

Any optax state: an ``nnx.Optimizer``'s ``opt_state`` (whose leaves are ``nnx.Variable``
objects), a Linen ``TrainState.opt_state`` or a plain pytree. ``optax.tree_utils`` finds the
injected states and replaces their values; this module adds what those do not: parameter groups
matched by ``optax.multi_transform`` label, ``momentum`` resolved per state (``'momentum'`` or
Adam's ``'b1'``), values kept at their dtype and placement, and clear errors.

[`set_hyperparams`][flax_cyclic.set_hyperparams] is the pure function; for a live
``nnx.Optimizer``, [`InjectedHyperparams.write`] is its in-place twin (the LR callback's
per-step path), sharing the lookup, the matching and the conversion.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

__all__ = ["MOMENTUM_NAMES", "InjectedHyperparams", "find_injected_hyperparams", "set_hyperparams"]

#: Where a transformation injects its momentum: SGD-like ones as 'momentum', Adam-like as 'b1'.
MOMENTUM_NAMES = ("momentum", "b1")

_INJECTED_STATES = ("InjectHyperparamsState", "InjectStatefulHyperparamsState")


@dataclasses.dataclass(frozen=True)
class InjectedHyperparams:
    """One ``inject_hyperparams`` state found inside an optimizer state.

    Attributes:
        label: The ``optax.multi_transform`` / ``optax.partition`` label of the parameter group
            this state belongs to, or ``None`` outside a multi-transform.
        path: Where the state's ``hyperparams`` sit in the optimizer state (an
            ``optax.tree_utils`` key path).
        values: Hyperparameter name -> its value: the ``nnx.Variable`` holding it inside an
            ``nnx.Optimizer``, else the array.
        dtypes: Hyperparameter name -> the dtype its value keeps.
        scheduled: The names injected as a schedule: optax recomputes them inside every
            update from its own count, so a value written there is overwritten.
    """

    label: str | None
    path: tuple[Any, ...]
    values: Mapping[str, Any]
    dtypes: Mapping[str, np.dtype]
    scheduled: frozenset[str] = frozenset()

    @property
    def where(self) -> str:
        """Where this state sits, in words: its group label, else its path in the state."""
        path = jax.tree_util.keystr(self.path[:-1])
        if self.label is not None:
            return f"group {self.label!r} ({path})"
        return path or "the root of the optimizer state"

    def momentum_name(self) -> str | None:
        """The injected momentum's name (the first of ``MOMENTUM_NAMES`` present), if any."""
        return next((name for name in MOMENTUM_NAMES if name in self.values), None)

    def write(self, name: str, value: float, owner: str = "set_hyperparams") -> None:
        """Replaces hyperparameter ``name`` in place: the twin of ``set_hyperparams``.

        For a live ``nnx.Optimizer``, whose values are ``nnx.Variable`` objects. The new value
        is a host (NumPy) scalar of the old dtype: replacing the variable's value costs a few
        microseconds and leaves the compiled step's signature unchanged (no retrace), while
        ``variable[...] = jax_array`` would dispatch a scatter on the device every step. A
        host value is uncommitted, so it also fits state replicated over a device mesh.
        ``set_raw_value`` skips ``set_value``'s defensive tree copy (half the cost); the
        optimizer's hyperparameter variables carry no value hooks to skip. Written on the host,
        outside any trace, it also skips NNX's check of the trace it is written from
        ([`write_on_host`]: microseconds at every step of a Trainer).

        Raises:
            ValueError: As [`held_value`] does: the value would not be applied as given.
        """
        held = held_value(owner, self, name, value)
        write_on_host(self.values[name], held)


def write_on_host(variable: nnx.Variable, value: Any) -> None:
    """Replaces ``variable``'s value from the host, outside every trace.

    What ``variable.set_raw_value(value)`` does, without NNX's check that no other trace
    writes the variable: on the host that check cannot fail, and it reads JAX's trace state
    at every call (``set_raw_value(..., _unsafe_bypass_check=True)`` still runs it once, in
    ``Variable.__setattr__``). Where the installed Flax keeps a value otherwise than in the
    ``_raw_value`` slot (probed at import), the checked path runs.
    """
    if _STORES_RAW_VALUE:
        object.__setattr__(variable, "_raw_value", value)
    else:
        variable.set_raw_value(value)


def _stores_raw_value() -> bool:
    """Whether a Variable's value lives in its ``_raw_value`` slot, set as NNX sets it."""
    if "_raw_value" not in getattr(nnx.Variable, "__slots__", ()):
        return False
    probe, value = nnx.Variable(np.float32(0.0)), np.float32(1.0)
    object.__setattr__(probe, "_raw_value", value)
    return probe.get_raw_value() is value and probe.get_value() == value


_STORES_RAW_VALUE = _stores_raw_value()


class Target(NamedTuple):
    """One injected hyperparameter to write: the value of one group of one kind."""

    kind: str  # what is written, e.g. "lr", "momentum" or a hyperparameter's name
    group: int  # the index of the value among the per-group values
    state: InjectedHyperparams
    name: str  # the injected hyperparameter's name, e.g. "learning_rate" or "b1"


def find_injected_hyperparams(opt_state: Any) -> list[InjectedHyperparams]:
    """Returns every ``inject_hyperparams`` state in ``opt_state``, in a fixed order.

    The order is the order of the optimizer state's leaves: the order of a ``chain``, and
    within ``multi_transform`` the sorted group labels (JAX flattens dicts by sorted key).

    Args:
        opt_state: An optimizer state: ``nnx.Optimizer(...).opt_state``, a Linen
            ``TrainState.opt_state``, or what ``tx.init(params)`` returned.

    Returns:
        One entry per injected state; empty if the optimizer has none.
    """

    def fields(name: str) -> list[tuple[Any, Any]]:
        return optax.tree_utils.tree_get_all_with_path(
            opt_state,
            name,
            lambda path, _: getattr(path[-1], "tuple_name", None) in _INJECTED_STATES,
        )

    # Each injected state's schedules keep a state of their own, beside its hyperparams.
    schedules = {
        tuple(path[:-1]): frozenset(states) for path, states in fields("hyperparams_states")
    }
    return [
        InjectedHyperparams(
            label=_group_label(path),
            path=tuple(path),
            values=dict(values),
            dtypes={name: _dtype(value) for name, value in values.items()},
            scheduled=schedules.get(tuple(path[:-1]), frozenset()),
        )
        for path, values in fields("hyperparams")
    ]


def _dtype(value: Any) -> np.dtype:
    raw = value.get_raw_value() if isinstance(value, nnx.Variable) else value
    return np.dtype(getattr(raw, "dtype", None) or np.asarray(raw).dtype)


def _group_label(path: Sequence[Any]) -> str | None:
    # multi_transform keeps its groups in PartitionState.inner_states[label].
    label = None
    for key, following in itertools.pairwise(path):
        if getattr(key, "name", None) == "inner_states" and hasattr(following, "key"):
            label = str(following.key)
    return label


def match_groups(
    owner: str, injected: list[InjectedHyperparams], count: int, groups: Sequence[str] | None
) -> list[list[InjectedHyperparams]]:
    """For each of ``count`` per-group values, the injected states it goes to.

    One value goes to every state (every labelled one, with ``groups``); ``count`` values go
    one per label of ``groups`` or, without labels, one per state in the state's order.
    """
    if groups is not None:
        labels: dict[str, list[InjectedHyperparams]] = {}
        for state in injected:
            if state.label is not None:  # every state of a group: a chain has several
                labels.setdefault(state.label, []).append(state)
        unknown = [label for label in groups if label not in labels]
        if unknown:
            raise ValueError(
                f"{owner}: no multi_transform group is labelled {unknown}; the optimizer's "
                f"labels are {sorted(labels)}."
            )
        chosen = [labels[label] for label in groups]
        return [[s for states in chosen for s in states]] if count == 1 else chosen
    if count == 1:
        return [injected]
    if count != len(injected):
        described = ", ".join(state.label or state.where for state in injected)
        raise ValueError(
            f"{owner}: {count} values, one per parameter group, but the optimizer has "
            f"{len(injected)} injected hyperparameter states ({described}). Give one value per "
            "state, or name the groups by their multi_transform labels (groups=[...])."
        )
    return [[state] for state in injected]


def resolve_targets(
    per_group: list[list[InjectedHyperparams]], names: Mapping[str, str]
) -> tuple[list[Target], list[str]]:
    """The hyperparameters to write, and what is missing, one entry per state lacking names.

    ``names`` maps each kind of value to the injected name it goes to; the name ``'auto'``
    (for momentum) is resolved per state: ``'momentum'`` (SGD) or ``'b1'`` (Adam). A value is
    written into the states of its group that inject it (a ``chain`` of an optimizer and
    ``add_decayed_weights`` injects the learning rate once); it is missing only where no
    state of the group injects it, and then reported for each of them.
    """
    targets: list[Target] = []
    problems: list[str] = []
    for group, states in enumerate(per_group):
        found: dict[str, list[Target]] = {kind: [] for kind in names}
        for state in states:
            for kind, name in names.items():
                resolved = state.momentum_name() if name == "auto" else name
                if resolved is not None and resolved in state.values:
                    found[kind].append(Target(kind, group, state, resolved))
        targets.extend(target for kind in names for target in found[kind])
        for state in states:
            absent = [
                f"no {name!r}"
                if name != "auto"
                else f"neither {' nor '.join(map(repr, MOMENTUM_NAMES))}"
                for kind, name in names.items()
                if not found[kind]
            ]
            if absent:
                problems.append(
                    f"{state.where} has {' and '.join(absent)} (it injects {sorted(state.values)})"
                )
    return targets, problems


def refuse_integer(owner: str, targets: Sequence[Target]) -> None:
    """Refuses hyperparameters injected as integers: every value written there is truncated.

    ``inject_hyperparams(optax.sgd)(learning_rate=0)`` keeps an integer learning rate, so
    0.05 is applied as 0 and the weights never move while logs show the schedule.

    Raises:
        ValueError: Naming each integer hyperparameter, its dtype and the fix.
    """
    integers = [t for t in targets if not _is_float(t.state.dtypes[t.name])]
    if integers:
        described = "; ".join(
            f"{t.name!r} at {t.state.where} is {t.state.dtypes[t.name]}" for t in integers
        )
        example = integers[0].name
        raise ValueError(
            f"{owner}: {described}: an integer hyperparameter truncates every value written "
            f"into it (0.05 becomes 0), so the optimizer would not apply the values given. "
            f"Build the optimizer with a float, e.g. optax.inject_hyperparams(optax.sgd)"
            f"({example}=0.0) rather than {example}=0."
        )


def held_value(owner: str, state: InjectedHyperparams, name: str, value: Any) -> np.ndarray:
    """``value`` as hyperparameter ``name`` of ``state`` holds it: a host array of its dtype.

    This cast value is the one the optimizer applies: with float16 or bfloat16, it is what
    must be reported and logged, not the float64 it was made from.

    Raises:
        ValueError: For an integer hyperparameter (see [`refuse_integer`]), a value that is not
            finite or is negative, or a nonzero one that the dtype turns into 0 or infinity
            (1e-9 in float16, 1e300 in float32).
    """
    dtype = state.dtypes[name]
    if type(value) is float and dtype in _WIDE and (value == 0.0 or _SAFE[0] < value < _SAFE[1]):
        return np.array(value, dtype)  # a scheduler's value: nothing to check (~1 us)
    if not _is_float(dtype):
        refuse_integer(owner, [Target(name, 0, state, name)])
    with np.errstate(over="ignore", under="ignore"):  # checked below, with the value named
        held = np.asarray(value, dtype=dtype)
    number = float(value) if np.ndim(value) == 0 else math.nan
    if number == 0 or (0 < number < math.inf and 0 < float(held) < math.inf):
        return held  # the common case, checked in a few microseconds
    given = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(given) & (given >= 0)):
        raise ValueError(
            f"{owner}: {name}={_shown(value)} at {state.where} is not a finite number >= 0 "
            f"(the hyperparameter is {dtype}); a scheduler or loop gave a value that no "
            "optimizer should apply. Give a finite, non-negative value."
        )
    lost = (given != 0) & ((held == 0) | ~np.isfinite(held))
    if np.any(lost):
        raise ValueError(
            f"{owner}: {name}={_shown(value)} at {state.where} becomes "
            f"{_shown(held.astype(np.float64))} in {dtype}, the hyperparameter's dtype: the "
            "optimizer would apply that instead. Inject the hyperparameter as float32 (e.g. "
            f"optax.inject_hyperparams(optax.sgd)({name}=0.0)), or keep the value within "
            f"{dtype}'s range (its smallest nonzero value is "
            f"{float(_smallest(dtype)):.3g})."
        )
    return held


# float32 and float64 hold every value within _SAFE exactly enough: nonzero and finite.
_WIDE = (np.dtype(np.float32), np.dtype(np.float64))
_SAFE = (1e-30, 1e30)


def _is_float(dtype: np.dtype) -> bool:
    """Whether ``dtype`` is a floating dtype: NumPy's, or bfloat16 (``ml_dtypes``)."""
    return dtype.kind == "f" or bool(jnp.issubdtype(dtype, jnp.floating))


def _shown(value: Any) -> str:
    return f"{float(value):.7g}" if np.ndim(value) == 0 else str(np.asarray(value).tolist())


def _smallest(dtype: np.dtype) -> Any:
    return jnp.finfo(dtype).smallest_subnormal


def set_hyperparams(
    opt_state: Any,
    *,
    learning_rate: Any = None,
    momentum: Any = None,
    groups: Sequence[str] | None = None,
    **hyperparams: Any,
) -> Any:
    """Returns ``opt_state`` with new values for hyperparameters injected by optax.

    Works on any optimizer state holding ``optax.inject_hyperparams`` states: an
    ``nnx.Optimizer``'s ``opt_state``, a Linen ``TrainState.opt_state``, or a plain optax
    state. The input is not changed. Each new value keeps the old one's dtype, shape and
    placement (a device array stays on its devices, with its sharding; a host value stays on
    the host) and is never weakly typed, so a compiled step that takes the state does not
    retrace. No device scatter is involved: the values are replaced, not updated in place.
    Inside ``jax.jit``, traced values work too, and that is the cheap place to call it in a
    training loop: there it walks the state once, when the step is traced, while on the host
    it walks it at every call (a fraction of a millisecond for a small state).

    A value is a number (for every injected state, or every labelled one with ``groups``) or
    a sequence with one number per group: per label of ``groups``, else per injected state in
    the state's order (a ``chain``'s order, ``multi_transform`` labels sorted). A sequence of
    one number is that number, so a scheduler's ``get_last_lr()`` can be passed as it is.

    Args:
        opt_state: The optimizer state.
        learning_rate: The new ``learning_rate``, or ``None`` to leave it.
        momentum: The new momentum, written where each state injects it: ``'momentum'``
            (SGD-like) or ``'b1'`` (Adam-like). ``None`` leaves it.
        groups: ``multi_transform`` labels: write only these groups, one value per label.
        **hyperparams: Other injected hyperparameters by name, e.g. ``weight_decay=1e-4``.

    Returns:
        A new optimizer state of the same structure.

    Raises:
        ValueError: If there is nothing to set, no injected state, an unknown label, a
            sequence of the wrong length, a state that does not inject a given name, or one
            that injects it as a schedule (optax would overwrite the value at every update).
        TypeError: If a value is not a real number, or does not fit the old value's shape.

    Examples:
        >>> import jax.numpy as jnp
        >>> import optax
        >>> from flax_cyclic import set_hyperparams
        >>> tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1, momentum=0.9)
        >>> opt_state = tx.init({"w": jnp.zeros(3)})
        >>> opt_state = set_hyperparams(opt_state, learning_rate=0.025, momentum=0.85)
        >>> opt_state.hyperparams["learning_rate"]
        Array(0.025, dtype=float32)
    """
    owner = "set_hyperparams"
    values = {"learning_rate": learning_rate, "momentum": momentum, **hyperparams}
    values = {kind: value for kind, value in values.items() if value is not None}
    if not values:
        raise ValueError(
            f"{owner}: nothing to set: give learning_rate=..., momentum=... or another "
            "injected hyperparameter by name, e.g. weight_decay=1e-4."
        )
    injected = find_injected_hyperparams(opt_state)
    if not injected:
        raise ValueError(
            f"{owner}: the optimizer state has no optax.inject_hyperparams state to set. Build "
            "the transformation with it, e.g. optax.inject_hyperparams(optax.sgd)"
            "(learning_rate=0.1, momentum=0.9)."
        )
    per_kind = {kind: _per_group(owner, kind, value, groups) for kind, value in values.items()}
    targets: list[Target] = []
    problems: list[str] = []
    for kind, per_group in per_kind.items():
        matched = match_groups(owner, injected, len(per_group), groups)
        found, missing = resolve_targets(matched, {kind: "auto" if kind == "momentum" else kind})
        targets += found
        problems += missing
    scheduled = [target for target in targets if target.name in target.state.scheduled]
    if scheduled:
        names = "; ".join(f"{t.name!r} at {t.state.where}" for t in scheduled)
        raise ValueError(
            f"{owner}: {names} is injected as a schedule: optax recomputes it inside every "
            "update, so a value set here would be overwritten and never used. Inject a number "
            "instead, e.g. optax.inject_hyperparams(optax.sgd)(learning_rate=0.0), and set it "
            "before each update."
        )
    refuse_integer(owner, targets)
    if problems:
        raise ValueError(
            f"{owner}: the optimizer state does not inject every value given: "
            + "; ".join(problems)
            + ". Inject it, e.g. optax.inject_hyperparams(optax.sgd)(learning_rate=0.1, "
            "momentum=0.9), or leave the value out."
        )
    new: dict[tuple[Any, ...], dict[str, Any]] = {}
    for target in targets:
        state = target.state
        replaced = new.setdefault(state.path, dict(state.values))
        value = per_kind[target.kind][target.group]
        replaced[target.name] = _converted(owner, target, state.values[target.name], value)
    for path, replaced in new.items():
        opt_state = optax.tree_utils.tree_set(
            opt_state, lambda at, _, path=path: tuple(at) == path, hyperparams=replaced
        )
    return opt_state


def _per_group(owner: str, kind: str, value: Any, groups: Sequence[str] | None) -> list[Any]:
    """``value`` as one value per group: a number is one group."""
    if isinstance(value, (str, bytes, Mapping)):
        raise TypeError(
            f"{owner}: `{kind}` must be a number or a sequence of numbers (one per group), "
            f"got {kind}={value!r} ({type(value).__name__})."
        )
    if not isinstance(value, Sequence):
        return [value]
    values = list(value)
    if not values:
        raise ValueError(
            f"{owner}: `{kind}` is an empty sequence; give a number, or one per group."
        )
    if groups is not None and len(values) not in (1, len(groups)):
        raise ValueError(
            f"{owner}: `{kind}` has {len(values)} values but groups={list(groups)} names "
            f"{len(groups)}; give one value per label, or one number for all."
        )
    return values


def _converted(owner: str, target: Target, old: Any, value: Any) -> Any:
    """``value`` in the form of ``old``: same dtype, shape and placement; never weakly typed."""
    variable = old if isinstance(old, nnx.Variable) else None
    raw = variable.get_raw_value() if variable is not None else old
    dtype = target.state.dtypes[target.name]
    if isinstance(value, jax.core.Tracer) or isinstance(raw, jax.core.Tracer):
        new: Any = jnp.asarray(value, dtype=dtype)
    else:
        new = np.asarray(value)
        if new.dtype.kind not in "iuf" or isinstance(value, bool):
            raise TypeError(
                f"set_hyperparams: `{target.kind}` must be a real number, got "
                f"{target.kind}={value!r} ({type(value).__name__})."
            )
        new = held_value(owner, target.state, target.name, new)
    if np.shape(new) != np.shape(raw):
        raise TypeError(
            f"{owner}: the new {target.name!r} at {target.state.where} has shape "
            f"{np.shape(new)}, but the injected value has shape {np.shape(raw)}; give a value "
            "of that shape (a number for a scalar)."
        )
    if isinstance(raw, jax.Array) and not isinstance(new, jax.core.Tracer):
        new = jax.device_put(new, raw.sharding)
    return variable.replace(new) if variable is not None else new


def accumulation_state(opt_state: Any) -> optax.MultiStepsState | None:
    """The ``optax.MultiSteps`` state wrapping the optimizer, if it accumulates gradients."""
    return opt_state if isinstance(opt_state, optax.MultiStepsState) else None


def nested_accumulation_state(opt_state: Any) -> optax.MultiStepsState | None:
    """The ``optax.MultiSteps`` state anywhere in ``opt_state`` (the root or nested), if any.

    The first one found: the LR callback refuses an optimizer with more than one.
    """
    is_state = lambda x: isinstance(x, optax.MultiStepsState)  # noqa: E731
    found = [x for x in jax.tree_util.tree_leaves(opt_state, is_leaf=is_state) if is_state(x)]
    return found[0] if found else None


def accumulation_counters(opt_state: Any) -> list[tuple[str, Any]]:
    """Every ``optax.MultiSteps`` in ``opt_state``, at the root or nested: (where, its count).

    The count is its ``gradient_step`` (the parameter updates it made): the
    ``nnx.Variable`` inside an ``nnx.Optimizer``, else the array. Nested means e.g.
    ``optax.chain(clip, optax.MultiSteps(...).gradient_transformation())``.
    """
    found = optax.tree_utils.tree_get_all_with_path(
        opt_state,
        "gradient_step",
        lambda path, _: getattr(path[-1], "tuple_name", None) == "MultiStepsState",
    )
    return [
        (jax.tree_util.keystr(tuple(path[:-1])) or "the root of the optimizer state", count)
        for path, count in found
    ]


def accumulation_every_k(tx: Any) -> int | None:
    """The constant ``every_k_schedule`` of the ``optax.MultiSteps`` that built ``tx``.

    ``tx`` is a ``MultiSteps`` or its ``gradient_transformation()`` (whose ``update`` is a
    bound method of it). ``None`` when ``tx`` is neither, or when the number of micro-steps
    is a function of the gradient step that cannot be read as one constant.
    """
    multi_steps = tx if isinstance(tx, optax.MultiSteps) else None
    if multi_steps is None:
        multi_steps = getattr(getattr(tx, "update", None), "__self__", None)
    if not isinstance(multi_steps, optax.MultiSteps):
        return None
    # MultiSteps(opt, k) with an integer k keeps ``lambda step: k``: read k from its closure.
    schedule = getattr(multi_steps, "_every_k_schedule", None)
    cells = getattr(schedule, "__closure__", None) or ()
    constants = [cell.cell_contents for cell in cells]
    if getattr(schedule, "__name__", "") == "<lambda>" and len(constants) == 1:
        (k,) = constants
        if isinstance(k, int) and not isinstance(k, bool) and k >= 1:
            return k
    return None
