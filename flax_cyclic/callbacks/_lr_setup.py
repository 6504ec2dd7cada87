"""The LR callback's set-up: its options, a state it restores, and its place in the loop's run.

The options are checked as the callback is built (its scheduler, ``monitor``, ``groups``,
``accumulation_steps``, ``plot_steps``). The scheduler's position must belong to the train
steps it is used at: a loop at step 0 learns it from a scheduler built further on, a finite
scheduler must cover the run the loop plans, and a restored state must be one this callback
saved, with the same ``interval``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from flax_cyclic import _checks, _logging
from flax_cyclic._errors import CheckpointError
from flax_cyclic.callbacks.base import Monitored
from flax_cyclic.schedulers import LRScheduler, _ConfigurationError

logger = _logging.logger


def check_scheduler(owner: str, scheduler: Any) -> LRScheduler:
    """``scheduler``, once it is a flax_cyclic scheduler.

    Raises:
        TypeError: For anything else (a pure schedule goes straight into optax).
    """
    if not isinstance(scheduler, LRScheduler):
        raise TypeError(
            f"{owner}: `scheduler` must be a flax_cyclic scheduler (e.g. CyclicLR), got "
            f"{type(scheduler).__name__}. Pure schedules go straight into optax instead."
        )
    return scheduler


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


def check_groups(
    owner: str, scheduler: LRScheduler, groups: Sequence[str] | None
) -> list[str] | None:
    """``groups`` as a list of labels, one per scheduler group; ``None`` stays ``None``.

    Raises:
        ValueError: If it names another number of labels than the scheduler has groups.
    """
    if groups is not None and len(groups) != scheduler.num_groups:
        raise ValueError(
            f"{owner}: `groups` names {len(groups)} labels but the scheduler has "
            f"{scheduler.num_groups} parameter group(s); give one label per group."
        )
    return None if groups is None else [str(label) for label in groups]


def check_accumulation(owner: str, accumulation_steps: Any) -> int | None:
    """``accumulation_steps`` as a positive integer; ``None`` (read it from the optimizer) stays.

    Raises:
        TypeError: For a value that is not an integer.
        ValueError: For a value below 1.
    """
    if accumulation_steps is None:
        return None
    return _checks.integer(
        owner,
        "accumulation_steps",
        accumulation_steps,
        minimum=1,
        hint="Pass optax.MultiSteps' every_k_schedule, or leave it out to read it.",
    )


def check_plot_steps(owner: str, scheduler: LRScheduler, plot_steps: Any) -> int:
    """``plot_steps`` as an integer >= 0; ``None`` gives the scheduler's ``preview_steps``.

    Raises:
        TypeError: For a value that is not an integer.
        ValueError: For a negative value.
    """
    if plot_steps is None:
        plot_steps = scheduler.preview_steps
    return _checks.integer(
        owner, "plot_steps", plot_steps, minimum=0, hint="e.g. the run's length, or 0."
    )


def load_saved_state(
    owner: str, scheduler: LRScheduler, state: Any, interval: str, strict: bool
) -> int:
    """Loads the scheduler's part of a saved callback state; returns the train steps saved.

    Args:
        owner: The callback's name, for the messages.
        scheduler: The callback's scheduler, which takes the saved state.
        state: What the callback's ``state_dict`` gave.
        interval: The callback's ``interval``, which must be the one saved.
        strict: Whether the scheduler refuses a state saved with another configuration.

    Raises:
        ValueError: As ``saved_train_steps``; for a state the scheduler refuses, with the way
            out: its saved configuration, or the callback built with ``strict=False``.
    """
    train_steps = saved_train_steps(owner, state, interval)
    try:
        scheduler.load_state_dict(state["scheduler"], strict=strict)
    except _ConfigurationError as error:  # the way out is the callback's argument
        raise ValueError(
            f"{owner}: {error.what} Build the scheduler with the saved configuration, or "
            f"build the callback with {owner}(scheduler, ..., strict=False) to take the "
            "saved position and keep the new configuration."
        ) from None
    return train_steps


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


def epoch_metrics(
    owner: str,
    monitor: Monitored,
    scheduler: LRScheduler,
    epoch: int,
    metrics: Mapping[str, Any],
    trained: int,
) -> Mapping[str, Any] | None:
    """The metrics a ``train/`` monitor steps its scheduler on at an epoch end, or ``None``.

    ``None`` for an ``eval/`` monitor, and for an epoch end with no metrics after no train step
    (an epoch resumed at its end).

    Raises:
        ValueError: If the epoch trained (``trained`` steps) but its end reports no metrics
            (``callbacks.on_epoch_end()`` without the epoch's means): the scheduler would
            never act.
    """
    if monitor.source != "train":
        return None
    if metrics:
        return metrics
    if trained:
        name = monitor.name
        raise ValueError(
            f"{owner}: monitor={str(monitor)!r} is the epoch's train mean, but epoch {epoch} "
            f"ended after {trained} train steps with no metrics reported (on_epoch_end got "
            f"{{}}), so {type(scheduler).__name__} would never act. Pass the epoch's means: "
            f"callbacks.on_epoch_end({{{name!r}: mean_{name}}}), as the Trainer does."
        )
    return None


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
