"""Training and evaluation mode of an NNX model, put back as the user gave it."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator
from typing import Any

from flax import nnx

__all__ = ["check_takes_rngs", "mode", "needs_rngs"]

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

    Examples:
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


def needs_rngs(owner: str, error: ValueError) -> ValueError | None:
    """The error to raise for a model that draws random numbers but was given no ``rngs``.

    ``None`` if ``error`` (from a train step) is about something else. Flax's own message
    (``nnx.Dropout``: "no `rngs` argument was provided") does not say which argument of ours
    to give.
    """
    if "no `rngs` argument" not in str(error):
        return None
    return ValueError(
        f"{owner}: the model draws random numbers in training mode (e.g. nnx.Dropout) but has "
        "no random streams of its own; pass rngs=nnx.Rngs(dropout=0), which is given to "
        "train_step (the default step calls model(x, rngs=rngs))."
    )


def check_takes_rngs(owner: str, function: Callable[..., Any], described: str) -> None:
    """Raises a ``TypeError`` unless ``function`` can be called with ``rngs=...``.

    Checked when ``rngs`` is given, so that the mistake shows before any tracing, naming what
    has to change (``described``: what the function is, e.g. "train_step").
    """
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):  # no signature to read (a builtin): let the call tell
        return
    if any(p.kind is p.VAR_KEYWORD or p.name == "rngs" for p in parameters):
        return
    raise TypeError(
        f"{owner}: rngs is given, so {described} is called with rngs=...; it takes no `rngs` "
        f"argument. Add one (e.g. `def __call__(self, x, rngs=None)`, passed on to "
        "nnx.Dropout), or drop rngs= if the model keeps its own streams."
    )
