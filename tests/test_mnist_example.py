"""examples/mnist: the data search and checks, the training run, resume, events, find_lr.

A tiny dataset in the MNIST IDX format is written by the tests themselves; the download path
is served by a real HTTP server on localhost. The end-to-end test on real Fashion-MNIST runs
where Debian's dataset-fashion-mnist is installed (`.ci/run` installs it).
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import http.server
import os
import pathlib
import re
import subprocess
import sys
import threading

import numpy as np
import pytest

from flax_cyclic import read_scalars

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "mnist"
sys.path.insert(0, str(EXAMPLE))

import input_pipeline  # noqa: E402
import train  # noqa: E402
from configs import default  # noqa: E402

DEBIAN = pathlib.Path("/usr/share/datasets/fashion-mnist")


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    header = magic.to_bytes(4, "big")  # 0x0000 08 nn: unsigned bytes, nn dimensions
    assert header[3] == array.ndim
    dims = b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + dims + array.astype(np.uint8).tobytes()


def write_dataset(directory: pathlib.Path, train: int = 256, test: int = 100, gz: bool = True):
    """A learnable tiny dataset: the label is the quadrant-pattern drawn into the image."""
    rng = np.random.default_rng(0)
    directory.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", train), ("test", test)):
        labels = rng.integers(0, 10, size=count).astype(np.uint8)
        images = rng.integers(0, 60, size=(count, 28, 28)).astype(np.uint8)
        for i, label in enumerate(labels):
            images[i, 2 * label : 2 * label + 6, 4:24] = 255
        images_name, labels_name, _ = input_pipeline.FILES[split]
        for name, data in (
            (images_name, idx_bytes(images, input_pipeline.IMAGE_MAGIC)),
            (labels_name, idx_bytes(labels, input_pipeline.LABEL_MAGIC)),
        ):
            if gz:
                (directory / f"{name}.gz").write_bytes(gzip.compress(data, mtime=0))
            else:
                (directory / name).write_bytes(data)
    return directory


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    monkeypatch.setenv("FLAX_CYCLIC_DATA", str(tmp_path / "cache"))
    return write_dataset(tmp_path / "data")


def tiny_config(data_dir, **overrides):
    config = default.get_config()
    config.dataset = "mnist"
    config.data_dir = str(data_dir)
    config.batch_size = 32
    config.eval_batch_size = 50
    config.num_train_steps = 12
    config.step_size_up = 3
    config.checkpoint_every_steps = 4
    config.log_every_steps = 1
    config.progress = False
    config.lr_find_steps = 20
    config.update(overrides)
    return config


# -- reading and checking the files -------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False])
def test_load_split_reads_what_was_written(tmp_path, gz):
    directory = write_dataset(tmp_path, train=64, test=10, gz=gz)
    split = input_pipeline.load_split(directory, "train")
    assert split.images.shape == (64, 28, 28)
    assert split.images.dtype == np.uint8
    assert split.labels.dtype == np.int32
    for image, label in zip(split.images, split.labels, strict=True):
        assert (image[2 * label : 2 * label + 6, 4:24] == 255).all()


def test_batches_are_normalized_shuffled_per_epoch_and_deterministic(tiny):
    split = input_pipeline.load_split(tiny, "train")
    epochs = input_pipeline.train_batches(split, batch_size=32, seed=3, subset=100)
    first = list(epochs(0))
    assert len(first) == 3  # 100 examples: 3 full batches, the rest dropped
    assert first[0]["image"].shape == (32, 28, 28, 1)
    assert first[0]["image"].dtype == np.float32
    assert first[0]["image"].min() >= 0.0
    assert first[0]["image"].max() == 1.0
    again = list(input_pipeline.train_batches(split, 32, 3, 100)(0))
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a["label"], b["label"])
    second = list(epochs(1))
    assert any((a["label"] != b["label"]).any() for a, b in zip(first, second, strict=True))
    seen = np.concatenate([b["label"] for b in first])
    assert set(seen) <= set(split.labels[:100])


def _damage(path: pathlib.Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncate-gz":
        path.write_bytes(data[: len(data) // 2])
    elif how == "flip-gz":
        path.write_bytes(data[:40] + bytes([data[40] ^ 0xFF]) + data[41:])


@pytest.mark.parametrize(
    ("how", "fragment"),
    [("truncate-gz", "is damaged"), ("flip-gz", "is damaged")],
)
def test_a_damaged_gzip_is_a_clear_error(tiny, how, fragment):
    path = tiny / "train-images-idx3-ubyte.gz"
    _damage(path, how)
    with pytest.raises(input_pipeline.DataError, match=fragment) as caught:
        input_pipeline.load_split(tiny, "train")
    assert str(path) in str(caught.value)


def test_truncated_or_foreign_idx_files_are_clear_errors(tmp_path):
    directory = write_dataset(tmp_path, train=20, test=5, gz=False)
    images = directory / "train-images-idx3-ubyte"
    data = images.read_bytes()
    images.write_bytes(data[:-100])
    with pytest.raises(input_pipeline.DataError, match=r"truncated or damaged: .* needs 15696"):
        input_pipeline.load_split(directory, "train")
    images.write_bytes(b"\x00\x00\x08\x01" + data[4:])
    with pytest.raises(input_pipeline.DataError, match="magic number 2051"):
        input_pipeline.load_split(directory, "train")
    images.write_bytes(data[:3])
    with pytest.raises(input_pipeline.DataError, match="not even an IDX header"):
        input_pipeline.load_split(directory, "train")
    images.write_bytes(data)
    labels = directory / "train-labels-idx1-ubyte"
    label_data = labels.read_bytes()
    labels.write_bytes(label_data[:8] + bytes([12]) + label_data[9:])
    with pytest.raises(input_pipeline.DataError, match=r"label 12, outside 0\.\.9"):
        input_pipeline.load_split(directory, "train")
    labels.write_bytes(idx_bytes(np.zeros(19, np.uint8), input_pipeline.LABEL_MAGIC))
    with pytest.raises(input_pipeline.DataError, match="20 train images but 19 labels"):
        input_pipeline.load_split(directory, "train")


# -- finding the data -----------------------------------------------------------------------------


@contextlib.contextmanager
def serve(directory: pathlib.Path):
    """A real HTTP server for `directory` on a free localhost port."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def _info(mirrors, files_dir, debian_dir=None, corrupt=()):
    sha = {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(files_dir.glob("*.gz"))
    }
    for name in corrupt:
        sha[name] = "0" * 64
    return input_pipeline.DatasetInfo(
        name="mnist",
        mirrors=tuple(mirrors),
        sha256=sha,
        debian_dir=None if debian_dir is None else str(debian_dir),
        debian_package="dataset-test" if debian_dir else None,
    )


def test_search_order_data_dir_then_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FLAX_CYCLIC_DATA", str(tmp_path / "cache"))
    cached = write_dataset(tmp_path / "cache" / "mnist", train=8, test=4)
    given = write_dataset(tmp_path / "given", train=8, test=4)
    assert input_pipeline.locate("mnist", given, download=False) == given
    assert input_pipeline.locate("mnist", tmp_path / "empty", download=False) == cached
    assert input_pipeline.locate("mnist", None, download=False) == cached


def test_download_checks_the_sha256_and_fills_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FLAX_CYCLIC_DATA", str(tmp_path / "cache"))
    served = write_dataset(tmp_path / "mirror", train=16, test=8)
    with serve(served) as url:
        monkeypatch.setitem(
            input_pipeline.DATASETS, "mnist", _info(["http://127.0.0.1:9/", url], served)
        )
        found = input_pipeline.locate("mnist", timeout=5)
    assert found == tmp_path / "cache" / "mnist"
    assert sorted(p.name for p in found.iterdir()) == sorted(p.name for p in served.iterdir())
    assert len(input_pipeline.load_split(found, "train")) == 16


def test_a_download_with_the_wrong_checksum_is_refused_and_not_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("FLAX_CYCLIC_DATA", str(tmp_path / "cache"))
    served = write_dataset(tmp_path / "mirror", train=16, test=8)
    with serve(served) as url:
        info = _info([url], served, corrupt=["t10k-images-idx3-ubyte.gz"])
        monkeypatch.setitem(input_pipeline.DATASETS, "mnist", info)
        with pytest.raises(input_pipeline.DataError, match="SHA-256 mismatch") as caught:
            input_pipeline.locate("mnist", timeout=5)
    assert "t10k-images-idx3-ubyte.gz" in str(caught.value)
    cache = tmp_path / "cache" / "mnist"
    assert not (cache / "t10k-images-idx3-ubyte.gz").exists()
    assert [p.name for p in cache.iterdir() if not p.name.endswith(".gz")] == []  # no partials


def test_offline_falls_back_to_the_debian_package(tmp_path, monkeypatch):
    monkeypatch.setenv("FLAX_CYCLIC_DATA", str(tmp_path / "cache"))
    debian = write_dataset(tmp_path / "usr-share", train=8, test=4)
    info = _info(["http://127.0.0.1:9/"], debian, debian_dir=debian)
    monkeypatch.setitem(input_pipeline.DATASETS, "mnist", info)
    assert input_pipeline.locate("mnist", timeout=2) == debian


def test_no_data_anywhere_lists_every_option(tmp_path, monkeypatch):
    monkeypatch.setenv("FLAX_CYCLIC_DATA", str(tmp_path / "cache"))
    nowhere = tmp_path / "nowhere"
    info = _info(["http://127.0.0.1:9/"], write_dataset(tmp_path / "x", 4, 2), nowhere)
    monkeypatch.setitem(input_pipeline.DATASETS, "mnist", info)
    with pytest.raises(input_pipeline.DataError) as caught:
        input_pipeline.locate("mnist", tmp_path / "given", timeout=2)
    message = str(caught.value)
    for fragment in (
        f"looked in {tmp_path / 'given'}, {tmp_path / 'cache' / 'mnist'}, {nowhere}",
        "download failed",
        "--config.data_dir=DIR",
        "checked against their SHA-256",
        "apt-get install dataset-test",
    ):
        assert fragment in message
    with pytest.raises(ValueError, match="dataset must be one of"):
        input_pipeline.locate("cifar10")


# -- training -----------------------------------------------------------------------------------


def test_train_checkpoint_resume_and_events(tiny, tmp_path):
    workdir = tmp_path / "work"
    first = train.train_and_evaluate(tiny_config(tiny, num_train_steps=8), str(workdir))
    assert first["steps"] == 8
    assert first["resumed_from"] is None
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()) == [
        "4",
        "8",
    ]
    second = train.train_and_evaluate(tiny_config(tiny), str(workdir))
    assert second["resumed_from"] == 8
    assert second["steps"] == 12
    assert 0.0 <= second["test_accuracy"] <= 1.0
    series = read_scalars(workdir / "tensorboard")
    assert {"learning_rate", "lr_cycle", "train/loss", "eval/accuracy", "steps_per_sec"} <= set(
        series
    )
    steps = [step for step, _ in series["learning_rate"]]
    assert steps == list(range(1, 13))  # once per update across the resume, at steps 1..12
    expected = train.create_scheduler(tiny_config(tiny), 12)
    for step, value in series["learning_rate"]:
        expected.step(step - 1)  # logged at step s: the value update s - 1 applied
        assert value == pytest.approx(expected.get_last_lr()[0], rel=1e-6)
    # A finished run resumes to nothing and reports the same accuracy.
    third = train.train_and_evaluate(tiny_config(tiny), str(workdir))
    assert third["resumed_from"] == 12
    assert third["test_accuracy"] == second["test_accuracy"]


@pytest.mark.parametrize("schedule", ["onecycle", "constant"])
def test_the_other_schedules_train(tiny, tmp_path, schedule):
    results = train.train_and_evaluate(
        tiny_config(tiny, schedule=schedule, num_train_steps=6), str(tmp_path / "work")
    )
    assert results["steps"] == 6


def test_weight_averaging_reports_the_average_beside_the_model(tiny, tmp_path):
    # Cycles of 6 steps: of the 12 updates, the 7th ends a cycle (the 13th would end the next).
    config = tiny_config(tiny, weight_averaging=True)
    results = train.train_and_evaluate(config, str(tmp_path / "work"))
    assert results["avg_snapshots"] == 1
    assert 0.0 <= results["avg_test_accuracy"] <= 1.0
    again = train.train_and_evaluate(config, str(tmp_path / "work"))  # resumes at its end
    assert again["resumed_from"] == 12
    assert again["avg_snapshots"] == 1
    assert again["avg_test_accuracy"] == results["avg_test_accuracy"]
    off = train.train_and_evaluate(tiny_config(tiny, num_train_steps=4), str(tmp_path / "off"))
    assert (off["avg_test_accuracy"], off["avg_snapshots"]) == (None, None)
    with pytest.raises(ValueError, match=r"schedule='constant' has no cycles"):
        train.train_and_evaluate(
            tiny_config(tiny, weight_averaging=True, schedule="constant"), str(tmp_path / "c")
        )


def test_bad_schedule_and_batch_size(tiny, tmp_path):
    with pytest.raises(ValueError, match=r"config\.schedule must be one of"):
        train.train_and_evaluate(tiny_config(tiny, schedule="cosine"), str(tmp_path / "a"))
    with pytest.raises(ValueError, match=r"config\.batch_size=512 is larger"):
        train.train_and_evaluate(tiny_config(tiny, batch_size=512), str(tmp_path / "b"))


def test_find_lr_writes_the_plot(tiny, tmp_path):
    result = train.find_lr(tiny_config(tiny, lr_find_start=1e-4, lr_find_end=10.0), str(tmp_path))
    assert (tmp_path / "lr_find.png").is_file()
    assert 1 < len(result.lrs) <= 20


def _main(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(EXAMPLE / "main.py"), *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})},
        check=False,
    )


@pytest.mark.slow
def test_main_trains_resumes_and_finds_lr(tiny, tmp_path):
    flags = [
        f"--workdir={tmp_path / 'work'}",
        f"--config={EXAMPLE / 'configs' / 'default.py'}",
        "--config.dataset=mnist",
        f"--config.data_dir={tiny}",
        "--config.batch_size=32",
        "--config.num_train_steps=10",
        "--config.checkpoint_every_steps=5",
        "--config.progress=False",
    ]
    done = _main(*flags)
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(r"Test accuracy after 10 steps: [0-9.]+", done.stdout)
    assert f"tensorboard --logdir {tmp_path / 'work' / 'tensorboard'}" in done.stdout
    again = _main(*flags[:-1], "--config.num_train_steps=15", "--config.progress=False")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Resumed from the checkpoint at step 10." in again.stdout
    assert "Test accuracy after 15 steps" in again.stdout
    found = _main(*flags, "--config.find_lr=True", "--config.lr_find_steps=15")
    assert found.returncode == 0, found.stderr[-3000:]
    assert re.search(r"Suggested: --config.base_lr=\S+ --config.max_lr=\S+", found.stdout)
    assert (tmp_path / "work" / "lr_find.png").is_file()
    missing = _main(
        *flags,
        f"--config.data_dir={tmp_path / 'none'}",
        env={"FLAX_CYCLIC_DATA": str(tmp_path / "c")},
    )
    assert missing.returncode != 0
    assert "No mnist data" in missing.stderr


@pytest.mark.slow
@pytest.mark.skipif(not DEBIAN.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_real_fashion_mnist_end_to_end(tmp_path):
    done = _main(
        f"--workdir={tmp_path / 'work'}",
        f"--config={EXAMPLE / 'configs' / 'default.py'}",
        "--config.train_subset=6400",
        "--config.num_epochs=2",
        "--config.step_size_up=50",
        "--config.checkpoint_every_steps=50",
        "--config.progress=False",
        env={"FLAX_CYCLIC_DATA": str(tmp_path / "cache")},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    accuracy = float(re.search(r"Test accuracy after 100 steps: ([0-9.]+)", done.stdout)[1])
    assert 0.70 < accuracy < 0.95  # 2 epochs of 6,400 images; chance is 0.1


def _job(workdir, flags, processes=2, kill_after_checkpoint=None):
    """Runs main.py as a jax.distributed job of `processes` processes on 127.0.0.1.

    With `kill_after_checkpoint=N`, process 1 is killed (SIGKILL) once checkpoint N exists.
    Returns [(returncode, stdout, stderr)] per process; all processes are gone afterwards.
    """
    import socket
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    logs = pathlib.Path(workdir).with_name(f"{pathlib.Path(workdir).name}-logs")
    logs.mkdir(parents=True, exist_ok=True)
    # Output goes to files: a full pipe would block a process, and with it the whole job.
    stack = contextlib.ExitStack()
    files = [
        tuple(stack.enter_context(open(logs / f"{i}.{kind}", "w+")) for kind in ("out", "err"))  # noqa: SIM115 (closed by the ExitStack)
        for i in range(processes)
    ]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(EXAMPLE / "main.py"),
                f"--workdir={workdir}",
                *flags,
                f"--num_processes={processes}",
                f"--process_id={i}",
                f"--coordinator_address=127.0.0.1:{port}",
                "--heartbeat_timeout_seconds=10",
            ],
            stdout=out,
            stderr=err,
            text=True,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        )
        for i, (out, err) in enumerate(files)
    ]
    try:
        if kill_after_checkpoint is not None:
            deadline = time.monotonic() + 240
            marker = pathlib.Path(workdir) / "checkpoints" / str(kill_after_checkpoint)
            while not marker.is_dir() and time.monotonic() < deadline:
                time.sleep(0.2)
            procs[1].kill()
        results = []
        for proc, (out, err) in zip(procs, files, strict=True):
            proc.wait(timeout=240)
            out.seek(0)
            err.seek(0)
            results.append((proc.returncode, out.read(), err.read()))
        return results
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        stack.close()


@pytest.mark.slow
def test_the_example_on_two_processes_and_a_dead_peer(tiny, tmp_path):
    flags = [
        f"--config={EXAMPLE / 'configs' / 'default.py'}",
        "--config.dataset=mnist",
        f"--config.data_dir={tiny}",
        "--config.batch_size=32",
        "--config.eval_batch_size=50",
        "--config.checkpoint_every_steps=20",
        "--config.progress=False",
        "--verbosity=-1",
    ]
    # Two processes of one device each train exactly like one process with two devices.
    job = _job(tmp_path / "two", [*flags, "--config.num_train_steps=10"])
    assert [code for code, _, _ in job] == [0, 0], job[0][2][-2000:] + job[1][2][-2000:]
    line = re.search(r"Test accuracy after 10 steps: .*", job[0][1])[0]
    assert "Test accuracy" not in job[1][1]  # process 0 reports, the others do not
    single = _main(
        f"--workdir={tmp_path / 'one'}",
        *flags,
        "--config.num_train_steps=10",
        "--num_cpu_devices=2",
    )
    assert single.returncode == 0, single.stderr[-2000:]
    assert line in single.stdout

    # A peer dies: the survivor gives up, either after the heartbeat timeout (10 s here) or
    # sooner, when a collective with the dead peer fails (a JAX runtime error), whichever it
    # meets first; the whole job resumes from the last complete collective checkpoint.
    long = [*flags, "--config.num_train_steps=5000"]
    died = _job(tmp_path / "dead", long, kill_after_checkpoint=40)
    assert died[1][0] != 0
    assert died[0][0] != 0
    survivor = died[0][2]
    assert any(sign in survivor for sign in ("heartbeat", "JaxRuntimeError", "XlaRuntimeError")), (
        survivor[-3000:]
    )
    complete = sorted(
        int(p.name) for p in (tmp_path / "dead" / "checkpoints").iterdir() if p.name.isdigit()
    )
    assert complete[-1] >= 40
    again = _job(tmp_path / "dead", [*flags, f"--config.num_train_steps={complete[-1] + 20}"])
    assert [code for code, _, _ in again] == [0, 0], again[0][2][-2000:]
    assert f"Resumed from the checkpoint at step {complete[-1]}." in again[0][1]


def test_each_process_takes_its_rows_of_every_batch(monkeypatch):
    # The row split of a multi-process job, without the job: process 1 of 2.
    monkeypatch.setattr(train.jax, "process_count", lambda: 2)
    monkeypatch.setattr(train.jax, "process_index", lambda: 1)
    batches = [{"image": np.arange(8)[:, None], "label": np.arange(8)}]
    (mine,) = train._process_rows(batches)
    np.testing.assert_array_equal(mine["label"], [4, 5, 6, 7])
    with pytest.raises(ValueError, match="A batch of 7 examples cannot be split over 2 processes"):
        train._process_rows([{"image": np.zeros((7, 1)), "label": np.zeros(7)}])


@pytest.mark.slow
@pytest.mark.skipif(not DEBIAN.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_fault_campaign_resumes_bitwise_after_random_kills(tmp_path):
    # examples/mnist/fault_campaign.py on a shorter run: main.py killed (SIGKILL) at 3 random
    # moments, one of them during an async checkpoint save, and resumed each time; the final
    # parameters, optimizer state and event series are bitwise those of an uninterrupted run.
    import fault_campaign

    lines: list[str] = []
    campaign = fault_campaign.run_campaign(
        tmp_path / "campaign",
        kills=3,
        seed=1,
        data_dir=DEBIAN,
        overrides={
            "train_subset": 2560,  # 20 steps per epoch
            "num_train_steps": 40,
            "step_size_up": 10,
            "checkpoint_every_steps": 5,
        },
        log=lines.append,
    )
    report = "\n".join([*lines, *campaign.problems, campaign.summary()])
    assert campaign.problems == [], report
    assert campaign.ok, report
    assert campaign.resumed == 3, report
    assert [k.kind for k in campaign.kills].count("save") == 1, report
    assert campaign.during_save >= 1, report  # it left a half-written checkpoint behind
    assert re.match(
        r"fault campaign: 3/3 kills resumed to a bitwise-identical run \([123] during an "
        r"async save\)",
        campaign.summary(),
    )


# -- the range test's file and --config.lr_from ----------------------------------------------------


def test_find_lr_saves_the_result_next_to_the_plot(tiny, tmp_path):
    from flax_cyclic import LRFinderResult

    result = train.find_lr(tiny_config(tiny), str(tmp_path))
    assert LRFinderResult.load(tmp_path / "lr_find.json") == result


# A range test whose smoothed loss is lowest at lr=0.04: max_lr 0.04, base_lr 0.004.
RANGE_TEST = dict(
    lrs=(0.001, 0.01, 0.04, 1.0),
    losses=(2.3, 1.5, 0.9, 9.0),
    smoothed_losses=(2.3, 1.5, 0.9, 3.6),
    stop_reason="diverged",
    smoothing=0.0,
    diverge_threshold=4.0,
)


def _saved_range_test(path, **changes):
    from flax_cyclic import LRFinderResult

    LRFinderResult(**{**RANGE_TEST, **changes}).save(path)
    return path


def test_describe_lr_find_prints_every_suggestion_and_the_flags(tmp_path):
    from flax_cyclic import LRFinderResult

    text = train.describe_lr_find(LRFinderResult(**RANGE_TEST), str(tmp_path))
    assert text.splitlines() == [
        "LR range test: 4 steps, stopped: diverged.",
        "    steepest: 0.04",
        "      valley: 0.01",
        "     minimum: 0.04",
        "  minimum/10: 0.004",
        "Suggested: --config.base_lr=0.004 --config.max_lr=0.04 (OneCycleLR: --config.max_lr=0.04)",
        f"Or train with them: --config.lr_from={tmp_path / 'lr_find.json'}",
        f"Plot: {tmp_path / 'lr_find.png'}",
        f"Result: {tmp_path / 'lr_find.json'}",
    ]


def test_lr_from_trains_cyclic_with_the_recommended_pair(tiny, tmp_path):
    path = _saved_range_test(tmp_path / "lr_find.json")
    config = tiny_config(tiny, lr_from=str(path), num_train_steps=4)
    results = train.train_and_evaluate(config, str(tmp_path / "work"))
    assert results["lr_from"] == {"path": str(path), "base_lr": 0.004, "max_lr": 0.04}
    assert train.describe_taken(results["lr_from"]) == "base_lr=0.004, max_lr=0.04"
    assert (config.base_lr, config.max_lr) == (0.01, 0.1)  # the given config is unchanged
    series = read_scalars(tmp_path / "work" / "tensorboard")
    # CyclicLR from 0.004 to 0.04 in step_size_up=3 steps.
    assert [value for _, value in series["learning_rate"]] == pytest.approx(
        [0.004, 0.016, 0.028, 0.04], rel=1e-6
    )


def test_lr_from_gives_onecycle_its_max_lr(tiny, tmp_path):
    path = _saved_range_test(tmp_path / "lr_find.json")
    config, taken = train.apply_lr_from(tiny_config(tiny, lr_from=str(path), schedule="onecycle"))
    assert taken == {"path": str(path), "max_lr": 0.04}
    assert (config.base_lr, config.max_lr) == (0.01, 0.04)  # OneCycleLR reads max_lr only
    assert train.apply_lr_from(tiny_config(tiny)) == (tiny_config(tiny), None)


def _message(error, config) -> str:
    with pytest.raises(error) as caught:
        train.apply_lr_from(config)
    return str(caught.value)


def test_lr_from_problems_are_clear_errors(tiny, tmp_path):
    missing = tmp_path / "none.json"
    assert _message(FileNotFoundError, tiny_config(tiny, lr_from=str(missing))) == (
        f"config.lr_from={str(missing)!r}: there is no file {missing}. Run the LR range test "
        "first: --config.find_lr=True writes WORKDIR/lr_find.json."
    )
    path = _saved_range_test(tmp_path / "lr_find.json")
    constant = tiny_config(tiny, lr_from=str(path), schedule="constant")
    assert _message(ValueError, constant) == (
        f"config.lr_from={str(path)!r} sets base_lr and max_lr, which schedule='constant' does "
        "not use. Use --config.schedule=cyclic or onecycle, or drop lr_from and set "
        "--config.learning_rate (e.g. the valley or minimum/10 of the range test)."
    )
    broken = tmp_path / "broken.json"
    broken.write_text("PNG")
    assert _message(ValueError, tiny_config(tiny, lr_from=str(broken))) == (
        f"config.lr_from={str(broken)!r}: LRFinderResult.load: {str(broken)!r} is not JSON "
        "(Expecting value: line 1 column 1 (char 0)); pass a file written by "
        "LRFinderResult.save, e.g. lr_find.json."
    )
    flat = _saved_range_test(tmp_path / "flat.json", smoothed_losses=(1.0, 2.0, 3.0, 4.0))
    assert _message(ValueError, tiny_config(tiny, lr_from=str(flat))) == (
        f"config.lr_from={str(flat)!r}: LRFinderResult: the smoothed loss never fell "
        "(stop_reason='diverged', 4 steps from lr=0.001), so there is no range to recommend. "
        "Start lower (start_lr), run more steps, or check the model and the data."
    )
