"""The LR callback's set-up: its monitor, a state it restores, and its place in the loop's run.

The scheduler's position must belong to the train steps it is used at: a loop at step 0 learns
it from a scheduler built further on, a finite scheduler must cover the run the loop plans, and
a restored state must be one this callback saved, with the same ``interval``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flax_cyclic import _checks, _logging
from flax_cyclic._errors import CheckpointError
from flax_cyclic.callbacks.base import Monitored
from flax_cyclic.schedulers import LRScheduler

logger = _logging.logger


def check_monitor(owner: str, scheduler: LRScheduler, monitor: Any) -> Monitored | None:
    """``monitor`` for a scheduler driven by a metric; refused for the others.

    Raises:
        ValueError: For a scheduler driven by a metric without ``monitor``, a ``monitor`` for
            one that follows the update count, or a ``monitor`` that names no logged metric.
    """
    name = type(scheduler).__name__
    if scheduler.requires_metric and monitor is None:
        raise ValueError(
            f"{owner}: {name} steps on a metric, not on the update count; pass the metric it "
            f"watches, e.g. LRSchedulerCallback({name}(...), monitor='eval/loss')."
        )
    if monitor is not None and not scheduler.requires_metric:
        raise ValueError(
            f"{owner}: `monitor` is for a scheduler driven by a metric (ReduceLROnPlateau); "
            f"{name} follows the update count, got monitor={monitor!r}. Leave monitor out."
        )
    if monitor is None:
        return None
    parsed = Monitored.parse(owner, monitor)
    resolve_mode = getattr(scheduler, "resolve_mode", None)
    if callable(resolve_mode):  # ReduceLROnPlateau(mode='auto'): min or max by the name
        resolve_mode(str(parsed))
    return parsed


def saved_train_steps(owner: str, state: Any, interval: str) -> int:
    """The train steps of a saved state, once it is known to be this callback's kind of state.

    Raises:
        ValueError: If ``state`` lacks an entry, or was saved with another ``interval`` (its
            count of steps would be read as epochs, or the reverse).
    """
    keys = ("scheduler", "train_steps")
    missing = [key for key in keys if not isinstance(state, Mapping) or key not in state]
    if missing:
        found = sorted(state) if isinstance(state, Mapping) else type(state).__name__
        raise ValueError(
            f"{owner}.load_state_dict: the saved state has no {missing} (it has {found}). "
            "Restore a state made by LRSchedulerCallback.state_dict()."
        )
    train_steps = _checks.integer(
        owner,
        "train_steps",
        state["train_steps"],
        minimum=0,
        maximum=None,
        hint="Restore a state made by LRSchedulerCallback.state_dict().",
    )
    saved_interval = state.get("interval", interval)  # absent: saved before 0.3
    if saved_interval != interval:
        raise ValueError(
            f"{owner}.load_state_dict: the state was saved with interval="
            f"{saved_interval!r}, but this callback has interval={interval!r}: the "
            f"scheduler's position counts {saved_interval}s and would be read as "
            f"{interval}s. Build the callback with interval={saved_interval!r} to "
            "resume this run, or start a new run."
        )
    return train_steps


def no_epoch_metrics(
    owner: str, monitor: Monitored, scheduler: LRScheduler, epoch: int, trained: int
) -> ValueError:
    """The error for an epoch end without the train means a ``train/`` monitor steps on."""
    name = monitor.name
    return ValueError(
        f"{owner}: monitor={str(monitor)!r} is the epoch's train mean, but epoch {epoch} ended "
        f"after {trained} train steps with no metrics reported (on_epoch_end got {{}}), so "
        f"{type(scheduler).__name__} would never act. Pass the epoch's means: "
        f"callbacks.on_epoch_end({{{name!r}: mean_{name}}}), as the Trainer does."
    )


def align_with_loop(
    owner: str,
    loop: Any,
    scheduler: LRScheduler,
    train_steps: int,
    *,
    updates_per_step: int,
    follows_updates: bool,
    restored: bool,
) -> int:
    """Agrees with the loop on the train step: the loop learns it, or both must match.

    Args:
        owner: The callback's name, for the messages.
        loop: The loop; its ``step`` is set where it starts at 0 and the scheduler further.
        scheduler: The scheduler, whose ``last_epoch`` is its position.
        train_steps: The train steps the callback has counted.
        updates_per_step: Train steps per parameter update.
        follows_updates: Whether the scheduler advances once per parameter update.
        restored: Whether ``train_steps`` comes from a restored state.

    Returns:
        The train steps counted: ``train_steps``, or where the scheduler stands.
    """
    per_update = updates_per_step
    position = scheduler.last_epoch
    if train_steps == 0 and follows_updates:
        train_steps = position * per_update  # a scheduler built with last_epoch=N
    elif follows_updates and position != train_steps // per_update:
        kind = CheckpointError if restored else RuntimeError
        raise kind(
            f"{owner}: the scheduler stands at step {position}, but the "
            f"callback counted {train_steps} train steps ({train_steps // per_update} parameter "
            "updates) with it: the two were saved or changed apart. Restore a "
            "state saved by this callback unedited, or start a new run."
        )
    loop_step = getattr(loop, "step", 0)
    if not follows_updates and train_steps == 0:
        train_steps = loop_step  # epochs, not steps, position an epoch scheduler
    if loop_step == train_steps:
        return train_steps
    if loop_step == 0 and hasattr(loop, "step"):
        loop.step = train_steps  # e.g. CyclicLR(..., last_epoch=N) in a new loop
        logger.info(
            "%s: the loop starts at train step %d, where the scheduler stands.", owner, train_steps
        )
        return train_steps
    error: type[Exception] = CheckpointError if restored else ValueError
    raise error(
        f"{owner}: the loop is at train step {loop_step} but the scheduler's "
        f"position is train step {train_steps} (scheduler step {position}): the "
        "learning rates and the logs would not belong to the steps they are used at. Build "
        f"the scheduler with last_epoch={loop_step // per_update} to continue at step "
        f"{loop_step}, or start the loop at step {train_steps} (CallbackList(..., "
        f"step={train_steps}))."
    )


def check_length(owner: str, loop: Any, scheduler: LRScheduler, per_update: int) -> None:
    """Refuses a finite scheduler (``total_steps``) shorter than the loop's planned run."""
    length = getattr(scheduler, "total_steps", None)
    planned = getattr(loop, "total_steps", None)
    if length is None or planned is None:
        return
    updates = planned // per_update
    if updates > length:
        name = type(scheduler).__name__
        raise ValueError(
            f"{owner}: the run plans {updates} parameter updates but "
            f"{name}(total_steps={length}) has {length}: update {length} would fail "
            f"part-way through training. Build it with total_steps={updates} (or the "
            "run's epochs and steps_per_epoch), or train for fewer steps."
        )
