"""Argument checks shared by the schedules and schedulers.

Every check raises at construction time with a message that names the owner (the function or
class being built), the argument, the value that was given and what to pass instead. Nothing is
clamped or coerced silently: a float step size is an error, not a rounded integer.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Callable, Sequence
from typing import Any

#: Largest step the jitted schedules index exactly (optax counts are int32).
MAX_STEP = 2**31 - 1


def _got(name: str, value: Any) -> str:
    return f"got {name}={value!r} ({type(value).__name__})"


def integer(
    owner: str, name: str, value: Any, *, minimum: int, maximum: int | None = MAX_STEP, hint: str
) -> int:
    """Returns ``value`` as an int in ``[minimum, maximum]``; bools and floats are rejected."""
    if isinstance(value, bool):
        raise TypeError(f"{owner}: `{name}` must be an integer, {_got(name, value)}. {hint}")
    try:
        result = operator.index(value)
    except TypeError:
        raise TypeError(
            f"{owner}: `{name}` must be an integer, {_got(name, value)}. {hint}"
        ) from None
    if result < minimum or (maximum is not None and result > maximum):
        requirement = "a positive integer" if minimum == 1 else "a non-negative integer"
        if maximum is not None:
            requirement += " no larger than 2**31 - 1"
        raise ValueError(f"{owner}: `{name}` must be {requirement}, {_got(name, value)}. {hint}")
    return result


def real(owner: str, name: str, value: Any, *, positive: bool = False, hint: str) -> float:
    """Returns ``value`` as a finite Python float that is ``> 0`` (positive) or ``>= 0``.

    Python and NumPy scalars and 0-d arrays are accepted; strings, bools, sequences and
    arrays with elements are rejected with a ``TypeError``.
    """
    requirement = "a positive" if positive else "a non-negative"
    if not _is_real_scalar(value):
        raise TypeError(f"{owner}: `{name}` must be a real number, {_got(name, value)}. {hint}")
    result = float(value)
    if not math.isfinite(result) or result < 0 or (positive and result == 0):
        raise ValueError(
            f"{owner}: `{name}` must be {requirement} finite number, {_got(name, value)}. {hint}"
        )
    return result


def _is_real_scalar(value: Any) -> bool:
    # Python and NumPy numbers, and 0-d integer or floating arrays (NumPy or JAX).
    if isinstance(value, bool):
        return False
    if isinstance(value, numbers.Real):
        return True
    kind = getattr(getattr(value, "dtype", None), "kind", None)
    return getattr(value, "shape", None) == () and kind in ("f", "i", "u")


def choice(owner: str, name: str, value: Any, choices: Sequence[str]) -> str:
    """Returns ``value`` if it is one of ``choices``."""
    if not isinstance(value, str) or value not in choices:
        options = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{owner}: `{name}` must be one of {options}, {_got(name, value)}.")
    return value


def optional_callable(owner: str, name: str, value: Any, *, hint: str) -> Callable | None:
    """Returns ``value`` if it is ``None`` or callable."""
    if value is not None and not callable(value):
        raise TypeError(f"{owner}: `{name}` must be callable or None, {_got(name, value)}. {hint}")
    return value


def per_group(
    owner: str, values: dict[str, Any], hints: dict[str, str]
) -> dict[str, tuple[float, ...]]:
    """Checks per-parameter-group numbers (finite, >= 0) and broadcasts scalars against lists.

    Args:
        owner: Name of the function or class being built, for messages.
        values: Argument name -> a number, or a list/tuple with one number per group.
        hints: Argument name -> the advice appended to its error messages.

    Returns:
        Argument name -> a tuple with one float per group, all of the same length.
    """
    lengths = {
        name: len(value) for name, value in values.items() if isinstance(value, (list, tuple))
    }
    for name, length in lengths.items():
        if length == 0:
            raise ValueError(
                f"{owner}: `{name}` must not be an empty list; give one value per parameter "
                "group or a single number for all groups."
            )
    if len(set(lengths.values())) > 1:
        described = ", ".join(f"{name} has {length}" for name, length in lengths.items())
        raise ValueError(
            f"{owner}: per-group lists must have the same length, but {described} values. "
            "Give one value per parameter group, or a single number to use for every group."
        )
    groups = next(iter(lengths.values()), 1)
    result = {}
    for name, value in values.items():
        if isinstance(value, (list, tuple)):
            result[name] = tuple(
                real(owner, f"{name}[{i}]", v, hint=hints[name]) for i, v in enumerate(value)
            )
        else:
            result[name] = (real(owner, name, value, hint=hints[name]),) * groups
    return result
