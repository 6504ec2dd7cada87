"""Means of per-step metrics, for the Trainer's history and the metrics logger."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

__all__ = ["mean_metrics"]


def mean_metrics(metrics: list[Mapping[str, Any]]) -> dict[str, float]:
    """The mean of each metric over steps: one device-to-host transfer, nothing to compile."""
    host = jax.device_get(metrics)
    return {name: float(np.mean([m[name] for m in host])) for name in host[0]}
