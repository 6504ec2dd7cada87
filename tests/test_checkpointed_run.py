"""CheckpointedRun (Checkpointer.resume): a loop's resume, cadence, final save and SIGTERM.

The whole loop is checked against an uninterrupted run of the same loop (every array, bitwise)
and against what is on disk (real Orbax checkpoints); docs/own_loop.md's loop, killed with
SIGKILL in a worker process, is tests/test_own_loop.py's.
"""

from __future__ import annotations

import logging
import os
import signal

import grain
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from helpers import tiny_batches, tiny_setup

from flax_cyclic import (
    CallbackList,
    CheckpointedRun,
    Checkpointer,
    CheckpointError,
    CyclicLR,
    LRSchedulerCallback,
    WeightAveraging,
    set_hyperparams,
)
from flax_cyclic.steps import classification_train_step

BATCHES = tiny_batches(count=12)
step_fn = nnx.jit(classification_train_step)


class Stop(Exception):
    """Where a test interrupts a loop."""


def nnx_loop(
    directory, num_steps, *, every_steps=4, fail_at=None, fail_before_update=False, extra=()
):
    """A tiny NNX loop with an LR callback (and ``extra`` callbacks); ``fail_at``: raise in that
    step (after its update)."""
    model, optimizer = tiny_setup()
    callbacks = CallbackList(
        [LRSchedulerCallback(CyclicLR(0.01, 0.1, step_size_up=3)), *extra],
        model=model,
        optimizer=optimizer,
    )
    checkpointer = Checkpointer(directory, every_steps=every_steps, every_epoch=False)
    with checkpointer.resume(model=model, optimizer=optimizer, callbacks=callbacks) as run:
        callbacks.on_train_begin()
        for step in run.steps(num_steps):
            if step == fail_at and fail_before_update:
                raise Stop(step)
            callbacks.on_step_begin()
            callbacks.on_step_end(step_fn(model, optimizer, BATCHES[step % len(BATCHES)]))
            if step == fail_at:
                raise Stop(step)
            run.step_done()
        callbacks.on_train_end()
    return run, model, optimizer, checkpointer


def arrays(*objects):
    return [np.asarray(leaf) for obj in objects for leaf in jax.tree.leaves(nnx.state(obj))]


def assert_bitwise(got, expected):
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    _, model, optimizer, _ = nnx_loop(tmp_path_factory.mktemp("whole"), 10)
    return arrays(model, optimizer)


def test_a_fresh_run_saves_on_the_cadence_and_its_last_step_on_the_way_out(tmp_path):
    run, *_, checkpointer = nnx_loop(tmp_path, 10)
    assert (run.step, run.resumed_from, run.preempted) == (10, None, False)
    assert checkpointer.all_steps() == [4, 8, 10]  # 10: the final save
    assert checkpointer.restore(model=tiny_setup()[0], optimizer=tiny_setup()[1]).trainer == {
        "step": 10
    }


@pytest.mark.parametrize("before_update", [True, False], ids=["before-update", "after-update"])
def test_an_error_saves_the_last_completed_step_only_if_the_state_is_still_its(
    tmp_path, uninterrupted, before_update, caplog
):
    with pytest.raises(Stop):
        nnx_loop(tmp_path, 10, fail_at=6, fail_before_update=before_update)
    kept = Checkpointer(tmp_path).all_steps()
    if before_update:  # nothing moved since step 6 was completed: it is saved
        assert kept == [4, 6]
    else:  # update 6 was made but not counted: saving it as step 6 would lie
        assert kept == [4]
        assert "step 6 was not saved on the way out of Stop" in caplog.text
        assert "the optimizer made 7 updates but step_done() counted 6" in caplog.text
    caplog.set_level(logging.INFO, logger="flax_cyclic")
    run, model, optimizer, _ = nnx_loop(tmp_path, 10)
    assert run.resumed_from == kept[-1]
    assert f"Resumed from the checkpoint at step {kept[-1]} in {tmp_path}.\n" in caplog.text
    assert_bitwise(arrays(model, optimizer), uninterrupted)


def test_an_uncounted_update_is_refused_on_a_normal_exit_and_nothing_is_saved(tmp_path):
    model, optimizer = tiny_setup()
    checkpointer = Checkpointer(tmp_path, every_steps=100, every_epoch=False)

    def loop():
        with checkpointer.resume(model=model, optimizer=optimizer) as run:
            step_fn(model, optimizer, BATCHES[0])
            run.step_done()
            step_fn(model, optimizer, BATCHES[1])

    with pytest.raises(RuntimeError, match=r"made 2 updates but step_done\(\) counted 1"):
        loop()
    assert checkpointer.all_steps() == []


@pytest.mark.parametrize("calls", [0, 2])
def test_a_step_without_exactly_one_step_done_is_an_error(tmp_path, calls):
    model, optimizer = tiny_setup()
    run = Checkpointer(tmp_path, every_epoch=False).resume(model=model, optimizer=optimizer)

    def loop():
        with run:
            for _ in run.steps(3):
                for _ in range(calls):
                    step_fn(model, optimizer, BATCHES[0])
                    run.step_done()

    with pytest.raises(RuntimeError, match=f"step 0 ended after {calls} calls of step_done"):
        loop()


def test_callbacks_that_counted_another_number_of_steps_are_refused_at_a_save(tmp_path):
    model, optimizer = tiny_setup()
    callbacks = CallbackList(model=model, optimizer=optimizer)
    checkpointer = Checkpointer(tmp_path, every_steps=1, every_epoch=False)

    def loop():
        with checkpointer.resume(model=model, optimizer=optimizer, callbacks=callbacks) as run:
            callbacks.on_train_begin()
            step_fn(model, optimizer, BATCHES[0])
            run.step_done()  # before on_step_end: the saved callbacks' state would lag

    with pytest.raises(RuntimeError, match=r"the callbacks counted 0 steps, the run 1"):
        loop()


def test_a_sigterm_saves_the_step_it_arrives_in_and_ends_the_steps(tmp_path, caplog):
    model, optimizer = tiny_setup()
    checkpointer = Checkpointer(tmp_path, every_steps=100, every_epoch=False)
    previous = signal.getsignal(signal.SIGTERM)
    with checkpointer.resume(model=model, optimizer=optimizer) as run:
        for step in run.steps(10):
            step_fn(model, optimizer, BATCHES[step])
            if step == 2:
                os.kill(os.getpid(), signal.SIGTERM)
            run.step_done()
    assert (run.step, run.preempted) == (3, True)
    assert checkpointer.all_steps() == [3]
    assert "SIGTERM: saved step 3" in caplog.text
    assert signal.getsignal(signal.SIGTERM) == previous  # the handler is put back


def test_the_run_must_be_entered_once(tmp_path):
    model, optimizer = tiny_setup()
    run = Checkpointer(tmp_path).resume(model=model, optimizer=optimizer)
    with pytest.raises(RuntimeError, match=r"enter the run first: `with checkpointer.resume"):
        run.step_done()
    with run, pytest.raises(RuntimeError, match="entered already"), run:
        pass


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"callbacks": [1]}, "callbacks= must be a CallbackList or a mapping"),
        ({"callbacks": {"scheduler": 3}}, "callbacks= must be a CallbackList or a mapping"),
        ({"data": iter([1, 2])}, "data= must be an iterator with get_state"),
        ({"state": {"w": np.ones(2)}}, "one of the two"),
    ],
)
def test_bad_arguments_are_refused_by_name(tmp_path, kwargs, message):
    model, optimizer = tiny_setup()
    with pytest.raises(TypeError, match=message):
        Checkpointer(tmp_path).resume(model=model, optimizer=optimizer, **kwargs)


# -- A pytree state (optax's (params, opt_state)), a scheduler by name, a data iterator --------

TX = optax.inject_hyperparams(optax.adam)(learning_rate=0.0)


@jax.jit
def pytree_step(state, batch, learning_rate):
    params, opt_state = state
    opt_state = set_hyperparams(opt_state, learning_rate=learning_rate)
    x, labels = batch

    def loss_fn(params):
        logits = x @ params["w"]
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    grads = jax.grad(loss_fn)(params)
    updates, opt_state = TX.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state


def pytree_loop(directory, num_steps, *, stop_after=None, with_data=True):
    """Plain optax with a grain iterator whose position the checkpoints hold."""
    params = {"w": jnp.full((8, 3), 0.01, jnp.float32)}
    scheduler = CyclicLR(0.01, 0.1, step_size_up=4)
    data = grain.MapDataset.range(100).to_iter_dataset()
    iterator = iter(data)
    checkpointer = Checkpointer(directory, every_steps=3, every_epoch=False)
    seen = []
    with checkpointer.resume(
        state=(params, TX.init(params)),
        callbacks={"scheduler": scheduler},
        data=iterator if with_data else None,
    ) as run:
        state = run.state
        for step in run.steps(num_steps):
            index = int(next(iterator))
            seen.append(index)
            state = pytree_step(state, BATCHES[index % len(BATCHES)], scheduler.get_last_lr()[0])
            scheduler.step()
            run.step_done(state=state)
            if step + 1 == stop_after:
                raise Stop(step)
    return run, seen


def test_a_pytree_state_resumes_exactly_with_its_scheduler_and_data_position(tmp_path):
    whole, seen_whole = pytree_loop(tmp_path / "whole", 11)
    with pytest.raises(Stop):
        pytree_loop(tmp_path / "cut", 11, stop_after=7)  # 7: completed, and saved on the way out
    resumed, seen = pytree_loop(tmp_path / "cut", 11)
    assert resumed.resumed_from == 7
    assert seen == seen_whole[7:] == list(range(7, 11))  # the data went on where it stopped
    assert_bitwise(jax.tree.leaves(resumed.state), jax.tree.leaves(whole.state))
    lr = resumed.state[1].hyperparams["learning_rate"]  # the last update's: step 10's
    expected = CyclicLR(0.01, 0.1, step_size_up=4, last_epoch=10).get_last_lr()[0]
    assert float(lr) == np.float32(expected)


def test_a_pytree_run_needs_the_state_at_each_step_done(tmp_path):
    run = Checkpointer(tmp_path).resume(state={"w": jnp.ones(2)})
    with run, pytest.raises(TypeError, match="built with state=: pass the state after this"):
        run.step_done()


def test_a_checkpoint_with_a_data_position_is_not_resumed_without_data(tmp_path):
    pytree_loop(tmp_path, 3)
    with pytest.raises(CheckpointError, match=r"holds the position of the data iterator"):
        pytree_loop(tmp_path, 5, with_data=False)


def test_saved_states_by_other_names_are_refused(tmp_path):
    pytree_loop(tmp_path, 3)
    params = {"w": jnp.zeros((8, 3))}
    run = Checkpointer(tmp_path).resume(
        state=(params, TX.init(params)),
        callbacks={"lr": CyclicLR(0.01, 0.1, step_size_up=4)},
        data=iter(grain.MapDataset.range(4).to_iter_dataset()),
    )
    with pytest.raises(CheckpointError, match=r"\['scheduler'\], but callbacks= names \['lr'\]"):
        run.__enter__()


def test_checkpointed_run_is_the_public_type(tmp_path):
    model, optimizer = tiny_setup()
    run = Checkpointer(tmp_path).resume(model=model, optimizer=optimizer)
    assert isinstance(run, CheckpointedRun)


def test_a_weight_average_in_the_callbacks_is_saved_and_resumes_bitwise(tmp_path):
    whole = WeightAveraging()  # at the cycle ends: after 7 updates (scheduler step 6)
    nnx_loop(tmp_path / "whole", 14, extra=[whole])
    with pytest.raises(Stop):
        nnx_loop(tmp_path / "parts", 14, fail_at=9, extra=[WeightAveraging()])  # saved at 8
    resumed = WeightAveraging()
    run, *_ = nnx_loop(tmp_path / "parts", 14, extra=[resumed])
    assert run.resumed_from == 8
    assert run.extra == {}  # the average is the callback's, not the user's extra state
    assert resumed.snapshots == whole.snapshots == 2  # after 7 and 13 updates
    assert_bitwise(arrays(resumed.averaged_model()), arrays(whole.averaged_model()))
