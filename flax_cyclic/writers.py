"""Metric writers for TensorBoard: CLU's, or TensorBoard's own without TensorFlow."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

import jax

from flax_cyclic import _checks, _logging

__all__ = ["create_writer"]

_EXTRA_HINT = "Install the extra: pip install 'flax_cyclic[tensorboard]' (TensorBoard)."
_CLU_HINT = "Install the extra: pip install 'flax_cyclic[clu]' (CLU, TensorFlow, TensorBoard)."
_BACKENDS = ("auto", "clu", "tensorboard")
_DESCRIBED = {
    "clu": "CLU's writer (TensorFlow)",
    "tensorboard": "TensorBoard's event writer (no TensorFlow)",
}

#: A line of absl's C++ logging (which TensorFlow's libraries use), with its severity letter.
_NATIVE_LOG_LINE = re.compile(r"([IWEF])\d{4} ")
#: Start-up lines of no use to a writer's user: the "Unable to register cuDNN/cuFFT/cuBLAS
#: factory" errors of CUDA builds, absl's notice that its logging is not initialised, and the
#: second line of TensorFlow's INFO line on CPU features.
_START_UP_NOISE = re.compile(
    r"Unable to register cu|absl::InitializeLog|^To enable the following instructions"
)


def create_writer(
    logdir: str | os.PathLike,
    *,
    backend: str = "auto",
    asynchronous: bool = True,
    just_logging: bool | None = None,
) -> Any:
    """A CLU ``MetricWriter`` writing TensorBoard event files to ``logdir``.

    Two writers write the same event files (TensorBoard shows the same tags, steps, values,
    images and hparams), and log each scalar as CLU's ``LoggingWriter`` does:

    - ``backend="clu"``: CLU's ``clu.metric_writers.create_default_writer``, as the Flax
      examples use. CLU imports TensorFlow: install ``flax_cyclic[clu]``.
    - ``backend="tensorboard"``: the same interface on TensorBoard's own event writer, without
      TensorFlow (``flax_cyclic[tensorboard]`` installs ``tensorboard`` alone), as PyTorch's
      ``torch.utils.tensorboard`` does.
    - ``backend="auto"`` (the default): CLU's where CLU and TensorFlow are installed,
      TensorBoard's otherwise.

    The ``flax_cyclic`` logger says which one writes. On process 0 the writer writes event files
    (and logs), on every other process it only logs. Writes are asynchronous by default; call
    ``flush()`` at the end (the ``Trainer`` and ``LRSchedulerCallback`` do, also on exceptions).
    Any other CLU ``MetricWriter`` works wherever a writer is taken.

    TensorBoard shows the run that trained. The writer's ``start(step)`` says that a run starts
    after ``step`` completed updates; [`CallbackList.on_train_begin`][flax_cyclic.CallbackList]
    (and so the [`Trainer`][flax_cyclic.Trainer], after a resume) calls it. The rule, as
    PyTorch's ``SummaryWriter(purge_step=step + 1)``: a run resumed from the checkpoint at step
    ``T`` hides the values earlier runs wrote in ``logdir`` after ``T`` (their curves up to
    ``T`` stay); a fresh run (``step`` 0) hides all of them; nothing the run itself writes is
    hidden. A run is this process's writers of ``logdir`` started before any of them wrote
    (several ``create_writer(logdir)``: one for an ``LRSchedulerCallback``, one for the
    ``Trainer``), with what writers not started yet wrote before (a baseline
    ``trainer.evaluate()`` before ``fit``); a ``start`` after the run wrote (a second ``fit``)
    begins a new run, as a new process does. No value is dropped on the way: a new value at a
    step written before is shown instead of the old one.

    Where it writes event files (``just_logging=False``), a local ``logdir`` is created if
    missing and checked at once: a file, or a directory that cannot be created or written,
    raises here with the path, rather than at the first write. A ``scheme://`` path such as
    ``gs://bucket/run`` goes to the writer as it is (TensorBoard's own file system reaches
    ``s3://`` and, through ``fsspec``, ``gs://`` where ``gcsfs`` is installed; CLU's writer
    reaches what TensorFlow's does).

    CLU's writer imports TensorFlow at the first call, once per process: 2.4 s with the first
    write on a 2-core CPU (TensorFlow 2.21, ``benchmarks/writer_import.py``); later calls take
    under a millisecond. It prints none of
    TensorFlow's start-up lines (absl's ``InitializeLog`` notice, oneDNN, CPU features, CUDA
    factories) unless ``TF_CPP_MIN_LOG_LEVEL=0`` asks for them; anything else written to
    standard error during the import still is. ``TF_ENABLE_ONEDNN_OPTS`` is left as it is.
    TensorBoard's writer imports in a fraction of a second (docs/benchmarks.md).

    Args:
        logdir: The log directory, e.g. ``workdir/tensorboard``; ``tensorboard --logdir`` it.
        backend: ``"auto"``, ``"clu"`` or ``"tensorboard"``: which writer writes (see above).
        asynchronous: Write in a background thread.
        just_logging: Only log, write no event files; default: on every process but 0.

    Returns:
        A CLU ``MetricWriter`` (``write_scalars``, ``write_images``, ``write_texts``,
        ``write_histograms``, ``write_hparams``, ``flush``, ``close``, ...) with a
        ``start(step)`` method, and ``backend``: the writer chosen.

    Raises:
        ValueError: If ``backend`` is not one of the three.
        ImportError: If the writer's extra is not installed; the message names it.
        NotADirectoryError: If a local ``logdir`` is an existing file, or lies under one.
        PermissionError: If a local ``logdir`` cannot be created or written to.
        OSError: If a local ``logdir`` cannot be created for another reason.

    Example:
        >>> import tempfile
        >>> from flax_cyclic import create_writer
        >>> writer = create_writer(tempfile.mkdtemp(), backend="tensorboard")
        >>> writer.backend
        'tensorboard'
        >>> writer.write_scalars(1, {"learning_rate": 0.5})
        >>> writer.close()

    Note:
        How it is done: the run's first write puts a small event file before the run's
        own, holding ``SessionLog.START`` at step ``step + 1`` (0 for a fresh run), which
        TensorBoard's Python readers (``plugin_event_accumulator``, ``tensorboard
        --load_fast=false``) obey for the event files read before it. So that a value
        written before ``start`` is read after it, the first event file a writer opens
        before it is started waits (at most a second) for a second of its own, after every
        event file in ``logdir``; the marker, written later, is named to be read before it.
        A ``tensorboard --load_fast=false`` already running then skips the marker (it logs
        that a file was "created after" a later one) until it is restarted. TensorBoard's
        default data server ignores the marker but keeps, for each tag, only the newest of
        values written at a step again, so it shows the same for every tag the new run
        writes; a tag only the earlier run wrote stays visible there (use a new ``logdir``
        for a run that logs other tags). TensorBoard's older
        ``event_accumulator.EventAccumulator`` never drops the tensor summaries CLU writes:
        read event files with ``plugin_event_accumulator.EventAccumulator``. A loop without a
        ``CallbackList`` calls ``writer.start(step)`` before its first write.
    """
    _checks.choice("create_writer", "backend", backend, _BACKENDS)
    chosen = _import_backend(backend)
    if just_logging is None:
        just_logging = jax.process_index() != 0
    logdir = os.fspath(logdir)
    if not just_logging:
        _checks.writable_directory("create_writer", "logdir", logdir)
    from flax_cyclic import _tensorboard

    writer = _tensorboard.create(
        logdir, just_logging=just_logging, asynchronous=asynchronous, backend=chosen
    )
    where = "logs only" if just_logging else f"event files in {logdir}"
    _logging.logger.info("create_writer: %s, through %s.", where, _DESCRIBED[chosen])
    return writer


def _import_backend(backend: str) -> str:
    """Imports what ``backend`` writes with; returns the writer chosen, ``"auto"`` resolved.

    ``"auto"`` takes CLU's writer where CLU and TensorFlow import, TensorBoard's otherwise.
    """
    asked = backend
    if backend == "auto":
        if all(importlib.util.find_spec(name) for name in ("clu", "tensorflow")):
            with contextlib.suppress(ImportError):  # one that does not import: TensorBoard's
                _import("clu")
                return "clu"
        backend = "tensorboard"
    try:
        _import(backend)
    except ImportError as error:
        if backend == "clu":
            message = (
                f"create_writer(backend='clu') needs CLU and TensorFlow. {_CLU_HINT} Or pass "
                "backend='tensorboard', which needs no TensorFlow."
            )
        else:
            message = f"create_writer(backend={asked!r}) needs TensorBoard. {_EXTRA_HINT}"
        raise ImportError(message) from error
    return backend


def _import(backend: str) -> None:
    """Imports the libraries of ``backend``: CLU's metric writers, or TensorBoard's writer."""
    if backend == "clu":
        with _quiet_start():
            import clu.metric_writers  # noqa: F401
    else:
        import tensorboard.summary.writer.event_file_writer  # noqa: F401


@contextlib.contextmanager
def _quiet_start() -> Iterator[None]:
    """Imports TensorFlow (in the block) without the start-up lines its libraries print.

    TensorFlow's libraries log as they load, before absl's logging is initialised, and no
    setting reaches those lines: ``TF_CPP_MIN_LOG_LEVEL`` applies from then on only. So the
    process's standard error points at a temporary file during the import, and what was written
    there is then written to standard error again, less the lines below
    ``TF_CPP_MIN_LOG_LEVEL`` (1, INFO hidden, as ``import jax`` sets it where the user set
    none) and, unless it is 0, less ``_START_UP_NOISE``. ``TF_ENABLE_ONEDNN_OPTS`` is left as
    it is: it changes TensorFlow's numerics. Nothing is done if TensorFlow is imported already.
    """
    value = os.environ.get("TF_CPP_MIN_LOG_LEVEL", "1")
    level = int(value) if value.isdigit() else 0
    if "tensorflow" in sys.modules or level == 0:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode(errors="replace").splitlines(keepends=True)
            sys.stderr.write("".join(line for line in lines if _shown(line, level)))


def _shown(line: str, level: int) -> bool:
    """Whether a start-up ``line`` of TensorFlow's is shown at ``TF_CPP_MIN_LOG_LEVEL=level``."""
    native = _NATIVE_LOG_LINE.match(line)
    if native and "IWEF".index(native[1]) < level:
        return False
    return not _START_UP_NOISE.search(line)
