"""create_writer: CLU event files, a TensorBoard server, log directories it refuses, restarts."""

from __future__ import annotations

import contextlib
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
import urllib.parse
import urllib.request

import numpy as np
import optax
import pytest
from flax import nnx
from helpers import (
    LOGGED_SCHEDULE,
    LOGGED_STEPS,
    host_lrs,
    logged_run,
    raises_exactly,
    tensorboard_steps,
    tiny_batches,
    tiny_mlp,
)
from test_callbacks_metrics_logger import feed_logger
from workers.writers_worker import loss as worker_loss
from workers.writers_worker import rate as worker_rate
from workers.writers_worker import two_writer_run

from flax_cyclic import (
    CyclicLR,
    LRSchedulerCallback,
    MetricsLogger,
    Trainer,
    create_writer,
    read_scalars,
)

WORKER = pathlib.Path(__file__).parent / "workers" / "checkpoint_worker.py"
# The restart markers, written beside either writer's event files.
BACKENDS = pytest.mark.parametrize("backend", ["clu", "tensorboard"])
WRITERS_WORKER = pathlib.Path(__file__).parent / "workers" / "writers_worker.py"


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tensorboard")
    logged_run(directory)
    return directory


def test_event_files_hold_the_scheduler_values_at_every_step(logdir):
    series = read_scalars(logdir)
    expected = [lr[0] for lr in host_lrs(CyclicLR(**LOGGED_SCHEDULE), LOGGED_STEPS)]
    steps, values = zip(*series["learning_rate"], strict=True)
    assert list(steps) == list(range(1, LOGGED_STEPS + 1))  # update i at step i + 1
    np.testing.assert_allclose(values, expected, rtol=1e-7)  # float32 in the event files
    momentum = dict(series["momentum"])
    assert momentum[1] == pytest.approx(0.9)
    assert momentum[5] == pytest.approx(0.8)
    cycles = dict(series["lr_cycle"])
    assert (cycles[10], cycles[11]) == (1, 2)
    assert dict(series["lr_cycle_position"])[6] == pytest.approx(0.5)


def test_event_files_hold_train_and_eval_metrics_and_the_plan(logdir):
    series = read_scalars(logdir)
    assert [step for step, _ in series["train/loss"]] == [6, 12, 18, 24]
    assert [step for step, _ in series["train/accuracy"]] == [6, 12, 18, 24]
    assert all(value > 0 for _, value in series["steps_per_sec"])
    assert [step for step, _ in series["eval/accuracy"]] == [8, 16, 24]  # epochs of 8 updates
    assert tensorboard_steps(logdir, "lr_schedule") == [0]  # the image, once
    assert (logdir / "lr_schedule.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


@contextlib.contextmanager
def tensorboard_server(logdir, *, ready_tag: str, run: str = "."):
    """A real `tensorboard --logdir` (its default data server) answering once `ready_tag` is
    served for `run`; yields a function `tag -> [(step, value)]` reading its scalars API."""
    port = _free_port()
    server = subprocess.Popen(
        [
            *(sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir)),
            *("--host", "127.0.0.1", "--port", str(port), "--reload_interval", "1"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}/data/plugin/scalars"

    def scalars(tag: str, of: str = run) -> list[tuple[int, float]]:
        query = urllib.parse.urlencode({"run": of, "tag": tag})
        return [(step, value) for _, step, value in _get_json(f"{base}/scalars?{query}")]

    scalars.url = f"http://127.0.0.1:{port}/data/plugin"  # type: ignore[attr-defined]

    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if _get_json(f"{base}/tags").get(run, {}).get(ready_tag):
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            assert time.monotonic() < deadline, "TensorBoard did not answer within 90 s"
            assert server.poll() is None, "TensorBoard exited"
            time.sleep(0.5)
        yield scalars
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.slow
def test_a_real_tensorboard_server_serves_the_learning_rate(logdir):
    with tensorboard_server(logdir, ready_tag="learning_rate") as scalars:
        rows = scalars("learning_rate")
    expected = [lr[0] for lr in host_lrs(CyclicLR(**LOGGED_SCHEDULE), LOGGED_STEPS)]
    assert [step for step, _ in rows] == list(range(1, LOGGED_STEPS + 1))
    np.testing.assert_allclose([value for _, value in rows], expected, rtol=1e-7)


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
    series = read_scalars(tmp_path / "tensorboard")
    steps = [step for step, _ in series["learning_rate"]]
    assert steps == list(range(1, 21))  # no step twice, none missing: no zig-zag
    assert tensorboard_steps(tmp_path / "tensorboard", "lr_schedule") == [0]


# -- what TensorBoard shows after a restart: the run that trained ---------------------------------


def _logged_loop(logdir, *, start: int, losses: dict[int, float], evaluate_at=()) -> None:
    """A hand-written CallbackList loop from step `start` logging through a MetricsLogger."""
    writer = create_writer(logdir)
    logger = MetricsLogger(writer, log_every_steps=1)
    feed_logger(logger, start=start, losses=losses, evaluate_at=evaluate_at)
    writer.close()


FIRST = {i: float(i) for i in range(10)}  # an earlier run: 10 updates, logged at steps 1..10
RESUMED = {i: 100.0 + i for i in range(4, 8)}  # from the checkpoint at step 4: other values
FRESH = {i: 200.0 + i for i in range(6)}  # a new run from step 0, 6 updates


@pytest.fixture(scope="module")
def restarted(tmp_path_factory):
    """Two log directories, each an earlier run and a restart: `resume/` resumed at step 4,
    `fresh/` a fresh run."""
    root = tmp_path_factory.mktemp("restarted")
    _logged_loop(root / "resume", start=0, losses=FIRST, evaluate_at=(3, 10))
    _logged_loop(root / "resume", start=4, losses=RESUMED)
    _logged_loop(root / "fresh", start=0, losses=FIRST, evaluate_at=(3, 10))
    _logged_loop(root / "fresh", start=0, losses=FRESH)
    return root


def _logged(losses) -> list[tuple[int, float]]:
    return [(i + 1, loss) for i, loss in losses.items()]


def test_a_resume_shows_the_earlier_run_up_to_its_checkpoint_then_the_resumed_run(restarted):
    series = read_scalars(restarted / "resume")
    assert series["train/loss"] == _logged(FIRST)[:4] + _logged(RESUMED)
    assert [step for step, _ in series["steps_per_sec"]] == list(range(1, 9))
    assert series["eval/loss"] == [(3, 3.0)]  # the evaluation at step 10 did not train


def test_a_fresh_run_in_a_used_log_directory_shows_nothing_of_the_earlier_run(restarted):
    series = read_scalars(restarted / "fresh")
    assert series["train/loss"] == _logged(FRESH)
    assert series["eval/loss"] == []


@pytest.mark.slow
def test_the_tensorboard_server_shows_the_run_that_trained(restarted):
    with tensorboard_server(restarted, ready_tag="train/loss", run="resume") as scalars:
        assert scalars("train/loss", "resume") == _logged(FIRST)[:4] + _logged(RESUMED)
        assert scalars("train/loss", "fresh") == _logged(FRESH)
        # TensorBoard's data server drops a tag's values from the step it is written again on.
        steps = [step for step, _ in scalars("steps_per_sec", "fresh")]
        assert steps == list(range(1, 7))


@BACKENDS
def test_a_run_s_marker_is_read_after_the_earlier_run_and_before_all_the_run_wrote(
    tmp_path, backend
):
    earlier = create_writer(tmp_path, asynchronous=False, backend=backend)
    earlier.start(0)
    earlier.write_scalars(1, {"loss": 1.0})
    earlier.close()
    # At once: in the same second.
    writer = create_writer(tmp_path, asynchronous=False, backend=backend)
    writer.write_scalars(0, {"eval/loss": 5.0})  # before its run starts, as a baseline
    writer.start(0)
    writer.write_scalars(1, {"loss": 2.0})
    writer.close()
    names = sorted(name for name in os.listdir(tmp_path) if "tfevents" in name)
    assert len(names) == 3  # the earlier run's file, the marker, the new run's file
    assert names[1] == names[2][: len(names[1])]  # the marker's name starts the new file's
    assert read_scalars(tmp_path) == {"eval/loss": [(0, 5.0)], "loss": [(1, 2.0)]}


@BACKENDS
def test_a_writer_started_again_after_it_wrote_begins_a_new_run(tmp_path, backend):
    writer = create_writer(tmp_path, asynchronous=False, backend=backend)
    writer.start(0)
    writer.write_scalars(1, {"loss": 1.0})
    writer.write_scalars(2, {"loss": 2.0})
    writer.start(1)  # e.g. a second fit from the checkpoint at step 1, in the same process
    writer.write_scalars(2, {"loss": 20.0})
    writer.close()
    assert read_scalars(tmp_path)["loss"] == [(1, 1.0), (2, 20.0)]


@BACKENDS
def test_a_first_run_writes_no_marker(tmp_path, backend):
    writer = create_writer(tmp_path, asynchronous=False, backend=backend)
    writer.start(0)
    writer.write_scalars(1, {"loss": 1.0})
    writer.close()
    assert len([name for name in os.listdir(tmp_path) if "tfevents" in name]) == 1


def test_a_writer_started_twice_before_writing_keeps_the_later_step(tmp_path):
    _logged_loop(tmp_path, start=0, losses=FIRST)
    writer = create_writer(tmp_path)
    writer.start(0)
    writer.start(4)  # e.g. a callback moved the loop to its scheduler's step
    writer.write_scalars(5, {"train/loss": 50.0})
    writer.close()
    assert read_scalars(tmp_path)["train/loss"] == [*_logged(FIRST)[:4], (5, 50.0)]


# -- a run's own values: never hidden, whichever of its writers wrote them -----------------------

EPOCH = 4  # updates per epoch of `_trained`


def _trained(logdir, *, num_steps: int, baseline: bool) -> float | None:
    """A Trainer run as the docs show it, with two writers of `logdir`: one for its
    LRSchedulerCallback, one for the Trainer (train metrics every 4 steps, an evaluation every
    epoch); with `baseline`, a `Trainer.evaluate()` before `fit`, whose loss it returns."""
    model = tiny_mlp(0, hidden=16, out_seed=1)
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.0, momentum=0.9)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    rates, metrics = create_writer(logdir), create_writer(logdir)
    callback = LRSchedulerCallback(CyclicLR(**LOGGED_SCHEDULE), writer=rates)
    trainer = Trainer(
        model, optimizer, callbacks=[callback], writer=metrics, log_every_steps=4, progress=False
    )
    eval_data = tiny_batches(16, 2, seed=1)
    loss = trainer.evaluate(eval_data)["loss"] if baseline else None
    trainer.fit(tiny_batches(16, EPOCH), num_steps=num_steps, eval_data=eval_data)
    rates.close()
    metrics.close()
    return loss


@pytest.fixture(scope="module")
def one_run(tmp_path_factory):
    """`two/`: a run with two writers; `baseline/`: an earlier run, then a run with two writers
    and a baseline evaluation before `fit` (its loss in `baseline/loss.txt`)."""
    root = tmp_path_factory.mktemp("one_run")
    _trained(root / "two", num_steps=8, baseline=False)
    _trained(root / "baseline", num_steps=12, baseline=True)
    loss = _trained(root / "baseline", num_steps=8, baseline=True)
    (root / "baseline" / "loss.txt").write_text(repr(loss))
    return root


def _lrs(steps: int) -> list[tuple[int, float]]:
    lrs = host_lrs(CyclicLR(**LOGGED_SCHEDULE), steps)
    return [(update + 1, float(np.float32(lrs[update][0]))) for update in range(steps)]


def test_two_writers_of_one_run_on_one_log_directory_keep_both_writers_values(one_run):
    series = read_scalars(one_run / "two")
    assert series["learning_rate"] == _lrs(8)  # the LR callback's writer
    assert [step for step, _ in series["train/loss"]] == [4, 8]  # the Trainer's
    assert [step for step, _ in series["eval/loss"]] == [4, 8]


def test_a_baseline_evaluation_before_fit_survives_the_run_s_start(one_run):
    series = read_scalars(one_run / "baseline")
    baseline = float(np.float32(float((one_run / "baseline" / "loss.txt").read_text())))
    assert series["eval/loss"][0] == (0, baseline)
    assert [step for step, _ in series["eval/loss"]] == [0, 4, 8]  # none of the earlier run's
    assert series["learning_rate"] == _lrs(8)
    assert [step for step, _ in series["train/loss"]] == [4, 8]


@pytest.mark.slow
def test_the_tensorboard_server_shows_both_writers_and_the_baseline(one_run):
    with tensorboard_server(one_run, ready_tag="learning_rate", run="two") as scalars:
        assert scalars("learning_rate", "two") == _lrs(8)
        assert [step for step, _ in scalars("train/loss", "two")] == [4, 8]
        assert scalars("learning_rate", "baseline") == _lrs(8)
        eval_loss = scalars("eval/loss", "baseline")
    assert [step for step, _ in eval_loss] == [0, 4, 8]  # the baseline, none of the earlier run's
    assert eval_loss == read_scalars(one_run / "baseline")["eval/loss"]


@pytest.fixture(scope="module")
def new_process(tmp_path_factory):
    """Earlier runs written here, in `fresh/` and `resume/`, then in a new process: a fresh run
    in `fresh/`, a run resumed from step 4 in `resume/` (both with two writers and a baseline
    evaluation)."""
    root = tmp_path_factory.mktemp("new_process")
    for name in ("fresh", "resume"):
        two_writer_run(root / name, start=0, steps=10, offset=0)
    command = [sys.executable, str(WRITERS_WORKER)]
    command += [str(root / "fresh"), "0", "6", "200", str(root / "resume"), "4", "4", "100"]
    subprocess.run(command, capture_output=True, text=True, timeout=300, check=True)
    return root


def _written(offset: int, updates) -> dict[str, list[tuple[int, float]]]:
    """The train/loss and learning_rate `two_writer_run(offset=offset)` writes for `updates`."""
    return {
        "train/loss": [(update + 1, worker_loss(offset, update)) for update in updates],
        "learning_rate": [(update + 1, worker_rate(offset, update)) for update in updates],
    }


@pytest.mark.slow
def test_a_fresh_run_in_a_new_process_hides_the_earlier_run_and_none_of_its_own(new_process):
    series = read_scalars(new_process / "fresh", ["train/loss", "learning_rate", "eval/loss"])
    assert series == {
        **_written(200, range(6)),
        "eval/loss": [(0, -200.0), (6, 200.5)],  # its baseline, and its evaluation at the end
    }


@pytest.mark.slow
def test_a_run_resumed_in_a_new_process_hides_the_earlier_run_after_its_step(new_process):
    series = read_scalars(new_process / "resume", ["train/loss", "learning_rate", "eval/loss"])
    earlier, resumed = _written(0, range(4)), _written(100, range(4, 8))
    assert series == {
        "train/loss": earlier["train/loss"] + resumed["train/loss"],
        "learning_rate": earlier["learning_rate"] + resumed["learning_rate"],
        # The earlier run's baseline at 0 (its evaluation at 10 is gone), the resumed run's.
        "eval/loss": [(0, -0.0), (4, -100.0), (8, 100.5)],
    }


def _run_code(code: str, *args: object) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
        cwd=pathlib.Path(__file__).parent,
    )


def test_create_writer_without_the_extra_names_it():
    code = (
        "import sys; sys.modules['tensorboard'] = None\n"  # as if the extra were not installed
        "import flax_cyclic\n"
        "for backend in ('auto', 'tensorboard'):\n"
        "    try:\n"
        "        flax_cyclic.create_writer('unused', backend=backend)\n"
        "    except ImportError as error:\n"
        "        print(error)\n"
    )
    lines = _run_code(code).stdout.splitlines()
    assert len(lines) == 2
    for line, backend in zip(lines, ("auto", "tensorboard"), strict=True):
        assert line == (
            f"create_writer(backend={backend!r}) needs TensorBoard. Install the extra: "
            "pip install 'flax_cyclic[tensorboard]' (TensorBoard)."
        )


def test_create_writer_for_clu_without_clu_names_its_extra_and_the_other_writer():
    code = (
        "import sys; sys.modules['clu'] = None\n"
        "import flax_cyclic\n"
        "try:\n"
        "    flax_cyclic.create_writer('unused', backend='clu')\n"
        "except ImportError as error:\n"
        "    print(error)\n"
        "print(flax_cyclic.create_writer(sys.argv[1]).backend)\n"  # auto: TensorBoard's
    )
    lines = _run_code(code, "unused").stdout.splitlines()
    assert lines == [
        "create_writer(backend='clu') needs CLU and TensorFlow. Install the extra: pip install "
        "'flax_cyclic[clu]' (CLU, TensorFlow, TensorBoard). Or pass backend='tensorboard', "
        "which needs no TensorFlow.",
        "tensorboard",
    ]


def test_create_writer_takes_clu_s_writer_where_tensorflow_is_installed(tmp_path):
    from clu import metric_writers

    writer = create_writer(tmp_path / "auto", asynchronous=False)
    assert writer.backend == "clu"
    assert isinstance(writer, metric_writers.MetricWriter)
    assert create_writer(tmp_path / "tb", backend="tensorboard").backend == "tensorboard"


def test_create_writer_refuses_an_unknown_backend(tmp_path):
    message = (
        "create_writer: `backend` must be one of 'auto', 'clu', 'tensorboard', got "
        "backend='tensorflow' (str)."
    )
    with raises_exactly(ValueError, message):
        create_writer(tmp_path, backend="tensorflow")
    assert not any(tmp_path.iterdir())


# A Trainer run with TensorFlow (and so CLU) unimportable: create_writer takes TensorBoard's
# writer; what TensorBoard shows and whether TensorFlow was imported come back as JSON.
WITHOUT_TENSORFLOW = """
import json, sys
sys.modules["tensorflow"] = None  # as if it were not installed: `import tensorflow` fails
from helpers import logged_run
from flax_cyclic import read_scalars
logged_run(sys.argv[1])
series = read_scalars(sys.argv[1])
imported = sorted(name for name in sys.modules if name.split(".")[0] in ("tensorflow", "clu"))
print(json.dumps({"series": series, "imported": [n for n in imported if sys.modules[n]]}))
"""


@pytest.fixture(scope="module")
def without_tensorflow(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("without_tensorflow")
    done = _run_code(WITHOUT_TENSORFLOW, logdir)
    return logdir, json.loads(done.stdout.splitlines()[-1]), done.stderr


def test_a_run_without_tensorflow_logs_the_lr_of_every_update(without_tensorflow, logdir):
    written, result, stderr = without_tensorflow
    assert result["imported"] == []  # neither TensorFlow nor CLU entered sys.modules
    assert "through TensorBoard's event writer (no TensorFlow)" in stderr
    series = {tag: [tuple(pair) for pair in pairs] for tag, pairs in result["series"].items()}
    expected = [lr[0] for lr in host_lrs(CyclicLR(**LOGGED_SCHEDULE), LOGGED_STEPS)]
    steps, values = zip(*series["learning_rate"], strict=True)
    assert list(steps) == list(range(1, LOGGED_STEPS + 1))
    np.testing.assert_allclose(values, expected, rtol=1e-7)
    # The same series, tags and steps as CLU's writer gave for the same run (module fixture).
    with_clu = read_scalars(logdir)
    assert series.keys() == with_clu.keys()
    for tag in ("learning_rate", "momentum", "lr_cycle", "lr_cycle_position", "eval/accuracy"):
        assert series[tag] == with_clu[tag], tag  # the same run: the same float32 values
    assert [s for s, _ in series["train/loss"]] == [s for s, _ in with_clu["train/loss"]]
    assert tensorboard_steps(written, "lr_schedule") == [0]  # the plan's image, once


@pytest.mark.slow
def test_the_tensorboard_server_shows_a_run_written_without_tensorflow(without_tensorflow):
    written, result, _ = without_tensorflow
    with tensorboard_server(written, ready_tag="learning_rate") as scalars:
        rows = scalars("learning_rate")
    assert rows == [tuple(pair) for pair in result["series"]["learning_rate"]]


# -- a log directory that cannot be one: a clear error at create_writer time ---------------------


def _refused(error: type[Exception], message: str, logdir) -> None:
    for backend in ("clu", "tensorboard"):  # checked before either writer is made
        with pytest.raises(error, match=re.escape(message)) as caught:
            create_writer(logdir, backend=backend)
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
    assert read_scalars(logdir)["learning_rate"] == [(0, 0.5)]


def test_create_writer_that_only_logs_does_not_touch_logdir(tmp_path):
    path = tmp_path / "run.txt"
    path.write_text("")
    writer = create_writer(path / "sub", just_logging=True)  # no event files: nothing to check
    writer.write_scalars(0, {"learning_rate": 0.5})
    writer.close()
    assert path.read_text() == ""
