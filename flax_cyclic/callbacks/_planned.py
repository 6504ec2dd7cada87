"""The values a callback plans for a dispatch's injected hyperparameters, checked.

A loop that runs several train steps per dispatch asks the callbacks for the values those steps
apply (``Callback.hyperparams_ahead``) and feeds them to the compiled scan as they are: they
pass none of the checks that ``set_hyperparams`` and ``InjectedHyperparams.write`` make on a
value written between steps. [`check_planned`] makes the same checks, and those of the form the
scan takes: one value per step, in the hyperparameter's dtype.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from flax_cyclic._hyperparams import (
    _SAFE,
    _WIDE,
    InjectedHyperparams,
    find_injected_hyperparams,
    held_value,
)

__all__ = ["check_planned", "held_wide"]


def check_planned(
    owner: str, variable: Any, values: Any, steps: int, optimizer: Any = None
) -> np.ndarray:
    """``values`` planned for ``variable`` over a dispatch of ``steps`` train steps, checked.

    Values come as a one-dimensional sequence of ``steps`` real numbers, value ``i`` for the
    dispatch's step ``i``: a NumPy array, or anything NumPy reads as one (a JAX array, a list,
    a tuple), converted to the hyperparameter's dtype as ``set_hyperparams`` converts a value.

    Args:
        owner: The ``state_key`` of the callback that planned them, for the messages.
        variable: The injected hyperparameter's ``nnx.Variable``.
        values: The planned values.
        steps: The train steps of the dispatch.
        optimizer: The loop's ``nnx.Optimizer``: an error names the hyperparameter as its
            ``opt_state`` holds it (looked up only then).

    Returns:
        A NumPy array of shape ``(steps,)`` in the variable's dtype.

    Raises:
        TypeError: For values that are not real numbers (booleans, strings, objects).
        ValueError: For other than one value per step (a number, a 2-d array, another length),
            or a value ``set_hyperparams`` refuses: not finite, negative, turned into 0 or
            infinity by the hyperparameter's dtype, or written into an integer hyperparameter.
    """
    who = f"{owner}.hyperparams_ahead"
    try:
        array = np.asarray(values)
    except ValueError as error:  # ragged nesting
        raise ValueError(
            f"{who}: the values planned for {_named(variable, optimizer)} are not an array "
            f"({error}); give a one-dimensional array of {steps} values."
        ) from None
    if array.dtype == np.bool_ or not (
        array.dtype.kind in "iuf" or jnp.issubdtype(array.dtype, jnp.floating)
    ):
        raise TypeError(
            f"{who}: the values planned for {_named(variable, optimizer)} must be real "
            f"numbers, got {type(values).__name__} of dtype {array.dtype}."
        )
    if array.shape != (steps,):
        raise ValueError(
            f"{who}: planned values of shape {array.shape} for "
            f"{_named(variable, optimizer)}, but the dispatch runs {steps} train steps: give "
            f"a one-dimensional array of exactly {steps} values, value i for the dispatch's "
            f"step i (e.g. np.full({steps}, value))."
        )
    held = held_wide(array, _dtype(variable))
    if held is not None:  # the common case: a float32 or float64 schedule's values
        return held
    stand_in = InjectedHyperparams(None, (), {"value": variable}, {"value": _dtype(variable)})
    try:
        return held_value(who, stand_in, "value", array)
    except ValueError:
        located = _located(variable, optimizer)
        if located is None:
            raise ValueError(
                f"{who}: the values planned for {_named(variable, optimizer)} cannot be "
                f"applied as given: {array.tolist()} in {_dtype(variable)}. Give finite, "
                "non-negative values that the dtype holds."
            ) from None
        return held_value(who, *located, array)  # raises, naming the hyperparameter


def held_wide(array: np.ndarray, dtype: np.dtype) -> np.ndarray | None:
    """``array`` as a float32 or float64 hyperparameter holds it, where ``held_value`` passes.

    What ``held_value`` returns for an array, in a few NumPy operations instead of its dozen:
    values of the dtype already (nothing to lose in a cast) that are finite and not negative,
    or float64 values, each 0 or within the range that float32 holds nonzero and finite.
    ``None`` for anything else: ``held_value`` then checks it, and names what it refuses.
    """
    if dtype not in _WIDE or array.dtype not in _WIDE:
        return None
    if array.dtype == dtype:
        fits = bool(np.isfinite(array).all() and (array >= 0).all())
    else:
        fits = bool(((array == 0) | ((array > _SAFE[0]) & (array < _SAFE[1]))).all())
    return np.asarray(array, dtype) if fits else None


def _dtype(variable: Any) -> np.dtype:
    raw = variable.get_raw_value() if isinstance(variable, nnx.Variable) else variable
    return np.dtype(getattr(raw, "dtype", None) or np.asarray(raw).dtype)


def _located(variable: Any, optimizer: Any) -> tuple[InjectedHyperparams, str] | None:
    """The injected state holding ``variable`` in the optimizer's state, and its name there."""
    opt_state = getattr(optimizer, "opt_state", None)
    if opt_state is None:
        return None
    for state in find_injected_hyperparams(opt_state):
        for name, value in state.values.items():
            if value is variable:
                return state, name
    return None


def _named(variable: Any, optimizer: Any) -> str:
    """The hyperparameter in words: its name and where it sits, where it can be found."""
    located = _located(variable, optimizer)
    if located is None:
        return "a variable that is not an injected hyperparameter of the loop's optimizer"
    state, name = located
    return f"{name!r} at {state.where}"
