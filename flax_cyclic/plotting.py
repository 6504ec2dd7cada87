"""Pictures of schedules and of LR range tests (matplotlib, imported lazily)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from flax_cyclic._figures import plot_schedule, schedule_values

if TYPE_CHECKING:
    from flax_cyclic.lr_finder import LRFinderResult

__all__ = ["plot_lr_find", "plot_schedule", "schedule_values"]


def plot_lr_find(
    result: LRFinderResult,
    *,
    path: str | os.PathLike | None = None,
    title: str | None = None,
) -> np.ndarray:
    """Plots an LR range test: ``result.plot(path=path, title=title)``.

    See [`LRFinderResult.plot`][flax_cyclic.LRFinderResult.plot] for the picture and its
    arguments; ``result`` is what [`lr_find`][flax_cyclic.lr_find] returned.
    """
    return result.plot(path=path, title=title)
