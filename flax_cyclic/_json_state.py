"""JSON states (a callback's ``state_dict()``, a loop's position), made exact before writing.

JSON carries ``None``, ``bool``, ``int``, ``float`` (NaN and the infinities included: Python's
``json`` writes and reads them back), ``str``, lists and string-keyed dicts. A NumPy or JAX
scalar (a 0-d array included) of a bool, integer or real dtype is the Python number of the
same value, and a tuple a list, as ``json`` itself would write it. Anything else is refused
before anything is written: an array with elements (read back, it would be a list, whose ``+``
and ``.shape`` differ), an object, a complex number, a non-string key (``json`` writes ``1`` as
``"1"``, so it would come back as another key).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["NotJson", "to_json"]


class NotJson(TypeError):
    """A value JSON cannot hold exactly, found at ``path`` (``"['history'][2]"``)."""

    def __init__(self, path: str, what: str) -> None:
        super().__init__(f"{what} at {path or 'the top level'}")
        self.path = path
        self.what = what


def to_json(value: Any, path: str = "") -> Any:
    """``value`` with every leaf a JSON value that reads back equal; ``NotJson`` if it cannot be.

    Args:
        value: A state: dicts with string keys, lists, tuples, numbers, strings, ``None``.
        path: Where ``value`` lies in the state, for the error (``"['history']"``).

    Returns:
        The same state of Python dicts, lists, ``int``, ``float``, ``bool``, ``str``, ``None``.

    Raises:
        NotJson: For a value that JSON cannot hold exactly, naming the key path inside the
            state and the value's type.
    """
    if value is None or type(value) in (bool, int, float, str):
        return value
    if isinstance(value, Mapping):
        converted = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise NotJson(
                    path, f"the key {key!r} of type {_type_name(key)} (JSON keys are strings)"
                )
            converted[str(key)] = to_json(item, f"{path}[{key!r}]")
        return converted
    if isinstance(value, (list, tuple)):
        return [to_json(item, f"{path}[{index}]") for index, item in enumerate(value)]
    for kind in (int, float, str):  # subclasses: an IntEnum, a numpy float64, a numpy str_
        if isinstance(value, kind):
            return kind(value)
    return _scalar(value, path)


def _scalar(value: Any, path: str) -> Any:
    """A NumPy or JAX scalar or 0-d array of a bool, integer or real dtype, as a Python one."""
    if not isinstance(value, np.generic | np.ndarray | jax.Array):
        raise NotJson(path, f"a value of type {_type_name(value)}")
    dtype = value.dtype
    shape = tuple(np.shape(value))
    if shape == () and not jnp.issubdtype(dtype, jax.dtypes.prng_key):
        if dtype == np.bool_:
            return bool(value)
        if jnp.issubdtype(dtype, jnp.integer):
            return int(value)
        if jnp.issubdtype(dtype, jnp.floating):
            return float(value)
    raise NotJson(path, f"a value of type {_type_name(value)} (shape {shape}, dtype {dtype})")


def _type_name(value: Any) -> str:
    """``int``, ``numpy.ndarray``, ``jax.Array``, ``mymodule.MyClass``."""
    if isinstance(value, jax.Array):
        return "jax.Array"
    kind = type(value)
    if kind.__module__ == "builtins":
        return kind.__qualname__
    return f"{kind.__module__}.{kind.__qualname__}"
