"""SnapshotEnsemble: the models at the exact cycle ends on disk; their mean probability."""

from __future__ import annotations

import logging
import shutil

import jax
import numpy as np
import optax
import pytest
from flax import nnx
from helpers import NoisyNet
from test_callbacks_averaging import BATCHES, SCHEDULERS, Recorder, _setup, _troughs, own_loop

from flax_cyclic import (
    Callback,
    CallbackList,
    Checkpointer,
    LRSchedulerCallback,
    SnapshotEnsemble,
    Trainer,
)


def _reference(name: str):
    model, optimizer = _setup()
    recorder = Recorder()
    callbacks = [recorder, LRSchedulerCallback(SCHEDULERS[name]())]
    Trainer(model, optimizer, callbacks=callbacks, progress=False).fit(BATCHES, num_epochs=1)
    return recorder


def _fit(ensemble, steps_per_dispatch=1, name="restarts", checkpointer=None, num_steps=23):
    model, optimizer = _setup()
    callbacks = [LRSchedulerCallback(SCHEDULERS[name]()), ensemble]
    trainer = Trainer(
        model, optimizer, callbacks=callbacks, progress=False, checkpointer=checkpointer,
        steps_per_dispatch=steps_per_dispatch,
    )  # fmt: skip
    trainer.fit(BATCHES, num_steps=num_steps)
    return trainer


def _leaves(model) -> list[np.ndarray]:
    return [np.asarray(leaf) for leaf in jax.tree.leaves(nnx.state(model, nnx.Param))]


@pytest.mark.parametrize("steps_per_dispatch", [1, 4])
def test_the_members_are_the_models_at_the_cycle_ends(tmp_path, steps_per_dispatch):
    reference = _reference("restarts")
    taken = _troughs(reference.lrs)  # steps 2 and 8 (the restarts of T_0=3, T_mult=2) and 20
    ensemble = SnapshotEnsemble(tmp_path / "snapshots", max_snapshots=5)
    trainer = _fit(ensemble, steps_per_dispatch)
    assert ensemble.steps == [s + 1 for s in taken] == [3, 9, 21]
    for member, step in zip(ensemble.members(), taken, strict=True):
        for got, want in zip(_leaves(member), reference.params[step], strict=True):
            np.testing.assert_array_equal(got, want.astype(np.float32))
    assert ensemble.members(trainer.model, last=2)[0] is not trainer.model


def test_only_the_newest_snapshots_are_kept(tmp_path):
    ensemble = SnapshotEnsemble(tmp_path / "snapshots", max_snapshots=2, every_steps=5)
    _fit(ensemble, 1)
    assert ensemble.steps == [15, 20]


def test_the_prediction_is_the_mean_of_the_members_probabilities(tmp_path):
    ensemble = SnapshotEnsemble(tmp_path / "snapshots", every_steps=6)
    _fit(ensemble, 1)
    inputs, _labels = BATCHES[0]
    members = ensemble.members()
    assert len(members) == 3
    probabilities = [np.asarray(jax.nn.softmax(member(inputs)), np.float64) for member in members]
    expected = np.mean(probabilities, axis=0)
    np.testing.assert_allclose(ensemble.predict(inputs), expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(ensemble.predict(inputs, last=1), probabilities[-1], rtol=1e-6)
    result = ensemble.evaluate(BATCHES[:2])
    mean = [np.mean([jax.nn.softmax(m(x)) for m in members], axis=0) for x, _ in BATCHES[:2]]
    picked = np.concatenate(
        [p[np.arange(len(y)), y] for p, (_, y) in zip(mean, BATCHES, strict=False)]
    )
    assert result["loss"] == pytest.approx(float(-np.log(picked).mean()), rel=1e-5)
    correct = sum(int((p.argmax(-1) == y).sum()) for p, (_, y) in zip(mean, BATCHES, strict=False))
    assert result["accuracy"] == correct / 32
    assert result["members"] == 3


def test_a_resumed_run_takes_the_killed_runs_later_snapshots_again(tmp_path, caplog):
    whole = SnapshotEnsemble(tmp_path / "whole", max_snapshots=5)
    _fit(whole, 4)
    checkpoints = tmp_path / "checkpoints"
    first = SnapshotEnsemble(max_snapshots=5)  # snapshots/ in the checkpoint directory
    _fit(first, 4, checkpointer=Checkpointer(checkpoints, every_steps=4, max_to_keep=10))
    assert first.directory == str(checkpoints / "snapshots")
    for step in (12, 16, 20, 23):  # as if killed after step 8's checkpoint, the snapshots on
        shutil.rmtree(checkpoints / str(step))
    again = SnapshotEnsemble(max_snapshots=5)
    with caplog.at_level(logging.INFO, logger="flax_cyclic"):
        _fit(again, 4, checkpointer=Checkpointer(checkpoints, every_steps=4, max_to_keep=10))
    assert "removed the snapshots after step 8: [9, 21]" in caplog.text
    assert again.steps == whole.steps == [3, 9, 21]
    for a, b in zip(again.members(), whole.members(), strict=True):
        for x, y in zip(_leaves(a), _leaves(b), strict=True):
            np.testing.assert_array_equal(x, y)


def test_a_hand_written_loop_keeps_the_same_snapshots(tmp_path):
    trained = SnapshotEnsemble(tmp_path / "trained")
    _fit(trained, 1, name="cyclic")
    ensemble = SnapshotEnsemble(tmp_path / "own")
    model = own_loop(ensemble)
    assert ensemble.steps == trained.steps == [6, 11, 16, 21]
    for a, b in zip(ensemble.members(model), trained.members(), strict=True):
        for x, y in zip(_leaves(a), _leaves(b), strict=True):
            np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)


def test_bad_settings_and_an_empty_ensemble_are_refused(tmp_path):
    with pytest.raises(ValueError, match="max_snapshots"):
        SnapshotEnsemble(tmp_path, max_snapshots=0)
    with pytest.raises(ValueError, match="not both"):
        SnapshotEnsemble(tmp_path, at="cycle_end", every_steps=3)
    with pytest.raises(ValueError, match="an ensemble of zero members predicts nothing"):
        SnapshotEnsemble(tmp_path / "empty").members(nnx.Linear(2, 2, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="end two dispatches of up to 4 steps in a row"):
        _fit(SnapshotEnsemble(tmp_path / "close", every_steps=3), 4)
    model, optimizer = _setup()
    loop = CallbackList([SnapshotEnsemble(every_steps=2)], model=model, optimizer=optimizer)
    with pytest.raises(ValueError, match="give directory="):
        loop.on_train_begin()


class Statistics(Callback):
    """BatchNorm's running mean after every step."""

    def __init__(self):
        self.means = []

    def on_step_end(self, loop, step, metrics):
        self.means.append(np.asarray(loop.model.norm.mean[...]))


def _noisy_run(callbacks, steps_per_dispatch):
    model = NoisyNet(nnx.Rngs(0))
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.0, momentum=0.9)
    trainer = Trainer(
        model, nnx.Optimizer(model, tx, wrt=nnx.Param), callbacks=callbacks, progress=False,
        rngs=nnx.Rngs(dropout=1), steps_per_dispatch=steps_per_dispatch,
    )  # fmt: skip
    trainer.fit(BATCHES, num_epochs=1)
    return model


@pytest.mark.parametrize("steps_per_dispatch", [1, 4])
def test_a_member_keeps_the_batchnorm_statistics_of_its_step(tmp_path, steps_per_dispatch):
    statistics = Statistics()
    _noisy_run([statistics, LRSchedulerCallback(SCHEDULERS["restarts"]())], 1)
    ensemble = SnapshotEnsemble(tmp_path / "snapshots")
    model = _noisy_run(
        [LRSchedulerCallback(SCHEDULERS["restarts"]()), ensemble], steps_per_dispatch
    )
    assert ensemble.steps == [3, 9, 21]
    # A scan compiles BatchNorm's arithmetic apart from one step's program: float32 rounding.
    tolerance = {} if steps_per_dispatch == 1 else {"rtol": 1e-5, "atol": 1e-8}
    for member, step in zip(ensemble.members(model), [2, 8, 20], strict=True):
        np.testing.assert_allclose(member.norm.mean[...], statistics.means[step], **tolerance)
    assert not np.array_equal(statistics.means[2], statistics.means[20])
