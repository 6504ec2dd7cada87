"""Pictures of the planned schedule."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import host_lrs

from flax_cyclic import CyclicLR
from flax_cyclic.plotting import plot_schedule, schedule_values


def test_schedule_values_are_the_scheduler_values_and_leave_it_in_place():
    scheduler = CyclicLR([0.1, 0.2], [0.5, 0.6], step_size_up=3, mode="triangular2", last_epoch=7)
    values = schedule_values(scheduler, np.arange(30))
    expected = np.array(host_lrs(CyclicLR([0.1, 0.2], [0.5, 0.6], 3, mode="triangular2"), 30))
    np.testing.assert_allclose(values, expected, rtol=1e-6)
    assert scheduler.last_epoch == 7


def test_plot_schedule_draws_and_saves_a_png(tmp_path):
    path = tmp_path / "plan.png"
    image = plot_schedule(CyclicLR(0.1, 0.5, step_size_up=10), 60, path=path)
    assert image.shape == (320, 800, 3)
    assert image.dtype == np.uint8
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 10  # a drawing, not a blank canvas
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_schedule_samples_very_long_runs():
    # 600 million steps are drawn from ~4000 evaluated points.
    image = plot_schedule(CyclicLR(1e-3, 6e-3, step_size_up=10**8), 6 * 10**8)
    assert image.shape == (320, 800, 3)


def test_plot_schedule_rejects_a_bad_length():
    with pytest.raises(ValueError, match="num_steps=0"):
        plot_schedule(CyclicLR(), 0)
