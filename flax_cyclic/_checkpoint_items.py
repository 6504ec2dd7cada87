"""What a checkpoint holds, checked: its step, JSON items, extra state, leaf shapes and dtypes.

The pure helpers of [`Checkpointer`][flax_cyclic.Checkpointer]: nothing here touches the disk.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx
from flax.nnx import graph

from flax_cyclic import _checks, _logging
from flax_cyclic._errors import CheckpointError
from flax_cyclic._json_state import NotJson, to_json
from flax_cyclic._metrics import local_copy

__all__ = [
    "RESTORE_HINT",
    "SAVE_HINT",
    "abstract_state",
    "as_metadata",
    "callback_states",
    "checked_step",
    "extra_states",
    "extra_unmatched",
    "leaf_problems",
    "non_finite_leaves",
    "put_back",
    "resumable",
    "saved_kind",
    "trainer_state",
    "training_state",
]

SAVE_HINT = "The number of train updates completed, e.g. step=100."
RESTORE_HINT = "One of Checkpointer.all_steps(), or None for the newest."


def checked_step(owner: str, step: Any, hint: str) -> int:
    """A checkpoint's step, the one rule of ``save`` and ``restore``: an integer ``>= 0``.

    NumPy integers are integers; a bool, a float (``2.0``), a string are refused: Orbax would
    write a directory ``2.0`` that no later run finds.
    """
    return _checks.integer(owner, "step", step, minimum=0, maximum=None, hint=hint)


_JSON_HINT = (
    "which JSON cannot hold exactly; return Python numbers/str/lists/dicts from {source} "
    "(e.g. float(x), int(n), array.tolist()). Nothing was written to {directory}."
)


def callback_states(callbacks: Any, directory: str) -> dict[str, Any]:
    """``save``'s ``callbacks`` as exact JSON, or a ``TypeError`` naming the callback."""
    if not isinstance(callbacks, Mapping) or not all(isinstance(key, str) for key in callbacks):
        raise TypeError(
            "Checkpointer.save: `callbacks` must map each callback's state_key to its "
            f"state_dict(), got {type(callbacks).__name__}; e.g. callbacks={{}}, or "
            "CallbackList.state_dict()."
        )
    states = {}
    for key, state in callbacks.items():
        try:
            states[key] = to_json(state)
        except NotJson as error:
            where = error.path or "its top level"
            hint = _JSON_HINT.format(source="state_dict", directory=directory)
            raise TypeError(
                f"Checkpointer.save: the state_dict() of the callback with state_key {key!r} "
                f"holds {error.what} at {where}, {hint}"
            ) from None
    return states


def trainer_state(trainer: Any, directory: str) -> dict[str, Any]:
    """``save``'s ``trainer`` as exact JSON, or a ``TypeError`` naming the key path."""
    if not isinstance(trainer, Mapping):
        raise TypeError(
            "Checkpointer.save: `trainer` must map names to JSON values, got "
            f"{type(trainer).__name__}; e.g. trainer={{'step': 100}}."
        )
    try:
        return dict(to_json(trainer))
    except NotJson as error:
        hint = _JSON_HINT.format(source="the loop", directory=directory)
        raise TypeError(
            f"Checkpointer.save: `trainer` holds {error.what} at {error.path or 'its top level'}, "
            f"{hint}"
        ) from None


# What a state= pytree may hold: arrays, numbers, and abstract arrays as restore targets.
_STATE_LEAVES = (jax.Array, np.ndarray, np.generic, int, float, jax.ShapeDtypeStruct)


def training_state(owner: str, model: Any, optimizer: Any, state: Any) -> dict[str, Any]:
    """The items of the training state: ``model`` and ``optimizer`` (NNX), or ``state`` (a pytree).

    Exactly one of the two forms; a leaf of ``state`` that is not an array or a number (which
    Orbax could not write, or would write as something else) is refused by its key path.
    """
    nnx_given = model is not None or optimizer is not None
    if nnx_given == (state is not None) or (nnx_given and (model is None or optimizer is None)):
        raise TypeError(
            f"{owner}: pass the training state as model= and optimizer= (NNX objects) or as "
            "state= (a pytree of arrays: a Linen TrainState, optax's (params, opt_state)), "
            f"one of the two; got model={_given(model)}, optimizer={_given(optimizer)}, "
            f"state={_given(state)}."
        )
    if nnx_given:
        return {"model": nnx.state(model), "optimizer": nnx.state(optimizer)}
    leaves = jax.tree_util.tree_flatten_with_path(state)[0]
    if not leaves:
        raise TypeError(f"{owner}: state= holds no arrays ({type(state).__name__}).")
    for path, leaf in leaves:
        if not isinstance(leaf, _STATE_LEAVES):
            raise TypeError(
                f"{owner}: state= holds a {type(leaf).__name__} at "
                f"{jax.tree_util.keystr(path) or 'its top level'}, which a checkpoint cannot "
                "hold; give arrays and numbers only (mark other fields static, as "
                "flax.struct.field(pytree_node=False) does for TrainState.apply_fn)."
            )
    return {"state": state}


def _given(value: Any) -> str:
    return "None" if value is None else type(value).__name__


def saved_kind(metadata: Any) -> str | None:
    """How a checkpoint's metadata says its training state was saved, if another way than asked."""
    if metadata.get("state") is not None:
        return "state"
    if metadata.get("model") is not None:
        return "model"
    return None


def extra_states(extra: Mapping[str, Any]) -> dict[str, Any]:
    """``save``'s and ``restore``'s ``extra``: NNX objects as their ``nnx.state``."""
    if not isinstance(extra, Mapping) or not all(isinstance(name, str) for name in extra):
        raise TypeError(
            "Checkpointer: `extra` must map names to NNX objects or pytrees of arrays, got "
            f"{type(extra).__name__}; e.g. extra={{'rngs': rngs}}."
        )
    return {
        name: nnx.state(value) if graph.is_graph_node(value) else value
        for name, value in extra.items()
    }


def resumable(
    checkpointer: Any, extra: Mapping[str, Any], riders: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The extra state to restore: ``extra`` and the callbacks' riders the checkpoint holds.

    A rider new to a resumed run (a ``WeightAveraging`` added after pre-training) is left out:
    it starts afresh, as in a new run, and the log says so. A rider's state saved by a callback
    the run lacks is an error: it would be lost unsaid.

    Args:
        checkpointer: The run's ``Checkpointer``: its newest checkpoint is the one resumed.
        extra: The extra state the run always restores (a Trainer's ``rngs``).
        riders: The callbacks' riders, by the names ``CallbackList.rider_states`` gives.

    Raises:
        CheckpointError: If the checkpoint holds a rider this run lacks.
    """
    chosen = {**extra, **riders}
    latest = checkpointer.latest_step() if checkpointer is not None else None
    if latest is None:
        return chosen or None
    try:
        saved = checkpointer.manager.item_metadata(latest).get("extra")
    except Exception:  # a damaged checkpoint: restore reports it and tries the one before
        return chosen or None
    names = set() if saved is None else set(saved.tree)
    gone = sorted(name for name in names - set(chosen) if name.startswith("rider_"))
    if gone:
        raise CheckpointError(
            f"The checkpoint at step {latest} in {checkpointer.directory} holds {gone}, the "
            "device state of a callback this run lacks (rider_<state_key>). Add that callback "
            "back to resume the run, or use a new checkpoint directory."
        )
    for name in sorted(set(riders) - names):
        del chosen[name]
        _logging.logger.info(
            "The checkpoint at step %d holds no %s (the callback is new to this run): it "
            "starts afresh.",
            latest,
            name,
        )
    return chosen or None


def as_metadata(target: Any) -> Any:
    """A restore target as Orbax's metadata describes it: ``nnx.State`` as plain dicts."""
    if isinstance(target, nnx.State):
        return nnx.to_pure_dict(target)
    if isinstance(target, Mapping):
        return {name: as_metadata(value) for name, value in target.items()}
    return target


def put_back(extra: Mapping[str, Any], restored: Mapping[str, Any]) -> dict[str, Any]:
    """Updates the NNX objects of ``extra`` in place; every entry as restored."""
    for name, value in extra.items():
        if graph.is_graph_node(value):
            nnx.update(value, restored[name])
    return {name: restored[name] for name in extra}


def extra_unmatched(saved: list[str] | None, asked: list[str], skip: bool) -> str | None:
    """Extra state saved but not asked for (unless skipped), or asked for but not saved."""
    if saved is None and asked:
        return (
            f"holds no extra state, but restore's extra= asks for {asked} (for a Trainer: its "
            "rngs= argument). Restore without extra=, or from a checkpoint saved with it."
        )
    if saved is not None and not asked and not skip:
        return (
            f"holds extra state {saved} (for a Trainer: its rngs= argument), but restore was "
            "given no extra=. Pass extra= with targets of the same structure to restore it, "
            "or skip_extra=True to leave it unread."
        )
    return None


def leaf_problems(item: str, saved_tree: Any, target: Any) -> list[str]:
    """The leaves of ``item`` missing, unexpected, or of another shape or dtype than saved."""
    saved, wanted = _leaf_specs(saved_tree), _leaf_specs(target)
    problems = [
        f"{item} leaves {label}: {', '.join(paths[:5])}"
        for label, paths in (
            ("not in the checkpoint", sorted(set(wanted) - set(saved))),
            ("only in the checkpoint", sorted(set(saved) - set(wanted))),
        )
        if paths
    ]
    both = [
        (path, was, now)
        for path in sorted(set(saved) & set(wanted))
        if (was := saved[path]) is not None and (now := wanted[path]) is not None
    ]
    for index, label in ((0, "shapes"), (1, "dtypes")):
        changed = [
            f"{path} {was[index]} -> {now[index]}"
            for path, was, now in both
            if None not in (was[index], now[index]) and was[index] != now[index]
        ]
        if changed:
            problems.append(
                f"{item} leaves with other {label} (saved -> target): {', '.join(changed[:5])}"
            )
    return problems


def _leaf_specs(tree: Any) -> dict[str, tuple[tuple[int, ...], str | None] | None]:
    """Leaf path -> (shape, dtype); ``None`` for PRNG keys (saved as raw key data).

    The dtype is ``None`` for a Python number, which has none.
    """
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    specs: dict[str, tuple[tuple[int, ...], str | None] | None] = {}
    for path, leaf in leaves:
        dtype = getattr(leaf, "dtype", None)
        is_key = dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)
        names = [_key_name(k) for k in path]
        if names and names[-1] == "value":  # the Variable wrapper in saved metadata
            names.pop()
        if is_key:
            specs["/".join(names)] = None
            continue
        shown = None if dtype is None else str(np.dtype(dtype))
        specs["/".join(names)] = (tuple(getattr(leaf, "shape", ())), shown)
    return specs


@jax.jit
def _finite_flags(arrays: list[jax.Array]) -> jax.Array:
    return jnp.stack([jnp.all(jnp.isfinite(array)) for array in arrays])


def non_finite_leaves(states: Mapping[str, nnx.State]) -> list[str]:
    """Paths of the floating-point leaves holding a NaN or an infinity: one device reduction."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(states)
    floats = [
        (path, leaf)
        for path, leaf in leaves
        if jnp.issubdtype(getattr(leaf, "dtype", np.int32), jnp.inexact)
    ]
    if not floats:
        return []
    flags = local_copy(_finite_flags([leaf for _, leaf in floats]))
    return [
        "/".join(name for name in map(_key_name, path) if name != "value")
        for (path, _), finite in zip(floats, np.asarray(flags), strict=True)
        if not finite
    ]


def _key_name(key: Any) -> str:
    return str(getattr(key, "key", getattr(key, "name", getattr(key, "idx", key))))


def abstract_state(state: nnx.State) -> Any:
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
