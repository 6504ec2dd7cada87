"""A TensorBoard metric writer with CLU's interface that does not import TensorFlow.

CLU's default writer (``clu.metric_writers.create_default_writer``) logs each call with absl and
writes the values to event files through ``tf.summary``, and ``import clu.metric_writers``
imports TensorFlow: seconds at start and a large dependency, for a few protocol buffers appended
to a file. [`create`][flax_cyclic._event_writer.create] returns a writer with the same methods,
the same absl lines and the same values in TensorBoard, written with the ``tensorboard`` package
alone: its numpy summaries (``scalar_pb``, ``histogram_pb``, ``text_pb``, ``hparams_pb``), its
plugins' metadata and its ``EventFileWriter``. Images are encoded as PNG with Pillow and audio
as 16-bit WAV with the standard library's ``wave``, converted as TensorFlow converts them.

TensorBoard's ``EventFileWriter`` opens its file through ``tensorboard.compat.tf``, which
imports TensorFlow where it is installed; the writer here opens it through TensorBoard's own
file system layer (``tensorboard.compat.tensorflow_stub.io.gfile``: local paths, ``s3://``, and
other schemes through ``fsspec``) and writes it with the rest of ``EventFileWriter``.

Errors follow CLU's writer: a value TensorFlow rejects with a Python exception raises the same
type here (``ValueError`` for a non-scalar scalar, ``RuntimeError`` for a write after
``close``, ``AttributeError`` for a boolean image, ...); a value TensorFlow rejects in one of its
kernels (its own ``OpError`` classes) raises ``ValueError``. With ``asynchronous=True`` the calls
run in one background thread, and an error raised there is raised again, as
[`AsyncError`][flax_cyclic._event_writer.AsyncError], like ``clu.asynclib.Pool`` raises it: at
the next call of that writer (once the error has happened), or at ``flush`` or ``close``.
"""

from __future__ import annotations

import collections
import concurrent.futures
import io
import os
import socket
import threading
import time
import wave
import weakref
from collections.abc import Mapping
from typing import Any

import numpy as np
from absl import logging
from google.protobuf import message  # type: ignore[import-untyped,unused-ignore]
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.compat.tensorflow_stub.io import gfile
from tensorboard.plugins.audio import metadata as audio_metadata
from tensorboard.plugins.histogram.summary_v2 import histogram_pb
from tensorboard.plugins.hparams.summary_v2 import hparams_pb
from tensorboard.plugins.image import metadata as image_metadata
from tensorboard.plugins.scalar.summary_v2 import scalar_pb
from tensorboard.plugins.text.summary_v2 import text_pb
from tensorboard.summary.writer import event_file_writer
from tensorboard.summary.writer.record_writer import RecordWriter
from tensorboard.util import tensor_util

#: ``tf.summary.histogram``'s bucket count (TensorBoard's ``DEFAULT_BUCKET_COUNT``).
_DEFAULT_BUCKETS = 30
_ASYNC_HINT = (
    "Consider re-running the code without the background thread (a writer created with "
    "`asynchronous=False`)"
)


class AsyncError(Exception):
    """An exception raised in the background thread of an asynchronous writer, raised again.

    Its ``__cause__`` is an ``AsyncError`` saying "Error '...' occurred ASYNCHRONOUSLY.", whose
    ``__cause__`` is the original exception, as with ``clu.asynclib.AsyncError`` (a different
    class: ``except clu.asynclib.AsyncError`` does not catch this one).
    """


def _integer(value: Any, bits: int) -> int:
    """``value`` as TensorFlow converts it to an integer tensor of ``bits`` bits.

    Python integers must fit; numpy and JAX numbers (floats too) of one element are cast as
    numpy casts them; a Python float, a string or ``None`` is refused.

    Raises:
        ValueError: If ``value`` is ``None``, out of range, or an array of several elements.
        TypeError: If ``value`` is of another type.
    """
    dtype = np.dtype(f"int{bits}")
    if value is None:
        raise ValueError(f"Cannot convert None to an {dtype} tensor.")
    if isinstance(value, bool | int):
        if not np.iinfo(dtype).min <= value <= np.iinfo(dtype).max:
            raise ValueError(f"Can't convert Python integer {value} out of range to {dtype}.")
        return int(value)
    if not hasattr(value, "__array__"):
        raise TypeError(f"Cannot convert {value!r} to EagerTensor of dtype {dtype}")
    array = np.asarray(value)
    if array.dtype.kind not in "biuf":
        raise TypeError(f"Cannot convert {value!r} to EagerTensor of dtype {dtype}")
    if array.size != 1:
        raise ValueError(f"Expected a single number for an {dtype} tensor, got shape {array.shape}")
    with np.errstate(invalid="ignore"):
        return int(array.reshape(()).astype(dtype))


def _tag(key: Any, default: str) -> str:
    """The tag ``tf.summary``'s ``summary_scope`` gives ``key``: itself, or ``default`` if empty.

    Raises:
        TypeError: If ``key`` is not a string.
    """
    if not isinstance(key, str):
        raise TypeError(f"expected string or bytes-like object, got {type(key).__name__!r}")
    return key or default


def _scalar(value: Any) -> np.ndarray:
    """``value`` as an array ``scalar_pb`` accepts where ``tf.summary.scalar`` accepts it.

    TensorFlow casts any number to float32: bfloat16 and the other ``ml_dtypes`` floats (numpy
    kind ``V``), and complex numbers, of which it keeps the real part with a warning.
    """
    array = np.asarray(value)
    if array.dtype.kind == "V":
        array = array.astype(np.float32)
    elif array.dtype.kind == "c":
        logging.warning(
            "You are casting an input of type %s to an incompatible dtype float32. This will "
            "discard the imaginary part and may not be what you intended.",
            array.dtype,
        )
        array = array.real
    return array


def _uint8_images(images: np.ndarray) -> np.ndarray:
    """``images`` as ``tf.image.convert_image_dtype(images, tf.uint8, saturate=True)`` makes them.

    Floats are multiplied by 255.5 in their own dtype, clipped to [0, 255] (NaN to 0) and
    truncated; wider integers are floor-divided by their range over 256 and clipped at 0;
    int8 is clipped at 0 and doubled.

    Raises:
        AttributeError: If the images are neither floats nor integers (booleans included).
    """
    kind = images.dtype.kind
    if kind == "u" and images.dtype.itemsize == 1:
        return images
    if kind in "iu":
        info = np.iinfo(images.dtype)
        if info.max > 255:
            scaled = np.floor_divide(images, (int(info.max) + 1) // 256)
            return np.clip(scaled, 0, 255).astype(np.uint8)
        return np.clip(images, 0, 127).astype(np.uint8) * np.uint8(2)
    if kind != "f" and not (kind == "V" and images.dtype.names is None):
        raise AttributeError("image dtype must be either floating point or integer")
    scaled = images * images.dtype.type(255.5)
    scaled = np.where(np.isnan(scaled), 0, np.clip(scaled, 0, 255))
    return scaled.astype(np.uint8)


def _png(image: np.ndarray) -> bytes:
    """One [height, width, channels] uint8 image encoded as PNG, as ``tf.image.encode_png`` does.

    Raises:
        ImportError: If Pillow is not installed.
        ValueError: If the image has no pixel or not 1 to 4 channels.
    """
    try:
        from PIL import Image
    except ImportError as error:
        raise ImportError("write_images encodes PNG with Pillow: `pip install pillow`.") from error
    height, width, channels = image.shape
    if not 1 <= channels <= 4:
        raise ValueError(f"image must have 1, 2, 3, or 4 channels, got {channels}")
    if not height or not width:
        raise ValueError(f"PNG encoding failed: an image of shape {image.shape} has no pixel")
    buffer = io.BytesIO()
    Image.fromarray(image[..., 0] if channels == 1 else image).save(buffer, format="PNG")
    return buffer.getvalue()


def _wav(audio: np.ndarray, sample_rate: int) -> bytes:
    """One [frames, channels] float32 clip as ``tf.audio.encode_wav`` encodes it (16-bit PCM).

    A sample ``x`` becomes ``round(x * 32768)`` (halves away from zero), clipped to the int16
    range; NaN becomes 0.

    Raises:
        ValueError: If the clip has no channel or the sample rate is not positive.
    """
    samples = np.nan_to_num(audio.astype(np.float64), nan=0.0) * 32768.0
    rounded = np.trunc(samples + np.copysign(0.5, samples))
    pcm = np.clip(rounded, -32768, 32767).astype("<i2")
    buffer = io.BytesIO()
    try:
        with wave.open(buffer, "wb") as clip:
            clip.setnchannels(audio.shape[1])
            clip.setsampwidth(2)
            clip.setframerate(sample_rate)
            clip.writeframes(pcm.tobytes())
    except wave.Error as error:
        raise ValueError(f"cannot encode WAV: {error}") from error
    return buffer.getvalue()


def _bucket_count(buckets: Any) -> int:
    """The bucket count ``tf.summary.histogram`` takes: an int32 (``None``: 30; below 0: 0).

    Raises:
        TypeError: If ``buckets`` is not an int32 or a Python integer in its range.
    """
    if buckets is None:
        return _DEFAULT_BUCKETS
    fits = isinstance(buckets, int) and -(2**31) <= buckets < 2**31
    if isinstance(buckets, bool | np.bool_) or not (fits or isinstance(buckets, np.int32)):
        kind = np.asarray(buckets).dtype
        raise TypeError(f"tensor must be of type tf.int32; got {kind} ({buckets!r})")
    return max(0, int(buckets))


def _summary_metadata(metadata: Any) -> summary_pb2.SummaryMetadata | None:
    """What ``tf.summary.write(..., metadata=metadata)`` writes as the value's metadata.

    ``None`` writes none; a proto (TensorBoard's or TensorFlow's) or its serialized bytes write
    it; bytes that do not parse write an empty one, as TensorFlow does.

    Raises:
        TypeError: If ``metadata`` is of another type.
    """
    if metadata is None:
        return None
    if hasattr(metadata, "SerializeToString"):
        metadata = metadata.SerializeToString()
    if isinstance(metadata, str):
        metadata = metadata.encode()
    if not isinstance(metadata, bytes):
        raise TypeError(f"Cannot convert {metadata!r} to EagerTensor of dtype string")
    try:
        return summary_pb2.SummaryMetadata.FromString(metadata)
    except message.DecodeError:
        return summary_pb2.SummaryMetadata()


def _flatten(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, Any]]:
    """``(dotted name, value)`` pairs of nested hyperparameters, as CLU flattens them.

    Mappings (and anything with ``items``) and sequences are entered (a sequence's keys are its
    indices); ``None`` becomes ``""``.
    """
    pairs: list[tuple[str, Any]] = []
    for key, value in tree.items():
        if isinstance(value, Mapping) or hasattr(value, "items"):
            pairs += _flatten(value, (*prefix, key))
        elif isinstance(value, list | tuple):
            pairs += _flatten({str(i): item for i, item in enumerate(value)}, (*prefix, key))
        else:
            pairs.append((".".join((*prefix, key)), "" if value is None else value))
    return pairs


def _histogram(array: np.ndarray, buckets: int | None) -> tuple[np.ndarray, np.ndarray] | None:
    """CLU's logged histogram of ``array``: counts and edges, or ``None`` if it is empty."""
    buckets = buckets or _DEFAULT_BUCKETS
    if buckets < 2:
        logging.log_first_n(
            logging.WARNING, "num_buckets was automatically changed from %d to 2", 1, buckets
        )
        buckets = 2
    if array.size == 0:
        return None
    high, low = np.max(array), np.min(array)
    if high == low:
        return np.asarray([array.size], np.int64), np.asarray([high - 0.5, high + 0.5], np.float64)
    counts, edges = np.histogram(array, bins=buckets, range=(low, high))
    return counts, np.asarray(edges, np.float64)


def _histogram_line(counts: np.ndarray, edges: np.ndarray) -> str:
    """CLU's text of a histogram: right-open buckets, the last one closed."""
    items = [f"[{edges[i]:.3g}, {edges[i + 1]:.3g}): {n}" for i, n in enumerate(counts[:-1])]
    items.append(f"[{edges[-2]:.3g}, {edges[-1]:.3g}]: {counts[-1]}")
    return ", ".join(items)


class _LoggingWriter:
    """Logs every call at INFO with absl, line for line as CLU's ``LoggingWriter``."""

    def write_summaries(
        self, step: int, values: Mapping[str, Any], metadata: Mapping[str, Any] | None = None
    ) -> None:
        shapes = {k: v.shape for k, v in values.items()}
        logging.info("[%d] Got raw tensors: %s.", step, shapes)

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        values = [
            f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in sorted(scalars.items())
        ]
        logging.info("[%d] %s", step, ", ".join(values))

    def write_images(self, step: int, images: Mapping[str, Any]) -> None:
        logging.info("[%d] Got images: %s.", step, {k: v.shape for k, v in images.items()})

    def write_videos(self, step: int, videos: Mapping[str, Any]) -> None:
        logging.info("[%d] Got videos: %s.", step, {k: v.shape for k, v in videos.items()})

    def write_audios(self, step: int, audios: Mapping[str, Any], *, sample_rate: int) -> None:
        logging.info("[%d] Got audios: %s.", step, {k: v.shape for k, v in audios.items()})

    def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
        logging.info("[%d] Got texts: %s.", step, texts)

    def write_histograms(
        self, step: int, arrays: Mapping[str, Any], num_buckets: Mapping[str, int] | None = None
    ) -> None:
        num_buckets = num_buckets or {}
        for key, value in arrays.items():
            histogram = _histogram(np.asarray(value), num_buckets.get(key))
            if histogram is not None:
                line = _histogram_line(*histogram)
                logging.info("[%d] Histogram for %r = {%s}", step, key, line)

    def write_hparams(self, hparams: Mapping[str, Any]) -> None:
        logging.info("[Hyperparameters] %s", hparams)

    def flush(self) -> None:
        logging.flush()

    def close(self) -> None:
        self.flush()


class _EventFileWriter(event_file_writer.EventFileWriter):
    """TensorBoard's ``EventFileWriter``, its file opened without ``tensorboard.compat.tf``.

    The constructor is ``EventFileWriter``'s (same file name, queue and first event) but for the
    file system: ``tensorboard.compat.tf`` is TensorFlow where it is installed, imported at the
    first use; TensorBoard's own ``gfile`` is used instead. Writing, flushing and closing are
    ``EventFileWriter``'s.
    """

    def __init__(self, logdir: str) -> None:
        self._logdir = logdir
        gfile.makedirs(logdir)
        uid = event_file_writer._global_uid.get()  # shared with every EventFileWriter
        host, pid = socket.gethostname(), os.getpid()
        name = f"events.out.tfevents.{int(time.time()):010d}.{host}.{pid}.{uid}"
        self._file_name = os.path.join(logdir, name)
        self._general_file_writer = gfile.GFile(self._file_name, "wb")
        self._async_writer = event_file_writer._AsyncWriter(
            RecordWriter(self._general_file_writer), 10, 120
        )
        source = event_pb2.SourceMetadata(writer="tensorboard.summary.writer.event_file_writer")
        self.add_event(
            event_pb2.Event(
                wall_time=time.time(), file_version="brain.Event:2", source_metadata=source
            )
        )
        self.flush()


class _SummaryWriter:
    """Writes the event files CLU's ``SummaryWriter`` (``tf.summary``) writes, without TensorFlow.

    Its file is closed (so flushed) when it is garbage-collected or at exit, as TensorFlow's.
    """

    def __init__(self, logdir: str) -> None:
        self._logdir = logdir
        self._file = _EventFileWriter(logdir)
        self._close = weakref.finalize(self, self._file.close)

    def _write(self, step: Any, summary: summary_pb2.Summary) -> None:
        """Appends ``summary`` at ``step`` (converted as ``tf.summary`` converts it)."""
        event = event_pb2.Event(wall_time=time.time(), step=_integer(step, 64), summary=summary)
        self._file.add_event(event)

    def _check_open(self) -> None:
        """Raises ``RuntimeError`` once closed, as a closed ``tf.summary`` writer does."""
        if not self._close.alive:
            raise RuntimeError(f"The event file writer of {self._logdir!r} is already closed")

    def write_summaries(
        self, step: int, values: Mapping[str, Any], metadata: Mapping[str, Any] | None = None
    ) -> None:
        self._check_open()
        for key, value in values.items():
            md = _summary_metadata(metadata.get(key) if metadata is not None else None)
            tensor = tensor_util.make_tensor_proto(np.asarray(value))
            value_pb = summary_pb2.Summary.Value(tag=key, tensor=tensor, metadata=md)
            self._write(step, summary_pb2.Summary(value=[value_pb]))

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        self._check_open()
        for key, value in scalars.items():
            self._write(step, scalar_pb(_tag(key, "scalar_summary"), _scalar(value)))

    def write_images(self, step: int, images: Mapping[str, Any]) -> None:
        self._check_open()
        md = image_metadata.create_summary_metadata(display_name=None, description=None)
        for key, value in images.items():
            tag, array = _tag(key, "image_summary"), np.asarray(value)
            array = array[None] if array.ndim == 3 else array
            if array.ndim != 4:
                raise ValueError(f"Tensor must have rank 4. Received shape {array.shape}")
            array = _uint8_images(array)
            content = [str(array.shape[2]).encode(), str(array.shape[1]).encode()]
            content += [_png(image) for image in array]
            tensor = tensor_util.make_tensor_proto(np.array(content, dtype=object))
            value_pb = summary_pb2.Summary.Value(tag=tag, tensor=tensor, metadata=md)
            self._write(step, summary_pb2.Summary(value=[value_pb]))

    def write_videos(self, step: int, videos: Mapping[str, Any]) -> None:
        logging.log_first_n(logging.WARNING, "SummaryWriter does not support writing videos.", 1)

    def write_audios(self, step: int, audios: Mapping[str, Any], *, sample_rate: int) -> None:
        self._check_open()
        encoding = audio_metadata.Encoding.Value("WAV")
        md = audio_metadata.create_summary_metadata(None, None, encoding=encoding)
        for key, value in audios.items():
            tag, array = _tag(key, "audio_summary"), np.asarray(value)
            if array.ndim != 3:
                raise ValueError(f"Tensor must have rank 3. Received shape {array.shape}")
            if array.dtype != np.float32:
                raise ValueError(f"EncodeWav expects float32 audio, got {array.dtype}")
            rate = _integer(sample_rate, 32)
            clips = np.empty((len(array), 2), dtype=object)
            clips[:, 0] = [_wav(clip, rate) for clip in array]
            clips[:, 1] = b""
            tensor = tensor_util.make_tensor_proto(clips, dtype=np.object_)
            value_pb = summary_pb2.Summary.Value(tag=tag, tensor=tensor, metadata=md)
            self._write(step, summary_pb2.Summary(value=[value_pb]))

    def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
        self._check_open()
        for key, value in texts.items():
            self._write(step, text_pb(_tag(key, "text_summary"), value))

    def write_histograms(
        self, step: int, arrays: Mapping[str, Any], num_buckets: Mapping[str, int] | None = None
    ) -> None:
        self._check_open()
        for key, value in arrays.items():
            buckets = _bucket_count(None if num_buckets is None else num_buckets.get(key))
            tag = _tag(key, "histogram_summary")
            self._write(step, histogram_pb(tag, np.asarray(value), buckets=buckets))

    def write_hparams(self, hparams: Mapping[str, Any]) -> None:
        self._check_open()
        self._write(0, hparams_pb(dict(_flatten(hparams))))

    def flush(self) -> None:
        if self._close.alive:
            self._file.flush()

    def close(self) -> None:
        self._close()


class _Background:
    """CLU's ``AsyncWriter`` around one writer, on a thread shared with the other writers.

    Each call is queued to the thread. An exception raised there is kept, logged, and raised
    again as ``clu.asynclib.Pool`` raises it: at the next call (which is still queued) once it
    happened, or at ``flush``; one kept exception per raise, oldest first.
    """

    def __init__(self, writer: Any, thread: concurrent.futures.ThreadPoolExecutor) -> None:
        self._writer = writer
        self._thread = thread
        self._errors: collections.deque[BaseException] = collections.deque()
        self._lock = threading.Lock()

    def call(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Queues ``writer.method(*args, **kwargs)``; raises a kept exception if there is one."""
        pending = bool(self._errors)
        self._thread.submit(self._run, getattr(self._writer, method), args, kwargs)
        if pending:
            try:
                self._raise_kept()
            except AsyncError as error:
                raise AsyncError(_ASYNC_HINT) from error

    def _run(self, function: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        try:
            function(*args, **kwargs)
        except Exception as error:
            with self._lock:
                self._errors.append(error)
            logging.exception("Error in producer thread for %s", "AsyncWriter")

    def _raise_kept(self) -> None:
        if self._errors:
            with self._lock:
                error = self._errors.popleft()
            raise AsyncError(f"Error '{error}' occurred ASYNCHRONOUSLY.") from error

    def flush(self) -> None:
        """Waits for the queued calls, raises a kept exception, and flushes the writer."""
        try:
            self._thread.submit(lambda: None).result()
            self._raise_kept()
        finally:
            self._writer.flush()

    def close(self) -> None:
        """Flushes (raising a kept exception) and closes the writer."""
        try:
            self.flush()
        finally:
            self._writer.close()


class Writer:
    """CLU's ``MetricWriter`` methods over an absl log and, unless it only logs, event files.

    Each call goes to the logging writer and then to the event writer, directly or (when
    asynchronous) through one background thread, as CLU's ``MultiWriter`` and
    ``AsyncMultiWriter`` do. Create it with [`create`][flax_cyclic._event_writer.create].
    """

    def __init__(self, writers: list[Any], *, asynchronous: bool) -> None:
        if asynchronous:
            thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="AsyncWriter")
            writers = [_Background(writer, thread) for writer in writers]
        self._writers = tuple(writers)

    def _each(self, method: str, *args: Any, **kwargs: Any) -> None:
        """Calls ``method`` of each writer in turn, the first exception stopping the rest."""
        for writer in self._writers:
            if isinstance(writer, _Background):
                writer.call(method, args, kwargs)
            else:
                getattr(writer, method)(*args, **kwargs)

    def write_summaries(
        self, step: int, values: Mapping[str, Any], metadata: Mapping[str, Any] | None = None
    ) -> None:
        """Writes tensors as they are, each with its ``SummaryMetadata`` (proto or bytes)."""
        self._each("write_summaries", step, values, metadata)

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        """Writes each scalar (a number or an array of shape ``()``) as float32 at ``step``."""
        self._each("write_scalars", step, scalars)

    def write_images(self, step: int, images: Mapping[str, Any]) -> None:
        """Writes images, ``[N, H, W, C]`` or ``[H, W, C]`` with C in 1 to 4, as PNG."""
        self._each("write_images", step, images)

    def write_videos(self, step: int, videos: Mapping[str, Any]) -> None:
        """Logs the videos' shapes; event files get none (a warning, once, as in CLU)."""
        self._each("write_videos", step, videos)

    def write_audios(self, step: int, audios: Mapping[str, Any], *, sample_rate: int) -> None:
        """Writes float32 audio clips ``[N, T, C]`` in [-1, 1] as 16-bit WAV."""
        self._each("write_audios", step, audios, sample_rate=sample_rate)

    def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
        """Writes text snippets (Markdown in TensorBoard)."""
        self._each("write_texts", step, texts)

    def write_histograms(
        self, step: int, arrays: Mapping[str, Any], num_buckets: Mapping[str, int] | None = None
    ) -> None:
        """Writes histograms of the arrays, ``num_buckets`` buckets per name (default 30)."""
        self._each("write_histograms", step, arrays, num_buckets)

    def write_hparams(self, hparams: Mapping[str, Any]) -> None:
        """Writes hyperparameters (nested ones flattened to dotted names) at step 0."""
        self._each("write_hparams", hparams)

    def flush(self) -> None:
        """Writes out what is pending (waiting for the background thread, if any)."""
        for writer in self._writers:
            writer.flush()

    def close(self) -> None:
        """Flushes and closes the writers; a write after it raises ``RuntimeError``."""
        for writer in self._writers:
            writer.close()


def create(logdir: str, *, just_logging: bool, asynchronous: bool) -> Writer:
    """The writer ``clu.metric_writers.create_default_writer`` creates, without TensorFlow.

    Args:
        logdir: The directory of the event files (created if missing).
        just_logging: Only log with absl (INFO), write no event file.
        asynchronous: Write in one background thread; an exception raised there is raised
            again as [`AsyncError`][flax_cyclic._event_writer.AsyncError] at the next call,
            ``flush`` or ``close``.

    Returns:
        A writer with the methods of CLU's ``MetricWriter``.
    """
    writers: list[Any] = [_LoggingWriter()]
    if not just_logging:
        writers.append(_SummaryWriter(os.fspath(logdir)))
    return Writer(writers, asynchronous=asynchronous)
