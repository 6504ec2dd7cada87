"""Weight averages of any pytree of parameters: SWA's running mean or an EMA, jit-safe.

The arithmetic of [`WeightAveraging`][flax_cyclic.WeightAveraging], as pure functions for a loop
that keeps its parameters as a pytree (a Linen ``TrainState.params``, optax's ``params``):
[`init_average`] makes the state, [`update_average`] takes a snapshot into it, inside or
outside ``jax.jit``. Checkpoint it with the rest of the state
(``Checkpointer.save(step, state={'train': state, 'average': average})``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["WeightAverage", "init_average", "update_average"]


class WeightAverage(NamedTuple):
    """The state of a weight average: a pytree, saved and restored like any other.

    Attributes:
        mean: The average, float32, with the structure of the parameters.
        snapshots: Snapshots averaged in (an int32 scalar).
        refused: Snapshots left out for a non-finite value (an int32 scalar).
    """

    mean: Any
    snapshots: jax.Array
    refused: jax.Array


def init_average(params: Any) -> WeightAverage:
    """An empty average of ``params``'s structure and shapes (its values are not taken).

    Raises:
        TypeError: If a leaf is not a floating-point array (integer state is never averaged:
            leave it out of the tree).

    Example:
        >>> import jax.numpy as jnp
        >>> average = init_average({"w": jnp.ones(2)})
        >>> int(average.snapshots)
        0
    """
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        if not jnp.issubdtype(jnp.asarray(leaf).dtype, jnp.floating):
            raise TypeError(
                f"init_average: the leaf {jax.tree_util.keystr(path)} is "
                f"{jnp.asarray(leaf).dtype}, not floating point; integer state is never "
                "averaged: pass the parameters without it."
            )
    mean = jax.tree.map(lambda leaf: jnp.zeros(jnp.shape(leaf), jnp.float32), params)
    return WeightAverage(mean, jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))


def update_average(
    average: WeightAverage, params: Any, *, take: Any = True, decay: float | None = None
) -> WeightAverage:
    """``average`` with ``params`` taken in where ``take`` is true (a jit-safe branch).

    The equal-weight mean of every snapshot (``decay=None``, stochastic weight averaging:
    ``mean += (params - mean) / (snapshots + 1)``), or an exponential moving average (the first
    snapshot starts it, each later one enters with weight ``1 - decay``). A snapshot with a
    non-finite value is never taken in: ``refused`` counts it and the mean stays as it was.
    The mean is kept in float32 whatever the parameters' dtype.

    Args:
        average: The average so far (from [`init_average`]).
        params: The parameters, of the structure the average was made for.
        take: Whether to take this snapshot: a bool or a traced boolean/integer (``0``: no).
        decay: ``None`` for the equal-weight mean; an EMA's decay in ``[0, 1)``.

    Returns:
        The new average (``average`` itself, bit for bit, where nothing is taken).

    Example:
        >>> import jax.numpy as jnp
        >>> average = init_average({"w": jnp.zeros(2)})
        >>> for value in (1.0, 2.0, 6.0):
        ...     average = update_average(average, {"w": jnp.full(2, value)})
        >>> average.mean["w"].tolist(), int(average.snapshots)
        ([3.0, 3.0], 3)
    """

    def taken(average: WeightAverage) -> WeightAverage:
        mean, count, refused = average
        leaves = jax.tree.leaves(params)
        finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves]))
        if decay is None:
            weight = 1.0 / (count + 1).astype(jnp.float32)
        else:
            weight = jnp.where(count == 0, 1.0, 1.0 - decay).astype(jnp.float32)
        new = jax.tree.map(
            lambda m, p: jnp.where(finite, m + weight * (jnp.asarray(p, jnp.float32) - m), m),
            mean,
            params,
        )
        step = finite.astype(jnp.int32)
        return WeightAverage(new, count + step, refused + 1 - step)

    return jax.lax.cond(jnp.asarray(take) != 0, taken, lambda average: average, average)
