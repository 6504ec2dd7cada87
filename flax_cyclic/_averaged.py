"""A running average of a model's weights, kept on the device and updated inside a train step.

[`AveragedWeights`] is an ``nnx.Module`` of float32 running means, one per floating-point
``nnx.Param`` of the model, with the count of snapshots averaged in and of those refused as
non-finite. ``take`` is pure NNX code: a Trainer runs it inside its compiled step, after the
update, for every step of a dispatch (the steps to take planned on the host); a hand-written
loop runs it through ``nnx.jit`` after its own update. Either way the arithmetic is this one.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from flax_cyclic.averages import WeightAverage, update_average

__all__ = ["SNAPSHOT", "AveragedWeights", "SnapshotBuffer", "averaged_paths", "state_values"]

#: What a snapshot of a model holds: its parameters and BatchNorm's running statistics.
SNAPSHOT = nnx.Any(nnx.Param, nnx.BatchStat)


class Snapshots(nnx.Variable[jax.Array]):
    """A counter of an average (snapshots taken, or refused): never a parameter."""


class RunningMean(nnx.Variable[jax.Array]):
    """A float32 running mean of one parameter: never trained, never a parameter."""


def averaged_paths(model: nnx.Module, kinds: Any = nnx.Param) -> list[tuple[Any, ...]]:
    """The paths of the floating-point variables of ``kinds``: by default every ``nnx.Param``.

    Integer parameters and every other kind of state (RNG keys and counters, BatchNorm's
    running statistics) are never averaged: the averaged model takes them from the model. A
    snapshot holds the parameters and the running statistics (``SNAPSHOT``).
    """
    return [
        path
        for path, value in nnx.to_flat_state(nnx.state(model, kinds))
        if jnp.issubdtype(jnp.asarray(value.get_value()).dtype, jnp.floating)
    ]


def state_values(model: nnx.Module, paths: tuple[Any, ...], kinds: Any) -> list[Any]:
    """The arrays ``model`` holds at ``paths`` (of ``averaged_paths(model, kinds)``)."""
    flat = dict(nnx.to_flat_state(nnx.state(model, kinds)))
    return [flat[path].get_value() for path in paths]


class AveragedWeights(nnx.Module):
    """Running means of a model's floating-point parameters (SWA) or their EMA.

    Args:
        model: The model whose parameters are averaged (their structure and shapes).
        decay: ``None`` for the equal-weight mean of every snapshot taken (stochastic weight
            averaging); else the exponential moving average's decay in ``[0, 1)``: the first
            snapshot starts it, each further one enters with weight ``1 - decay``.
        sparse: Snapshots at few steps (each cycle's end): the Trainer runs ``take`` between
            dispatches, ending one at each snapshot, instead of inside every step.
    """

    def __init__(self, model: nnx.Module, *, decay: float | None, sparse: bool = False) -> None:
        self.paths = tuple(averaged_paths(model))
        self.decay = decay
        self.sparse = sparse
        params = dict(nnx.to_flat_state(nnx.state(model, nnx.Param)))
        self.means = nnx.List(
            [
                RunningMean(jnp.zeros_like(params[path].get_value(), jnp.float32))
                for path in self.paths
            ]
        )
        self.count = Snapshots(jnp.zeros((), jnp.int32))
        self.refused = Snapshots(jnp.zeros((), jnp.int32))

    def take(self, model: nnx.Module, take: jax.Array) -> None:
        """Averages the model's parameters in where ``take`` is non-zero (traced, in place).

        [`update_average`][flax_cyclic.update_average]'s arithmetic: a snapshot with a
        non-finite parameter is not averaged in (``refused`` counts it), and a step that takes
        nothing costs a branch.
        """
        params = dict(nnx.to_flat_state(nnx.state(model, nnx.Param)))
        values = [params[path].get_value() for path in self.paths]
        average = WeightAverage(
            [mean.get_value() for mean in self.means],
            self.count.get_value(),
            self.refused.get_value(),
        )
        average = update_average(average, values, take=take, decay=self.decay)
        for variable, mean in zip(self.means, average.mean, strict=True):
            variable.set_value(mean)
        self.count.set_value(average.snapshots)
        self.refused.set_value(average.refused)

    def apply_to(self, model: nnx.Module) -> None:
        """Writes the averages into ``model``'s parameters (in place), in their own dtypes."""
        state = nnx.state(model, nnx.Param)
        flat = dict(nnx.to_flat_state(state))
        for path, mean in zip(self.paths, self.means, strict=True):
            variable = flat[path]
            variable.set_value(mean.get_value().astype(variable.get_value().dtype))
        nnx.update(model, nnx.from_flat_state(list(flat.items())))


class SnapshotBuffer(nnx.Module):
    """A copy of a model's parameters and BatchNorm statistics at one step, taken on the device.

    ``take(model, flag)`` copies them where ``flag`` is non-zero and keeps ``flag`` in
    ``step`` (a snapshot ensemble passes ``step + 1``): the hook that saves the copy checks it
    holds its step. Not part of a checkpoint (``checkpointed``): the snapshots are saved apart.

    Args:
        model: The model whose state is copied (its structure, shapes and dtypes).
    """

    checkpointed = False
    sparse = True  # taken between dispatches, at the snapshot's step

    def __init__(self, model: nnx.Module) -> None:
        self.paths = tuple(averaged_paths(model, SNAPSHOT))
        values = state_values(model, self.paths, SNAPSHOT)
        self.params = nnx.List([RunningMean(jnp.zeros_like(value)) for value in values])
        self.step = Snapshots(jnp.zeros((), jnp.int32))

    def take(self, model: nnx.Module, flag: jax.Array) -> None:
        """Copies the state where ``flag`` is non-zero (traced, in place)."""
        values = state_values(model, self.paths, SNAPSHOT)
        held = [copy.get_value() for copy in self.params]
        flag = jnp.asarray(flag, jnp.int32)
        copies, step = jax.lax.cond(
            flag != 0,
            lambda: (values, flag),
            lambda: (held, self.step.get_value()),
        )
        for variable, value in zip(self.params, copies, strict=True):
            variable.set_value(value)
        self.step.set_value(step)
