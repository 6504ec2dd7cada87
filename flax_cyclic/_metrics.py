"""Device values read on the host: metric means, and this process's copy of a global array."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

__all__ = ["local_copy", "mean_metrics"]


def mean_metrics(metrics: list[Mapping[str, Any]]) -> dict[str, float]:
    """The mean of each metric over steps, read on the host: nothing to compile.

    Each value is read with ``np.asarray`` (a fraction of a microsecond for a scalar that is
    ready), not ``jax.device_get`` of the whole list, which costs microseconds per value: at an
    epoch's end that was more than the train steps' own host time.
    """
    return {
        name: float(np.mean([np.asarray(local_copy(m[name])) for m in metrics]))
        for name in metrics[0]
    }


def local_copy(value: Any) -> Any:
    """This process's copy of a (replicated) array, so that the host can read it.

    In a multi-process job a global array is not fully addressable; any of its local shards
    holds the whole value when it is replicated (a scalar hyperparameter, a reduction).
    """
    if isinstance(value, jax.Array) and not value.is_fully_addressable:
        return value.addressable_data(0)
    return value
