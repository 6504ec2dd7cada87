"""What LRSchedulerCallback writes: the values applied as tags, the planned schedule once."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from flax_cyclic import _logging
from flax_cyclic.schedulers import LRScheduler

__all__ = ["logged_scalars", "write_plan"]

logger = _logging.logger


def logged_scalars(
    values: Mapping[str, list[float]], groups: Sequence[str] | None, scheduler: LRScheduler
) -> dict[str, float]:
    """The tags of one logged step, with the values the optimizer applied.

    ``learning_rate[/<group>]``, ``momentum[/<group>]``, ``lr_cycle`` and
    ``lr_cycle_position`` (docs/tensorboard.md, "What is written").
    """
    scalars: dict[str, float] = {}
    for kind, tag in (("lr", "learning_rate"), ("momentum", "momentum")):
        if kind not in values:
            continue
        per_group = values[kind]
        if len(per_group) == 1:
            scalars[tag] = per_group[0]
        else:
            labels = groups or [str(i) for i in range(len(per_group))]
            scalars.update(
                {f"{tag}/{label}": v for label, v in zip(labels, per_group, strict=True)}
            )
    for attribute, tag in (("cycle", "lr_cycle"), ("cycle_position", "lr_cycle_position")):
        if hasattr(scheduler, attribute):
            scalars[tag] = getattr(scheduler, attribute)
    return scalars


def write_plan(writer: Any, scheduler: LRScheduler, plot_steps: int) -> None:
    """The scheduler's configuration as hparams, and its first ``plot_steps`` values drawn.

    Each where the writer can (``write_hparams``, ``write_images``); the picture is also saved
    as ``lr_schedule.png`` in the writer's ``logdir``, if it has one. matplotlib is imported
    only here, and a missing one is logged, not raised.
    """
    write_hparams = getattr(writer, "write_hparams", None)
    if callable(write_hparams):
        config = scheduler.state_dict()["config"]
        plain = (bool, int, float, str)
        write_hparams(
            {
                f"scheduler/{key}": value if isinstance(value, plain) else str(value)
                for key, value in config.items()
            }
        )
    write_images = getattr(writer, "write_images", None)
    if not plot_steps or not callable(write_images):
        return
    from flax_cyclic._figures import plot_schedule

    logdir = getattr(writer, "logdir", None)
    path = os.path.join(logdir, "lr_schedule.png") if logdir else None
    try:
        image = plot_schedule(scheduler, plot_steps, path=path)
    except ImportError as error:
        logger.warning("No picture of the planned schedule: %s", error)
        return
    write_images(0, {"lr_schedule": image[None]})
