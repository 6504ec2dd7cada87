"""Oracle: the learning rate and momentum optax applies = what the scheduler reports = logged.

A seeded generator draws a configuration (optimizer, its structure, the hyperparameters' dtype,
how the learning rate is injected, a scheduler of the family, a loop) and runs it on a model
whose gradient is 1 everywhere, so that SGD's parameter change reveals the learning rate it
applied. For every update, the values held in the optimizer's injected state after the update
(and, for SGD, the ones the parameter change implies) must equal the scheduler's values before
the step, cast to the hyperparameter's dtype, and the CLU writer's event files (read back with
TensorBoard's reader) must hold those values at step ``update + 1``. Where the configuration
cannot train as reported (an integer hyperparameter, a learning rate injected as a schedule,
nested ``optax.MultiSteps`` without ``accumulation_steps``, a loop that trains another copy of
the optimizer, a replaced ``loop.optimizer``, ``on_step_end`` twice per update), the run must
raise the error the oracle predicts from the configuration alone, and every update before it
must still satisfy the equality.

A failing case prints its seed and configuration; ``draw(seed)`` rebuilds it. The campaign is
``CASES``; `campaign` (tests/oracle_support.py) picks the cases a test run checks: the first
``QUICK`` in the quick tier, a slice of at most ``COMPLETE`` of the rest in the complete tier
(chosen by the commit), all of them with ``make test-oracles``. Rerun one case alone (a failure
prints this command):

    FLAX_CYCLIC_ORACLE_CASES=17 .venv/bin/python -m pytest \
        'tests/test_oracle_applied.py::test_applied_equals_reported_equals_logged'
"""

from __future__ import annotations

import dataclasses
import math
import random
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from oracle_support import campaign

from flax_cyclic import (
    Callback,
    CallbackList,
    CosineAnnealingWarmRestarts,
    CyclicLR,
    LinearLR,
    LRSchedulerCallback,
    OneCycleLR,
    SequentialLR,
    Trainer,
    WeightAveraging,
    create_writer,
    read_scalars,
    set_hyperparams,
)
from flax_cyclic._hyperparams import find_injected_hyperparams

CASES = [*range(30), *range(1000, 1300)]  # the whole campaign: 330 cases
QUICK = 15  # the quick tier's cases: the first fifteen
# The complete tier (CI) runs one of 3 slices of the other 315: about 0.25 s a case on two
# cores with two workers, under half a minute; successive commits go through all 3.
COMPLETE = 105

LABELS = ("a", "b")  # the parameter groups: the model's two parameters
SIZES = {"a": 2, "b": 3}
CLIP = 1.0  # clip_by_global_norm(1.0) of a gradient of ones over 5 parameters
CLIPPED = CLIP / math.sqrt(sum(SIZES.values()))
DTYPES = {
    "float32": jnp.float32,
    "bfloat16": jnp.bfloat16,
    "float16": jnp.float16,
    "int": None,
}


@dataclasses.dataclass(frozen=True)
class Case:
    """One drawn configuration."""

    seed: int
    optimizer: str  # sgd | adam | adamw
    clip: bool  # chain(clip_by_global_norm, ...)
    groups: bool  # multi_transform over LABELS, one scheduler group per label
    accumulation: str  # none | root | nested (optax.MultiSteps)
    k: int  # MultiSteps' every_k_schedule
    pass_k: bool  # accumulation_steps=k given to the callback
    dtype: str  # of the injected learning rate and momentum
    int_name: str  # lr | momentum: which one is an integer, with dtype 'int'
    injected: str  # value | schedule (the learning rate)
    scheduler: str  # cyclic | onecycle | restarts | sequential
    momentum: str | None  # the callback's momentum= ('auto' or None)
    loop: str  # trainer | hand | functional | functional_wrong | replaced | double_end
    log_every: int
    updates: int
    at: int  # the update of a replaced optimizer or a doubled on_step_end
    dispatch: int = 1  # the Trainer's steps_per_dispatch
    writer: str = "clu"  # create_writer's backend: CLU's writer or TensorBoard's own

    @property
    def micro(self) -> int:
        """Train steps per update."""
        return self.k if self.accumulation != "none" else 1


def draw(seed: int) -> Case:
    """The configuration of ``seed``: everything a case does follows from it."""
    rng = random.Random(seed)
    loop = rng.choices(
        ["trainer", "hand", "functional", "functional_wrong", "replaced", "double_end"],
        [4, 4, 2, 1, 1, 1],
    )[0]
    wrong_loop = loop in ("functional_wrong", "replaced", "double_end")
    optimizer = rng.choice(["sgd", "sgd", "adam", "adamw"])
    dtype = rng.choices(["float32", "bfloat16", "float16", "int"], [5, 2, 2, 1 - wrong_loop])[0]
    injected = "schedule" if not wrong_loop and rng.random() < 0.15 else "value"
    if injected == "schedule" and dtype == "int":
        dtype = "float32"
    accumulation = rng.choices(["none", "root", "nested"], [3, 1, 1])[0]
    updates = rng.randint(5, 8)
    case = Case(
        seed=seed,
        optimizer=optimizer,
        clip=rng.random() < 0.4,
        groups=rng.random() < 0.4,
        accumulation=accumulation,
        k=rng.choice([2, 3]),
        pass_k=wrong_loop or rng.random() < (0.75 if accumulation == "nested" else 0.3),
        dtype=dtype,
        int_name="momentum" if optimizer == "sgd" and rng.random() < 0.5 else "lr",
        injected=injected,
        scheduler=rng.choice(["cyclic", "onecycle", "restarts", "sequential"]),
        momentum=rng.choice(["auto", "auto", None]),
        loop=loop,
        log_every=rng.randint(1, 3),
        updates=updates,
        at=rng.randint(1, updates - 2),
    )
    # Drawn last, so that the fields above are those of the seed before it existed.
    dispatch = rng.choice([1, 2, 4, 8])
    writer = random.Random(f"{seed}/writer").choice(["clu", "tensorboard"])  # a stream apart
    return dataclasses.replace(case, dispatch=dispatch if loop == "trainer" else 1, writer=writer)


# -- the reference: what a configuration must do, from the configuration alone ------------------


def build_scheduler(case: Case) -> Any:
    rng = random.Random(case.seed + 1)
    n = len(LABELS) if case.groups else 1

    def per_group(low: float, high: float) -> float | list[float]:
        values = [round(rng.uniform(low, high), 4) for _ in range(n)]
        return values if case.groups else values[0]

    if case.scheduler == "cyclic":
        return CyclicLR(
            per_group(0.001, 0.01),
            per_group(0.05, 0.1),
            step_size_up=rng.randint(1, 3),
            mode=rng.choice(["triangular", "triangular2", "exp_range"]),
            gamma=0.9,
            cycle_momentum=rng.random() < 0.6,
        )
    if case.scheduler == "onecycle":
        return OneCycleLR(per_group(0.05, 0.1), total_steps=case.updates + rng.randint(0, 3))
    if case.scheduler == "restarts":
        return CosineAnnealingWarmRestarts(per_group(0.02, 0.1), T_0=rng.randint(2, 4))
    warmup = rng.randint(1, 3)
    return SequentialLR(
        [
            LinearLR(per_group(0.05, 0.1), start_factor=0.25, total_iters=warmup),
            CyclicLR(per_group(0.005, 0.01), per_group(0.05, 0.1), step_size_up=2),
        ],
        milestones=[warmup],
    )


def drives_momentum(case: Case, scheduler: Any) -> bool:
    if case.loop == "functional":
        return scheduler.get_last_momentum() is not None
    return case.momentum == "auto" and scheduler.get_last_momentum() is not None


def expected_error(case: Case, scheduler: Any) -> tuple[type[Exception], str] | None:
    """The error a case must raise (type, start of the message), or None."""
    owner = "set_hyperparams" if case.loop == "functional" else "LRSchedulerCallback"
    if case.accumulation == "nested" and not case.pass_k and case.loop != "functional":
        return ValueError, rf"^{owner}: the optimizer accumulates .* nested at"
    int_driven = case.int_name == "lr" or drives_momentum(case, scheduler)
    if case.dtype == "int" and int_driven:
        return ValueError, rf"^{owner}: '\w+' at .* is int32: an integer hyperparameter"
    if case.injected == "schedule":
        if case.loop == "functional":
            return ValueError, rf"^{owner}: 'learning_rate' at .* is injected as a schedule"
        return ValueError, rf"^{owner}: update \d+ applied 'learning_rate'=.* injected as a sche"
    if case.loop == "functional_wrong":
        return ValueError, rf"^{owner}: the optimizer it writes made 0 updates while the callback"
    if case.loop == "replaced":
        return RuntimeError, rf"^{owner}: loop.optimizer was replaced after on_train_begin"
    if case.loop == "double_end":
        return ValueError, rf"^{owner}: the optimizer it writes made \d+ updates while the call"
    return None


# -- the model and the optimizer ---------------------------------------------------------------


class Revealer(nnx.Module):
    """loss = sum of all parameters: every gradient is 1."""

    def __init__(self) -> None:
        self.a = nnx.Param(jnp.zeros(SIZES["a"]))
        self.b = nnx.Param(jnp.zeros(SIZES["b"]))

    def __call__(self) -> jax.Array:
        return jnp.sum(self.a[...]) + jnp.sum(self.b[...])


def reveal_step(model: Revealer, optimizer: nnx.Optimizer, batch: Any = None) -> dict:
    loss, grads = nnx.value_and_grad(lambda m: m())(model)
    optimizer.update(model, grads)
    return {"loss": loss}


def _label(params: Any) -> Any:
    return nnx.map_state(lambda path, _: str(path[0]), params)


def build_tx(case: Case) -> optax.GradientTransformation:
    def value(default: float, name: str) -> Any:
        if case.dtype == "int" and case.int_name == name:
            return 1 if name == "momentum" else 0
        dtype = DTYPES[case.dtype] or jnp.float32
        return dtype(default)

    lr: Any = value(0.0, "lr")
    if case.injected == "schedule":
        lr = optax.linear_schedule(0.2, 0.3, 50)  # never the scheduler's values

    def one(label: str) -> optax.GradientTransformation:
        inject = optax.inject_hyperparams
        if case.optimizer == "sgd":
            return inject(optax.sgd)(learning_rate=lr, momentum=value(0.9, "momentum"))
        adam = inject(optax.adam)(learning_rate=lr, b1=value(0.9, "momentum"))
        if case.optimizer == "adamw" and label == "b":  # a group of two injected states
            return optax.chain(adam, inject(optax.add_decayed_weights)(weight_decay=1e-4))
        if case.optimizer == "adamw":
            return inject(optax.adamw)(learning_rate=lr, b1=value(0.9, "momentum"))
        return adam

    tx = optax.multi_transform({g: one(g) for g in LABELS}, _label) if case.groups else one("a")
    if case.clip:
        tx = optax.chain(optax.clip_by_global_norm(CLIP), tx)
    if case.accumulation == "none":
        return tx
    tx = optax.MultiSteps(tx, every_k_schedule=case.k).gradient_transformation()
    return tx if case.accumulation == "root" else optax.chain(optax.identity(), tx)


# -- what the loops record ---------------------------------------------------------------------


@dataclasses.dataclass
class Record:
    """Per update: the scheduler's values before it, the values held after it, the parameters."""

    reported: list[dict[str, list[float]]] = dataclasses.field(default_factory=list)
    held: list[dict[tuple[str, str | None], np.ndarray]] = dataclasses.field(default_factory=list)
    params: list[dict[str, np.ndarray]] = dataclasses.field(default_factory=list)
    train_steps: int = 0


def _held(opt_state: Any) -> dict[tuple[str, str | None], np.ndarray]:
    """Every injected value: (name, group label) -> its value (the first state of a group)."""
    held: dict[tuple[str, str | None], np.ndarray] = {}
    for state in find_injected_hyperparams(opt_state):
        for name, value in state.values.items():
            raw = value.get_value() if isinstance(value, nnx.Variable) else value
            held.setdefault((name, state.label), np.asarray(raw))
    return held


def _reported(scheduler: Any) -> dict[str, list[float]]:
    momentum = scheduler.get_last_momentum()
    return {"lr": list(scheduler.get_last_lr()), "momentum": list(momentum or [])}


class Probe(Callback):
    """Placed before the LR callback: reads the scheduler before a step, the state after it."""

    def __init__(self, scheduler: Any, record: Record, micro: int) -> None:
        self.scheduler, self.record, self.micro = scheduler, record, micro

    def on_step_begin(self, loop: Any, step: int) -> None:
        self.reported = _reported(self.scheduler)

    def on_step_end(self, loop: Any, step: int, metrics: Any) -> None:
        self.record.train_steps += 1
        if self.record.train_steps % self.micro == 0:  # a parameter update
            self.record.reported.append(self.reported)
            self.record.held.append(_held(loop.optimizer.opt_state))
            # Within a dispatch of several steps the hooks run after it: the parameters are
            # those of this update only where no later update has run yet.
            model = loop.model
            at_step = getattr(loop, "steps_ahead", 0) == 0
            self.record.params.append(
                {g: np.asarray(getattr(model, g)[...]) for g in LABELS} if at_step else None
            )


def averaging(case: Case, scheduler: Any) -> list[Callback]:
    """A WeightAveraging at the cycle ends in half the cases of a cyclic schedule that ends a
    cycle within the run (its own random stream: the cases stay as they were). At several
    steps per dispatch a dispatch then ends at each cycle end: the LR of every update must not
    change for it."""
    end = scheduler.next_cycle_end(0)
    wanted = random.Random(case.seed * 7 + 3).random() < 0.5
    if case.loop not in ("trainer", "hand") or end is None or end >= case.updates or not wanted:
        return []
    return [WeightAveraging()]


def run_case(case: Case, scheduler: Any, record: Record, logdir: Any) -> None:
    model = Revealer()
    tx = build_tx(case)
    if case.loop == "functional":
        return _functional(case, scheduler, record, model, tx)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    record.params.append({g: np.asarray(getattr(model, g)[...]) for g in LABELS})
    writer = (
        create_writer(logdir, backend=case.writer) if case.loop in ("trainer", "hand") else None
    )
    callback = LRSchedulerCallback(
        scheduler,
        momentum=case.momentum,
        groups=list(LABELS) if case.groups else None,
        accumulation_steps=case.k if case.pass_k and case.accumulation != "none" else None,
        writer=writer,
        log_every_steps=case.log_every,
    )
    probe = Probe(scheduler, record, case.micro)
    callbacks = [probe, callback, *averaging(case, scheduler)]
    steps = case.updates * case.micro
    try:
        if case.loop == "trainer":
            trainer = Trainer(
                model,
                optimizer,
                train_step=reveal_step,
                callbacks=callbacks,
                progress=False,
                steps_per_dispatch=case.dispatch,
            )
            trainer.fit([np.zeros(1)] * steps, num_steps=steps)
            return None
        loop = CallbackList(callbacks, model=model, optimizer=optimizer)
        loop.on_train_begin()
        if case.loop == "functional_wrong":
            return _trains_a_copy(loop, model, optimizer, steps)
        step = nnx.jit(reveal_step)
        for t in range(steps):
            if case.loop == "replaced" and t == case.at * case.micro:
                loop.optimizer = nnx.Optimizer(model, build_tx(case), wrt=nnx.Param)
            loop.on_step_begin()
            step(model, loop.optimizer)
            loop.on_step_end()
            if case.loop == "double_end" and t == case.at * case.micro:
                callback.on_step_end(loop, loop.step, {})  # a second call for the same update
        loop.on_train_end()
        return None
    finally:
        if writer is not None:
            writer.close()


def _trains_a_copy(loop: CallbackList, model: Any, optimizer: Any, steps: int) -> None:
    """The wrong functional loop: the callback writes the NNX optimizer, jit trains a split copy."""
    graphdef, state = nnx.split((model, optimizer))

    @jax.jit
    def step(state: Any) -> Any:
        model, optimizer = nnx.merge(graphdef, state)
        reveal_step(model, optimizer)
        return nnx.state((model, optimizer))

    for _ in range(steps):
        loop.on_step_begin()
        state = step(state)
        loop.on_step_end()


def _functional(case: Case, scheduler: Any, record: Record, model: Any, tx: Any) -> None:
    """The right functional loop: the scheduler's values go into the jitted step as arguments."""
    graphdef, params = nnx.split(model)
    opt_state = tx.init(params)
    groups = list(LABELS) if case.groups else None
    driven = drives_momentum(case, scheduler)
    record.params.append({g: np.asarray(params[g][...]) for g in LABELS})

    @jax.jit
    def step(params: Any, opt_state: Any, lr: Any, momentum: Any) -> tuple[Any, Any]:
        opt_state = set_hyperparams(opt_state, learning_rate=lr, momentum=momentum, groups=groups)
        grads = jax.grad(lambda p: nnx.merge(graphdef, p)())(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    for t in range(case.updates * case.micro):
        reported = _reported(scheduler)
        momentum = reported["momentum"] if driven else None
        params, opt_state = step(params, opt_state, reported["lr"], momentum)
        if (t + 1) % case.micro == 0:
            record.reported.append(reported)
            record.held.append(_held(opt_state))
            record.params.append({g: np.asarray(params[g][...]) for g in LABELS})
            scheduler.step()


# -- the comparison ----------------------------------------------------------------------------


def _momentum_name(case: Case) -> str:
    return "momentum" if case.optimizer == "sgd" else "b1"


def check_applied(case: Case, scheduler: Any, record: Record) -> None:
    """Every update recorded applied the scheduler's values (and SGD moved by them)."""
    driven = drives_momentum(case, scheduler)
    dtype = DTYPES[case.dtype] or jnp.float32
    traces = dict.fromkeys(LABELS, 0.0)
    moves = dict.fromkeys(LABELS, 0.0)  # predicted since the last parameters recorded
    known = 0  # the last update whose parameters were recorded (0: the initial ones)
    for update, (reported, held) in enumerate(zip(record.reported, record.held, strict=True)):
        for index, label in enumerate(LABELS if case.groups else (None,)):
            kinds = [("lr", "learning_rate")] + ([("momentum", _momentum_name(case))] * driven)
            for kind, name in kinds:
                want = np.asarray(reported[kind][index], dtype=dtype)
                got = held[name, label]
                assert got.dtype == want.dtype, (update, name, label, got.dtype)
                assert got == want, f"update {update}: {name}[{label}] held {got}, reported {want}"
        if case.optimizer != "sgd":
            continue
        for label in LABELS:  # SGD: the parameter change reveals the lr
            key = label if case.groups else None
            lr = float(held["learning_rate", key])
            traces[label] = (CLIPPED if case.clip else 1.0) + float(held["momentum", key]) * traces[
                label
            ]
            moves[label] -= lr * traces[label]
        if record.params[update + 1] is None:
            continue  # trained within a dispatch: checked with the next parameters recorded
        for label in LABELS:
            moved = record.params[update + 1][label] - record.params[known][label]
            # The change of float32 parameters is exact up to their rounding (a few ulps).
            ulp = np.spacing(np.abs(record.params[update + 1][label]).max().astype(np.float32))
            atol = 4 * ulp * (update + 1 - known)
            np.testing.assert_allclose(moved, moves[label], rtol=2e-5, atol=atol)
        moves, known = dict.fromkeys(LABELS, 0.0), update + 1


def check_logged(case: Case, scheduler: Any, record: Record, logdir: Any) -> None:
    """The event files hold what update s - 1 applied, for s = N, 2N, ... updates, at the loop's
    step that update completed (s times the micro-steps per update under MultiSteps)."""
    series = read_scalars(logdir)
    driven = drives_momentum(case, scheduler)
    tags = {}
    names = [("learning_rate", "learning_rate")] + [("momentum", _momentum_name(case))] * driven
    for label in LABELS if case.groups else (None,):
        for tag, name in names:
            tags[tag if label is None else f"{tag}/{label}"] = (name, label)
    logged_tags = {t for t in series if t.startswith(("learning_rate", "momentum"))}
    assert logged_tags == set(tags), f"logged {sorted(logged_tags)}, driven {sorted(tags)}"
    steps = [s for s in range(1, case.updates + 1) if s % case.log_every == 0]
    for tag, (name, label) in tags.items():
        want = [(s * case.micro, float(np.float32(record.held[s - 1][name, label]))) for s in steps]
        got = [(s, float(np.float32(v))) for s, v in series[tag]]
        assert got == want, f"{tag}: logged {got}, applied {want}"


def oracle(seed: int, tmp_path: Any) -> None:
    case = draw(seed)
    scheduler = build_scheduler(case)
    expected = expected_error(case, scheduler)
    record = Record()
    described = f"seed {seed}: {case} with {scheduler!r}; expected error: {expected}"
    raised: BaseException | None = None
    try:
        run_case(case, scheduler, record, tmp_path)
    except (ValueError, RuntimeError) as error:
        raised = error
    if expected is None:
        assert raised is None, f"{described}\nraised {raised!r}"
    else:
        kind, pattern = expected
        assert isinstance(raised, kind), f"{described}\nraised {raised!r}"
        assert re.match(pattern, str(raised)), f"{described}\nraised {raised!r}"
        if "int32" in pattern or "nested" in pattern:
            assert record.reported == [], f"{described}\nupdated before the error"
    # With a schedule, an update may differ (then it raised); a wrong functional loop trains
    # a copy that the probe cannot see (it raised at the end of the first update).
    applied_ok = case.injected == "value" and case.loop != "functional_wrong"
    try:
        if applied_ok:
            check_applied(case, scheduler, record)
        if expected is None and case.loop in ("trainer", "hand"):
            check_logged(case, scheduler, record, tmp_path)
    except AssertionError as error:
        raise AssertionError(f"{described}\n{error}") from error


def test_the_generator_covers_every_choice():
    cases = [draw(seed) for seed in range(30)]  # the first 30 cases, quick and slow
    for field in ("optimizer", "dtype", "loop", "scheduler", "accumulation", "injected"):
        seen = {getattr(case, field) for case in cases}
        assert len(seen) >= 2, (field, seen)
    assert {case.loop for case in cases} >= {"trainer", "hand", "functional"}
    assert {case.dispatch for case in cases if case.loop == "trainer"} >= {1, 8}
    assert draw(7) == draw(7)  # a case is its seed


@pytest.mark.parametrize("seed", campaign(CASES, quick=QUICK, complete=COMPLETE))
def test_applied_equals_reported_equals_logged(seed, tmp_path):
    oracle(seed, tmp_path)
