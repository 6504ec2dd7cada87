"""Pictures of schedules (matplotlib, imported lazily)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from flax_cyclic import _checks
from flax_cyclic.schedulers import LRScheduler

if TYPE_CHECKING:
    from flax_cyclic.lr_finder import LRFinderResult

__all__ = ["plot_lr_find", "plot_schedule", "schedule_values"]


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
    figure = _figure("plot_schedule")
    # At most ~4000 points: enough for any figure, cheap for cycles of millions of steps.
    steps = np.unique(np.linspace(0, num_steps - 1, min(num_steps, 4001)).round().astype(np.int32))
    values = schedule_values(scheduler, steps)
    axes = figure.add_subplot()
    for group in range(values.shape[1]):
        label = f"group {group}" if values.shape[1] > 1 else "learning rate"
        axes.plot(steps, values[:, group], label=label, linewidth=1.5)
    axes.set_xlabel("step")
    axes.set_ylabel("learning rate")
    axes.set_title(title or f"{type(scheduler).__name__}: planned learning rate")
    axes.grid(alpha=0.3)
    axes.legend(loc="upper right")
    return _render(figure, path)


def plot_lr_find(
    result: LRFinderResult,
    *,
    path: str | os.PathLike | None = None,
    title: str | None = None,
) -> np.ndarray:
    """Plots an LR range test: loss against learning rate (log scale), suggestions marked.

    Args:
        result: What [`lr_find`][flax_cyclic.lr_find] returned.
        path: If given, the figure is also saved there as a PNG.
        title: The figure's title.

    Returns:
        The picture as an RGB ``uint8`` array of shape ``(height, width, 3)``.

    Raises:
        ImportError: If matplotlib is not installed.
    """
    figure = _figure("plot_lr_find")
    axes = figure.add_subplot()
    axes.plot(result.lrs, result.losses, color="0.75", linewidth=1, label="loss")
    axes.plot(result.lrs, result.smoothed_losses, color="C0", linewidth=1.8, label="smoothed")
    markers = {**result.suggestions, "minimum": result.minimum}
    for (name, lr), color in zip(markers.items(), ("C1", "C2", "C3", "C4"), strict=True):
        if lr is not None:
            axes.axvline(lr, color=color, linestyle="--", linewidth=1, label=f"{name}: {lr:.3g}")
    axes.set_xscale("log")
    axes.set_xlabel("learning rate")
    axes.set_ylabel("loss")
    # Past the minimum the loss explodes; show the range up to twice the early loss.
    smoothed = np.asarray(result.smoothed_losses)
    low = min(float(np.min(result.losses)), float(smoothed.min()))
    high = max(2 * float(np.max(smoothed[: max(1, len(smoothed) // 2)])), low + 1e-12)
    axes.set_ylim(low - 0.05 * (high - low), high)
    axes.set_title(title or f"LR range test ({result.stop_reason}, {len(result.lrs)} steps)")
    axes.grid(alpha=0.3, which="both")
    axes.legend(loc="upper left", fontsize="small")
    return _render(figure, path)


def _figure(owner: str) -> Any:
    """A matplotlib Figure with an Agg canvas (no pyplot global state)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(
            f"{owner} needs matplotlib: pip install matplotlib "
            "(or the 'tensorboard' extra of flax_cyclic)."
        ) from error
    figure = Figure(figsize=(8, 3.2), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _render(figure: Any, path: str | os.PathLike | None) -> np.ndarray:
    """Draws ``figure``, saves it to ``path`` if given, and returns its RGB pixels."""
    figure.tight_layout()
    figure.canvas.draw()
    image = np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()
    if path is not None:
        figure.savefig(os.fspath(path))
    return image
