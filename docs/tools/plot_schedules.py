"""Draws the figures of docs/schedulers.md: one PNG per scheduler configuration on the page.

    python docs/tools/plot_schedules.py [--output DIR]

Every curve is computed by the library itself: the learning rates with
:func:`flax_cyclic.plotting.schedule_values` (the jitted schedule of each scheduler), the
momentum of ``OneCycleLR`` with its ``as_momentum_schedule()``, and the learning rates of
``ReduceLROnPlateau`` (which has no schedule of the step) by stepping it through a made-up
validation loss. The figures are drawn on
matplotlib's Agg canvas, without pyplot, so nothing global is touched. Needs matplotlib
(the ``dev`` or ``tensorboard`` extra).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from flax_cyclic import (
    CosineAnnealingLR,
    CosineAnnealingWarmRestarts,
    CyclicLR,
    LinearLR,
    LRScheduler,
    OneCycleLR,
    ReduceLROnPlateau,
    SequentialLR,
    TriangularLR,
)
from flax_cyclic.plotting import schedule_values

DEFAULT_OUTPUT = pathlib.Path(__file__).resolve().parents[1] / "images"
"""Where the figures go by default: ``docs/images``."""

DPI = 100
"""Pixels per inch of every figure."""

FIGURE_SIZES: dict[str, tuple[float, float]] = {
    "schedule_triangular.png": (6.4, 3.2),
    "schedule_cyclic_modes.png": (6.4, 5.6),
    "schedule_onecycle.png": (6.4, 4.8),
    "schedule_cosine.png": (6.4, 3.2),
    "schedule_warm_restarts.png": (6.4, 5.6),
    "schedule_warmup_cyclic.png": (6.4, 3.6),
    "schedule_plateau.png": (6.4, 4.8),
}
"""Each figure's file name and its size in inches (width, height)."""

_COLORS = ("tab:blue", "tab:orange", "tab:green")


def _lrs(scheduler: LRScheduler, steps: np.ndarray) -> np.ndarray:
    """The learning rate of the scheduler's first parameter group at ``steps``."""
    return schedule_values(scheduler, steps)[:, 0]


def _momentums(scheduler: LRScheduler, steps: np.ndarray) -> np.ndarray:
    """The cycled momentum of the scheduler's first parameter group at ``steps``."""
    schedule = scheduler.as_momentum_schedule(0)
    return np.asarray(jax.vmap(schedule)(jnp.asarray(steps)))


def _style(axes: Axes, title: str, ylabel: str = "learning rate", xlabel: bool = True) -> None:
    """Title, axis labels and a light grid, in the small type the figures use."""
    axes.set_title(title, fontsize=9)
    axes.set_ylabel(ylabel, fontsize=8)
    if xlabel:
        axes.set_xlabel("step", fontsize=8)
    axes.tick_params(labelsize=7)
    axes.grid(alpha=0.3)


def _save(name: str, draw: Callable[[Figure], None], output_dir: pathlib.Path) -> pathlib.Path:
    """Makes the figure ``name`` at its size, lets ``draw`` fill it, and writes the PNG."""
    figure = Figure(figsize=FIGURE_SIZES[name], dpi=DPI)
    FigureCanvasAgg(figure)
    draw(figure)
    figure.tight_layout()
    path = output_dir / name
    # matplotlib's "Software" entry records its version: text renders differently from one
    # release to the next, and tests/test_docs_plots.py compares with drawings of the same one.
    figure.savefig(path, dpi=DPI)
    return path


def draw_triangular(figure: Figure) -> None:
    """``TriangularLR``: three cycles of the basic triangle."""
    scheduler = TriangularLR(base_lr=0.001, max_lr=0.006, step_size=2000)
    steps = np.arange(3 * 2 * 2000 + 1)
    axes = figure.add_subplot()
    axes.plot(steps, _lrs(scheduler, steps), color=_COLORS[0], linewidth=1.5)
    _style(axes, "TriangularLR(base_lr=0.001, max_lr=0.006, step_size=2000)")


def draw_cyclic_modes(figure: Figure) -> None:
    """``CyclicLR``: triangular, triangular2 and exp_range, one panel each, same bounds."""
    config = {"base_lr": 0.001, "max_lr": 0.006, "step_size_up": 2000}
    steps = np.arange(3 * 2 * 2000 + 1)
    modes = [
        ("triangular", {}),
        ("triangular2", {}),
        ("exp_range", {"gamma": 0.9999}),
    ]
    panels = figure.subplots(len(modes), 1, sharex=True, sharey=True)
    for index, (axes, (mode, extra), color) in enumerate(zip(panels, modes, _COLORS, strict=True)):
        scheduler = CyclicLR(**config, mode=mode, **extra)
        axes.plot(steps, _lrs(scheduler, steps), color=color, linewidth=1.5)
        arguments = ", ".join(f"{key}={value}" for key, value in extra.items())
        title = f"mode='{mode}'" + (f", {arguments}" if arguments else "")
        if index == 0:
            title = "CyclicLR(base_lr=0.001, max_lr=0.006, step_size_up=2000): " + title
        _style(axes, title, xlabel=index == len(modes) - 1)


def draw_onecycle(figure: Figure) -> None:
    """``OneCycleLR``: cos, linear and three_phase; the learning rate above, momentum below."""
    config = {"max_lr": 0.01, "total_steps": 1000}
    variants = [
        ("anneal_strategy='cos'", {"anneal_strategy": "cos"}),
        ("anneal_strategy='linear'", {"anneal_strategy": "linear"}),
        ("three_phase=True (cos)", {"three_phase": True}),
    ]
    steps = np.arange(config["total_steps"])
    lr_axes, momentum_axes = figure.subplots(2, 1, sharex=True)
    for (label, extra), color in zip(variants, _COLORS, strict=True):
        scheduler = OneCycleLR(**config, **extra)
        lr_axes.plot(steps, _lrs(scheduler, steps), color=color, linewidth=1.5, label=label)
        momentum_axes.plot(steps, _momentums(scheduler, steps), color=color, linewidth=1.5)
    _style(lr_axes, "OneCycleLR(max_lr=0.01, total_steps=1000), pct_start=0.3", xlabel=False)
    lr_axes.legend(fontsize=7, loc="upper right")
    _style(momentum_axes, "momentum: base_momentum=0.85, max_momentum=0.95", "momentum")


def draw_cosine(figure: Figure) -> None:
    """``CosineAnnealingLR`` over ``2 * T_max`` steps: down to ``eta_min``, then up again."""
    t_max = 1000
    scheduler = CosineAnnealingLR(base_lr=0.1, T_max=t_max, eta_min=0.001)
    steps = np.arange(2 * t_max + 1)
    axes = figure.add_subplot()
    axes.plot(steps, _lrs(scheduler, steps), color=_COLORS[0], linewidth=1.5)
    axes.axvline(t_max, color="gray", linestyle=":", linewidth=1)
    axes.annotate(
        "T_max", (t_max, 0.05), xytext=(4, 0), textcoords="offset points", fontsize=7, color="gray"
    )
    _style(axes, "CosineAnnealingLR(base_lr=0.1, T_max=1000, eta_min=0.001)")


def draw_warm_restarts(figure: Figure) -> None:
    """``CosineAnnealingWarmRestarts``: plain, with ``decay``, with a warm-up in every cycle."""
    config = {"base_lr": 0.1, "T_0": 200, "T_mult": 2}
    variants = [
        {},
        {"decay": 0.7},
        {"warmup_steps": 50, "warmup": "every"},
    ]
    steps = np.arange(200 + 400 + 800)
    panels = figure.subplots(len(variants), 1, sharex=True, sharey=True)
    for index, (axes, extra, color) in enumerate(zip(panels, variants, _COLORS, strict=True)):
        scheduler = CosineAnnealingWarmRestarts(**config, **extra)
        axes.plot(steps, _lrs(scheduler, steps), color=color, linewidth=1.5)
        for restart in (200, 600):
            axes.axvline(restart, color="gray", linestyle=":", linewidth=1)
        arguments = ", ".join(f"{key}={value!r}" for key, value in extra.items())
        title = "with " + arguments if arguments else "no decay, no warm-up (as PyTorch)"
        if index == 0:
            title = f"CosineAnnealingWarmRestarts(base_lr=0.1, T_0=200, T_mult=2)\n{title}"
        _style(axes, title, xlabel=index == len(variants) - 1)


def draw_warmup_cyclic(figure: Figure) -> None:
    """``SequentialLR``: ``LinearLR`` warm-up, then ``CyclicLR``; the warm-up zoomed in left."""
    scheduler = SequentialLR(
        [LinearLR(0.01, start_factor=0.1, total_iters=100), CyclicLR(0.01, 0.1, step_size_up=500)],
        milestones=[100],
    )
    steps = np.arange(scheduler.preview_steps + 1)
    values = _lrs(scheduler, steps)
    zoom, axes = figure.subplots(1, 2, gridspec_kw={"width_ratios": [1, 3]})
    for panel, shown in ((zoom, slice(0, 301)), (axes, slice(None))):
        panel.plot(steps[shown], values[shown], color=_COLORS[0], linewidth=1.5)
        panel.axvline(100, color="gray", linestyle=":", linewidth=1)
    _style(zoom, "steps 0-300: the warm-up")
    _style(axes, "then three cycles (milestone 100 dotted)")
    axes.set_ylabel("")
    figure.suptitle(
        "SequentialLR([LinearLR(0.01, start_factor=0.1, total_iters=100),\n"
        "CyclicLR(0.01, 0.1, step_size_up=500)], milestones=[100])",
        fontsize=9,
    )


def plateau_loss(evaluation: int) -> float:
    """A made-up validation loss: it falls, then levels off (with a little wobble)."""
    return 0.35 + 0.65 * float(np.exp(-evaluation / 4)) + 0.01 * float(np.sin(1.3 * evaluation))


def draw_plateau(figure: Figure) -> None:
    """``ReduceLROnPlateau``: the monitored loss above, the learning rate it leads to below."""
    scheduler = ReduceLROnPlateau(0.1, mode="min", factor=0.5, patience=3, cooldown=2, min_lr=0.005)
    evaluations = np.arange(60)
    losses = [plateau_loss(int(e)) for e in evaluations]
    lrs = []
    for loss in losses:
        scheduler.step(loss)
        lrs.append(scheduler.get_last_lr()[0])
    loss_axes, lr_axes = figure.subplots(2, 1, sharex=True)
    loss_axes.plot(evaluations, losses, color=_COLORS[1], linewidth=1.5, marker=".", markersize=3)
    _style(loss_axes, "the monitored metric: step(val_loss) after each evaluation", "val_loss")
    loss_axes.set_xlabel("")
    lr_axes.plot(evaluations, lrs, color=_COLORS[0], linewidth=1.5, drawstyle="steps-post")
    _style(
        lr_axes,
        "ReduceLROnPlateau(0.1, factor=0.5, patience=3, cooldown=2, min_lr=0.005)",
    )
    lr_axes.set_xlabel("evaluation (step(metric) calls)", fontsize=8)


FIGURES: dict[str, Callable[[Figure], None]] = {
    "schedule_triangular.png": draw_triangular,
    "schedule_cyclic_modes.png": draw_cyclic_modes,
    "schedule_onecycle.png": draw_onecycle,
    "schedule_cosine.png": draw_cosine,
    "schedule_warm_restarts.png": draw_warm_restarts,
    "schedule_warmup_cyclic.png": draw_warmup_cyclic,
    "schedule_plateau.png": draw_plateau,
}
"""Each figure's file name and the function that draws it."""


def main(output_dir: str | os.PathLike = DEFAULT_OUTPUT) -> list[pathlib.Path]:
    """Draws every figure into ``output_dir`` (created if missing).

    Args:
        output_dir: The folder to write the PNGs to.

    Returns:
        The paths of the written PNGs, in the order of :data:`FIGURES`.
    """
    output = pathlib.Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    return [_save(name, draw, output) for name, draw in FIGURES.items()]


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--output",
        type=pathlib.Path,
        default=DEFAULT_OUTPUT,
        help=f"folder for the PNGs (default: {DEFAULT_OUTPUT})",
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    for written in main(_parse_args(sys.argv[1:]).output):
        print(f"wrote {written}")
