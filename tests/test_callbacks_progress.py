"""ProgressBar: the line it draws on a terminal, nothing when output is not one, and no state:
it may come and go between a run and its resume."""

from __future__ import annotations

import io
import logging

import optax
import pytest
from flax import nnx
from helpers import LOGGED_STEPS, RecordingWriter, logged_run, tiny_batches, tiny_mlp
from rich.console import Console

from flax_cyclic import Checkpointer, CyclicLR, LRSchedulerCallback, ProgressBar, Trainer


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


def _checkpointed_trainer(directory, **kwargs):
    model = tiny_mlp(0, hidden=16)
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.0, momentum=0.9)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    scheduler = CyclicLR(base_lr=0.01, max_lr=0.1, step_size_up=2)
    checkpointer = Checkpointer(directory, every_steps=2)
    return Trainer(
        model,
        optimizer,
        callbacks=[LRSchedulerCallback(scheduler)],
        checkpointer=checkpointer,
        **kwargs,
    )


@pytest.mark.parametrize(
    ("first", "then"),
    [
        ({}, {"progress": False}),  # the default bar (off: no terminal here), then none
        ({"progress": False}, {}),
        # The writer's callbacks keep nothing at a save on a logging step either.
        ({"writer": RecordingWriter(), "log_every_steps": 2}, {"progress": False}),
    ],
)
def test_a_resume_with_the_progress_bar_added_or_removed_reports_nothing(
    tmp_path, caplog, first, then
):
    trainer = _checkpointed_trainer(tmp_path, **first)
    assert trainer.fit(tiny_batches(16, 4), num_steps=4).resumed_from is None
    resumed = _checkpointed_trainer(tmp_path, **then)
    with caplog.at_level(logging.WARNING, logger="flax_cyclic"):
        assert resumed.fit(tiny_batches(16, 4), num_steps=6).resumed_from == 4
    assert "not restored" not in caplog.text
