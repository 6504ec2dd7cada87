"""The public surface, as a snapshot: a change to it shows as a diff against the literals below.

Held here: every name of ``flax_cyclic.__all__`` (and ``flax_cyclic.callbacks.__all__``) with its
kind and signature (for a class: its bases, its constructor and its public methods and
properties), the attributes of the ``Loop`` protocol the hooks read, what a ``Trainer.fit`` run
with a ``Checkpointer`` leaves on disk (the items of each step, the keys of the JSON the trainer,
the callbacks and the metrics are saved as) and the TensorBoard series a run with a writer
writes (tags and steps, read back with ``read_scalars``).

A refactor that keeps the public API leaves these tests green. A change meant to alter the
surface updates the literals: ``.venv/bin/python tests/test_api_snapshot.py`` prints the live
ones, in the same layout.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import inspect
import json
import pathlib
import pprint
import re
from typing import Any

import optax
import pytest
from flax import nnx
from helpers import NoisyNet, tiny_batches

import flax_cyclic
import flax_cyclic.callbacks
from flax_cyclic import (
    Checkpointer,
    CyclicLR,
    EarlyStopping,
    LRSchedulerCallback,
    Trainer,
    create_writer,
    read_scalars,
)
from flax_cyclic.callbacks.base import Loop

# -- reading the live surface ------------------------------------------------------------------


class _Text:
    """An annotation or a default shown as the text it stands for (no quotes, no addresses)."""

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _annotation(annotation: Any) -> Any:
    if annotation is inspect.Parameter.empty:
        return annotation
    if isinstance(annotation, str):
        return _Text(annotation)
    return _Text(inspect.formatannotation(annotation))


def _default(value: Any) -> Any:
    if value is inspect.Parameter.empty:
        return value
    if callable(value) and hasattr(value, "__qualname__"):
        return _Text(f"{value.__module__}.{value.__qualname__}")
    return _Text(re.sub(r" at 0x[0-9a-fA-F]+", "", repr(value)))


def signature(obj: Any) -> str:
    """``inspect.signature(obj)`` as text: annotations as written, defaults without addresses."""
    found = inspect.signature(obj)
    parameters = [
        p.replace(annotation=_annotation(p.annotation), default=_default(p.default))
        for p in found.parameters.values()
    ]
    return str(
        found.replace(parameters=parameters, return_annotation=_annotation(found.return_annotation))
    )


def _member(cls: type, name: str, raw: Any) -> str:
    if isinstance(raw, property):
        returns = signature(raw.fget).partition(" -> ")[2] if raw.fget else ""
        kind = "property" if raw.fset is None else "property (settable)"
        return f"{kind} -> {returns}" if returns else kind
    if isinstance(raw, staticmethod | classmethod):
        return f"{type(raw).__name__}{signature(getattr(cls, name))}"
    if inspect.isfunction(raw):
        return f"method{signature(raw)}"
    if raw is None or isinstance(raw, bool | int | float | str):
        return f"attribute: {type(raw).__name__} = {raw!r}"
    return f"attribute: {type(raw).__name__}"


def members(cls: type) -> dict[str, str]:
    """The public methods, properties and attributes of a class, from the library's classes.

    Those it inherits unchanged from another public class are listed under that class only
    (its bases are in the entry); those of private bases are listed here. A dataclass's fields
    are in its signature.
    """
    public = {getattr(flax_cyclic, name) for name in flax_cyclic.__all__}
    fields = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
    found: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not klass.__module__.startswith("flax_cyclic"):
            continue
        for name, raw in vars(klass).items():
            if name.startswith("_") or name in fields:
                continue
            if klass is cls or klass not in public:
                found[name] = _member(cls, name, raw)
            else:
                found.pop(name, None)  # a public base's: listed there
    return dict(sorted(found.items()))


def _kind(obj: Any) -> str:
    if isinstance(obj, type):
        if issubclass(obj, BaseException):
            return "exception"
        return "dataclass" if dataclasses.is_dataclass(obj) else "class"
    if inspect.isfunction(obj):
        return "function"
    return type(obj).__name__


def describe(obj: Any) -> dict[str, Any]:
    """A public name's entry: its kind and signature; for a class, its bases and members too."""
    entry: dict[str, Any] = {"kind": _kind(obj)}
    if isinstance(obj, type):
        entry["bases"] = [f"{base.__module__}.{base.__qualname__}" for base in obj.__bases__]
        with contextlib.suppress(ValueError):  # a builtin's constructor (an exception's): none
            entry["signature"] = signature(obj)
        entry["members"] = members(obj)
    elif callable(obj):
        entry["signature"] = signature(obj)
    return entry


def public_names() -> dict[str, Any]:
    return {name: describe(getattr(flax_cyclic, name)) for name in sorted(flax_cyclic.__all__)}


def callbacks_names() -> dict[str, str]:
    """``flax_cyclic.callbacks.__all__``: each name, and what the top level calls that object."""
    top = {id(getattr(flax_cyclic, name)): name for name in flax_cyclic.__all__}
    return {
        name: f"flax_cyclic.{top.get(id(getattr(flax_cyclic.callbacks, name)), '?')}"
        for name in sorted(flax_cyclic.callbacks.__all__)
    }


def loop_protocol() -> dict[str, Any]:
    """The ``Loop`` protocol: its attributes with their annotations, and its methods."""
    annotations = {
        name: value if isinstance(value, str) else inspect.formatannotation(value)
        for name, value in vars(Loop).get("__annotations__", {}).items()
    }
    methods = {
        name: _member(Loop, name, value)
        for name, value in vars(Loop).items()
        if not name.startswith("_") and inspect.isfunction(value)
    }
    return {"attributes": dict(sorted(annotations.items())), "methods": methods}


# -- what a run leaves ---------------------------------------------------------------------------


_JSON_TYPES = {
    type(None): "null",
    bool: "bool",
    int: "int",
    float: "float",
    str: "str",
    list: "list",
}


def _shape(value: Any) -> Any:
    """The keys of JSON data, nested; a leaf as its JSON type."""
    if isinstance(value, dict):
        return {key: _shape(item) for key, item in sorted(value.items())}
    return _JSON_TYPES[type(value)]


def _train(workdir: pathlib.Path, *, callback_writes: bool, checkpoints: bool) -> None:
    """Two epochs of three steps, evaluated every epoch, with a CyclicLR callback and a writer."""
    model = NoisyNet(nnx.Rngs(0))
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.0, momentum=0.9)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    writer = create_writer(workdir / "tensorboard")
    scheduler = CyclicLR(0.01, 0.1, step_size_up=2, cycle_momentum=True)
    callbacks = [
        LRSchedulerCallback(scheduler, writer=writer if callback_writes else None, plot_steps=0),
        EarlyStopping("eval/loss", patience=5),
    ]
    checkpointer = None
    if checkpoints:
        checkpointer = Checkpointer(
            workdir / "checkpoints", every_steps=2, async_save=False, best_metric="eval/loss"
        )
    trainer = Trainer(
        model,
        optimizer,
        callbacks=callbacks,
        checkpointer=checkpointer,
        writer=writer,
        log_every_steps=2,
        progress=False,
        rngs=nnx.Rngs(dropout=1),
    )
    try:
        trainer.fit(tiny_batches(8, 3), num_epochs=2, eval_data=tiny_batches(8, 1, seed=1))
    finally:
        if checkpointer is not None:
            checkpointer.close()
        writer.close()


def _json_shape(path: pathlib.Path) -> Any:
    return _shape(json.loads(path.read_text()))


def checkpoint_layout(directory: pathlib.Path) -> dict[str, Any]:
    """What the Checkpointer left: its own files, each kept step's items, the JSON items' keys."""
    steps = sorted((p for p in directory.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    newest = steps[-1]
    return {
        "files": {
            p.name: _json_shape(p) for p in sorted(directory.iterdir()) if not p.name.isdigit()
        },
        "steps": {p.name: sorted(q.name for q in p.iterdir() if q.is_dir()) for p in steps},
        "trainer": _json_shape(newest / "trainer" / "metadata"),
        "callbacks": _json_shape(newest / "callbacks" / "metadata"),
        "metrics": _json_shape(newest / "metrics" / "metrics"),
    }


def tensorboard_series(logdir: pathlib.Path) -> dict[str, list[int]]:
    """Every scalar tag and the steps it was written at."""
    return {
        tag: [step for step, _ in series] for tag, series in sorted(read_scalars(logdir).items())
    }


def run_outputs(workdir: pathlib.Path) -> dict[str, Any]:
    _train(workdir / "logged_by_callback", callback_writes=True, checkpoints=True)
    _train(workdir / "logged_by_trainer", callback_writes=False, checkpoints=False)
    return {
        "checkpoints": checkpoint_layout(workdir / "logged_by_callback" / "checkpoints"),
        "tensorboard": {
            "writer to the LR callback and the Trainer": tensorboard_series(
                workdir / "logged_by_callback" / "tensorboard"
            ),
            "writer to the Trainer only": tensorboard_series(
                workdir / "logged_by_trainer" / "tensorboard"
            ),
        },
    }


# -- the snapshot ------------------------------------------------------------------------------

PUBLIC: dict[str, Any] = {
    "Callback": {
        "kind": "class",
        "bases": ["builtins.object"],
        "signature": "()",
        "members": {
            "evaluated_beside": "method(self, loop: Loop) -> dict[str, Any]",
            "hyperparams_ahead": "method(self, loop: Loop, start: int, steps: "
            "int) -> list[tuple[Any, np.ndarray]]",
            "load_state_dict": "method(self, state: Mapping[str, Any]) -> None",
            "logs_learning_rate": "property -> bool",
            "on_epoch_begin": "method(self, loop: Loop, epoch: int) -> None",
            "on_epoch_end": "method(self, loop: Loop, epoch: int, metrics: "
            "Mapping[str, Any]) -> None",
            "on_eval_begin": "method(self, loop: Loop) -> None",
            "on_eval_end": "method(self, loop: Loop, metrics: Mapping[str, Any]) -> None",
            "on_exception": "method(self, loop: Loop, exception: BaseException) -> None",
            "on_step_begin": "method(self, loop: Loop, step: int) -> None",
            "on_step_end": "method(self, loop: Loop, step: int, metrics: "
            "Mapping[str, Any]) -> None",
            "on_train_begin": "method(self, loop: Loop) -> None",
            "on_train_end": "method(self, loop: Loop) -> None",
            "rider": "method(self, loop: Loop) -> Any",
            "rides_ahead": "method(self, loop: Loop, start: int, steps: int) -> np.ndarray",
            "state_dict": "method(self) -> dict[str, Any]",
            "state_key": "property -> str",
        },
    },
    "CallbackList": {
        "kind": "class",
        "bases": ["builtins.object"],
        "signature": "(callbacks: Iterable[Callback] = (), *, model: Any = None, "
        "optimizer: Any = None, step: int = 0) -> None",
        "members": {
            "evaluated_beside": "method(self) -> dict[str, Any]",
            "hyperparams_ahead": "method(self, start: int, steps: int) -> dict[int, np.ndarray]",
            "load_state_dict": "method(self, states: Mapping[str, Mapping[str, Any]]) -> None",
            "model": "property (settable) -> Any",
            "on_epoch_begin": "method(self, epoch: int | None = None) -> None",
            "on_epoch_end": "method(self, metrics: Mapping[str, Any] | None = None) -> None",
            "on_eval_begin": "method(self) -> None",
            "on_eval_end": "method(self, metrics: Mapping[str, Any]) -> None",
            "on_exception": "method(self, exception: BaseException) -> None",
            "on_step_begin": "method(self) -> None",
            "on_step_end": "method(self, metrics: Mapping[str, Any] | None = None) -> None",
            "on_train_begin": "method(self) -> None",
            "on_train_end": "method(self) -> None",
            "optimizer": "property (settable) -> Any",
            "optimizer_object": "property -> Any",
            "rider_states": "method(self) -> dict[str, Any]",
            "riders": "method(self) -> list[tuple[Callback, Any]]",
            "state_dict": "method(self) -> dict[str, dict[str, Any]]",
        },
    },
    "CheckpointError": {"kind": "exception", "bases": ["builtins.RuntimeError"], "members": {}},
    "CheckpointedRun": {
        "kind": "class",
        "bases": ["builtins.object"],
        "signature": "(checkpointer: Any, *, model: Any, optimizer: Any, state: "
        "Any, callbacks: Any, extra: Mapping[str, Any] | None, data: "
        "Any) -> None",
        "members": {
            "save": "method(self, *, metrics: Mapping[str, float] | None = None) -> bool",
            "step_done": "method(self, *, state: Any = None, epoch_end: "
            "bool = False, metrics: Mapping[str, float] | "
            "None = None) -> bool",
            "steps": "method(self, num_steps: int) -> Iterator[int]",
        },
    },
    "Checkpointer": {
        "kind": "class",
        "bases": ["builtins.object"],
        "signature": "(directory: str | os.PathLike, *, every_steps: int | None = "
        "None, every_epoch: bool = True, max_to_keep: int = 3, "
        "async_save: bool = True, best_metric: str | None = None, "
        "best_mode: str = 'auto') -> None",
        "members": {
            "all_steps": "method(self) -> list[int]",
            "best_step": "method(self) -> int | None",
            "close": "method(self) -> None",
            "latest_step": "method(self) -> int | None",
            "metrics": "method(self, step: int) -> dict[str, float] | None",
            "restore": "method(self, *, model: nnx.Module | None = None, "
            "optimizer: nnx.Optimizer | None = None, state: Any = "
            "None, step: int | None = None, extra: Mapping[str, "
            "Any] | None = None, skip_extra: bool = False) -> "
            "Restored | None",
            "resume": "method(self, *, model: nnx.Module | None = None, "
            "optimizer: nnx.Optimizer | None = None, state: Any = "
            "None, callbacks: Any = None, extra: Mapping[str, Any] "
            "| None = None, data: Any = None) -> CheckpointedRun",
            "save": "method(self, step: int, *, model: nnx.Module | None = "
            "None, optimizer: nnx.Optimizer | None = None, state: "
            "Any = None, callbacks: Mapping[str, Any] | None = None, "
            "trainer: Mapping[str, Any] | None = None, metrics: "
            "Mapping[str, float] | None = None, extra: Mapping[str, "
            "Any] | None = None) -> bool",
            "should_save": "method(self, step: int, *, epoch_end: bool = "
            "False, evaluated: bool = False) -> bool",
            "wait": "method(self) -> None",
        },
    },
    "CosineAnnealingLR": {
        "kind": "class",
        "bases": ["flax_cyclic.schedulers._CosineScheduler"],
        "signature": "(base_lr: float | list[float], T_max: int, eta_min: float "
        "| list[float] = 0.0, last_epoch: int = 0) -> None",
        "members": {
            "T_max": "property -> int",
            "base_lrs": "property -> tuple[float, ...]",
            "eta_mins": "property -> tuple[float, ...]",
            "preview_steps": "property -> int",
        },
    },
    "CosineAnnealingWarmRestarts": {
        "kind": "class",
        "bases": ["flax_cyclic.schedulers._CosineScheduler"],
        "signature": "(base_lr: float | list[float], T_0: int, "
        "T_mult: int = 1, eta_min: float | list[float] = "
        "0.0, last_epoch: int = 0, *, decay: float = "
        "1.0, warmup_steps: int = 0, warmup: str = "
        "'first') -> None",
        "members": {
            "T_0": "property -> int",
            "T_cur": "property -> int",
            "T_i": "property -> int",
            "T_mult": "property -> int",
            "base_lrs": "property -> tuple[float, ...]",
            "cycle": "property -> int",
            "cycle_position": "property -> float",
            "eta_mins": "property -> tuple[float, ...]",
            "next_cycle_end": "method(self, count: int) -> int | None",
            "preview_steps": "property -> int",
        },
    },
    "CyclicLR": {
        "kind": "class",
        "bases": ["flax_cyclic.schedulers.LRScheduler"],
        "signature": "(base_lr: float | list[float] = 0.001, max_lr: float | list[float] "
        "= 0.01, step_size_up: int = 2000, step_size_down: int | None = "
        "None, mode: str = 'triangular', gamma: float = 1.0, scale_fn: "
        "Callable[[Any], Any] | None = None, scale_mode: str = 'cycle', "
        "last_epoch: int = 0, *, cycle_momentum: bool = False, "
        "base_momentum: float | list[float] = 0.8, max_momentum: float | "
        "list[float] = 0.9) -> None",
        "members": {
            "base_lrs": "property -> tuple[float, ...]",
            "base_momentums": "property -> tuple[float, ...]",
            "cycle": "property -> int",
            "cycle_position": "property -> float",
            "gamma": "property -> float",
            "max_lrs": "property -> tuple[float, ...]",
            "max_momentums": "property -> tuple[float, ...]",
            "mode": "property -> str",
            "next_cycle_end": "method(self, count: int) -> int | None",
            "preview_steps": "property -> int",
            "scale_fn": "property -> Callable[[Any], Any] | None",
            "scale_mode": "property -> str",
            "step_size_down": "property -> int",
            "step_size_up": "property -> int",
            "total_size": "property -> int",
        },
    },
    "EarlyStopping": {
        "kind": "class",
        "bases": ["flax_cyclic.callbacks.base.Callback"],
        "signature": "(monitor: str = 'eval/loss', *, mode: str = 'auto', patience: "
        "int = 3, min_delta: float = 0.0, restore_best: bool = False) "
        "-> None",
        "members": {
            "STATE_VERSION": "attribute: int = 1",
            "load_state_dict": "method(self, state: Mapping[str, Any]) -> None",
            "on_epoch_begin": "method(self, loop: Loop, epoch: int) -> None",
            "on_epoch_end": "method(self, loop: Loop, epoch: int, metrics: "
            "Mapping[str, Any]) -> None",
            "on_eval_end": "method(self, loop: Loop, metrics: Mapping[str, Any]) -> None",
            "on_train_begin": "method(self, loop: Loop) -> None",
            "on_train_end": "method(self, loop: Loop) -> None",
            "state_dict": "method(self) -> dict[str, Any]",
            "state_key": "property -> str",
        },
    },
    "History": {
        "kind": "dataclass",
        "bases": ["builtins.object"],
        "signature": "(train: list[dict[str, float]] = <factory>, eval: list[dict[str, "
        "float]] = <factory>, resumed_from: int | None = None, preempted: "
        "bool = False, stopped: bool = False) -> None",
        "members": {},
    },
    "LRFinderResult": {
        "kind": "dataclass",
        "bases": ["builtins.object"],
        "signature": "(lrs: tuple[float, ...], losses: tuple[float, ...], "
        "smoothed_losses: tuple[float, ...], stop_reason: str, "
        "smoothing: float, diverge_threshold: float) -> None",
        "members": {
            "causal_losses": "property -> tuple[float, ...]",
            "load": "classmethod(path: str | os.PathLike) -> LRFinderResult",
            "minimum": "property -> float",
            "onecycle_max_lr": "property -> float",
            "plot": "method(self, path: str | os.PathLike | None = None, "
            "*, title: str | None = None) -> np.ndarray",
            "recommended": "property -> tuple[float, float]",
            "save": "method(self, path: str | os.PathLike) -> None",
            "steepest": "property -> float | None",
            "suggestions": "property -> dict[str, float | None]",
            "valley": "property -> float | None",
        },
    },
    "LRScheduler": {
        "kind": "class",
        "bases": ["abc.ABC"],
        "signature": "(policy: Policy, lr_bounds: Iterable[tuple[float, ...]], "
        "momentum_bounds: Iterable[tuple[float, ...]] | None = None, "
        "last_epoch: int = 0) -> None",
        "members": {
            "STATE_VERSION": "attribute: int = 1",
            "as_momentum_schedule": "method(self, group: int = 0) -> optax.Schedule",
            "as_schedule": "method(self, group: int = 0) -> optax.Schedule",
            "base_lrs": "property -> tuple[float, ...]",
            "cycle_momentum": "property -> bool",
            "get_last_lr": "method(self) -> list[float]",
            "get_last_momentum": "method(self) -> list[float] | None",
            "get_lr": "method(self) -> list[float]",
            "last_epoch": "property (settable) -> int",
            "load_state_dict": "method(self, state: Mapping[str, Any], *, "
            "strict: bool = True) -> None",
            "next_cycle_end": "method(self, count: int) -> int | None",
            "num_groups": "property -> int",
            "preview_steps": "property -> int",
            "requires_metric": "property -> bool",
            "state_dict": "method(self) -> dict[str, Any]",
            "step": "method(self, epoch: int | None = None) -> None",
        },
    },
    "LRSchedulerCallback": {
        "kind": "class",
        "bases": ["flax_cyclic.callbacks._writing.WritingCallback"],
        "signature": "(scheduler: LRScheduler, *, interval: str = 'step', "
        "monitor: str | None = None, learning_rate: str = "
        "'learning_rate', momentum: str | None = 'auto', groups: "
        "Sequence[str] | None = None, accumulation_steps: int | "
        "None = None, writer: MetricWriter | None = None, "
        "log_every_steps: int = 1, strict: bool = True, "
        "plot_steps: int | None = None) -> None",
        "members": {
            "applied_values": "property -> dict[str, list[float]]",
            "cycles": "method(self) -> Cycles",
            "due": "method(self, done: int) -> bool",
            "hyperparams_ahead": "method(self, loop: Loop, start: "
            "int, steps: int) -> list[tuple[Any, "
            "np.ndarray]]",
            "load_state_dict": "method(self, state: Mapping[str, Any]) -> None",
            "logs_learning_rate": "property -> bool",
            "on_epoch_end": "method(self, loop: Loop, epoch: int, "
            "metrics: Mapping[str, Any]) -> None",
            "on_eval_end": "method(self, loop: Loop, metrics: Mapping[str, Any]) -> None",
            "on_exception": "method(self, loop: Loop, exception: BaseException) -> None",
            "on_step_begin": "method(self, loop: Loop, step: int) -> None",
            "on_step_end": "method(self, loop: Loop, step: int, "
            "metrics: Mapping[str, Any]) -> None",
            "on_train_begin": "method(self, loop: Loop) -> None",
            "on_train_end": "method(self, loop: Loop) -> None",
            "state_dict": "method(self) -> dict[str, Any]",
            "train_steps": "property -> int",
            "write_scalars": "method(self, step: int, scalars: Mapping[str, Any]) -> None",
            "writes_here": "property -> bool",
        },
    },
    "LearningRateMonitor": {
        "kind": "class",
        "bases": ["flax_cyclic.callbacks._writing.WritingCallback"],
        "signature": "(writer: MetricWriter | None = None, *, log_every_steps: int = 1) -> None",
        "members": {
            "due": "method(self, done: int) -> bool",
            "logs_learning_rate": "property -> bool",
            "on_exception": "method(self, loop: Loop, exception: BaseException) -> None",
            "on_step_end": "method(self, loop: Loop, step: int, "
            "metrics: Mapping[str, Any]) -> None",
            "on_train_begin": "method(self, loop: Loop) -> None",
            "on_train_end": "method(self, loop: Loop) -> None",
            "write_scalars": "method(self, step: int, scalars: Mapping[str, Any]) -> None",
            "writes_here": "property -> bool",
        },
    },
    "LinearLR": {
        "kind": "class",
        "bases": ["flax_cyclic.schedulers.LRScheduler"],
        "signature": "(base_lr: float | list[float], start_factor: float = "
        "0.3333333333333333, end_factor: float = 1.0, total_iters: int = 5, "
        "last_epoch: int = 0) -> None",
        "members": {
            "base_lrs": "property -> tuple[float, ...]",
            "end_factor": "property -> float",
            "preview_steps": "property -> int",
            "start_factor": "property -> float",
            "total_iters": "property -> int",
        },
    },
    "MetricsLogger": {
        "kind": "class",
        "bases": ["flax_cyclic.callbacks._writing.WritingCallback"],
        "signature": "(writer: MetricWriter, *, log_every_steps: int = 50, clock: "
        "Callable[[], float] = time.perf_counter, every_steps: int | "
        "None = None) -> None",
        "members": {
            "due": "method(self, done: int) -> bool",
            "load_state_dict": "method(self, state: Mapping[str, Any]) -> None",
            "on_eval_end": "method(self, loop: Loop, metrics: Mapping[str, Any]) -> None",
            "on_exception": "method(self, loop: Loop, exception: BaseException) -> None",
            "on_step_end": "method(self, loop: Loop, step: int, metrics: "
            "Mapping[str, Any]) -> None",
            "on_train_begin": "method(self, loop: Loop) -> None",
            "on_train_end": "method(self, loop: Loop) -> None",
            "state_dict": "method(self) -> dict[str, Any]",
            "write_scalars": "method(self, step: int, scalars: Mapping[str, Any]) -> None",
            "writes_here": "property -> bool",
        },
    },
    "NonFiniteError": {
        "kind": "exception",
        "bases": ["builtins.FloatingPointError"],
        "members": {},
    },
    "OneCycleLR": {
        "kind": "class",
        "bases": ["flax_cyclic.schedulers.LRScheduler"],
        "signature": "(max_lr: float | list[float] = 0.01, total_steps: int | None = "
        "None, epochs: int | None = None, steps_per_epoch: int | None = "
        "None, pct_start: float = 0.3, anneal_strategy: str = 'cos', "
        "cycle_momentum: bool = True, base_momentum: float | list[float] "
        "= 0.85, max_momentum: float | list[float] = 0.95, div_factor: "
        "float = 25.0, final_div_factor: float = 10000.0, three_phase: "
        "bool = False, last_epoch: int = 0) -> None",
        "members": {
            "anneal_strategy": "property -> str",
            "base_lrs": "property -> tuple[float, ...]",
            "base_momentums": "property -> tuple[float, ...]",
            "div_factor": "property -> float",
            "final_div_factor": "property -> float",
            "max_lrs": "property -> tuple[float, ...]",
            "max_momentums": "property -> tuple[float, ...]",
            "min_lrs": "property -> tuple[float, ...]",
            "pct_start": "property -> float",
            "preview_steps": "property -> int",
            "three_phase": "property -> bool",
            "total_steps": "property -> int",
        },
    },
    "ProgressBar": {
        "kind": "class",
        "bases": ["flax_cyclic.callbacks.base.Callback"],
        "signature": "(*, enabled: bool | None = None, every_steps: int = 10, "
        "console: Console | None = None) -> None",
        "members": {
            "on_exception": "method(self, loop: Loop, exception: BaseException) -> None",
            "on_step_end": "method(self, loop: Loop, step: int, metrics: "
            "Mapping[str, Any]) -> None",
            "on_train_begin": "method(self, loop: Loop) -> None",
            "on_train_end": "method(self, loop: Loop) -> None",
        },
    },
    "ReduceLROnPlateau": {
        "kind": "class",
        "bases": ["flax_cyclic.schedulers.LRScheduler"],
        "signature": "(base_lr: float | list[float], mode: str = 'auto', "
        "factor: float = 0.1, patience: int = 10, threshold: float "
        "= 0.0001, threshold_mode: str = 'rel', cooldown: int = 0, "
        "min_lr: float | list[float] = 0, eps: float = 1e-08, "
        "last_epoch: int = 0) -> None",
        "members": {
            "as_momentum_schedule": "method(self, group: int = 0) -> NoReturn",
            "as_schedule": "method(self, group: int = 0) -> NoReturn",
            "base_lrs": "property -> tuple[float, ...]",
            "best": "property -> float | None",
            "cooldown": "property -> int",
            "cooldown_counter": "property -> int",
            "eps": "property -> float",
            "factor": "property -> float",
            "in_cooldown": "property -> bool",
            "load_state_dict": "method(self, state: Mapping[str, Any], "
            "*, strict: bool = True) -> None",
            "min_lrs": "property -> tuple[float, ...]",
            "mode": "property -> str",
            "num_bad_epochs": "property -> int",
            "patience": "property -> int",
            "preview_steps": "property -> int",
            "requires_metric": "property -> bool",
            "resolve_mode": "method(self, metric_name: str) -> None",
            "step": "method(self, metric: float | None = None) -> None",
            "threshold": "property -> float",
            "threshold_mode": "property -> str",
        },
    },
    "SequentialLR": {
        "kind": "class",
        "bases": ["flax_cyclic.schedulers.LRScheduler"],
        "signature": "(schedulers: Sequence[LRScheduler], milestones: Sequence[int], "
        "last_epoch: int = 0) -> None",
        "members": {
            "as_schedule": "method(self, group: int = 0) -> optax.Schedule",
            "base_lrs": "property -> tuple[float, ...]",
            "milestones": "property -> tuple[int, ...]",
            "preview_steps": "property -> int",
            "schedulers": "property -> tuple[LRScheduler, ...]",
            "total_steps": "property -> int",
        },
    },
    "SnapshotEnsemble": {
        "kind": "class",
        "bases": ["flax_cyclic.callbacks.base.Callback"],
        "signature": "(directory: str | os.PathLike[str] | None = None, *, "
        "max_snapshots: int = 5, at: Literal['cycle_end'] | None = "
        "None, every_steps: int | None = None, start_step: int = 0, "
        "state_key: str | None = None) -> None",
        "members": {
            "directory": "property -> str",
            "evaluate": "method(self, batches: Iterable[Any], model: "
            "nnx.Module | None = None, *, last: int | None = "
            "None) -> dict[str, float]",
            "members": "method(self, model: nnx.Module | None = None, *, "
            "last: int | None = None) -> list[Any]",
            "on_exception": "method(self, loop: Loop, exception: BaseException) -> None",
            "on_step_end": "method(self, loop: Loop, step: int, metrics: "
            "Mapping[str, Any]) -> None",
            "on_train_begin": "method(self, loop: Loop) -> None",
            "on_train_end": "method(self, loop: Loop) -> None",
            "predict": "method(self, inputs: Any, model: nnx.Module | "
            "None = None, *, last: int | None = None) -> "
            "jax.Array",
            "rider": "method(self, loop: Loop) -> SnapshotBuffer",
            "rides_ahead": "method(self, loop: Loop, start: int, steps: int) -> np.ndarray",
            "state_key": "property -> str",
            "steps": "property -> list[int]",
        },
    },
    "TerminateOnNaN": {
        "kind": "class",
        "bases": ["flax_cyclic.callbacks.base.Callback"],
        "signature": "(*, monitor: Sequence[str] | None = None) -> None",
        "members": {
            "on_step_end": "method(self, loop: Loop, step: int, metrics: Mapping[str, Any]) -> None"
        },
    },
    "Trainer": {
        "kind": "class",
        "bases": ["builtins.object"],
        "signature": "(model: nnx.Module, optimizer: nnx.Optimizer, *, train_step: "
        "Callable[..., Metrics] = "
        "flax_cyclic.steps.classification_train_step, eval_step: "
        "Callable[..., Metrics] = "
        "flax_cyclic.steps.classification_eval_step, callbacks: "
        "Sequence[Callback] = (), checkpointer: Checkpointer | None = None, "
        "writer: MetricWriter | None = None, log_every_steps: int = 50, "
        "progress: bool | None = None, rngs: nnx.Rngs | None = None, mesh: "
        "jax.sharding.Mesh | None = None, data_axis: str = 'data', "
        "steps_per_dispatch: int = 1, unroll_dispatch: int | bool | "
        "Literal['auto', 'per_step'] = 'auto') -> None",
        "members": {
            "epoch": "property -> int",
            "evaluate": "method(self, eval_data: Iterable[Any]) -> dict[str, float]",
            "fit": "method(self, train_data: Iterable[Any] | Callable[[int], "
            "Iterable[Any]], *, num_epochs: int | None = None, num_steps: "
            "int | None = None, eval_data: Iterable[Any] | None = None, "
            "eval_every_steps: int | None = None) -> History",
            "model": "property -> nnx.Module",
            "optimizer": "property -> nnx.Optimizer",
            "step": "property -> int",
        },
    },
    "TriangularLR": {
        "kind": "class",
        "bases": ["flax_cyclic.schedulers.CyclicLR"],
        "signature": "(base_lr: float | list[float] = 0.001, max_lr: float | "
        "list[float] = 0.01, step_size: int = 2000, last_epoch: int = "
        "0) -> None",
        "members": {"step_size": "property -> int"},
    },
    "WeightAverage": {
        "kind": "class",
        "bases": ["builtins.tuple"],
        "signature": "(mean: ForwardRef('Any'), snapshots: ForwardRef('jax.Array'), "
        "refused: ForwardRef('jax.Array'))",
        "members": {
            "mean": "attribute: _tuplegetter",
            "refused": "attribute: _tuplegetter",
            "snapshots": "attribute: _tuplegetter",
        },
    },
    "WeightAveraging": {
        "kind": "class",
        "bases": ["flax_cyclic.callbacks.base.Callback"],
        "signature": "(*, at: Literal['cycle_end'] | None = None, every_steps: "
        "int | None = None, start_step: int = 0, decay: float | None "
        "= None, evaluate: bool = True, batch_stats_data: "
        "Iterable[Any] | None = None, state_key: str | None = None) "
        "-> None",
        "members": {
            "averaged_model": "method(self, model: nnx.Module | None = None) -> nnx.Module",
            "evaluated_beside": "method(self, loop: Loop) -> dict[str, Any]",
            "on_step_end": "method(self, loop: Loop, step: int, metrics: "
            "Mapping[str, Any]) -> None",
            "on_train_begin": "method(self, loop: Loop) -> None",
            "on_train_end": "method(self, loop: Loop) -> None",
            "refused": "property -> int",
            "rider": "method(self, loop: Loop) -> AveragedWeights",
            "rides_ahead": "method(self, loop: Loop, start: int, steps: int) -> np.ndarray",
            "snapshots": "property -> int",
            "state_key": "property -> str",
        },
    },
    "__version__": {"kind": "str"},
    "classification_eval_step": {
        "kind": "function",
        "signature": "(model: nnx.Module, batch: Any) -> Metrics",
    },
    "classification_train_step": {
        "kind": "function",
        "signature": "(model: nnx.Module, optimizer: nnx.Optimizer, "
        "batch: Any, *, rngs: nnx.Rngs | None = None) -> "
        "Metrics",
    },
    "cosine_annealing_schedule": {
        "kind": "function",
        "signature": "(base_lr: float, T_max: int, eta_min: float = 0.0) -> optax.Schedule",
    },
    "cosine_warm_restarts_schedule": {
        "kind": "function",
        "signature": "(base_lr: float, T_0: int, T_mult: int = 1, "
        "eta_min: float = 0.0, *, decay: float = 1.0, "
        "warmup_steps: int = 0, warmup: str = 'first') "
        "-> optax.Schedule",
    },
    "create_writer": {
        "kind": "function",
        "signature": "(logdir: str | os.PathLike, *, backend: str = 'auto', "
        "asynchronous: bool = True, just_logging: bool | None = None) "
        "-> Any",
    },
    "cyclic_schedule": {
        "kind": "function",
        "signature": "(base_lr: float, max_lr: float, step_size_up: int = 2000, "
        "step_size_down: int | None = None, mode: str = "
        "'triangular', gamma: float = 1.0, scale_fn: Callable[[Any], "
        "Any] | None = None, scale_mode: str = 'cycle') -> "
        "optax.Schedule",
    },
    "init_average": {"kind": "function", "signature": "(params: Any) -> WeightAverage"},
    "linear_schedule": {
        "kind": "function",
        "signature": "(base_lr: float, start_factor: float = 0.3333333333333333, "
        "end_factor: float = 1.0, total_iters: int = 5) -> "
        "optax.Schedule",
    },
    "lr_find": {
        "kind": "function",
        "signature": "(model: nnx.Module, optimizer: nnx.Optimizer, train_data: "
        "Iterable[Any], *, train_step: Callable[[nnx.Module, nnx.Optimizer, "
        "Any], Any] | None = None, start_lr: float = 1e-07, end_lr: float = "
        "10.0, num_steps: int = 100, mode: str = 'exponential', smoothing: "
        "float | None = None, diverge_threshold: float = 4.0, learning_rate: "
        "str = 'learning_rate', rngs: nnx.Rngs | None = None) -> "
        "LRFinderResult",
    },
    "onecycle_schedule": {
        "kind": "function",
        "signature": "(max_lr: float, total_steps: int, pct_start: float = 0.3, "
        "anneal_strategy: str = 'cos', div_factor: float = 25.0, "
        "final_div_factor: float = 10000.0, three_phase: bool = "
        "False) -> optax.Schedule",
    },
    "read_scalars": {
        "kind": "function",
        "signature": "(logdir: str | os.PathLike, tags: Iterable[str] | None = None) "
        "-> dict[str, list[tuple[int, float]]]",
    },
    "set_hyperparams": {
        "kind": "function",
        "signature": "(opt_state: Any, *, learning_rate: Any = None, momentum: "
        "Any = None, groups: Sequence[str] | None = None, "
        "**hyperparams: Any) -> Any",
    },
    "triangular_schedule": {
        "kind": "function",
        "signature": "(base_lr: float, max_lr: float, step_size: int = 2000) -> optax.Schedule",
    },
    "update_average": {
        "kind": "function",
        "signature": "(average: WeightAverage, params: Any, *, take: Any = True, "
        "decay: float | None = None) -> WeightAverage",
    },
    "update_batch_stats": {
        "kind": "function",
        "signature": "(model: nnx.Module, batches: Iterable[Any], *, forward: "
        "Callable[[nnx.Module, Any], Any] | None = None) -> int",
    },
}

CALLBACKS: dict[str, str] = {
    "Callback": "flax_cyclic.Callback",
    "CallbackList": "flax_cyclic.CallbackList",
    "EarlyStopping": "flax_cyclic.EarlyStopping",
    "LRSchedulerCallback": "flax_cyclic.LRSchedulerCallback",
    "LearningRateMonitor": "flax_cyclic.LearningRateMonitor",
    "MetricsLogger": "flax_cyclic.MetricsLogger",
    "ProgressBar": "flax_cyclic.ProgressBar",
    "SnapshotEnsemble": "flax_cyclic.SnapshotEnsemble",
    "TerminateOnNaN": "flax_cyclic.TerminateOnNaN",
    "WeightAveraging": "flax_cyclic.WeightAveraging",
}

LOOP: dict[str, Any] = {
    "attributes": {
        "callbacks": "list[Callback]",
        "epoch": "int",
        "model": "Any",
        "optimizer": "Any",
        "step": "int",
        "steps_ahead": "int",
        "stop_training": "bool",
        "total_steps": "int | None",
    },
    "methods": {},
}

RUN: dict[str, Any] = {
    "checkpoints": {
        "files": {
            "flax_cyclic_checkpointer.json": {
                "best_metric": "str",
                "best_mode": "str",
                "format": "str",
                "version": "int",
            }
        },
        "steps": {
            "3": ["callbacks", "extra", "metrics", "model", "optimizer", "trainer"],
            "6": ["callbacks", "extra", "metrics", "model", "optimizer", "trainer"],
        },
        "trainer": {
            "data_state": "null",
            "epoch": "int",
            "epoch_metrics": "null",
            "position": "int",
            "step": "int",
            "stopped": "bool",
            "stopped_by": "null",
        },
        "callbacks": {
            "EarlyStopping[eval/loss]": {
                "best": "float",
                "best_step": "int",
                "mode": "str",
                "monitor": "str",
                "stopped_step": "null",
                "version": "int",
                "wait": "int",
            },
            "LRSchedulerCallback": {
                "interval": "str",
                "scheduler": {
                    "config": {
                        "base_lrs": "list",
                        "base_momentums": "list",
                        "cycle_momentum": "bool",
                        "gamma": "float",
                        "max_lrs": "list",
                        "max_momentums": "list",
                        "mode": "str",
                        "scale_fn": "null",
                        "scale_mode": "str",
                        "step_size_down": "int",
                        "step_size_up": "int",
                    },
                    "format": "str",
                    "last_epoch": "int",
                    "version": "int",
                },
                "train_steps": "int",
            },
            "MetricsLogger": {},
        },
        "metrics": {"eval/accuracy": "float", "eval/loss": "float"},
    },
    "tensorboard": {
        "writer to the LR callback and the Trainer": {
            "eval/accuracy": [3, 6],
            "eval/loss": [3, 6],
            "learning_rate": [1, 2, 3, 4, 5, 6],
            "lr_cycle": [1, 2, 3, 4, 5, 6],
            "lr_cycle_position": [1, 2, 3, 4, 5, 6],
            "momentum": [1, 2, 3, 4, 5, 6],
            "steps_per_sec": [2, 4, 6],
            "train/accuracy": [2, 4, 6],
            "train/loss": [2, 4, 6],
        },
        "writer to the Trainer only": {
            "eval/accuracy": [3, 6],
            "eval/loss": [3, 6],
            "learning_rate": [2, 4, 6],
            "momentum": [2, 4, 6],
            "steps_per_sec": [2, 4, 6],
            "train/accuracy": [2, 4, 6],
            "train/loss": [2, 4, 6],
        },
    },
}


def _same(name: str, expected: Any, live: Any) -> None:
    """Asserts that `live` equals the snapshot `expected`, showing the difference as a diff."""
    if live == expected:
        return
    before = pprint.pformat(expected, width=100, sort_dicts=False).splitlines()
    after = pprint.pformat(live, width=100, sort_dicts=False).splitlines()
    diff = "\n".join(difflib.unified_diff(before, after, "snapshot", "live", lineterm=""))
    pytest.fail(
        f"The public surface changed ({name}). If that is meant, update the literal {name} in "
        f"tests/test_api_snapshot.py (`.venv/bin/python tests/test_api_snapshot.py` prints "
        f"it):\n{diff}",
        pytrace=False,
    )


def test_public_names_kinds_and_signatures():
    _same("PUBLIC", PUBLIC, public_names())


def test_the_callbacks_package_reexports_the_same_objects():
    _same("CALLBACKS", CALLBACKS, callbacks_names())


def test_the_loop_protocol():
    _same("LOOP", LOOP, loop_protocol())


def test_what_a_run_saves_and_logs(tmp_path):
    _same("RUN", RUN, run_outputs(tmp_path))


def _print_snapshot() -> None:  # pragma: no cover - run by hand to update the literals
    import tempfile

    with tempfile.TemporaryDirectory() as workdir:
        run = run_outputs(pathlib.Path(workdir))
    for name, value in (
        ("PUBLIC", public_names()),
        ("CALLBACKS", callbacks_names()),
        ("LOOP", loop_protocol()),
        ("RUN", run),
    ):
        annotation = "dict[str, str]" if name == "CALLBACKS" else "dict[str, Any]"
        print(f"{name}: {annotation} = {pprint.pformat(value, width=96, sort_dicts=False)}\n")


if __name__ == "__main__":
    _print_snapshot()
