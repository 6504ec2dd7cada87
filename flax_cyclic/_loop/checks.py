"""What ``Trainer.fit`` is asked to run, checked before anything runs."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from flax_cyclic import _checks
from flax_cyclic.callbacks.base import Monitored

__all__ = ["check_plan"]


def check_plan(
    num_epochs: Any,
    num_steps: Any,
    eval_data: Any,
    eval_every_steps: Any,
    *,
    steps_per_dispatch: int,
    checkpointer: Any,
    callbacks: Iterable[Any],
) -> tuple[int | None, int | None, int | None]:
    """``fit``'s lengths and evaluation interval, checked against the Trainer's set-up.

    Returns:
        ``num_epochs``, ``num_steps`` (one of them ``None``) and ``eval_every_steps``.

    Raises:
        ValueError: For missing or conflicting lengths, an interval that falls inside a
            dispatch of several steps, or an evaluation metric acted on without eval_data.
    """
    num_epochs, num_steps = _check_lengths(num_epochs, num_steps)
    if eval_every_steps is not None:
        eval_every_steps = _checks.integer(
            "Trainer.fit", "eval_every_steps", eval_every_steps, minimum=1, hint="e.g. 500."
        )
        if eval_data is None:
            raise ValueError(
                f"Trainer.fit: eval_every_steps={eval_every_steps}, but there is no "
                "eval_data to evaluate on; pass eval_data=... as well, or drop "
                "eval_every_steps."
            )
    if eval_data is None:
        _check_nothing_waits_for_evaluations(checkpointer, callbacks)
    _check_dispatch_intervals(eval_every_steps, steps_per_dispatch, checkpointer)
    return num_epochs, num_steps, eval_every_steps


def _check_dispatch_intervals(eval_every_steps: int | None, k: int, checkpointer: Any) -> None:
    """Refuses an interval that would fall inside a dispatch of several steps."""
    every_save = checkpointer.every_steps if checkpointer else None
    for name, interval in (
        ("eval_every_steps", eval_every_steps),
        ("the checkpointer's every_steps", every_save),
    ):
        if interval is not None and interval % k:
            raise ValueError(
                f"Trainer.fit: {name}={interval} is not a multiple of steps_per_dispatch="
                f"{k}: evaluations and saves happen between dispatches of {k} steps, so "
                f"step {interval} is never reached between two. Make it a multiple of {k} "
                f"(e.g. {max(k, interval // k * k)}), or choose a steps_per_dispatch that "
                "divides it."
            )


def _check_nothing_waits_for_evaluations(checkpointer: Any, callbacks: Iterable[Any]) -> None:
    """Refuses a run without eval_data when a checkpointer or callback acts on its metrics."""
    fix = "pass eval_data=... (and eval_every_steps=... to evaluate within epochs)."
    if checkpointer and checkpointer.best_metric:
        raise ValueError(
            f"Trainer.fit: the checkpointer keeps the best checkpoints by "
            f"{checkpointer.best_metric!r}, an evaluation metric, but there is no "
            f"eval_data to evaluate on; {fix}"
        )
    for callback in callbacks:
        monitor = getattr(callback, "monitor", None)
        if isinstance(monitor, Monitored) and monitor.source == "eval":
            raise ValueError(
                f"Trainer.fit: {type(callback).__name__} acts on {str(monitor)!r}, an "
                f"evaluation metric, but there is no eval_data to evaluate on, so it would "
                f"never act; {fix}"
            )


def _check_lengths(num_epochs: Any, num_steps: Any) -> tuple[int | None, int | None]:
    if (num_epochs is None) == (num_steps is None):
        raise ValueError(
            "Trainer.fit: give exactly one of num_epochs and num_steps, got "
            f"num_epochs={num_epochs!r}, num_steps={num_steps!r}."
        )
    hint = "The length of the run, e.g. 3."
    if num_epochs is not None:
        return _checks.integer("Trainer.fit", "num_epochs", num_epochs, minimum=1, hint=hint), None
    return None, _checks.integer("Trainer.fit", "num_steps", num_steps, minimum=1, hint=hint)
