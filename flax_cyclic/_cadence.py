"""The one periodic rule: an action every ``n`` steps (CLU's ``PeriodicAction`` in one line).

Every "every n steps" of the library goes through [`every`]: the Trainer's evaluations and
what is due at a step, ``Checkpointer.should_save``, and the callbacks' ``log_every_steps``.
"""

from __future__ import annotations

__all__ = ["every"]


def every(done: int, interval: int | None) -> bool:
    """Whether an action every ``interval`` steps is due once ``done`` steps are complete.

    Due at ``interval``, ``2 * interval``, ...: never before the first step, never for
    ``None``.

    Args:
        done: Train steps completed (a callback's ``on_step_end`` for step ``s`` passes
            ``s + 1``).
        interval: Steps between two actions, or ``None`` for none.

    Returns:
        Whether the action is due.

    Example:
        >>> [done for done in range(7) if every(done, 3)]
        [3, 6]
    """
    return interval is not None and done > 0 and done % interval == 0
