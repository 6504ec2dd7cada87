"""Find, read and write the hyperparameters that ``optax.inject_hyperparams`` keeps in a state.

Inside an ``nnx.Optimizer`` the optax state is a tree of ``nnx.Variable`` leaves, so a
hyperparameter can be replaced in place between updates, without retracing the train step.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import optax
from flax import nnx

__all__ = ["MOMENTUM_NAMES", "InjectedHyperparams", "find_injected_hyperparams"]

#: Where a transformation injects its momentum: SGD-like ones as 'momentum', Adam-like as 'b1'.
MOMENTUM_NAMES = ("momentum", "b1")

_INJECTED_STATES = (optax.InjectHyperparamsState, optax.InjectStatefulHyperparamsState)


@dataclasses.dataclass(frozen=True)
class InjectedHyperparams:
    """One ``inject_hyperparams`` state found inside an optimizer state.

    Attributes:
        label: The ``optax.multi_transform`` / ``optax.partition`` label of the parameter group
            this state belongs to, or ``None`` outside a multi-transform.
        path: Where the state sits in the optimizer state, for messages.
        variables: Hyperparameter name -> the ``nnx.Variable`` holding its value.
    """

    label: str | None
    path: str
    variables: Mapping[str, nnx.Variable]
    dtypes: Mapping[str, np.dtype]

    @property
    def where(self) -> str:
        """Where this state sits, in words: its group label, else its path in the state."""
        if self.label is not None:
            return f"group {self.label!r} ({self.path})"
        return self.path or "the root of the optimizer state"

    def momentum_name(self) -> str | None:
        """The injected momentum's name (the first of ``MOMENTUM_NAMES`` present), if any."""
        return next((name for name in MOMENTUM_NAMES if name in self.variables), None)

    def write(self, name: str, value: float) -> None:
        """Replaces the value of hyperparameter ``name``, keeping its dtype.

        The new value is a host (NumPy) scalar: replacing the variable's value costs a few
        microseconds and leaves the compiled step's signature unchanged (no retrace), while
        ``variable[...] = jax_array`` would dispatch a scatter on the device every step. A
        host value is uncommitted, so it also fits state replicated over a device mesh.
        ``set_raw_value`` skips ``set_value``'s defensive tree copy (half the cost); the
        optimizer's hyperparameter variables carry no value hooks to skip.
        """
        self.variables[name].set_raw_value(np.asarray(value, dtype=self.dtypes[name]))


def find_injected_hyperparams(opt_state: Any) -> list[InjectedHyperparams]:
    """Returns every ``inject_hyperparams`` state in ``opt_state``, in a fixed order.

    The order is the order of the optimizer state's leaves: the order of a ``chain``, and
    within ``multi_transform`` the sorted group labels (JAX flattens dicts by sorted key).

    Args:
        opt_state: An optimizer state, e.g. ``nnx.Optimizer(...).opt_state``.

    Returns:
        One entry per injected state; empty if the optimizer has none.
    """
    found = []
    leaves, _ = jax.tree_util.tree_flatten_with_path(
        opt_state, is_leaf=lambda node: isinstance(node, _INJECTED_STATES)
    )
    for path, node in leaves:
        if not isinstance(node, _INJECTED_STATES):
            continue
        variables = dict(node.hyperparams)
        found.append(
            InjectedHyperparams(
                label=_group_label(path),
                path=jax.tree_util.keystr(path),
                variables=variables,
                dtypes={name: np.asarray(v.get_value()).dtype for name, v in variables.items()},
            )
        )
    return found


def _group_label(path: tuple) -> str | None:
    # multi_transform keeps its groups in MultiTransformState.inner_states[label].
    label = None
    for key, following in itertools.pairwise(path):
        if getattr(key, "name", None) == "inner_states" and hasattr(following, "key"):
            label = str(following.key)
    return label


def accumulation_state(opt_state: Any) -> optax.MultiStepsState | None:
    """The ``optax.MultiSteps`` state wrapping the optimizer, if it accumulates gradients."""
    return opt_state if isinstance(opt_state, optax.MultiStepsState) else None


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
