"""The data side of a run: epochs, the position in them, seeking on resume, and SIGTERM."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np

from flax_cyclic import _logging
from flax_cyclic._loop.run import END

__all__ = ["data_state", "epoch_length", "epoch_source", "preemption", "seek", "shapes"]

logger = _logging.logger


def data_state(batches: Any) -> Any:
    """A data iterator's own state (e.g. grain's), or ``None`` where it has none."""
    get_state = getattr(batches, "get_state", None)
    return get_state() if callable(get_state) else None


def shapes(batch: Any) -> Any:
    """The structure and leaf shapes of a batch: batches stack into a dispatch if equal.

    A tuple of NumPy arrays (the common batch) skips the walk: its structure is that of any
    tuple of as many leaves, kept by length.
    """
    if type(batch) is tuple and all(type(leaf) is np.ndarray for leaf in batch):
        structure = _TUPLES.get(len(batch))
        if structure is None:
            structure = _TUPLES[len(batch)] = jax.tree.structure((0,) * len(batch))
        return structure, [leaf.shape for leaf in batch]
    leaves, structure = jax.tree.flatten(batch)  # one walk: this runs for every batch
    return structure, [np.shape(leaf) for leaf in leaves]


_TUPLES: dict[int, Any] = {}  # the structure of a tuple of n leaves, by n


def seek(batches: Iterator[Any], position: int, data_state: Any) -> Iterator[Any]:
    """Moves a fresh epoch iterator to ``position`` batches in."""
    if position == 0:
        return batches
    set_state = getattr(batches, "set_state", None)
    if data_state is not None and callable(set_state):
        set_state(data_state)  # e.g. a grain DatasetIterator
        return batches
    for consumed in range(position):  # replay: the order is the same on every pass
        if next(batches, END) is END:
            raise ValueError(
                f"Trainer.fit: resuming {position} batches into the epoch, but this epoch has "
                f"only {consumed}: the training data changed since the checkpoint."
            )
    return batches


@contextlib.contextmanager
def preemption(enabled: bool, start: int) -> Iterator[Callable[[int], bool]]:
    """Turns SIGTERM into a stop that the loop polls after each step: ``preempted(step)``.

    One process: a SIGTERM handler sets a flag (main thread only). Several processes
    (``jax.distributed``): JAX's preemption service hears a SIGTERM to any of them and picks a
    step that all reach (``multihost_utils.reached_preemption_sync_point``), so every
    process stops and saves the same step.
    """
    if not enabled:
        yield lambda step: False
        return
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        try:
            at_start = multihost_utils.reached_preemption_sync_point(start)
        except RuntimeError as error:  # the preemption service is off
            logger.warning(
                "No SIGTERM handling across processes (%s): a SIGTERM stops no process.",
                str(error).splitlines()[0],
            )
            yield lambda step: False
            return
        yield lambda step: at_start or multihost_utils.reached_preemption_sync_point(step)
        return
    requested = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield lambda step: False
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: requested.set())
    try:
        yield lambda step: requested.is_set()
    finally:
        # None: the previous handler was not installed from Python and cannot be put back.
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def epoch_length(train_data: Any, num_epochs: int | None) -> int | None:
    """Total train steps of ``num_epochs`` epochs, when the data knows its length."""
    try:
        return num_epochs * len(train_data) if num_epochs else None
    except TypeError:
        return None


def epoch_source(train_data: Any) -> Callable[[int], Iterator[Any]]:
    if callable(train_data) and not hasattr(train_data, "__iter__"):
        return lambda epoch: iter(train_data(epoch))
    if not hasattr(train_data, "__iter__"):
        raise TypeError(
            f"Trainer.fit: `train_data` must be an iterable of batches or a function "
            f"epoch -> iterable, got {type(train_data).__name__}."
        )
    return lambda epoch: iter(train_data)
