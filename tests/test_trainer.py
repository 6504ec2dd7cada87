"""The Trainer: fit loop, hooks, evaluation, history, and the LR callback inside it."""

from __future__ import annotations

import grain
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from helpers import (
    MLP,
    CrashAt,
    NoisyNet,
    RecordingWriter,
    count_compilations,
    host_lrs,
    raises_exactly,
    tiny_batches,
    tiny_mlp,
    tiny_setup,
)

from flax_cyclic import Callback, CallbackList, CyclicLR, LRSchedulerCallback, Trainer, lr_find


def test_trains_a_classifier_in_a_few_lines():
    model, optimizer = tiny_setup()
    scheduler = CyclicLR(base_lr=0.01, max_lr=0.1, step_size_up=10)
    trainer = Trainer(model, optimizer, callbacks=[LRSchedulerCallback(scheduler)])
    history = trainer.fit(tiny_batches(16, 20), num_epochs=3, eval_data=tiny_batches(16, 5, seed=1))
    assert [entry["epoch"] for entry in history.train] == [0, 1, 2]
    assert [entry["step"] for entry in history.train] == [20, 40, 60]
    assert history.train[-1]["loss"] < history.train[0]["loss"]
    assert history.eval[-1]["accuracy"] > 0.7
    assert scheduler.last_epoch == 60
    assert (trainer.step, trainer.epoch) == (60, 3)


def test_trainer_and_hand_written_loop_apply_identical_updates():
    config = dict(base_lr=0.01, max_lr=0.1, step_size_up=7, cycle_momentum=True)
    data = tiny_batches(16, 12)

    model_a, optimizer_a = tiny_setup()
    Trainer(model_a, optimizer_a, callbacks=[LRSchedulerCallback(CyclicLR(**config))]).fit(
        data, num_epochs=2
    )

    from flax_cyclic.trainer import classification_train_step

    model_b, optimizer_b = tiny_setup()
    step = nnx.jit(classification_train_step)
    loop = CallbackList(
        [LRSchedulerCallback(CyclicLR(**config))], model=model_b, optimizer=optimizer_b
    )
    loop.on_train_begin()
    for epoch in range(2):
        loop.on_epoch_begin(epoch)
        for batch in data:
            loop.on_step_begin()
            loop.on_step_end(step(model_b, optimizer_b, batch))
        loop.on_epoch_end()
    loop.on_train_end()

    for a, b in zip(
        jax.tree.leaves(nnx.state(model_a)), jax.tree.leaves(nnx.state(model_b)), strict=True
    ):
        np.testing.assert_array_equal(a, b)


def test_update_k_uses_the_scheduler_value_at_k_under_the_trainer():
    class Reveal(nnx.Module):
        def __init__(self):
            self.w = nnx.Param(jnp.zeros(()))

    def train_step(model, optimizer, batch):
        optimizer.update(model, nnx.grad(lambda m: m.w[...])(model))  # gradient 1
        return {"w": model.w[...]}

    model = Reveal()
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.0)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    seen = []

    class Watch(Callback):
        def on_step_end(self, loop, step, metrics):
            seen.append(-float(metrics["w"]))

    scheduler = CyclicLR(0.01, 0.1, step_size_up=3, step_size_down=5, mode="triangular2")
    trainer = Trainer(
        model, optimizer, train_step=train_step, callbacks=[Watch(), LRSchedulerCallback(scheduler)]
    )
    trainer.fit([None] * 10, num_epochs=3)
    expected = np.cumsum(
        [lr[0] for lr in host_lrs(CyclicLR(0.01, 0.1, 3, 5, mode="triangular2"), 30)]
    )
    np.testing.assert_allclose(seen, expected, rtol=1e-5)


def test_hook_order_with_evaluation():
    calls = []

    class Spy(Callback):
        def __getattribute__(self, name):
            if name.startswith("on_"):
                return lambda loop, *args: calls.append(name)
            return super().__getattribute__(name)

    model, optimizer = tiny_setup(lr=0.01)
    Trainer(model, optimizer, callbacks=[Spy()]).fit(
        tiny_batches(16, 2), num_epochs=2, eval_data=tiny_batches(16, 1), eval_every_steps=3
    )
    step = ["on_step_begin", "on_step_end"]
    evaluation = ["on_eval_begin", "on_eval_end"]
    assert calls == [
        "on_train_begin",
        "on_epoch_begin",
        *step,
        *step,
        *evaluation,  # epoch end (step 2 is not a multiple of 3)
        "on_epoch_end",
        "on_epoch_begin",
        *step,
        *evaluation,  # step 3
        *step,
        *evaluation,  # epoch end
        "on_epoch_end",
        "on_train_end",
    ]


def test_num_steps_stops_part_way_through_an_epoch():
    model, optimizer = tiny_setup(lr=0.01)
    history = Trainer(model, optimizer).fit(tiny_batches(16, 4), num_steps=6)
    assert [(entry["epoch"], entry["step"]) for entry in history.train] == [(0, 4), (1, 6)]
    assert int(optimizer.step[...]) == 6


def test_grain_datasets_and_epoch_functions_work():
    source = tiny_batches(16, 6)
    dataset = grain.MapDataset.source(source).shuffle(seed=0)
    model, optimizer = tiny_setup(lr=0.01)
    history = Trainer(model, optimizer).fit(dataset, num_epochs=2)
    assert [entry["step"] for entry in history.train] == [6, 12]

    epochs_seen = []

    def batches_for(epoch):
        epochs_seen.append(epoch)
        return grain.MapDataset.source(source).shuffle(seed=epoch)

    model, optimizer = tiny_setup(lr=0.01)
    Trainer(model, optimizer).fit(batches_for, num_epochs=3)
    assert epochs_seen == [0, 1, 2]


def test_one_compilation_of_the_train_step_over_the_run():
    model, optimizer = tiny_setup()
    trainer = Trainer(model, optimizer, callbacks=[LRSchedulerCallback(CyclicLR(0.01, 0.1, 5))])
    data = tiny_batches(16, 25)
    trainer.fit(data, num_steps=1)  # compiles the step
    with count_compilations() as compiled:
        trainer.fit(data, num_steps=200)
    assert compiled == []


def test_exception_hook_runs_and_the_error_propagates():
    seen = []

    class Catch(Callback):
        def on_exception(self, loop, exception):
            seen.append(type(exception).__name__)

    def failing_step(model, optimizer, batch):
        raise RuntimeError("boom")

    model, optimizer = tiny_setup()
    trainer = Trainer(model, optimizer, train_step=failing_step, callbacks=[Catch()])
    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit(tiny_batches(16, 2), num_epochs=1)
    assert seen == ["RuntimeError"]


def test_bad_input():
    model, optimizer = tiny_setup()
    trainer = Trainer(model, optimizer)
    with pytest.raises(ValueError, match="exactly one of num_epochs and num_steps"):
        trainer.fit(tiny_batches(16, 2))
    with pytest.raises(ValueError, match="exactly one of num_epochs and num_steps"):
        trainer.fit(tiny_batches(16, 2), num_epochs=1, num_steps=3)
    with pytest.raises(ValueError, match="num_epochs=0"):
        trainer.fit(tiny_batches(16, 2), num_epochs=0)
    with pytest.raises(ValueError, match="an iterator is exhausted after one epoch"):
        trainer.fit(iter(tiny_batches(16, 2)), num_epochs=2)
    with pytest.raises(TypeError, match="must be an iterable of batches"):
        trainer.fit(42, num_epochs=1)
    with pytest.raises(TypeError, match="`train_step` must be callable"):
        Trainer(model, optimizer, train_step="sgd")
    with pytest.raises(TypeError, match="must return a mapping"):
        Trainer(model, optimizer, train_step=lambda m, o, b: 1.0).fit(
            tiny_batches(16, 1), num_epochs=1
        )


def test_bad_mesh_arguments():
    model, optimizer = tiny_setup()
    with pytest.raises(TypeError, match=r"`mesh` must be a jax\.sharding\.Mesh, got 'data'"):
        Trainer(model, optimizer, mesh="data")
    mesh = jax.make_mesh((1,), ("batch",))
    with pytest.raises(ValueError, match=r"data_axis='data' for a mesh with axes \('batch',\)"):
        Trainer(model, optimizer, mesh=mesh)
    Trainer(model, optimizer, mesh=mesh, data_axis="batch", progress=False).fit(
        tiny_batches(16, 2), num_steps=2
    )


# -- bad input: clear errors before anything is trained --


OPTAX_HINT = (
    "It looks like an optax transformation: wrap it, e.g. nnx.Optimizer(model, "
    "optax.inject_hyperparams(optax.sgd)(learning_rate=0.0), wrt=nnx.Param)."
)


def test_a_transformation_in_place_of_an_optimizer_is_refused():
    model = MLP(nnx.Rngs(0))
    with raises_exactly(
        TypeError,
        "Trainer: `optimizer` must be an nnx.Optimizer, got GradientTransformationExtraArgs. "
        + OPTAX_HINT,
    ):
        Trainer(model, optax.sgd(0.1))
    with raises_exactly(
        TypeError,
        "lr_find: `optimizer` must be an nnx.Optimizer, got GradientTransformationExtraArgs. "
        + OPTAX_HINT,
    ):
        lr_find(model, optax.sgd(0.1), tiny_batches(16, 4))


def test_a_trainer_with_a_writer_logs_the_lr_whichever_way_it_is_set():
    from flax_cyclic import cyclic_schedule

    schedule = cyclic_schedule(0.01, 0.1, step_size_up=4)
    model = MLP(nnx.Rngs(0))
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=schedule, momentum=0.9)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    writer = RecordingWriter()
    Trainer(model, optimizer, writer=writer, log_every_steps=1, progress=False).fit(
        tiny_batches(16, 10), num_steps=10
    )
    logged = writer.by_tag()["learning_rate"]
    assert sorted(logged) == list(range(1, 11))  # update k's learning rate at step k + 1
    np.testing.assert_allclose(
        [logged[k + 1] for k in range(10)], [float(schedule(k)) for k in range(10)], rtol=1e-6
    )


def test_an_lr_callback_with_the_writer_is_not_logged_twice():
    model, optimizer = tiny_setup()
    writer = RecordingWriter()
    callback = LRSchedulerCallback(CyclicLR(0.01, 0.1, step_size_up=4), writer=writer)
    trainer = Trainer(model, optimizer, callbacks=[callback], writer=writer, progress=False)
    assert [type(c).__name__ for c in trainer.callbacks.callbacks] == [
        "LRSchedulerCallback",
        "MetricsLogger",
    ]
    trainer.fit(tiny_batches(16, 4), num_steps=4)
    assert sorted(writer.by_tag()["learning_rate"]) == [1, 2, 3, 4]


# -- the step as a pure jax.jit function of split, donated state --


def _hand_written_params(steps: int, data) -> list[list[np.ndarray]]:
    """The model's arrays after each of `steps` steps of an nnx.jit loop with the LR callback."""
    from flax_cyclic.trainer import classification_train_step

    model, optimizer = tiny_setup()
    step = nnx.jit(classification_train_step)
    loop = CallbackList(
        [LRSchedulerCallback(CyclicLR(0.01, 0.1, 3))], model=model, optimizer=optimizer
    )
    loop.on_train_begin()
    seen = []
    for batch in data[:steps]:
        loop.on_step_begin()
        loop.on_step_end(step(model, optimizer, batch))
        seen.append([np.asarray(leaf) for leaf in jax.tree.leaves(nnx.state(model))])
    return seen


class _ReadEveryStep(Callback):
    def __init__(self):
        self.seen = []

    def on_step_end(self, loop, step, metrics):
        self.seen.append([np.asarray(leaf) for leaf in jax.tree.leaves(nnx.state(loop.model))])


def test_a_callback_reading_loop_model_sees_every_step_as_a_hand_written_loop_does():
    data = tiny_batches(16, 8)
    model, optimizer = tiny_setup()
    reader = _ReadEveryStep()
    Trainer(model, optimizer, callbacks=[LRSchedulerCallback(CyclicLR(0.01, 0.1, 3)), reader]).fit(
        data, num_steps=8
    )
    expected = _hand_written_params(8, data)
    assert len(reader.seen) == 8
    for got, want in zip(reader.seen, expected, strict=True):
        for a, b in zip(got, want, strict=True):
            np.testing.assert_array_equal(a, b)


def test_the_step_updates_the_state_in_place_and_keeps_no_second_copy():
    from flax_cyclic._split_step import SplitStep
    from flax_cyclic.trainer import classification_train_step

    model, optimizer = tiny_setup()
    step = SplitStep(classification_train_step, model, optimizer)
    state_bytes = sum(
        leaf.nbytes
        for leaf in jax.tree.leaves(nnx.state((model, optimizer)))
        if leaf.ndim > 0  # the arrays: parameters and momentum
    )
    stats = step.lower(tiny_batches(16, 1)[0]).compile().memory_analysis()
    # Every parameter and momentum array is written into its donated argument.
    assert stats.alias_size_in_bytes >= state_bytes
    # What is not: the metrics and the injected hyperparameters, a few scalars.
    assert stats.output_size_in_bytes - stats.alias_size_in_bytes < 0.1 * state_bytes

    held = []

    class Hold(Callback):
        def on_step_end(self, loop, step, metrics):
            held.append(loop.model.hidden.kernel.get_value())

    model, optimizer = tiny_setup()
    Trainer(model, optimizer, callbacks=[Hold()]).fit(tiny_batches(16, 4), num_steps=4)
    # The arrays of each step were donated to the next: no copy of them outlived it.
    assert [array.is_deleted() for array in held] == [True, True, True, False]
    assert held[-1] is model.hidden.kernel.get_value()


def test_a_hyperparameter_injected_as_a_number_passes_through_a_schedule_comes_back():
    from flax_cyclic._split_step import SplitStep
    from flax_cyclic.trainer import classification_train_step

    model = tiny_mlp()
    schedule = optax.linear_schedule(0.1, 0.0, transition_steps=10)
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=schedule, momentum=0.9)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    step = SplitStep(classification_train_step, model, optimizer)
    hyperparams = optimizer.opt_state.hyperparams
    momentum = hyperparams["momentum"].get_value()
    (batch,) = tiny_batches(16, 1)
    # The compiled step returns no copy of the momentum (a number the update leaves as it
    # is); it returns the learning rate, which the update computes from its schedule.
    returned = step.lower(batch).out_info[1]
    index = {id(variable): i for i, variable in enumerate(step.injected())}
    assert returned[index[id(hyperparams["momentum"])]] is None
    assert returned[index[id(hyperparams["learning_rate"])]] is not None
    for _ in range(3):
        step(batch)
    step.sync()
    assert hyperparams["momentum"].get_value() is momentum  # the very value given
    # The learning rate the third update computed: count 2 of the schedule.
    assert float(hyperparams["learning_rate"].get_value()) == pytest.approx(float(schedule(2)))


def test_a_write_through_the_loop_is_trained_with():
    class ZeroBias(Callback):
        def on_step_end(self, loop, step, metrics):
            loop.model.out.bias[...] = jnp.zeros(3)

    model, optimizer = tiny_setup(lr=0.1)
    Trainer(model, optimizer, callbacks=[ZeroBias()]).fit(tiny_batches(16, 3), num_steps=3)
    np.testing.assert_array_equal(model.out.bias.get_value(), np.zeros(3))


def test_a_write_through_a_reference_kept_from_before_fit_is_refused():
    model, optimizer = tiny_setup(lr=0.1)

    class WriteBehind(Callback):
        def on_step_end(self, loop, step, metrics):
            if step == 1:
                model.out.bias.set_value(jnp.zeros(3))  # not through the loop

    trainer = Trainer(model, optimizer, callbacks=[WriteBehind()])
    with raises_exactly(
        RuntimeError,
        "Trainer: ['model.out.bias'] of the model or optimizer were assigned during fit "
        "through a reference the loop does not see, and training would overwrite them. Inside "
        "fit, read and write them through the hooks' loop (loop.model, loop.optimizer), which "
        "brings them up to date first.",
    ):
        trainer.fit(tiny_batches(16, 3), num_steps=3)
    # On the way out, the model holds the last step's state.
    assert np.all(np.isfinite(model.out.kernel.get_value()))


def test_after_an_interruption_the_model_holds_the_last_completed_step():
    data = tiny_batches(16, 8)
    model, optimizer = tiny_setup()
    trainer = Trainer(
        model, optimizer, callbacks=[LRSchedulerCallback(CyclicLR(0.01, 0.1, 3)), CrashAt(5)]
    )
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(data, num_steps=8)
    expected = _hand_written_params(5, data)[-1]
    for a, b in zip(jax.tree.leaves(nnx.state(model)), expected, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_train_step_that_adds_a_variable_is_refused():
    from flax_cyclic.trainer import classification_train_step

    def adding_step(model, optimizer, batch):
        model.extra = nnx.BatchStat(jnp.zeros(()))
        return classification_train_step(model, optimizer, batch)

    model, optimizer = tiny_setup()
    with pytest.raises(
        ValueError, match=r"train_step changed the structure .*added \['model.extra'\]"
    ):
        Trainer(model, optimizer, train_step=adding_step).fit(tiny_batches(16, 1), num_steps=1)


# --- Evaluation mode, the tutorial's rngs, and the loop's own decisions (issue: trust in the loop)


def noisy_trainer(*, own_dropout_rngs: bool = True, rngs: nnx.Rngs | None = None, **kwargs):
    model = NoisyNet(nnx.Rngs(0), own_dropout_rngs=own_dropout_rngs)
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.05, momentum=0.9)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    return Trainer(model, optimizer, progress=False, rngs=rngs, **kwargs)


def leaves(*objects) -> list[np.ndarray]:
    """Every array of the objects' state, PRNG keys as their key data."""
    return [
        np.asarray(
            jax.random.key_data(leaf) if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key) else leaf
        )
        for leaf in jax.tree.leaves(nnx.state(objects))
    ]


def test_evaluation_runs_in_evaluation_mode_and_changes_nothing():
    trainer = noisy_trainer()
    trainer.fit(tiny_batches(16, 4), num_steps=4)
    before = leaves(trainer.model)
    first = trainer.evaluate(tiny_batches(16, 3, seed=1))
    second = trainer.evaluate(tiny_batches(16, 3, seed=1))
    assert first == second
    for a, b in zip(before, leaves(trainer.model), strict=True):
        np.testing.assert_array_equal(a, b)  # BatchNorm statistics and dropout streams untouched


def test_evaluations_during_fit_do_not_change_training():
    plain = noisy_trainer()
    plain.fit(tiny_batches(16, 6), num_epochs=2)
    evaluated = noisy_trainer()
    evaluated.fit(
        tiny_batches(16, 6), num_epochs=2, eval_data=tiny_batches(16, 2, seed=1), eval_every_steps=2
    )
    for a, b in zip(leaves(plain.model), leaves(evaluated.model), strict=True):
        np.testing.assert_array_equal(a, b)


def test_fit_trains_in_training_mode_and_leaves_the_users_mode():
    trainer = noisy_trainer()
    trainer.model.eval()  # the user's mode
    trainer.fit(tiny_batches(16, 4), num_steps=4)
    assert trainer.model.dropout.deterministic
    assert trainer.model.norm.use_running_average
    # It trained in training mode: the batch statistics moved the running mean.
    assert np.any(np.asarray(trainer.model.norm.mean[...]) != 0)


def test_a_tutorial_model_takes_the_trainers_rngs():
    history = noisy_trainer(own_dropout_rngs=False, rngs=nnx.Rngs(dropout=3)).fit(
        tiny_batches(16, 4), num_steps=4
    )
    assert len(history.train) == 1
    with pytest.raises(ValueError, match=r"^Trainer.fit: the model draws random numbers"):
        noisy_trainer(own_dropout_rngs=False).fit(tiny_batches(16, 4), num_steps=4)


def test_the_rngs_advance_and_dropout_differs_between_steps():
    rngs = nnx.Rngs(dropout=3)
    trainer = noisy_trainer(own_dropout_rngs=False, rngs=rngs)
    trainer.fit(tiny_batches(16, 4), num_steps=4)
    assert int(trainer.rngs.dropout.count[...]) == 4  # one draw per step, carried by the loop


def test_eval_every_steps_without_eval_data_is_an_error():
    model, optimizer = tiny_setup()
    with pytest.raises(ValueError, match=r"^Trainer.fit: eval_every_steps=2, but there is no"):
        Trainer(model, optimizer, progress=False).fit(
            tiny_batches(16, 4), num_epochs=1, eval_every_steps=2
        )


def test_an_eval_step_returning_a_bare_scalar_is_an_error():
    model, optimizer = tiny_setup()

    def eval_step(model, batch):
        return jnp.mean(model(batch[0]))

    trainer = Trainer(model, optimizer, eval_step=eval_step, progress=False)
    with pytest.raises(TypeError, match=r"^Trainer.evaluate: eval_step must return a mapping"):
        trainer.evaluate(tiny_batches(16, 2))


def test_a_second_fit_that_has_nothing_to_train_says_so(caplog):
    model, optimizer = tiny_setup()
    trainer = Trainer(model, optimizer, progress=False)
    trainer.fit(tiny_batches(16, 4), num_epochs=1)
    with caplog.at_level("WARNING", logger="flax_cyclic"):
        history = trainer.fit(tiny_batches(16, 4), num_epochs=1)
    assert history.train == []
    assert trainer.step == 4
    assert "nothing to train: this trainer has completed step 4, epoch 1" in caplog.text
    assert "Raise num_epochs to train longer" in caplog.text


def plateau_trainer(directory, *, every_steps, extra=(), best_metric=None, monitor="train/loss"):
    """A tiny MLP whose LR a plateau on `monitor` halves (patience 0: at every non-improvement)."""
    from flax_cyclic import Checkpointer, ReduceLROnPlateau

    model, optimizer = tiny_setup()
    plateau = ReduceLROnPlateau(base_lr=0.05, mode="min", factor=0.5, patience=0, threshold=0.5)
    checkpointer = Checkpointer(
        directory, every_steps=every_steps, best_metric=best_metric, async_save=False
    )
    callbacks = [LRSchedulerCallback(plateau, monitor=monitor), LRTrace(), *extra]
    trainer = Trainer(model, optimizer, callbacks=callbacks, checkpointer=checkpointer)
    trainer.progress = False
    return trainer


class LRTrace(Callback):
    """The learning rate each update applied, read back from the optimizer after it."""

    def __init__(self):
        self.lrs: dict[int, float] = {}

    def on_step_end(self, loop, step, metrics):
        lr = loop.optimizer.opt_state.hyperparams["learning_rate"]
        self.lrs[step] = float(np.asarray(lr[...]))


def test_a_save_at_an_epochs_last_step_comes_after_its_end(tmp_path):
    data, evals = tiny_batches(16, 4), tiny_batches(16, 2, seed=1)
    trainer = plateau_trainer(tmp_path, every_steps=4, best_metric="eval/loss")
    trainer.fit(data, num_epochs=3, eval_data=evals)
    checkpointer = trainer.checkpointer
    assert all(checkpointer.metrics(step) is not None for step in checkpointer.all_steps())
    assert checkpointer.best_step() in (4, 8, 12)
    # The checkpoint of step 4 holds the epoch's end: a resume from it skips nothing.
    reference = plateau_trainer(tmp_path / "reference", every_steps=4)
    reference.fit(data, num_epochs=3)
    crashed = plateau_trainer(tmp_path / "crashed", every_steps=4, extra=[CrashAt(5)])
    with pytest.raises(KeyboardInterrupt):
        crashed.fit(data, num_epochs=3)
    resumed = plateau_trainer(tmp_path / "crashed", every_steps=4)
    resumed.fit(data, num_epochs=3)
    trace = resumed.callbacks.callbacks[1].lrs
    assert trace == {s: lr for s, lr in reference.callbacks.callbacks[1].lrs.items() if s >= 4}
    assert len(set(trace.values())) > 1  # the plateau acted


def test_a_resumed_epochs_train_mean_covers_the_whole_epoch(tmp_path):
    data = tiny_batches(16, 5)
    reference = plateau_trainer(tmp_path / "reference", every_steps=2)
    expected = reference.fit(data, num_epochs=3).train
    crashed = plateau_trainer(tmp_path / "crashed", every_steps=2, extra=[CrashAt(8)])
    with pytest.raises(KeyboardInterrupt):
        crashed.fit(data, num_epochs=3)
    resumed = plateau_trainer(tmp_path / "crashed", every_steps=2)
    history = resumed.fit(data, num_epochs=3)
    assert history.resumed_from == 8
    assert history.train == [entry for entry in expected if entry["step"] > 8]
    assert resumed.callbacks.callbacks[1].lrs == {
        s: lr for s, lr in reference.callbacks.callbacks[1].lrs.items() if s >= 8
    }


def test_an_early_stopped_run_is_complete_when_run_again(tmp_path, caplog):
    from flax_cyclic import Checkpointer, EarlyStopping

    def run(*, stopper=True):
        model, optimizer = tiny_setup(lr=0.05)
        stoppers = [EarlyStopping(monitor="eval/loss", patience=1, min_delta=100.0)]
        checkpointer = Checkpointer(tmp_path, every_steps=3, async_save=False)
        trainer = Trainer(
            model,
            optimizer,
            callbacks=stoppers if stopper else [],
            checkpointer=checkpointer,
            progress=False,
        )
        data, evals = tiny_batches(16, 4), tiny_batches(16, 2, seed=1)
        return trainer, trainer.fit(data, num_epochs=10, eval_data=evals, eval_every_steps=2)

    first, history = run()
    assert history.stopped
    assert first.step == 4  # evaluations at 2 and 4: no improvement at 4, patience 1
    with caplog.at_level("WARNING", logger="flax_cyclic"):
        again, history = run()
    assert again.step == 4
    assert history.stopped
    assert history.train == []
    assert "stopped early at step 4 (EarlyStopping[eval/loss] set stop_training)" in caplog.text
    # Without what stopped it, the run trains on to its end.
    on, history = run(stopper=False)
    assert on.step == 40
    assert not history.stopped


def test_a_batch_that_cannot_be_split_over_the_mesh_is_a_clear_error():
    model, optimizer = tiny_setup()
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    trainer = Trainer(model, optimizer, mesh=mesh, progress=False)

    def with_a_scalar(epoch):
        return [{"image": x, "label": y, "scale": np.float32(1.0)} for x, y in tiny_batches(16, 2)]

    with pytest.raises(ValueError, match=r"^Trainer: the batch leaf \['scale'\] is a scalar"):
        trainer.fit(with_a_scalar, num_steps=1)


def test_the_rngs_resume_with_the_run(tmp_path):
    from flax_cyclic import Checkpointer

    def trainer(directory, *extra):
        return noisy_trainer(
            own_dropout_rngs=False,
            rngs=nnx.Rngs(dropout=3),
            checkpointer=Checkpointer(directory, every_steps=2, async_save=False),
            callbacks=list(extra),
        )

    data = tiny_batches(16, 4)
    reference = trainer(tmp_path / "reference")
    reference.fit(data, num_epochs=2)
    crashed = trainer(tmp_path / "run", CrashAt(5))
    with pytest.raises(KeyboardInterrupt):
        crashed.fit(data, num_epochs=2)
    resumed = trainer(tmp_path / "run")
    assert resumed.fit(data, num_epochs=2).resumed_from == 4
    for a, b in zip(
        leaves(reference.model, reference.rngs), leaves(resumed.model, resumed.rngs), strict=True
    ):
        np.testing.assert_array_equal(a, b)


def test_rngs_for_a_step_or_model_that_takes_none_is_refused_at_once():
    model, optimizer = tiny_setup()  # MLP.__call__(self, x): no rngs
    with pytest.raises(TypeError, match=r"^Trainer: rngs is given, so the model \(by the default"):
        Trainer(model, optimizer, rngs=nnx.Rngs(0))

    def train_step(model, optimizer, batch):
        return {}

    with pytest.raises(TypeError, match=r"^Trainer: rngs is given, so train_step is called"):
        Trainer(model, optimizer, train_step=train_step, rngs=nnx.Rngs(0))
