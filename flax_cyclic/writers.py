"""Metric writers for TensorBoard, through CLU (installed with the ``tensorboard`` extra)."""

from __future__ import annotations

import os
from typing import Any

import jax

from flax_cyclic import _checks

__all__ = ["create_writer"]

_EXTRA_HINT = (
    "Install the extra: pip install 'flax_cyclic[tensorboard]' (CLU, TensorFlow, TensorBoard)."
)


def create_writer(
    logdir: str | os.PathLike, *, asynchronous: bool = True, just_logging: bool | None = None
) -> Any:
    """A CLU ``MetricWriter`` writing TensorBoard event files to ``logdir``.

    Built on ``clu.metric_writers.create_default_writer``: on process 0 it writes event files
    (and logs), on every other process it only logs. Writes are asynchronous by default; call
    ``flush()`` at the end (the ``Trainer`` and ``LRSchedulerCallback`` do, also on exceptions).
    A step already in ``logdir`` is never written again for the same tag, so a resumed run
    continues its curves without zig-zags.

    Where it writes event files (``just_logging=False``), a local ``logdir`` is created if
    missing and checked at once: a file, or a directory that cannot be created or written,
    raises here with the path, rather than as TensorFlow's ``FailedPreconditionError``. A
    ``scheme://`` path such as ``gs://bucket/run`` goes to the writer as it is.

    Args:
        logdir: The log directory, e.g. ``workdir/tensorboard``; ``tensorboard --logdir`` it.
        asynchronous: Write in a background thread.
        just_logging: Only log, write no event files; default: on every process but 0.

    Returns:
        A ``clu.metric_writers.MetricWriter``.

    Raises:
        ImportError: If the ``tensorboard`` extra is not installed; the message names it.
        NotADirectoryError: If a local ``logdir`` is an existing file, or lies under one.
        PermissionError: If a local ``logdir`` cannot be created or written to.
        OSError: If a local ``logdir`` cannot be created for another reason.
    """
    try:
        from flax_cyclic import _tensorboard
    except ImportError as error:
        raise ImportError(f"create_writer needs CLU and TensorFlow. {_EXTRA_HINT}") from error
    if just_logging is None:
        just_logging = jax.process_index() != 0
    logdir = os.fspath(logdir)
    if not just_logging:
        _checks.writable_directory("create_writer", "logdir", logdir)
    return _tensorboard.create(logdir, just_logging=just_logging, asynchronous=asynchronous)
