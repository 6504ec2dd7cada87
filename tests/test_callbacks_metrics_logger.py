"""MetricsLogger: train metrics through a CLU writer, continuous across a resumed run."""

from __future__ import annotations

import numpy as np
import optax
from flax import nnx
from helpers import LOGGED_SCHEDULE, host_lrs, tensorboard_series, tiny_batches, tiny_mlp

from flax_cyclic import CallbackList, CyclicLR, LRSchedulerCallback, MetricsLogger, create_writer
from flax_cyclic.steps import classification_train_step


def _hand_written_run(logdir, scheduler, steps):
    """A hand-written loop (no Trainer) logging through the LR callback and a MetricsLogger."""
    model = tiny_mlp(0, hidden=16, out_seed=1)
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.0, momentum=0.9)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    writer = create_writer(logdir)
    callbacks = [
        LRSchedulerCallback(scheduler, writer=writer),
        MetricsLogger(writer, every_steps=1),
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
    series = tensorboard_series(tmp_path)
    assert [step for step, _ in series["learning_rate"]] == list(range(30))
    expected = [lrs[0] for lrs in host_lrs(CyclicLR(**LOGGED_SCHEDULE), 30)]
    np.testing.assert_allclose([v for _, v in series["learning_rate"]], expected, rtol=1e-6)
    # The loop's other tags are on the same index, continuous too.
    assert [step for step, _ in series["train/loss"]] == list(range(30))
    # The configuration and the plan belong to the run that started at step 0: written once.
    assert [step for step, _ in series["lr_schedule"]] == [0]
    assert [step for step, _ in series["_hparams_/session_start_info"]] == [0]
