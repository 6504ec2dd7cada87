"""The CLU writer behind [`create_writer`][flax_cyclic.create_writer].

Importing this module imports CLU and TensorFlow.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from clu import metric_writers
from tensorboard.backend.event_processing import event_accumulator

logger = logging.getLogger("flax_cyclic")


def written_steps(logdir: str) -> dict[str, int]:
    """Tag -> the largest step already written in ``logdir``'s event files (top level)."""
    if not os.path.isdir(logdir) or not any("tfevents" in name for name in os.listdir(logdir)):
        return {}
    accumulator = event_accumulator.EventAccumulator(
        logdir, size_guidance={event_accumulator.TENSORS: 0, event_accumulator.SCALARS: 0}
    )
    accumulator.Reload()
    tags = accumulator.Tags()
    last = {}
    for tag in tags.get(event_accumulator.TENSORS, []):
        last[tag] = max(event.step for event in accumulator.Tensors(tag))
    for tag in tags.get(event_accumulator.SCALARS, []):
        last[tag] = max(event.step for event in accumulator.Scalars(tag))
    return last


class Writer(metric_writers.MetricWriter):
    """A CLU writer that never writes a tag twice for the same step.

    A run resumed from a checkpoint repeats the steps between that checkpoint and the moment
    it stopped. Written again, they would draw a zig-zag in TensorBoard (tensorboard#3732).
    This writer reads the steps already in the log directory when it is created and drops any
    value at or before them, so each step keeps exactly one value per tag.
    """

    def __init__(self, inner: metric_writers.MetricWriter, logdir: str | None) -> None:
        self.inner = inner
        self.logdir = logdir
        self.written = written_steps(logdir) if logdir else {}
        if self.written:
            logger.warning(
                "%s already holds steps up to %d: a tag's values at or before its last step are "
                "not written again (a resumed run continues its curves). Use a new log "
                "directory for a new run.",
                logdir,
                max(self.written.values()),
            )

    def _new(self, step: int, values: Mapping[str, Any]) -> dict[str, Any]:
        fresh = {tag: v for tag, v in values.items() if step > self.written.get(tag, -1)}
        for tag in fresh:
            self.written[tag] = step
        return fresh

    def write_summaries(self, step, values, metadata=None):
        if fresh := self._new(step, values):
            self.inner.write_summaries(step, fresh, metadata)

    def write_scalars(self, step, scalars):
        if fresh := self._new(step, scalars):
            self.inner.write_scalars(step, fresh)

    def write_images(self, step, images):
        if fresh := self._new(step, images):
            self.inner.write_images(step, fresh)

    def write_videos(self, step, videos):
        if fresh := self._new(step, videos):
            self.inner.write_videos(step, fresh)

    def write_audios(self, step, audios, *, sample_rate):
        if fresh := self._new(step, audios):
            self.inner.write_audios(step, fresh, sample_rate=sample_rate)

    def write_texts(self, step, texts):
        if fresh := self._new(step, texts):
            self.inner.write_texts(step, fresh)

    def write_histograms(self, step, arrays, num_buckets=None):
        if fresh := self._new(step, arrays):
            self.inner.write_histograms(step, fresh, num_buckets)

    def write_hparams(self, hparams):
        self.inner.write_hparams(hparams)

    def flush(self):
        self.inner.flush()

    def close(self):
        self.inner.close()


def create(logdir: str | None, *, just_logging: bool, asynchronous: bool) -> Writer:
    inner = metric_writers.create_default_writer(
        logdir, just_logging=just_logging, asynchronous=asynchronous
    )
    return Writer(inner, None if just_logging else logdir)
