"""Device values read on the host: metric means, and this process's copy of a global array."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

__all__ = ["local_copy", "mean_metrics"]


def mean_metrics(metrics: list[Mapping[str, Any]]) -> dict[str, float]:
    """The mean of each metric over steps: one device-to-host transfer, nothing to compile."""
    host = jax.device_get(metrics)
    return {name: float(np.mean([m[name] for m in host])) for name in host[0]}


def local_copy(value: Any) -> Any:
    """This process's copy of a (replicated) array, so that the host can read it.

    In a multi-process job a global array is not fully addressable; any of its local shards
    holds the whole value when it is replicated (a scalar hyperparameter, a reduction).
    """
    if isinstance(value, jax.Array) and not value.is_fully_addressable:
        return value.addressable_data(0)
    return value
