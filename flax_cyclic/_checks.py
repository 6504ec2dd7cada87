"""Argument checks shared by the schedules and schedulers.

Every check raises at construction time with a message that names the owner (the function or
class being built), the argument, the value that was given and what to pass instead. Nothing is
clamped or coerced silently: a float step size is an error, not a rounded integer.
"""

from __future__ import annotations

import math
import numbers
import operator
import os
from collections.abc import Callable, Sequence
from typing import Any

#: Largest step the jitted schedules index exactly (optax counts are int32).
MAX_STEP = 2**31 - 1


def _got(name: str, value: Any) -> str:
    return f"got {name}={value!r} ({type(value).__name__})"


def integer(
    owner: str, name: str, value: Any, *, minimum: int, maximum: int | None = MAX_STEP, hint: str
) -> int:
    """Returns ``value`` as an int in ``[minimum, maximum]``; bools and floats are rejected.

    ``maximum=None`` means no upper bound. An out-of-range value raises a ``ValueError`` that
    states the real range: "an integer in [1, 2**31 - 1]", or "an integer >= 0" without a
    maximum.
    """
    if isinstance(value, bool):
        raise TypeError(f"{owner}: `{name}` must be an integer, {_got(name, value)}. {hint}")
    try:
        result = operator.index(value)
    except TypeError:
        raise TypeError(
            f"{owner}: `{name}` must be an integer, {_got(name, value)}. {hint}"
        ) from None
    if result < minimum or (maximum is not None and result > maximum):
        raise ValueError(
            f"{owner}: `{name}` must be {_integer_range(minimum, maximum)}, "
            f"{_got(name, value)}. {hint}"
        )
    return result


def _integer_range(minimum: int, maximum: int | None) -> str:
    """Describes the integers in ``[minimum, maximum]``: ``'an integer in [1, 2**31 - 1]'``."""
    if maximum is None:
        return f"an integer >= {minimum}"
    upper = "2**31 - 1" if maximum == MAX_STEP else str(maximum)
    return f"an integer in [{minimum}, {upper}]"


def real(owner: str, name: str, value: Any, *, positive: bool = False, hint: str) -> float:
    """Returns ``value`` as a finite Python float that is ``> 0`` (positive) or ``>= 0``.

    Python and NumPy scalars and 0-d arrays are accepted; strings, bools, sequences and
    arrays with elements are rejected with a ``TypeError``.
    """
    requirement = "a positive" if positive else "a non-negative"
    if not is_real_scalar(value):
        raise TypeError(f"{owner}: `{name}` must be a real number, {_got(name, value)}. {hint}")
    result = float(value)
    if not math.isfinite(result) or result < 0 or (positive and result == 0):
        raise ValueError(
            f"{owner}: `{name}` must be {requirement} finite number, {_got(name, value)}. {hint}"
        )
    return result


def is_real_scalar(value: Any) -> bool:
    """Whether ``value`` is a real number: Python, NumPy (not a bool) or a 0-d int/float array."""
    if isinstance(value, bool):
        return False
    if isinstance(value, numbers.Real):
        return True
    kind = getattr(getattr(value, "dtype", None), "kind", None)
    return getattr(value, "shape", None) == () and kind in ("f", "i", "u")


def flag(owner: str, name: str, value: Any) -> bool:
    """``value`` if it is ``True`` or ``False``; a ``TypeError`` for anything else.

    A string such as ``"False"`` or ``"no"`` is truthy in Python, so it is refused rather than
    taken as ``True``.
    """
    if not isinstance(value, bool):
        raise TypeError(f"{owner}: `{name}` must be True or False, got {name}={value!r}.")
    return value


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


def writable_directory(owner: str, name: str, path: Any) -> str:
    """Creates a local directory if missing; raises a clear error where writing would fail.

    Returns the absolute path. A ``scheme://`` path (``gs://``, ``s3://``) is returned as it
    is: that file system is the writer's business.

    Raises:
        NotADirectoryError: If ``path`` is an existing file, or lies under one.
        PermissionError: If it cannot be created or written to.
        OSError: If it cannot be created for another reason.
    """
    given = os.fspath(path)
    if "://" in given:
        return given
    hint = "Pass a directory path; it is created if missing."
    absolute = os.path.abspath(given)
    if os.path.exists(absolute) and not os.path.isdir(absolute):
        raise NotADirectoryError(
            f"{owner}: `{name}` must be a directory, got {name}={given!r}, which is a file. {hint}"
        )
    existing = absolute
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise NotADirectoryError(
            f"{owner}: `{name}` must be a directory, got {name}={given!r}, which lies under the "
            f"file {existing!r}. {hint}"
        )
    try:
        os.makedirs(absolute, exist_ok=True)
    except PermissionError:
        raise PermissionError(
            f"{owner}: `{name}` must be a directory this process can create, got "
            f"{name}={given!r}, but {existing!r} is not writable. Pass a directory path under "
            "a writable directory, or change the permissions."
        ) from None
    except OSError as error:
        raise OSError(
            f"{owner}: `{name}` must be a directory this process can create, got "
            f"{name}={given!r}: {error.strerror or error}. {hint}"
        ) from error
    if not os.access(absolute, os.W_OK | os.X_OK):
        raise PermissionError(
            f"{owner}: `{name}` must be a writable directory, got {name}={given!r}, which this "
            "process cannot write to. Pass a directory it can write to, or change the "
            "permissions."
        )
    return absolute
