"""ProgressBar: the line it draws on a terminal, and nothing when output is not one."""

from __future__ import annotations

import io

from helpers import LOGGED_STEPS, logged_run
from rich.console import Console

from flax_cyclic import ProgressBar


def test_progress_bar_shows_step_loss_lr_and_cycle(tmp_path):
    output = io.StringIO()
    console = Console(file=output, force_terminal=True, width=160)
    logged_run(tmp_path, callbacks=[ProgressBar(console=console, every_steps=4)])
    text = output.getvalue()
    assert f"{LOGGED_STEPS}/{LOGGED_STEPS}" in text
    for shown in ("loss ", "lr 0.0325", "cycle 3"):  # the final refresh: step 24
        assert shown in text


def test_progress_bar_is_off_when_not_a_terminal(tmp_path):
    output = io.StringIO()
    bar = ProgressBar(console=Console(file=output, force_terminal=False))
    assert not bar.enabled
    logged_run(tmp_path, callbacks=[bar])
    assert output.getvalue() == ""
