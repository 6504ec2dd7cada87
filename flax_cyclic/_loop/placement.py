"""Placement on a device mesh: the state replicated, each batch split over the data axis."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import jax
import numpy as np
from flax import nnx

__all__ = ["Placement"]


class Placement:
    """Where the Trainer's state and batches go: nowhere (one device) or onto ``mesh``.

    Args:
        mesh: A ``jax.sharding.Mesh``, or ``None``.
        data_axis: The mesh axis the batch dimension is split over.

    Raises:
        TypeError: If ``mesh`` is not a ``jax.sharding.Mesh``.
        ValueError: If ``data_axis`` names no axis of the mesh.
    """

    def __init__(self, mesh: Any, data_axis: str) -> None:
        self.mesh = mesh
        self._data_axis = data_axis
        self._batch_sharding, self._data_parts = batch_placement(mesh, data_axis)

    def place(self, objects: Iterable[Any]) -> None:
        """Replicates every model and optimizer array that is not yet sharded on the mesh."""
        if self.mesh is None:
            return
        replicated = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec())
        local = replicated.is_fully_addressable

        def replicate(leaf: Any) -> Any:
            sharding = getattr(leaf, "sharding", None)
            if isinstance(sharding, jax.sharding.NamedSharding) and sharding.mesh == self.mesh:
                return leaf
            if local:
                return jax.device_put(leaf, replicated)
            # Over several processes each puts its own copy on its devices. ``device_put`` of a
            # process's array can give a global array whose shards cannot be read back (seen on
            # examples/mnist's momentum: Orbax's save failed on it); a step's output used to
            # replace it, but a hyperparameter that passes through every step keeps it.
            whole = leaf if isinstance(leaf, jax.Array) else np.asarray(leaf)
            return jax.make_array_from_callback(whole.shape, replicated, whole.__getitem__)

        for obj in objects:
            nnx.update(obj, jax.tree.map(replicate, nnx.state(obj)))

    def shard(self, batch: Any, axis: int = 0) -> Any:
        """Places a batch on the mesh, split over the data axis (this process's part of it).

        ``axis``: the batch dimension, 1 for the batches of a dispatch stacked on axis 0.
        """
        if self._batch_sharding is None:
            return batch
        sharding = self._batch_sharding
        if axis:
            sharding = jax.sharding.NamedSharding(
                sharding.mesh, jax.sharding.PartitionSpec(None, self._data_axis)
            )

        def place(path: Any, leaf: Any) -> jax.Array:
            local = np.asarray(leaf)
            parts = self._data_parts
            if local.ndim <= axis or local.shape[axis] % parts:
                shape = "a scalar" if local.ndim <= axis else f"of shape {local.shape[axis:]}"
                raise ValueError(
                    f"Trainer: the batch leaf {jax.tree_util.keystr(path) or 'batch'} is {shape},"
                    f" but each batch leaf is split over the mesh axis {self._data_axis!r} on its "
                    f"first dimension, into {parts} parts on this process: give every leaf a "
                    f"leading batch dimension that is a multiple of {parts}."
                )
            return jax.make_array_from_process_local_data(sharding, local)

        return jax.tree_util.tree_map_with_path(place, batch)


def batch_placement(mesh: Any, data_axis: str) -> tuple[jax.sharding.NamedSharding | None, int]:
    """The batch's sharding on ``mesh`` (checked) and into how many parts this process's is split.

    ``(None, 1)`` without a mesh.
    """
    if mesh is None:
        return None, 1
    if not isinstance(mesh, jax.sharding.Mesh):
        raise TypeError(f"Trainer: `mesh` must be a jax.sharding.Mesh, got {mesh!r}.")
    if data_axis not in mesh.axis_names:
        raise ValueError(
            f"Trainer: `data_axis` must name an axis of the mesh, got data_axis="
            f"{data_axis!r} for a mesh with axes {mesh.axis_names}."
        )
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(data_axis))
    return sharding, local_data_parts(mesh, data_axis)


def local_data_parts(mesh: jax.sharding.Mesh, data_axis: str) -> int:
    """Into how many parts this process's batch is split: its devices along the data axis."""
    axis = mesh.axis_names.index(data_axis)
    local = {device.id for device in jax.local_devices()}
    return len(
        {index[axis] for index, device in np.ndenumerate(mesh.devices) if device.id in local}
    )
