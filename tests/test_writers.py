"""create_writer: CLU event files, a TensorBoard server, log directories it refuses, resumes."""

from __future__ import annotations

import errno
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

import numpy as np
import pytest
from helpers import (
    LOGGED_SCHEDULE,
    LOGGED_STEPS,
    host_lrs,
    logged_run,
    tensorboard_series,
)

from flax_cyclic import (
    CyclicLR,
    create_writer,
)

WORKER = pathlib.Path(__file__).parent / "workers" / "checkpoint_worker.py"


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tensorboard")
    logged_run(directory)
    return directory


def test_event_files_hold_the_scheduler_values_at_every_step(logdir):
    series = tensorboard_series(logdir)
    expected = [lr[0] for lr in host_lrs(CyclicLR(**LOGGED_SCHEDULE), LOGGED_STEPS)]
    steps, values = zip(*series["learning_rate"], strict=True)
    assert list(steps) == list(range(LOGGED_STEPS))
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
        expected = [lr[0] for lr in host_lrs(CyclicLR(**LOGGED_SCHEDULE), LOGGED_STEPS)]
        assert [step for _, step, _ in rows] == list(range(LOGGED_STEPS))
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


def test_a_writer_over_existing_steps_says_it_will_not_rewrite_them(logdir, caplog):
    with caplog.at_level("WARNING", logger="flax_cyclic"):
        writer = create_writer(logdir)
    writer.write_scalars(3, {"learning_rate": 1.0})  # step 3 exists: dropped
    writer.write_scalars(LOGGED_STEPS, {"learning_rate": 1.0})  # a new step: written
    writer.close()
    assert f"already holds steps up to {LOGGED_STEPS - 1}" in caplog.text
    steps = [step for step, _ in tensorboard_series(logdir)["learning_rate"]]
    assert steps == [*range(LOGGED_STEPS), LOGGED_STEPS]


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
