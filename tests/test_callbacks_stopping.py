"""TerminateOnNaN in a hand-written loop (the Trainer's case is in test_checkpoint.py)."""

from __future__ import annotations

import json
import logging
import re

import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from helpers import raises_exactly, tiny_batches, tiny_mlp, tiny_setup

from flax_cyclic import (
    Callback,
    CallbackList,
    Checkpointer,
    EarlyStopping,
    LRSchedulerCallback,
    NonFiniteError,
    ReduceLROnPlateau,
    TerminateOnNaN,
    Trainer,
)
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


# -- stop_training and EarlyStopping --


class _StopAt(Callback):
    def __init__(self, step):
        self.at, self.ended = step, False

    def on_step_end(self, loop, step, metrics):
        if step == self.at:
            loop.stop_training = True

    def on_train_end(self, loop):
        self.ended = True


def test_stop_training_ends_a_trainer_run_after_that_step_through_the_normal_end(tmp_path):
    model, optimizer = tiny_setup(lr=0.01)
    stop = _StopAt(4)
    checkpointer = Checkpointer(tmp_path, every_epoch=False, async_save=False)
    trainer = Trainer(model, optimizer, callbacks=[stop], checkpointer=checkpointer)
    history = trainer.fit(tiny_batches(16, 10), num_epochs=3)
    assert history.stopped
    assert not history.preempted
    assert trainer.step == 5
    assert stop.ended
    assert checkpointer.all_steps() == [5]  # the final save
    # A stopped run is complete: a new fit on its checkpoints trains nothing more.
    history = trainer.fit(tiny_batches(16, 10), num_steps=8)
    assert (history.stopped, history.resumed_from, trainer.step) == (True, 5, 5)


def _constant_eval_run(patience, **fit):
    """A run whose eval loss never improves (learning rate 0): EarlyStopping counts to patience."""
    model, optimizer = tiny_setup(lr=0.0)
    stopping = EarlyStopping("eval/loss", patience=patience)
    trainer = Trainer(model, optimizer, callbacks=[stopping])
    history = trainer.fit(
        tiny_batches(16, 10), eval_data=tiny_batches(16, 2, seed=1), eval_every_steps=2, **fit
    )
    return trainer, stopping, history


def test_early_stopping_stops_a_trainer_run_after_patience_evaluations_without_improvement():
    trainer, stopping, history = _constant_eval_run(2, num_epochs=5)
    # Evaluations at steps 2 (best), 4 (wait 1), 6 (wait 2: stop).
    assert [entry["step"] for entry in history.eval] == [2, 4, 6]
    assert history.stopped
    assert trainer.step == 6
    assert (stopping.best_step, stopping.wait, stopping.stopped_step) == (2, 2, 6)
    assert stopping.best == history.eval[0]["loss"]


def test_early_stopping_on_an_epoch_end_evaluation_ends_after_that_epoch():
    model, optimizer = tiny_setup(lr=0.0)
    epochs = []

    class Epochs(Callback):
        def on_epoch_end(self, loop, epoch, metrics):
            epochs.append(epoch)

    trainer = Trainer(
        model, optimizer, callbacks=[EarlyStopping(patience=1), Epochs()], progress=False
    )
    history = trainer.fit(tiny_batches(16, 3), num_epochs=10, eval_data=tiny_batches(16, 2))
    assert epochs == [0, 1]
    assert trainer.step == 6
    assert history.stopped


def test_early_stopping_on_a_train_metric_checks_each_epochs_mean():
    model, optimizer = tiny_setup(lr=0.0)
    stopping = EarlyStopping("train/loss", patience=1)
    history = Trainer(model, optimizer, callbacks=[stopping]).fit(tiny_batches(16, 3), num_epochs=9)
    assert len(history.train) == 2
    assert history.stopped
    assert stopping.best == history.train[0]["loss"]


def test_a_hand_written_loop_stops_when_early_stopping_says_so():
    model = tiny_mlp()
    optimizer = nnx.Optimizer(model, optax.sgd(0.0), wrt=nnx.Param)
    callbacks = CallbackList([EarlyStopping(patience=1)], model=model, optimizer=optimizer)
    step = nnx.jit(classification_train_step)
    evaluations = 0
    callbacks.on_train_begin()
    for batch in tiny_batches(16, 20):
        callbacks.on_step_begin()
        callbacks.on_step_end(step(model, optimizer, batch))
        evaluations += 1
        callbacks.on_eval_end({"loss": 1.0})  # no improvement after the first
        if callbacks.stop_training:
            break
    callbacks.on_train_end()
    assert evaluations == 2
    assert callbacks.step == 2


@pytest.mark.parametrize(
    ("mode", "min_delta", "values", "waits"),
    [
        ("min", 0.0, [1.0, 0.9, 0.9, 0.8], [0, 0, 1, 0]),
        ("min", 0.1, [1.0, 0.95, 0.89, 0.85], [0, 1, 0, 1]),
        ("max", 0.0, [0.5, 0.6, 0.55, 0.61], [0, 0, 1, 0]),
        ("max", 0.05, [0.5, 0.54, 0.56, 0.6], [0, 1, 0, 1]),
    ],
)
def test_improvement_is_by_more_than_min_delta_in_the_mode_s_direction(
    mode, min_delta, values, waits
):
    stopping = EarlyStopping("eval/acc", mode=mode, min_delta=min_delta, patience=10)
    loop = CallbackList([stopping])
    seen = []
    for value in values:
        loop.on_eval_end({"acc": value})
        seen.append(stopping.wait)
    assert seen == waits
    assert not loop.stop_training


def test_a_non_finite_metric_stops_at_once(caplog):
    loop = CallbackList([stopping := EarlyStopping(patience=5)])
    loop.on_eval_end({"loss": 1.0})
    loop.on_eval_end({"loss": float("nan")})
    assert loop.stop_training
    assert stopping.stopped_step == 0
    assert "eval/loss=nan at step 0 is not finite" in caplog.text


def test_restore_best_puts_the_weights_of_the_best_check_back():
    model = tiny_mlp()
    loop = CallbackList([stopping := EarlyStopping(restore_best=True, patience=5)], model=model)
    kernels = {}
    for step, loss in enumerate([0.9, 0.5, 0.7, 0.8]):
        model.hidden.kernel[...] = model.hidden.kernel[...] + 1.0  # "training"
        loop.step = step
        kernels[step] = np.asarray(model.hidden.kernel[...])
        loop.on_eval_end({"loss": loss})
    loop.on_train_end()
    assert stopping.best_step == 1
    np.testing.assert_array_equal(model.hidden.kernel[...], kernels[1])


def test_a_resumed_run_keeps_counting_patience(tmp_path):
    def run(num_steps):
        model, optimizer = tiny_setup(lr=0.0)
        stopping = EarlyStopping(patience=3)
        trainer = Trainer(
            model,
            optimizer,
            callbacks=[stopping],
            checkpointer=Checkpointer(tmp_path, every_epoch=False, async_save=False),
        )
        history = trainer.fit(
            tiny_batches(16, 20),
            num_steps=num_steps,
            eval_data=tiny_batches(16, 2, seed=1),
            eval_every_steps=2,
        )
        return trainer, stopping, history

    _, first, _ = run(4)  # evaluations at 2 (best) and 4 (wait 1), saved at 4
    assert (first.best_step, first.wait) == (2, 1)
    trainer, resumed, history = run(20)
    # Without the saved count it would stop at step 10 (best at 6); with it, at 8.
    assert history.resumed_from == 4
    assert history.stopped
    assert (trainer.step, resumed.best_step, resumed.wait) == (8, 2, 3)


def test_early_stopping_state_round_trips_and_refuses_another_monitor():
    stopping = EarlyStopping("eval/accuracy", mode="max")
    CallbackList([stopping]).on_eval_end({"accuracy": 0.5})
    state = json.loads(json.dumps(stopping.state_dict()))
    again = EarlyStopping("eval/accuracy", mode="max")
    again.load_state_dict(state)
    assert again.state_dict() == stopping.state_dict()
    with raises_exactly(
        ValueError,
        "EarlyStopping.load_state_dict: the state was saved for monitor='eval/accuracy', "
        "mode='max', but this one watches monitor='eval/loss', mode='min': its best value "
        "would not compare. Build it with the saved monitor and mode, or start the run in a "
        "new checkpoint directory.",
    ):
        EarlyStopping().load_state_dict(state)


@pytest.mark.parametrize(
    ("kwargs", "error", "start"),
    [
        ({"monitor": "loss"}, ValueError, "EarlyStopping: `monitor` must name a logged metric"),
        ({"mode": "lowest"}, ValueError, "EarlyStopping: `mode` must be one of 'auto', 'min'"),
        ({"patience": -1}, ValueError, "EarlyStopping: `patience` must be an integer >= 0"),
        ({"restore_best": "yes"}, TypeError, "EarlyStopping: `restore_best` must be True or"),
        (
            {"monitor": "eval/perplexity"},
            ValueError,
            "EarlyStopping: `mode`='auto' cannot tell from the name 'eval/perplexity'",
        ),
        (
            {"monitor": "eval/acc_drop"},
            ValueError,
            "EarlyStopping: `mode`='auto' cannot tell from the name 'eval/acc_drop' whether it "
            "should fall or rise: 'acc' reads as 'max' (higher is better), but 'drop' may "
            "reverse it to 'min' (lower is better); pass mode='min' or mode='max'.",
        ),
    ],
)
def test_early_stopping_refuses_bad_arguments(kwargs, error, start):
    with pytest.raises(error, match="^" + re.escape(start)):
        EarlyStopping(**kwargs)


def test_a_name_of_a_change_takes_the_mode_it_is_given():
    assert EarlyStopping("eval/acc_drop", mode="min").mode == "min"
    assert EarlyStopping("eval/loss_reduction", mode="max").mode == "max"


def test_a_monitored_metric_the_evaluation_does_not_report_is_named():
    loop = CallbackList([EarlyStopping("eval/acc")])
    with raises_exactly(
        KeyError,
        "\"EarlyStopping: monitor='eval/acc', but the evaluation reported ['eval/accuracy', "
        "'eval/loss']; monitor one of those.\"",
    ):
        loop.on_eval_end({"step": 3, "epoch": 0, "loss": 1.0, "accuracy": 0.5})


def test_restore_best_in_a_trainer_leaves_the_model_at_the_best_evaluation():
    model, optimizer = tiny_setup(lr=0.3)  # a high rate: the eval loss goes up and down
    kernels = {}

    class Record(Callback):
        def on_eval_end(self, loop, metrics):
            kernels[loop.step] = np.asarray(loop.model.hidden.kernel[...])

    stopping = EarlyStopping(patience=100, restore_best=True)
    history = Trainer(model, optimizer, callbacks=[Record(), stopping]).fit(
        tiny_batches(16, 6), num_steps=24, eval_data=tiny_batches(16, 2, seed=1), eval_every_steps=3
    )
    losses = {entry["step"]: entry["loss"] for entry in history.eval}
    assert stopping.best_step == min(losses, key=lambda step: (losses[step], step))
    assert stopping.best_step != 24  # else the test shows nothing
    np.testing.assert_array_equal(model.hidden.kernel[...], kernels[stopping.best_step])


@pytest.mark.parametrize(
    "callback",
    [EarlyStopping("eval/loss"), LRSchedulerCallback(ReduceLROnPlateau(0.1), monitor="eval/loss")],
    ids=["EarlyStopping", "LR callback with a plateau"],
)
def test_a_callback_acting_on_an_eval_metric_without_eval_data_is_refused(callback):
    model, optimizer = tiny_setup()
    with raises_exactly(
        ValueError,
        f"Trainer.fit: {type(callback).__name__} acts on 'eval/loss', an evaluation metric, but "
        "there is no eval_data to evaluate on, so it would never act; pass eval_data=... (and "
        "eval_every_steps=... to evaluate within epochs).",
    ):
        Trainer(model, optimizer, callbacks=[callback]).fit(tiny_batches(16, 2), num_steps=2)


# -- the mode rule, the state key and version, hand-written loops --


def _waits(stopping, metric, values):
    loop = CallbackList([stopping])
    seen = []
    for value in values:
        loop.on_eval_end({metric: value})
        seen.append(stopping.wait)
    return seen


def test_the_mode_of_an_accuracy_is_max_and_of_a_loss_min_by_default():
    # The old default, mode='min', counted each rise of the accuracy as a bad check.
    accuracy = EarlyStopping("eval/top1_accuracy", patience=5)
    assert accuracy.mode == "max"
    assert _waits(accuracy, "top1_accuracy", [0.5, 0.6, 0.7, 0.65]) == [0, 0, 0, 1]
    loss = EarlyStopping("eval/loss", patience=5)
    assert loss.mode == "min"
    assert _waits(loss, "loss", [0.5, 0.6, 0.4]) == [0, 1, 0]
    assert accuracy.state_dict()["mode"] == "max"


def test_an_explicit_mode_wins_over_the_name():
    stopping = EarlyStopping("eval/accuracy", mode="min", patience=5)
    assert _waits(stopping, "accuracy", [0.5, 0.6]) == [0, 1]


def test_two_early_stoppings_on_different_metrics_checkpoint_apart():
    loss, accuracy = EarlyStopping("eval/loss"), EarlyStopping("eval/accuracy")
    assert (loss.state_key, accuracy.state_key) == (
        "EarlyStopping[eval/loss]",
        "EarlyStopping[eval/accuracy]",
    )
    loop = CallbackList([loss, accuracy])  # the same state_key was refused here
    loop.on_eval_end({"loss": 0.5, "accuracy": 0.7})
    states = json.loads(json.dumps(loop.state_dict()))
    again = CallbackList([EarlyStopping("eval/accuracy"), EarlyStopping("eval/loss")])
    again.load_state_dict(states)
    assert [c.best for c in again.callbacks] == [0.7, 0.5]


def test_the_state_is_versioned_and_an_unversioned_one_still_loads():
    stopping = EarlyStopping("eval/loss")
    CallbackList([stopping]).on_eval_end({"loss": 0.5})
    state = stopping.state_dict()
    assert state["version"] == 1
    legacy = {key: value for key, value in state.items() if key != "version"}
    again = EarlyStopping("eval/loss")
    again.load_state_dict(legacy)
    assert (again.best, again.wait) == (0.5, 0)
    with pytest.raises(ValueError, match=r"^EarlyStopping.load_state_dict: state version 2 is"):
        EarlyStopping("eval/loss").load_state_dict({**state, "version": 2})


def test_a_train_monitor_whose_epoch_ends_without_metrics_is_an_error():
    model = tiny_mlp()
    optimizer = nnx.Optimizer(model, optax.sgd(0.0), wrt=nnx.Param)
    callbacks = CallbackList(
        [EarlyStopping("train/loss", patience=1)], model=model, optimizer=optimizer
    )
    step = nnx.jit(classification_train_step)
    callbacks.on_train_begin()
    callbacks.on_epoch_begin()
    for batch in tiny_batches(16, 3):
        callbacks.on_step_begin()
        callbacks.on_step_end(step(model, optimizer, batch))
    with pytest.raises(
        ValueError, match=r"^EarlyStopping: monitor='train/loss' is checked on the epoch's"
    ) as error:
        callbacks.on_epoch_end()  # the bare call never acted before
    assert "after 3 train step(s)" in str(error.value)
    assert "callbacks.on_epoch_end({'loss': mean_loss})" in str(error.value)


def test_a_train_monitor_checks_the_means_a_hand_written_loop_passes():
    callbacks = CallbackList([stopping := EarlyStopping("train/loss", patience=1)])
    callbacks.on_train_begin()
    for loss in (1.0, 1.0):
        callbacks.on_epoch_begin()
        callbacks.on_step_begin()
        callbacks.on_step_end()
        callbacks.on_epoch_end({"loss": loss})
    assert callbacks.stop_training
    assert (stopping.best, stopping.best_step, stopping.stopped_step) == (1.0, 1, 2)
    # An epoch end with no train step in it (a run resumed at its end) has nothing to check.
    callbacks.on_epoch_begin()
    callbacks.on_epoch_end()


# -- an evaluation after fit decides nothing --


def _stopped_run(**stopping):
    """A run that stops at step 6 (eval loss constant: best at 2, then two checks without)."""
    model, optimizer = tiny_setup(lr=0.0)
    early = EarlyStopping("eval/loss", patience=2, **stopping)
    # A plateau at learning rate 0 (nothing trains): it counts its bad evaluations.
    plateau = LRSchedulerCallback(ReduceLROnPlateau(0.0, patience=5), monitor="eval/loss")
    trainer = Trainer(model, optimizer, callbacks=[early, plateau], progress=False)
    eval_data = tiny_batches(16, 2, seed=1)
    history = trainer.fit(
        tiny_batches(16, 10), num_epochs=5, eval_data=eval_data, eval_every_steps=2
    )
    assert history.stopped
    assert (trainer.step, early.best_step, early.wait, early.stopped_step) == (6, 2, 2, 6)
    return trainer, early, plateau, eval_data


def test_evaluate_after_fit_does_not_feed_the_callbacks_decisions(caplog):
    trainer, early, plateau, eval_data = _stopped_run()
    scheduler_state = plateau.scheduler.state_dict()
    caplog.set_level(logging.INFO, logger="flax_cyclic")
    caplog.clear()
    for _ in range(2):
        summary = trainer.evaluate(eval_data)
        assert summary["step"] == 6  # where training ended
    assert (early.best_step, early.wait, early.stopped_step) == (2, 2, 6)
    assert scheduler_state["num_bad_epochs"] == 2
    assert plateau.scheduler.state_dict() == scheduler_state  # the plateau was not stepped
    assert "stopping at step" not in caplog.text
    said = [r.getMessage() for r in caplog.records if "after the end of training" in r.getMessage()]
    assert said == [
        "EarlyStopping: an evaluation after the end of training (at step 6) is not a check: it "
        "neither stops nor changes the best step."
    ]


def test_evaluate_after_restore_best_says_whose_weights_it_evaluates(caplog):
    trainer, early, _, eval_data = _stopped_run(restore_best=True)
    caplog.set_level(logging.INFO, logger="flax_cyclic")
    caplog.clear()
    assert trainer.evaluate(eval_data)["loss"] == early.best
    assert (early.best_step, early.wait, early.stopped_step) == (2, 2, 6)  # not step 6's
    assert "stopping at step" not in caplog.text
    assert (
        "an evaluation after the end of training (at step 6; the model holds the weights of "
        "step 2 (restore_best)) is not a check" in caplog.text
    )


def test_a_next_fit_checks_its_evaluations_again():
    trainer, early, _, eval_data = _stopped_run()
    trainer.evaluate(eval_data)
    early.on_train_begin(trainer.callbacks)
    trainer.callbacks.on_eval_end({"loss": 0.0})  # within a run: a check, an improvement
    assert (early.best, early.best_step, early.wait) == (0.0, 6, 0)


# -- restore_best after a resume: where the best weights are, from the run's checkpointer --


def _resumed_with_an_earlier_best(tmp_path, **checkpointer):
    """Two runs of a constant eval loss: the best check (step 2) comes before the resume (4)."""

    def run(num_steps):
        model, optimizer = tiny_setup(lr=0.0)
        early = EarlyStopping("eval/loss", patience=100, restore_best=True)
        ckpt = Checkpointer(tmp_path, every_epoch=False, async_save=False, **checkpointer)
        trainer = Trainer(model, optimizer, callbacks=[early], checkpointer=ckpt, progress=False)
        trainer.fit(
            tiny_batches(16, 20),
            num_steps=num_steps,
            eval_data=tiny_batches(16, 2, seed=1),
            eval_every_steps=2,
        )
        return early, ckpt

    run(4)
    return run(8)


def _hint(caplog):
    (message,) = [
        r.getMessage() for r in caplog.records if "came before this run" in r.getMessage()
    ]
    return message


def test_the_restore_best_hint_names_the_kept_checkpoint_of_the_best_step(tmp_path, caplog):
    early, ckpt = _resumed_with_an_earlier_best(tmp_path, every_steps=2, max_to_keep=10)
    assert early.best_step == 2
    assert 2 in ckpt.all_steps()
    assert _hint(caplog).endswith(
        f"Restore them from the checkpoint of step 2 that the run's checkpointer ({tmp_path}) "
        "keeps: checkpointer.restore(model=..., optimizer=..., step=2)."
    )


def test_the_restore_best_hint_of_a_directory_kept_by_another_metric(tmp_path, caplog):
    # The directory is kept by eval/accuracy: a Checkpointer(best_metric='eval/loss') on it is
    # refused, so the hint must not suggest one; it says the weights of step 2 are not kept.
    early, ckpt = _resumed_with_an_earlier_best(
        tmp_path, best_metric="eval/accuracy", max_to_keep=1
    )
    assert early.best_step == 2
    assert 2 not in ckpt.all_steps()
    hint = _hint(caplog)
    assert hint.endswith(
        f"No checkpoint of step 2 is kept: the run's checkpointer ({tmp_path}) keeps the best 1 "
        f"by 'eval/accuracy' (its best_step() is {ckpt.best_step()}); it keeps steps "
        f"{ckpt.all_steps()}. The weights of step 2 are gone: train again to step 2 to get "
        "them; a run that must keep them saves into a directory of its own with "
        "Checkpointer(..., best_metric='eval/loss')."
    )


def test_the_restore_best_hint_without_a_checkpointer_in_the_loop(caplog):
    stopping = EarlyStopping(restore_best=True)
    stopping.load_state_dict({**stopping.state_dict(), "best": 0.5, "best_step": 7})
    loop = CallbackList([stopping], model=tiny_mlp(), step=9)  # a hand-written loop's resume
    loop.on_train_begin()
    loop.on_train_end()
    assert _hint(caplog).endswith(
        "Restore them from your checkpointer's checkpoint of step 7, if it keeps one "
        "(all_steps() lists them): checkpointer.restore(model=..., optimizer=..., step=7)."
    )
