"""Training and evaluation mode of an NNX model, put back as the user gave it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from flax import nnx

__all__ = ["mode"]

# The attributes NNX's Module.train() / Module.eval() set on the modules that have them.
_MODE_ATTRIBUTES = ("deterministic", "use_running_average")


@contextlib.contextmanager
def mode(model: Any, *, training: bool) -> Iterator[None]:
    """Runs the block with ``model`` in training or evaluation mode, then restores its own.

    Training mode is NNX's ``model.train()`` (``nnx.Dropout`` active, ``nnx.BatchNorm``
    updating its running statistics), evaluation mode ``model.eval()`` (deterministic, running
    averages). On the way out, by any path, every ``deterministic`` / ``use_running_average``
    attribute gets back the value it had, so the model is left as the user gave it.

    Args:
        model: An ``nnx.Module`` (anything else is left alone).
        training: Training mode if true, evaluation mode if false.

    Example:
        >>> from flax import nnx
        >>> model = nnx.Sequential(nnx.Linear(2, 2, rngs=nnx.Rngs(0)), nnx.Dropout(0.5))
        >>> with mode(model, training=False):
        ...     print(model.layers[1].deterministic)
        True
        >>> print(model.layers[1].deterministic)
        False
    """
    if not isinstance(model, nnx.Module):
        yield
        return
    saved = [
        (module, name, getattr(module, name))
        for _, module in nnx.iter_modules(model)
        for name in _MODE_ATTRIBUTES
        if hasattr(module, name)
    ]
    if training:
        model.train()
    else:
        model.eval()
    try:
        yield
    finally:
        for module, name, value in saved:
            setattr(module, name, value)
