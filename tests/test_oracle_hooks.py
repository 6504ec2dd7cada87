"""The hooks oracle: callbacks that read and write the training state through the loop.

The invariant (docs/concepts.md, "Who owns the training state" and "Several steps per
dispatch"): the ``nnx`` objects a hook reaches, ``loop.model`` and ``loop.optimizer``, behave as
the truth.

- One step per dispatch: at every hook they hold that step's state, and whatever a hook leaves
  there (values written in place, Variables or submodules replaced, an assigned ``opt_state``)
  is what the next update trains with, as in a hand-written ``nnx.jit`` loop.
- ``k`` steps per dispatch: reads see the dispatch's end, ``loop.steps_ahead`` updates further
  than the same hook sees with one step per dispatch (``on_step_begin(i)`` runs after update
  ``i``, so there it is at least 1). A change a step hook makes while ``steps_ahead > 0`` (not
  planned through ``Callback.hyperparams_ahead``) is refused with a ``RuntimeError`` or
  ``ValueError`` that names the callback, before any update launched after the hook trains.
  Where a dispatch ends with nothing in flight (epoch ends, evaluations, saves, the end of the
  run, and the last step of the dispatch before each of them) ``steps_ahead`` is 0 and writes
  behave as with one step per dispatch, except a write over an injected hyperparameter that
  another callback gives ahead (the learning rate, which the LR callback plans): one callback
  drives each hyperparameter, so that write is refused, naming the writer, before the next
  dispatch.

Each case is drawn from its seed (`draw`): a 2-layer MLP trained by SGD with momentum (its
learning rate and momentum injected) and an ``LRSchedulerCallback(CyclicLR(...))``, 2 or 3
epochs of 4 to 9 steps, evaluations at the epoch ends and maybe every few steps, 1, 2, 4 or 8
steps per dispatch, maybe stopped at a save point and resumed by a new Trainer (new objects,
the same Checkpointer directory), and 1 to 3 generated callbacks placed at random around the
LR callback:

- ``EMAReader``: reads the parameters (``loop.model``) into a host-side average (checkpointed);
- ``WeightClipper``: clips every parameter in place to 0.9 of its largest magnitude, at step
  ends, step begins or evaluations;
- ``LayerReset``: a layer replaced as a submodule (``model.out = nnx.Linear(...)``), its
  Variables replaced (``layer.kernel = nnx.Param(...)``), or its values written in place, at an
  epoch's begin or end or a step's end;
- ``MomentumSetter``: ``opt.opt_state = set_hyperparams(opt.opt_state, momentum=m)`` in
  ``on_train_begin`` or at step ends;
- ``LRRescaler`` (after the LR callback): halves the injected learning rate at step ends;
- ``StopAt``: sets ``loop.stop_training`` at a step.

With ``k > 1`` a writer may be drawn "settled": it writes only at the steps whose end has
nothing in flight in the dispatch plan (`plan`), at their end (writes that must act as with one
step per dispatch) or, for the clipper, at their begin (too late: the step has trained). Two
callbacks come first in every loop: a probe that reads, every ``read_every`` steps, the
learning rate and momentum the update applied, the optimizer's update count and the
parameters, and records every step's loss; and a ``LearningRateMonitor`` writing to an
in-memory writer.

The reference is a hand-written loop: the same callbacks built anew from the same spec, driven
through ``CallbackList`` around ``nnx.jit(classification_train_step)``, with the same data,
epochs and evaluation points; its objects are the truth by construction. Run with one step per
update, it also gives the state after every update, which a read ``steps_ahead`` further must
see. A stop that a step hook requests takes effect, with ``k`` steps per dispatch, at the end
of the dispatch in flight when it is seen (docs/concepts.md); the reference stops there too.

What the Trainer must do follows from the reference run and the dispatch plan (`expect`):

- ``equal``: the final parameters and optimizer state, the loss of every step, the learning
  rate, momentum and update count of every probed step, every read (against the reference's
  read at the same hook, or its state ``steps_ahead`` updates further), the monitor's log, the
  History and the stop agree with the reference;
- ``refused``: the first change a step hook makes while ``steps_ahead > 0`` (or, with ``k > 1``,
  the first write over the learning rate the LR callback plans) must be refused by an error
  naming that callback; at the error the optimizer has made exactly the updates that
  were dispatched when that hook ran, and the parameters are those of the reference with every
  write from that hook on left out (or hold what the refused hooks wrote), and every read
  before agrees;
- ``reference error``: where the hand-written loop itself raises first (the LR callback refuses
  a learning rate that the rescaler changed behind its back), the Trainer raises the same type
  with the same message start.

A failure lists every difference (which parameter, which step's learning rate, which read) and
the command that reruns the case. The first ``QUICK`` cases of ``CASES`` run in the quick tier,
the rest are marked slow. Rerun one case alone:

    FLAX_CYCLIC_ORACLE_CASES=17 .venv/bin/python -m pytest tests/test_oracle_hooks.py -q
"""

from __future__ import annotations

import dataclasses
import pathlib
import traceback
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from helpers import RecordingWriter, tiny_batches, tiny_mlp
from oracle_support import (  # noqa: F401 (shared_compilation_cache: a fixture)
    campaign,
    rerun_command,
    shared_compilation_cache,
)

from flax_cyclic import (
    Callback,
    CallbackList,
    Checkpointer,
    CyclicLR,
    LearningRateMonitor,
    LRSchedulerCallback,
    Trainer,
    set_hyperparams,
)
from flax_cyclic.steps import classification_eval_step, classification_train_step

CASES = 300  # the campaign: seeds 0 to 299
QUICK = 20  # the first twenty run in the quick tier; the others are marked slow
# The complete tier (CI) runs one of 3 slices of the other 280 (about 0.6 s a case on two cores
# with two workers); successive commits go through all of them, `make test-oracles` all at once.
COMPLETE = 100

HIDDEN = 16
LAYERS = ("hidden", "out")
NAMES = ("kernel", "bias")
KINDS = ("ema", "clip", "reset", "momentum", "rescale", "stop")
STEP_HOOKS = ("step_begin", "step_end")
# Parameters and losses of the Trainer's compiled step against nnx.jit's: both are float32 runs
# of the same computation, which XLA may fuse differently.
RTOL, ATOL = 1e-6, 1e-6
EVAL_DATA = tiny_batches(16, 2, seed=99)


# -- drawing a case ----------------------------------------------------------------------------


def draw(seed: int) -> dict[str, Any]:
    """The case of `seed`: a JSON-able spec, the same for the same seed."""
    rng = np.random.default_rng([seed, 96])  # 96: the quick tier draws every choice

    def pick(options: list[Any]) -> Any:
        return options[int(rng.integers(len(options)))]

    k = (1, 2, 4, 8)[seed % 4]
    epoch_len, epochs = int(rng.integers(4, 10)), int(rng.integers(2, 4))
    total = epoch_len * epochs
    evals = [None, None] + ([2, 3, 5] if k == 1 else [k, 2 * k])
    spec: dict[str, Any] = {
        "seed": seed,
        "k": k,
        "epoch_len": epoch_len,
        "epochs": epochs,
        "eval_every": pick([e for e in evals if e is None or e < total]),
        "read_every": pick([1, 1, 2, 3]),
        "schedule": {
            "base_lr": pick([0.01, 0.02]),
            "max_lr": pick([0.1, 0.2]),
            "step_size_up": int(rng.integers(2, 7)),
            "mode": pick(["triangular", "triangular2"]),
        },
        "resume": None,
    }
    count = pick([1, 2, 2, 3])
    kinds = [KINDS[int(i)] for i in rng.choice(len(KINDS), size=count, replace=False)]
    generated = [_draw_callback(kind, rng, pick, spec) for kind in kinds]
    order = [{"kind": "lr"}, *generated]
    rng.shuffle(order)  # type: ignore[arg-type]
    lr_at = next(i for i, c in enumerate(order) if c["kind"] == "lr")
    for i, entry in enumerate(order):
        if entry["kind"] == "rescale" and i < lr_at:  # it halves what the LR callback wrote
            order[i], order[lr_at] = order[lr_at], order[i]
            break
    spec["callbacks"] = order
    if rng.random() < 0.35:
        every = pick([None, k * 2, k * 3] if k > 1 else [None, 3, 4, 5])
        spec["resume"] = {"every_steps": every if every is None or every < total else None}
    _settle(spec)
    if spec["resume"] is not None:
        at = _resume_point(spec, rng)
        if at is None:
            spec["resume"] = None
            _settle(spec)
        else:
            spec["resume"]["at"] = at
    return spec


def _draw_callback(kind: str, rng: Any, pick: Any, spec: dict[str, Any]) -> dict[str, Any]:
    total = spec["epoch_len"] * spec["epochs"]
    settled = spec["k"] > 1 and rng.random() < 0.4
    if kind == "ema":
        return {
            "kind": kind,
            "hook": pick(["step_end", "step_end", "step_begin", "epoch_end"]),
            "every": pick([1, 2, 3]),
            "decay": pick([0.5, 0.9]),
        }
    if kind == "clip":
        if settled:  # a step end with nothing in flight, or the step's begin, its update done
            hook = pick(["step_end", "step_begin"])
        else:
            hook = pick(["step_end", "step_end", "step_begin", "eval_end"])
        start = int(rng.integers(0, total - 1))
        every = pick([1, 2, 3, 5])
        return {
            "kind": kind,
            "hook": hook,
            "from": start,
            "steps": list(range(start, total, 1 if settled else every)),
            "settled": settled,
        }
    if kind == "reset":
        hook = "step_end" if settled else pick(["epoch_end", "epoch_begin", "step_end"])
        if hook == "epoch_end":
            at = int(rng.integers(0, spec["epochs"] - 1))
        elif hook == "epoch_begin":
            at = int(rng.integers(0, spec["epochs"]))
        else:
            at = int(rng.integers(0, total - 1))
        return {
            "kind": kind,
            "hook": hook,
            "at": at,
            "steps": list(range(total - 1)) if settled else [at],
            "mode": pick(["module", "variables", "inplace"]),
            "layer": pick(list(LAYERS)),
            "init": int(rng.integers(1000)),
            "settled": settled,
        }
    if kind == "momentum":
        if not settled and rng.random() < 0.4:
            return {"kind": kind, "hook": "train_begin", "value": pick([0.0, 0.5, 0.8])}
        start, every = int(rng.integers(0, total - 1)), pick([2, 3, 5])
        return {
            "kind": kind,
            "hook": "step_end",
            "steps": list(range(start, total - 1, 1 if settled else every)),
            "settled": settled,
        }
    if kind == "rescale":
        start, span = int(rng.integers(0, total - 1)), int(rng.integers(1, 7))
        if not settled and rng.random() < 0.3:
            start = 0  # from update 1 on: the LR callback has not yet confirmed what it writes
        return {
            "kind": kind,
            "hook": "step_end",
            "steps": list(range(start, total - 1 if settled else min(total - 1, start + span))),
            "settled": settled,
        }
    assert kind == "stop"
    return {
        "kind": kind,
        "hook": pick(["step_end", "step_begin"]),
        "at": int(rng.integers(1, total - 1)),
    }


def _settle(spec: dict[str, Any]) -> None:
    """Keeps a settled writer's steps to those whose end has nothing in flight (in the plan).

    At such a step's begin the dispatch has trained the step already: ``steps_ahead`` is 1.
    """
    ahead = plan(spec).ahead
    for entry in spec["callbacks"]:
        if entry.get("settled"):
            entry.setdefault("drawn_steps", entry["steps"])
            entry["steps"] = [s for s in entry["drawn_steps"] if ahead.get(("step_end", s)) == 0]
            if entry["kind"] == "reset":
                entry["steps"] = entry["steps"][:1]  # one reset, at the first settled step


def _resume_point(spec: dict[str, Any], rng: Any) -> int | None:
    """A save point to stop the first Trainer at, where the callbacks allow an exact resume."""
    length, total = spec["epoch_len"], spec["epoch_len"] * spec["epochs"]
    every = spec["resume"]["every_steps"]
    points = [t for t in range(1, total) if t % length == 0 or (every and t % every == 0)]
    for entry in spec["callbacks"]:
        if entry["kind"] == "stop":  # the first run must not stop
            points = [t for t in points if t < entry["at"]]
        elif entry["kind"] == "reset" and entry["hook"] == "epoch_begin":
            # A resumed epoch begins again: not within the epoch whose begin resets.
            epoch = entry["at"]
            points = [t for t in points if not epoch * length < t < (epoch + 1) * length]
        elif entry["kind"] == "rescale":
            # The resumed LR callback writes its own value at on_train_begin, and checks the
            # first two updates it drives against what it wrote.
            points = [t for t in points if t - 1 not in entry["steps"] and t not in entry["steps"]]
    return int(points[int(rng.integers(len(points)))]) if points else None


def describe(spec: dict[str, Any]) -> str:
    """One line: the loop and its callbacks in order."""
    parts = [
        f"k={spec['k']}",
        f"{spec['epochs']} epochs x {spec['epoch_len']} steps",
        f"eval every {spec['eval_every']}" if spec["eval_every"] else "eval at epoch ends",
        f"probe every {spec['read_every']}",
    ]
    if spec["resume"]:
        every = spec["resume"]["every_steps"]
        parts.append(f"stopped at save {spec['resume']['at']} and resumed (every_steps={every})")
    callbacks = ", ".join(_describe_callback(entry) for entry in spec["callbacks"])
    return "; ".join(parts) + f"; callbacks: probe, monitor, {callbacks}"


def _describe_callback(entry: dict[str, Any]) -> str:
    kind = entry["kind"]
    settled = " settled" if entry.get("settled") else ""
    if kind == "lr":
        return "lr"
    if kind == "ema":
        return f"ema({entry['hook']} every {entry['every']})"
    if kind == "clip":
        where = f"from step {entry['from']}" if entry["hook"] == "eval_end" else entry["steps"]
        return f"clip({entry['hook']}{settled} {where})"
    if kind == "reset":
        where = entry["steps"] if entry["hook"] == "step_end" else f"epoch {entry['at']}"
        return f"reset({entry['layer']} {entry['mode']} at {entry['hook']}{settled} {where})"
    if kind == "momentum":
        if entry["hook"] == "train_begin":
            return f"momentum({entry['value']} at train_begin)"
        return f"momentum(step_end{settled} {entry['steps']})"
    if kind == "rescale":
        return f"rescale(step_end{settled} {entry['steps']})"
    return f"stop({entry['hook']} {entry['at']})"


def case_id(spec: dict[str, Any]) -> str:
    parts = [str(spec["seed"]), f"k{spec['k']}"]
    if spec["resume"]:
        parts.append(f"resume{spec['resume']['at']}")
    for entry in spec["callbacks"]:
        hook = entry.get("hook", "")
        parts.append(entry["kind"] + (f".{hook}" if hook else ""))
    return "-".join(parts)


# -- the dispatch plan -------------------------------------------------------------------------


@dataclasses.dataclass
class Plan:
    """Where the Trainer's dispatches end, and how far ahead each step hook's state is.

    ``ahead[(hook, step)]``: the updates the state has made beyond what that hook sees with one
    step per dispatch. ``end``: the step the run ends at (a stop's effect included).
    """

    ahead: dict[tuple[str, int], int]
    end: int


def plan(spec: dict[str, Any]) -> Plan:
    """The dispatches of docs/concepts.md: they end at multiples of k, epoch ends and the run's
    end; one ending where an evaluation or a save is due, at an epoch end or at the end of the
    run has nothing in flight while its hooks run; any other has the next one in flight."""
    k, length = spec["k"], spec["epoch_len"]
    total = length * spec["epochs"]
    every_eval = spec["eval_every"]
    every_save = (spec["resume"] or {}).get("every_steps")
    at = (spec["resume"] or {}).get("at")
    dispatches, begin = [], 0
    while begin < total:
        end = min(begin + k - begin % k, (begin // length + 1) * length, total)
        dispatches.append((begin, end))
        begin = end
    settled = [
        k == 1  # one step per dispatch: nothing is ever in flight
        or end % length == 0
        or end == total
        or end == at
        or bool(every_eval and end % every_eval == 0)
        or bool(every_save and end % every_save == 0)
        for _, end in dispatches
    ]
    stop = next((entry["at"] for entry in spec["callbacks"] if entry["kind"] == "stop"), None)
    if stop is not None:
        index = next(i for i, (b, e) in enumerate(dispatches) if b <= stop < e)
        if not settled[index]:  # the next dispatch is in flight when the stop is seen
            index += 1
            settled[index] = True
        dispatches = dispatches[: index + 1]
    ahead: dict[tuple[str, int], int] = {}
    for i, (begin, end) in enumerate(dispatches):
        following = 0 if settled[i] else dispatches[i + 1][1] - dispatches[i + 1][0]
        for step in range(begin, end):
            beyond = end - 1 - step + following
            ahead["step_end", step] = beyond if k > 1 else 0
            ahead["step_begin", step] = beyond + 1 if k > 1 else 0
    return Plan(ahead, dispatches[-1][1])


# -- what the callbacks record -----------------------------------------------------------------

Point = tuple[str, int, int]  # (hook, loop.step, loop.epoch)


@dataclasses.dataclass
class Read:
    point: Point
    reader: str
    ahead: int
    params: dict[str, np.ndarray]


@dataclasses.dataclass
class Hyper:
    point: Point
    ahead: int
    learning_rate: float
    momentum: float
    count: int


@dataclasses.dataclass
class Write:
    point: Point
    writer: str
    ahead: int
    seq: int | None  # the reference's hook call, None in a Trainer run
    left: dict[str, np.ndarray]  # parameters the write left in the model, by name
    planned: bool = False  # over a hyperparameter another callback gives ahead


@dataclasses.dataclass
class Record:
    reads: list[Read] = dataclasses.field(default_factory=list)
    hypers: list[Hyper] = dataclasses.field(default_factory=list)
    writes: list[Write] = dataclasses.field(default_factory=list)
    losses: dict[int, float] = dataclasses.field(default_factory=dict)


class Clock:
    """The hook calls of the reference loop, counted (``seq``); ``None`` in a Trainer run."""

    def __init__(self) -> None:
        self.seq: int | None = None

    def tick(self) -> None:
        self.seq = 0 if self.seq is None else self.seq + 1


def params_of(model: Any) -> dict[str, np.ndarray]:
    """The model's parameters on the host, by ``layer.name``: one transfer."""
    found = {
        f"{layer}.{name}": getattr(getattr(model, layer), name)[...]
        for layer in LAYERS
        for name in NAMES
    }
    return {name: np.array(value) for name, value in jax.device_get(found).items()}


def state_of(model: Any, optimizer: Any) -> dict[str, np.ndarray]:
    """Every leaf of the model's and the optimizer's state, by path, on the host."""
    out = {}
    for prefix, obj in (("model", model), ("optimizer", optimizer)):
        leaves = jax.tree_util.tree_flatten_with_path(nnx.state(obj))[0]
        host = jax.device_get([leaf for _, leaf in leaves])
        for (path, _), value in zip(leaves, host, strict=True):
            out[prefix + jax.tree_util.keystr(path)] = np.asarray(value)
    return out


def _ahead(loop: Any) -> int:
    return int(getattr(loop, "steps_ahead", 0))


class Probe(Callback):
    """First in the loop: every step's loss; every ``every`` steps, at the step's end, the
    injected learning rate and momentum (what the update applied), the optimizer's update
    count and the parameters."""

    def __init__(self, every: int, record: Record) -> None:
        self.every, self.record = every, record

    def on_step_end(self, loop: Any, step: int, metrics: Any) -> None:
        self.record.losses[step] = float(metrics["loss"])
        if (step + 1) % self.every:
            return
        point, ahead = ("step_end", step, loop.epoch), _ahead(loop)
        optimizer = loop.optimizer
        hyperparams = optimizer.opt_state.hyperparams  # looked up anew: it may be replaced
        values = jax.device_get(
            [hyperparams["learning_rate"][...], hyperparams["momentum"][...], optimizer.step[...]]
        )
        self.record.hypers.append(
            Hyper(point, ahead, float(values[0]), float(values[1]), int(values[2]))
        )
        self.record.reads.append(Read(point, "Probe", ahead, params_of(loop.model)))


class _Generated(Callback):
    """A generated callback: its spec entry, the record, and (in the reference) a mute point.

    ``mute``: from this hook call of the reference on (``Clock.seq``), the callback writes
    nothing: the reference of a run whose Trainer refuses a write made there.
    """

    def __init__(self, entry: dict[str, Any], record: Record, clock: Clock, mute: int | None):
        self.entry, self.record, self.clock, self.mute = entry, record, clock, mute

    def _muted(self) -> bool:
        seq = self.clock.seq
        return self.mute is not None and seq is not None and seq >= self.mute

    # Whether it writes an injected hyperparameter that another callback (the LR callback)
    # gives ahead through Callback.hyperparams_ahead.
    OVER_PLANNED = False

    def _wrote(self, loop: Any, point: Point, left: dict[str, np.ndarray] | None = None) -> None:
        self.record.writes.append(
            Write(
                point,
                type(self).__name__,
                _ahead(loop),
                self.clock.seq,
                left or {},
                self.OVER_PLANNED,
            )
        )

    def _at_step(self, hook: str, step: int) -> bool:
        return self.entry["hook"] == hook and step in self.entry["steps"]


class EMAReader(_Generated):
    """Reads the parameters into a host-side exponential average (reads only; checkpointed)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.ema: dict[str, np.ndarray] | None = None
        self.count = 0

    def on_step_begin(self, loop: Any, step: int) -> None:
        if self.entry["hook"] == "step_begin" and step % self.entry["every"] == 0:
            self._read(loop, ("step_begin", step, loop.epoch))

    def on_step_end(self, loop: Any, step: int, metrics: Any) -> None:
        if self.entry["hook"] == "step_end" and step % self.entry["every"] == 0:
            self._read(loop, ("step_end", step, loop.epoch))

    def on_epoch_end(self, loop: Any, epoch: int, metrics: Any) -> None:
        if self.entry["hook"] == "epoch_end":
            self._read(loop, ("epoch_end", loop.step, epoch))

    def _read(self, loop: Any, point: Point) -> None:
        params = params_of(loop.model)
        self.record.reads.append(Read(point, type(self).__name__, _ahead(loop), params))
        decay = self.entry["decay"]
        if self.ema is None:
            self.ema = {name: value.astype(np.float64) for name, value in params.items()}
        else:
            self.ema = {
                name: decay * self.ema[name] + (1 - decay) * params[name] for name in params
            }
        self.count += 1

    def state_dict(self) -> dict[str, Any]:
        ema = None if self.ema is None else {name: v.tolist() for name, v in self.ema.items()}
        return {"count": self.count, "ema": ema}

    def load_state_dict(self, state: Any) -> None:
        self.count = state["count"]
        ema = state["ema"]
        self.ema = None if ema is None else {n: np.asarray(v, np.float64) for n, v in ema.items()}


class WeightClipper(_Generated):
    """Clips every parameter in place to 0.9 of its largest magnitude: always a change."""

    def on_step_begin(self, loop: Any, step: int) -> None:
        if self._at_step("step_begin", step):
            self._clip(loop, ("step_begin", step, loop.epoch))

    def on_step_end(self, loop: Any, step: int, metrics: Any) -> None:
        if self._at_step("step_end", step):
            self._clip(loop, ("step_end", step, loop.epoch))

    def on_eval_end(self, loop: Any, metrics: Any) -> None:
        if self.entry["hook"] == "eval_end" and loop.step >= self.entry["from"]:
            self._clip(loop, ("eval_end", loop.step, loop.epoch))

    def _clip(self, loop: Any, point: Point) -> None:
        if self._muted():
            return
        model = loop.model
        before = params_of(model)
        self.record.reads.append(Read(point, type(self).__name__, _ahead(loop), before))
        left = {}
        for layer in LAYERS:
            for name in NAMES:
                bound = 0.9 * float(np.max(np.abs(before[f"{layer}.{name}"])))
                if bound == 0.0:  # a bias still at its zeros
                    continue
                param = getattr(getattr(model, layer), name)
                param[...] = jnp.clip(param[...], -bound, bound)
                left[f"{layer}.{name}"] = np.array(param[...])
        self._wrote(loop, point, left)


class LayerReset(_Generated):
    """Gives a layer new weights: a new submodule, new Variables, or new values in place."""

    def on_epoch_begin(self, loop: Any, epoch: int) -> None:
        if self.entry["hook"] == "epoch_begin" and epoch == self.entry["at"]:
            self._reset(loop, ("epoch_begin", loop.step, epoch))

    def on_epoch_end(self, loop: Any, epoch: int, metrics: Any) -> None:
        if self.entry["hook"] == "epoch_end" and epoch == self.entry["at"]:
            self._reset(loop, ("epoch_end", loop.step, epoch))

    def on_step_end(self, loop: Any, step: int, metrics: Any) -> None:
        if self._at_step("step_end", step):
            self._reset(loop, ("step_end", step, loop.epoch))

    def _reset(self, loop: Any, point: Point) -> None:
        if self._muted():
            return
        entry = self.entry
        model, layer = loop.model, entry["layer"]
        fan_in, fan_out = (8, HIDDEN) if layer == "hidden" else (HIDDEN, 3)
        rng = np.random.default_rng(entry["init"])
        kernel = (0.4 * rng.normal(size=(fan_in, fan_out))).astype(np.float32)
        bias = (0.1 * rng.normal(size=fan_out)).astype(np.float32)
        if entry["mode"] == "module":
            setattr(model, layer, nnx.Linear(fan_in, fan_out, rngs=nnx.Rngs(entry["init"])))
        elif entry["mode"] == "variables":
            module = getattr(model, layer)
            module.kernel = nnx.Param(jnp.asarray(kernel))
            module.bias = nnx.Param(jnp.asarray(bias))
        else:
            module = getattr(model, layer)
            module.kernel[...] = jnp.asarray(kernel)
            module.bias[...] = jnp.asarray(bias)
        module = getattr(model, layer)
        left = {f"{layer}.{name}": np.array(getattr(module, name)[...]) for name in NAMES}
        self._wrote(loop, point, left)


class MomentumSetter(_Generated):
    """Assigns ``opt_state = set_hyperparams(opt_state, momentum=m)``: a new Variable."""

    def on_train_begin(self, loop: Any) -> None:
        if self.entry["hook"] == "train_begin":
            self._set(loop, ("train_begin", loop.step, loop.epoch), self.entry["value"])

    def on_step_end(self, loop: Any, step: int, metrics: Any) -> None:
        if self._at_step("step_end", step):
            # A new value at every write (never the initial 0.9): each write is a change.
            self._set(loop, ("step_end", step, loop.epoch), 0.5 + 0.01 * (step % 40))

    def _set(self, loop: Any, point: Point, momentum: float) -> None:
        if self._muted():
            return
        optimizer = loop.optimizer
        optimizer.opt_state = set_hyperparams(optimizer.opt_state, momentum=momentum)
        self._wrote(loop, point)


class LRRescaler(_Generated):
    """Placed after the LR callback: halves the learning rate it wrote, in place."""

    OVER_PLANNED = True

    def on_step_end(self, loop: Any, step: int, metrics: Any) -> None:
        if not self._at_step("step_end", step) or self._muted():
            return
        variable = loop.optimizer.opt_state.hyperparams["learning_rate"]
        variable[...] = 0.5 * variable[...]
        self._wrote(loop, ("step_end", step, loop.epoch))


class StopAt(_Generated):
    """Sets ``loop.stop_training`` at one step."""

    def on_step_begin(self, loop: Any, step: int) -> None:
        if self.entry["hook"] == "step_begin" and step == self.entry["at"]:
            loop.stop_training = True

    def on_step_end(self, loop: Any, step: int, metrics: Any) -> None:
        if self.entry["hook"] == "step_end" and step == self.entry["at"]:
            loop.stop_training = True


GENERATED = {
    "ema": EMAReader,
    "clip": WeightClipper,
    "reset": LayerReset,
    "momentum": MomentumSetter,
    "rescale": LRRescaler,
    "stop": StopAt,
}


@dataclasses.dataclass
class Built:
    model: Any
    optimizer: Any
    callbacks: list[Callback]
    ema: EMAReader | None


def build(
    spec: dict[str, Any], record: Record, clock: Clock, writer: Any, mute: int | None = None
) -> Built:
    """The model, the optimizer and the callbacks of `spec`, every object new."""
    model = tiny_mlp(spec["seed"] % 7, hidden=HIDDEN)
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.0, momentum=0.9)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    callbacks: list[Callback] = [
        Probe(spec["read_every"], record),
        LearningRateMonitor(writer, log_every_steps=spec["read_every"]),
    ]
    ema = None
    for entry in spec["callbacks"]:
        if entry["kind"] == "lr":
            scheduler = CyclicLR(**spec["schedule"], cycle_momentum=False)
            callbacks.append(LRSchedulerCallback(scheduler, plot_steps=0))
            continue
        callback = GENERATED[entry["kind"]](entry, record, clock, mute)
        callbacks.append(callback)
        if isinstance(callback, EMAReader):
            ema = callback
    return Built(model, optimizer, callbacks, ema)


def train_batches(spec: dict[str, Any], epoch: int) -> list[tuple[np.ndarray, np.ndarray]]:
    return tiny_batches(8, spec["epoch_len"], seed=100 * spec["seed"] + epoch)


# -- the reference: a hand-written loop --------------------------------------------------------


@dataclasses.dataclass
class Outcome:
    """What a run left."""

    record: Record
    writer: RecordingWriter
    train: list[dict[str, float]] = dataclasses.field(default_factory=list)
    eval: list[dict[str, float]] = dataclasses.field(default_factory=list)
    stopped: bool = False
    step: int = 0
    state: dict[str, np.ndarray] | None = None  # the final state, without an error
    ema: EMAReader | None = None
    error: BaseException | None = None
    error_seq: int | None = None  # the reference's hook call that raised
    # The reference: the parameters after n updates (before any hook of update n - 1 ran);
    # which hook call each point was.
    after: list[dict[str, np.ndarray]] = dataclasses.field(default_factory=list)
    seqs: dict[Point, int] = dataclasses.field(default_factory=dict)
    # A Trainer's error: its update count and parameters afterwards (or why they are unknown).
    error_count: int | None = None
    error_params: dict[str, np.ndarray] | None = None
    error_state_problem: str | None = None
    histories: list[Any] = dataclasses.field(default_factory=list)


_TRAIN_STEP = nnx.jit(classification_train_step)
_EVAL_STEP = nnx.jit(classification_eval_step)


def run_reference(spec: dict[str, Any], mute: int | None = None) -> Outcome:
    """The run of `spec` in a hand-written loop over ``CallbackList`` (one step per call).

    Each update is waited for before its hooks, so the LR callback's checks of the values
    applied (which read only values already computed) act at the same step every time.
    """
    record, clock, writer = Record(), Clock(), RecordingWriter()
    built = build(spec, record, clock, writer, mute)
    loop = CallbackList(built.callbacks, model=built.model, optimizer=built.optimizer)
    out = Outcome(record, writer, ema=built.ema)
    end = plan(spec).end
    length = spec["epoch_len"]

    def hook(name: str, *args: Any) -> None:
        clock.tick()
        assert clock.seq is not None
        out.seqs[_point_of(name, loop, args)] = clock.seq
        getattr(loop, f"on_{name}")(*args)

    def evaluate() -> None:
        hook("eval_begin")
        model = loop.model
        metrics = jax.device_get([_EVAL_STEP(model, batch) for batch in EVAL_DATA])
        summary = {"step": loop.step, "epoch": loop.epoch}
        summary |= {name: float(np.mean([m[name] for m in metrics])) for name in metrics[0]}
        out.eval.append(summary)
        hook("eval_end", summary)

    def summary_of(epoch_metrics: list[Any]) -> dict[str, float]:
        summary = {"step": loop.step, "epoch": loop.epoch}
        host = jax.device_get(epoch_metrics)
        summary |= {name: float(np.mean([m[name] for m in host])) for name in host[0]}
        out.train.append(summary)
        return summary

    out.after.append(params_of(loop.model))
    try:
        hook("train_begin")
        for epoch in range(spec["epochs"]):
            hook("epoch_begin", epoch)
            epoch_metrics: list[Any] = []
            for batch in train_batches(spec, epoch):
                hook("step_begin")
                metrics = jax.block_until_ready(_TRAIN_STEP(loop.model, loop.optimizer, batch))
                out.after.append(params_of(loop.model))
                hook("step_end", metrics)
                epoch_metrics.append(metrics)
                if loop.stop_training and loop.step >= end:
                    out.stopped = True
                    break
                due = spec["eval_every"] and loop.step % spec["eval_every"] == 0
                if due and loop.step % length:  # an epoch's end evaluates once, below
                    evaluate()
            if out.stopped:  # a step hook's stop: no evaluation, no epoch end
                summary_of(epoch_metrics)
                break
            summary = summary_of(epoch_metrics)
            evaluate()
            hook("epoch_end", summary)
        hook("train_end")
    except Exception as error:  # what the loop would raise: the expected outcome
        out.error, out.error_seq = error, clock.seq
        loop.on_exception(error)
        return out
    out.step = loop.step
    out.state = state_of(loop.model, loop.optimizer)
    return out


def _point_of(name: str, loop: Any, args: tuple[Any, ...]) -> Point:
    if name == "epoch_begin":
        return ("epoch_begin", loop.step, args[0])
    if name == "epoch_end":
        return ("epoch_end", loop.step, loop.epoch)
    return (name, loop.step, loop.epoch)


# -- the Trainer -------------------------------------------------------------------------------


def run_trainer(spec: dict[str, Any], workdir: pathlib.Path) -> Outcome:
    """The run of `spec` by ``Trainer.fit``: once, or stopped at a save point and resumed by a
    second Trainer with every object new."""
    record, writer = Record(), RecordingWriter()
    out = Outcome(record, writer)
    resume = spec["resume"]
    lengths = [{"num_epochs": spec["epochs"]}]
    if resume:
        lengths.insert(0, {"num_steps": resume["at"]})
    for length in lengths:
        built = build(spec, record, Clock(), writer)
        checkpointer = None
        if resume:
            checkpointer = Checkpointer(
                workdir / "checkpoints",
                every_steps=resume["every_steps"],
                every_epoch=True,
                max_to_keep=2,
                async_save=False,
            )
        trainer = Trainer(
            built.model,
            built.optimizer,
            callbacks=built.callbacks,
            checkpointer=checkpointer,
            progress=False,
            steps_per_dispatch=spec["k"],
        )
        try:
            history = trainer.fit(
                lambda epoch: train_batches(spec, epoch),
                **length,
                eval_data=EVAL_DATA,
                eval_every_steps=spec["eval_every"],
            )
        except Exception as error:
            out.error = error
            _state_at_error(trainer, out)
            return out
        finally:
            if checkpointer is not None:
                checkpointer.close()
        out.histories.append(history)
    at = resume["at"] if resume else None
    for history in out.histories:
        resumed = history.resumed_from is not None
        for kind in ("train", "eval"):
            for entry in getattr(history, kind):
                if at is None or _kept(kind, entry["step"], at, resumed, spec["epoch_len"]):
                    getattr(out, kind).append(dict(entry))
    out.stopped = out.histories[-1].stopped
    out.step = trainer.step
    out.state = state_of(trainer.model, trainer.optimizer)
    out.ema = built.ema
    return out


def _kept(kind: str, step: int, at: int, resumed: bool, epoch_len: int) -> bool:
    """Whether a History entry of a run stopped at `at` (or resumed from it) is the
    uninterrupted run's: the first run's partial epoch at `at` is not."""
    if resumed:
        return step > at
    if kind == "eval":
        return step <= at
    return step < at or (step == at and at % epoch_len == 0)


def _state_at_error(trainer: Trainer, out: Outcome) -> None:
    try:
        out.error_count = int(jax.device_get(trainer.optimizer.step[...]))
        out.error_params = params_of(trainer.model)
    except Exception as error:  # the state could not be read back: that is a finding too
        out.error_state_problem = f"{type(error).__name__}: {error}"


# -- the expected outcome ----------------------------------------------------------------------


@dataclasses.dataclass
class Expected:
    kind: str  # "equal" | "refused" | "reference error"
    write: Write | None = None  # refused: the first write the Trainer must refuse
    updates: int | None = None  # refused: the updates dispatched when its hook ran
    error: BaseException | None = None  # reference error
    # refused: the reference raised in the same hook call as the write, after it (a callback
    # later in the list): a Trainer may raise that error instead, where it checks the write
    # once the hook call is over.
    alternative: BaseException | None = None

    def __str__(self) -> str:
        if self.kind == "refused":
            assert self.write is not None
            hook, step, _ = self.write.point
            over = ", over the learning rate the LR callback plans" if self.write.planned else ""
            return (
                f"refused: {self.write.writer}'s write at {hook}({step}) with steps_ahead "
                f"{self.write.ahead}{over}, after {self.updates} updates"
            )
        if self.kind == "reference error":
            return f"reference error: {type(self.error).__name__}: {_start(self.error)}"
        return "equal to the reference"


def expect(spec: dict[str, Any], reference: Outcome) -> Expected:
    """The Trainer's expected outcome, from the reference run and the dispatch plan."""
    ahead = plan(spec).ahead
    for write in reference.record.writes:
        hook, step, _ = write.point
        a = ahead.get((hook, step), 0) if hook in STEP_HOOKS else 0
        if a > 0 or (spec["k"] > 1 and write.planned):
            assert write.seq is not None
            error_seq = reference.error_seq
            if error_seq is not None and error_seq < write.seq:
                break  # the reference raised first
            updates = step + 1 + a if hook == "step_end" else step + a
            same_call = reference.error if error_seq == write.seq else None
            return Expected(
                "refused", dataclasses.replace(write, ahead=a), updates, alternative=same_call
            )
    if reference.error is not None:
        return Expected("reference error", error=reference.error)
    return Expected("equal")


def _start(error: BaseException | None) -> str:
    """The stable start of an error message: up to its first '=' (values follow)."""
    return str(error).split("=")[0]


# -- the comparison ----------------------------------------------------------------------------


def _differs(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> str | None:
    """The first leaf of `got` that differs from `want`, in words; None if all agree."""
    if set(got) != set(want):
        return f"leaves differ: {sorted(set(got) ^ set(want))}"
    for name in sorted(want):
        a, b = np.asarray(got[name]), np.asarray(want[name])
        if a.shape != b.shape:
            return f"{name}: shape {a.shape}, expected {b.shape}"
        if not np.allclose(a, b, rtol=RTOL, atol=ATOL):
            diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
            index = np.unravel_index(int(np.argmax(diff)), diff.shape) if diff.ndim else ()
            return (
                f"{name} differs by up to {float(diff.max()):.3g} (at {tuple(map(int, index))}: "
                f"{a[index]!r}, expected {b[index]!r})"
            )
    return None


def _close(a: float, b: float) -> bool:
    return bool(np.isclose(a, b, rtol=1e-5, atol=ATOL))


def compare_reads(
    spec: dict[str, Any], got: Outcome, reference: Outcome, before: int | None
) -> list[str]:
    """Every read of the Trainer run against the reference (up to hook call `before`).

    A read with ``steps_ahead == 0`` must see what the reference's same reader saw at the same
    hook; one ``a`` ahead, the reference's parameters ``a`` updates further than that hook sees
    with one step per dispatch. Step hooks must report the plan's ``steps_ahead``.
    """
    problems: list[str] = []
    ahead = plan(spec).ahead
    want = {(read.point, read.reader): read for read in reference.record.reads}
    wrong_ahead: list[str] = []
    for read in got.record.reads:
        hook, step, _ = read.point
        seq = reference.seqs.get(read.point)
        if before is not None and (seq is None or seq >= before):
            continue
        where = f"{read.reader} at {hook}({step})"
        if hook in STEP_HOOKS and ahead.get((hook, step)) != read.ahead:
            wrong_ahead.append(f"{hook}({step}): {read.ahead}, planned {ahead.get((hook, step))}")
        if read.ahead == 0:
            expected = want.get((read.point, read.reader))
            if expected is None:
                problems.append(f"{where}: the reference made no such read")
                continue
            difference = _differs(read.params, expected.params)
            if difference:
                problems.append(f"{where} with steps_ahead 0 saw other parameters: {difference}")
            continue
        if hook not in STEP_HOOKS:
            problems.append(f"{where}: steps_ahead {read.ahead} outside a step hook")
            continue
        updates = step + read.ahead + (1 if hook == "step_end" else 0)
        if updates >= len(reference.after):
            problems.append(f"{where}: steps_ahead {read.ahead} beyond the reference's updates")
            continue
        difference = _differs(read.params, reference.after[updates])
        if difference:
            problems.append(
                f"{where} with steps_ahead {read.ahead} should see the state after {updates} "
                f"updates: {difference}"
            )
    if wrong_ahead:
        problems.insert(
            0, f"loop.steps_ahead differs from the dispatch plan at {'; '.join(wrong_ahead[:6])}"
        )
    return problems[:12]


def compare_hypers(got: Outcome, reference: Outcome, before: int | None) -> list[str]:
    """The probe's reads: the applied learning rate and momentum, the update count."""
    problems = []
    want = {hyper.point: hyper for hyper in reference.record.hypers}
    for hyper in got.record.hypers:
        seq = reference.seqs.get(hyper.point)
        if before is not None and (seq is None or seq >= before):
            continue
        hook, step, _ = hyper.point
        expected = want.get(hyper.point)
        if expected is None:
            problems.append(f"step {step}: probed, but the reference made no such step")
            continue
        for name in ("learning_rate", "momentum"):
            a, b = getattr(hyper, name), getattr(expected, name)
            if a != b:
                problems.append(f"update {step} applied {name} {a!r}, the reference {b!r}")
        if hyper.count != step + 1 + hyper.ahead:
            problems.append(
                f"at {hook}({step}) with steps_ahead {hyper.ahead} the optimizer had made "
                f"{hyper.count} updates, not {step + 1 + hyper.ahead}"
            )
    return problems[:10]


def compare_final(spec: dict[str, Any], got: Outcome, reference: Outcome) -> list[str]:
    problems = []
    assert got.state is not None
    assert reference.state is not None
    difference = _differs(got.state, reference.state)
    if difference:
        problems.append(f"final state: {difference}")
    if got.step != reference.step:
        problems.append(f"final step {got.step}, the reference {reference.step}")
    if got.stopped != reference.stopped:
        problems.append(f"History.stopped {got.stopped}, the reference {reference.stopped}")
    for kind in ("train", "eval"):
        a, b = getattr(got, kind), getattr(reference, kind)
        same = len(a) == len(b) and all(
            x.keys() == y.keys()
            and all(x[n] == y[n] if n in ("step", "epoch") else _close(x[n], y[n]) for n in x)
            for x, y in zip(a, b, strict=False)
        )
        if not same:
            problems.append(f"History.{kind}: {a}, the reference {b}")
    losses = [
        f"step {step}: {got.record.losses.get(step)!r}, the reference {loss!r}"
        for step, loss in sorted(reference.record.losses.items())
        if step not in got.record.losses or not _close(got.record.losses[step], loss)
    ]
    extra = sorted(set(got.record.losses) - set(reference.record.losses))
    if losses or extra:
        problems.append(f"train losses differ at {'; '.join(losses[:4])}; extra steps {extra}")
    problems += _compare_monitor(got, reference)
    reads = got.record.reads
    if got.ema is not None and reference.ema is not None and all(r.ahead == 0 for r in reads):
        if (got.ema.ema is None) != (reference.ema.ema is None):
            problems.append(f"EMAReader average: {got.ema.ema}, the reference {reference.ema.ema}")
        elif got.ema.ema is not None:
            assert reference.ema.ema is not None
            difference = _differs(got.ema.ema, reference.ema.ema)
            if difference or got.ema.count != reference.ema.count:
                problems.append(f"EMAReader average after {got.ema.count} reads: {difference}")
    return problems


def _compare_monitor(got: Outcome, reference: Outcome) -> list[str]:
    """The LearningRateMonitor's log: the values the optimizer held, an assigned opt_state's
    included."""
    a, b = got.writer.scalars, reference.writer.scalars
    if a == b:
        return []
    differing = [f"{x} vs {y}" for x, y in zip(a, b, strict=False) if x != y][:3]
    return [f"LearningRateMonitor log ({len(a)} writes, the reference {len(b)}): {differing}"]


def compare_refused(
    expected: Expected, got: Outcome, muted: Outcome, reference: Outcome
) -> list[str]:
    """The Trainer refused the write, naming its callback, before training after it."""
    write = expected.write
    assert write is not None
    assert expected.updates is not None
    if got.error is None:
        assert got.state is not None
        outcomes = []  # where the write went: lost, or trained from another update on
        for name, run in (("with", reference), ("without", muted)):
            if run.state is not None:
                difference = _differs(got.state, run.state)
                outcomes.append(f"{name} the writes: {difference or 'equal'}")
        return [
            f"the run completed: {write.writer}'s write was not refused (its final state "
            f"against the reference {'; '.join(outcomes)})"
        ]
    problems = []
    error = got.error
    if not isinstance(error, (RuntimeError, ValueError)) or write.writer not in str(error):
        problems.append(
            f"the error does not refuse {write.writer}'s write by name: "
            f"{type(error).__name__}: {error}\n{_traceback(error)}"
        )
    if got.error_state_problem:
        return [*problems, f"the state after the error cannot be read: {got.error_state_problem}"]
    if got.error_count != expected.updates:
        problems.append(
            f"at the error the optimizer had made {got.error_count} updates; "
            f"{expected.updates} were dispatched when the refused hook ran"
        )
    elif expected.updates < len(muted.after):
        want = muted.after[expected.updates]
        assert got.error_params is not None
        left: dict[str, np.ndarray] = {}
        for w in got.record.writes:
            left |= w.left
        wrong = [
            name
            for name, value in got.error_params.items()
            if not np.allclose(value, want[name], rtol=RTOL, atol=ATOL)
            and not (name in left and np.array_equal(value, left[name]))
        ]
        if wrong:
            difference = _differs(
                {n: got.error_params[n] for n in wrong}, {n: want[n] for n in wrong}
            )
            problems.append(
                f"at the error the parameters are neither the reference's after "
                f"{expected.updates} updates without the refused writes nor what those wrote: "
                f"{difference}"
            )
    return problems


def compare_reference_error(expected: Expected, got: Outcome) -> list[str]:
    want = expected.error
    assert want is not None
    if got.error is None:
        return [f"the run completed; the reference raised {type(want).__name__}: {want}"]
    if not _same_error(got.error, want):
        return [
            f"raised {type(got.error).__name__}: {got.error}\n{_traceback(got.error)}\n"
            f"the reference raised {type(want).__name__}: {want}"
        ]
    return []


def _same_error(error: BaseException, want: BaseException) -> bool:
    return type(error) is type(want) and _start(error) == _start(want)


def _traceback(error: BaseException) -> str:
    lines = traceback.format_exception(type(error), error, error.__traceback__)
    return "".join(lines[-6:]).rstrip()


def check(seed: int, tmp_path: pathlib.Path) -> None:
    spec = draw(seed)
    reference = run_reference(spec)
    expected = expect(spec, reference)
    got = run_trainer(spec, tmp_path)
    problems: list[str] = []
    alternative = expected.alternative
    if alternative is not None and got.error is not None and _same_error(got.error, alternative):
        expected = Expected("reference error", error=alternative)
    if expected.kind == "refused":
        assert expected.write is not None
        muted = run_reference(spec, mute=expected.write.seq)
        problems += compare_refused(expected, got, muted, reference)
        problems += compare_reads(spec, got, muted, before=expected.write.seq)
        problems += compare_hypers(got, muted, before=expected.write.seq)
    elif expected.kind == "reference error":
        problems += compare_reference_error(expected, got)
        problems += compare_reads(spec, got, reference, before=reference.error_seq)
        problems += compare_hypers(got, reference, before=reference.error_seq)
    else:
        if got.error is not None:
            problems.append(
                f"raised {type(got.error).__name__}: {got.error}\n{_traceback(got.error)}"
            )
        else:
            problems += compare_final(spec, got, reference)
        problems += compare_reads(spec, got, reference, before=None)
        problems += compare_hypers(got, reference, before=None)
    assert not problems, report(spec, expected, problems)


def report(spec: dict[str, Any], expected: Expected, problems: list[str]) -> str:
    return (
        f"seed {spec['seed']}: {describe(spec)}\nexpected: {expected}\n"
        + "\n".join(f"- {problem}" for problem in problems)
        + "\nrerun alone: "
        + rerun_command(
            "tests/test_oracle_hooks.py::"
            "test_hooks_read_and_write_the_state_a_hand_written_loop_does",
            spec["seed"],
        )
    )


# -- the tests ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "seed", campaign(CASES, quick=QUICK, complete=COMPLETE, ids=lambda seed: case_id(draw(seed)))
)
def test_hooks_read_and_write_the_state_a_hand_written_loop_does(seed, tmp_path):
    check(seed, tmp_path)


def _choices(specs: list[dict[str, Any]]) -> set[tuple[str, str | None, bool]]:
    """The (kind, hook, settled) of every callback drawn."""
    return {
        (entry["kind"], entry.get("hook"), bool(entry.get("settled")))
        for spec in specs
        for entry in spec["callbacks"]
    }


def test_the_generator_covers_every_choice():
    specs = [draw(seed) for seed in range(QUICK)]  # the quick tier alone
    every = _choices([draw(seed) for seed in range(CASES)])
    assert _choices(specs) == every, sorted(every - _choices(specs))
    assert len(every) == 20
    assert {s["k"] for s in specs if s["resume"]} == {1, 2, 4, 8}
    assert any(not s["resume"] for s in specs)
    assert draw(7) == draw(7)  # a case is its seed


def test_the_plan_follows_the_dispatch_rules():
    spec = {
        "k": 4, "epoch_len": 6, "epochs": 2, "eval_every": None, "resume": None, "callbacks": [],
    }  # fmt: skip
    ahead = plan(spec).ahead
    # Dispatches [0, 4) [4, 6) | [6, 8) [8, 12): the first of each epoch has the next in flight.
    assert [ahead["step_end", s] for s in range(12)] == [5, 4, 3, 2, 1, 0, 5, 4, 3, 2, 1, 0]
    assert ahead["step_begin", 5] == 1  # update 5 ran before its on_step_begin
    spec["callbacks"] = [{"kind": "stop", "at": 1}]  # seen while [4, 6) trains: ends at 6
    stopped = plan(spec)
    assert stopped.end == 6
    assert stopped.ahead["step_end", 1] == 4
    spec["k"] = 1
    assert plan(spec).end == 2
    assert set(plan(spec).ahead.values()) == {0}
