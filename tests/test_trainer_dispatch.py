"""The Trainer with several train steps per dispatch (``steps_per_dispatch=k``).

The reference is the same run with one step per dispatch: every update applies the same
hyperparameters (read back from the optimizer after each update), every step's hooks run once
with its own metrics, and the parameters agree to float32 rounding.
"""

from __future__ import annotations

import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from helpers import (
    CrashAt,
    RecordingWriter,
    count_compilations,
    host_lrs,
    tiny_batches,
    tiny_setup,
)

from flax_cyclic import (
    Callback,
    Checkpointer,
    CosineAnnealingWarmRestarts,
    CyclicLR,
    LearningRateMonitor,
    LinearLR,
    LRSchedulerCallback,
    NonFiniteError,
    OneCycleLR,
    ReduceLROnPlateau,
    SequentialLR,
    Trainer,
    classification_train_step,
)

EPOCH = 12  # batches per epoch: not a multiple of 8, so epochs end in shorter dispatches
EVAL = tiny_batches(16, 2, seed=9)


def _scheduled(kind: str) -> tuple[LRSchedulerCallback, dict]:
    """An LR callback of the family, and the fit arguments it needs."""
    if kind == "cyclic":
        scheduler = CyclicLR(0.01, 0.1, step_size_up=5, mode="triangular2", cycle_momentum=True)
    elif kind == "onecycle":
        scheduler = OneCycleLR(max_lr=0.1, total_steps=3 * EPOCH)
    elif kind == "restarts":
        scheduler = CosineAnnealingWarmRestarts(0.1, T_0=5, T_mult=2, eta_min=0.001)
    elif kind == "sequential":
        warmup = LinearLR(0.01, start_factor=0.1, total_iters=6)
        scheduler = SequentialLR([warmup, CyclicLR(0.01, 0.1, step_size_up=4)], milestones=[6])
    elif kind == "plateau":
        scheduler = ReduceLROnPlateau(0.1, factor=0.5, patience=0)
        return LRSchedulerCallback(scheduler, monitor="eval/loss"), {
            "eval_data": EVAL,
            "eval_every_steps": 8,
        }
    else:  # a per-epoch CyclicLR
        return LRSchedulerCallback(CyclicLR(0.01, 0.1, step_size_up=1), interval="epoch"), {}
    return LRSchedulerCallback(scheduler), {}


def _run(kind: str, k: int) -> tuple[list, dict, list]:
    """Three epochs of `kind` at `k` steps per dispatch: (applied values, parameters, hooks)."""
    model, optimizer = tiny_setup()
    monitor = LearningRateMonitor()  # reads each update's values back from the optimizer
    callback, arguments = _scheduled(kind)
    hooks = _Hooks()
    trainer = Trainer(
        model,
        optimizer,
        callbacks=[monitor, callback, hooks],
        progress=False,
        steps_per_dispatch=k,
    )
    trainer.fit(tiny_batches(16, EPOCH), num_epochs=3, **arguments)
    params = {str(path): np.asarray(v) for path, v in nnx.to_flat_state(nnx.state(model))}
    return monitor.history, params, hooks.calls


class _Hooks(Callback):
    """Records the step hooks: which step, and the loss it got."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def on_step_begin(self, loop, step):
        self.calls.append(("begin", step))

    def on_step_end(self, loop, step, metrics):
        self.calls.append(("end", step, float(metrics["loss"])))


@pytest.mark.parametrize(
    "kind", ["cyclic", "onecycle", "restarts", "sequential", "plateau", "per_epoch"]
)
def test_every_update_applies_at_k8_what_it_applies_at_k1(kind):
    one, params_one, hooks_one = _run(kind, 1)
    eight, params_eight, hooks_eight = _run(kind, 8)
    assert [step for step, _ in eight] == list(range(1, 3 * EPOCH + 1))  # every update, once
    assert eight == one  # learning rate (and momentum) of every update, exactly
    assert hooks_eight == hooks_one  # every step's hooks, in order, with its own loss
    difference = max(np.max(np.abs(params_eight[p] - params_one[p])) for p in params_one)
    # Measured: 0 (the scan's step is the same XLA program as the single step's).
    assert difference <= 1e-6, difference


def test_the_values_applied_are_the_schedulers_plan():
    history, _, _ = _run("cyclic", 8)
    planned = host_lrs(
        CyclicLR(0.01, 0.1, step_size_up=5, mode="triangular2", cycle_momentum=True), 3 * EPOCH
    )
    applied = [values["learning_rate"] for _, values in history]
    assert applied == [float(np.float32(lrs[0])) for lrs in planned]


def test_every_dispatch_length_runs_the_program_compiled_before_the_first_step():
    model, optimizer = tiny_setup()
    callback = LRSchedulerCallback(CyclicLR(0.01, 0.1, step_size_up=3))
    trainer = Trainer(model, optimizer, callbacks=[callback], progress=False, steps_per_dispatch=4)
    data = tiny_batches(16, 8)
    with count_compilations() as first:
        trainer.fit(data, num_steps=8)  # two dispatches of 4
    with count_compilations() as shorter:
        trainer.fit(data, num_steps=14)  # 4, then 2: the padded, masked program of 4
    with count_compilations() as again:
        trainer.fit(data, num_steps=20)  # 2 (to realign on multiples of 4), then 4
    # The first fit compiles the scan of 4 steps (and small transfer programs around it).
    assert len(first) >= 1
    assert shorter == []
    assert again == []
    assert callback.scheduler.last_epoch == 20


def test_every_step_is_logged_once_with_the_values_of_k1():
    logs = {}
    for k in (1, 8):
        model, optimizer = tiny_setup()
        writer = RecordingWriter()
        callback = LRSchedulerCallback(CyclicLR(0.01, 0.1, step_size_up=5))
        trainer = Trainer(
            model,
            optimizer,
            callbacks=[callback],
            writer=writer,
            log_every_steps=1,
            progress=False,
            steps_per_dispatch=k,
        )
        trainer.fit(tiny_batches(16, EPOCH), num_epochs=2, eval_data=EVAL, eval_every_steps=8)
        steps = [step for step, scalars in writer.scalars if "train/loss" in scalars]
        assert steps == list(range(1, 2 * EPOCH + 1))
        assert [s for s, _ in writer.series("learning_rate")] == steps
        logs[k] = {
            tag: series
            for tag, series in writer.by_tag().items()
            if tag != "steps_per_sec"  # a measured time
        }
    assert logs[8] == logs[1]


def test_an_interval_within_a_dispatch_is_refused():
    model, optimizer = tiny_setup()
    trainer = Trainer(model, optimizer, progress=False, steps_per_dispatch=4)
    with pytest.raises(ValueError, match=r"eval_every_steps=6 is not a multiple of steps_per_di"):
        trainer.fit(tiny_batches(16, 8), num_steps=8, eval_data=EVAL, eval_every_steps=6)


def test_a_save_interval_within_a_dispatch_is_refused(tmp_path):
    model, optimizer = tiny_setup()
    checkpointer = Checkpointer(tmp_path, every_steps=10)
    trainer = Trainer(
        model, optimizer, checkpointer=checkpointer, progress=False, steps_per_dispatch=4
    )
    with pytest.raises(ValueError, match=r"the checkpointer's every_steps=10 is not a multiple"):
        trainer.fit(tiny_batches(16, 8), num_steps=8)
    checkpointer.close()


@pytest.mark.parametrize("bad", [0, -2, 2.5, "4", True])
def test_steps_per_dispatch_must_be_a_positive_integer(bad):
    model, optimizer = tiny_setup()
    with pytest.raises((TypeError, ValueError), match="steps_per_dispatch"):
        Trainer(model, optimizer, progress=False, steps_per_dispatch=bad)


class _WritesMomentum(Callback):
    """Writes the injected momentum in its step hooks, without telling the loop in advance."""

    def on_step_end(self, loop, step, metrics):
        loop.optimizer.opt_state.hyperparams["momentum"].set_raw_value(np.float32(0.5))


def test_a_hyperparameter_written_by_a_hook_without_planning_is_refused():
    model, optimizer = tiny_setup()
    trainer = Trainer(
        model, optimizer, callbacks=[_WritesMomentum()], progress=False, steps_per_dispatch=4
    )
    with pytest.raises(
        RuntimeError,
        match=r"_WritesMomentum.on_step_end changed optimizer.opt_state.hyperparams.momentum at ",
    ):
        trainer.fit(tiny_batches(16, 8), num_steps=8)
    # One step per dispatch: the write applies to the next step, as the callback means it.
    model, optimizer = tiny_setup()
    Trainer(model, optimizer, callbacks=[_WritesMomentum()], progress=False).fit(
        tiny_batches(16, 8), num_steps=8
    )


def test_a_scheduler_that_cannot_be_computed_ahead_is_refused():
    calls = []

    def counting_scale(x):  # keeps state of its own: a copy of the scheduler shares it
        calls.append(x)
        return 1.0 / len(calls)

    scheduler = CyclicLR(0.01, 0.1, step_size_up=2, scale_fn=counting_scale)
    model, optimizer = tiny_setup()
    trainer = Trainer(
        model,
        optimizer,
        callbacks=[LRSchedulerCallback(scheduler)],
        progress=False,
        steps_per_dispatch=4,
    )
    with pytest.raises(RuntimeError, match="cannot be computed ahead: train with steps_per_disp"):
        trainer.fit(tiny_batches(16, 8), num_steps=8)


def test_a_resume_may_change_the_steps_per_dispatch(tmp_path):
    def run(k: int, steps: int, workdir) -> tuple[list, dict]:
        model, optimizer = tiny_setup()
        monitor = LearningRateMonitor()
        checkpointer = Checkpointer(workdir, every_steps=8)
        trainer = Trainer(
            model,
            optimizer,
            callbacks=[monitor, LRSchedulerCallback(CyclicLR(0.01, 0.1, step_size_up=5))],
            checkpointer=checkpointer,
            progress=False,
            steps_per_dispatch=k,
        )
        trainer.fit(tiny_batches(16, EPOCH), num_steps=steps)
        checkpointer.close()
        return monitor.history, {
            str(p): np.asarray(v) for p, v in nnx.to_flat_state(nnx.state(model))
        }

    whole, params = run(8, 30, tmp_path / "whole")
    first, _ = run(8, 16, tmp_path / "split")
    rest, resumed = run(2, 30, tmp_path / "split")  # resumes at 16 with 2 steps per dispatch
    assert first + rest == whole
    for path, value in params.items():
        np.testing.assert_allclose(resumed[path], value, rtol=1e-6, atol=1e-7)


def test_optax_multisteps_accumulates_across_dispatches():
    histories = {}
    for k in (1, 4):
        model = tiny_setup()[0]
        inner = optax.inject_hyperparams(optax.sgd)(learning_rate=0.0, momentum=0.9)
        tx = optax.MultiSteps(inner, every_k_schedule=3)
        optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
        writer = RecordingWriter()
        callback = LRSchedulerCallback(CyclicLR(0.01, 0.1, step_size_up=2), writer=writer)
        Trainer(model, optimizer, callbacks=[callback], progress=False, steps_per_dispatch=k).fit(
            tiny_batches(16, EPOCH), num_epochs=2
        )
        assert callback.scheduler.last_epoch == 2 * EPOCH // 3
        histories[k] = writer.lrs
    assert histories[4] == histories[1]
    assert sorted(histories[4]) == list(range(3, 2 * EPOCH + 1, 3))  # at each update's step


def test_a_learning_rate_monitor_under_multisteps_is_refused():
    model = tiny_setup()[0]
    inner = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1)
    optimizer = nnx.Optimizer(model, optax.MultiSteps(inner, every_k_schedule=2), wrt=nnx.Param)
    trainer = Trainer(
        model,
        optimizer,
        callbacks=[LearningRateMonitor(RecordingWriter())],
        progress=False,
        steps_per_dispatch=2,
    )
    with pytest.raises(ValueError, match="reads the optimizer's update counters at each logged"):
        trainer.fit(tiny_batches(16, 4), num_steps=4)


MESH_SCRIPT = """
import os
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
import sys
sys.path.insert(0, "tests")
import jax, numpy as np
from flax import nnx
from helpers import tiny_batches, tiny_setup
from flax_cyclic import CyclicLR, LearningRateMonitor, LRSchedulerCallback, Trainer

def run(k, mesh):
    model, optimizer = tiny_setup()
    monitor = LearningRateMonitor()
    Trainer(model, optimizer, callbacks=[monitor, LRSchedulerCallback(CyclicLR(0.01, 0.1, 3))],
            progress=False, mesh=mesh, steps_per_dispatch=k).fit(tiny_batches(16, 6), num_epochs=2)
    return monitor.history, jax.device_get(model.hidden.kernel[...]), model.hidden.kernel[...]

mesh = jax.make_mesh((4,), ("data",))
alone, kernel, _ = run(1, None)
meshed, meshed_kernel, placed = run(4, mesh)
assert meshed == alone, (meshed, alone)
np.testing.assert_allclose(meshed_kernel, kernel, rtol=1e-5, atol=1e-6)
print("devices", len(placed.sharding.device_set))
model, optimizer = tiny_setup()
try:
    Trainer(model, optimizer, progress=False, mesh=mesh, steps_per_dispatch=2).fit(
        tiny_batches(6, 4), num_steps=4)
except ValueError as error:
    print(error)
"""


def test_on_a_mesh_the_stacked_batches_are_split_on_the_batch_dimension():
    done = subprocess.run(
        [sys.executable, "-c", MESH_SCRIPT], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0] == "devices 4"
    assert lines[1].startswith("Trainer: the batch leaf [0] is of shape (6, 8), but each")


def test_a_grain_iterator_resumes_within_an_epoch_at_k4(tmp_path):
    import grain

    dataset = grain.MapDataset.source(tiny_batches(16, 10)).shuffle(seed=3)

    def run(workdir, crash: int | None = None) -> tuple[list, dict]:
        model, optimizer = tiny_setup()
        monitor = LearningRateMonitor()
        callbacks = [monitor, LRSchedulerCallback(CyclicLR(0.01, 0.1, step_size_up=3))]
        checkpointer = Checkpointer(workdir, every_steps=4)
        trainer = Trainer(
            model,
            optimizer,
            callbacks=[*callbacks, *([CrashAt(crash)] if crash is not None else [])],
            checkpointer=checkpointer,
            progress=False,
            steps_per_dispatch=4,
        )
        try:
            trainer.fit(dataset, num_epochs=3)
        finally:
            checkpointer.close()
        return monitor.history, {
            str(p): np.asarray(v) for p, v in nnx.to_flat_state(nnx.state(model))
        }

    whole, params = run(tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "split", crash=15)  # in the hooks of the dispatch of steps 12-15
    rest, resumed = run(tmp_path / "split")  # from the save at step 12, 2 batches into epoch 1
    assert rest == whole[12:]
    for path, value in params.items():
        np.testing.assert_array_equal(resumed[path], value)


def test_terminate_on_nan_names_the_step_within_a_dispatch():
    from flax_cyclic import TerminateOnNaN
    from flax_cyclic.steps import classification_train_step

    def nan_at_step_5(model, optimizer, batch):
        metrics = classification_train_step(model, optimizer, batch)
        return {**metrics, "loss": jnp.where(optimizer.step[...] == 6, jnp.nan, metrics["loss"])}

    model, optimizer = tiny_setup(lr=0.01)
    trainer = Trainer(
        model,
        optimizer,
        train_step=nan_at_step_5,
        callbacks=[TerminateOnNaN()],
        progress=False,
        steps_per_dispatch=4,
    )
    with pytest.raises(NonFiniteError, match=r"^TerminateOnNaN: train step 5 gave loss=nan"):
        trainer.fit(tiny_batches(16, 12), num_steps=12)


def test_an_unrolled_dispatch_trains_as_a_rolled_one():
    runs = {}
    for unroll in (1, True):
        model, optimizer = tiny_setup()
        monitor = LearningRateMonitor()
        Trainer(
            model,
            optimizer,
            callbacks=[monitor, LRSchedulerCallback(CyclicLR(0.01, 0.1, step_size_up=5))],
            progress=False,
            steps_per_dispatch=4,
            unroll_dispatch=unroll,
        ).fit(tiny_batches(16, EPOCH), num_epochs=2)
        runs[unroll] = monitor.history, np.asarray(model.hidden.kernel[...])
    assert runs[True][0] == runs[1][0]
    np.testing.assert_allclose(runs[True][1], runs[1][1], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("bad", [0, 1.5, "all"])
def test_unroll_dispatch_must_be_a_bool_or_a_positive_integer(bad):
    model, optimizer = tiny_setup()
    with pytest.raises((TypeError, ValueError), match="unroll_dispatch"):
        Trainer(model, optimizer, progress=False, steps_per_dispatch=4, unroll_dispatch=bad)


@pytest.mark.parametrize("k", [1, 2])
def test_a_vector_train_metric_is_refused_before_a_mid_epoch_save(tmp_path, k):
    def train_step(model, optimizer, batch):
        metrics = classification_train_step(model, optimizer, batch)
        return {**metrics, "per_class": jnp.zeros(3)}

    model, optimizer = tiny_setup(0.01)
    trainer = Trainer(
        model,
        optimizer,
        train_step=train_step,
        progress=False,
        checkpointer=Checkpointer(tmp_path, every_steps=2),
        steps_per_dispatch=k,
    )
    refused = r"^Trainer\.fit: metrics must be scalars, but 'per_class' has shape \(3,\)"
    with pytest.raises(TypeError, match=refused):
        trainer.fit(tiny_batches(16, 4), num_steps=4)
    assert trainer.checkpointer.all_steps() == []  # refused before any save


class TinyCNN(nnx.Module):
    """A convolution, average pooling and a dense layer, on 8x8 images with one channel."""

    def __init__(self, rngs: nnx.Rngs):
        self.conv = nnx.Conv(1, 4, kernel_size=(3, 3), rngs=rngs)
        self.out = nnx.Linear(4 * 4 * 4, 3, rngs=rngs)

    def __call__(self, x):
        x = nnx.avg_pool(nnx.relu(self.conv(x)), window_shape=(2, 2), strides=(2, 2))
        return self.out(x.reshape(x.shape[0], -1))


def _images(count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """`tiny_batches` reshaped into 8x8 one-channel images (the first 8 features, repeated)."""
    return [
        (np.tile(x, (1, 8)).reshape(-1, 8, 8, 1), y) for x, y in tiny_batches(16, count, seed=3)
    ]


def _cnn_trainer(k: int, **kwargs) -> tuple[Trainer, LearningRateMonitor]:
    model = TinyCNN(nnx.Rngs(0))
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.0, momentum=0.9)
    monitor = LearningRateMonitor()
    trainer = Trainer(
        model,
        nnx.Optimizer(model, tx, wrt=nnx.Param),
        callbacks=[monitor, LRSchedulerCallback(CyclicLR(0.01, 0.1, step_size_up=5))],
        progress=False,
        steps_per_dispatch=k,
        **kwargs,
    )
    return trainer, monitor


def _dispatch_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "per dispatch" in r.getMessage()]


def test_the_log_says_how_dispatches_run_and_what_compiling_cost(caplog):
    model, optimizer = tiny_setup()
    trainer = Trainer(model, optimizer, progress=False, steps_per_dispatch=4)
    with caplog.at_level("INFO", logger="flax_cyclic"):
        trainer.fit(tiny_batches(16, 6), num_epochs=1)
    (line,) = _dispatch_lines(caplog)
    assert line.startswith(
        "4 steps per dispatch as one scan, rolled: unroll_dispatch='auto', and the step holds "
        "nothing that runs slower in a loop. Compiled before the first step in "
    )
    seconds = float(re.search(r"first step in (\d+\.\d) s;", line).group(1))
    assert 0 < seconds < 120
    assert line.endswith(
        " s; a shorter dispatch (an epoch's end, num_steps) compiles nothing more."
    )


def test_auto_runs_a_convolution_on_a_cpu_one_compiled_call_per_step(caplog):
    assert jax.default_backend() == "cpu"
    trainer, monitor = _cnn_trainer(4)
    with caplog.at_level("INFO", logger="flax_cyclic"):
        trainer.fit(_images(10), num_epochs=2)
    (line,) = _dispatch_lines(caplog)
    assert line.startswith(
        "4 steps per dispatch as one compiled call per step (no scan): unroll_dispatch='auto' "
        "and the step holds conv_general_dilated on a CPU, which XLA runs many times slower "
        "inside a scan's loop and, unrolled, no faster than one step per call (give "
        "unroll_dispatch=True to unroll anyway). Compiled before the first step in "
    )
    # The same program as one step per dispatch: the same updates, bit for bit.
    one, one_monitor = _cnn_trainer(1)
    one.fit(_images(10), num_epochs=2)
    assert monitor.history == one_monitor.history
    for (path, a), (_, b) in zip(
        nnx.to_flat_state(nnx.state(trainer.model)),
        nnx.to_flat_state(nnx.state(one.model)),
        strict=True,
    ):
        np.testing.assert_array_equal(np.asarray(a[...]), np.asarray(b[...]), err_msg=str(path))


@pytest.mark.parametrize(
    ("unroll", "how"),
    [(True, "one scan, unrolled"), (1, "one scan, rolled"), ("per_step", "one compiled call")],
)
def test_an_unroll_dispatch_given_is_kept_and_said(caplog, unroll, how):
    trainer, _ = _cnn_trainer(4, unroll_dispatch=unroll)
    with caplog.at_level("INFO", logger="flax_cyclic"):
        trainer.fit(_images(4), num_epochs=1)
    (line,) = _dispatch_lines(caplog)
    assert line.startswith(f"4 steps per dispatch as {how}")
    assert f"unroll_dispatch={unroll!r} as given" in line
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    if (
        unroll == 1 and unroll is not True
    ):  # a rolled scan over convolutions on a CPU: said, with the fix
        assert warned == [
            "Trainer: the step holds conv_general_dilated, which XLA:CPU runs many times "
            "slower inside a scan's loop: give unroll_dispatch='auto' (the default) or True."
        ]
    else:
        assert warned == []


class _CountsAfterFirstDispatch(Callback):
    """Counts XLA compilations from the hooks of the first dispatch's last step to the end.

    Those hooks run after the second dispatch started (and the third, where the second is the
    epoch's last), so this counts every dispatch's program but the first's.
    """

    def __init__(self, k: int) -> None:
        self.k, self.compiled, self._block = k, None, None

    def on_step_end(self, loop, step, metrics):
        if step == self.k - 1:  # the hook's step counts from 0
            self._block = count_compilations()
            self.compiled = self._block.__enter__()

    def on_train_end(self, loop):
        self._block.__exit__(None, None, None)


@pytest.mark.parametrize("unroll", ["auto", True, "per_step"])
@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_no_compilation_after_the_first_dispatch_at_epoch_ends(model, unroll):
    counter = _CountsAfterFirstDispatch(4)
    if model == "mlp":
        net, optimizer = tiny_setup()
        data = tiny_batches(16, 10)
    else:
        net = TinyCNN(nnx.Rngs(0))
        tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.0)
        optimizer = nnx.Optimizer(net, tx, wrt=nnx.Param)
        data = _images(10)
    trainer = Trainer(
        net,
        optimizer,
        callbacks=[LRSchedulerCallback(CyclicLR(0.01, 0.1, step_size_up=5)), counter],
        progress=False,
        steps_per_dispatch=4,
        unroll_dispatch=unroll,
    )
    # Epochs of 10: dispatches of 4, 4, 2 | 2, 4, 4 | 4, 4, 2: three lengths, one program.
    trainer.fit(data, num_epochs=3)
    assert trainer.step == 30
    assert counter.compiled == []


@pytest.mark.parametrize(
    ("bad", "error"),
    [("all", TypeError), ("AUTO", TypeError), (None, TypeError), (1.5, TypeError),
     (0, ValueError), (-2, ValueError)],
)  # fmt: skip
def test_a_bad_unroll_dispatch_is_refused_naming_the_value_and_the_fix(bad, error):
    model, optimizer = tiny_setup()
    with pytest.raises(error) as refused:
        Trainer(model, optimizer, progress=False, steps_per_dispatch=4, unroll_dispatch=bad)
    assert str(refused.value) == (
        "Trainer: `unroll_dispatch` must be 'auto', 'per_step', a bool or a positive integer, "
        f"got unroll_dispatch={bad!r}. Give 'auto' (the default: chosen from the step and the "
        "device), True (a scan unrolled), False or 1 (a scan, rolled), n > 1 (n steps inlined "
        "per iteration) or 'per_step' (one compiled call per step)."
    )
