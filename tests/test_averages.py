"""init_average / update_average on pytrees: float64 references, the EMA's closed form, jit, and a
Linen loop that averages at the cycle ends and resumes bitwise through Checkpointer(state=...)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn
from flax.training import train_state

from flax_cyclic import (
    Checkpointer,
    CyclicLR,
    init_average,
    set_hyperparams,
    update_average,
)

RNG = np.random.default_rng(0)
SNAPSHOTS = [
    {"w": RNG.normal(size=(3, 2)).astype(np.float32), "b": RNG.normal(size=2).astype(np.float16)}
    for _ in range(7)
]


def test_the_mean_equals_a_float64_mean_of_the_snapshots_taken():
    average = init_average(SNAPSHOTS[0])
    takes = [True, False, True, True, False, True, True]
    for params, take in zip(SNAPSHOTS, takes, strict=True):
        average = jax.jit(update_average)(average, params, take=take)
    taken = [p for p, t in zip(SNAPSHOTS, takes, strict=True) if t]
    assert int(average.snapshots) == 5
    for name in ("w", "b"):
        expected = np.mean([np.asarray(p[name], np.float64) for p in taken], axis=0)
        assert average.mean[name].dtype == jnp.float32
        np.testing.assert_allclose(average.mean[name], expected, rtol=1e-6, atol=1e-7)


def test_the_ema_equals_its_closed_form():
    decay, average = 0.75, init_average(SNAPSHOTS[0])
    for params in SNAPSHOTS:
        average = update_average(average, params, decay=decay)
    n = len(SNAPSHOTS)
    weights = [decay ** (n - 1)] + [(1 - decay) * decay ** (n - 1 - i) for i in range(1, n)]
    for name in ("w", "b"):
        leaves = [np.asarray(p[name], np.float64) for p in SNAPSHOTS]
        expected = sum(w * leaf for w, leaf in zip(weights, leaves, strict=True))
        np.testing.assert_allclose(average.mean[name], expected, rtol=1e-6, atol=1e-7)


def test_nothing_taken_is_bitwise_the_same_and_non_finite_is_refused():
    average = update_average(init_average(SNAPSHOTS[0]), SNAPSHOTS[0])
    same = update_average(average, SNAPSHOTS[1], take=False)
    for a, b in zip(jax.tree.leaves(same), jax.tree.leaves(average), strict=True):
        np.testing.assert_array_equal(a, b)
    bad = {"w": SNAPSHOTS[1]["w"].copy(), "b": SNAPSHOTS[1]["b"]}
    bad["w"][0, 0] = np.inf
    refused = update_average(average, bad)
    assert (int(refused.snapshots), int(refused.refused)) == (1, 1)
    np.testing.assert_array_equal(refused.mean["w"], average.mean["w"])


def test_integer_leaves_are_refused_by_path():
    with pytest.raises(TypeError, match=r"the leaf \['step'\] is int32, not floating point"):
        init_average({"w": np.zeros(2, np.float32), "step": np.zeros((), np.int32)})


dense = nn.Dense(3)


@jax.jit
def _step(state, average, batch, learning_rate, take):
    state = state.replace(opt_state=set_hyperparams(state.opt_state, learning_rate=learning_rate))
    x, y = batch

    def loss_fn(params):
        logits = dense.apply(params, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    state = state.apply_gradients(grads=jax.grad(loss_fn)(state.params))
    return state, update_average(average, state.params, take=take)


def _linen_loop(directory, num_steps):
    batches = [
        (x, (x.sum(1) > 0).astype(np.int32))
        for x in np.random.default_rng(1).normal(size=(8, 16, 4)).astype(np.float32)
    ]
    params = dense.init(jax.random.key(0), batches[0][0])
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.0, momentum=0.9)
    state = train_state.TrainState.create(apply_fn=dense.apply, params=params, tx=tx)
    state = state.replace(step=jnp.zeros((), jnp.int32))
    scheduler = CyclicLR(base_lr=0.01, max_lr=0.2, step_size_up=3, step_size_down=4)
    checkpointer = Checkpointer(directory, every_steps=5, every_epoch=False)
    training = {"train": state, "average": init_average(params)}
    taken = []
    with checkpointer.resume(state=training, callbacks={"scheduler": scheduler}) as run:
        training = run.state
        for step in run.steps(num_steps):
            count = scheduler.last_epoch  # the update's scheduler step: is it a cycle's end?
            take = scheduler.next_cycle_end(count) == count
            taken += [step] * take
            state, average = _step(
                training["train"], training["average"], batches[step % len(batches)],
                scheduler.get_last_lr()[0], take,
            )  # fmt: skip
            training = {"train": state, "average": average}
            scheduler.step()
            run.step_done(state=training)
    return training, taken


def test_a_linen_loop_averages_the_cycle_ends_and_resumes_bitwise(tmp_path):
    whole, taken = _linen_loop(tmp_path / "whole", 30)
    assert taken == [7, 14, 21, 28]
    _linen_loop(tmp_path / "parts", 12)  # saved at 10 and 12 (its end)
    resumed, taken_after = _linen_loop(tmp_path / "parts", 30)
    assert taken_after == [14, 21, 28]
    assert int(resumed["average"].snapshots) == 4
    for a, b in zip(jax.tree.leaves(resumed), jax.tree.leaves(whole), strict=True):
        np.testing.assert_array_equal(a, b)
