"""Device values read on the host: metric means, and this process's copy of a global array."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["check_scalar_metrics", "local_copy", "mean_metrics"]


def check_scalar_metrics(owner: str, metrics: Mapping[str, Any], *, stacked: bool = False) -> None:
    """Refuses metrics that are not scalars: each is one number in History and TensorBoard.

    Only shapes are read (``np.shape``: a jax array's ``.shape``, no transfer and no wait for
    the device), so a loop can check the metrics of a step it has not waited for. Python
    numbers, numpy and jax scalars pass; anything of another shape, ``(1,)`` included, does
    not: averaged over its elements, a per-class metric would be logged as one number.

    Args:
        owner: Who checks, for the message (``'Trainer.fit'``, ``'MetricsLogger'``).
        metrics: Metric names to values, as a train or eval step returns them.
        stacked: The values carry a leading axis of steps (the metrics of several steps run
            in one dispatch, stacked): each step's value, after that axis, must be a scalar.

    Raises:
        TypeError: If a value is not a scalar; the message names each such metric, its shape,
            and the fix.

    Examples:
        >>> import numpy as np
        >>> check_scalar_metrics("Trainer.fit", {"loss": np.float32(0.5), "accuracy": 0.75})
        >>> check_scalar_metrics("Trainer.fit", {"accuracy": np.zeros(10)})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        TypeError: Trainer.fit: metrics must be scalars, but 'accuracy' has shape (10,). ...
    """
    shapes = {name: np.shape(value)[1 if stacked else 0 :] for name, value in metrics.items()}
    wrong = {name: shape for name, shape in shapes.items() if shape != ()}
    if not wrong:
        return
    listed = ", ".join(f"{name!r} has shape {shape}" for name, shape in wrong.items())
    name = next(iter(wrong))
    raise TypeError(
        f"{owner}: metrics must be scalars, but {listed}. Each metric is one number in History "
        "and TensorBoard, and is not averaged over its elements: return one scalar per element "
        f"(e.g. {{'{name}/0': ..., '{name}/1': ...}}), or reduce it in the step "
        f"(e.g. {{'{name}': jnp.mean(...)}})."
    )


def mean_metrics(
    metrics: list[Mapping[str, Any]], *, owner: str = "flax_cyclic"
) -> dict[str, float]:
    """The mean of each metric over steps, read on the host: the mean NumPy takes.

    Each metric's values are read into one host array (``host_column``), and averaged there.

    Args:
        metrics: One mapping of metric names to scalars per step.
        owner: Who asks, for the message of a metric that is not a scalar.

    Raises:
        TypeError: If a metric is not a scalar
            (``check_scalar_metrics``).
    """
    names = metrics[0].keys()
    if all(m.keys() == names for m in metrics):  # one array per metric: checked by its shape
        try:
            columns = {n: host_column([m[n] for m in metrics]) for n in names}
        except ValueError:  # ragged: not all scalars
            columns = {}
        if columns and all(column.shape == (len(metrics),) for column in columns.values()):
            return {name: float(np.mean(column)) for name, column in columns.items()}
    for step_metrics in metrics:
        check_scalar_metrics(owner, step_metrics)
    return {
        name: float(np.mean([np.asarray(local_copy(m[name])) for m in metrics]))
        for name in metrics[0]
    }


#: Device scalars stacked per read (``host_column``).
_CHUNK = 256


def host_column(values: list[Any]) -> np.ndarray:
    """Scalars (one per step) as one host array, each value bit for bit.

    Reading a device scalar with ``np.asarray`` costs microseconds (``jax.device_get`` of a
    list, more), which at an epoch's end added up to a share of the steps' own host time. So
    device scalars of one dtype are stacked on the device, ``_CHUNK`` per compiled call, and
    each stack is read at once; the rest (fewer than ``_CHUNK``, host values, a chunk whose
    arrays lie on different devices) are read one by one.

    Raises:
        ValueError: If the values are not all of one shape (NumPy's error).
    """
    values = [local_copy(value) for value in values]
    first, chunks = values[0], len(values) // _CHUNK
    if not (chunks and isinstance(first, jax.Array) and first.shape == ()):
        return np.asarray([np.asarray(value) for value in values])
    kind, dtype = type(first), first.dtype
    parts = []
    for start in range(0, chunks * _CHUNK, _CHUNK):
        chunk = values[start : start + _CHUNK]
        stacked = None
        if all(type(v) is kind and v.dtype == dtype for v in chunk):
            with contextlib.suppress(ValueError):  # placed on other devices: one by one
                stacked = np.asarray(_stacked()(*chunk))
        parts.append(stacked if stacked is not None else np.asarray([np.asarray(v) for v in chunk]))
    rest = values[chunks * _CHUNK :]
    if rest:
        parts.append(np.asarray([np.asarray(value) for value in rest]))
    return np.concatenate(parts)


@functools.cache
def _stacked() -> Callable[..., jax.Array]:
    """``jnp.stack`` of its arguments, compiled (once per dtype and placement)."""
    return jax.jit(lambda *values: jnp.stack(values))


def local_copy(value: Any) -> Any:
    """This process's copy of a (replicated) array, so that the host can read it.

    In a multi-process job a global array is not fully addressable; any of its local shards
    holds the whole value when it is replicated (a scalar hyperparameter, a reduction).
    """
    # One process addresses every device: no array to ask (asking costs microseconds each).
    if jax.process_count() > 1 and isinstance(value, jax.Array) and not value.is_fully_addressable:
        return value.addressable_data(0)
    return value
