"""Pictures of schedules (matplotlib, imported lazily)."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from flax_cyclic import _checks
from flax_cyclic.schedulers import LRScheduler

__all__ = ["plot_schedule", "schedule_values"]


def schedule_values(scheduler: LRScheduler, num_steps: int) -> np.ndarray:
    """The learning rate of every group at steps ``0 .. num_steps - 1``, shape ``(steps, groups)``.

    Evaluated with the jitted schedules (the scheduler's own position is not touched).
    """
    num_steps = _checks.integer(
        "schedule_values", "num_steps", num_steps, minimum=1, hint="e.g. 3 cycles of steps."
    )
    steps = jnp.arange(num_steps)
    columns = [jax.vmap(scheduler.as_schedule(g))(steps) for g in range(scheduler.num_groups)]
    return np.stack([np.asarray(column) for column in columns], axis=1)


def plot_schedule(
    scheduler: LRScheduler,
    num_steps: int,
    *,
    path: str | os.PathLike | None = None,
    title: str | None = None,
) -> np.ndarray:
    """Plots the planned learning rate of every group over ``num_steps`` steps.

    Args:
        scheduler: The scheduler to draw (its position is not changed).
        num_steps: How many steps to draw, from 0.
        path: If given, the figure is also saved there as a PNG.
        title: The figure's title; by default the scheduler's class name.

    Returns:
        The picture as an RGB ``uint8`` array of shape ``(height, width, 3)``, e.g. for
        ``writer.write_images``.

    Raises:
        ImportError: If matplotlib is not installed.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(
            "plot_schedule needs matplotlib: pip install matplotlib "
            "(or the 'tensorboard' extra of flax_cyclic)."
        ) from error
    values = schedule_values(scheduler, num_steps)
    figure = Figure(figsize=(8, 3.2), dpi=100)
    canvas = FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for group in range(values.shape[1]):
        label = f"group {group}" if values.shape[1] > 1 else "learning rate"
        axes.plot(np.arange(len(values)), values[:, group], label=label, linewidth=1.5)
    axes.set_xlabel("step")
    axes.set_ylabel("learning rate")
    axes.set_title(title or f"{type(scheduler).__name__}: planned learning rate")
    axes.grid(alpha=0.3)
    axes.legend(loc="upper right")
    figure.tight_layout()
    canvas.draw()
    image = np.asarray(canvas.buffer_rgba())[..., :3].copy()
    if path is not None:
        figure.savefig(os.fspath(path))
    return image
