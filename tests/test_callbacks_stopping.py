"""TerminateOnNaN in a hand-written loop (the Trainer's case is in test_checkpoint.py)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from helpers import raises_exactly, tiny_batches, tiny_mlp

from flax_cyclic import CallbackList, NonFiniteError, TerminateOnNaN
from flax_cyclic.steps import classification_train_step


def test_a_hand_written_loop_stops_at_the_first_non_finite_loss():
    model = tiny_mlp()
    optimizer = nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)
    loop = CallbackList([TerminateOnNaN()], model=model, optimizer=optimizer)
    step = nnx.jit(classification_train_step)
    batches = tiny_batches()
    loop.on_train_begin()
    for x, y in batches[:3]:
        loop.on_step_begin()
        loop.on_step_end(step(model, optimizer, (x, y)))
    x, y = batches[3]
    x = x.copy()
    x[0, 0] = np.inf  # one bad input row makes the loss non-finite
    loop.on_step_begin()
    with raises_exactly(
        NonFiniteError,
        "TerminateOnNaN: train step 3 gave loss=nan (hooks count steps from 0). Training "
        "stopped at once; lower the learning rate (e.g. max_lr) or clip the gradients "
        "(optax.clip_by_global_norm).",
    ):
        loop.on_step_end(step(model, optimizer, (jnp.asarray(x), y)))


@pytest.mark.parametrize("monitor", ["loss", [1]])
def test_monitor_must_be_a_list_of_names(monitor):
    with raises_exactly(
        TypeError,
        "TerminateOnNaN: `monitor` must be a list of metric names or None, got "
        f"monitor={monitor!r}; e.g. monitor=['loss'].",
    ):
        TerminateOnNaN(monitor=monitor)
