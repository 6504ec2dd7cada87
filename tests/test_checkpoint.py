"""Checkpoint and resume through Orbax: real checkpoints on disk, real processes and signals."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import grain
import jax
import numpy as np
import optax
import pytest
from flax import nnx
from helpers import MLP, CrashAt, NoisyNet, RecordingWriter, raises_exactly, tiny_batches

from flax_cyclic import (
    Callback,
    Checkpointer,
    CheckpointError,
    CosineAnnealingLR,
    CosineAnnealingWarmRestarts,
    CyclicLR,
    LinearLR,
    LRSchedulerCallback,
    MetricsLogger,
    NonFiniteError,
    OneCycleLR,
    SequentialLR,
    TerminateOnNaN,
    Trainer,
    TriangularLR,
)

WORKER = pathlib.Path(__file__).parent / "workers" / "checkpoint_worker.py"
SCHEDULE = dict(base_lr=0.01, max_lr=0.1, step_size_up=3, step_size_down=4, mode="triangular2")


DATA = {
    "list": tiny_batches(16),
    # A grain iterator is resumed from its own saved state, with a different shuffle each epoch.
    "grain": lambda epoch: grain.MapDataset.source(tiny_batches(16)).shuffle(seed=epoch),
}


def _trainer(directory, *, every_steps=4, extra=(), hidden=16, schedule=SCHEDULE, strict=True):
    model = MLP(nnx.Rngs(0), hidden)
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.0, momentum=0.9)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    log = RecordingWriter()
    callback = LRSchedulerCallback(CyclicLR(**schedule), writer=log, strict=strict)
    checkpointer = Checkpointer(directory, every_steps=every_steps, max_to_keep=10)
    trainer = Trainer(model, optimizer, callbacks=[callback, *extra], checkpointer=checkpointer)
    return trainer, log


def _leaves(trainer):
    return [
        np.asarray(leaf)
        for leaf in jax.tree.leaves((nnx.state(trainer.model), nnx.state(trainer.optimizer)))
    ]


def _assert_bitwise_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
        assert x.dtype == y.dtype


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run of 22 steps, per kind of data."""
    runs = {}
    for kind, data in DATA.items():
        trainer, log = _trainer(tmp_path_factory.mktemp(f"reference-{kind}"))
        trainer.fit(data, num_steps=22)
        runs[kind] = (_leaves(trainer), log.lrs)
    return runs


@pytest.mark.parametrize("kind", sorted(DATA))
@pytest.mark.parametrize(
    ("crash_at", "last_checkpoint"),
    [(10, 8), (8, 8), (6, 6), (15, 12)],  # between saves, at a step save, at an epoch-end save
)
def test_resume_after_a_crash_is_bitwise_identical(
    tmp_path, reference, kind, crash_at, last_checkpoint, caplog
):
    # Saves every 4 steps and at the end of every 6-batch epoch.
    trainer, first_log = _trainer(tmp_path, extra=[CrashAt(crash_at)])
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(DATA[kind], num_steps=22)
    trainer.checkpointer.wait()

    resumed, log = _trainer(tmp_path)
    with caplog.at_level(logging.INFO, logger="flax_cyclic"):
        history = resumed.fit(DATA[kind], num_steps=22)
    assert history.resumed_from == last_checkpoint
    assert f"Resumed from the checkpoint at step {last_checkpoint}" in caplog.text

    leaves, reference_lrs = reference[kind]
    _assert_bitwise_equal(_leaves(resumed), leaves)
    # The learning-rate log: the first run up to the crash, then the resumed run, agree
    # bitwise with the uninterrupted run at every step each of them logged (update i's value
    # at step i + 1).
    assert sorted(first_log.lrs) == list(range(1, crash_at + 1))
    assert sorted(log.lrs) == list(range(last_checkpoint + 1, 23))
    for lrs in (first_log.lrs, log.lrs):
        assert all(lrs[step] == reference_lrs[step] for step in lrs)


def test_stop_and_continue_with_a_longer_run(tmp_path, reference):
    trainer, _ = _trainer(tmp_path)
    trainer.fit(DATA["list"], num_steps=9)  # ends part-way through an epoch, saves step 9
    assert trainer.checkpointer.latest_step() == 9
    resumed, _ = _trainer(tmp_path)
    assert resumed.fit(DATA["list"], num_steps=22).resumed_from == 9
    _assert_bitwise_equal(_leaves(resumed), reference["list"][0])


def test_a_fresh_start_says_so(tmp_path, caplog):
    trainer, _ = _trainer(tmp_path)
    with caplog.at_level(logging.INFO, logger="flax_cyclic"):
        history = trainer.fit(DATA["list"], num_steps=2)
    assert history.resumed_from is None
    assert "No checkpoint in" in caplog.text
    assert "starting fresh" in caplog.text


def test_a_finished_run_resumes_to_nothing(tmp_path):
    trainer, _ = _trainer(tmp_path)
    trainer.fit(DATA["list"], num_steps=6)
    again, log = _trainer(tmp_path)
    history = again.fit(DATA["list"], num_steps=6)
    assert history.resumed_from == 6
    assert history.train == []
    assert log.lrs == {}
    _assert_bitwise_equal(_leaves(again), _leaves(trainer))


def test_checkpoint_holds_json_states_and_no_pickle(tmp_path):
    trainer, _ = _trainer(tmp_path)
    trainer.fit(DATA["list"], num_steps=4)
    step_dir = tmp_path / "4"
    callbacks = json.loads((step_dir / "callbacks" / "metadata").read_text())
    trainer_state = json.loads((step_dir / "trainer" / "metadata").read_text())
    assert callbacks["LRSchedulerCallback"]["scheduler"]["last_epoch"] == 4
    assert callbacks["LRSchedulerCallback"]["scheduler"]["config"]["mode"] == "triangular2"
    position = {key: trainer_state[key] for key in ("step", "epoch", "position", "data_state")}
    assert position == {"step": 4, "epoch": 0, "position": 4, "data_state": None}
    for path in step_dir.rglob("*"):
        if path.is_file():
            head = path.read_bytes()[:2]
            assert not (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"))


def test_a_different_scheduler_config_is_refused_unless_allowed(tmp_path):
    trainer, _ = _trainer(tmp_path)
    trainer.fit(DATA["list"], num_steps=4)
    changed = {**SCHEDULE, "max_lr": 0.2}
    resumed, _ = _trainer(tmp_path, schedule=changed)
    with pytest.raises(CheckpointError, match=r"max_lrs: saved \[0.1\], now \[0.2\].*strict=False"):
        resumed.fit(DATA["list"], num_steps=8)
    allowed, _ = _trainer(tmp_path, schedule=changed, strict=False)
    assert allowed.fit(DATA["list"], num_steps=8).resumed_from == 4
    assert allowed.callbacks.callbacks[0].scheduler.max_lrs == (0.2,)


def test_a_different_model_is_refused(tmp_path):
    trainer, _ = _trainer(tmp_path)
    trainer.fit(DATA["list"], num_steps=4)
    resumed, _ = _trainer(tmp_path, hidden=32)
    with pytest.raises(
        CheckpointError, match=r"different model or optimizer.*\(8, 16\) -> \(8, 32\)"
    ):
        resumed.fit(DATA["list"], num_steps=8)


def test_a_damaged_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog):
    trainer, _ = _trainer(tmp_path)
    trainer.fit(DATA["list"], num_steps=8)
    assert trainer.checkpointer.manager.all_steps() == [4, 6, 8]
    _damage(tmp_path / "8")
    resumed, _ = _trainer(tmp_path)
    with caplog.at_level(logging.WARNING, logger="flax_cyclic"):
        assert resumed.fit(DATA["list"], num_steps=8).resumed_from == 6
    assert "Checkpoint 8 is damaged" in caplog.text


def test_all_checkpoints_damaged_is_an_error_not_a_fresh_start(tmp_path):
    trainer, _ = _trainer(tmp_path)
    trainer.fit(DATA["list"], num_steps=8)
    for step in (4, 6, 8):
        _damage(tmp_path / str(step))
    resumed, _ = _trainer(tmp_path)
    with pytest.raises(
        CheckpointError, match=r"None of the checkpoints.*steps \[8, 6, 4\].*Nothing was"
    ):
        resumed.fit(DATA["list"], num_steps=8)


def _damage(step_dir: pathlib.Path) -> None:
    """Truncates every file of the checkpoint's model item to a third."""
    for path in (step_dir / "model").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            path.write_bytes(data[: len(data) // 3])


# -- real processes --


def _worker(workdir, num_steps, every_steps, *extra):
    return subprocess.Popen(
        [sys.executable, str(WORKER), str(workdir), str(num_steps), str(every_steps), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _read_until(process, marker: str) -> list[str]:
    lines = []
    for line in process.stdout:
        lines.append(line.rstrip())
        if marker in line:
            return lines
    raise AssertionError(f"{marker!r} never printed; output:\n" + "\n".join(lines[-30:]))


def _wait_for(path: pathlib.Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def _kill(process) -> None:
    process.kill()
    process.wait()
    process.stdout.close()


def _finish(process) -> str:
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output[-3000:]
    return output


@pytest.fixture(scope="module")
def process_reference(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("process-reference")
    _finish(_worker(workdir, 20, 5, "--ballast", "48"))
    return np.load(workdir / "final.npz")


def _assert_same_final(workdir, reference):
    final = np.load(workdir / "final.npz")
    assert sorted(final.files) == sorted(reference.files)
    for name in reference.files:
        if name not in ("lr_steps", "lrs"):
            np.testing.assert_array_equal(final[name], reference[name], err_msg=name)
    # The resumed process logged the tail of the run, bitwise as the uninterrupted one did.
    tail = {int(s): lr for s, lr in zip(final["lr_steps"], final["lrs"], strict=True)}
    full = {int(s): lr for s, lr in zip(reference["lr_steps"], reference["lrs"], strict=True)}
    assert tail
    assert all(full[s] == lr for s, lr in tail.items())


@pytest.mark.slow
def test_sigkill_during_training_then_resume(tmp_path, process_reference):
    process = _worker(tmp_path, 20, 5, "--ballast", "48", "--sleep", "0.2")
    _read_until(process, "step 5")
    _wait_for(tmp_path / "checkpoints" / "5")  # the async save at step 5 has committed
    _read_until(process, "step")  # and training goes on: kill it mid-way to step 10
    _kill(process)
    output = _finish(_worker(tmp_path, 20, 5, "--ballast", "48"))
    assert "Resumed from the checkpoint at step 5" in output
    _assert_same_final(tmp_path, process_reference)


@pytest.mark.slow
def test_sigkill_during_an_async_save_then_resume(tmp_path, process_reference):
    process = _worker(tmp_path, 20, 5, "--ballast", "48")
    _read_until(process, "Saving the checkpoint at step 10")  # the write runs in the background
    _kill(process)
    checkpoints = tmp_path / "checkpoints"
    leftovers = [p.name for p in checkpoints.iterdir() if "tmp" in p.name]
    assert leftovers, f"the kill missed the save: {sorted(os.listdir(checkpoints))}"
    output = _finish(_worker(tmp_path, 20, 5, "--ballast", "48"))
    assert "Resumed from the checkpoint at step 5" in output
    assert not [p.name for p in checkpoints.iterdir() if "tmp" in p.name]
    _assert_same_final(tmp_path, process_reference)


@pytest.mark.slow
def test_sigterm_saves_exits_cleanly_and_resumes(tmp_path, process_reference):
    process = _worker(tmp_path, 20, 5, "--ballast", "48", "--sleep", "0.05")
    _read_until(process, "step 6")
    process.send_signal(signal.SIGTERM)
    output = _finish(process)
    assert "preempted" in output
    saved = int(output.split("SIGTERM: saving step ")[1].split()[0])
    assert 7 <= saved < 20  # the step in flight finished, then the loop saved and stopped
    # Through the normal end: on_train_end ran (writers flushed, progress bar stopped).
    assert f"train end at step {saved}" in output
    output = _finish(_worker(tmp_path, 20, 5, "--ballast", "48"))
    assert f"Resumed from the checkpoint at step {saved}" in output
    _assert_same_final(tmp_path, process_reference)


def test_resume_with_stateless_callbacks_added_or_removed(tmp_path, caplog):
    class Quiet(Callback):
        pass

    trainer, _ = _trainer(tmp_path, extra=[Quiet()])
    trainer.fit(DATA["list"], num_steps=4)
    resumed, _ = _trainer(tmp_path, extra=[CrashAt(100)])  # Quiet gone, CrashAt new
    with caplog.at_level(logging.WARNING, logger="flax_cyclic"):
        assert resumed.fit(DATA["list"], num_steps=6).resumed_from == 4
    assert "not restored" not in caplog.text  # Quiet's state was empty: nothing is lost


def test_resume_without_the_lr_callback_state_is_an_error(tmp_path):
    trainer, _ = _trainer(tmp_path)
    trainer.fit(DATA["list"], num_steps=4)
    model = MLP(nnx.Rngs(0), hidden=16)
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.0, momentum=0.9)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

    class RenamedLR(LRSchedulerCallback):
        @property
        def state_key(self):
            return "lr"

    other = Trainer(
        model,
        optimizer,
        callbacks=[RenamedLR(CyclicLR(**SCHEDULE))],
        checkpointer=Checkpointer(tmp_path),
    )
    with pytest.raises(CheckpointError, match=r"no saved state for the callbacks \['lr'\]"):
        other.fit(DATA["list"], num_steps=6)


# -- guarantees: nothing non-finite is saved; a checkpoint that disagrees with itself is refused --


class PoisonAt(Callback):
    """Makes the model non-finite after train step `step`, as a diverging run would."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, loop, step, metrics):
        if step == self.step:
            kernel = loop.model.hidden.kernel
            kernel.set_value(kernel.get_value() * np.float32(np.inf))


def test_a_diverged_run_keeps_its_good_checkpoints_and_names_the_first_bad_step(
    tmp_path, reference
):
    trainer, _ = _trainer(tmp_path, extra=[PoisonAt(9)])
    with raises_exactly(
        NonFiniteError,
        "Trainer.fit: training diverged: the metrics were first non-finite at train step 10 "
        "(loss=nan). Checkpointer.save: the state to save at step 12 is not finite "
        "(model/hidden/bias, model/hidden/kernel, model/out/bias, model/out/kernel, "
        "optimizer/opt_state/inner_state/0/trace/hidden/bias and 3 more), so nothing was "
        f"written to {tmp_path}. So the newest checkpoint, step 8, is good and a resume starts "
        "there. Lower the learning rate (e.g. max_lr), clip the gradients "
        "(optax.clip_by_global_norm), or add TerminateOnNaN() to stop at the first non-finite "
        "loss.",
    ):
        trainer.fit(DATA["list"], num_steps=22)
    # The save at step 12 was refused: the checkpoints on disk are those before the divergence.
    assert Checkpointer(tmp_path).manager.all_steps() == [4, 6, 8]
    resumed, _ = _trainer(tmp_path)
    assert resumed.fit(DATA["list"], num_steps=22).resumed_from == 8
    _assert_bitwise_equal(_leaves(resumed), reference["list"][0])


def test_checkpointer_save_refuses_a_non_finite_state(tmp_path):
    model = MLP(nnx.Rngs(0), hidden=16)
    optimizer = nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)
    model.out.bias.set_value(model.out.bias.get_value().at[1].set(np.nan))
    checkpointer = Checkpointer(tmp_path)
    with raises_exactly(
        NonFiniteError,
        f"Checkpointer.save: the state to save at step 3 is not finite (model/out/bias), so "
        f"nothing was written to {tmp_path}.",
    ):
        checkpointer.save(3, model=model, optimizer=optimizer, callbacks={}, trainer={})
    checkpointer.wait()
    assert checkpointer.manager.all_steps() == []


def test_terminate_on_nan_stops_at_the_first_non_finite_step(tmp_path):
    trainer, _ = _trainer(tmp_path, extra=[PoisonAt(6), TerminateOnNaN(monitor=["loss"])])
    with raises_exactly(
        NonFiniteError,
        "TerminateOnNaN: train step 7 gave loss=nan (hooks count steps from 0). Training "
        "stopped at once; lower the learning rate (e.g. max_lr) or clip the gradients "
        "(optax.clip_by_global_norm).",
    ):
        trainer.fit(DATA["list"], num_steps=22)
    assert trainer.step == 7  # stopped inside step 7, before counting it
    assert Checkpointer(tmp_path).manager.all_steps() == [4, 6]


def test_terminate_on_nan_names_a_metric_the_step_does_not_return(tmp_path):
    trainer, _ = _trainer(tmp_path, extra=[TerminateOnNaN(monitor=["lost"])])
    with pytest.raises(KeyError, match=r"returned no \['lost'\].*\['accuracy', 'loss'\]"):
        trainer.fit(DATA["list"], num_steps=2)


def _edit_saved_callbacks(step_dir: pathlib.Path, edit) -> None:
    path = step_dir / "callbacks" / "metadata"
    states = json.loads(path.read_text())
    edit(states)
    path.write_text(json.dumps(states))


def test_a_checkpoint_whose_scheduler_disagrees_with_the_step_is_refused(tmp_path):
    trainer, _ = _trainer(tmp_path)
    trainer.fit(DATA["list"], num_steps=8)

    def move(states):
        states["LRSchedulerCallback"]["scheduler"]["last_epoch"] = 5

    _edit_saved_callbacks(tmp_path / "8", move)
    resumed, _ = _trainer(tmp_path)
    with raises_exactly(
        CheckpointError,
        "LRSchedulerCallback: the scheduler stands at step 5, but the callback counted 8 train "
        "steps (8 parameter updates) with it: the two were saved or changed apart. Restore a "
        "state saved by this callback unedited, or start a new run.",
    ):
        resumed.fit(DATA["list"], num_steps=12)


def test_a_checkpoint_without_the_scheduler_entry_is_refused(tmp_path):
    trainer, _ = _trainer(tmp_path)
    trainer.fit(DATA["list"], num_steps=8)
    _edit_saved_callbacks(tmp_path / "8", lambda states: states["LRSchedulerCallback"].clear())
    resumed, _ = _trainer(tmp_path)
    with raises_exactly(
        CheckpointError,
        f"The checkpoint at step 8 in {tmp_path} does not fit this run: "
        "LRSchedulerCallback.load_state_dict: the saved state has no ['scheduler', "
        "'train_steps'] (it has []). Restore a state made by LRSchedulerCallback.state_dict().",
    ):
        resumed.fit(DATA["list"], num_steps=12)


def test_a_checkpoint_directory_that_is_a_file_is_refused_at_once(tmp_path):
    path = tmp_path / "run.txt"
    path.write_text("not a directory")
    with raises_exactly(
        NotADirectoryError,
        f"Checkpointer: `directory` must be a directory, got directory={str(path)!r}, which "
        "is a file. Pass a directory path; it is created if missing.",
    ):
        Checkpointer(path)
    with pytest.raises(NotADirectoryError, match="which lies under the file"):
        Checkpointer(path / "checkpoints")


def test_a_finished_run_says_it_is_complete(tmp_path, caplog):
    trainer, _ = _trainer(tmp_path)
    trainer.fit(DATA["list"], num_steps=6)
    again, _ = _trainer(tmp_path)
    with caplog.at_level(logging.WARNING, logger="flax_cyclic"):
        again.fit(DATA["list"], num_steps=6)
    assert (
        f"The run in {tmp_path} is complete at step 6 (num_steps=6): nothing left to train. "
        "Raise num_steps to train longer, or use a new checkpoint directory to start over."
    ) in caplog.messages


def test_train_means_across_a_resume_equal_an_uninterrupted_run(tmp_path):
    def run(directory, crash_at=None):
        log = RecordingWriter()
        extra = [MetricsLogger(log, log_every_steps=5)]
        if crash_at is not None:
            extra.append(CrashAt(crash_at))
        trainer, _ = _trainer(directory, extra=extra)
        with contextlib.suppress(KeyboardInterrupt):
            trainer.fit(DATA["list"], num_steps=20)
        return log.by_tag()

    reference = run(tmp_path / "reference")
    first = run(tmp_path / "run", crash_at=7)  # saved at 4 and 6: updates 5..6 are in it
    second = run(tmp_path / "run")
    assert first["train/loss"] == {5: reference["train/loss"][5]}
    assert second["train/loss"] == {s: v for s, v in reference["train/loss"].items() if s > 5}


# -- each scheduler of the family through the callback, a crash and a resume -------------------


SINGLE = {
    "OneCycleLR": lambda: OneCycleLR(max_lr=0.1, total_steps=20),
    "CosineAnnealingLR": lambda: CosineAnnealingLR(base_lr=0.1, T_max=20, eta_min=0.001),
    "CosineAnnealingWarmRestarts": lambda: CosineAnnealingWarmRestarts(
        base_lr=0.1, T_0=3, T_mult=2, decay=0.7, warmup_steps=1
    ),
    "TriangularLR": lambda: TriangularLR(base_lr=0.01, max_lr=0.1, step_size=4),
    "LinearLR": lambda: LinearLR(base_lr=0.1, start_factor=0.1, total_iters=12),
    "SequentialLR": lambda: SequentialLR(
        [
            LinearLR(base_lr=0.01, start_factor=0.1, total_iters=5),
            CyclicLR(base_lr=0.01, max_lr=0.1, step_size_up=4, cycle_momentum=True),
        ],
        milestones=[5],
    ),
}


def _family_trainer(directory, name, crash_at=None):
    model = MLP(nnx.Rngs(0), hidden=16)
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.0, momentum=0.9)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    log = RecordingWriter()
    callbacks = [LRSchedulerCallback(SINGLE[name](), writer=log)]
    if crash_at is not None:
        callbacks.append(CrashAt(crash_at))
    checkpointer = Checkpointer(directory, every_steps=4, max_to_keep=10)
    return Trainer(model, optimizer, callbacks=callbacks, checkpointer=checkpointer), log


@pytest.mark.parametrize("name", sorted(SINGLE))
def test_each_scheduler_drives_the_optimizer_and_resumes_exactly(tmp_path, name):
    reference, reference_log = _family_trainer(tmp_path / "reference", name)
    reference.fit(tiny_batches(16), num_steps=20)
    expected = SINGLE[name]()
    assert sorted(reference_log.by_step()) == list(range(1, 21))
    for step, scalars in reference_log.by_step().items():
        expected.step(step - 1)  # the value update step - 1 applied, as the float32 optax held
        assert scalars["learning_rate"] == np.float32(expected.get_last_lr()[0])
        if expected.get_last_momentum() is not None:
            assert scalars["momentum"] == np.float32(expected.get_last_momentum()[0])
    # The optimizer holds the value for the next update: step 20's (OneCycleLR: its minimum).
    expected.step(20)
    held = reference.optimizer.opt_state.hyperparams["learning_rate"].get_value()
    assert held == np.float32(expected.get_last_lr()[0])

    crashed, _first_log = _family_trainer(tmp_path / "run", name, crash_at=10)
    with pytest.raises(KeyboardInterrupt):
        crashed.fit(tiny_batches(16), num_steps=20)
    crashed.checkpointer.wait()
    resumed, log = _family_trainer(tmp_path / "run", name)
    assert resumed.fit(tiny_batches(16), num_steps=20).resumed_from == 8
    for a, b in zip(_leaves(resumed), _leaves(reference), strict=True):
        np.testing.assert_array_equal(a, b)
    assert sorted(log.by_step()) == list(range(9, 21))
    assert all(log.by_step()[s] == reference_log.by_step()[s] for s in log.by_step())


# -- the best checkpoints by an evaluation metric, and restoring any step --


def _setup(seed=0):
    model = MLP(nnx.Rngs(seed), 16)
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.05, momentum=0.9)
    return model, nnx.Optimizer(model, tx, wrt=nnx.Param)


def _kernel(model) -> np.ndarray:
    return np.asarray(model.hidden.kernel.get_value())


def test_the_k_best_by_the_metric_and_the_newest_are_kept_and_each_restores(tmp_path):
    checkpointer = Checkpointer(
        tmp_path, best_metric="eval/accuracy", best_mode="max", max_to_keep=2, async_save=False
    )
    model, optimizer = _setup()
    accuracies = {1: 0.5, 2: 0.9, 3: 0.7, 4: 0.8, 5: None, 6: 0.6}
    kernels = {}
    for step, accuracy in accuracies.items():
        model.hidden.kernel[...] = model.hidden.kernel[...] + 1.0
        kernels[step] = _kernel(model)
        metrics = None if accuracy is None else {"eval/accuracy": accuracy, "eval/loss": 1.0}
        checkpointer.save(
            step, model=model, optimizer=optimizer, callbacks={}, trainer={}, metrics=metrics
        )
    # The two best (2: 0.9, 4: 0.8) and the newest (6), whatever its rank.
    assert checkpointer.all_steps() == [2, 4, 6]
    assert checkpointer.best_step() == 2
    assert checkpointer.metrics(4) == {"eval/accuracy": 0.8, "eval/loss": 1.0}
    for step in (2, 4, 6):
        fresh, fresh_optimizer = _setup(seed=1)
        restored = checkpointer.restore(model=fresh, optimizer=fresh_optimizer, step=step)
        assert restored.step == step
        np.testing.assert_array_equal(_kernel(fresh), kernels[step])
    fresh, fresh_optimizer = _setup(seed=1)
    assert checkpointer.restore(model=fresh, optimizer=fresh_optimizer).step == 6  # the newest


def test_best_mode_min_keeps_the_lowest(tmp_path):
    checkpointer = Checkpointer(
        tmp_path, best_metric="eval/loss", best_mode="min", max_to_keep=1, async_save=False
    )
    model, optimizer = _setup()
    for step, loss in enumerate([0.9, 0.3, 0.5, 0.4], start=1):
        checkpointer.save(
            step, model=model, optimizer=optimizer, callbacks={}, trainer={},
            metrics={"eval/loss": loss},
        )  # fmt: skip
    assert checkpointer.all_steps() == [2, 4]
    assert checkpointer.best_step() == 2


def test_a_trainer_saves_after_each_evaluation_and_the_best_restores_what_was_evaluated(
    tmp_path,
):
    evaluated = {}

    class Record(Callback):
        def on_eval_end(self, loop, metrics):
            evaluated[loop.step] = (metrics["accuracy"], _kernel(loop.model))

    model, optimizer = _setup()
    checkpointer = Checkpointer(
        tmp_path, best_metric="eval/accuracy", max_to_keep=2, every_epoch=False, async_save=False
    )
    trainer = Trainer(model, optimizer, callbacks=[Record()], checkpointer=checkpointer)
    trainer.fit(
        tiny_batches(16, 6),
        num_steps=18,
        eval_data=tiny_batches(16, 3, seed=1),
        eval_every_steps=3,
    )
    assert sorted(evaluated) == [3, 6, 9, 12, 15, 18]
    ranked = sorted(evaluated, key=lambda step: (evaluated[step][0], step))
    best_two = set(ranked[-2:])
    kept = checkpointer.all_steps()
    assert best_two <= set(kept)
    assert 18 in kept
    assert len(kept) <= 3
    best = checkpointer.best_step()
    assert evaluated[best][0] == max(accuracy for accuracy, _ in evaluated.values())
    assert checkpointer.metrics(best)["eval/accuracy"] == evaluated[best][0]
    fresh, fresh_optimizer = _setup(seed=1)
    checkpointer.restore(model=fresh, optimizer=fresh_optimizer, step=best)
    np.testing.assert_array_equal(_kernel(fresh), evaluated[best][1])


def test_ranking_by_a_metric_needs_evaluation_data(tmp_path):
    model, optimizer = _setup()
    trainer = Trainer(
        model, optimizer, checkpointer=Checkpointer(tmp_path, best_metric="eval/accuracy")
    )
    with raises_exactly(
        ValueError,
        "Trainer.fit: the checkpointer keeps the best checkpoints by 'eval/accuracy', an "
        "evaluation metric, but there is no eval_data to evaluate on; pass eval_data=... (and "
        "eval_every_steps=... to evaluate within epochs).",
    ):
        trainer.fit(tiny_batches(16, 2), num_steps=2)


def test_best_checkpoint_errors_name_the_fix(tmp_path):
    with raises_exactly(
        ValueError,
        "Checkpointer: `best_metric` must name an evaluation metric as it is logged, "
        "'eval/<name>', got best_metric='accuracy'; e.g. 'eval/accuracy'. A checkpoint is "
        "ranked by the evaluation of its own weights.",
    ):
        Checkpointer(tmp_path / "a", best_metric="accuracy")
    with raises_exactly(
        ValueError,
        "Checkpointer.best_step: this checkpointer ranks no checkpoints; build it with "
        "best_metric='eval/<name>' (and best_mode) to keep the best ones.",
    ):
        Checkpointer(tmp_path / "b").best_step()
    checkpointer = Checkpointer(tmp_path / "c", best_metric="eval/accuracy", async_save=False)
    model, optimizer = _setup()
    with raises_exactly(
        KeyError,
        "\"Checkpointer.save: best_metric='eval/accuracy', but the evaluation reported "
        "['eval/loss']; rank by one of those.\"",
    ):
        checkpointer.save(
            1, model=model, optimizer=optimizer, callbacks={}, trainer={},
            metrics={"eval/loss": 0.5},
        )  # fmt: skip
    assert checkpointer.best_step() is None
    checkpointer.save(1, model=model, optimizer=optimizer, callbacks={}, trainer={})
    with raises_exactly(
        CheckpointError,
        f"Checkpointer.restore: there is no checkpoint of step 7 in {tmp_path / 'c'}; its "
        "checkpoints are of steps [1].",
    ):
        checkpointer.restore(model=model, optimizer=optimizer, step=7)


# -- the mode rule, non-finite metrics and the retention rule of a directory --


def _save_ranked(checkpointer, values, name="eval/loss"):
    """Saves steps 1, 2, ... with `name` = each value (None: no metrics); returns the kernels."""
    model, optimizer = _setup()
    kernels = {}
    for step, value in enumerate(values, start=1):
        model.hidden.kernel[...] = model.hidden.kernel[...] + 1.0
        kernels[step] = _kernel(model)
        metrics = None if value is None else {name: value}
        checkpointer.save(
            step, model=model, optimizer=optimizer, callbacks={}, trainer={}, metrics=metrics
        )
    checkpointer.wait()
    return kernels


def test_a_loss_keeps_the_lowest_by_default(tmp_path):
    # The old default, best_mode='max', kept the highest losses.
    checkpointer = Checkpointer(tmp_path, best_metric="eval/loss", max_to_keep=1, async_save=False)
    assert checkpointer.best_mode == "min"
    _save_ranked(checkpointer, [0.9, 0.3, 0.5, 0.4])
    assert checkpointer.all_steps() == [2, 4]
    assert checkpointer.best_step() == 2


def test_an_accuracy_keeps_the_highest_by_default(tmp_path):
    checkpointer = Checkpointer(tmp_path, best_metric="eval/top1_accuracy", max_to_keep=1)
    assert checkpointer.best_mode == "max"
    _save_ranked(checkpointer, [0.5, 0.9, 0.7], name="eval/top1_accuracy")
    assert (checkpointer.all_steps(), checkpointer.best_step()) == ([2, 3], 2)


def test_a_metric_whose_name_says_no_direction_asks_for_best_mode(tmp_path):
    with pytest.raises(ValueError, match=r"^Checkpointer: `best_mode`='auto' cannot tell"):
        Checkpointer(tmp_path, best_metric="eval/perplexity")
    assert Checkpointer(tmp_path, best_metric="eval/perplexity", best_mode="min").best_mode == "min"


@pytest.mark.parametrize(
    ("name", "values", "kept", "best"),
    [
        # min: the two lowest (2, 4) and the newest (6); the NaN step is not kept
        ("eval/loss", [0.5, 0.2, math.nan, 0.4, 0.6, 0.7], [2, 4, 6], 2),
        ("eval/accuracy", [0.5, 0.9, math.nan, 0.7, 0.1, 0.2], [2, 4, 6], 2),
        ("eval/loss", [0.5, math.inf, 0.4, 0.3, -math.inf, 0.6], [3, 4, 6], 4),
    ],
)
def test_a_non_finite_metric_ranks_worst_and_is_never_the_best(tmp_path, name, values, kept, best):
    checkpointer = Checkpointer(tmp_path, best_metric=name, max_to_keep=2, async_save=False)
    kernels = _save_ranked(checkpointer, values, name=name)
    assert checkpointer.all_steps() == kept
    assert checkpointer.best_step() == best
    fresh, fresh_optimizer = _setup(seed=1)
    checkpointer.restore(model=fresh, optimizer=fresh_optimizer, step=best)
    np.testing.assert_array_equal(_kernel(fresh), kernels[best])


def test_a_non_finite_newest_is_kept_as_the_newest_but_not_best(tmp_path):
    checkpointer = Checkpointer(tmp_path, best_metric="eval/loss", max_to_keep=1, async_save=False)
    _save_ranked(checkpointer, [math.nan])
    assert (checkpointer.all_steps(), checkpointer.best_step()) == ([1], None)
    _save_ranked(checkpointer, [math.nan, 0.5])
    assert (checkpointer.all_steps(), checkpointer.best_step()) == ([2], 2)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ({"best_metric": "eval/loss"}, {"best_metric": "eval/accuracy"}),
        ({"best_metric": "eval/loss"}, {"best_metric": "eval/loss", "best_mode": "max"}),
        ({"best_metric": "eval/loss"}, {}),
        ({}, {"best_metric": "eval/loss"}),
    ],
    ids=["another metric", "another mode", "no metric", "plain then a metric"],
)
def test_a_directory_kept_by_another_retention_rule_is_refused(tmp_path, first, second):
    checkpointer = Checkpointer(tmp_path, max_to_keep=2, async_save=False, **first)
    _save_ranked(checkpointer, [0.5, 0.3, 0.4, 0.6] if first else [None] * 4)
    kept = checkpointer.all_steps()
    checkpointer.close()
    with pytest.raises(CheckpointError, match=r"^Checkpointer: the checkpoints in") as error:
        Checkpointer(tmp_path, max_to_keep=2, async_save=False, **second)
    assert "Build it with the same best_metric and best_mode, or use a new directory" in str(
        error.value
    )
    assert Checkpointer(tmp_path, max_to_keep=2, **first).all_steps() == kept  # nothing lost


def test_the_same_rule_reopens_and_an_empty_directory_takes_a_new_one(tmp_path):
    Checkpointer(tmp_path / "a", best_metric="eval/loss")  # recorded, no checkpoint yet
    changed = Checkpointer(tmp_path / "a", best_metric="eval/accuracy", async_save=False)
    _save_ranked(changed, [0.5], name="eval/accuracy")
    record = json.loads((tmp_path / "a" / "flax_cyclic_checkpointer.json").read_text())
    assert (record["best_metric"], record["best_mode"]) == ("eval/accuracy", "max")
    again = Checkpointer(tmp_path / "a", best_metric="eval/accuracy", best_mode="max")
    assert again.all_steps() == [1]


def test_a_directory_of_an_earlier_release_is_judged_by_its_checkpoints(tmp_path):
    plain = Checkpointer(tmp_path / "plain", async_save=False)
    _save_ranked(plain, [None] * 3)
    ranked = Checkpointer(tmp_path / "ranked", best_metric="eval/loss", async_save=False)
    _save_ranked(ranked, [0.5, 0.4, None])
    for name in ("plain", "ranked"):
        (tmp_path / name / "flax_cyclic_checkpointer.json").unlink()
    with pytest.raises(CheckpointError, match=r"kept with best_metric=None \(no metrics saved"):
        Checkpointer(tmp_path / "plain", best_metric="eval/loss")
    with pytest.raises(CheckpointError, match=r"kept with the best by an evaluation metric"):
        Checkpointer(tmp_path / "ranked")
    with pytest.raises(CheckpointError, match=r"kept with the best by another metric"):
        Checkpointer(tmp_path / "ranked", best_metric="eval/accuracy")
    assert Checkpointer(tmp_path / "ranked", best_metric="eval/loss").all_steps() == [1, 2, 3]
    assert Checkpointer(tmp_path / "plain").all_steps() == [1, 2, 3]


# -- a damaged newest checkpoint is set aside and saved again --


def _remove_a_file(step_dir: pathlib.Path) -> None:
    """Removes the model item's metadata file, as a partial copy of the directory would."""
    (step_dir / "model" / "_METADATA").unlink()


@pytest.mark.parametrize("damage", [_damage, _remove_a_file], ids=["truncated", "removed"])
def test_a_damaged_newest_checkpoint_is_set_aside_and_its_step_saved_again(
    tmp_path, caplog, damage
):
    checkpointer = Checkpointer(tmp_path, async_save=False)
    kernels = _save_ranked(checkpointer, [None] * 3)
    damage(tmp_path / "3")
    reopened = Checkpointer(tmp_path, async_save=False)
    model, optimizer = _setup(seed=1)
    with caplog.at_level(logging.WARNING, logger="flax_cyclic"):
        assert reopened.restore(model=model, optimizer=optimizer).step == 2
    assert "moved aside to ['3.damaged-1']" in caplog.text
    assert (tmp_path / "3.damaged-1" / "model").is_dir()  # kept, not deleted
    assert reopened.all_steps() == [1, 2]
    np.testing.assert_array_equal(_kernel(model), kernels[2])
    # The run's save of step 3 is written, not skipped as existing (it returned False before).
    assert reopened.save(3, model=model, optimizer=optimizer, callbacks={}, trainer={})
    assert Checkpointer(tmp_path).all_steps() == [1, 2, 3]
    damage(tmp_path / "3")
    Checkpointer(tmp_path).restore(model=model, optimizer=optimizer)
    assert sorted(p.name for p in tmp_path.glob("3.*")) == ["3.damaged-1", "3.damaged-2"]


def test_a_damaged_step_asked_for_is_an_error_and_stays(tmp_path):
    checkpointer = Checkpointer(tmp_path, async_save=False)
    _save_ranked(checkpointer, [None] * 2)
    _damage(tmp_path / "2")
    model, optimizer = _setup()
    with pytest.raises(CheckpointError, match=r"^The checkpoint of step 2 in .* could not be"):
        Checkpointer(tmp_path).restore(model=model, optimizer=optimizer, step=2)
    assert (tmp_path / "2").is_dir()
    assert not list(tmp_path.glob("*.damaged-*"))


def test_a_trainer_resumes_before_a_damaged_checkpoint_and_saves_its_step_again(tmp_path):
    trainer, _ = _trainer(tmp_path)
    trainer.fit(DATA["list"], num_steps=8)
    _damage(tmp_path / "8")
    resumed, _ = _trainer(tmp_path)
    assert resumed.fit(DATA["list"], num_steps=8).resumed_from == 6
    resumed.checkpointer.wait()
    assert 8 in resumed.checkpointer.all_steps()
    assert (tmp_path / "8.damaged-1").is_dir()
    again, _ = _trainer(tmp_path)
    assert again.fit(DATA["list"], num_steps=8).resumed_from == 8


# -- saving a step once, the save cadence, and argument errors --


def test_saving_an_existing_step_writes_nothing_and_says_so(tmp_path):
    checkpointer = Checkpointer(tmp_path, best_metric="eval/loss", async_save=False)
    model, optimizer = _setup()
    save = dict(model=model, optimizer=optimizer, callbacks={}, trainer={})
    assert checkpointer.save(1, **save, metrics={"eval/loss": 0.5})
    assert not checkpointer.save(1, **save, metrics={"eval/loss": 0.5})
    assert checkpointer.save(2, **save)
    # The evaluation of step 2 comes after its save: best-k could not rank it.
    with pytest.raises(CheckpointError, match=r"^Checkpointer.save: the checkpoint of step 2"):
        checkpointer.save(2, **save, metrics={"eval/loss": 0.1})
    assert checkpointer.metrics(2) is None


@pytest.mark.parametrize(
    ("config", "calls", "expected"),
    [
        (dict(every_steps=3, every_epoch=False), [(0, {}), (3, {}), (4, {}), (6, {})], [3, 6]),
        (
            dict(every_epoch=True),
            [(4, {}), (5, {"epoch_end": True}), (6, {"evaluated": True})],
            [5],
        ),
        (
            dict(every_epoch=False, best_metric="eval/loss"),
            [(2, {"evaluated": True}), (3, {"epoch_end": True}), (4, {})],
            [2],
        ),
        (dict(every_epoch=False), [(1, {"epoch_end": True}), (2, {"evaluated": True})], []),
    ],
)
def test_should_save_is_the_one_cadence_rule(tmp_path, config, calls, expected):
    checkpointer = Checkpointer(tmp_path, **config)
    assert [step for step, flags in calls if checkpointer.should_save(step, **flags)] == expected


@pytest.mark.parametrize(
    ("kwargs", "error", "start"),
    [
        ({"async_save": "False"}, TypeError, "Checkpointer: `async_save` must be True or False"),
        ({"every_epoch": "no"}, TypeError, "Checkpointer: `every_epoch` must be True or False"),
        ({"best_mode": "lowest"}, ValueError, "Checkpointer: `best_mode` must be one of 'auto'"),
    ],
)
def test_flags_and_modes_of_the_wrong_kind_are_refused(tmp_path, kwargs, error, start):
    with pytest.raises(error, match="^" + re.escape(start)):
        Checkpointer(tmp_path, **kwargs)


@pytest.mark.parametrize("value", [np.ones(3), "0.5", None, True])
def test_save_refuses_a_metric_that_is_not_a_real_scalar(tmp_path, value):
    checkpointer = Checkpointer(tmp_path, best_metric="eval/loss", async_save=False)
    model, optimizer = _setup()
    with pytest.raises(TypeError, match=r"^Checkpointer.save: `metrics` must map metric names"):
        checkpointer.save(
            1, model=model, optimizer=optimizer, callbacks={}, trainer={},
            metrics={"eval/loss": value},
        )  # fmt: skip
    assert checkpointer.all_steps() == []


def test_a_checkpointer_never_used_exits_quietly(tmp_path):
    code = f"from flax_cyclic import Checkpointer; Checkpointer({str(tmp_path)!r})"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0
    assert "Traceback" not in result.stderr, result.stderr[-2000:]


def test_extra_state_round_trips_bitwise(tmp_path):
    model = MLP(nnx.Rngs(0), 8)
    optimizer = nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)
    rngs = nnx.Rngs(dropout=7)
    rngs.dropout()  # a used stream: the count moves
    metrics = nnx.MultiMetric(loss=nnx.metrics.Average("loss"))
    metrics.update(loss=np.float32(0.25))
    table = {"ema": np.arange(4, dtype=np.float32)}
    checkpointer = Checkpointer(tmp_path, async_save=False)
    checkpointer.save(
        3,
        model=model,
        optimizer=optimizer,
        callbacks={},
        trainer={},
        extra={"rngs": rngs, "metrics": metrics, "table": table},
    )
    expected_key = np.asarray(jax.random.key_data(rngs.dropout.key[...]))
    rngs.dropout(), metrics.update(loss=np.float32(9.0))  # moved on after the save
    restored = checkpointer.restore(
        model=model,
        optimizer=optimizer,
        extra={"rngs": rngs, "metrics": metrics, "table": {"ema": np.zeros(4, np.float32)}},
    )
    assert int(rngs.dropout.count[...]) == 1
    np.testing.assert_array_equal(
        np.asarray(jax.random.key_data(rngs.dropout.key[...])), expected_key
    )
    assert float(metrics.compute()["loss"]) == 0.25
    np.testing.assert_array_equal(np.asarray(restored.extra["table"]["ema"]), table["ema"])
    plain = Checkpointer(tmp_path / "plain", async_save=False)
    plain.save(1, model=model, optimizer=optimizer, callbacks={}, trainer={})
    with raises_exactly(
        CheckpointError,
        f"The checkpoint at step 1 in {tmp_path / 'plain'} holds no extra state, but restore's "
        "extra= asks for ['rngs'] (for a Trainer: its rngs= argument). Restore without "
        "extra=, or from a checkpoint saved with it.",
    ):
        plain.restore(model=model, optimizer=optimizer, extra={"rngs": rngs})


# -- saves in flight, the step rule, dtypes, callbacks' JSON states and extra state --------------


def _saved_names(directory: pathlib.Path) -> list[str]:
    """What the checkpoint directory holds besides its retention record."""
    return sorted(p.name for p in directory.iterdir() if p.name != "flax_cyclic_checkpointer.json")


def test_best_step_counts_a_save_still_being_written(tmp_path):
    checkpointer = Checkpointer(tmp_path, best_metric="eval/loss", max_to_keep=2)  # async
    model, optimizer = _setup()
    kernels = {}
    for step, loss in enumerate([0.5, 0.4, 0.1], start=1):  # the best is the last saved
        model.hidden.kernel[...] = model.hidden.kernel[...] + 1.0
        kernels[step] = _kernel(model)
        checkpointer.save(
            step, model=model, optimizer=optimizer, callbacks={}, trainer={},
            metrics={"eval/loss": loss},
        )  # fmt: skip
    at_once = (
        checkpointer.best_step(),
        checkpointer.all_steps(),
        checkpointer.latest_step(),
        checkpointer.metrics(3),
    )
    checkpointer.wait()
    after = (
        checkpointer.best_step(),
        checkpointer.all_steps(),
        checkpointer.latest_step(),
        checkpointer.metrics(3),
    )
    assert at_once == after == (3, [2, 3], 3, {"eval/loss": 0.1})
    fresh, fresh_optimizer = _setup(seed=1)
    assert checkpointer.restore(model=fresh, optimizer=fresh_optimizer, step=3).step == 3
    np.testing.assert_array_equal(_kernel(fresh), kernels[3])


def test_a_restore_right_after_a_save_reads_that_save_and_sets_nothing_aside(tmp_path):
    # It used to take the save in flight for a damaged checkpoint: moved aside, step 1 restored.
    checkpointer = Checkpointer(tmp_path)  # async
    model, optimizer = _setup()
    kernels = {}
    for step in (1, 2):
        model.hidden.kernel[...] = model.hidden.kernel[...] + 1.0
        kernels[step] = _kernel(model)
        checkpointer.save(step, model=model, optimizer=optimizer, callbacks={}, trainer={})
    fresh, fresh_optimizer = _setup(seed=1)
    assert checkpointer.restore(model=fresh, optimizer=fresh_optimizer).step == 2
    np.testing.assert_array_equal(_kernel(fresh), kernels[2])
    assert _saved_names(tmp_path) == ["1", "2"]


@pytest.mark.parametrize(
    ("step", "error", "got"),
    [
        (2.0, TypeError, "must be an integer, got step=2.0 (float)"),
        (np.float32(2), TypeError, "must be an integer, got step=np.float32(2.0) (float32)"),
        ("2", TypeError, "must be an integer, got step='2' (str)"),
        (True, TypeError, "must be an integer, got step=True (bool)"),
        (-1, ValueError, "must be an integer >= 0, got step=-1 (int)"),
    ],
)
def test_save_checks_the_step_as_restore_does(tmp_path, step, error, got):
    checkpointer = Checkpointer(tmp_path, async_save=False)
    model, optimizer = _setup()
    with raises_exactly(
        error, f"Checkpointer.save: `step` {got}. The number of train updates completed, e.g. "
        "step=100.",
    ):  # fmt: skip
        checkpointer.save(step, model=model, optimizer=optimizer, callbacks={}, trainer={})
    with raises_exactly(
        error, f"Checkpointer.restore: `step` {got}. One of Checkpointer.all_steps(), or None "
        "for the newest.",
    ):  # fmt: skip
        checkpointer.restore(model=model, optimizer=optimizer, step=step)
    assert _saved_names(tmp_path) == []
    assert checkpointer.all_steps() == []


def test_save_and_restore_take_numpy_integer_steps(tmp_path):
    checkpointer = Checkpointer(tmp_path, async_save=False)
    model, optimizer = _setup()
    assert checkpointer.save(
        np.int64(2), model=model, optimizer=optimizer, callbacks={}, trainer={}
    )
    assert _saved_names(tmp_path) == ["2"]
    restored = checkpointer.restore(model=model, optimizer=optimizer, step=np.int32(2))
    assert restored.step == 2
    assert type(restored.step) is int


def test_restoring_extra_state_into_another_dtype_is_refused(tmp_path):
    # It used to cast: 123456789 came back from an int64 as inf in a float16 target.
    checkpointer = Checkpointer(tmp_path, async_save=False)
    model, optimizer = _setup()
    table = {"count": np.array([123456789], np.int64), "total": jax.numpy.int32(123456789)}
    checkpointer.save(
        1, model=model, optimizer=optimizer, callbacks={}, trainer={}, extra={"table": table}
    )
    narrow = {"count": np.zeros(1, np.float16), "total": jax.numpy.zeros((), jax.numpy.float16)}
    with raises_exactly(
        CheckpointError,
        f"The checkpoint at step 1 in {tmp_path} holds other extra state than extra= "
        "describes: extra leaves with other dtypes (saved -> target): table/count int64 -> "
        "float16, table/total int32 -> float16. Pass extra= with targets of the structure it "
        "was saved with. A dtype is never cast: restore into the saved dtypes, then cast.",
    ):
        checkpointer.restore(model=model, optimizer=optimizer, extra={"table": narrow})
    same = {"count": np.zeros(1, np.int64), "total": jax.numpy.zeros((), jax.numpy.int32)}
    restored = checkpointer.restore(model=model, optimizer=optimizer, extra={"table": same})
    assert int(restored.extra["table"]["count"][0]) == 123456789
    assert int(restored.extra["table"]["total"]) == 123456789


def test_restoring_a_model_into_another_dtype_is_refused(tmp_path):
    checkpointer = Checkpointer(tmp_path, async_save=False)
    model, optimizer = _setup()
    checkpointer.save(1, model=model, optimizer=optimizer, callbacks={}, trainer={})
    half, half_optimizer = _setup(seed=1)
    half.hidden.kernel.set_value(half.hidden.kernel.get_value().astype(jax.numpy.bfloat16))
    with raises_exactly(
        CheckpointError,
        f"The checkpoint at step 1 in {tmp_path} was saved from a different model or "
        "optimizer: model leaves with other dtypes (saved -> target): hidden/kernel float32 -> "
        "bfloat16. Restore with the model and optimizer it was made with, or use a new "
        "checkpoint directory. A dtype is never cast: restore into the saved dtypes, then cast.",
    ):
        checkpointer.restore(model=half, optimizer=half_optimizer)


def test_numpy_and_jax_scalars_in_a_callback_state_are_saved_as_python_numbers(tmp_path):
    state = {
        "count": np.int64(7),
        "mean": np.float32(0.1),
        "seen": jax.numpy.float32(2.5),
        "half": jax.numpy.bfloat16(1.5),
        "flag": np.bool_(True),
        "traced": jax.numpy.array(False),
        "zero_d": np.array(3.5),
        "pair": (1, np.int32(2)),
        "best": math.inf,  # EarlyStopping's initial best: Python's json writes and reads it
        "nested": {"history": [np.float64(1.25), None, "x"]},
    }
    checkpointer = Checkpointer(tmp_path)  # async
    model, optimizer = _setup()
    checkpointer.save(
        1, model=model, optimizer=optimizer, callbacks={"Counter": state}, trainer={"step": 1}
    )
    restored = checkpointer.restore(model=model, optimizer=optimizer).callbacks["Counter"]
    assert restored == {
        "count": 7,
        "mean": float(np.float32(0.1)),
        "seen": 2.5,
        "half": 1.5,
        "flag": True,
        "traced": False,
        "zero_d": 3.5,
        "pair": [1, 2],
        "best": math.inf,
        "nested": {"history": [1.25, None, "x"]},
    }
    assert [type(restored[key]) for key in ("count", "mean", "flag", "zero_d")] == [
        int, float, bool, float,
    ]  # fmt: skip
    assert np.float32(restored["mean"]) == state["mean"]  # bitwise: float32 -> float -> float32


class _Holding(Callback):
    """A callback whose state holds `value` under 'last'."""

    def __init__(self, value):
        self.value = value

    @property
    def state_key(self):
        return "Holding"

    def state_dict(self):
        return {"window": {"last": self.value}}


@pytest.mark.parametrize(
    ("value", "what"),
    [
        (np.ones(3, np.float32), "a value of type numpy.ndarray (shape (3,), dtype float32)"),
        (jax.numpy.ones((2, 2)), "a value of type jax.Array (shape (2, 2), dtype float32)"),
        (object(), "a value of type object"),
        (1 + 2j, "a value of type complex"),
    ],
    ids=["numpy array", "jax array", "object", "complex"],
)
def test_a_callback_state_json_cannot_hold_names_the_callback_and_writes_nothing(
    tmp_path, value, what
):
    trainer, _ = _trainer(tmp_path, extra=[_Holding(value)])
    with raises_exactly(
        TypeError,
        "Checkpointer.save: the state_dict() of the callback with state_key 'Holding' holds "
        f"{what} at ['window']['last'], which JSON cannot hold exactly; return Python "
        "numbers/str/lists/dicts from state_dict (e.g. float(x), int(n), array.tolist()). "
        f"Nothing was written to {tmp_path}.",
    ):
        trainer.fit(DATA["list"], num_steps=4)
    assert _saved_names(tmp_path) == []  # no step directory, no *.orbax-checkpoint-tmp
    fixed, _ = _trainer(tmp_path, extra=[_Holding([1.0, 2.0])])
    assert fixed.fit(DATA["list"], num_steps=4).resumed_from is None
    assert _saved_names(tmp_path) == ["4"]
    again, _ = _trainer(tmp_path, extra=[_Holding([1.0, 2.0])])
    assert again.fit(DATA["list"], num_steps=6).resumed_from == 4


def test_a_non_string_key_in_a_callback_state_is_refused_before_writing(tmp_path):
    # JSON would write the key 1 as "1": the state would come back with another key.
    checkpointer = Checkpointer(tmp_path)
    model, optimizer = _setup()
    with raises_exactly(
        TypeError,
        "Checkpointer.save: the state_dict() of the callback with state_key 'Table' holds the "
        "key 1 of type int (JSON keys are strings) at ['by_epoch'], which JSON cannot hold "
        "exactly; return Python numbers/str/lists/dicts from state_dict (e.g. float(x), "
        f"int(n), array.tolist()). Nothing was written to {tmp_path}.",
    ):
        checkpointer.save(
            1, model=model, optimizer=optimizer, callbacks={"Table": {"by_epoch": {1: 0.5}}},
            trainer={},
        )  # fmt: skip
    with pytest.raises(TypeError, match=r"^Checkpointer.save: `trainer` holds a value of type"):
        checkpointer.save(
            1, model=model, optimizer=optimizer, callbacks={}, trainer={"seen": np.arange(2)}
        )
    checkpointer.wait()
    assert _saved_names(tmp_path) == []
    assert checkpointer.save(1, model=model, optimizer=optimizer, callbacks={}, trainer={})
    assert checkpointer.restore(model=model, optimizer=optimizer).step == 1


def test_restore_without_extra_of_a_checkpoint_with_extra_is_an_error_unless_skipped(tmp_path):
    # It used to drop the saved extra state silently.
    checkpointer = Checkpointer(tmp_path, async_save=False)
    model, optimizer = _setup()
    rngs = nnx.Rngs(dropout=3)
    checkpointer.save(
        2, model=model, optimizer=optimizer, callbacks={}, trainer={}, extra={"rngs": rngs}
    )
    with raises_exactly(
        CheckpointError,
        f"The checkpoint at step 2 in {tmp_path} holds extra state ['rngs'] (for a Trainer: "
        "its rngs= argument), but restore was given no extra=. Pass extra= with targets of "
        "the same structure to restore it, or skip_extra=True to leave it unread.",
    ):
        checkpointer.restore(model=model, optimizer=optimizer)
    restored = checkpointer.restore(model=model, optimizer=optimizer, skip_extra=True)
    assert (restored.step, restored.extra) == (2, {})
    with raises_exactly(
        ValueError,
        "Checkpointer.restore: skip_extra=True leaves the saved extra state unread, but extra= "
        "asks for ['rngs']; pass one of them.",
    ):
        checkpointer.restore(
            model=model, optimizer=optimizer, extra={"rngs": rngs}, skip_extra=True
        )
    with pytest.raises(TypeError, match=r"^Checkpointer.restore: `skip_extra` must be True or"):
        checkpointer.restore(model=model, optimizer=optimizer, skip_extra="yes")


def _noisy_trainer(directory, rngs):
    model = NoisyNet(nnx.Rngs(0), own_dropout_rngs=True)  # trains with or without rngs=
    optimizer = nnx.Optimizer(model, optax.sgd(0.01), wrt=nnx.Param)
    return Trainer(model, optimizer, rngs=rngs, checkpointer=Checkpointer(directory))


def test_a_trainer_resuming_with_or_without_rngs_unlike_its_checkpoint_is_told_so(tmp_path):
    _noisy_trainer(tmp_path / "with", nnx.Rngs(dropout=1)).fit(DATA["list"], num_steps=2)
    with pytest.raises(
        CheckpointError, match=r"holds extra state \['rngs'\] \(for a Trainer: its rngs="
    ):
        _noisy_trainer(tmp_path / "with", None).fit(DATA["list"], num_steps=4)
    _noisy_trainer(tmp_path / "without", None).fit(DATA["list"], num_steps=2)
    with raises_exactly(
        CheckpointError,
        f"The checkpoint at step 2 in {tmp_path / 'without'} holds no extra state, but "
        "restore's extra= asks for ['rngs'] (for a Trainer: its rngs= argument). Restore "
        "without extra=, or from a checkpoint saved with it.",
    ):
        _noisy_trainer(tmp_path / "without", nnx.Rngs(dropout=1)).fit(DATA["list"], num_steps=4)


# -- A training state as a pytree: state= ------------------------------------------------------


def _optax_state(seed: int = 0, tx=None):
    params = {"w": jax.random.normal(jax.random.key(seed), (8, 3)), "b": jax.numpy.zeros(3)}
    tx = tx or optax.inject_hyperparams(optax.adam)(learning_rate=0.01)
    return params, tx.init(params)


def test_a_pytree_state_round_trips_with_best_k_and_its_json_items(tmp_path):
    checkpointer = Checkpointer(tmp_path, best_metric="eval/loss", max_to_keep=1, async_save=True)
    for step, loss in [(1, 0.5), (2, 0.2), (3, 0.9)]:
        state = _optax_state(step)
        checkpointer.save(step, state=state, trainer={"step": step}, metrics={"eval/loss": loss})
    assert checkpointer.best_step() == 2
    assert checkpointer.all_steps() == [2, 3]  # the best, and the newest
    restored = checkpointer.restore(state=_optax_state(), step=2)
    assert (restored.step, dict(restored.trainer), dict(restored.callbacks)) == (2, {"step": 2}, {})
    expected = _optax_state(2)
    assert jax.tree.structure(restored.state) == jax.tree.structure(expected)
    for got, want in zip(jax.tree.leaves(restored.state), jax.tree.leaves(expected), strict=True):
        np.testing.assert_array_equal(got, want)


def test_a_pytree_checkpoint_and_an_nnx_checkpoint_are_not_restored_the_other_way(tmp_path):
    model = MLP(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)
    pytree, nnx_dir = Checkpointer(tmp_path / "pytree"), Checkpointer(tmp_path / "nnx")
    pytree.save(1, state=_optax_state())
    nnx_dir.save(1, model=model, optimizer=optimizer)
    with pytest.raises(CheckpointError, match=r"was saved with state= \(a pytree"):
        pytree.restore(model=model, optimizer=optimizer)
    with pytest.raises(CheckpointError, match=r"was saved from an NNX model and optimizer"):
        nnx_dir.restore(state=_optax_state())


def test_a_pytree_of_another_structure_is_refused_naming_the_leaves(tmp_path):
    checkpointer = Checkpointer(tmp_path)
    checkpointer.save(1, state=_optax_state())
    other = _optax_state(tx=optax.inject_hyperparams(optax.sgd)(learning_rate=0.01))
    with pytest.raises(CheckpointError, match=r"a state of another structure: state leaves"):
        checkpointer.restore(state=other)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, r"one of the two; got model=None, optimizer=None, state=None"),
        ({"state": {"w": np.ones(2)}, "model": MLP(nnx.Rngs(0))}, r"one of the two"),
        ({"model": MLP(nnx.Rngs(0))}, r"got model=MLP, optimizer=None"),
        ({"state": {"w": np.ones(2), "name": "mlp"}}, r"holds a str at \['name'\]"),
        ({"state": {}}, r"state= holds no arrays"),
    ],
)
def test_a_training_state_given_in_neither_form_or_both_is_refused(tmp_path, kwargs, message):
    checkpointer = Checkpointer(tmp_path)
    with pytest.raises(TypeError, match=message):
        checkpointer.save(1, **kwargs)
    with pytest.raises(TypeError, match=message):
        checkpointer.restore(**kwargs)
    assert checkpointer.all_steps() == []
