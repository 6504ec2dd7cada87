"""WeightAveraging: the average of the snapshots at the exact cycle-end steps, on the device.

References: a float64 mean (or the closed-form EMA) of the parameters read at the steps an
independent rule picks (a step whose learning rate is a trough the next step rises from), from
a plain run at one step per dispatch; and the uninterrupted run for a resumed one.
"""

from __future__ import annotations

import jax
import numpy as np
import optax
import pytest
from flax import nnx
from helpers import MLP, NoisyNet, tiny_batches
from test_checkpoint import _assert_same_final, _finish, _kill, _read_until, _wait_for, _worker

from flax_cyclic import (
    Callback,
    CallbackList,
    Checkpointer,
    CheckpointError,
    CosineAnnealingWarmRestarts,
    CyclicLR,
    LRSchedulerCallback,
    OneCycleLR,
    Trainer,
    WeightAveraging,
)
from flax_cyclic._averaged import AveragedWeights

BATCHES = tiny_batches(16, 23, seed=3)

SCHEDULERS = {
    "cyclic": lambda: CyclicLR(0.01, 0.1, step_size_up=2, step_size_down=3, mode="triangular2"),
    "restarts": lambda: CosineAnnealingWarmRestarts(base_lr=0.1, T_0=3, T_mult=2, eta_min=0.01),
}


def _setup(seed: int = 0):
    model = MLP(nnx.Rngs(seed), hidden=16)
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.0, momentum=0.9)
    return model, nnx.Optimizer(model, tx, wrt=nnx.Param)


class Recorder(Callback):
    """Reads the parameters (float64) and the learning rate applied, after every step.

    Put it before the LR callback, whose ``on_step_end`` writes the next step's value.
    """

    def __init__(self):
        self.params: list[list[np.ndarray]] = []
        self.lrs: list[float] = []

    def on_step_end(self, loop, step, metrics):
        state = nnx.state(loop.model, nnx.Param)
        self.params.append([np.asarray(leaf, np.float64) for leaf in jax.tree.leaves(state)])
        self.lrs.append(float(loop.optimizer.opt_state.hyperparams["learning_rate"][...]))


def _reference(name: str, steps: int):
    """Every step's parameters and learning rate, from a plain run at one step per dispatch."""
    model, optimizer = _setup()
    recorder = Recorder()
    callbacks = [recorder, LRSchedulerCallback(SCHEDULERS[name]())]  # reads before the next LR
    Trainer(model, optimizer, callbacks=callbacks, progress=False).fit(
        BATCHES[:steps], num_epochs=1
    )
    return recorder


def _troughs(lrs: list[float]) -> list[int]:
    """The steps whose learning rate is a trough that the next step rises from (not step 0)."""
    return [s for s in range(1, len(lrs) - 1) if lrs[s] <= lrs[s - 1] and lrs[s + 1] > lrs[s]]


def _averaged_leaves(averaging: WeightAveraging) -> list[np.ndarray]:
    state = nnx.state(averaging.averaged_model(), nnx.Param)
    return [np.asarray(leaf) for leaf in jax.tree.leaves(state)]


def _assert_mean_of(averaging: WeightAveraging, snapshots: list[list[np.ndarray]]) -> None:
    """The average equals the float64 mean of the snapshots (float32 running means)."""
    expected = [np.mean(leaves, axis=0) for leaves in zip(*snapshots, strict=True)]
    for got, want in zip(_averaged_leaves(averaging), expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-7)


def _fit(name: str, averaging: WeightAveraging, steps_per_dispatch: int, steps: int = 23):
    model, optimizer = _setup()
    callbacks = [LRSchedulerCallback(SCHEDULERS[name]()), averaging]
    trainer = Trainer(
        model, optimizer, callbacks=callbacks, progress=False, steps_per_dispatch=steps_per_dispatch
    )
    trainer.fit(BATCHES[:steps], num_epochs=1)
    return trainer


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
@pytest.mark.parametrize("steps_per_dispatch", [1, 8])
def test_the_average_is_the_mean_of_the_snapshots_at_the_cycle_ends(name, steps_per_dispatch):
    reference = _reference(name, 23)
    taken = _troughs(reference.lrs)
    assert len(taken) >= 3, taken  # several cycle ends, some inside a dispatch of 8
    averaging = WeightAveraging()
    _fit(name, averaging, steps_per_dispatch)
    assert averaging.snapshots == len(taken)
    _assert_mean_of(averaging, [reference.params[s] for s in taken])


def test_one_and_eight_steps_per_dispatch_average_bitwise_alike():
    one, eight = WeightAveraging(), WeightAveraging()
    _fit("restarts", one, 1)
    _fit("restarts", eight, 8)
    for a, b in zip(_averaged_leaves(one), _averaged_leaves(eight), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("steps_per_dispatch", [1, 8])
def test_an_ema_of_every_step_equals_its_closed_form(steps_per_dispatch):
    decay, start = 0.8, 5
    reference = _reference("cyclic", 23)
    averaging = WeightAveraging(every_steps=1, decay=decay, start_step=start)
    _fit("cyclic", averaging, steps_per_dispatch)
    snapshots = reference.params[start:]
    assert averaging.snapshots == len(snapshots)
    n = len(snapshots)
    # The first snapshot starts the average, each later one enters with weight 1 - decay.
    weights = [decay ** (n - 1)] + [(1 - decay) * decay ** (n - 1 - i) for i in range(1, n)]
    assert abs(sum(weights) - 1) < 1e-12
    expected = [
        sum(w * leaf for w, leaf in zip(weights, leaves, strict=True))
        for leaves in zip(*snapshots, strict=True)
    ]
    for got, want in zip(_averaged_leaves(averaging), expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-7)


def test_every_n_steps_from_a_start_step():
    reference = _reference("cyclic", 23)
    averaging = WeightAveraging(every_steps=4, start_step=6)
    _fit("cyclic", averaging, 8)
    taken = [s for s in range(23) if (s + 1) % 4 == 0 and s >= 6]  # after 8, 12, 16, 20 steps
    assert averaging.snapshots == len(taken) == 4
    _assert_mean_of(averaging, [reference.params[s] for s in taken])


@nnx.jit
def _own_step(model, optimizer, batch):
    def loss_fn(model):
        logits = model(batch[0])
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch[1]).mean()

    optimizer.update(model, nnx.grad(loss_fn)(model))


def own_loop(callback) -> nnx.Module:
    """A hand-written ``nnx.jit`` loop over BATCHES driving the LR callback and ``callback``."""
    model, optimizer = _setup()
    callbacks = CallbackList(
        [LRSchedulerCallback(SCHEDULERS["cyclic"]()), callback], model=model, optimizer=optimizer
    )
    callbacks.on_train_begin()
    for batch in BATCHES:
        callbacks.on_step_begin()
        _own_step(model, optimizer, batch)
        callbacks.on_step_end()
    callbacks.on_train_end()
    return model


def test_a_hand_written_loop_averages_the_same_snapshots():
    trained = WeightAveraging()
    _fit("cyclic", trained, 1)
    averaging = WeightAveraging()
    own_loop(averaging)
    assert averaging.snapshots == trained.snapshots
    for a, b in zip(_averaged_leaves(averaging), _averaged_leaves(trained), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_a_non_finite_snapshot_is_never_averaged_in():
    model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    averaged = AveragedWeights(model, decay=None)
    take = nnx.jit(lambda averaged, model, flag: averaged.take(model, flag))
    take(averaged, model, 1)
    before = np.asarray(averaged.means[1][...])
    model.kernel[...] = model.kernel[...].at[0, 0].set(np.nan)
    take(averaged, model, 1)
    assert (int(averaged.count[...]), int(averaged.refused[...])) == (1, 1)
    np.testing.assert_array_equal(np.asarray(averaged.means[1][...]), before)
    take(averaged, model, 0)  # a step that takes nothing changes nothing
    assert int(averaged.count[...]) == 1


def test_integer_parameters_and_other_state_are_never_averaged():
    class Mixed(nnx.Module):
        def __init__(self):
            self.linear = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
            self.steps = nnx.Param(np.zeros((), np.int32))
            self.norm = nnx.BatchNorm(2, rngs=nnx.Rngs(0))
            self.rngs = nnx.Rngs(1)

    averaged = AveragedWeights(Mixed(), decay=None)
    assert [path[-1] for path in averaged.paths] == ["bias", "kernel", "bias", "scale"]


def test_the_average_resumes_bitwise(tmp_path):
    whole = WeightAveraging()
    _fit("restarts", whole, 8)

    def run(num_steps: int) -> WeightAveraging:
        model, optimizer = _setup()
        averaging = WeightAveraging()
        callbacks = [LRSchedulerCallback(SCHEDULERS["restarts"]()), averaging]
        checkpointer = Checkpointer(tmp_path / "checkpoints", every_steps=4)
        trainer = Trainer(
            model, optimizer, callbacks=callbacks, checkpointer=checkpointer, progress=False,
            steps_per_dispatch=4,
        )  # fmt: skip
        trainer.fit(BATCHES, num_steps=num_steps)
        checkpointer.close()
        return averaging

    assert run(10).snapshots == 2  # the cycle ends after 3 and 9 steps
    resumed = run(23)
    assert resumed.snapshots == whole.snapshots
    for a, b in zip(_averaged_leaves(resumed), _averaged_leaves(whole), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_checkpoint_of_another_structure_is_refused(tmp_path):
    model, optimizer = _setup()
    callbacks = [LRSchedulerCallback(SCHEDULERS["cyclic"]()), WeightAveraging()]
    checkpointer = Checkpointer(tmp_path / "checkpoints")
    Trainer(model, optimizer, callbacks=callbacks, checkpointer=checkpointer, progress=False).fit(
        BATCHES, num_steps=6
    )
    checkpointer.close()
    model = MLP(nnx.Rngs(0), hidden=8)  # another width: the saved average does not fit
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.0, momentum=0.9)
    callbacks = [LRSchedulerCallback(SCHEDULERS["cyclic"]()), WeightAveraging()]
    trainer = Trainer(
        model, nnx.Optimizer(model, tx, wrt=nnx.Param), callbacks=callbacks, progress=False,
        checkpointer=Checkpointer(tmp_path / "checkpoints"),
    )  # fmt: skip
    with pytest.raises(CheckpointError, match="shape"):
        trainer.fit(BATCHES, num_steps=12)


def test_bad_settings_are_refused_up_front():
    with pytest.raises(ValueError, match="not both"):
        WeightAveraging(at="cycle_end", every_steps=2)
    with pytest.raises(ValueError, match="at"):
        WeightAveraging(at="epoch_end")
    with pytest.raises(ValueError, match="every_steps"):
        WeightAveraging(every_steps=0)
    with pytest.raises(ValueError, match="start_step"):
        WeightAveraging(start_step=-1)
    for decay in (1.0, -0.1, True, "0.9"):
        with pytest.raises(ValueError, match=r"`decay` must be a number in \[0, 1\)"):
            WeightAveraging(decay=decay)


def _fit_with(callbacks, steps=8):
    model, optimizer = _setup()
    Trainer(model, optimizer, callbacks=callbacks, progress=False).fit(
        BATCHES[:steps], num_epochs=1
    )


def test_cycle_ends_need_a_cyclic_scheduler_in_the_loop():
    with pytest.raises(ValueError, match="needs the cycles of one LRSchedulerCallback"):
        _fit_with([WeightAveraging()])
    one_cycle = OneCycleLR(max_lr=0.1, total_steps=8)
    with pytest.raises(ValueError, match="OneCycleLR has no cycles"):
        _fit_with([LRSchedulerCallback(one_cycle), WeightAveraging()])


def test_a_run_without_a_snapshot_is_refused_before_it_trains():
    late = WeightAveraging(start_step=20)
    with pytest.raises(ValueError, match="takes no snapshot in this run"):
        _fit_with([LRSchedulerCallback(SCHEDULERS["cyclic"]()), late])
    with pytest.raises(ValueError, match="takes no snapshot in this run"):
        _fit_with([WeightAveraging(every_steps=9)])


def test_the_averaged_model_before_any_snapshot_is_refused():
    averaging = WeightAveraging(every_steps=2)
    with pytest.raises(RuntimeError, match="no snapshot was averaged yet"):
        averaging.averaged_model()


def test_batchnorm_statistics_stay_the_models_and_rngs_stay_apart():
    model = NoisyNet(nnx.Rngs(0))
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.05)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    averaging = WeightAveraging(every_steps=2)
    trainer = Trainer(
        model, optimizer, callbacks=[averaging], progress=False, rngs=nnx.Rngs(dropout=1)
    )
    trainer.fit(BATCHES[:6], num_epochs=1)
    averaged = averaging.averaged_model()
    np.testing.assert_array_equal(averaged.norm.mean[...], model.norm.mean[...])
    assert not np.array_equal(averaged.out.kernel[...], model.out.kernel[...])


@pytest.mark.slow
def test_a_sigkill_during_the_run_resumes_the_average_bitwise(tmp_path):
    reference_dir = tmp_path / "reference"
    _finish(_worker(reference_dir, 20, 5, "--ballast", "16", "--average"))
    reference = np.load(reference_dir / "final.npz")
    assert int(reference["snapshots"]) == 2  # after 8 and 15 steps: the cycle of 7 ends
    workdir = tmp_path / "killed"
    process = _worker(workdir, 20, 5, "--ballast", "16", "--sleep", "0.2", "--average")
    _read_until(process, "step 10")  # one snapshot taken, the next to come
    _wait_for(workdir / "checkpoints" / "10")
    _read_until(process, "step")
    _kill(process)
    output = _finish(_worker(workdir, 20, 5, "--ballast", "16", "--average"))
    assert "Resumed from the checkpoint at step 10" in output
    _assert_same_final(workdir, reference)  # the model, the optimizer and the average


def test_cycle_ends_need_the_lr_callback_first_and_stepped_every_update():
    with pytest.raises(ValueError, match="put the LRSchedulerCallback first"):
        _fit_with([WeightAveraging(), LRSchedulerCallback(SCHEDULERS["cyclic"]())])
    per_epoch = LRSchedulerCallback(SCHEDULERS["cyclic"](), interval="epoch")
    with pytest.raises(ValueError, match="steps per epoch or on a metric"):
        _fit_with([per_epoch, WeightAveraging()])


def test_fit_evaluates_the_average_beside_the_model(tmp_path):
    from flax_cyclic import create_writer, read_scalars

    model = MLP(nnx.Rngs(0), hidden=16)
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.05, momentum=0.9)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    averaging = WeightAveraging(every_steps=4)
    writer = create_writer(str(tmp_path / "tb"))
    trainer = Trainer(
        model, optimizer, callbacks=[averaging], writer=writer, progress=False,
        steps_per_dispatch=2,
    )  # fmt: skip
    history = trainer.fit(BATCHES[:12], num_epochs=1, eval_data=BATCHES[20:], eval_every_steps=2)
    writer.close()
    before, after = history.eval[0], history.eval[-1]
    assert "avg/loss" not in before  # after 2 steps: no snapshot yet
    assert after["step"] == 12
    averaged = averaging.averaged_model()  # evaluated by a Trainer of its own
    trainer_for_avg = Trainer(averaged, nnx.Optimizer(averaged, optax.sgd(0.0), wrt=nnx.Param))
    expected = trainer_for_avg.evaluate(BATCHES[20:])
    assert after["avg/loss"] == pytest.approx(expected["loss"], rel=1e-6)
    assert after["avg/accuracy"] == pytest.approx(expected["accuracy"], rel=1e-6)
    assert after["avg/loss"] != after["loss"]
    logged = read_scalars(str(tmp_path / "tb"), "eval/avg/loss")["eval/avg/loss"]
    assert [step for step, _ in logged] == [4, 6, 8, 10, 12]
    assert logged[-1][1] == pytest.approx(after["avg/loss"], rel=1e-6)


def _resume_with(directory, callbacks, num_steps):
    model, optimizer = _setup()
    checkpointer = Checkpointer(directory, every_steps=4)
    trainer = Trainer(
        model, optimizer, callbacks=callbacks, checkpointer=checkpointer, progress=False
    )
    try:
        return trainer.fit(BATCHES, num_steps=num_steps)
    finally:
        checkpointer.close()


def test_an_average_added_to_a_resumed_run_starts_afresh_and_one_removed_is_refused(
    tmp_path, caplog
):
    import logging

    _resume_with(tmp_path, [], 8)
    averaging = WeightAveraging(every_steps=2)
    with caplog.at_level(logging.INFO, logger="flax_cyclic"):
        assert _resume_with(tmp_path, [averaging], 12).resumed_from == 8
    assert "holds no rider_WeightAveraging (the callback is new to this run)" in caplog.text
    assert averaging.snapshots == 2  # after steps 10 and 12
    with pytest.raises(CheckpointError, match=r"holds \['rider_WeightAveraging'\], the device"):
        _resume_with(tmp_path, [], 16)


def test_non_finite_snapshots_are_left_out_and_said_at_the_end(caplog):
    import logging

    model = MLP(nnx.Rngs(0), hidden=16)
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=1e20)  # diverges within steps
    recorder, averaging = Recorder(), WeightAveraging(every_steps=1)
    trainer = Trainer(
        model, nnx.Optimizer(model, tx, wrt=nnx.Param), callbacks=[recorder, averaging],
        progress=False,
    )  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="flax_cyclic"):
        trainer.fit(BATCHES[:6], num_epochs=1)
    finite = [all(np.isfinite(leaf).all() for leaf in params) for params in recorder.params]
    assert 0 < sum(finite) < 6, finite
    assert (averaging.snapshots, averaging.refused) == (sum(finite), 6 - sum(finite))
    assert f"{6 - sum(finite)} snapshot(s) had a non-finite parameter" in caplog.text
    _assert_mean_of(averaging, [p for p, ok in zip(recorder.params, finite, strict=True) if ok])


def test_the_averaged_model_gets_batchnorm_statistics_of_its_own_weights():
    from flax_cyclic import update_batch_stats

    model = NoisyNet(nnx.Rngs(0))
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.05)
    averaging = WeightAveraging(every_steps=2, batch_stats_data=BATCHES[:4])
    trainer = Trainer(
        model, nnx.Optimizer(model, tx, wrt=nnx.Param), callbacks=[averaging], progress=False,
        rngs=nnx.Rngs(dropout=1),
    )  # fmt: skip
    trainer.fit(BATCHES[:6], num_epochs=1)
    recomputed = averaging.averaged_model()
    averaging.batch_stats_data = None
    by_hand = averaging.averaged_model()
    np.testing.assert_array_equal(by_hand.norm.mean[...], model.norm.mean[...])
    update_batch_stats(by_hand, BATCHES[:4])
    np.testing.assert_array_equal(recomputed.norm.mean[...], by_hand.norm.mean[...])
    np.testing.assert_array_equal(recomputed.norm.var[...], by_hand.norm.var[...])
    assert not np.array_equal(recomputed.norm.mean[...], model.norm.mean[...])
