"""The default train and eval steps: softmax cross-entropy classification.

The [`Trainer`][flax_cyclic.Trainer] and [`lr_find`][flax_cyclic.lr_find] use them unless given
steps of their own. A step is a plain function of the model, the optimizer and a batch; the
caller compiles it (``nnx.jit``).

Examples:
    >>> import numpy as np, optax
    >>> from flax import nnx
    >>> from flax_cyclic.steps import classification_eval_step, classification_train_step
    >>> model = nnx.Linear(4, 3, rngs=nnx.Rngs(0))
    >>> optimizer = nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)
    >>> batch = (np.ones((8, 4), np.float32), np.zeros(8, np.int32))
    >>> sorted(nnx.jit(classification_train_step)(model, optimizer, batch))
    ['accuracy', 'loss']
    >>> sorted(classification_eval_step(model, {"image": batch[0], "label": batch[1]}))
    ['accuracy', 'loss']
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

__all__ = ["Metrics", "classification_eval_step", "classification_train_step"]

#: What a step returns: metric names to scalars (device arrays).
Metrics = Mapping[str, jax.Array]
"""What a train or eval step returns: scalar metrics by name, e.g. ``{'loss': loss}``."""

_BATCH_FORMATS = (
    "an (inputs, labels) pair, or a mapping with 'image' and 'label' (as the MNIST example's "
    "pipeline makes); for other batches, pass your own train_step / eval_step"
)


def _inputs_and_labels(batch: Any) -> tuple[jax.Array, jax.Array]:
    if isinstance(batch, Mapping):
        missing = [key for key in ("image", "label") if key not in batch]
        if missing:
            raise ValueError(
                f"The default train and eval steps take {_BATCH_FORMATS}; got a mapping "
                f"without {missing} (its keys are {sorted(map(str, batch))})."
            )
        return batch["image"], batch["label"]
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        if isinstance(batch, (tuple, list)):
            described = f"a {type(batch).__name__} of {len(batch)} elements"
        elif hasattr(batch, "shape"):
            described = f"one array of shape {tuple(batch.shape)}"
        else:
            described = f"a {type(batch).__name__}"
        raise ValueError(
            f"The default train and eval steps take {_BATCH_FORMATS}; got {described}."
        )
    inputs, labels = batch
    return inputs, labels


def _classification_metrics(logits: jax.Array, labels: jax.Array) -> dict[str, jax.Array]:
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    accuracy = jnp.mean(jnp.argmax(logits, axis=-1) == labels)
    return {"loss": loss, "accuracy": accuracy}


def classification_train_step(
    model: nnx.Module, optimizer: nnx.Optimizer, batch: Any, *, rngs: nnx.Rngs | None = None
) -> Metrics:
    """The default train step: softmax cross-entropy on integer labels.

    ``batch`` is ``(inputs, labels)`` or a mapping with ``'image'`` and ``'label'``; the model
    maps inputs to logits. Returns the batch's ``loss`` and ``accuracy``.

    Args:
        model: The model, called as ``model(inputs)``, or ``model(inputs, rngs=rngs)`` when
            ``rngs`` is given (the Flax NNX tutorials' style for ``nnx.Dropout``).
        optimizer: Its ``nnx.Optimizer``, updated in place.
        batch: The batch.
        rngs: Random streams for the model, e.g. ``nnx.Rngs(dropout=0)``; the
            [`Trainer`][flax_cyclic.Trainer] passes its ``rngs`` here.
    """
    inputs, labels = _inputs_and_labels(batch)

    def loss_fn(model: nnx.Module, rngs: nnx.Rngs | None) -> tuple[jax.Array, dict[str, jax.Array]]:
        logits = model(inputs) if rngs is None else model(inputs, rngs=rngs)
        metrics = _classification_metrics(logits, labels)
        return metrics["loss"], metrics

    # rngs is an argument (not a closure): its counters advance inside the traced function.
    (_, metrics), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model, rngs)
    optimizer.update(model, grads)
    return metrics


def classification_eval_step(model: nnx.Module, batch: Any) -> Metrics:
    """The default eval step: ``loss`` and ``accuracy`` of one batch."""
    inputs, labels = _inputs_and_labels(batch)
    return _classification_metrics(model(inputs), labels)
