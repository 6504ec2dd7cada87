"""Callback and CallbackList: the hooks, their order and the loop's counters."""

from __future__ import annotations

import optax
import pytest
from flax import nnx
from helpers import RecordingWriter

from flax_cyclic import Callback, CallbackList, CyclicLR, LRSchedulerCallback
from flax_cyclic.callbacks.base import flush_writer


def test_callback_list_calls_hooks_in_order():
    calls = []

    class Spy(Callback):
        def __getattribute__(self, name):
            if name.startswith("on_"):
                return lambda loop, *args: calls.append((name, *args))
            return super().__getattribute__(name)

    loop = CallbackList([Spy()])
    loop.on_train_begin()
    loop.on_epoch_begin(0)
    loop.on_step_begin()
    loop.on_step_end({"loss": 1.0})
    loop.on_eval_begin()
    loop.on_eval_end({"accuracy": 0.5})
    loop.on_epoch_end({"loss": 1.0})
    loop.on_exception(RuntimeError("x"))
    loop.on_train_end()
    assert [call[0] for call in calls] == [
        "on_train_begin",
        "on_epoch_begin",
        "on_step_begin",
        "on_step_end",
        "on_eval_begin",
        "on_eval_end",
        "on_epoch_end",
        "on_exception",
        "on_train_end",
    ]
    assert calls[2] == ("on_step_begin", 0)
    assert calls[3] == ("on_step_end", 0, {"loss": 1.0})
    assert (loop.step, loop.epoch) == (1, 1)


def test_callback_list_rejects_non_callbacks_and_duplicate_keys():
    with pytest.raises(TypeError, match=r"callbacks\[0\] is a str"):
        CallbackList(["lr"])
    with pytest.raises(ValueError, match=r"share the state_key \['LRSchedulerCallback'\]"):
        CallbackList([LRSchedulerCallback(CyclicLR()), LRSchedulerCallback(CyclicLR())])


def test_the_base_callback_does_nothing_and_keeps_no_state():
    callback = Callback()
    loop = CallbackList([callback])
    loop.on_train_begin()
    loop.on_step_begin()
    loop.on_step_end({"loss": 1.0})
    loop.on_train_end()
    assert callback.state_key == "Callback"
    assert callback.state_dict() == {}
    assert loop.state_dict() == {"Callback": {}}


def test_step_hooks_before_on_train_begin_are_refused():
    loop = CallbackList([Callback()])
    with pytest.raises(RuntimeError, match=r"CallbackList\.on_step_begin: called before"):
        loop.on_step_begin()


def test_states_go_back_to_their_callbacks_and_unclaimed_ones_are_named(caplog):
    class Counter(Callback):
        def __init__(self):
            self.count = 0

        def state_dict(self):
            return {"count": self.count}

        def load_state_dict(self, state):
            self.count = state["count"]

    counter = Counter()
    with caplog.at_level("WARNING", logger="flax_cyclic"):
        CallbackList([counter]).load_state_dict(
            {"Counter": {"count": 3}, "Gone": {"count": 1}, "Stateless": {}}
        )
    assert counter.count == 3
    assert "not restored (no such callback): ['Gone']" in caplog.text


def test_flush_writer_flushes_only_what_can_be_flushed():
    writer = RecordingWriter()
    flush_writer(writer)
    flush_writer(None)
    flush_writer(object())
    assert writer.flushes == 1


class _StartedWriter(RecordingWriter):
    """A recording writer that also records `start(step)` and what was written before it."""

    def __init__(self):
        super().__init__()
        self.starts: list[tuple[int, int]] = []  # (step, writes before it)

    def start(self, step):
        self.starts.append((step, len(self.scalars)))


class _Writes(Callback):
    def __init__(self, writer):
        self.writer = writer

    @property
    def state_key(self):
        return f"_Writes{id(self)}"

    def on_train_begin(self, loop):
        self.writer.write_scalars(loop.step, {"x": 1.0})


def test_on_train_begin_starts_each_writer_once_before_any_callback_writes():
    shared, other = _StartedWriter(), _StartedWriter()
    wrapper = RecordingWriter(shared)  # passes `start` on to the writer it wraps
    loop = CallbackList([_Writes(shared), _Writes(wrapper), _Writes(other)], step=7)
    loop.on_train_begin()
    assert shared.starts == [(7, 0)]
    assert other.starts == [(7, 0)]


def test_on_train_begin_starts_the_writers_again_where_a_callback_moves_the_step():
    writer = _StartedWriter()
    scheduler = CyclicLR(base_lr=0.01, max_lr=0.1, step_size_up=4, last_epoch=13)
    model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.0)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    callbacks = [_Writes(writer), LRSchedulerCallback(scheduler)]
    loop = CallbackList(callbacks, model=model, optimizer=optimizer)
    loop.on_train_begin()
    assert loop.step == 13
    assert writer.starts == [(0, 0), (13, 1)]


def test_the_callback_that_stops_the_run_is_named():
    from flax_cyclic import EarlyStopping

    stopper = EarlyStopping(monitor="eval/loss", patience=1)
    loop = CallbackList([Callback(), stopper])
    loop.on_train_begin()
    loop.on_eval_end({"loss": 1.0})
    assert loop.stopped_by is None
    loop.on_eval_end({"loss": 2.0})
    assert loop.stop_training
    assert loop.stopped_by == "EarlyStopping[eval/loss]"


def test_a_state_saved_under_the_class_name_reaches_its_only_callback():
    from flax_cyclic import EarlyStopping

    saved = EarlyStopping(monitor="eval/loss", patience=3)
    saved.best, saved.best_step, saved.wait = 0.5, 10, 2
    loop = CallbackList([EarlyStopping(monitor="eval/loss", patience=3)])
    loop.load_state_dict({"EarlyStopping": saved.state_dict()})  # the key of releases up to 0.2
    assert loop.callbacks[0].state_dict() == saved.state_dict()


def test_a_checkpointer_or_a_writer_given_as_a_callback_is_pointed_to_its_argument(tmp_path):
    from flax_cyclic import Checkpointer

    checkpointer = Checkpointer(tmp_path)
    with pytest.raises(TypeError, match=r"Trainer\(checkpointer=\.\.\.\), not among the callbacks"):
        CallbackList([checkpointer])
    checkpointer.close()
    with pytest.raises(TypeError, match=r"Trainer\(writer=\.\.\.\) .*not among the callbacks"):
        CallbackList([RecordingWriter()])
    with pytest.raises(TypeError, match="subclass Callback to make one"):
        CallbackList([object()])
