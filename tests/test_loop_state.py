"""The loop's objects are the truth at every hook: what a hook leaves there is what trains.

Each case runs the Trainer and, as the reference, a hand-written ``nnx.jit`` loop that drives
the same callbacks through a ``CallbackList`` (where the objects are the truth by
construction), and compares the parameters and every learning rate the optimizer applied.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from helpers import tiny_batches, tiny_setup

from flax_cyclic import (
    Callback,
    CallbackList,
    CyclicLR,
    LearningRateMonitor,
    LRSchedulerCallback,
    Trainer,
    classification_train_step,
    set_hyperparams,
)


def reference_fit(model, optimizer, callbacks, batches, num_epochs):
    """The hand-written loop of docs/own_loop.md: ``nnx.jit`` step, hooks through CallbackList."""
    step = nnx.jit(classification_train_step)
    loop = CallbackList(callbacks, model=model, optimizer=optimizer)
    loop.on_train_begin()
    for epoch in range(num_epochs):
        loop.on_epoch_begin(epoch)
        for batch in batches:
            loop.on_step_begin()
            metrics = step(loop.model, loop.optimizer, batch)
            loop.on_step_end(metrics)
            if loop.stop_training:
                break
        loop.on_epoch_end({})
        if loop.stop_training:
            break
    loop.on_train_end()
    return loop


def trainer_fit(model, optimizer, callbacks, batches, num_epochs, k=1):
    trainer = Trainer(model, optimizer, callbacks=callbacks, progress=False, steps_per_dispatch=k)
    trainer.fit(batches, num_epochs=num_epochs)
    return trainer


def params(model):
    return jax.tree.map(np.asarray, nnx.state(model, nnx.Param))


def assert_same_params(a, b, atol=0.0):
    for (path, x), (_, y) in zip(
        jax.tree_util.tree_leaves_with_path(params(a)),
        jax.tree_util.tree_leaves_with_path(params(b)),
        strict=True,
    ):
        np.testing.assert_allclose(x, y, rtol=0, atol=atol, err_msg=jax.tree_util.keystr(path))


class AssignsOptState(Callback):
    """Assigns ``opt_state`` (a new pytree of new Variables) with set_hyperparams."""

    def __init__(self, hook="on_train_begin", **values):
        self.hook, self.values = hook, values

    def _assign(self, loop):
        optimizer = loop.optimizer
        optimizer.opt_state = set_hyperparams(optimizer.opt_state, **self.values)

    def on_train_begin(self, loop):
        if self.hook == "on_train_begin":
            self._assign(loop)

    def on_epoch_end(self, loop, epoch, metrics):
        if self.hook == "on_epoch_end":
            self._assign(loop)


def test_opt_state_assigned_in_on_train_begin_is_what_trains():
    # The worst case of the review: the weights stayed untouched while 0.1 was logged.
    batches = tiny_batches(16, 6)
    runs = []
    for fit in (reference_fit, trainer_fit):
        model, optimizer = tiny_setup(lr=0.0)
        monitor = LearningRateMonitor(log_every_steps=1)
        fit(model, optimizer, [AssignsOptState(learning_rate=0.1), monitor], batches, 2)
        runs.append((model, monitor.history))
    (reference, logged), (model, trainer_logged) = runs
    assert not np.allclose(params(model)["out"]["kernel"], params(tiny_setup()[0])["out"]["kernel"])
    assert_same_params(model, reference)
    assert trainer_logged == logged
    assert [scalars["learning_rate"] for _, scalars in logged] == pytest.approx([0.1] * 12)


class ReplacesHead(Callback):
    """Replaces the output layer at the first epoch's end (a new submodule, new Variables)."""

    def on_epoch_end(self, loop, epoch, metrics):
        if epoch == 0:
            loop.model.out = nnx.Linear(32, 3, rngs=nnx.Rngs(7))


class ClipsWeights(Callback):
    """Max-norm style clipping in place at every step's end, through the loop."""

    def __init__(self, bound=0.2):
        self.bound = bound

    def on_step_end(self, loop, step, metrics):
        for _, param in nnx.iter_graph(loop.model):
            if isinstance(param, nnx.Param):
                param[...] = jnp.clip(param[...], -self.bound, self.bound)


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(ReplacesHead, id="submodule-replaced-at-epoch-end"),
        pytest.param(ClipsWeights, id="weights-clipped-in-place-at-step-ends"),
        pytest.param(lambda: AssignsOptState("on_epoch_end", momentum=0.5), id="opt-state-epoch"),
    ],
)
@pytest.mark.parametrize("k", [1, 4])
def test_what_a_hook_leaves_is_what_trains(make, k):
    batches = tiny_batches(16, 8)

    def callbacks():  # the writer first: the LR callback then writes into what it left
        return [make(), LRSchedulerCallback(CyclicLR(0.01, 0.1, step_size_up=3))]

    model, optimizer = tiny_setup()
    reference_fit(model, optimizer, callbacks(), batches, 3)
    trained, trained_optimizer = tiny_setup()
    if k > 1 and make is ClipsWeights:  # a step-hook write while the loop runs ahead
        with pytest.raises(RuntimeError, match=r"ClipsWeights.on_step_end changed model\."):
            trainer_fit(trained, trained_optimizer, callbacks(), batches, 3, k=k)
        # Refused at step 0's hooks, while the first two dispatches had trained (pipelined):
        # they trained without the change, and nothing trained with it.
        assert_same_params(trained, without_callback(batches, num_steps=2 * k, k=k))
        return
    trainer_fit(trained, trained_optimizer, callbacks(), batches, 3, k=k)
    assert_same_params(trained, model, atol=1e-6 if k > 1 else 0.0)


class Rescales(Callback):
    """Writes half the learning rate after the LR callback wrote it (one writer too many)."""

    def on_step_end(self, loop, step, metrics):
        hyperparams = loop.optimizer.opt_state.hyperparams
        hyperparams["learning_rate"][...] = 0.5 * hyperparams["learning_rate"][...]


def test_a_rescaler_after_the_lr_callback_is_refused_ahead_naming_it():
    model, optimizer = tiny_setup()
    callbacks = [LRSchedulerCallback(CyclicLR(0.01, 0.1, step_size_up=3)), Rescales()]
    batches = tiny_batches(16, 8)
    with pytest.raises(RuntimeError, match=r"Rescales.on_step_end changed optimizer\.opt_state"):
        trainer_fit(model, optimizer, callbacks, batches, 1, k=4)
    assert_same_params(model, without_callback(batches, num_steps=8, k=4))


def without_callback(batches, *, num_steps, k):
    """The model after ``num_steps`` of the LR callback alone: what ran before a refusal."""
    model, optimizer = tiny_setup()
    callbacks = [LRSchedulerCallback(CyclicLR(0.01, 0.1, step_size_up=3))]
    Trainer(model, optimizer, callbacks=callbacks, progress=False, steps_per_dispatch=k).fit(
        batches, num_steps=num_steps
    )
    return model


class RescalesAtEpochEnd(Callback):
    def on_epoch_end(self, loop, epoch, metrics):
        hyperparams = loop.optimizer.opt_state.hyperparams
        hyperparams["learning_rate"][...] = 0.5 * hyperparams["learning_rate"][...]


def test_a_write_over_a_planned_hyperparameter_at_a_boundary_is_refused_naming_it():
    model, optimizer = tiny_setup()
    callbacks = [
        LRSchedulerCallback(CyclicLR(0.01, 0.1, step_size_up=3), interval="epoch"),
        RescalesAtEpochEnd(),
    ]
    trainer = Trainer(model, optimizer, callbacks=callbacks, progress=False, steps_per_dispatch=4)
    with pytest.raises(RuntimeError, match=r"RescalesAtEpochEnd wrote an injected hyperparameter"):
        trainer.fit(tiny_batches(16, 8), num_epochs=2)
    assert trainer.step == 8  # refused before the second epoch's first update


class ReadsWeights(Callback):
    """An EMA of the weights on the host: reads only, at every step."""

    def __init__(self):
        self.average = None

    def on_step_end(self, loop, step, metrics):
        now = params(loop.model)
        self.average = (
            now
            if self.average is None
            else jax.tree.map(lambda a, b: 0.9 * a + 0.1 * b, self.average, now)
        )


@pytest.mark.parametrize("k", [1, 4])
def test_a_hook_that_only_reads_sees_the_state_and_changes_nothing(k):
    batches = tiny_batches(16, 8)
    runs = []
    for fit in (reference_fit, trainer_fit):
        model, optimizer = tiny_setup()
        reader = ReadsWeights()
        lr = LRSchedulerCallback(CyclicLR(0.01, 0.1, step_size_up=3))
        if fit is trainer_fit:
            fit(model, optimizer, [lr, reader], batches, 2, k=k)
        else:
            fit(model, optimizer, [lr, reader], batches, 2)
        runs.append((model, reader.average))
    (reference, average), (model, trainer_average) = runs
    assert_same_params(model, reference, atol=1e-6 if k > 1 else 0.0)
    if k == 1:  # at k > 1 a step's read sees the dispatch's end (loop.steps_ahead)
        jax.tree.map(np.testing.assert_array_equal, trainer_average, average)


def test_a_smaller_last_batch_runs_in_a_shorter_dispatch():
    # PyTorch's drop_last=False: the epoch's last batch is smaller.
    full = tiny_batches(16, 7)
    batches = [*full[:6], (full[6][0][:5], full[6][1][:5])]
    runs = []
    for k in (1, 4):
        model, optimizer = tiny_setup()
        callbacks = [LRSchedulerCallback(CyclicLR(0.01, 0.1, step_size_up=3))]
        trainer = trainer_fit(model, optimizer, callbacks, batches, 2, k=k)
        assert trainer.step == 14
        runs.append(model)
    assert_same_params(runs[1], runs[0], atol=1e-6)


def test_a_replaced_variable_of_equal_shape_compiles_nothing_new():
    from helpers import count_compilations

    model, optimizer = tiny_setup()

    class ReplacesKernel(Callback):
        def on_step_end(self, loop, step, metrics):
            kernel = loop.model.out.kernel
            loop.model.out.kernel = nnx.Param(kernel[...] * 1.0)

    trainer = Trainer(model, optimizer, callbacks=[ReplacesKernel()], progress=False)
    trainer.fit(tiny_batches(16, 2), num_steps=2)  # compiles
    with count_compilations() as compiled:
        trainer.fit(tiny_batches(16, 4), num_steps=6)
    assert not [name for name in compiled if "_pure" in name]


def test_an_optax_chain_with_a_new_opt_state_of_another_structure_still_trains():
    # opt_state replaced by one of another structure: the step splits and compiles again.
    model = tiny_setup()[0]
    optimizer = nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)

    class SwitchesToAdam(Callback):
        def on_epoch_end(self, loop, epoch, metrics):
            if epoch == 0:
                optimizer = loop.optimizer
                optimizer.tx = optax.adam(0.01)
                optimizer.opt_state = nnx.data(
                    jax.tree.map(nnx.OptState, optimizer.tx.init(nnx.state(loop.model, nnx.Param)))
                )

    batches = tiny_batches(16, 4)
    reference, reference_optimizer = tiny_setup()
    reference_optimizer = nnx.Optimizer(reference, optax.sgd(0.1), wrt=nnx.Param)
    reference_fit(reference, reference_optimizer, [SwitchesToAdam()], batches, 2)
    trainer_fit(model, optimizer, [SwitchesToAdam()], batches, 2)
    assert_same_params(model, reference)


class PlansAStrangerVariable(Callback):
    """Plans values for a Variable that the optimizer does not inject."""

    def __init__(self):
        self.variable = nnx.Variable(np.float32(0.1))

    def hyperparams_ahead(self, loop, start, steps):
        return [(self.variable, np.full(steps, 0.1, np.float32))]


def test_values_planned_for_a_variable_the_optimizer_does_not_inject_are_refused():
    model, optimizer = tiny_setup()
    trainer = Trainer(
        model, optimizer, callbacks=[PlansAStrangerVariable()], progress=False, steps_per_dispatch=4
    )
    with pytest.raises(ValueError, match=r"^Trainer\.fit: PlansAStrangerVariable gave values"):
        trainer.fit(tiny_batches(16, 8), num_steps=8)
    assert trainer.step == 0


class RescalesAtTheEnd(Callback):
    """Halves the learning rate at the run's last step, after the LR callback wrote it."""

    def on_step_end(self, loop, step, metrics):
        if loop.steps_ahead == 0 and step == 3:
            hyperparams = loop.optimizer.opt_state.hyperparams
            hyperparams["learning_rate"][...] = 0.5 * hyperparams["learning_rate"][...]


def test_a_write_over_a_planned_hyperparameter_is_refused_when_no_dispatch_follows():
    # The rule does not depend on whether another dispatch comes (found by the hooks oracle).
    model, optimizer = tiny_setup()
    callbacks = [LRSchedulerCallback(CyclicLR(0.01, 0.1, step_size_up=3)), RescalesAtTheEnd()]
    trainer = Trainer(model, optimizer, callbacks=callbacks, progress=False, steps_per_dispatch=4)
    with pytest.raises(RuntimeError, match=r"RescalesAtTheEnd wrote an injected hyperparameter"):
        trainer.fit(tiny_batches(16, 4), num_steps=4)


class Quiet(Callback):
    """A step hook that touches nothing: the hook after it is given what it left."""

    def on_step_begin(self, loop, step):
        pass

    def on_step_end(self, loop, step, metrics):
        pass


class RescalesUnsynced(Callback):
    """Writes the learning rate through ``loop.optimizer_object`` (no sync) at a given step."""

    def __init__(self, at):
        self.at = at

    def on_step_end(self, loop, step, metrics):
        if step == self.at:
            variable = loop.optimizer_object.opt_state.hyperparams["learning_rate"]
            variable.set_raw_value(jnp.float32(0.5))


class AlsoQuiet(Quiet):
    pass


@pytest.mark.parametrize("at", [1, 5])
def test_a_write_without_a_sync_after_a_quiet_hook_is_refused_ahead_naming_it(at):
    model, optimizer = tiny_setup()
    lr = LRSchedulerCallback(CyclicLR(0.01, 0.1, step_size_up=3))
    callbacks = [lr, Quiet(), RescalesUnsynced(at)]
    with pytest.raises(RuntimeError, match=r"RescalesUnsynced.on_step_end changed injected"):
        trainer_fit(model, optimizer, callbacks, tiny_batches(16, 8), 1, k=4)


def test_quiet_hooks_around_evaluations_and_epoch_ends_are_not_refused():
    """The Trainer syncs the objects between dispatches (an evaluation): no false refusal."""
    batches = tiny_batches(16, 8)
    runs = []
    for k in (1, 4):
        model, optimizer = tiny_setup()
        lr = LRSchedulerCallback(CyclicLR(0.01, 0.1, step_size_up=3))
        trainer = Trainer(
            model,
            optimizer,
            callbacks=[Quiet(), lr, AlsoQuiet()],
            progress=False,
            steps_per_dispatch=k,
        )
        trainer.fit(batches, num_epochs=2, eval_data=batches[:2], eval_every_steps=4)
        runs.append(model)
    assert_same_params(*runs)
