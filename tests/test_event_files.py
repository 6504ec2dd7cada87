"""read_scalars: a run's logged series read back as TensorBoard shows them."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import optax
import pytest
from flax import nnx
from helpers import host_lrs, tiny_batches, tiny_mlp
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter

from flax_cyclic import CyclicLR, LRSchedulerCallback, Trainer, create_writer, read_scalars

SCHEDULE = dict(base_lr=0.01, max_lr=0.1, step_size_up=3, step_size_down=5, mode="triangular2")
STEPS = 12


def _train(logdir, *, num_steps: int = STEPS, **schedule) -> None:
    """A Trainer run logging to a CLU writer in `logdir`: the learning rate at every step, the
    train metrics every 4 steps, the plan image once."""
    model = tiny_mlp(0, hidden=16, out_seed=1)
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.0, momentum=0.9)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    writer = create_writer(logdir)
    scheduler = CyclicLR(**{**SCHEDULE, **schedule})
    callback = LRSchedulerCallback(scheduler, writer=writer)
    trainer = Trainer(
        model, optimizer, callbacks=[callback], writer=writer, log_every_steps=4, progress=False
    )
    trainer.fit(tiny_batches(16, 8), num_steps=num_steps)
    writer.close()


def _planned(steps: int, first: int = 0, **schedule) -> list[tuple[int, float]]:
    """(step, float32 learning rate) for updates `first` .. `steps - 1`, logged at update + 1."""
    lrs = host_lrs(CyclicLR(**{**SCHEDULE, **schedule}), steps)
    return [(update + 1, float(np.float32(lrs[update][0]))) for update in range(first, steps)]


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("run")
    _train(directory)
    return directory


def test_read_scalars_returns_the_learning_rate_of_every_update_exactly(logdir):
    series = read_scalars(logdir)
    assert series["learning_rate"] == _planned(STEPS)  # steps 1..12, the float32 of each
    assert [step for step, _ in series["train/loss"]] == [4, 8, 12]
    assert all(isinstance(value, float) for _, value in series["train/loss"])
    assert "lr_schedule" not in series  # an image, not a scalar
    assert (logdir / "lr_schedule.png").is_file()


def test_read_scalars_reads_the_tags_asked_for_in_their_order(logdir):
    series = read_scalars(logdir, tags=["train/loss", "learning_rate"])
    assert list(series) == ["train/loss", "learning_rate"]
    assert read_scalars(logdir, tags="learning_rate") == {"learning_rate": _planned(STEPS)}


@pytest.mark.parametrize("tag", ["learning_rat", "lr_schedule"])
def test_a_tag_without_a_scalar_series_is_named(logdir, tag):
    with pytest.raises(ValueError, match=r"^read_scalars: `tags` must name scalar tags") as error:
        read_scalars(logdir, tags=["learning_rate", tag])
    assert f"no scalar series for ['{tag}']" in str(error.value)
    assert "'learning_rate'" in str(error.value).split("scalar tags are")[1]


def test_the_older_reader_raises_key_error_on_a_clu_run(logdir):
    # What the docs say: CLU writes tensor summaries, which the older reader keeps apart.
    accumulator = event_accumulator.EventAccumulator(str(logdir))
    accumulator.Reload()
    with pytest.raises(KeyError):
        accumulator.Scalars("learning_rate")


def test_a_resumed_run_reads_back_its_own_values_after_its_start_and_none_of_the_old(
    tmp_path, caplog
):
    _train(tmp_path, num_steps=10)  # logged at steps 1..10
    # Another run continues after 6 updates: a scheduler at last_epoch=6 moves the loop, and
    # CallbackList.on_train_begin starts the writer there, to step 12 with another max_lr.
    _train(tmp_path, max_lr=0.05, last_epoch=6)
    caplog.clear()
    series = read_scalars(tmp_path)
    assert series["learning_rate"] == _planned(6) + _planned(STEPS, 6, max_lr=0.05)
    assert [step for step, _ in series["train/loss"]] == [4, 8, 12]
    # The purge is what the restart asks for: the reader's "TensorFlow restart" warning is not
    # shown.
    assert [r.getMessage() for r in caplog.records if r.name == "tensorboard"] == []


def test_event_files_written_without_clu_read_back(tmp_path):
    # PyTorch's SummaryWriter and TensorFlow 1 write `simple_value` scalars.
    writer = EventFileWriter(str(tmp_path))
    for step, value in [(1, 0.5), (2, 0.25)]:
        summary = summary_pb2.Summary(
            value=[summary_pb2.Summary.Value(tag="loss", simple_value=value)]
        )
        writer.add_event(event_pb2.Event(step=step, wall_time=0.0, summary=summary))
    writer.close()
    assert read_scalars(tmp_path) == {"loss": [(1, 0.5), (2, 0.25)]}


def test_a_missing_log_directory_is_named(tmp_path):
    missing = tmp_path / "tensorboard"
    with pytest.raises(
        FileNotFoundError, match=r"^read_scalars: `logdir` must be a run's"
    ) as error:
        read_scalars(missing)
    assert f"got logdir={str(missing)!r}, which does not exist" in str(error.value)


def test_a_file_is_not_a_log_directory(tmp_path):
    path = tmp_path / "events.txt"
    path.write_text("")
    with pytest.raises(NotADirectoryError, match=r"^read_scalars: `logdir` must be a run's"):
        read_scalars(path)


def test_a_directory_without_event_files_is_named(tmp_path):
    (tmp_path / "lr_schedule.png").write_bytes(b"")
    with pytest.raises(
        FileNotFoundError, match=r"^read_scalars: `logdir` must be a run's"
    ) as error:
        read_scalars(tmp_path)
    assert "which holds no event file" in str(error.value)
    assert "create_writer" in str(error.value)


def test_a_directory_of_runs_names_them(tmp_path):
    for run in ("train", "eval"):
        writer = create_writer(tmp_path / run, asynchronous=False)
        writer.write_scalars(1, {"loss": 1.0})
        writer.close()
    with pytest.raises(
        FileNotFoundError, match=r"^read_scalars: `logdir` must be a run's"
    ) as error:
        read_scalars(tmp_path)
    assert "Its subdirectories ['eval', 'train'] hold runs" in str(error.value)
    assert read_scalars(os.path.join(tmp_path, "eval")) == {"loss": [(1, 1.0)]}


def test_read_scalars_without_the_extra_names_it():
    code = (
        "import sys; sys.modules['tensorboard'] = None\n"  # as if the extra were not installed
        "import flax_cyclic\n"
        "try:\n"
        "    flax_cyclic.read_scalars('unused')\n"
        "except ImportError as error:\n"
        "    print(error)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.startswith("read_scalars needs TensorBoard. Install the extra: ")
    assert "flax_cyclic[tensorboard]" in result.stdout
