"""BatchNorm's running statistics recomputed for new weights (PyTorch's ``update_bn``).

An average of weights (SWA) was never trained as such, so the running means and variances its
``nnx.BatchNorm`` layers hold belong to other weights. [`update_batch_stats`] recomputes them
with one pass over training batches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from flax_cyclic import _modes

__all__ = ["update_batch_stats"]


def update_batch_stats(
    model: nnx.Module,
    batches: Iterable[Any],
    *,
    forward: Callable[[nnx.Module, Any], Any] | None = None,
) -> int:
    """Sets every ``nnx.BatchNorm``'s running statistics to their mean over ``batches``.

    As PyTorch's ``torch.optim.swa_utils.update_bn``: each batch's statistics (those a training
    step normalises with) count equally, whatever the layer's ``momentum``. Unlike it, the pass
    runs in evaluation mode for every other layer (``nnx.Dropout`` off), so the statistics are
    those of the deterministic network the evaluation runs; and the variance is the biased one
    Flax keeps (PyTorch keeps the unbiased). Nothing but the BatchNorm statistics changes; the
    model's mode and every layer's ``momentum`` are left as they were.

    Args:
        model: The model, updated in place.
        batches: Training batches: ``(inputs, labels)`` pairs, mappings with ``'image'``, or
            arrays of inputs (for ``forward=None``). Give batches of equal size for the
            statistics of the whole set.
        forward: ``forward(model, batch)`` runs the model on a batch; by default
            ``model(inputs)``.

    Returns:
        The number of batches read (``0``, and nothing read, for a model without BatchNorm).

    Raises:
        ValueError: If ``batches`` is empty (for a model with BatchNorm).

    Example:
        >>> import numpy as np
        >>> from flax import nnx
        >>> rngs = nnx.Rngs(0)
        >>> model = nnx.Sequential(nnx.Linear(2, 3, rngs=rngs), nnx.BatchNorm(3, rngs=rngs))
        >>> batches = [np.ones((4, 2), np.float32), np.zeros((4, 2), np.float32)]
        >>> update_batch_stats(model, batches)
        2
    """
    norms = [module for _, module in nnx.iter_modules(model) if isinstance(module, nnx.BatchNorm)]
    if not norms:
        return 0
    saved = [(norm, norm.momentum) for norm in norms]
    sums: list[Any] | None = None
    count = 0
    with _modes.mode(model, training=False):
        try:
            for norm in norms:  # the batch's own statistics, written over the running ones
                norm.use_running_average, norm.momentum = False, 0.0
            for batch in batches:
                stats = _batch_statistics(model, batch, forward or _default_forward)
                sums = stats if sums is None else jax.tree.map(jnp.add, sums, stats)
                count += 1
        finally:
            for norm, momentum in saved:
                norm.momentum = momentum
    if sums is None:
        raise ValueError("update_batch_stats: `batches` has no batches; give training batches.")
    for norm, (mean, var) in zip(norms, sums, strict=True):
        norm.mean.set_value((mean / count).astype(norm.mean.get_value().dtype))
        norm.var.set_value((var / count).astype(norm.var.get_value().dtype))
    return count


@nnx.jit(static_argnums=2)
def _batch_statistics(
    model: nnx.Module, batch: Any, forward: Callable[[nnx.Module, Any], Any]
) -> list[tuple[jax.Array, jax.Array]]:
    """Each BatchNorm's statistics of ``batch`` (float32), by one forward pass."""
    forward(model, batch)
    return [
        (module.mean.get_value().astype(jnp.float32), module.var.get_value().astype(jnp.float32))
        for _, module in nnx.iter_modules(model)
        if isinstance(module, nnx.BatchNorm)
    ]


def _default_forward(model: nnx.Module, batch: Any) -> Any:
    if isinstance(batch, Mapping):
        return model(batch["image"])
    if isinstance(batch, (tuple, list)):
        return model(batch[0])
    return model(batch)
