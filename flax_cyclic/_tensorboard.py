"""The CLU writer behind [`create_writer`][flax_cyclic.create_writer], and its restart marker.

Importing this module imports CLU and TensorFlow.

TensorBoard reads a run's event files in name order, and the name starts with the second the
file was opened. A run that starts again at a step (a resume, or a fresh run in a used log
directory) writes a marker file before it opens its own event file: ``SessionLog.START`` at the
first step it will write, which tells TensorBoard that the events read so far at that step and
after are orphaned.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Mapping
from typing import Any

import tensorflow as tf
from clu import metric_writers
from tensorboard.compat.proto import event_pb2
from tensorboard.summary.writer.record_writer import RecordWriter

_PREFIX = "events.out.tfevents."


def restart_step(step: int) -> int:
    """The first step a run that starts after ``step`` completed updates writes again.

    A resumed run (``step > 0``) writes nothing at ``step`` itself: the values logged there (the
    last update's metrics and learning rate, the evaluation after ``step`` updates) belong to
    the checkpoint it resumed from. A fresh run (``step == 0``) writes everything again, its
    plan and hparams at step 0 included.
    """
    return step + 1 if step else 0


def write_restart_marker(logdir: str, step: int) -> None:
    """Writes an event file that makes TensorBoard drop the events read so far at ``step`` on.

    The file is named to be read after every event file already in ``logdir`` and before the
    next one opened: ``events.out.tfevents.<second>``, a prefix of the names TensorFlow gives
    event files opened in that second or later. When an event file of this second exists
    already, it waits for the next second (at most one second).

    Where ``logdir`` holds no event file yet, it writes nothing. The file holds
    ``SessionLog.START`` twice: TensorBoard's reader takes the first ``START`` of a run
    as its initial one, and only a later one as a restart.
    """
    names = tf.io.gfile.listdir(logdir) if tf.io.gfile.isdir(logdir) else []
    earlier = [name for name in names if "tfevents" in name]
    if not earlier:
        return  # nothing to hide
    newest = max(_opened_at(name) for name in earlier)
    now = time.time()
    if now < newest + 1:
        time.sleep(min(newest + 1 - now, 1.0))  # at most a second: a clock set back waits not
        now = time.time()
    start = event_pb2.Event(
        wall_time=now,
        step=step,
        session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START),
    )
    version = event_pb2.Event(wall_time=now, file_version="brain.Event:2")
    with tf.io.gfile.GFile(os.path.join(logdir, f"{_PREFIX}{int(now):010d}"), "wb") as file:
        records = RecordWriter(file)
        for event in (version, start, start):
            records.write(event.SerializeToString())


def _opened_at(name: str) -> int:
    """The second in an event file's name, ``-1`` for any other file."""
    second = name[len(_PREFIX) :].split(".")[0]
    return int(second) if name.startswith(_PREFIX) and second.isdigit() else -1


class Writer(metric_writers.MetricWriter):
    """CLU's default writer, whose event file opens after the restart marker of its run.

    ``start(step)`` says that the run starts after ``step`` completed updates; the next write
    then writes the restart marker at ``restart_step(step)`` and opens a new event file. A
    writer never started opens its event file at its first write, with no marker.
    """

    def __init__(self, logdir: str, *, just_logging: bool, asynchronous: bool) -> None:
        self.logdir = None if just_logging else logdir
        self._create = functools.partial(
            metric_writers.create_default_writer,
            logdir,
            just_logging=just_logging,
            asynchronous=asynchronous,
        )
        self._inner: metric_writers.MetricWriter | None = None
        self._restart_at: int | None = None

    def start(self, step: int) -> None:
        """Starts a run after ``step`` completed updates: hides the later events already here.

        From the next write on, TensorBoard shows none of the events this log directory holds
        at steps after ``step`` (at any step, when ``step`` is 0). Called by
        [`CallbackList.on_train_begin`][flax_cyclic.CallbackList.on_train_begin]; a loop
        without a ``CallbackList`` calls it before its first write. A second call before any
        write replaces the first.
        """
        if self.logdir is None:
            return
        self.close()
        self._restart_at = restart_step(step)

    @property
    def _writer(self) -> metric_writers.MetricWriter:
        if self._inner is None:
            if self._restart_at is not None and self.logdir is not None:
                write_restart_marker(self.logdir, self._restart_at)
            self._restart_at = None
            self._inner = self._create()
        return self._inner

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


def create(logdir: str, *, just_logging: bool, asynchronous: bool) -> Writer:
    return Writer(logdir, just_logging=just_logging, asynchronous=asynchronous)
