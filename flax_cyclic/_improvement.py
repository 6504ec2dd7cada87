"""One improvement rule for every decision driven by a metric: early stopping, the plateau, best-k.

The direction of a metric (``mode``) is given, ``'min'`` or ``'max'``, or inferred from its name
(``'auto'``), as Keras' ``MonitorCallback`` does: the last component of the logged name
(``'eval/top1_accuracy'`` -> ``'top1_accuracy'``) is split into words, and ``loss`` or
``error`` means ``'min'``; ``accuracy``, ``acc``, ``auc``, ``f1``, ``precision`` or ``recall``
means ``'max'``. A name with neither, or both (``'eval/loss_acc'``), is an error that asks for
the mode; so is a name with a word of a change or a negation anywhere in it (``CHANGE_WORDS``:
``'eval/acc_drop'``, ``'eval/loss_reduction'``, ``'delta/loss'``), which may reverse the
direction: a drop of accuracy is better small, a reduction of the loss better large. A
non-finite value is never an improvement and ranks below every finite one, in both modes.
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
#: Words that make a metric of a named quantity a change, a difference or a negation of it,
#: whose direction may be the opposite: ``'acc_drop'`` should fall, ``'loss_reduction'`` rise.
CHANGE_WORDS = (
    "change",
    "decline",
    "decrease",
    "degradation",
    "delta",
    "diff",
    "difference",
    "drop",
    "fall",
    "gain",
    "gap",
    "growth",
    "improvement",
    "increase",
    "inverse",
    "minus",
    "neg",
    "negative",
    "reduction",
    "rise",
)
MODES = ("auto", "min", "max")
_BETTER = {"min": "lower is better", "max": "higher is better"}


def infer_mode(owner: str, name: str, metric: str) -> str:
    """``'min'`` or ``'max'`` for ``metric``, from the words of its last path component.

    Args:
        owner: The class or function being built, for messages.
        name: The argument that takes the mode (``'mode'``, ``'best_mode'``), for messages.
        metric: The metric as it is logged, e.g. ``'eval/loss'``.

    Returns:
        ``'min'`` or ``'max'``.

    Raises:
        ValueError: If the name holds words of neither direction, or of both, or a word of
            ``CHANGE_WORDS`` anywhere (``'eval/acc_drop'``): the message gives both readings.

    Examples:
        >>> infer_mode("EarlyStopping", "mode", "eval/top1_accuracy")
        'max'
        >>> infer_mode("EarlyStopping", "mode", "train/loss")
        'min'
    """
    cannot = f"{owner}: `{name}`='auto' cannot tell from the name {metric!r} whether it should"
    ask = f"pass {name}='min' or {name}='max'."
    words = _words(metric.rsplit("/", 1)[-1])
    found = {mode: [word for word in words if word in known] for mode, known in MODE_WORDS.items()}
    modes = [mode for mode, hits in found.items() if hits]
    if not modes:
        rule = "; ".join(f"{', '.join(known)} -> {mode!r}" for mode, known in MODE_WORDS.items())
        raise ValueError(f"{cannot} fall or rise (the rule knows {rule}); {ask}")
    if len(modes) > 1:
        raise ValueError(
            f"{cannot} fall or rise: {found['min'][0]!r} reads as 'min' ({_BETTER['min']}), "
            f"{found['max'][0]!r} as 'max' ({_BETTER['max']}); {ask}"
        )
    mode = modes[0]
    changes = [word for word in _words(metric) if word in CHANGE_WORDS]
    if changes:
        other = "max" if mode == "min" else "min"
        raise ValueError(
            f"{cannot} fall or rise: {found[mode][0]!r} reads as {mode!r} ({_BETTER[mode]}), "
            f"but {changes[0]!r} may reverse it to {other!r} ({_BETTER[other]}); {ask}"
        )
    return mode


def _words(text: str) -> list[str]:
    """The lower-case words of ``text``, in order (split at anything but letters and digits)."""
    return [word for word in re.split(r"[^a-z0-9]+", text.lower()) if word]


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
