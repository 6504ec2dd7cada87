"""LearningRateMonitor: logs the hyperparameters the optimizer used, read from its state."""

from __future__ import annotations

import types

import jax
import numpy as np
import optax
import pytest
from flax import nnx
from helpers import (
    RecordingWriter,
    count_compilations,
    host_lrs,
    host_momentums,
    jit_values,
    raises_exactly,
    tiny_batches,
    tiny_mlp,
)

from flax_cyclic import (
    CallbackList,
    CyclicLR,
    LRSchedulerCallback,
    Trainer,
    create_writer,
    cyclic_schedule,
    read_scalars,
)
from flax_cyclic.callbacks.monitor import LearningRateMonitor
from flax_cyclic.trainer import classification_train_step

SCHEDULE = dict(base_lr=0.01, max_lr=0.1, step_size_up=4)
STEPS = 12
F32 = dict(rtol=1e-6, atol=0)

train_step = nnx.jit(classification_train_step)


def _optimizer(tx):
    model = tiny_mlp()
    return model, nnx.Optimizer(model, tx, wrt=nnx.Param)


def _run(model, optimizer, callbacks, steps=STEPS):
    """A hand-written loop; returns the compilations after the first step."""
    batches = tiny_batches()
    loop = CallbackList(callbacks, model=model, optimizer=optimizer)
    loop.on_train_begin()
    compiled = []
    for k in range(steps):
        with count_compilations() as compiled_now:
            loop.on_step_begin()
            metrics = train_step(model, optimizer, batches[k % len(batches)])
            loop.on_step_end(metrics)
        if k:
            compiled += compiled_now
    loop.on_train_end()
    return compiled


@pytest.fixture
def device_gets(monkeypatch):
    """Counts the calls of jax.device_get."""
    calls = []
    device_get = jax.device_get

    def counting(tree):
        calls.append(tree)
        return device_get(tree)

    monkeypatch.setattr(jax, "device_get", counting)
    return calls


def _cyclic_sgd(momentum=0.9):
    schedule = cyclic_schedule(**SCHEDULE)
    return schedule, optax.inject_hyperparams(optax.sgd)(learning_rate=schedule, momentum=momentum)


def _values(series):
    return np.asarray([value for _, value in series])


def _steps(series):
    return [step for step, _ in series]


def test_logs_a_schedule_injected_into_optax(device_gets):
    schedule, tx = _cyclic_sgd()
    writer = RecordingWriter()
    compiled = _run(*_optimizer(tx), [LearningRateMonitor(writer)])
    lrs = writer.series("learning_rate")
    assert _steps(lrs) == list(range(1, STEPS + 1))  # update i at step i + 1
    np.testing.assert_allclose(_values(lrs), jit_values(schedule, range(STEPS)), **F32)
    assert writer.series("momentum") == [(k + 1, float(np.float32(0.9))) for k in range(STEPS)]
    assert all(type(v) is float for _, scalars in writer.scalars for v in scalars.values())
    assert len(device_gets) == STEPS  # one transfer per write, holding every value
    assert compiled == []
    assert writer.flushes == 1


def test_logs_to_tensorboard_event_files(tmp_path):
    schedule, tx = _cyclic_sgd()
    _run(*_optimizer(tx), [LearningRateMonitor(create_writer(tmp_path))])
    series = read_scalars(tmp_path)
    assert sorted(series) == ["learning_rate", "momentum"]
    assert _steps(series["learning_rate"]) == list(range(1, STEPS + 1))
    np.testing.assert_allclose(
        _values(series["learning_rate"]), jit_values(schedule, range(STEPS)), **F32
    )
    np.testing.assert_allclose(_values(series["momentum"]), np.full(STEPS, 0.9), **F32)


def test_logs_what_the_scheduler_callback_set():
    config = dict(SCHEDULE, step_size_down=6, mode="triangular2", cycle_momentum=True)
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.0, momentum=0.0)
    monitored, logged_by_scheduler = RecordingWriter(), RecordingWriter()
    callbacks = [
        LearningRateMonitor(monitored),
        LRSchedulerCallback(CyclicLR(**config), writer=logged_by_scheduler, plot_steps=0),
    ]
    _run(*_optimizer(tx), callbacks, steps=20)
    lrs, momentums = monitored.series("learning_rate"), monitored.series("momentum")
    assert _steps(lrs) == _steps(momentums) == list(range(1, 21))
    expected_lrs = [lr for (lr,) in host_lrs(CyclicLR(**config), 20)]
    expected_momentums = [m for (m,) in host_momentums(CyclicLR(**config), 20)]
    np.testing.assert_allclose(_values(lrs), expected_lrs, **F32)
    np.testing.assert_allclose(_values(momentums), expected_momentums, **F32)
    # The scheduler's own log of the same tags: the values it set, one float32 rounding away.
    for tag in ("learning_rate", "momentum"):
        theirs = logged_by_scheduler.series(tag)
        assert _steps(theirs) == _steps(monitored.series(tag))
        np.testing.assert_allclose(_values(monitored.series(tag)), _values(theirs), **F32)


def test_follows_an_epoch_scheduler_listed_before_it():
    scheduler = CyclicLR(**SCHEDULE)
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.0)
    model, optimizer = _optimizer(tx)
    writer = RecordingWriter()
    loop = CallbackList(
        [LRSchedulerCallback(scheduler, interval="epoch"), LearningRateMonitor(writer)],
        model=model,
        optimizer=optimizer,
    )
    batches = tiny_batches(count=3)
    loop.on_train_begin()
    for _ in range(4):
        loop.on_epoch_begin()
        for batch in batches:
            loop.on_step_begin()
            loop.on_step_end(train_step(model, optimizer, batch))
        loop.on_epoch_end()
    loop.on_train_end()
    per_epoch = [lr for (lr,) in host_lrs(CyclicLR(**SCHEDULE), 4)]
    lrs = writer.series("learning_rate")
    assert _steps(lrs) == list(range(1, 13))
    np.testing.assert_allclose(_values(lrs), np.repeat(per_epoch, 3), **F32)
    assert writer.series("momentum") == []  # plain SGD injects no momentum


def _label(params):
    def label(path, _):
        return "hidden" if "hidden" in jax.tree_util.keystr(path) else "out"

    return jax.tree_util.tree_map_with_path(label, params)


def test_multi_transform_groups_are_tagged_by_label():
    schedule = cyclic_schedule(**SCHEDULE)
    tx = optax.multi_transform(
        {
            "hidden": optax.inject_hyperparams(optax.adam)(learning_rate=schedule, b1=0.85),
            "out": optax.inject_hyperparams(optax.sgd)(learning_rate=0.05, momentum=0.9),
        },
        _label,
    )
    writer = RecordingWriter()
    _run(*_optimizer(tx), [LearningRateMonitor(writer, log_every_steps=2)])
    tags = {tag for _, scalars in writer.scalars for tag in scalars}
    assert tags == {"learning_rate/hidden", "momentum/hidden", "learning_rate/out", "momentum/out"}
    updates = list(range(1, STEPS, 2))
    for tag, expected in [
        ("learning_rate/hidden", jit_values(schedule, updates)),
        ("momentum/hidden", np.full(len(updates), 0.85)),
        ("learning_rate/out", np.full(len(updates), 0.05)),
        ("momentum/out", np.full(len(updates), 0.9)),
    ]:
        assert _steps(writer.series(tag)) == [update + 1 for update in updates]
        np.testing.assert_allclose(_values(writer.series(tag)), expected, **F32)


def test_unlabelled_states_are_tagged_by_index():
    inject = optax.inject_hyperparams
    tx = optax.chain(
        inject(optax.add_decayed_weights)(weight_decay=1e-4),  # no learning rate: not logged
        inject(optax.scale_by_learning_rate)(learning_rate=0.5),
        inject(optax.sgd)(learning_rate=0.25),
    )
    writer = RecordingWriter()
    _run(*_optimizer(tx), [LearningRateMonitor(writer)], steps=2)
    assert writer.scalars == [
        (1, {"learning_rate/0": 0.5, "learning_rate/1": 0.25}),
        (2, {"learning_rate/0": 0.5, "learning_rate/1": 0.25}),
    ]


def test_one_injected_learning_rate_has_plain_tags():
    tx = optax.chain(
        optax.inject_hyperparams(optax.add_decayed_weights)(weight_decay=1e-4),
        optax.inject_hyperparams(optax.adam)(learning_rate=0.125),
    )
    writer = RecordingWriter()
    _run(*_optimizer(tx), [LearningRateMonitor(writer)], steps=1)
    assert writer.scalars == [(1, {"learning_rate": 0.125, "momentum": float(np.float32(0.9))})]


def test_log_every_steps_writes_the_last_update_of_each_window(device_gets):
    schedule, tx = _cyclic_sgd()
    writer = RecordingWriter()
    _run(*_optimizer(tx), [LearningRateMonitor(writer, log_every_steps=3)])
    lrs = writer.series("learning_rate")
    assert _steps(lrs) == [3, 6, 9, 12]  # updates 2, 5, 8, 11 completed
    np.testing.assert_allclose(_values(lrs), jit_values(schedule, [2, 5, 8, 11]), **F32)
    assert len(device_gets) == 4  # none on the steps between writes


def test_the_grid_continues_from_the_loop_step():
    schedule, tx = _cyclic_sgd()
    model, optimizer = _optimizer(tx)
    writer = RecordingWriter()
    loop = CallbackList(
        [LearningRateMonitor(writer, log_every_steps=3)], optimizer=optimizer, step=4
    )
    loop.on_train_begin()
    for batch in tiny_batches():
        loop.on_step_begin()
        loop.on_step_end(train_step(model, optimizer, batch))
    # Train steps 4..9; the optimizer's own schedule counts its updates from 0.
    lrs = writer.series("learning_rate")
    assert _steps(lrs) == [6, 9]
    np.testing.assert_allclose(_values(lrs), jit_values(schedule, [1, 4]), **F32)


@pytest.mark.parametrize(
    ("log_every_steps", "steps", "updates", "reads"),
    [
        (1, [2, 4, 6, 8, 10, 12], [0, 1, 2, 3, 4, 5], 12),
        (2, [2, 4, 6, 8, 10, 12], [0, 1, 2, 3, 4, 5], 6),
        (4, [4, 8, 12], [1, 3, 5], 3),
        (3, [3, 6, 9, 12], [0, 2, 3, 5], 4),
    ],
)
def test_gradient_accumulation_logs_at_the_loop_step_the_last_update_in_the_window(
    device_gets, log_every_steps, steps, updates, reads
):
    schedule, inner = _cyclic_sgd()
    tx = optax.MultiSteps(inner, every_k_schedule=2).gradient_transformation()
    writer = RecordingWriter()
    compiled = _run(*_optimizer(tx), [LearningRateMonitor(writer, log_every_steps=log_every_steps)])
    lrs = writer.series("learning_rate")
    assert _steps(lrs) == steps  # train steps completed, as checkpoints count them
    np.testing.assert_allclose(_values(lrs), jit_values(schedule, updates), **F32)
    assert len(device_gets) == reads  # one per read: the values and the update counters
    assert compiled == []


def test_gradient_accumulation_with_the_scheduler_callback():
    inner = optax.inject_hyperparams(optax.sgd)(learning_rate=0.0)
    tx = optax.MultiSteps(inner, every_k_schedule=3).gradient_transformation()
    writer = RecordingWriter()
    callbacks = [
        LearningRateMonitor(writer, log_every_steps=3),
        LRSchedulerCallback(CyclicLR(**SCHEDULE)),
    ]
    _run(*_optimizer(tx), callbacks, steps=18)
    lrs = writer.series("learning_rate")
    assert _steps(lrs) == [3, 6, 9, 12, 15, 18]
    np.testing.assert_allclose(
        _values(lrs), [lr for (lr,) in host_lrs(CyclicLR(**SCHEDULE), 6)], **F32
    )


def test_without_a_writer_the_values_go_to_history():
    schedule, tx = _cyclic_sgd(momentum=0.5)
    monitor = LearningRateMonitor(log_every_steps=4)
    _run(*_optimizer(tx), [monitor])
    assert [step for step, _ in monitor.history] == [4, 8, 12]
    lrs = [scalars["learning_rate"] for _, scalars in monitor.history]
    np.testing.assert_allclose(lrs, jit_values(schedule, [3, 7, 11]), **F32)
    assert [scalars["momentum"] for _, scalars in monitor.history] == [0.5] * 3


def test_with_a_writer_no_history_is_kept():
    _, tx = _cyclic_sgd()
    monitor = LearningRateMonitor(RecordingWriter())
    _run(*_optimizer(tx), [monitor], steps=2)
    assert monitor.history == []


def test_only_process_zero_reads_and_writes(monkeypatch, device_gets):
    monkeypatch.setattr(jax, "process_index", lambda: 1)
    _, tx = _cyclic_sgd()
    writer, keeper = RecordingWriter(), LearningRateMonitor()
    _run(*_optimizer(tx), [LearningRateMonitor(writer)], steps=3)
    assert writer.scalars == []
    assert device_gets == []
    _run(*_optimizer(tx), [keeper], steps=3)  # without a writer, every process keeps history
    assert [step for step, _ in keeper.history] == [1, 2, 3]


def test_inside_the_trainer():
    schedule, tx = _cyclic_sgd()
    model, optimizer = _optimizer(tx)
    writer = RecordingWriter()
    monitor = LearningRateMonitor(writer, log_every_steps=2)
    Trainer(model, optimizer, callbacks=[monitor], progress=False).fit(tiny_batches(), num_steps=8)
    lrs = writer.series("learning_rate")
    assert _steps(lrs) == [2, 4, 6, 8]
    np.testing.assert_allclose(_values(lrs), jit_values(schedule, [1, 3, 5, 7]), **F32)
    assert writer.flushes == 1


class _Boom(Exception):
    pass


def test_flushes_when_the_loop_raises():
    _, tx = _cyclic_sgd()
    model, optimizer = _optimizer(tx)
    writer = RecordingWriter()

    def failing_step(model, optimizer, batch):
        raise _Boom

    trainer = Trainer(
        model,
        optimizer,
        train_step=failing_step,
        callbacks=[LearningRateMonitor(writer)],
        progress=False,
    )
    with pytest.raises(_Boom):
        trainer.fit(tiny_batches(), num_steps=2)
    assert writer.flushes == 1


def test_a_writer_without_flush_is_enough():
    class Scalars:
        def __init__(self):
            self.scalars = []

        def write_scalars(self, step, scalars):
            self.scalars.append((step, scalars))

    _, tx = _cyclic_sgd()
    writer = Scalars()
    _run(*_optimizer(tx), [LearningRateMonitor(writer)], steps=2)
    assert [step for step, _ in writer.scalars] == [1, 2]


def test_keeps_no_checkpoint_state():
    assert LearningRateMonitor().state_dict() == {}


@pytest.mark.parametrize("resume_at", [5, 6, 7])
def test_a_resumed_run_logs_what_the_uninterrupted_run_logs(resume_at):
    # Gradient accumulation over 3 steps, read every 2: a read may find no update in its window.
    def accumulating():
        _, inner = _cyclic_sgd()
        return _optimizer(optax.MultiSteps(inner, every_k_schedule=3).gradient_transformation())

    uninterrupted = RecordingWriter()
    _run(*accumulating(), [LearningRateMonitor(uninterrupted, log_every_steps=2)])
    resumed = RecordingWriter()
    model, optimizer = accumulating()
    batches = tiny_batches()
    for start, stop in [(0, resume_at), (resume_at, STEPS)]:  # a new monitor, as after a resume
        monitor = LearningRateMonitor(resumed, log_every_steps=2)
        loop = CallbackList([monitor], model=model, optimizer=optimizer, step=start)
        loop.on_train_begin()
        for k in range(start, stop):
            loop.on_step_begin()
            loop.on_step_end(train_step(model, optimizer, batches[k % len(batches)]))
        loop.on_train_end()
    assert _steps(uninterrupted.scalars) == [4, 6, 10, 12]
    assert resumed.scalars == uninterrupted.scalars


# -- errors --


def _loop(tx, monitor):
    _, optimizer = _optimizer(tx)
    return CallbackList([monitor], optimizer=optimizer)


def test_an_optimizer_without_injected_hyperparameters():
    loop = _loop(optax.adam(1e-3), LearningRateMonitor())
    message = (
        "LearningRateMonitor: the optimizer must keep its learning rate in an "
        "optax.inject_hyperparams state, got an optimizer state with none (ScaleByAdamState, "
        "EmptyState). Build its "
        "transformation with optax.inject_hyperparams, e.g. "
        "optax.inject_hyperparams(optax.sgd)(learning_rate=0.01, momentum=0.9); a schedule "
        "works as well as a number."
    )
    with raises_exactly(ValueError, message):
        loop.on_train_begin()


def test_an_optimizer_that_injects_no_learning_rate():
    tx = optax.chain(
        optax.inject_hyperparams(optax.add_decayed_weights)(weight_decay=1e-4), optax.sgd(0.1)
    )
    loop = _loop(tx, LearningRateMonitor())
    message = (
        "LearningRateMonitor: the optimizer must inject a 'learning_rate', got [0] injects "
        "['weight_decay']. Inject the learning rate, e.g. "
        "optax.inject_hyperparams(optax.sgd)(learning_rate=0.01)."
    )
    with raises_exactly(ValueError, message):
        loop.on_train_begin()


def test_listed_after_a_per_step_scheduler_callback():
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.0)
    _, optimizer = _optimizer(tx)
    loop = CallbackList(
        [LRSchedulerCallback(CyclicLR(**SCHEDULE)), LearningRateMonitor()], optimizer=optimizer
    )
    message = (
        "LearningRateMonitor: it must run before the LRSchedulerCallback, which writes the next "
        "update's learning rate in its on_step_end, got the callbacks ['LRSchedulerCallback', "
        "'LearningRateMonitor']; the monitor would log every value one update early. List the "
        "LearningRateMonitor before it."
    )
    with raises_exactly(ValueError, message):
        loop.on_train_begin()


def test_a_loop_without_an_optimizer():
    loop = CallbackList([LearningRateMonitor()])
    message = (
        "LearningRateMonitor: the loop has no optimizer, got loop.optimizer=None. Pass "
        "optimizer= to the CallbackList (or use the Trainer) before training begins."
    )
    with raises_exactly(ValueError, message):
        loop.on_train_begin()


def test_a_loop_with_an_optax_transformation_as_optimizer():
    loop = types.SimpleNamespace(optimizer=optax.sgd(0.1), step=0)
    message = (
        "LearningRateMonitor: `optimizer` must be an nnx.Optimizer, got "
        "GradientTransformationExtraArgs. It looks like an optax transformation: wrap it, e.g. "
        "nnx.Optimizer(model, optax.inject_hyperparams(optax.sgd)(learning_rate=0.0), "
        "wrt=nnx.Param)."
    )
    with raises_exactly(TypeError, message):
        LearningRateMonitor().on_train_begin(loop)


def test_on_step_end_before_on_train_begin():
    message = (
        "LearningRateMonitor.on_step_end: called before on_train_begin, so there is nothing to "
        "read yet. Call on_train_begin(loop) once before the first step "
        "(CallbackList.on_train_begin() does)."
    )
    with raises_exactly(RuntimeError, message):
        LearningRateMonitor().on_step_end(None, 0, {})


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        (
            0,
            ValueError,
            "LearningRateMonitor: `log_every_steps` must be an integer in [1, 2**31 - 1], got "
            "log_every_steps=0 (int). e.g. 100.",
        ),
        (
            2.0,
            TypeError,
            "LearningRateMonitor: `log_every_steps` must be an integer, got "
            "log_every_steps=2.0 (float). e.g. 100.",
        ),
        (
            True,
            TypeError,
            "LearningRateMonitor: `log_every_steps` must be an integer, got "
            "log_every_steps=True (bool). e.g. 100.",
        ),
    ],
)
def test_log_every_steps_must_be_a_positive_integer(value, error, message):
    with raises_exactly(error, message):
        LearningRateMonitor(log_every_steps=value)


def test_a_writer_must_write_scalars():
    message = (
        "LearningRateMonitor: `writer` must have CLU's MetricWriter interface "
        "(write_scalars(step, scalars)), got str. Pass one, e.g. create_writer(logdir), or None "
        "to keep the values in `history`."
    )
    with raises_exactly(TypeError, message):
        LearningRateMonitor("logs/")


def test_gradient_accumulation_nested_in_a_chain_logs_as_at_the_root():
    _, inner = _cyclic_sgd()
    series = []
    for tx in (
        optax.MultiSteps(inner, every_k_schedule=4).gradient_transformation(),
        optax.chain(
            optax.clip_by_global_norm(1e9),
            optax.MultiSteps(inner, every_k_schedule=4).gradient_transformation(),
        ),
    ):
        writer = RecordingWriter()
        _run(*_optimizer(tx), [LearningRateMonitor(writer, log_every_steps=2)])
        series.append(writer.series("learning_rate"))
    assert series[0] == series[1]
    assert _steps(series[0]) == [4, 8, 12]  # only the windows in which it updated
