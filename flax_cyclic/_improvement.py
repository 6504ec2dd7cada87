"""One improvement rule for every decision driven by a metric: early stopping, the plateau, best-k.

The direction of a metric (``mode``) is given, ``'min'`` or ``'max'``, or inferred from its name
(``'auto'``), as Keras' ``MonitorCallback`` does: the last component of the logged name
(``'eval/top1_accuracy'`` -> ``'top1_accuracy'``) is split into words, and ``loss`` or
``error`` means ``'min'``; ``accuracy``, ``acc``, ``auc``, ``f1``, ``precision`` or ``recall``
means ``'max'``. A name with neither (or both) is an error that asks for the mode. A non-finite
value is never an improvement and ranks below every finite one, in both modes.
"""

from __future__ import annotations

import math
import re
from typing import Any

from flax_cyclic import _checks

#: The words of a metric's name that say which way it should go.
MODE_WORDS = {
    "min": ("loss", "error"),
    "max": ("accuracy", "acc", "auc", "f1", "precision", "recall"),
}
MODES = ("auto", "min", "max")


def infer_mode(owner: str, name: str, metric: str) -> str:
    """``'min'`` or ``'max'`` for ``metric``, from the words of its last path component.

    Args:
        owner: The class or function being built, for messages.
        name: The argument that takes the mode (``'mode'``, ``'best_mode'``), for messages.
        metric: The metric as it is logged, e.g. ``'eval/loss'``.

    Returns:
        ``'min'`` or ``'max'``.

    Raises:
        ValueError: If the name holds words of neither direction, or of both.

    Examples:
        >>> infer_mode("EarlyStopping", "mode", "eval/top1_accuracy")
        'max'
        >>> infer_mode("EarlyStopping", "mode", "train/loss")
        'min'
    """
    words = set(re.split(r"[^a-z0-9]+", metric.rsplit("/", 1)[-1].lower()))
    found = [mode for mode, known in MODE_WORDS.items() if words.intersection(known)]
    if len(found) != 1:
        rule = "; ".join(f"{', '.join(known)} -> {mode!r}" for mode, known in MODE_WORDS.items())
        raise ValueError(
            f"{owner}: `{name}`='auto' cannot tell from the name {metric!r} whether it should "
            f"fall or rise (the rule knows {rule}); pass {name}='min' or {name}='max'."
        )
    return found[0]


def resolve_mode(owner: str, name: str, mode: Any, metric: str) -> str:
    """``mode`` checked: ``'min'`` or ``'max'`` as given, or inferred from ``metric`` (auto)."""
    mode = _checks.choice(owner, name, mode, MODES)
    return infer_mode(owner, name, metric) if mode == "auto" else mode


def is_improvement(
    value: float, best: float | None, mode: str, *, delta: float = 0.0, relative: bool = False
) -> bool:
    """Whether ``value`` beats ``best`` by more than ``delta`` in ``mode``'s direction.

    Absolute (``relative=False``): below ``best - delta`` (``'min'``), above ``best + delta``
    (``'max'``). Relative, PyTorch's ``threshold_mode='rel'``: below ``best * (1 - delta)``, above
    ``best * (1 + delta)``. Any finite value improves on no ``best`` (``None``); a non-finite one
    never improves.

    Examples:
        >>> is_improvement(0.9, 1.0, "min", delta=0.05), is_improvement(float("nan"), None, "max")
        (True, False)
    """
    if not math.isfinite(value):
        return False
    if best is None:
        return True
    if mode == "min":
        return value < (best * (1.0 - delta) if relative else best - delta)
    return value > (best * (delta + 1.0) if relative else best + delta)


def rank(value: float, mode: str) -> float:
    """A sort key of ``value``: higher is better in either mode; non-finite values lowest.

    Examples:
        >>> sorted([0.3, float("nan"), 0.1], key=lambda loss: rank(loss, "min"))
        [nan, 0.3, 0.1]
    """
    if not math.isfinite(value):
        return -math.inf
    return value if mode == "max" else -value
