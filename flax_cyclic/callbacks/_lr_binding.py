"""The LR callback's hold on an optimizer: which injected hyperparameters its values go to.

[`bind`] finds them in an ``nnx.Optimizer``'s ``opt_state`` (parameter groups matched, momentum
resolved per state, gradient accumulation read) and refuses what could not be written as
given; the [`Binding`] it returns writes the scheduler's values there and knows whether the
optimizer still holds those variables.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import jax
import numpy as np

from flax_cyclic._hyperparams import (
    InjectedHyperparams,
    Target,
    accumulation_counters,
    accumulation_every_k,
    accumulation_state,
    find_injected_hyperparams,
    match_groups,
    refuse_integer,
    resolve_targets,
)
from flax_cyclic.schedulers import LRScheduler


class Binding:
    """The injected hyperparameters of one optimizer state that a scheduler's values go to.

    Attributes:
        optimizer: The ``nnx.Optimizer`` written.
        targets: One entry per hyperparameter written: its kind (``'lr'``, ``'momentum'``),
            scheduler group, injected state and name.
        dtypes: The dtype each (kind, group) value is applied in.
        updates_per_step: Train steps per parameter update (``optax.MultiSteps``' ``k``).
    """

    def __init__(
        self,
        optimizer: Any,
        targets: list[Target],
        dtypes: dict[tuple[str, int], np.dtype],
        updates_per_step: int,
    ) -> None:
        self.optimizer = optimizer
        self.targets = targets
        self.dtypes = dtypes
        self.updates_per_step = updates_per_step
        self._opt_state = optimizer.opt_state  # the container the targets were found in

    def write(self, values: Mapping[str, list[float]], owner: str) -> None:
        """Writes each target's value in place (``InjectedHyperparams.write``)."""
        for target in self.targets:
            target.state.write(target.name, values[target.kind][target.group], owner)

    def cast(self, values: Mapping[str, list[float]]) -> dict[str, list[float]]:
        """``values`` as the optimizer holds them: in each hyperparameter's dtype."""
        return {
            kind: [
                float(np.asarray(value, dtype=self.dtypes[kind, group]))
                for group, value in enumerate(values[kind])
            ]
            for kind in dict.fromkeys(kind for kind, _ in self.dtypes)
        }

    def is_current(self) -> bool:
        """Whether ``optimizer.opt_state`` still holds the variables written (no device read).

        ``nnx.Optimizer.update`` (and ``nnx.jit``) rebuild the containers of ``opt_state``
        around the same variables at every update, so a new container is looked into: the
        targets are found again by their paths, and compared by identity.
        """
        opt_state = self.optimizer.opt_state
        if opt_state is self._opt_state:
            return True
        for target in self.targets:
            held = _at_path(opt_state, target.state.path)
            variable = target.state.values[target.name]
            if not isinstance(held, Mapping) or held.get(target.name) is not variable:
                return False
        self._opt_state = opt_state
        return True


def bind(
    owner: str,
    optimizer: Any,
    scheduler: LRScheduler,
    *,
    learning_rate: str,
    momentum: str | None,
    groups: Sequence[str] | None,
    accumulation_steps: int | None,
) -> Binding:
    """Finds in ``optimizer.opt_state`` the hyperparameters the scheduler's values go to.

    Raises:
        ValueError: If the optimizer injects no hyperparameters, not those the scheduler sets
            (or not per group), injects them as integers or in several dtypes per value, or
            accumulates gradients other than ``accumulation_steps`` says.
    """
    updates_per_step = _resolve_accumulation(owner, optimizer, accumulation_steps)
    injected = find_injected_hyperparams(optimizer.opt_state)
    if not injected:
        raise ValueError(
            f"{owner}: the optimizer has no injected hyperparameters. Build "
            "its transformation with optax.inject_hyperparams, e.g. "
            "optax.inject_hyperparams(optax.sgd)(learning_rate=0.0, momentum=0.9)."
        )
    count = scheduler.num_groups
    if groups is None and count not in (1, len(injected)):
        described = ", ".join(state.label or state.where for state in injected)
        raise ValueError(
            f"{owner}: the scheduler has {count} parameter groups but the "
            f"optimizer has {len(injected)} injected hyperparameter states ({described}). "
            "Give the scheduler one learning rate per group, or pass groups=[labels]."
        )
    per_group = match_groups(owner, injected, count, groups)
    cycles_momentum = momentum is not None and scheduler.cycle_momentum
    targets = _resolve_targets(
        owner, per_group, learning_rate, momentum if cycles_momentum else None
    )
    refuse_integer(owner, targets)
    return Binding(optimizer, targets, _dtype_per_group(owner, targets), updates_per_step)


def rebound(owner: str, binding: Binding, bind_again: Callable[[Any], Binding]) -> Binding:
    """A binding to the optimizer's new ``opt_state`` (``bind_again``: ``bind``'s checks).

    Raises:
        RuntimeError: If the new state accumulates gradients over another number of train
            steps than the one it replaced.
    """
    new = bind_again(binding.optimizer)
    if new.updates_per_step != binding.updates_per_step:
        raise RuntimeError(
            f"{owner}: the optimizer's new opt_state accumulates gradients "
            f"over {new.updates_per_step} train steps per update, the one it replaced over "
            f"{binding.updates_per_step}: the scheduler's position would no longer match "
            "the updates. Keep the optimizer's structure when assigning its opt_state."
        )
    return new


def _resolve_accumulation(owner: str, optimizer: Any, given: int | None) -> int:
    """Train steps per parameter update: 1, or optax.MultiSteps' every_k_schedule."""
    counters = accumulation_counters(optimizer.opt_state)
    if not counters:
        if given not in (None, 1):
            raise ValueError(
                f"{owner}: accumulation_steps={given} but the optimizer is not an "
                "optax.MultiSteps; leave accumulation_steps out (or pass 1)."
            )
        return 1
    if len(counters) > 1:
        raise ValueError(
            f"{owner}: the optimizer has {len(counters)} optax.MultiSteps (at "
            f"{', '.join(where for where, _ in counters)}); their updates cannot be counted "
            "as one. Accumulate gradients with one optax.MultiSteps."
        )
    ((where, _),) = counters
    root = accumulation_state(optimizer.opt_state) is not None
    read = accumulation_every_k(getattr(optimizer, "tx", None)) if root else None
    if given is None and read is None:
        why = (
            "its every_k_schedule cannot be read as one number (a function of the step)"
            if root
            else f"it is nested at {where}, where its every_k_schedule cannot be read"
        )
        raise ValueError(
            f"{owner}: the optimizer accumulates gradients with optax.MultiSteps, and {why}; "
            "pass accumulation_steps=k, the train steps per parameter update, so the "
            "scheduler advances once per update, not per micro-batch."
        )
    if given is not None and read is not None and given != read:
        raise ValueError(
            f"{owner}: accumulation_steps={given} but the optimizer's optax.MultiSteps "
            f"updates every {read} train steps (every_k_schedule={read}): the scheduler "
            f"would run {read / given:g} times too fast. Pass accumulation_steps={read}, or "
            "leave it out to read it from the optimizer."
        )
    return cast(int, given if given is not None else read)


def _resolve_targets(
    owner: str,
    per_group: list[list[InjectedHyperparams]],
    learning_rate: str,
    momentum: str | None,
) -> list[Target]:
    """The hyperparameters to write; ``momentum`` (when cycled) resolved per injected state."""
    names = {"lr": learning_rate}
    if momentum is not None:
        names["momentum"] = momentum
    targets, problems = resolve_targets(per_group, names)
    if problems:
        fix = "Pass the right name (learning_rate=..., momentum=...) or inject it"
        if momentum is not None:
            fix += (
                ", e.g. optax.inject_hyperparams(optax.sgd)(learning_rate=0.0, "
                "momentum=0.9); or pass momentum=None to leave momentum alone"
            )
        raise ValueError(
            f"{owner}: the optimizer does not inject what the scheduler sets"
            f"{' (it cycles momentum)' if momentum is not None else ''}: "
            + "; ".join(problems)
            + f". {fix}."
        )
    return targets


def _dtype_per_group(owner: str, targets: list[Target]) -> dict[tuple[str, int], np.dtype]:
    """The dtype each scheduler value is applied in; one per value, or an error."""
    dtypes: dict[tuple[str, int], set[np.dtype]] = {}
    for target in targets:
        dtypes.setdefault((target.kind, target.group), set()).add(target.state.dtypes[target.name])
    mixed = {key: kinds for key, kinds in dtypes.items() if len(kinds) > 1}
    if mixed:
        (kind, group), kinds = next(iter(mixed.items()))
        raise ValueError(
            f"{owner}: the {kind} of scheduler group {group} goes to "
            f"hyperparameters of dtypes {sorted(map(str, kinds))}, so it would be applied "
            "as different values and only one could be logged. Inject them with one dtype."
        )
    return {key: next(iter(kinds)) for key, kinds in dtypes.items()}


def _at_path(tree: Any, path: Sequence[Any]) -> Any:
    """What sits at key path ``path`` of ``tree`` (``None`` where the path leads nowhere)."""
    try:
        for key in path:
            if isinstance(key, jax.tree_util.DictKey):
                tree = tree[key.key]
            elif isinstance(key, jax.tree_util.SequenceKey):
                tree = tree[key.idx]
            else:  # a named-tuple field (optax's NamedTupleKey) or an attribute
                tree = getattr(tree, key.name)
    except (AttributeError, IndexError, KeyError, TypeError):
        return None
    return tree
