"""MetricsLogger: train metrics through a CLU writer, continuous across a resumed run."""

from __future__ import annotations

import json

import numpy as np
import optax
import pytest
from flax import nnx
from helpers import (
    LOGGED_SCHEDULE,
    RecordingWriter,
    host_lrs,
    tensorboard_steps,
    tiny_batches,
    tiny_mlp,
)

from flax_cyclic import (
    CallbackList,
    CyclicLR,
    LRSchedulerCallback,
    MetricsLogger,
    create_writer,
    read_scalars,
)
from flax_cyclic.steps import classification_train_step


def _hand_written_run(logdir, scheduler, steps):
    """A hand-written loop (no Trainer) logging through the LR callback and a MetricsLogger."""
    model = tiny_mlp(0, hidden=16, out_seed=1)
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.0, momentum=0.9)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    writer = create_writer(logdir)
    callbacks = [
        LRSchedulerCallback(scheduler, writer=writer),
        MetricsLogger(writer, log_every_steps=1),
    ]
    loop = CallbackList(callbacks, model=model, optimizer=optimizer)
    step_fn = nnx.jit(classification_train_step)
    loop.on_train_begin()
    batches = tiny_batches(16, 8)
    for _ in range(steps):
        loop.on_step_begin()
        loop.on_step_end(step_fn(model, optimizer, batches[loop.step % len(batches)]))
    loop.on_train_end()
    writer.close()
    return loop


def test_a_run_resumed_with_last_epoch_continues_the_curves(tmp_path):
    first = _hand_written_run(tmp_path, CyclicLR(**LOGGED_SCHEDULE), 13)
    assert first.step == 13
    # A new process: the same command with the scheduler built at step 13, into the same logdir.
    second = _hand_written_run(tmp_path, CyclicLR(**LOGGED_SCHEDULE, last_epoch=13), 17)
    assert second.step == 30  # the loop learnt its starting step from the scheduler
    series = read_scalars(tmp_path)
    assert [step for step, _ in series["learning_rate"]] == list(range(1, 31))
    expected = [lrs[0] for lrs in host_lrs(CyclicLR(**LOGGED_SCHEDULE), 30)]
    np.testing.assert_allclose([v for _, v in series["learning_rate"]], expected, rtol=1e-6)
    # The loop's other tags are on the same steps, continuous too.
    assert [step for step, _ in series["train/loss"]] == list(range(1, 31))
    # The configuration and the plan belong to the run that started at step 0: written once.
    assert tensorboard_steps(tmp_path, "lr_schedule") == [0]
    assert tensorboard_steps(tmp_path, "_hparams_/session_start_info") == [0]


def feed_logger(logger, *, start, losses, evaluate_at=(), state=None):
    """Drives `logger` in a CallbackList from step `start`: update i reports losses[i], and an
    evaluation runs after the updates in `evaluate_at` (reporting that step as its loss, or -1
    before any update); returns the logger's state at the end. Also used by test_writers."""
    if state is not None:
        logger.load_state_dict(state)
    loop = CallbackList([logger], step=start)
    loop.on_train_begin()
    if loop.step in evaluate_at:
        loop.on_eval_end({"loss": -1.0})
    for i in range(start, start + len(losses)):
        loop.on_step_begin()
        loop.on_step_end({"loss": np.float32(losses[i])})
        if loop.step in evaluate_at:
            loop.on_eval_end({"loss": float(loop.step)})
    loop.on_train_end()
    return logger.state_dict()


def test_step_s_means_s_updates_completed():
    writer = RecordingWriter()
    losses = {i: float(i) for i in range(7)}
    feed_logger(
        MetricsLogger(writer, log_every_steps=3), start=0, losses=losses, evaluate_at=(0, 7)
    )
    # The means of updates 0..2 and 3..5 at steps 3 and 6; evaluations after 0 and 7 updates.
    assert writer.series("train/loss") == [(3, 1.0), (6, 4.0)]
    assert [step for step, _ in writer.series("steps_per_sec")] == [3, 6]
    assert writer.series("eval/loss") == [(0, -1.0), (7, 7.0)]


def test_a_resumed_run_writes_the_means_of_the_uninterrupted_run():
    losses = {i: float(i * i) for i in range(10)}
    uninterrupted = RecordingWriter()
    feed_logger(MetricsLogger(uninterrupted, log_every_steps=4), start=0, losses=losses)
    resumed = RecordingWriter()
    state = feed_logger(
        MetricsLogger(resumed, log_every_steps=4), start=0, losses=dict(list(losses.items())[:6])
    )
    state = json.loads(json.dumps(state))  # as a checkpoint keeps it
    rest = dict(list(losses.items())[6:])
    feed_logger(MetricsLogger(resumed, log_every_steps=4), start=6, losses=rest, state=state)
    assert uninterrupted.series("train/loss") == [(4, 3.5), (8, 31.5)]
    assert resumed.series("train/loss") == uninterrupted.series("train/loss")


def test_the_earlier_name_of_the_interval_still_works_with_a_warning():
    with pytest.warns(FutureWarning, match=r"^MetricsLogger: `every_steps` is now called"):
        logger = MetricsLogger(RecordingWriter(), every_steps=7)
    assert logger.log_every_steps == 7


def test_a_vector_train_metric_is_refused_at_its_first_step_naming_it():
    writer = RecordingWriter()
    loop = CallbackList([MetricsLogger(writer, log_every_steps=2)])
    loop.on_train_begin()
    loop.on_step_begin()
    with pytest.raises(
        TypeError,
        match=r"^MetricsLogger: metrics must be scalars, but 'accuracy' has shape \(10,\)",
    ):
        loop.on_step_end({"loss": np.float32(1.0), "accuracy": np.zeros(10, np.float32)})
    assert writer.scalars == []


def test_a_vector_eval_metric_is_refused_naming_it():
    writer = RecordingWriter()
    loop = CallbackList([MetricsLogger(writer)])
    loop.on_train_begin()
    with pytest.raises(
        TypeError, match=r"^MetricsLogger: metrics must be scalars, but 'recall' has shape \(3,\)"
    ):
        loop.on_eval_end({"loss": 0.5, "recall": np.asarray([0.1, 0.2, 0.3])})
    assert writer.scalars == []
