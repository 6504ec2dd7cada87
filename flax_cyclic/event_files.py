"""Reading a run's TensorBoard event files back into numbers (with the ``tensorboard`` extra)."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Iterator
from typing import Any

__all__ = ["read_scalars"]

_OWNER = "read_scalars"


def read_scalars(
    logdir: str | os.PathLike, tags: Iterable[str] | None = None
) -> dict[str, list[tuple[int, float]]]:
    """A run's scalar series as TensorBoard shows them: ``{tag: [(step, value), ...]}``.

    Reads the event files of one run, the directory given to
    [`create_writer`][flax_cyclic.create_writer] (``workdir/tensorboard`` in the examples), with
    TensorBoard's own reader, ``plugin_event_accumulator.EventAccumulator``, keeping every event.
    So the numbers are those TensorBoard plots: after a resume from the checkpoint at step ``T``
    the earlier run's values up to ``T`` and the resumed run's after it, none of the values the
    earlier run logged after ``T`` (the writer's restart marker orphans them), and a fresh run
    in a used directory without any of the earlier run's; all a run wrote itself (through each
    of its writers, a baseline evaluation before ``fit`` included) stays. Each series is in the
    order it was written; with the project's step convention the value at step ``s`` is the one
    of ``s`` completed updates (e.g. the learning rate update ``s - 1`` applied).

    Args:
        logdir: The run's log directory: the event files directly in it are read. A
            subdirectory is another run, as for ``tensorboard --logdir``: read it with its own
            call. A ``scheme://`` path (``gs://bucket/run``) is read through TensorFlow's file
            system.
        tags: A tag, or the tags to read; default: every scalar tag of the run.

    Returns:
        For each tag, its ``(step, value)`` pairs, steps as ``int``, values as ``float`` (the
        float32 the summary holds). A tag whose every value was orphaned by a restart maps to
        ``[]``. Non-scalar summaries (the ``lr_schedule`` image, hparams) are left out.

    Raises:
        ImportError: If the ``tensorboard`` extra is not installed; the message names it.
        FileNotFoundError: If ``logdir`` does not exist or holds no event file; the message
            names the subdirectories that hold runs, if any.
        NotADirectoryError: If ``logdir`` is a file.
        ValueError: If ``tags`` names a tag the run holds no scalar series for.

    Example:
        >>> import tempfile
        >>> from flax_cyclic import create_writer, read_scalars
        >>> logdir = tempfile.mkdtemp()
        >>> writer = create_writer(logdir, asynchronous=False)
        >>> writer.write_scalars(1, {"learning_rate": 0.5})
        >>> writer.write_scalars(2, {"learning_rate": 0.25})
        >>> writer.close()
        >>> read_scalars(logdir)
        {'learning_rate': [(1, 0.5), (2, 0.25)]}

    Note:
        CLU writes tensor summaries, not the ``simple_value`` scalars of TensorFlow 1 and
        PyTorch, so TensorBoard's older ``event_accumulator.EventAccumulator.Scalars(tag)``
        raises ``KeyError`` on a CLU run. The plugin reader sees both kinds (event files of
        PyTorch's ``SummaryWriter`` read back too). It imports TensorFlow where it is installed
        (seconds, once per process) and reads every event of the run into memory. The reader's
        warning for each restart it obeys ("likely caused by a TensorFlow restart") is not
        shown: dropping those events is what the restart asked for.
    """
    reader, tensor_util = _tensorboard()
    path = _run_directory(os.fspath(logdir))
    accumulator = reader.EventAccumulator(path, size_guidance={reader.TENSORS: 0})
    with _purges_unannounced():
        accumulator.Reload()
    scalar_tags = [
        tag
        for tag in accumulator.Tags()[reader.TENSORS]
        if accumulator.SummaryMetadata(tag).plugin_data.plugin_name == "scalars"
    ]
    wanted = _wanted(scalar_tags, tags)
    return {
        tag: [
            (event.step, float(tensor_util.make_ndarray(event.tensor_proto).item()))
            for event in accumulator.Tensors(tag)
        ]
        for tag in wanted
    }


def _tensorboard() -> tuple[Any, Any]:
    """TensorBoard's plugin event reader and its tensor conversion, imported on first use."""
    from flax_cyclic.writers import _EXTRA_HINT, _quiet_start

    try:
        with _quiet_start():  # the reader loads TensorFlow where it is installed: quietly
            from tensorboard.backend.event_processing import plugin_event_accumulator
            from tensorboard.compat import tf
            from tensorboard.util import tensor_util

            getattr(tf, "__version__", None)  # the lazy import, now rather than mid-read
    except ImportError as error:
        raise ImportError(f"{_OWNER} needs TensorBoard. {_EXTRA_HINT}") from error
    return plugin_event_accumulator, tensor_util


@contextlib.contextmanager
def _purges_unannounced() -> Iterator[None]:
    """Drops the reader's warning that it purged orphaned events, for the time of a read.

    Each restart marker makes TensorBoard's reader warn "Detected out of order event.step
    likely caused by a TensorFlow restart. Purging ...": here that purge is what a resumed
    run asks for, and the reader's other messages still pass.
    """

    def announced_purge(record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Detected out of order event.step")

    logger = logging.getLogger("tensorboard")
    logger.addFilter(announced_purge)
    try:
        yield
    finally:
        logger.removeFilter(announced_purge)


def _run_directory(logdir: str) -> str:
    """``logdir`` if it is a directory holding event files; else an error saying what it is."""
    from tensorboard.backend.event_processing import io_wrapper
    from tensorboard.compat import tf

    given = f"logdir={logdir!r}"
    hint = "Pass the directory given to create_writer (e.g. workdir/tensorboard)."
    if not tf.io.gfile.exists(logdir):
        raise FileNotFoundError(
            f"{_OWNER}: `logdir` must be a run's log directory, got {given}, which does not "
            f"exist. {hint}"
        )
    if not tf.io.gfile.isdir(logdir):
        raise NotADirectoryError(
            f"{_OWNER}: `logdir` must be a run's log directory, got {given}, which is a file. "
            f"{hint}"
        )
    if any(io_wrapper.IsSummaryEventsFile(name) for name in tf.io.gfile.listdir(logdir)):
        return logdir
    runs = sorted(
        run[len(logdir) :].strip("/\\") for run in io_wrapper.GetLogdirSubdirectories(logdir)
    )
    if runs:
        hint = (
            f"Its subdirectories {runs} hold runs: read each with its own call, e.g. "
            f"read_scalars(os.path.join(logdir, {runs[0]!r}))."
        )
    raise FileNotFoundError(
        f"{_OWNER}: `logdir` must be a run's log directory, got {given}, which holds no event "
        f"file (events.out.tfevents.*). {hint}"
    )


def _wanted(scalar_tags: list[str], tags: Iterable[str] | None) -> list[str]:
    """The tags to read: ``tags`` in its order, each one the run has a scalar series for."""
    if tags is None:
        return scalar_tags
    wanted = [tags] if isinstance(tags, str) else list(tags)
    missing = [tag for tag in wanted if tag not in scalar_tags]
    if missing:
        raise ValueError(
            f"{_OWNER}: `tags` must name scalar tags of the run, got tags={wanted!r}: it holds "
            f"no scalar series for {missing}. Its scalar tags are {sorted(scalar_tags)}."
        )
    return wanted
