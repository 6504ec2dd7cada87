"""Figures with matplotlib (imported lazily): the drawing helpers and the planned schedule.

The low layer of the pictures: the LR callback draws the planned schedule with it, and
[`LRFinderResult.plot`][flax_cyclic.LRFinderResult.plot] its range test. The public functions
are re-exported by ``flax_cyclic.plotting``.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from flax_cyclic import _checks
from flax_cyclic.schedulers import LRScheduler

__all__ = ["figure", "plot_schedule", "render", "schedule_values"]


def schedule_values(scheduler: LRScheduler, steps: Any) -> np.ndarray:
    """The learning rate of every group at ``steps``, shape ``(len(steps), groups)``.

    Evaluated with the jitted schedules; the scheduler's own position is not touched.

    Args:
        scheduler: The scheduler to evaluate.
        steps: Integer steps (a sequence or an array).
    """
    steps = jnp.asarray(steps)
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
    num_steps = _checks.integer(
        "plot_schedule", "num_steps", num_steps, minimum=1, hint="e.g. 3 cycles of steps."
    )
    canvas = figure("plot_schedule")
    # At most ~4000 points: enough for any figure, cheap for cycles of millions of steps.
    steps = np.unique(np.linspace(0, num_steps - 1, min(num_steps, 4001)).round().astype(np.int32))
    values = schedule_values(scheduler, steps)
    axes = canvas.add_subplot()
    for group in range(values.shape[1]):
        label = f"group {group}" if values.shape[1] > 1 else "learning rate"
        axes.plot(steps, values[:, group], label=label, linewidth=1.5)
    axes.set_xlabel("step")
    axes.set_ylabel("learning rate")
    axes.set_title(title or f"{type(scheduler).__name__}: planned learning rate")
    axes.grid(alpha=0.3)
    axes.legend(loc="upper right")
    return render(canvas, path)


def figure(owner: str) -> Any:
    """A matplotlib Figure with an Agg canvas (no pyplot global state)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(
            f"{owner} needs matplotlib: pip install matplotlib "
            "(or the 'tensorboard' extra of flax_cyclic)."
        ) from error
    drawing = Figure(figsize=(8, 3.2), dpi=100)
    FigureCanvasAgg(drawing)
    return drawing


def render(drawing: Any, path: str | os.PathLike | None) -> np.ndarray:
    """Draws ``drawing``, saves it to ``path`` if given, and returns its RGB pixels."""
    drawing.tight_layout()
    drawing.canvas.draw()
    image = np.asarray(drawing.canvas.buffer_rgba())[..., :3].copy()
    if path is not None:
        drawing.savefig(os.fspath(path))
    return image
