"""The writer behind [`create_writer`][flax_cyclic.create_writer], and its restart marker.

The writer wraps the one that writes the event files: CLU's default writer (which imports
TensorFlow) or TensorBoard's own event writer (``_event_writer``, no TensorFlow). Importing this
module imports neither; files are listed and written through TensorFlow's file system where
TensorFlow is imported (CLU's writer), and through TensorBoard's own otherwise.

TensorBoard reads a run's event files in name order, and the name starts with the second the
file was opened. A run that starts again at a step (a resume, or a fresh run in a used log
directory) has a marker file read after the earlier runs' event files and before its own:
``SessionLog.START`` at the first step it will write, which tells TensorBoard that the events
read so far at that step and after are orphaned.

What a run is, for one log directory, is kept here, per process: the writers started together
(before any of them wrote) make one run, with one marker; a ``start`` after the run wrote begins
the next one. What a writer writes before it is started (a baseline evaluation) belongs to the
run that starts next, so its event file opens in a second of its own, and that run's marker is
named after it.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from tensorboard.compat.proto import event_pb2
from tensorboard.compat.tensorflow_stub.io import gfile as _own_gfile
from tensorboard.summary.writer.record_writer import RecordWriter

_PREFIX = "events.out.tfevents."

#: The writers ``create_writer(logdir, backend=...)`` offers.
BACKENDS = ("clu", "tensorboard")


def _gfile() -> Any:
    """``tf.io.gfile`` where TensorFlow is imported, else TensorBoard's own (no import of it)."""
    tensorflow = sys.modules.get("tensorflow")
    return tensorflow.io.gfile if tensorflow is not None else _own_gfile


def restart_step(step: int) -> int:
    """The first step a run that starts after ``step`` completed updates writes again.

    A resumed run (``step > 0``) writes nothing at ``step`` itself: the values logged there (the
    last update's metrics and learning rate, the evaluation after ``step`` updates) belong to
    the checkpoint it resumed from. A fresh run (``step == 0``) writes everything again, its
    plan and hparams at step 0 included.
    """
    return step + 1 if step else 0


@dataclasses.dataclass
class _Run:
    """A run of one log directory in this process: the step its marker hides from."""

    restart: int
    marked: bool = False  # the marker is written (or was not needed): the run has written


@dataclasses.dataclass
class _Directory:
    """This process's runs in one log directory."""

    run: _Run | None = None  # the newest
    #: The second of the first event file opened here by a writer not started yet, since the
    #: last marker: the next run's marker is named after it, to be read before it.
    unclaimed: int | None = None
    markers: int = 0  # the runs marked so far: each claims the files opened before it


_DIRECTORIES: dict[str, _Directory] = {}
_LOCK = threading.Lock()


def _directory(logdir: str) -> _Directory:
    """The runs of ``logdir`` (resolved: one directory, however it is spelled)."""
    key = logdir.rstrip("/") if "://" in logdir else os.path.realpath(logdir)
    return _DIRECTORIES.setdefault(key, _Directory())


def write_restart_marker(logdir: str, step: int, second: int | None = None) -> None:
    """Writes an event file that makes TensorBoard drop the earlier events at ``step`` on.

    The file is ``events.out.tfevents.<second>``: read after every event file opened before that
    second and before those opened in it or later (a prefix of the names TensorFlow gives
    them). ``second`` defaults to a second after every event file in ``logdir`` (waiting for the
    next second, at most one, where a file of this second exists).

    Where no event file of ``logdir`` is read before it, it writes nothing. The file holds
    ``SessionLog.START`` twice: TensorBoard's reader takes the first ``START`` of a run as its
    initial one, and only a later one as a restart.
    """
    if second is None:
        second = fresh_second(logdir)
    names = _gfile().listdir(logdir) if _gfile().isdir(logdir) else []
    if not any(0 <= _opened_at(name) < second for name in names):
        return  # nothing to hide
    now = time.time()
    start = event_pb2.Event(
        wall_time=now,
        step=step,
        session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START),
    )
    version = event_pb2.Event(wall_time=now, file_version="brain.Event:2")
    with _gfile().GFile(os.path.join(logdir, f"{_PREFIX}{second:010d}"), "wb") as file:
        records = RecordWriter(file)
        for event in (version, start, start):
            records.write(event.SerializeToString())


def fresh_second(logdir: str) -> int:
    """The current second, once it is later than that of every event file in ``logdir``.

    Waits for the next second where a file of this second exists: at most one second (a clock
    set back waits not).
    """
    names = _gfile().listdir(logdir) if _gfile().isdir(logdir) else []
    newest = max((_opened_at(name) for name in names), default=-1)
    now = time.time()
    if now < newest + 1:
        time.sleep(min(newest + 1 - now, 1.0))
        now = time.time()
    return int(now)


def _opened_at(name: str) -> int:
    """The second in an event file's name, ``-1`` for any other file."""
    second = name[len(_PREFIX) :].split(".")[0]
    return int(second) if name.startswith(_PREFIX) and second.isdigit() else -1


class Writer:
    """A CLU ``MetricWriter`` whose event files are read after its run's restart marker.

    It writes through the writer ``create`` makes, opened at the first write and again after
    ``close``: CLU's default writer (``backend="clu"``) or TensorBoard's own
    (``backend="tensorboard"``).

    ``start(step)`` says that the writer's run starts after ``step`` completed updates; the
    run's first write then writes the restart marker at ``restart_step(step)``. A writer never
    started writes no marker, and its event file is read after the marker of the run that starts
    next in this process.
    """

    def __init__(
        self, logdir: str, *, just_logging: bool, backend: str, create: Callable[[], Any]
    ) -> None:
        self.logdir = None if just_logging else logdir
        #: Which writer writes the event files: ``"clu"`` or ``"tensorboard"``.
        self.backend = backend
        self._create = create
        self._inner: Any = None
        self._run: _Run | None = None
        #: For an event file opened before the writer was started: the run it then awaited
        #: (``_Directory.markers``); the file is read after that run's marker.
        self._awaits: int | None = None

    def start(self, step: int) -> None:
        """Starts the writer's run after ``step`` completed updates.

        From the run's first write on, TensorBoard shows none of the events earlier runs wrote
        in this log directory at steps after ``step`` (at any step, when ``step`` is 0), and
        all the run wrote. Writers of the log directory started before any of them wrote are
        one run, and the last ``step`` counts; a start after the run wrote begins a new run.
        Called by [`CallbackList.on_train_begin`][flax_cyclic.CallbackList.on_train_begin]; a
        loop without a ``CallbackList`` calls it before its first write.
        """
        if self.logdir is None:
            return
        with _LOCK:
            directory = _directory(self.logdir)
            run = directory.run
            if run is None or run.marked:
                run = directory.run = _Run(restart_step(step))
            else:
                run.restart = restart_step(step)
            # An open event file is read before the run's marker, unless it awaits this run.
            keep = self._run is run or (self._run is None and self._awaits == directory.markers)
            self._run = run
        if not keep:
            self.close()

    @property
    def _writer(self) -> Any:
        if self._inner is None or (self._run is not None and not self._run.marked):
            self._open()
        assert self._inner is not None
        return self._inner

    def _open(self) -> None:
        """Writes the run's marker if due, and opens an event file if none is open."""
        if self.logdir is not None:
            with _LOCK:
                directory = _directory(self.logdir)
                run = self._run
                if run is None and self._inner is None:  # awaits the run that starts next
                    if directory.unclaimed is None:
                        directory.unclaimed = fresh_second(self.logdir)
                    self._awaits = directory.markers
                elif run is not None and not run.marked:
                    write_restart_marker(self.logdir, run.restart, directory.unclaimed)
                    run.marked, directory.unclaimed = True, None
                    directory.markers += 1
        if self._inner is None:
            self._inner = self._create()

    def write_summaries(self, step, values, metadata=None):
        self._writer.write_summaries(step, values, metadata)

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        self._writer.write_scalars(step, scalars)

    def write_images(self, step, images):
        self._writer.write_images(step, images)

    def write_videos(self, step, videos):
        self._writer.write_videos(step, videos)

    def write_audios(self, step, audios, *, sample_rate):
        self._writer.write_audios(step, audios, sample_rate=sample_rate)

    def write_texts(self, step, texts):
        self._writer.write_texts(step, texts)

    def write_histograms(self, step, arrays, num_buckets=None):
        self._writer.write_histograms(step, arrays, num_buckets)

    def write_hparams(self, hparams):
        self._writer.write_hparams(hparams)

    def flush(self) -> None:
        if self._inner is not None:
            self._inner.flush()

    def close(self) -> None:
        """Closes the event file; a later write opens a new one."""
        if self._inner is not None:
            self._inner.close()
            self._inner = None


def create(logdir: str, *, just_logging: bool, asynchronous: bool, backend: str) -> Writer:
    """The writer of ``logdir`` on ``backend`` (one of ``BACKENDS``).

    CLU's backend needs CLU and TensorFlow imported already (``create_writer`` imports them);
    the writer is then also a ``clu.metric_writers.MetricWriter`` for ``isinstance``.
    """
    options = dict(just_logging=just_logging, asynchronous=asynchronous)
    if backend == "clu":
        from clu import metric_writers

        metric_writers.MetricWriter.register(Writer)
        create = functools.partial(metric_writers.create_default_writer, logdir, **options)
    else:
        from flax_cyclic import _event_writer

        create = functools.partial(_event_writer.create, logdir, **options)
    return Writer(logdir, just_logging=just_logging, backend=backend, create=create)
