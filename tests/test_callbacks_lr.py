"""LRSchedulerCallback driving optax.inject_hyperparams inside an nnx.Optimizer."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from helpers import (
    MLP,
    CrashAt,
    RecordingWriter,
    count_compilations,
    host_lrs,
    host_momentums,
    raises_exactly,
    tiny_batches,
    tiny_mlp,
    tiny_setup,
)

from flax_cyclic import (
    Callback,
    CallbackList,
    Checkpointer,
    CyclicLR,
    LearningRateMonitor,
    LRSchedulerCallback,
    OneCycleLR,
    ReduceLROnPlateau,
    SequentialLR,
    Trainer,
    cyclic_schedule,
    set_hyperparams,
)
from flax_cyclic._hyperparams import find_injected_hyperparams
from flax_cyclic.callbacks._lr_guards import CountCheck
from flax_cyclic.steps import classification_train_step


class Revealer(nnx.Module):
    """loss = sum(w) with w = ones(n): every gradient is 1, so SGD moves w by exactly -lr."""

    def __init__(self, n: int = 1):
        self.w = nnx.Param(jnp.zeros(n))

    def __call__(self):
        return jnp.sum(self.w[...])


@nnx.jit
def reveal_step(model, optimizer):
    grads = nnx.grad(lambda m: m())(model)
    optimizer.update(model, grads)
    return {}


def _run(model, optimizer, callbacks, steps, step_fn=reveal_step):
    loop = CallbackList(callbacks, model=model, optimizer=optimizer)
    loop.on_train_begin()
    applied = []
    for _ in range(steps):
        model.w.set_value(jnp.zeros_like(model.w[...]))  # so that -w is this update exactly
        loop.on_step_begin()
        metrics = step_fn(model, optimizer)
        loop.on_step_end(metrics)
        applied.append(-np.asarray(model.w[...]))
    loop.on_train_end()
    return np.array(applied)


CONFIG = dict(base_lr=0.01, max_lr=0.1, step_size_up=3, step_size_down=5, mode="triangular2")


def test_update_k_uses_the_scheduler_value_at_k():
    model = Revealer()
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.0)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    applied = _run(model, optimizer, [LRSchedulerCallback(CyclicLR(**CONFIG))], 30)
    expected = [lr[0] for lr in host_lrs(CyclicLR(**CONFIG), 30)]
    np.testing.assert_allclose(applied[:, 0], expected, rtol=1e-6)


def test_optimizer_state_holds_the_scheduler_value():
    model = Revealer()
    scheduler = CyclicLR(**CONFIG)
    tx = optax.inject_hyperparams(optax.adam)(learning_rate=0.0)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    loop = CallbackList([LRSchedulerCallback(scheduler)], model=model, optimizer=optimizer)
    loop.on_train_begin()
    for _ in range(12):
        injected = optimizer.opt_state.hyperparams["learning_rate"][...]
        assert injected.dtype == np.float32  # the dtype optax chose is kept
        assert injected == np.float32(scheduler.get_last_lr()[0])
        loop.on_step_begin()
        reveal_step(model, optimizer)
        loop.on_step_end()


def test_exactly_one_compilation_over_a_thousand_changing_steps():
    model = Revealer()
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.0, momentum=0.9)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

    @nnx.jit
    def train_step(model, optimizer):
        optimizer.update(model, nnx.grad(lambda m: m())(model))

    scheduler = CyclicLR(0.01, 0.1, step_size_up=7, cycle_momentum=True)
    loop = CallbackList([LRSchedulerCallback(scheduler)], model=model, optimizer=optimizer)
    with count_compilations() as compiled:
        loop.on_train_begin()
        for _ in range(1000):
            loop.on_step_begin()
            train_step(model, optimizer)
            loop.on_step_end()
    assert len(compiled) == 1
    assert scheduler.last_epoch == 1000


@pytest.mark.parametrize(
    ("labels", "groups", "driving_group"),
    [
        # Explicit labels: scheduler group 1 drives "a", which holds the parameters.
        (("b", "a"), ["b", "a"], 1),
        # Without labels, sorted order: "a" is group 0 and holds the parameters...
        (("z", "a"), None, 0),
        # ... or "z" is group 1 and does.
        (("a", "z"), None, 1),
    ],
)
def test_parameter_groups_through_multi_transform(labels, groups, driving_group):
    model = Revealer(2)
    inject = optax.inject_hyperparams(optax.sgd)
    holder = labels[1]  # the label whose transformation receives every parameter
    tx = optax.multi_transform(
        {label: inject(learning_rate=0.0) for label in labels},
        lambda params: jax.tree.map(lambda _: holder, params),
    )
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    config = dict(base_lr=[0.01, 0.02], max_lr=[0.1, 0.2], step_size_up=4)
    callback = LRSchedulerCallback(CyclicLR(**config), groups=groups)
    applied = _run(model, optimizer, [callback], 10)
    expected = [lr[driving_group] for lr in host_lrs(CyclicLR(**config), 10)]
    np.testing.assert_allclose(applied[:, 0], expected, rtol=1e-6)


@pytest.mark.parametrize(("transform", "name"), [(optax.sgd, "momentum"), (optax.adam, "b1")])
def test_momentum_cycling_drives_sgd_momentum_or_adam_b1(transform, name):
    model = Revealer()
    kwargs = {"momentum": 0.0} if name == "momentum" else {}
    tx = optax.inject_hyperparams(transform)(learning_rate=0.0, **kwargs)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    config = dict(base_lr=0.01, max_lr=0.1, step_size_up=3, cycle_momentum=True)
    scheduler = CyclicLR(**config, base_momentum=0.85, max_momentum=0.95)
    loop = CallbackList([LRSchedulerCallback(scheduler)], model=model, optimizer=optimizer)
    loop.on_train_begin()
    seen = []
    for _ in range(8):
        seen.append(float(optimizer.opt_state.hyperparams[name].get_value()))
        loop.on_step_begin()
        reveal_step(model, optimizer)
        loop.on_step_end()
    expected = host_momentums(CyclicLR(**config, base_momentum=0.85, max_momentum=0.95), 8)
    np.testing.assert_allclose(seen, [m[0] for m in expected], rtol=1e-6)


def test_gradient_accumulation_advances_once_per_update():
    model = Revealer()
    inner = optax.inject_hyperparams(optax.sgd)(learning_rate=0.0)
    tx = optax.MultiSteps(inner, every_k_schedule=3).gradient_transformation()
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    scheduler = CyclicLR(**CONFIG)
    writer = RecordingWriter()
    # every_k_schedule=3 is read from the optimizer: accumulation_steps is not needed.
    applied = _run(model, optimizer, [LRSchedulerCallback(scheduler, writer=writer)], 24)
    assert scheduler.last_epoch == 8
    expected = [lr[0] for lr in host_lrs(CyclicLR(**CONFIG), 8)]
    # Logged at the loop's step each update completed (as the monitor and checkpoints count).
    assert [step for step, _ in writer.series("learning_rate")] == list(range(3, 25, 3))
    np.testing.assert_allclose(
        [lr for _, lr in writer.series("learning_rate")], expected, rtol=1e-6
    )
    # Parameters move on every third train step only, by the LR of that update.
    np.testing.assert_allclose(applied[2::3, 0], expected, rtol=1e-6)
    assert not applied[0::3].any()
    assert not applied[1::3].any()


def test_per_epoch_interval():
    model = Revealer()
    optimizer = nnx.Optimizer(
        model, optax.inject_hyperparams(optax.sgd)(learning_rate=0.0), wrt=nnx.Param
    )
    scheduler = CyclicLR(0.01, 0.1, step_size_up=2)
    loop = CallbackList(
        [LRSchedulerCallback(scheduler, interval="epoch")], model=model, optimizer=optimizer
    )
    loop.on_train_begin()
    per_epoch = []
    for epoch in range(4):
        loop.on_epoch_begin(epoch)
        for _ in range(3):
            before = float(model.w[...][0])
            loop.on_step_begin()
            reveal_step(model, optimizer)
            loop.on_step_end()
            per_epoch.append((epoch, round(before - float(model.w[...][0]), 6)))
        loop.on_epoch_end()
    lrs = [0.01, 0.055, 0.1, 0.055]
    assert per_epoch == [(e, lrs[e]) for e in range(4) for _ in range(3)]


def test_logs_the_value_each_update_used_without_off_by_one():
    model = Revealer()
    optimizer = nnx.Optimizer(
        model, optax.inject_hyperparams(optax.sgd)(learning_rate=0.0), wrt=nnx.Param
    )
    writer = RecordingWriter(plan=True)
    callback = LRSchedulerCallback(CyclicLR(**CONFIG), writer=writer, log_every_steps=2)
    applied = _run(model, optimizer, [callback], 10)
    # Step s is s updates completed: what update s - 1 applied, at the multiples of 2.
    assert [step for step, _ in writer.scalars] == [2, 4, 6, 8, 10]
    for step, scalars in writer.scalars:
        assert scalars["learning_rate"] == np.float32(applied[step - 1, 0])
        assert set(scalars) == {"learning_rate", "lr_cycle", "lr_cycle_position"}
    assert writer.scalars[1][1]["lr_cycle_position"] == 3 / 8  # update 3, logged at step 4
    # Written once on a fresh start: the configuration and a plot of three cycles.
    assert len(writer.hparams) == 1
    assert writer.hparams[0]["scheduler/mode"] == "triangular2"
    assert writer.hparams[0]["scheduler/base_lrs"] == "[0.01]"
    assert writer.images == [(0, {"lr_schedule": (1, 320, 800, 3)})]
    assert writer.flushes == 1  # at the end of training


def test_a_restored_callback_writes_no_second_plan():
    model = Revealer()
    optimizer = nnx.Optimizer(
        model, optax.inject_hyperparams(optax.sgd)(learning_rate=0.0), wrt=nnx.Param
    )
    saved = LRSchedulerCallback(CyclicLR(**CONFIG))
    saved.scheduler.step(epoch=5)
    writer = RecordingWriter(plan=True)
    callback = LRSchedulerCallback(CyclicLR(**CONFIG), writer=writer)
    callback.load_state_dict(saved.state_dict())
    _run(model, optimizer, [callback], 2)
    assert writer.hparams == []
    assert writer.images == []
    # The scheduler stood at step 5: updates 5 and 6, logged once done, at steps 6 and 7.
    assert [step for step, _ in writer.scalars] == [6, 7]


def test_state_round_trip_restores_the_scheduler():
    callback = LRSchedulerCallback(CyclicLR(**CONFIG))
    callback.scheduler.step(epoch=5)
    restored = LRSchedulerCallback(CyclicLR(**CONFIG))
    restored.load_state_dict(callback.state_dict())
    assert restored.scheduler.last_epoch == 5


# -- bad input --


def _loop(tx, callback, model=None):
    model = model or Revealer()
    return CallbackList([callback], model=model, optimizer=nnx.Optimizer(model, tx, wrt=nnx.Param))


def test_optimizer_without_inject_hyperparams():
    loop = _loop(optax.sgd(0.1), LRSchedulerCallback(CyclicLR()))
    with pytest.raises(ValueError, match=r"no injected hyperparameters.*inject_hyperparams"):
        loop.on_train_begin()


def test_absent_hyperparameter_lists_the_present_ones():
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.0)
    loop = _loop(tx, LRSchedulerCallback(CyclicLR(), learning_rate="lr"))
    with raises_exactly(
        ValueError,
        "LRSchedulerCallback: the optimizer does not inject what the scheduler sets: the root "
        "of the optimizer state has no 'lr' (it injects ['learning_rate']). Pass the right name "
        "(learning_rate=..., momentum=...) or inject it.",
    ):
        loop.on_train_begin()


def test_momentum_cycling_without_an_injected_momentum():
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.0)
    loop = _loop(tx, LRSchedulerCallback(CyclicLR(cycle_momentum=True)))
    with raises_exactly(
        ValueError,
        "LRSchedulerCallback: the optimizer does not inject what the scheduler sets (it cycles "
        "momentum): the root of the optimizer state has neither 'momentum' nor 'b1' (it injects "
        "['learning_rate']). Pass the right name (learning_rate=..., momentum=...) or inject it, "
        "e.g. optax.inject_hyperparams(optax.sgd)(learning_rate=0.0, momentum=0.9); or pass "
        "momentum=None to leave momentum alone.",
    ):
        loop.on_train_begin()


def test_learning_rate_injected_as_a_schedule_is_refused():
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=optax.constant_schedule(0.5))
    model = Revealer()
    loop = _loop(tx, LRSchedulerCallback(CyclicLR(**CONFIG)), model)
    loop.on_train_begin()
    loop.on_step_begin()
    reveal_step(model, loop.optimizer)
    with pytest.raises(ValueError, match="injected as a schedule"):
        loop.on_step_end()


def test_group_count_mismatch():
    inject = optax.inject_hyperparams(optax.sgd)
    tx = optax.multi_transform(
        {"a": inject(learning_rate=0.0), "b": inject(learning_rate=0.0), "c": inject(0.0)},
        lambda params: jax.tree.map(lambda _: "a", params),
    )
    loop = _loop(tx, LRSchedulerCallback(CyclicLR([0.1, 0.2], 0.5)))
    with pytest.raises(ValueError, match=r"2 parameter groups but the optimizer has 3.*a, b, c"):
        loop.on_train_begin()
    loop = _loop(tx, LRSchedulerCallback(CyclicLR([0.1, 0.2], 0.5), groups=["a", "x"]))
    with pytest.raises(ValueError, match=r"labelled \['x'\].*\['a', 'b', 'c'\]"):
        loop.on_train_begin()


def test_used_before_an_optimizer_exists():
    with pytest.raises(ValueError, match=r"the loop has no optimizer, got loop\.optimizer=None"):
        CallbackList([LRSchedulerCallback(CyclicLR())]).on_train_begin()


def test_accumulation_steps_for_an_optimizer_without_multisteps():
    inner = optax.inject_hyperparams(optax.sgd)(learning_rate=0.0)
    with raises_exactly(
        ValueError,
        "LRSchedulerCallback: accumulation_steps=2 but the optimizer is not an optax.MultiSteps; "
        "leave accumulation_steps out (or pass 1).",
    ):
        _loop(inner, LRSchedulerCallback(CyclicLR(), accumulation_steps=2)).on_train_begin()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"interval": "batch"}, ValueError, "interval='batch'"),
        ({"accumulation_steps": 0}, ValueError, "accumulation_steps=0"),
        ({"log_every_steps": 1.5}, TypeError, "log_every_steps=1.5"),
        ({"writer": object()}, TypeError, "MetricWriter interface"),
        ({"groups": ["a", "b"]}, ValueError, "2 labels but the scheduler has 1"),
    ],
)
def test_bad_options(kwargs, error, match):
    with pytest.raises(error, match=match):
        LRSchedulerCallback(CyclicLR(), **kwargs)


def test_a_pure_schedule_is_not_a_scheduler():
    with pytest.raises(TypeError, match="Pure schedules go straight into optax"):
        LRSchedulerCallback(optax.constant_schedule(0.1))


def test_logs_every_group_and_the_momentum():
    model = Revealer(2)
    inject = optax.inject_hyperparams(optax.sgd)
    tx = optax.multi_transform(
        {"head": inject(learning_rate=0.0, momentum=0.0), "body": inject(0.0, momentum=0.0)},
        lambda params: jax.tree.map(lambda _: "head", params),
    )
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    scheduler = CyclicLR([0.01, 0.02], [0.1, 0.2], step_size_up=2, cycle_momentum=True)
    writer = RecordingWriter(plan=True)
    callback = LRSchedulerCallback(scheduler, groups=["body", "head"], writer=writer)
    _run(model, optimizer, [callback], 3)
    step, scalars = writer.scalars[1]
    assert step == 2  # what update 1 applied
    f32 = np.float32  # the values as the float32 hyperparameters hold them: applied = logged
    assert scalars == {
        "learning_rate/body": float(f32(0.055)),
        "learning_rate/head": float(f32(0.11)),
        "momentum/body": float(f32(0.85)),
        "momentum/head": float(f32(0.85)),
        "lr_cycle": 1,
        "lr_cycle_position": 0.25,
    }


# -- guards: what optax applies is what the scheduler reports --


def _steps(loop, model, count):
    """Runs `count` reveal steps, waiting for each (so that deferred checks can run)."""
    for _ in range(count):
        loop.on_step_begin()
        reveal_step(model, loop.optimizer)
        jax.block_until_ready(nnx.state(loop.optimizer))
        loop.on_step_end()


def test_a_schedule_injected_with_a_callback_is_refused_within_the_first_cycle():
    # Both start at 0.01, so the first update cannot tell them apart; the second can.
    schedule = cyclic_schedule(0.01, 0.1, step_size_up=4)
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=schedule)
    model = Revealer()
    callback = LRSchedulerCallback(CyclicLR(base_lr=0.01, max_lr=0.1, step_size_up=20))
    loop = _loop(tx, callback, model)
    loop.on_train_begin()
    with raises_exactly(
        ValueError,
        "LRSchedulerCallback: update 1 applied 'learning_rate'=0.0325 at the root of the "
        "optimizer state, but the scheduler set 0.0145, so the callback's values are neither "
        "what trains nor what is logged. Either another writer sets it after this callback (a "
        "callback later in the list, or the loop itself): one callback drives each "
        "hyperparameter; to scale the schedule, use the scheduler's scale_fn or a custom "
        "scheduler instead of a second writer. Or it was injected as a schedule (e.g. "
        "inject_hyperparams(optax.sgd)(learning_rate=cyclic_schedule(...))), which the "
        "transformation computes itself at every update: inject a number instead, e.g. "
        "inject_hyperparams(optax.sgd)(learning_rate=0.0); the callback sets it. Here "
        "'learning_rate' is injected as a schedule.",
    ):
        _steps(loop, model, 8)
    assert loop.step == 1  # raised at the end of update 1


class Rescales(Callback):
    """Halves the learning rate the LR callback wrote: a second writer, after it in the list."""

    def on_train_begin(self, loop):
        self._halve(loop)

    def on_step_end(self, loop, step, metrics):
        self._halve(loop)

    def _halve(self, loop):
        learning_rate = loop.optimizer.opt_state.hyperparams["learning_rate"]
        learning_rate[...] = 0.5 * learning_rate[...]


SECOND_WRITER = (
    r"^LRSchedulerCallback: update 0 applied 'learning_rate'=0\.005 at the root of the optimizer "
    r"state, but the scheduler set 0\.01, so the callback's values are neither what trains nor "
    r"what is logged\. Either another writer sets it after this callback \(a callback later in "
    r"the list, or the loop itself\): one callback drives each hyperparameter; to scale the "
    r"schedule, use the scheduler's scale_fn or a custom scheduler instead of a second writer\. "
    r"Or it was injected as a schedule .* Here 'learning_rate' is injected as a number, so "
    r"another writer changed it\.$"
)


def test_a_second_writer_after_the_callback_is_refused_at_update_0_naming_both_causes():
    model = Revealer()
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.0)
    callbacks = [LRSchedulerCallback(CyclicLR(**CONFIG)), Rescales()]
    loop = CallbackList(callbacks, model=model, optimizer=nnx.Optimizer(model, tx, wrt=nnx.Param))
    loop.on_train_begin()
    with pytest.raises(ValueError, match=SECOND_WRITER):
        _steps(loop, model, 1)
    assert loop.step == 0  # raised in the hooks of update 0
    np.testing.assert_allclose(-model.w[...], [0.005])  # it did train at the halved value


def test_a_second_writer_after_the_callback_is_refused_in_the_trainer():
    model, optimizer = tiny_setup()
    callbacks = [LRSchedulerCallback(CyclicLR(**CONFIG)), Rescales()]
    trainer = Trainer(model, optimizer, callbacks=callbacks, progress=False)
    with pytest.raises(ValueError, match=SECOND_WRITER):
        trainer.fit(tiny_batches(), num_steps=6)  # at the latest at the end (waits then)


def test_a_schedule_injected_with_a_callback_is_refused_in_the_trainer():
    model = tiny_mlp()
    schedule = cyclic_schedule(0.01, 0.1, step_size_up=4)
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=schedule, momentum=0.9)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    callback = LRSchedulerCallback(CyclicLR(base_lr=0.01, max_lr=0.1, step_size_up=20))
    trainer = Trainer(model, optimizer, callbacks=[callback], progress=False)
    with pytest.raises(ValueError, match=r"injected as a schedule"):
        trainer.fit(tiny_batches(), num_steps=6)  # at the latest at the end (waits then)


def test_the_check_for_a_schedule_ends_once_a_changed_value_matched():
    model = Revealer()
    callback = LRSchedulerCallback(CyclicLR(**CONFIG))
    loop = _loop(optax.inject_hyperparams(optax.sgd)(learning_rate=0.0), callback, model)
    loop.on_train_begin()
    _steps(loop, model, 3)
    # The optimizer's values are no longer read: a (hypothetical) later difference is not
    # looked for, and no device value is kept alive.
    assert callback._applied_check.unconfirmed == {}
    assert callback._applied_check.pending == []


def test_accumulation_steps_that_disagree_with_multisteps_are_refused():
    inner = optax.inject_hyperparams(optax.sgd)(learning_rate=0.0)
    tx = optax.MultiSteps(inner, every_k_schedule=4).gradient_transformation()
    with raises_exactly(
        ValueError,
        "LRSchedulerCallback: accumulation_steps=2 but the optimizer's optax.MultiSteps updates "
        "every 4 train steps (every_k_schedule=4): the scheduler would run 2 times too fast. "
        "Pass accumulation_steps=4, or leave it out to read it from the optimizer.",
    ):
        _loop(tx, LRSchedulerCallback(CyclicLR(), accumulation_steps=2)).on_train_begin()


def test_accumulation_steps_checked_against_the_update_count_when_it_cannot_be_read():
    inner = optax.inject_hyperparams(optax.sgd)(learning_rate=0.0)
    tx = optax.MultiSteps(inner, every_k_schedule=lambda step: 4).gradient_transformation()
    with pytest.raises(ValueError, match=r"cannot be read as one number.*accumulation_steps=k"):
        _loop(tx, LRSchedulerCallback(CyclicLR())).on_train_begin()
    model = Revealer()
    loop = _loop(tx, LRSchedulerCallback(CyclicLR(), accumulation_steps=2), model)
    loop.on_train_begin()
    with pytest.raises(
        ValueError,
        match=r"^LRSchedulerCallback: optax.MultiSteps \(at the root of the optimizer state\) "
        r"made 0 parameter updates in 2 train steps, but accumulation_steps=2 means 1",
    ):
        _steps(loop, model, 8)  # within 2k micro-steps


def test_a_scheduler_stepped_outside_the_callback_is_refused():
    model = Revealer()
    scheduler = CyclicLR(**CONFIG)
    loop = _loop(
        optax.inject_hyperparams(optax.sgd)(learning_rate=0.0),
        LRSchedulerCallback(scheduler),
        model,
    )
    loop.on_train_begin()
    _steps(loop, model, 2)
    scheduler.step()  # as well: twice as fast
    with raises_exactly(
        RuntimeError,
        "LRSchedulerCallback: the scheduler stands at step 3, but the callback left it at step "
        "2: something else moved it (scheduler.step() or load_state_dict in the loop as well?). "
        "The callback owns its scheduler and steps it after every update; remove the other "
        "calls, or drive the scheduler yourself without the callback.",
    ):
        _steps(loop, model, 1)


def test_step_hooks_before_on_train_begin_are_refused():
    loop = _loop(
        optax.inject_hyperparams(optax.sgd)(learning_rate=0.0), LRSchedulerCallback(CyclicLR())
    )
    for hook in (loop.on_step_begin, loop.on_step_end, loop.on_epoch_begin, loop.on_epoch_end):
        with raises_exactly(
            RuntimeError,
            f"CallbackList.{hook.__name__}: called before on_train_begin. Call "
            "callbacks.on_train_begin() once before the first epoch and step, so that every "
            "callback (e.g. the LR callback writing the first learning rate) is set up.",
        ):
            hook()
    callback = LRSchedulerCallback(CyclicLR())
    with raises_exactly(
        RuntimeError,
        "LRSchedulerCallback.on_step_end: called before on_train_begin, so no learning rate has "
        "been written into the optimizer. Call on_train_begin(loop) once before the first step "
        "(CallbackList.on_train_begin() does).",
    ):
        callback.on_step_end(loop, 0, {})  # driven by a loop of one's own


def test_a_scheduler_built_with_last_epoch_starts_the_loop_at_its_step():
    model = Revealer()
    writer = RecordingWriter(plan=True)
    callback = LRSchedulerCallback(CyclicLR(**CONFIG, last_epoch=13), writer=writer)
    loop = _loop(optax.inject_hyperparams(optax.sgd)(learning_rate=0.0), callback, model)
    loop.on_train_begin()
    assert loop.step == 13
    _steps(loop, model, 3)
    assert [step for step, _ in writer.scalars] == [14, 15, 16]  # updates 13, 14, 15 done
    expected = [lr[0] for lr in host_lrs(CyclicLR(**CONFIG), 16)[13:]]
    assert [scalars["learning_rate"] for _, scalars in writer.scalars] == pytest.approx(expected)
    assert writer.hparams == []  # the plan belongs to step 0
    assert writer.images == []


def test_a_loop_at_another_step_than_the_scheduler_is_refused():
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.0)
    model = Revealer()
    loop = CallbackList(
        [LRSchedulerCallback(CyclicLR(**CONFIG, last_epoch=13))],
        model=model,
        optimizer=nnx.Optimizer(model, tx, wrt=nnx.Param),
        step=10,
    )
    with raises_exactly(
        ValueError,
        "LRSchedulerCallback: the loop is at train step 10 but the scheduler's position is "
        "train step 13 (scheduler step 13): the learning rates and the logs would not belong "
        "to the steps they are used at. Build the scheduler with last_epoch=10 to continue at "
        "step 10, or start the loop at step 13 (CallbackList(..., step=13)).",
    ):
        loop.on_train_begin()


def test_mixed_optimizers_cycle_b1_and_momentum_per_group():
    model = Revealer(2)
    tx = optax.multi_transform(
        {
            "adam": optax.inject_hyperparams(optax.adam)(learning_rate=0.0, b1=0.9),
            "sgd": optax.inject_hyperparams(optax.sgd)(learning_rate=0.0, momentum=0.9),
        },
        lambda params: jax.tree.map(lambda _: "sgd", params),
    )
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    scheduler = CyclicLR([0.01, 0.02], [0.1, 0.2], step_size_up=2, cycle_momentum=True)
    loop = CallbackList([LRSchedulerCallback(scheduler)], model=model, optimizer=optimizer)
    loop.on_train_begin()
    _steps(loop, model, 1)
    states = optimizer.opt_state.inner_states
    adam, sgd = (states[label].inner_state.hyperparams for label in ("adam", "sgd"))
    expected = scheduler.get_last_momentum()  # step 1: halfway between the momentums
    assert expected == pytest.approx([0.85, 0.85])
    assert [float(adam["b1"][...]), float(sgd["momentum"][...])] == pytest.approx(expected)
    assert float(sgd["learning_rate"][...]) == pytest.approx(scheduler.get_last_lr()[1])


def test_missing_names_are_listed_per_group():
    model = Revealer(2)
    tx = optax.multi_transform(
        {
            "adam": optax.inject_hyperparams(optax.adam)(learning_rate=0.0),
            "plain": optax.inject_hyperparams(optax.sgd)(learning_rate=0.0),
        },
        lambda params: jax.tree.map(lambda _: "plain", params),
    )
    scheduler = CyclicLR([0.01, 0.02], [0.1, 0.2], step_size_up=2, cycle_momentum=True)
    loop = _loop(tx, LRSchedulerCallback(scheduler), model)
    with pytest.raises(ValueError, match="group 'plain'") as raised:
        loop.on_train_begin()
    message = str(raised.value)
    assert message == (
        "LRSchedulerCallback: the optimizer does not inject what the scheduler sets (it cycles "
        "momentum): group 'plain' (PartitionState.inner_states['plain']MaskedState.inner_state) "
        "has neither 'momentum' "
        "nor 'b1' (it injects ['learning_rate']). Pass the right name (learning_rate=..., "
        "momentum=...) or inject it, e.g. optax.inject_hyperparams(optax.sgd)(learning_rate=0.0, "
        "momentum=0.9); or pass momentum=None to leave momentum alone."
    )
    assert " at  " not in message


def test_a_one_cycle_shorter_than_the_planned_run_is_refused_before_training():
    model = tiny_mlp()
    optimizer = nnx.Optimizer(
        model, optax.inject_hyperparams(optax.sgd)(learning_rate=0.0, momentum=0.9), wrt=nnx.Param
    )
    callback = LRSchedulerCallback(OneCycleLR(max_lr=0.1, total_steps=10))
    before = jax.tree.map(np.asarray, nnx.state(model))
    with raises_exactly(
        ValueError,
        "LRSchedulerCallback: the run plans 16 parameter updates but OneCycleLR(total_steps=10) "
        "has 10: update 10 would fail part-way through training. Build it with total_steps=16 "
        "(or the run's epochs and steps_per_epoch), or train for fewer steps.",
    ):
        Trainer(model, optimizer, callbacks=[callback], progress=False).fit(
            tiny_batches(), num_steps=16
        )
    after = jax.tree.map(np.asarray, nnx.state(model))
    assert all(jax.tree.leaves(jax.tree.map(np.array_equal, before, after)))  # nothing trained


def test_a_transformation_in_place_of_an_optimizer_is_refused():
    with raises_exactly(
        TypeError,
        "CallbackList: `optimizer` must be an nnx.Optimizer, got GradientTransformationExtraArgs. "
        "It looks like an optax transformation: wrap it, e.g. nnx.Optimizer(model, "
        "optax.inject_hyperparams(optax.sgd)(learning_rate=0.0), wrt=nnx.Param).",
    ):
        CallbackList([], model=Revealer(), optimizer=optax.sgd(0.1))


def test_accumulation_steps_that_disagree_are_refused_in_the_trainer():
    model = tiny_mlp()
    inner = optax.inject_hyperparams(optax.sgd)(learning_rate=0.0, momentum=0.9)
    tx = optax.MultiSteps(inner, every_k_schedule=4).gradient_transformation()
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    callback = LRSchedulerCallback(CyclicLR(), accumulation_steps=2)
    with pytest.raises(ValueError, match=r"accumulation_steps=2 but .* every 4 train steps"):
        Trainer(model, optimizer, callbacks=[callback], progress=False).fit(
            tiny_batches(), num_steps=8
        )
    assert int(optimizer.opt_state.mini_step.get_value()) == 0  # refused before training


def test_an_epoch_interval_callback_takes_the_loop_step():
    model = Revealer()
    writer = RecordingWriter(plan=True)
    callback = LRSchedulerCallback(CyclicLR(**CONFIG), interval="epoch", writer=writer)
    optimizer = nnx.Optimizer(
        model, optax.inject_hyperparams(optax.sgd)(learning_rate=0.0), wrt=nnx.Param
    )
    loop = CallbackList([callback], model=model, optimizer=optimizer, step=5)
    loop.on_train_begin()
    _steps(loop, model, 2)
    assert [step for step, _ in writer.scalars] == [6, 7]


# -- OneCycleLR through the callback -----------------------------------------------------------


@pytest.mark.parametrize(("num_steps", "refused"), [(5, False), (6, True)])
def test_onecycle_run_longer_than_its_schedule_is_refused_before_training(num_steps, refused):
    model = MLP(nnx.Rngs(0), hidden=16)
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.0, momentum=0.9)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    callback = LRSchedulerCallback(OneCycleLR(max_lr=0.1, total_steps=5))
    trainer = Trainer(model, optimizer, callbacks=[callback], progress=False)
    if not refused:  # total_steps updates: the whole schedule
        trainer.fit(tiny_batches(16), num_steps=num_steps)
        assert int(optimizer.step.get_value()) == 5
        return
    with pytest.raises(
        ValueError, match=r"plans 6 parameter updates but OneCycleLR\(total_steps=5"
    ):
        trainer.fit(tiny_batches(16), num_steps=num_steps)
    assert int(optimizer.step.get_value()) == 0  # before the first update


def test_onecycle_momentum_reaches_adam_b1():
    model = MLP(nnx.Rngs(0), hidden=16)
    tx = optax.inject_hyperparams(optax.adam)(learning_rate=0.0)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    scheduler = OneCycleLR(max_lr=0.01, total_steps=10)
    Trainer(model, optimizer, callbacks=[LRSchedulerCallback(scheduler)]).fit(
        tiny_batches(16), num_steps=3
    )
    b1 = optimizer.opt_state.hyperparams["b1"].get_value()
    assert b1 == np.float32(scheduler.get_last_momentum()[0])
    assert scheduler.last_epoch == 3
    assert 0.85 < float(b1) < 0.95


# -- a scheduler driven by a metric: ReduceLROnPlateau --


def _flat_eval(model, batch):
    return {"loss": jnp.float32(1.0)}  # never improves: the plateau reduces on schedule


def _plateau_run(directory=None, crash_at=None):
    """16 updates, an evaluation every 2; the monitor records the LR each update used."""
    model, optimizer = tiny_setup()
    monitor = LearningRateMonitor()
    callbacks = [
        monitor,
        LRSchedulerCallback(ReduceLROnPlateau(0.1, factor=0.5, patience=1), monitor="eval/loss"),
    ]
    if crash_at is not None:
        callbacks.append(CrashAt(crash_at))
    checkpointer = None if directory is None else Checkpointer(directory, every_steps=4)
    trainer = Trainer(
        model, optimizer, eval_step=_flat_eval, callbacks=callbacks, checkpointer=checkpointer
    )
    trainer.fit(
        tiny_batches(16, 4), num_steps=16, eval_data=tiny_batches(16, 1), eval_every_steps=2
    )
    # The monitor logs what update i applied at step i + 1 (the updates completed).
    return {step - 1: scalars["learning_rate"] for step, scalars in monitor.history}


def test_reduce_on_plateau_is_stepped_with_each_evaluation_under_the_trainer():
    used = _plateau_run()
    reference = ReduceLROnPlateau(0.1, factor=0.5, patience=1, mode="min")
    expected = {}
    for update in range(16):
        expected[update] = float(np.float32(reference.get_last_lr()[0]))
        if (update + 1) % 2 == 0:  # the evaluation after every second update
            reference.step(1.0)
    assert used == expected
    assert sorted(set(used.values()), reverse=True) == [
        float(np.float32(lr)) for lr in (0.1, 0.05, 0.025, 0.0125)
    ]


def test_reduce_on_plateau_resumes_with_its_counters(tmp_path):
    reference = _plateau_run()
    with pytest.raises(KeyboardInterrupt):
        _plateau_run(tmp_path, crash_at=10)  # saved at steps 4 and 8
    resumed = _plateau_run(tmp_path)
    assert resumed == {update: lr for update, lr in reference.items() if update >= 8}


def test_reduce_on_plateau_on_a_train_metric_steps_at_each_epoch_end():
    model, optimizer = tiny_setup()
    plateau = ReduceLROnPlateau(0.1, factor=0.5, patience=0)
    loop = CallbackList(
        [LRSchedulerCallback(plateau, monitor="train/loss")], model=model, optimizer=optimizer
    )
    loop.on_train_begin()
    for _ in range(3):
        loop.on_epoch_end({"loss": 2.0})
    assert plateau.last_epoch == 3
    assert plateau.get_last_lr() == [0.025]
    held = optimizer.opt_state.hyperparams["learning_rate"].get_value()
    assert held == np.float32(0.025)


def test_a_metric_driven_scheduler_needs_a_monitor_and_others_refuse_one():
    with raises_exactly(
        ValueError,
        "LRSchedulerCallback: ReduceLROnPlateau steps on a metric, not on the update count; "
        "pass the metric it watches, e.g. LRSchedulerCallback(ReduceLROnPlateau(...), "
        "monitor='eval/loss').",
    ):
        LRSchedulerCallback(ReduceLROnPlateau(0.1))
    with raises_exactly(
        ValueError,
        "LRSchedulerCallback: `monitor` is for a scheduler driven by a metric "
        "(ReduceLROnPlateau); CyclicLR follows the update count, got monitor='eval/loss'. "
        "Leave monitor out.",
    ):
        LRSchedulerCallback(CyclicLR(0.01, 0.1), monitor="eval/loss")


# -- what optax applies is what is reported and logged (issue 22, items 3, 4, 14, 15) ------------


def _sgd(model, **hyperparams):
    tx = optax.inject_hyperparams(optax.sgd)(**hyperparams)
    return nnx.Optimizer(model, tx, wrt=nnx.Param)


@pytest.mark.parametrize(
    ("hyperparams", "name"),
    [({"learning_rate": 0}, "learning_rate"), ({"learning_rate": 0.0, "momentum": 1}, "momentum")],
)
def test_an_integer_hyperparameter_is_refused_before_the_first_update(hyperparams, name):
    model = Revealer()
    scheduler = CyclicLR(0.01, 0.1, step_size_up=2, cycle_momentum="momentum" in hyperparams)
    loop = CallbackList(
        [LRSchedulerCallback(scheduler)], model=model, optimizer=_sgd(model, **hyperparams)
    )
    with pytest.raises(ValueError, match=rf"^LRSchedulerCallback: '{name}' at .* is int32: ") as e:
        loop.on_train_begin()
    assert f"({name}=0.0) rather than {name}=0" in str(e.value)


def test_a_bfloat16_learning_rate_is_logged_as_applied():
    model = Revealer()
    optimizer = _sgd(model, learning_rate=jnp.bfloat16(0.0))
    writer = RecordingWriter()
    callback = LRSchedulerCallback(CyclicLR(0.01, 0.1, step_size_up=3), writer=writer)
    applied = _run(model, optimizer, [callback], 6)
    logged = [scalars["learning_rate"] for _, scalars in writer.scalars]
    reported = [lr[0] for lr in host_lrs(CyclicLR(0.01, 0.1, step_size_up=3), 6)]
    assert logged == [float(jnp.bfloat16(lr)) for lr in reported]  # cast as the optimizer holds it
    assert logged != reported  # bfloat16 rounds 0.04 (to 0.0400390625)
    np.testing.assert_array_equal(np.asarray(applied[:, 0], np.float32), np.float32(logged))


def test_a_float16_learning_rate_that_becomes_zero_is_refused():
    model = Revealer()
    optimizer = _sgd(model, learning_rate=jnp.float16(0.0))
    callback = LRSchedulerCallback(CyclicLR(1e-9, 1e-3, step_size_up=3))
    loop = CallbackList([callback], model=model, optimizer=optimizer)
    with pytest.raises(
        ValueError, match=r"^LRSchedulerCallback: learning_rate=1e-09 at .* becomes 0 in float16"
    ):
        loop.on_train_begin()


def _accumulating(inner, k=2, nested=True):
    multi_steps = optax.MultiSteps(inner, every_k_schedule=k)
    if not nested:
        return multi_steps.gradient_transformation()
    return optax.chain(optax.clip_by_global_norm(10.0), multi_steps.gradient_transformation())


def test_nested_multisteps_needs_accumulation_steps_and_advances_once_per_update():
    inner = optax.inject_hyperparams(optax.sgd)(learning_rate=0.0)
    tx = _accumulating(inner, k=3)
    with pytest.raises(ValueError, match=r"^LRSchedulerCallback: .* nested at \[1\]"):
        _loop(tx, LRSchedulerCallback(CyclicLR(**CONFIG))).on_train_begin()
    model = Revealer()
    scheduler = CyclicLR(**CONFIG)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    applied = _run(model, optimizer, [LRSchedulerCallback(scheduler, accumulation_steps=3)], 12)
    assert scheduler.last_epoch == 4
    expected = [lr[0] for lr in host_lrs(CyclicLR(**CONFIG), 4)]
    np.testing.assert_allclose(applied[2::3, 0], expected, rtol=1e-6)
    model = Revealer()
    wrong = LRSchedulerCallback(CyclicLR(**CONFIG), accumulation_steps=2)
    with pytest.raises(ValueError, match=r"^LRSchedulerCallback: optax.MultiSteps \(at \[1\]\)"):
        _run(model, nnx.Optimizer(model, tx, wrt=nnx.Param), [wrong], 6)


def test_an_every_k_schedule_that_changes_later_is_found_at_a_power_of_two():
    inner = optax.inject_hyperparams(optax.sgd)(learning_rate=0.0)
    # 2 micro-steps per update for the first 4 updates (8 train steps), then 3.
    multi_steps = optax.MultiSteps(inner, every_k_schedule=lambda step: jnp.where(step < 4, 2, 3))
    model = Revealer()
    optimizer = nnx.Optimizer(model, multi_steps.gradient_transformation(), wrt=nnx.Param)
    loop = CallbackList(
        [LRSchedulerCallback(CyclicLR(**CONFIG), accumulation_steps=2)],
        model=model,
        optimizer=optimizer,
    )
    loop.on_train_begin()
    with pytest.raises(ValueError, match=r"^LRSchedulerCallback: optax.MultiSteps .* made 6 "):
        _steps(loop, model, 40)
    assert loop.step == 15  # found at train step 16, the next power of two after the change


def test_a_functional_split_loop_that_never_uses_the_written_values_is_refused():
    model = Revealer()
    optimizer = _sgd(model, learning_rate=0.0)
    loop = CallbackList([LRSchedulerCallback(CyclicLR(**CONFIG))], model=model, optimizer=optimizer)
    loop.on_train_begin()
    graphdef, state = nnx.split((model, optimizer))

    @jax.jit
    def step(state):
        model, optimizer = nnx.merge(graphdef, state)
        optimizer.update(model, nnx.grad(lambda m: m())(model))
        return nnx.state((model, optimizer))

    loop.on_step_begin()
    state = step(state)  # trains the split copy, at the value it held when split
    with pytest.raises(
        ValueError,
        match=r"^LRSchedulerCallback: the optimizer it writes made 0 updates while the callback "
        r"counted 1 train steps",
    ) as raised:
        loop.on_step_end()
    assert "set_hyperparams" in str(raised.value)
    assert "docs/own_loop.md" in str(raised.value)


def test_on_step_end_twice_per_update_is_refused():
    model = Revealer()
    optimizer = _sgd(model, learning_rate=0.0)
    loop = CallbackList([LRSchedulerCallback(CyclicLR(**CONFIG))], model=model, optimizer=optimizer)
    loop.on_train_begin()
    reveal_step(model, optimizer)
    loop.on_step_end()
    with pytest.raises(ValueError, match=r"^LRSchedulerCallback: the optimizer it writes made 1 "):
        loop.on_step_end()


def test_the_update_counts_are_read_at_the_first_2k_train_steps_then_at_powers_of_two():
    counts = CountCheck("LRSchedulerCallback")
    counts.began_at = 10  # a run resumed at train step 10, k = 4
    read = [step for step in range(11, 80) if counts.due(step, 4)]
    assert read == [*range(11, 19), 10 + 16, 10 + 32, 10 + 64]


def test_a_replaced_loop_optimizer_is_refused_at_the_next_step():
    model = Revealer()
    loop = CallbackList(
        [LRSchedulerCallback(CyclicLR(**CONFIG))],
        model=model,
        optimizer=_sgd(model, learning_rate=0.0),
    )
    loop.on_train_begin()
    _steps(loop, model, 2)
    loop.optimizer = _sgd(model, learning_rate=0.0)
    with pytest.raises(RuntimeError, match=r"^LRSchedulerCallback: loop.optimizer was replaced"):
        loop.on_step_begin()


class AssignsOptState(Callback):
    """Assigns the optimizer a new opt_state with momentum 0.8 in the given hooks.

    ``every_variable``: the new state is made from a copy of the old (as a rollback to a
    snapshot would be), so every variable in it is new, the injected learning rate too;
    otherwise only the momentum's variable is new (``set_hyperparams`` keeps the others).
    """

    def __init__(self, hooks=("on_train_begin", "on_step_end"), *, every_variable=True):
        self.hooks = hooks
        self.every_variable = every_variable

    def on_train_begin(self, loop):
        if "on_train_begin" in self.hooks:
            self._assign(loop)

    def on_step_end(self, loop, step, metrics):
        if "on_step_end" in self.hooks:
            self._assign(loop)

    def _assign(self, loop):
        optimizer = loop.optimizer
        state = optimizer.opt_state
        if self.every_variable:
            state = jax.tree.map(jnp.copy, state)
        optimizer.opt_state = set_hyperparams(state, momentum=0.8)


def _train_reading_back(loop, model, optimizer, steps):
    """Trains `steps` updates; returns the (lr, momentum) each applied, read from the state."""
    applied = []
    for _ in range(steps):
        loop.on_step_begin()
        reveal_step(model, optimizer)
        (state,) = find_injected_hyperparams(optimizer.opt_state)
        applied.append(
            tuple(float(state.values[name][...]) for name in ("learning_rate", "momentum"))
        )
        loop.on_step_end()
    return applied


def _sgd_momentum_reference(lrs, momentum):
    """The Revealer's parameter after SGD with momentum at `lrs` (every gradient is 1)."""
    trace = w = 0.0
    for lr in lrs:
        trace = 1.0 + momentum * trace
        w -= lr * trace
    return w


@pytest.mark.parametrize("every_variable", [True, False], ids=["every_variable", "momentum_only"])
def test_an_opt_state_assigned_by_a_callback_before_it_trains_the_scheduler_values(
    every_variable,
):
    model = Revealer()
    optimizer = _sgd(model, learning_rate=0.0, momentum=0.9)
    callbacks = [
        AssignsOptState(every_variable=every_variable),
        LRSchedulerCallback(CyclicLR(**CONFIG)),
    ]
    loop = CallbackList(callbacks, model=model, optimizer=optimizer)
    loop.on_train_begin()
    applied = _train_reading_back(loop, model, optimizer, 12)
    loop.on_train_end()
    lrs = [lr[0] for lr in host_lrs(CyclicLR(**CONFIG), 12)]
    f32 = np.float32
    assert applied == [(float(f32(lr)), float(f32(0.8))) for lr in lrs]
    np.testing.assert_allclose(model.w[...], [_sgd_momentum_reference(lrs, 0.8)], rtol=1e-5)


@pytest.mark.parametrize(("hook", "updates"), [("on_train_begin", 0), ("on_step_end", 1)])
def test_an_opt_state_assigned_by_a_callback_after_it_is_refused_before_the_next_update(
    hook, updates
):
    model = Revealer()
    optimizer = _sgd(model, learning_rate=0.0, momentum=0.9)
    callbacks = [LRSchedulerCallback(CyclicLR(**CONFIG)), AssignsOptState((hook,))]
    loop = CallbackList(callbacks, model=model, optimizer=optimizer)
    loop.on_train_begin()
    with pytest.raises(
        RuntimeError,
        match=r"^LRSchedulerCallback: optimizer.opt_state was assigned after this callback last "
        r"wrote 'learning_rate' into it, so the next update would train with values the "
        r"callback did not write\. Assign it before the callback runs: put the callback that "
        r"assigns it before LRSchedulerCallback in the callback order",
    ):
        _train_reading_back(loop, model, optimizer, 3)
    assert loop.step == updates
    assert int(optimizer.step[...]) == updates  # no update ran with the values not written


def test_an_opt_state_assigned_after_it_that_keeps_its_variables_is_not_refused():
    # set_hyperparams(momentum=...) keeps the learning rate's variable, which the callback
    # wrote: the next update trains with its value, so there is nothing to refuse.
    model = Revealer()
    optimizer = _sgd(model, learning_rate=0.0, momentum=0.9)
    callbacks = [LRSchedulerCallback(CyclicLR(**CONFIG)), AssignsOptState(every_variable=False)]
    loop = CallbackList(callbacks, model=model, optimizer=optimizer)
    loop.on_train_begin()
    applied = _train_reading_back(loop, model, optimizer, 6)
    lrs = [lr[0] for lr in host_lrs(CyclicLR(**CONFIG), 6)]
    assert applied == [(float(np.float32(lr)), float(np.float32(0.8))) for lr in lrs]


def test_a_train_monitor_without_epoch_metrics_is_refused():
    model, optimizer = tiny_setup()
    plateau = ReduceLROnPlateau(0.1, factor=0.5, patience=0, mode="min")
    loop = CallbackList(
        [LRSchedulerCallback(plateau, monitor="train/loss")], model=model, optimizer=optimizer
    )
    loop.on_train_begin()
    loop.on_epoch_begin()
    step = nnx.jit(classification_train_step)
    for batch in tiny_batches(count=2):
        loop.on_step_begin()
        loop.on_step_end(step(model, optimizer, batch))
    with pytest.raises(
        ValueError,
        match=r"^LRSchedulerCallback: monitor='train/loss' is the epoch's train mean, but "
        r"epoch 0 ended after 2 train steps with no metrics reported",
    ) as raised:
        loop.on_epoch_end()
    assert "callbacks.on_epoch_end({'loss': mean_loss})" in str(raised.value)


def test_a_metric_driven_scheduler_learns_its_mode_from_the_monitor():
    plateau = ReduceLROnPlateau(0.1)
    if not hasattr(plateau, "resolve_mode"):
        pytest.skip("ReduceLROnPlateau has no mode='auto' here")
    LRSchedulerCallback(plateau, monitor="eval/accuracy")
    assert plateau.mode == "max"


def test_momentum_none_logs_no_momentum():
    model = Revealer()
    optimizer = _sgd(model, learning_rate=0.0, momentum=0.9)
    writer = RecordingWriter()
    scheduler = OneCycleLR(max_lr=0.1, total_steps=10)
    assert scheduler.get_last_momentum() is not None  # it cycles one, but it is not driven
    _run(model, optimizer, [LRSchedulerCallback(scheduler, momentum=None, writer=writer)], 3)
    assert [sorted(scalars) for _, scalars in writer.scalars] == [["learning_rate"]] * 3
    assert float(optimizer.opt_state.hyperparams["momentum"][...]) == np.float32(0.9)


def test_a_state_saved_with_another_interval_is_refused():
    saved = LRSchedulerCallback(CyclicLR(**CONFIG), interval="step")
    saved.scheduler.step(epoch=7)
    state = saved.state_dict()
    assert state["interval"] == "step"
    with pytest.raises(
        ValueError,
        match=r"^LRSchedulerCallback.load_state_dict: the state was saved with interval='step', "
        r"but this callback has interval='epoch'",
    ):
        LRSchedulerCallback(CyclicLR(**CONFIG), interval="epoch").load_state_dict(state)
    LRSchedulerCallback(CyclicLR(**CONFIG)).load_state_dict(state)  # the same interval: taken


def test_a_chained_group_gets_every_injected_state_and_weight_decay_is_left_alone():
    model = Revealer(2)
    inject = optax.inject_hyperparams
    tx = optax.multi_transform(
        {
            "body": optax.chain(
                inject(optax.adam)(learning_rate=0.0), inject(optax.add_decayed_weights)(1e-4)
            ),
            "head": optax.chain(
                inject(optax.sgd)(learning_rate=0.0, momentum=0.9),
                inject(optax.sgd)(learning_rate=0.0),
            ),
        },
        lambda params: jax.tree.map(lambda _: "head", params),
    )
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    scheduler = CyclicLR([0.01, 0.02], [0.1, 0.2], step_size_up=2)
    loop = CallbackList(
        [LRSchedulerCallback(scheduler, groups=["body", "head"])], model=model, optimizer=optimizer
    )
    loop.on_train_begin()
    _steps(loop, model, 1)
    states = [(s.label, dict(s.values)) for s in find_injected_hyperparams(optimizer.opt_state)]
    lrs = [(label, float(v["learning_rate"][...])) for label, v in states if "learning_rate" in v]
    f32 = np.float32
    assert lrs == [("body", f32(0.055)), ("head", f32(0.11)), ("head", f32(0.11))]
    assert float(states[1][1]["weight_decay"][...]) == f32(1e-4)


def test_a_scheduler_that_optax_evaluates_warns_when_the_callback_steps_it():
    # The scheduler is both optax's schedule and the callback's: optax recomputes the learning
    # rate from its own count, the callback's steps and writes do nothing to it.
    scheduler = CyclicLR(base_lr=0.01, max_lr=0.1, step_size_up=4)
    model = Revealer()
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=scheduler)
    loop = _loop(tx, LRSchedulerCallback(scheduler), model)
    loop.on_train_begin()
    loop.on_step_begin()
    reveal_step(model, loop.optimizer)
    with pytest.warns(UserWarning, match="CyclicLR: optax evaluates this scheduler") as caught:
        loop.on_step_end()
    assert "LRSchedulerCallback(CyclicLR(...))" in str(caught[0].message)


def test_a_different_scheduler_configuration_names_the_callbacks_way_out():
    saved = LRSchedulerCallback(CyclicLR(0.01, 0.1, step_size_up=4)).state_dict()
    with raises_exactly(
        ValueError,
        "LRSchedulerCallback: CyclicLR.load_state_dict: the state was saved with a different "
        "configuration (max_lrs: saved [0.1], now [0.2]). Build the scheduler with the saved "
        "configuration, or build the callback with LRSchedulerCallback(scheduler, ..., "
        "strict=False) to take the saved position and keep the new configuration.",
    ):
        LRSchedulerCallback(CyclicLR(0.01, 0.2, step_size_up=4)).load_state_dict(saved)
    allowed = LRSchedulerCallback(CyclicLR(0.01, 0.2, step_size_up=4), strict=False)
    allowed.load_state_dict(saved)
    assert allowed.scheduler.max_lrs == (0.2,)


def test_a_different_configuration_within_a_sequence_names_the_callbacks_way_out():
    def sequence(max_lr):
        warmup = CyclicLR(0.01, max_lr, step_size_up=4)
        return SequentialLR([warmup, CyclicLR(0.01, 0.1, step_size_up=4)], milestones=[4])

    saved = LRSchedulerCallback(sequence(0.1)).state_dict()
    with pytest.raises(
        ValueError, match=r"^LRSchedulerCallback: SequentialLR.load_state_dict: "
    ) as error:
        LRSchedulerCallback(sequence(0.2)).load_state_dict(saved)
    message = str(error.value)
    assert (
        "schedulers[0]: CyclicLR.load_state_dict: the state was saved with a different" in message
    )
    assert message.endswith(
        "LRSchedulerCallback(scheduler, ..., strict=False) to take the saved "
        "position and keep the new configuration."
    )
    assert message.count("strict=False") == 1
