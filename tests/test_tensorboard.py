"""Metrics through CLU into TensorBoard: event files, a TensorBoard server, resume continuity."""

from __future__ import annotations

import errno
import io
import json
import os
import pathlib
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import jax
import numpy as np
import optax
import pytest
from flax import nnx
from helpers import host_lrs, tensorboard_series
from rich.console import Console

from flax_cyclic import (
    CallbackList,
    CyclicLR,
    LRSchedulerCallback,
    MetricsLogger,
    ProgressBar,
    Trainer,
    create_writer,
)
from flax_cyclic.steps import classification_train_step

WORKER = pathlib.Path(__file__).with_name("checkpoint_worker.py")
SCHEDULE = dict(base_lr=0.01, max_lr=0.1, step_size_up=4, step_size_down=6, mode="triangular2")
STEPS = 24


def _batches(count: int = 8, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(count, 16, 8)).astype(np.float32)
    return [(xb, np.digitize(xb.sum(1), [-1.5, 1.5]).astype(np.int32)) for xb in x]


def _train(logdir, *, callbacks=(), progress=False):
    model = nnx.Sequential(
        nnx.Linear(8, 16, rngs=nnx.Rngs(0)), jax.nn.relu, nnx.Linear(16, 3, rngs=nnx.Rngs(1))
    )
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.0, momentum=0.9)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    writer = create_writer(logdir)
    scheduler = CyclicLR(**SCHEDULE, cycle_momentum=True)
    trainer = Trainer(
        model,
        optimizer,
        callbacks=[LRSchedulerCallback(scheduler, writer=writer), *callbacks],
        writer=writer,
        log_every_steps=6,
        progress=progress,
    )
    trainer.fit(_batches(), num_steps=STEPS, eval_data=_batches(2, seed=1))
    writer.close()


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tensorboard")
    _train(directory)
    return directory


def test_event_files_hold_the_scheduler_values_at_every_step(logdir):
    series = tensorboard_series(logdir)
    expected = [lr[0] for lr in host_lrs(CyclicLR(**SCHEDULE), STEPS)]
    steps, values = zip(*series["learning_rate"], strict=True)
    assert list(steps) == list(range(STEPS))
    np.testing.assert_allclose(values, expected, rtol=1e-7)  # float32 in the event files
    momentum = dict(series["momentum"])
    assert momentum[0] == pytest.approx(0.9)
    assert momentum[4] == pytest.approx(0.8)
    cycles = dict(series["lr_cycle"])
    assert (cycles[9], cycles[10]) == (1, 2)
    assert dict(series["lr_cycle_position"])[5] == pytest.approx(0.5)


def test_event_files_hold_train_and_eval_metrics_and_the_plan(logdir):
    series = tensorboard_series(logdir)
    assert [step for step, _ in series["train/loss"]] == [5, 11, 17, 23]
    assert [step for step, _ in series["train/accuracy"]] == [5, 11, 17, 23]
    assert all(value > 0 for _, value in series["steps_per_sec"])
    assert [step for step, _ in series["eval/accuracy"]] == [7, 15, 23]
    assert [step for step, _ in series["lr_schedule"]] == [0]  # the image, once
    assert (logdir / "lr_schedule.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


@pytest.mark.slow
def test_a_real_tensorboard_server_serves_the_learning_rate(logdir):
    port = _free_port()
    server = subprocess.Popen(
        [
            *(sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir)),
            *("--host", "127.0.0.1", "--port", str(port), "--load_fast", "false"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            try:
                tags = _get_json(f"{base}/data/plugin/scalars/tags")
                if tags.get(".", {}).get("learning_rate"):
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            assert time.monotonic() < deadline, "TensorBoard did not answer within 90 s"
            assert server.poll() is None, "TensorBoard exited"
            time.sleep(0.5)
        rows = _get_json(f"{base}/data/plugin/scalars/scalars?run=.&tag=learning_rate")
        expected = [lr[0] for lr in host_lrs(CyclicLR(**SCHEDULE), STEPS)]
        assert [step for _, step, _ in rows] == list(range(STEPS))
        np.testing.assert_allclose([value for _, _, value in rows], expected, rtol=1e-7)
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.slow
def test_a_killed_and_resumed_run_has_one_value_per_step(tmp_path):
    def worker():
        return subprocess.Popen(
            [
                sys.executable,
                str(WORKER),
                str(tmp_path),
                "20",
                "5",
                "--tensorboard",
                "--sleep",
                "0.05",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    process = worker()
    lines = iter(process.stdout)
    next(line for line in lines if line.startswith("step 5"))
    checkpoint = tmp_path / "checkpoints" / "5"
    deadline = time.monotonic() + 120
    while not checkpoint.exists():  # the async save at step 5 has committed
        assert time.monotonic() < deadline
        time.sleep(0.02)
    next(line for line in lines if line.startswith("step 8"))  # 5..8 logged after it
    process.kill()
    process.wait()
    process.stdout.close()
    output, _ = worker().communicate(timeout=300)
    assert "Resumed from the checkpoint at step 5" in output, output[-2000:]
    series = tensorboard_series(tmp_path / "tensorboard")
    steps = [step for step, _ in series["learning_rate"]]
    assert steps == list(range(20))  # no step twice, none missing: no zig-zag
    assert [step for step, _ in series["lr_schedule"]] == [0]


def test_create_writer_without_the_extra_names_it():
    code = (
        "import sys; sys.modules['clu'] = None\n"  # as if the extra were not installed
        "import flax_cyclic\n"
        "try:\n"
        "    flax_cyclic.create_writer('unused')\n"
        "except ImportError as error:\n"
        "    print(error)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert "pip install 'flax_cyclic[tensorboard]'" in result.stdout


def test_progress_bar_shows_step_loss_lr_and_cycle(tmp_path):
    output = io.StringIO()
    console = Console(file=output, force_terminal=True, width=160)
    _train(tmp_path, callbacks=[ProgressBar(console=console, every_steps=4)])
    text = output.getvalue()
    assert f"{STEPS}/{STEPS}" in text
    for shown in ("loss ", "lr 0.0325", "cycle 3"):  # the final refresh: step 24
        assert shown in text


def test_progress_bar_is_off_when_not_a_terminal(tmp_path):
    output = io.StringIO()
    bar = ProgressBar(console=Console(file=output, force_terminal=False))
    assert not bar.enabled
    _train(tmp_path, callbacks=[bar])
    assert output.getvalue() == ""


def test_a_writer_over_existing_steps_says_it_will_not_rewrite_them(logdir, caplog):
    with caplog.at_level("WARNING", logger="flax_cyclic"):
        writer = create_writer(logdir)
    writer.write_scalars(3, {"learning_rate": 1.0})  # step 3 exists: dropped
    writer.write_scalars(STEPS, {"learning_rate": 1.0})  # a new step: written
    writer.close()
    assert f"already holds steps up to {STEPS - 1}" in caplog.text
    steps = [step for step, _ in tensorboard_series(logdir)["learning_rate"]]
    assert steps == [*range(STEPS), STEPS]


# -- a log directory that cannot be one: a clear error at create_writer time ---------------------


def _refused(error: type[Exception], message: str, logdir) -> None:
    with pytest.raises(error, match=re.escape(message)) as caught:
        create_writer(logdir)
    assert str(caught.value) == message


def test_create_writer_refuses_a_file_as_logdir(tmp_path):
    path = tmp_path / "run.txt"
    path.write_text("not a log directory")
    message = (
        f"create_writer: `logdir` must be a directory, got logdir={str(path)!r}, which is a "
        "file. Pass a directory path; it is created if missing."
    )
    _refused(NotADirectoryError, message, path)
    _refused(NotADirectoryError, message, str(path))
    assert path.read_text() == "not a log directory"


def test_create_writer_refuses_a_logdir_under_a_file(tmp_path):
    # Fails for every user, root included: no directory can be made under a file.
    path = tmp_path / "run.txt"
    path.write_text("")
    logdir = path / "tensorboard" / "train"
    message = (
        f"create_writer: `logdir` must be a directory, got logdir={str(logdir)!r}, which lies "
        f"under the file {str(path)!r}. Pass a directory path; it is created if missing."
    )
    _refused(NotADirectoryError, message, logdir)


UNWRITABLE = (
    "create_writer: `logdir` must be a writable directory, got logdir={!r}, which this process "
    "cannot write to. Pass a directory it can write to, or change the permissions."
)


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0,
    reason="root writes to a directory whatever its permission bits",
)
def test_create_writer_refuses_a_directory_it_cannot_write(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        _refused(PermissionError, UNWRITABLE.format(str(locked)), locked)
        _refused(
            PermissionError,
            "create_writer: `logdir` must be a directory this process can create, got "
            f"logdir={str(locked / 'run')!r}, but {str(locked)!r} is not writable. Pass a "
            "directory path under a writable directory, or change the permissions.",
            locked / "run",
        )
    finally:
        locked.chmod(0o700)


def test_create_writer_refuses_a_directory_the_os_reports_unwritable(tmp_path, monkeypatch):
    # The same check as above, exercised for root too: os.access is what it asks.
    locked = tmp_path / "locked"
    locked.mkdir()
    access = os.access
    monkeypatch.setattr(
        os, "access", lambda path, mode, **kw: path != str(locked) and access(path, mode, **kw)
    )
    _refused(PermissionError, UNWRITABLE.format(str(locked)), locked)


def test_create_writer_names_a_logdir_it_cannot_create(tmp_path):
    logdir = tmp_path / ("x" * 300)  # longer than a file name may be
    _refused(
        OSError,
        f"create_writer: `logdir` must be a directory this process can create, got "
        f"logdir={str(logdir)!r}: {os.strerror(errno.ENAMETOOLONG)}. Pass a directory path; "
        "it is created if missing.",
        logdir,
    )


def test_create_writer_creates_a_missing_logdir_and_writes_there(tmp_path):
    logdir = tmp_path / "runs" / "first"
    writer = create_writer(logdir, asynchronous=False)
    assert logdir.is_dir()
    writer.write_scalars(0, {"learning_rate": 0.5})
    writer.close()
    assert tensorboard_series(logdir)["learning_rate"] == [(0, 0.5)]


def test_create_writer_that_only_logs_does_not_touch_logdir(tmp_path):
    path = tmp_path / "run.txt"
    path.write_text("")
    writer = create_writer(path / "sub", just_logging=True)  # no event files: nothing to check
    writer.write_scalars(0, {"learning_rate": 0.5})
    writer.close()
    assert path.read_text() == ""


def _hand_written_run(logdir, scheduler, steps):
    """A hand-written loop (no Trainer) logging through the LR callback and a MetricsLogger."""
    model = nnx.Sequential(
        nnx.Linear(8, 16, rngs=nnx.Rngs(0)), jax.nn.relu, nnx.Linear(16, 3, rngs=nnx.Rngs(1))
    )
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.0, momentum=0.9)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    writer = create_writer(logdir)
    callbacks = [
        LRSchedulerCallback(scheduler, writer=writer),
        MetricsLogger(writer, every_steps=1),
    ]
    loop = CallbackList(callbacks, model=model, optimizer=optimizer)
    step_fn = nnx.jit(classification_train_step)
    loop.on_train_begin()
    batches = _batches()
    for _ in range(steps):
        loop.on_step_begin()
        loop.on_step_end(step_fn(model, optimizer, batches[loop.step % len(batches)]))
    loop.on_train_end()
    writer.close()
    return loop


def test_a_run_resumed_with_last_epoch_continues_the_curves(tmp_path):
    first = _hand_written_run(tmp_path, CyclicLR(**SCHEDULE), 13)
    assert first.step == 13
    # A new process: the same command with the scheduler built at step 13, into the same logdir.
    second = _hand_written_run(tmp_path, CyclicLR(**SCHEDULE, last_epoch=13), 17)
    assert second.step == 30  # the loop learnt its starting step from the scheduler
    series = tensorboard_series(tmp_path)
    assert [step for step, _ in series["learning_rate"]] == list(range(30))
    expected = [lrs[0] for lrs in host_lrs(CyclicLR(**SCHEDULE), 30)]
    np.testing.assert_allclose([v for _, v in series["learning_rate"]], expected, rtol=1e-6)
    # The loop's other tags are on the same index, continuous too.
    assert [step for step, _ in series["train/loss"]] == list(range(30))
    # The configuration and the plan belong to the run that started at step 0: written once.
    assert [step for step, _ in series["lr_schedule"]] == [0]
    assert [step for step, _ in series["_hparams_/session_start_info"]] == [0]
