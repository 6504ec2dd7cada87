"""Shared test fixtures: the tiny model, its batches, a recording writer, trajectories on both
paths and an exact rational reference of the formula."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from flax_cyclic import Callback, CyclicLR, LRSchedulerCallback, Trainer, create_writer


def host_lrs(scheduler, steps: int) -> list[list[float]]:
    """The per-group learning rates a training loop sees for `steps` updates."""
    return _before_each_step(scheduler, steps, scheduler.get_last_lr)


def host_momentums(scheduler, steps: int) -> list[list[float]]:
    """The per-group momentums a training loop sees for `steps` updates."""
    return _before_each_step(scheduler, steps, scheduler.get_last_momentum)


def _before_each_step(scheduler, steps: int, read) -> list:
    out = []
    for _ in range(steps):
        out.append(read())
        scheduler.step()
    return out


def jit_values(schedule, steps) -> np.ndarray:
    """Evaluates a pure schedule under jit + vmap with a traced integer step."""
    return np.asarray(jax.jit(jax.vmap(schedule))(jnp.asarray(steps, dtype=jnp.int32)))


def exact_lr(
    step: int,
    base: float,
    high: float,
    up: int,
    down: int,
    mode: str = "triangular",
) -> Fraction:
    """The formula in exact rational arithmetic (triangular and triangular2 only).

    Written the way the seed docs state it (x in [0, 1) of the cycle, rising for x <= ratio),
    not the way the library computes it, so the two are independent.
    """
    total = up + down
    cycle = 1 + Fraction(step, total).__floor__()
    x = 1 + Fraction(step, total) - cycle
    ratio = Fraction(up, total)
    factor = x / ratio if x <= ratio else (x - 1) / (ratio - 1)
    if mode == "triangular":
        scale = Fraction(1)
    else:
        # Past 1100 halvings the amplitude is below 2**-1100 of itself: under any float's
        # resolution next to base_lr, and 2**(cycle - 1) itself would be a huge integer.
        scale = Fraction(1, 2 ** (cycle - 1)) if cycle <= 1100 else Fraction(0)
    return Fraction(base) + (Fraction(high) - Fraction(base)) * factor * scale


def float32_ulp(value: float) -> float:
    return float(np.spacing(np.float32(abs(value))))


# The jitted float32 cosine schedules are within 4 float32 ulps of the largest learning rate of the
# float64 values (measured: at most 3.0 over random configurations; the weight alone errs by up
# to ~1.3 ulps of 1, ~2.5 ulps of a bound just below a power of two).
COS_ULPS = 4


def assert_close_to_exact(got: np.ndarray, exact: list[Fraction], bound: float, ulps: float):
    """Asserts |got - exact| <= ulps * ulp_float32(bound) elementwise, reporting the worst."""
    errors = [abs(Fraction(float(g)) - e) for g, e in zip(got, exact, strict=True)]
    worst = max(errors)
    limit = Fraction(ulps * float32_ulp(bound))
    assert worst <= limit, f"worst error {float(worst):.3e} exceeds {float(limit):.3e}"


def isclose_lists(a, b, rel=4 * 2.0**-52) -> bool:
    return all(
        math.isclose(x, y, rel_tol=rel, abs_tol=1e-300)
        for row_a, row_b in zip(a, b, strict=True)
        for x, y in zip(row_a, row_b, strict=True)
    )


@contextlib.contextmanager
def count_compilations() -> Iterator[list[str]]:
    """Collects one entry per XLA backend compilation inside the block."""
    compiled: list[str] = []

    def listener(event: str, duration: float, **kwargs) -> None:
        if event == "/jax/core/compile/backend_compile_duration":
            compiled.append(event)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield compiled
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


@contextlib.contextmanager
def raises_exactly(error: type[BaseException], message: str) -> Iterator[None]:
    """Asserts that the block raises `error` with exactly `message` (the whole text)."""
    import pytest  # here, not above: the worker scripts import this module too

    with pytest.raises(error) as raised:
        yield
    assert str(raised.value) == message


class MLP(nnx.Module):
    """The small classifier of the training tests: 8 -> `hidden` (ReLU) -> 3.

    Both layers draw their initial weights from `rngs`, unless `out_rngs` is given for the
    output layer (the way ``nnx.Sequential(Linear(..., rngs=Rngs(0)), relu, Linear(...,
    rngs=Rngs(1)))`` initialises them).
    """

    def __init__(self, rngs: nnx.Rngs, hidden: int = 32, out_rngs: nnx.Rngs | None = None):
        self.hidden = nnx.Linear(8, hidden, rngs=rngs)
        self.out = nnx.Linear(hidden, 3, rngs=rngs if out_rngs is None else out_rngs)

    def __call__(self, x):
        return self.out(jax.nn.relu(self.hidden(x)))


class NoisyNet(nnx.Module):
    """BatchNorm + Dropout, called as the Flax NNX tutorial calls its model: model(x, rngs=rngs)."""

    def __init__(self, rngs: nnx.Rngs, *, own_dropout_rngs: bool = False):
        self.hidden = nnx.Linear(8, 16, rngs=rngs)
        self.norm = nnx.BatchNorm(16, rngs=rngs)
        self.dropout = nnx.Dropout(0.3, rngs=nnx.Rngs(dropout=5) if own_dropout_rngs else None)
        self.out = nnx.Linear(16, 3, rngs=rngs)

    def __call__(self, x, rngs: nnx.Rngs | None = None):
        return self.out(self.dropout(jax.nn.relu(self.norm(self.hidden(x))), rngs=rngs))


def tiny_mlp(seed: int = 0, hidden: int = 32, out_seed: int | None = None) -> MLP:
    """`MLP` initialised from `seed` (and the output layer from `out_seed` when given)."""
    out_rngs = None if out_seed is None else nnx.Rngs(out_seed)
    return MLP(nnx.Rngs(seed), hidden, out_rngs)


def tiny_batches(
    batch_size: int = 32, count: int = 6, *, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Deterministic 3-class batches for `MLP`: the label is the bucket of the row sum."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(count, batch_size, 8)).astype(np.float32)
    return [(xb, np.digitize(xb.sum(1), [-1.5, 1.5]).astype(np.int32)) for xb in x]


def tiny_setup(lr: float = 0.0):
    """`tiny_mlp()` and an SGD optimizer (momentum 0.9) with the injected learning rate `lr`."""
    model = MLP(nnx.Rngs(0))
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=lr, momentum=0.9)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    return model, optimizer


class RecordingWriter:
    """In-memory writer with the part of CLU's MetricWriter interface the library uses.

    Keeps every call in order. ``write_scalars`` and ``flush`` are always there;
    ``write_hparams`` and ``write_images`` (the LR callback's configuration and picture of the
    planned schedule, written where the writer has them) only with ``plan=True``. With `inner`,
    every call is also passed on to that writer (and any other attribute, e.g. ``close``);
    `plan` then defaults to True. Real event files are tested with CLU's writer.
    """

    def __init__(self, inner=None, *, plan: bool | None = None):
        self.inner = inner
        self.plan = inner is not None if plan is None else plan
        self.scalars: list[tuple[int, dict]] = []
        self.hparams: list[dict] = []
        self.images: list[tuple[int, dict]] = []
        self.flushes = 0

    def write_scalars(self, step, scalars):
        self.scalars.append((step, dict(scalars)))
        if self.inner is not None:
            self.inner.write_scalars(step, scalars)

    def flush(self):
        self.flushes += 1
        if self.inner is not None and callable(getattr(self.inner, "flush", None)):
            self.inner.flush()

    def _write_hparams(self, hparams):
        self.hparams.append(dict(hparams))
        if self.inner is not None:
            self.inner.write_hparams(hparams)

    def _write_images(self, step, images):
        self.images.append((step, {tag: image.shape for tag, image in images.items()}))
        if self.inner is not None:
            self.inner.write_images(step, images)

    def __getattr__(self, name):  # only for what the class does not define
        if name in ("write_hparams", "write_images") and self.__dict__.get("plan"):
            return getattr(self, f"_{name}")
        inner = self.__dict__.get("inner")
        if inner is None or name.startswith("_") or name in ("write_hparams", "write_images"):
            raise AttributeError(name)
        return getattr(inner, name)

    def series(self, tag) -> list[tuple[int, float]]:
        """(step, value) of every write of `tag`, in order."""
        return [(step, scalars[tag]) for step, scalars in self.scalars if tag in scalars]

    def by_step(self) -> dict[int, dict]:
        """The scalars written at each step (a later write of a step replaces the earlier)."""
        return {int(step): scalars for step, scalars in self.scalars}

    def by_tag(self) -> dict[str, dict[int, float]]:
        """{tag: {step: value}} (a later write of a step replaces the earlier)."""
        out: dict[str, dict[int, float]] = {}
        for step, scalars in self.scalars:
            for tag, value in scalars.items():
                out.setdefault(tag, {})[int(step)] = value
        return out

    @property
    def lrs(self) -> dict[int, float]:
        """{step: learning_rate} of the writes that hold a learning rate."""
        return self.by_tag().get("learning_rate", {})


class CrashAt(Callback):
    """Stops the run like Ctrl-C after `step` steps (and the saves those steps made)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_begin(self, loop, step):
        if step == self.step:
            raise KeyboardInterrupt(f"simulated crash after {self.step} steps")


def tensorboard_steps(logdir, tag: str) -> list[int]:
    """The steps of a non-scalar `tag` (the `lr_schedule` image) as TensorBoard's reader shows
    them; `flax_cyclic.read_scalars` reads the scalars, and only them."""
    from tensorboard.backend.event_processing import plugin_event_accumulator as reader

    accumulator = reader.EventAccumulator(str(logdir), size_guidance={reader.TENSORS: 0})
    accumulator.Reload()
    return [event.step for event in accumulator.Tensors(tag)]


# The run `logged_run` makes: its schedule and its length.
LOGGED_SCHEDULE = dict(
    base_lr=0.01, max_lr=0.1, step_size_up=4, step_size_down=6, mode="triangular2"
)
LOGGED_STEPS = 24


def logged_run(logdir, *, callbacks=(), progress=False) -> None:
    """Trains `tiny_mlp` for `LOGGED_STEPS` steps with the Trainer, logging to a CLU writer in
    `logdir` (the LR callback with `LOGGED_SCHEDULE`, train metrics every 6 steps, evaluation)."""
    model = tiny_mlp(0, hidden=16, out_seed=1)
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.0, momentum=0.9)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    writer = create_writer(logdir)
    scheduler = CyclicLR(**LOGGED_SCHEDULE, cycle_momentum=True)
    trainer = Trainer(
        model,
        optimizer,
        callbacks=[LRSchedulerCallback(scheduler, writer=writer), *callbacks],
        writer=writer,
        log_every_steps=6,
        progress=progress,
    )
    trainer.fit(tiny_batches(16, 8), num_steps=LOGGED_STEPS, eval_data=tiny_batches(16, 2, seed=1))
    writer.close()
