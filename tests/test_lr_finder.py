"""The LR range test on problems whose answer is known, with the model restored afterwards."""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import matplotlib.image
import numpy as np
import optax
import pytest
from flax import nnx
from helpers import NoisyNet, count_compilations, raises_exactly, tiny_batches

from flax_cyclic import LRFinderResult, lr_find
from flax_cyclic.steps import classification_train_step

CURVATURE = 4.0  # gradient descent on 0.5 * L * |w - target|^2 diverges for lr > 2 / L
DIVERGENT_LR = 2 / CURVATURE


class Quadratic(nnx.Module):
    def __init__(self, size: int = 16):
        self.w = nnx.Param(jnp.zeros(size))


def quadratic_step(model, optimizer, target):
    def loss_fn(model):
        return 0.5 * CURVATURE * jnp.sum((model.w[...] - target) ** 2)

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return {"loss": loss}


def _quadratic(momentum=None):
    model = Quadratic()
    kwargs = {} if momentum is None else {"momentum": momentum}
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.0, **kwargs)
    return model, nnx.Optimizer(model, tx, wrt=nnx.Param)


# Targets scattered around 1: the loss never reaches exactly 0, as with real data.
TARGETS = [1.0 + 0.1 * jax.random.normal(jax.random.key(i), (16,)) for i in range(10)]


@pytest.fixture(scope="module")
def quadratic_result():
    model, optimizer = _quadratic()
    return lr_find(
        model,
        optimizer,
        TARGETS,
        train_step=quadratic_step,
        start_lr=1e-4,
        end_lr=100.0,
        num_steps=200,
    )


def test_the_ramp_is_exponential_from_start_to_end(quadratic_result):
    lrs = np.array(quadratic_result.lrs)
    expected = 1e-4 * (1e6 ** (np.arange(len(lrs)) / 199))
    # Recorded as applied: the float32 learning rate holds each ramp value rounded.
    np.testing.assert_allclose(lrs, expected.astype(np.float32), rtol=1e-13)


def test_stops_just_past_the_analytic_divergence(quadratic_result):
    result = quadratic_result
    assert result.stop_reason == "diverged"
    # The loss explodes once lr > 2/L; the causal average crosses 4x its minimum a few steps
    # later (each step multiplies the lr by 1.072).
    assert DIVERGENT_LR < result.lrs[-1] < 2 * DIVERGENT_LR
    causal = result.causal_losses
    assert causal[-1] > 4 * min(causal)
    assert all(v <= 4 * min(causal[: i + 1]) for i, v in enumerate(causal[:-1]))


def test_every_suggestion_is_below_the_divergent_lr(quadratic_result):
    suggestions = quadratic_result.suggestions
    assert set(suggestions) == {"steepest", "valley", "minimum", "minimum/10"}
    assert all(0 < lr < DIVERGENT_LR for lr in suggestions.values())
    minimum = suggestions["minimum"]
    assert quadratic_result.recommended == (minimum / 10, minimum)
    assert quadratic_result.onecycle_max_lr == minimum
    # The loss does fall over the recommended range.
    smoothed = dict(zip(quadratic_result.lrs, quadratic_result.smoothed_losses, strict=True))
    assert smoothed[minimum] < smoothed[quadratic_result.lrs[0]]


def _debiased_average(values, beta):
    average, out = 0.0, []
    for i, value in enumerate(values):
        average = beta * average + (1 - beta) * value
        out.append(average / (1 - beta ** (i + 1)))
    return out


def test_the_two_moving_averages(quadratic_result):
    result = quadratic_result
    beta = 1 - 20 / 200  # smoothing=None scales the average to the sweep
    assert result.smoothing == pytest.approx(beta, rel=1e-15)
    causal = _debiased_average(result.losses, beta)
    assert result.causal_losses == pytest.approx(causal, rel=1e-12)
    # Zero-phase: forward, then backward over the result, after clipping the losses at the
    # divergence level (4 times the lowest causal average so far).
    level = [4 * min(causal[: i + 1]) for i in range(len(causal))]
    clipped = [min(loss, cap) for loss, cap in zip(result.losses, level, strict=True)]
    assert clipped[-1] < result.losses[-1]  # the explosion that ended the test
    forward = _debiased_average(clipped, beta)
    zero_phase = _debiased_average(forward[::-1], beta)[::-1]
    assert result.smoothed_losses == pytest.approx(zero_phase, rel=1e-12)


def test_the_loss_of_each_step_is_the_loss_at_its_lr():
    # One step of gradient descent from w = 0 on 0.5 * L * |w - 1|^2 with lr: loss = 0.5 L n.
    # The second step starts from w = lr0 * L: its loss reveals the first step's lr.
    model, optimizer = _quadratic()
    ones = [jnp.ones(16)]
    result = lr_find(
        model, optimizer, ones, train_step=quadratic_step, start_lr=0.01, end_lr=0.1, num_steps=3
    )
    expected = np.float32([0.01, math.sqrt(0.001), 0.1])  # as the optimizer applied them
    assert result.lrs == tuple(map(float, expected))
    w = 0.0
    for lr, loss in zip(result.lrs, result.losses, strict=True):
        assert loss == pytest.approx(0.5 * CURVATURE * 16 * (w - 1) ** 2, rel=1e-6)
        w -= lr * CURVATURE * (w - 1)


def test_linear_ramp():
    model, optimizer = _quadratic()
    result = lr_find(
        model,
        optimizer,
        TARGETS,
        train_step=quadratic_step,
        start_lr=0.001,
        end_lr=0.4,
        num_steps=20,
        mode="linear",
        smoothing=0.0,
        diverge_threshold=1e9,  # the raw loss is noisy: no early stop here
    )
    assert result.stop_reason == "completed"
    expected = np.linspace(0.001, 0.4, 20).astype(np.float32)
    np.testing.assert_allclose(result.lrs, expected, rtol=1e-14)
    assert result.smoothed_losses == result.losses  # smoothing=0: none


class Noisy(nnx.Module):
    """A model with everything a restore must put back: dropout RNG, batch stats, params."""

    def __init__(self, rngs: nnx.Rngs):
        self.linear = nnx.Linear(8, 16, rngs=rngs)
        self.norm = nnx.BatchNorm(16, rngs=rngs)
        self.dropout = nnx.Dropout(0.2, rngs=rngs)
        self.out = nnx.Linear(16, 3, rngs=rngs)

    def __call__(self, x):
        return self.out(self.dropout(jax.nn.relu(self.norm(self.linear(x)))))


def _state(model, optimizer):
    def host(leaf):
        if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        return np.asarray(leaf)

    return jax.tree.leaves(jax.tree.map(host, (nnx.state(model), nnx.state(optimizer))))


def _noisy_setup():
    model = Noisy(nnx.Rngs(0, dropout=1))
    tx = optax.inject_hyperparams(optax.adamw)(learning_rate=3e-4, weight_decay=1e-4)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    # Train a little first, so that the state to restore is not the initial one.
    from flax_cyclic.steps import classification_train_step

    nnx.jit(classification_train_step)(model, optimizer, tiny_batches(32, 5)[0])
    return model, optimizer


def test_model_and_optimizer_are_restored_exactly():
    model, optimizer = _noisy_setup()
    before = _state(model, optimizer)
    result = lr_find(model, optimizer, tiny_batches(32, 5), num_steps=40, end_lr=1.0)
    assert len(result.lrs) > 10
    after = _state(model, optimizer)
    assert len(before) == len(after)
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype
    assert optimizer.opt_state.hyperparams["learning_rate"].get_value() == np.float32(3e-4)
    assert int(optimizer.step.get_value()) == 1


def test_restored_after_an_error_too():
    model, optimizer = _noisy_setup()
    before = _state(model, optimizer)

    class BrokenPipeline:
        def __iter__(self):
            yield from tiny_batches(32, 3)
            raise OSError("the data pipeline failed")

    with pytest.raises(OSError, match="the data pipeline failed"):
        lr_find(model, optimizer, BrokenPipeline(), num_steps=10)
    for a, b in zip(before, _state(model, optimizer), strict=True):
        np.testing.assert_array_equal(a, b)


def test_one_compilation_for_the_whole_ramp():
    model, optimizer = _quadratic(momentum=0.9)
    with count_compilations() as compiled:
        result = lr_find(
            model,
            optimizer,
            TARGETS,
            train_step=quadratic_step,
            start_lr=1e-5,
            end_lr=1e-2,
            num_steps=30,
        )
    assert len(result.lrs) == 30
    assert len(compiled) <= 2  # the train step, and at most one small helper


def test_a_one_shot_iterator_ends_the_test():
    model, optimizer = _quadratic()
    result = lr_find(
        model, optimizer, iter(TARGETS[:5]), train_step=quadratic_step, start_lr=1e-4, num_steps=50
    )
    assert result.stop_reason == "data exhausted"
    assert len(result.lrs) == 5


def test_a_non_finite_loss_later_stops_the_test():
    model, optimizer = _quadratic()

    def step(model, optimizer, target):
        metrics = quadratic_step(model, optimizer, target)
        return {"loss": jnp.where(optimizer.step[...] > 5, jnp.nan, metrics["loss"])}

    result = lr_find(model, optimizer, TARGETS, train_step=step, start_lr=1e-4, num_steps=50)
    assert result.stop_reason == "non-finite loss"
    assert len(result.lrs) == 5  # the 6th update (optimizer.step 6) returned nan


def test_the_plot(tmp_path, quadratic_result):
    path = tmp_path / "lr_find.png"
    image = quadratic_result.plot(path)
    assert image.dtype == np.uint8
    assert image.shape == (320, 800, 3)
    saved = matplotlib.image.imread(path)
    assert saved.shape[:2] == (320, 800)
    assert saved[..., :3].std() > 0.05  # not a blank picture


NEVER_FELL = LRFinderResult(
    lrs=(1.0, 2.0, 3.0, 4.0),
    losses=(1.0, 2.0, 3.0, 3.5),
    smoothed_losses=(1.0, 2.0, 3.0, 3.5),
    stop_reason="completed",
    smoothing=0.0,
    diverge_threshold=4.0,
)


def test_nothing_to_recommend_when_the_loss_never_falls():
    assert NEVER_FELL.steepest is None
    assert NEVER_FELL.valley is None
    message = (
        "LRFinderResult: the smoothed loss never fell (stop_reason='completed', 4 steps from "
        "lr=1), so there is no range to recommend. Start lower (start_lr), run more steps, or "
        "check the model and the data."
    )
    with raises_exactly(ValueError, message):
        _ = NEVER_FELL.recommended
    with raises_exactly(ValueError, message):
        _ = NEVER_FELL.onecycle_max_lr


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        (dict(start_lr=1.0, end_lr=0.1), ValueError, "`start_lr` must be below `end_lr`"),
        (dict(start_lr=0.1, end_lr=0.1), ValueError, "start_lr=0.1 and end_lr=0.1"),
        (dict(start_lr=0.0), ValueError, "start_lr=0.0"),
        (dict(num_steps=1), ValueError, "`num_steps` must be"),
        (dict(num_steps=10.0), TypeError, "num_steps=10.0"),
        (dict(mode="log"), ValueError, "'exponential', 'linear'"),
        (dict(smoothing=1.0), ValueError, "smoothing=1.0"),
        (dict(diverge_threshold=1.0), ValueError, "diverge_threshold=1.0"),
    ],
)
def test_bad_arguments(kwargs, error, fragment):
    model, optimizer = _quadratic()
    with pytest.raises(error) as caught:
        lr_find(model, optimizer, TARGETS, train_step=quadratic_step, **kwargs)
    assert fragment in str(caught.value)


def test_a_train_step_without_a_loss():
    model, optimizer = _quadratic()

    def step(model, optimizer, target):
        quadratic_step(model, optimizer, target)
        return {"accuracy": jnp.float32(1.0)}

    with pytest.raises(TypeError, match=r"must return the loss.*keys \['accuracy'\]"):
        lr_find(model, optimizer, TARGETS, train_step=step)


def test_a_nan_loss_at_the_first_step():
    model, optimizer = _quadratic()

    def step(model, optimizer, target):
        quadratic_step(model, optimizer, target)
        return jnp.float32(jnp.nan)

    with pytest.raises(ValueError, match=r"loss of the first step \(lr=1e-07\) is nan"):
        lr_find(model, optimizer, TARGETS, train_step=step)


def test_optimizer_problems_are_named():
    model = Quadratic()
    plain = nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)
    with pytest.raises(ValueError, match=r"lr_find: .*no injected hyperparameters"):
        lr_find(model, plain, TARGETS, train_step=quadratic_step)
    renamed = nnx.Optimizer(
        model, optax.inject_hyperparams(optax.sgd)(learning_rate=0.0), wrt=nnx.Param
    )
    with pytest.raises(ValueError, match="root of the optimizer state has no 'lr'"):
        lr_find(model, renamed, TARGETS, train_step=quadratic_step, learning_rate="lr")
    accumulating = nnx.Optimizer(
        model,
        optax.MultiSteps(optax.inject_hyperparams(optax.sgd)(learning_rate=0.0), 2),
        wrt=nnx.Param,
    )
    with pytest.raises(ValueError, match=r"optax\.MultiSteps"):
        lr_find(model, accumulating, TARGETS, train_step=quadratic_step)
    model, optimizer = _quadratic()
    with pytest.raises(ValueError, match="yielded no batches"):
        lr_find(model, optimizer, [], train_step=quadratic_step)


def test_smoothing_defaults_to_a_twentieth_of_the_sweep():
    # 1 - 20 / num_steps, clipped to [0, 0.98]; a one-shot iterator keeps each run to 3 steps.
    for num_steps, beta in [(10, 0.0), (20, 0.0), (100, 0.8), (200, 0.9), (1000, 0.98)]:
        model, optimizer = _quadratic()
        result = lr_find(
            model,
            optimizer,
            iter(TARGETS[:3]),
            train_step=quadratic_step,
            start_lr=1e-4,
            num_steps=num_steps,
        )
        assert result.smoothing == pytest.approx(beta, abs=1e-15)
        assert result.stop_reason == "data exhausted"


@pytest.mark.parametrize(
    ("smoothing", "error", "message"),
    [
        (
            1.0,
            ValueError,
            "lr_find: `smoothing` must be in [0, 1), got smoothing=1.0; e.g. 0.9, 0 for none, "
            "or None (the default) for 1 - 20 / num_steps.",
        ),
        (
            -0.5,
            ValueError,
            "lr_find: `smoothing` must be a non-negative finite number, got smoothing=-0.5 "
            "(float). Use a factor in [0, 1), e.g. 0.9; 0 turns it off, None scales it to the "
            "sweep.",
        ),
        (
            "0.9",
            TypeError,
            "lr_find: `smoothing` must be a real number, got smoothing='0.9' (str). Use a factor "
            "in [0, 1), e.g. 0.9; 0 turns it off, None scales it to the sweep.",
        ),
    ],
)
def test_bad_smoothing(smoothing, error, message):
    model, optimizer = _quadratic()
    with raises_exactly(error, message):
        lr_find(model, optimizer, TARGETS, train_step=quadratic_step, smoothing=smoothing)


# -- synthetic curves: the loss is a known function of the learning rate ------------------------

START, END, STEPS = 1e-4, 10.0, 200
STEP = math.log(END / START) / (STEPS - 1)  # one step of the ramp, in log-LR (a factor 1.06)
BETA = 1 - 20 / STEPS  # the default smoothing for 200 steps: 0.9
LAG = BETA / (1 - BETA)  # the causal average's lag, about 9 steps (< STEPS / 20)
SKIP = 10  # the noisy start the suggestions leave out: a tenth of the points, at most 10


def lr_at(position: float) -> float:
    """The learning rate of the exponential ramp at step `position`."""
    return START * math.exp(STEP * position)


def steps_apart(lr: float, other: float) -> float:
    return abs(math.log(lr / other)) / STEP


class Nothing(nnx.Module):
    def __init__(self):
        self.w = nnx.Param(jnp.zeros(1))


def synthetic_find(curve, *, noise: float = 0.0, seed: int = 0, **kwargs):
    """`lr_find` on a train step whose loss is `curve(position)`, the ramp position read off
    the optimizer's injected learning rate, plus `noise` times a normal draw seeded by the
    optimizer's step count."""
    key = jax.random.key(seed)

    def step(model, optimizer, batch):
        lr = optimizer.opt_state.hyperparams["learning_rate"][...]
        loss = curve((jnp.log(lr) - math.log(START)) / STEP)
        if noise:
            loss = loss + noise * jax.random.normal(jax.random.fold_in(key, optimizer.step[...]))
        grads = nnx.grad(lambda model: 0.0 * jnp.sum(model.w[...]))(model)
        optimizer.update(model, grads)  # changes nothing but counts the step
        return loss

    model = Nothing()
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.0)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    return lr_find(
        model,
        optimizer,
        [0],
        train_step=step,
        start_lr=START,
        end_lr=END,
        num_steps=STEPS,
        **kwargs,
    )


BOTTOM, FLANK, WIDTH = 120, 18, 12  # steps: the valley's bottom, its flanks' offset and width


def clean_valley(position):
    """A valley symmetric about step 120 (but for the slope below), from 2.5 down to 0.5 and
    back up to 2.5. The causal average, 0.69 at its lowest, never reaches 4 times that: the test
    completes. The left flank falls fastest at step 120 - 18, and a slope of 1e-4 a step makes
    the loss fall from the very start, in float32 too."""
    flanks = jnp.tanh((position - BOTTOM - FLANK) / WIDTH) - jnp.tanh(
        (position - BOTTOM + FLANK) / WIDTH
    )
    return 2.5 - 1e-4 * position + 1.1 * flanks


@pytest.fixture(scope="module")
def clean():
    return synthetic_find(clean_valley)


def test_a_clean_valley_gives_the_documented_suggestions(clean):
    assert clean.stop_reason == "completed"
    assert len(clean.lrs) == STEPS
    tolerance = 1 + 1e-6  # one step of the ramp
    assert steps_apart(clean.minimum, lr_at(BOTTOM)) <= tolerance
    assert steps_apart(clean.steepest, lr_at(BOTTOM - FLANK)) <= tolerance
    # The smoothed loss falls all the way from the end of the noisy start to the bottom.
    assert steps_apart(clean.valley, lr_at((SKIP + BOTTOM) / 2)) <= tolerance
    assert clean.suggestions == {
        "steepest": clean.steepest,
        "valley": clean.valley,
        "minimum": clean.minimum,
        "minimum/10": clean.minimum / 10,
    }
    assert clean.recommended == (clean.minimum / 10, clean.minimum)
    assert clean.onecycle_max_lr == clean.minimum


def test_the_zero_phase_average_keeps_the_valley_where_it_is(clean):
    raw_bottom = int(np.argmin(clean.losses))
    assert abs(raw_bottom - BOTTOM) <= 1
    assert abs(int(np.argmin(clean.smoothed_losses)) - raw_bottom) <= 1
    # The causal average (what the divergence rule reads) finds it several steps late.
    assert int(np.argmin(clean.causal_losses)) - raw_bottom > LAG / 2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_noise_moves_the_suggestions_little(clean, seed):
    # Noise of 0.05 (a fortieth of the depth) on every step.
    noisy = synthetic_find(clean_valley, noise=0.05, seed=seed)
    assert noisy.stop_reason == "completed"
    # The minimum and the steepest point stay within 4 steps (a factor 1.26 of the LR).
    assert steps_apart(noisy.minimum, clean.minimum) <= 4
    assert steps_apart(noisy.steepest, clean.steepest) <= 4
    assert steps_apart(noisy.recommended[1], clean.recommended[1]) <= 4
    # The valley is the middle of a stretch of falling loss: bumps that noise leaves on the
    # nearly flat start cut the stretch short. It is the least stable suggestion: it moves by
    # up to 30 steps (a factor of 5.7; 24 steps at most over 20 seeds).
    assert steps_apart(noisy.valley, clean.valley) <= 30


def test_an_early_divergence_stops_within_the_lag():
    result = synthetic_find(lambda position: 1.0 + jnp.exp((position - 50) / 3))
    assert result.stop_reason == "diverged"
    losses = result.losses
    # The first step whose raw loss exceeds 4x the lowest loss so far.
    crossed = next(i for i in range(len(losses)) if losses[i] > 4 * min(losses[: i + 1]))
    assert crossed <= len(losses) - 1 <= crossed + LAG
    assert len(losses) < STEPS / 2


def test_a_loss_that_keeps_falling_completes():
    result = synthetic_find(lambda position: 2.0 - jnp.tanh((position - 100) / 20))
    assert result.stop_reason == "completed"
    assert len(result.lrs) == STEPS
    # Still falling at end_lr: the sweep ends before the edge of the stable range.
    assert result.minimum == result.lrs[-1] == pytest.approx(END)
    assert result.recommended == (result.lrs[-1] / 10, result.lrs[-1])


def test_the_causal_lag_on_a_linear_ramp():
    result = synthetic_find(lambda position: 3.0 - 0.01 * position)
    assert result.stop_reason == "completed"
    raw = np.asarray(result.losses)
    lag = (np.asarray(result.causal_losses) - raw) / 0.01  # in steps (the loss is float32)
    assert lag.min() >= -1e-4
    assert lag.max() < LAG + 1e-4
    assert LAG < STEPS / 20
    assert lag[-1] > LAG - 0.01  # the bound is reached once the start is forgotten
    # The zero-phase average does not lag: away from the ends (where the forward or the
    # backward pass has little history) it is the loss itself.
    error = np.abs(np.asarray(result.smoothed_losses) - raw) / 0.01  # in steps
    assert error[int(5 * LAG) : STEPS - int(5 * LAG)].max() < 0.5
    assert error[STEPS // 2] < 0.01


# -- the JSON file ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["clean", "quadratic_result", "never_fell"])
def test_save_and_load_round_trip(tmp_path, request, name):
    result = NEVER_FELL if name == "never_fell" else request.getfixturevalue(name)
    path = tmp_path / "lr_find.json"
    result.save(path)
    loaded = LRFinderResult.load(path)
    assert loaded == result
    assert loaded.suggestions == result.suggestions
    document = json.loads(path.read_text())
    assert document["format"] == "flax_cyclic.LRFinderResult"
    assert document["suggestions"] == result.suggestions
    if name == "never_fell":
        assert document["recommended"] is None
        assert document["onecycle_max_lr"] is None
    else:
        assert loaded.recommended == result.recommended
        base_lr, max_lr = result.recommended
        assert document["recommended"] == {"base_lr": base_lr, "max_lr": max_lr}
        assert document["onecycle_max_lr"] == result.onecycle_max_lr
    assert LRFinderResult.load(str(path)) == result  # a str works too


def test_loading_what_is_not_a_saved_result(tmp_path):
    path = tmp_path / "lr_find.json"
    with pytest.raises(FileNotFoundError):
        LRFinderResult.load(path)
    fix = "pass a file written by LRFinderResult.save, e.g. lr_find.json."
    where = f"LRFinderResult.load: {str(path)!r}"
    path.write_text("{not json")
    with raises_exactly(
        ValueError,
        f"{where} is not JSON (Expecting property name enclosed in double quotes: line 1 "
        f"column 2 (char 1)); {fix}",
    ):
        LRFinderResult.load(path)
    path.write_text('{"lrs": [1.0]}')
    with raises_exactly(
        ValueError,
        f"{where} is not an LR range test (no \"format\": 'flax_cyclic.LRFinderResult'); {fix}",
    ):
        LRFinderResult.load(path)
    document = {"format": "flax_cyclic.LRFinderResult", "lrs": [1.0], "losses": [2.0]}
    path.write_text(json.dumps(document))
    with raises_exactly(
        ValueError,
        f"{where} lacks smoothed_losses, stop_reason, smoothing, diverge_threshold; {fix}",
    ):
        LRFinderResult.load(path)
    document.update(
        smoothed_losses=[2.0, 1.0], stop_reason="completed", smoothing=0.0, diverge_threshold=4
    )
    path.write_text(json.dumps(document))
    with raises_exactly(
        ValueError,
        f"{where} is damaged: lrs, losses and smoothed_losses must be as long as each other "
        f"and not empty, got lengths [1, 1, 2]; {fix}",
    ):
        LRFinderResult.load(path)
    document.update(smoothed_losses=[2.0], stop_reason="bored")
    path.write_text(json.dumps(document))
    with raises_exactly(
        ValueError,
        f"{where} is damaged: stop_reason='bored' is not one of ('completed', 'diverged', "
        f"'non-finite loss', 'data exhausted'); {fix}",
    ):
        LRFinderResult.load(path)


def test_the_plot_shades_the_recommended_range(clean):
    image = clean.plot().astype(int)
    # Matplotlib's C2 (green) at alpha 0.18 over white.
    band = np.array([222, 241, 222])
    assert (np.abs(image - band).max(axis=-1) <= 6).sum() > 1000
    assert NEVER_FELL.plot().shape == (320, 800, 3)  # nothing to shade, no error


def _low_precision(learning_rate):
    model = Quadratic()
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=learning_rate)
    return model, nnx.Optimizer(model, tx, wrt=nnx.Param)


def test_an_integer_learning_rate_is_refused_not_swept_at_zero():
    model, optimizer = _low_precision(0)
    with pytest.raises(ValueError, match=r"^lr_find: LRSchedulerCallback: 'learning_rate' .*int32"):
        lr_find(model, optimizer, TARGETS, train_step=quadratic_step)


def test_a_float16_learning_rate_records_what_was_applied():
    model, optimizer = _low_precision(jnp.float16(0.0))
    with pytest.raises(ValueError, match=r"^lr_find: .*learning_rate=1e-09 .*becomes 0 in float16"):
        lr_find(model, optimizer, TARGETS, train_step=quadratic_step, start_lr=1e-9)
    result = lr_find(
        model, optimizer, TARGETS, train_step=quadratic_step, start_lr=1e-3, num_steps=20
    )
    float16 = [float(np.float16(lr)) for lr in np.geomspace(1e-3, 10.0, 20)[: len(result.lrs)]]
    assert list(result.lrs) == float16  # as the float16 optimizer applied them
    assert result.lrs[1] != pytest.approx(np.geomspace(1e-3, 10.0, 20)[1], rel=1e-6)


def test_the_range_test_trains_in_training_mode_with_the_tutorials_rngs():
    model = NoisyNet(nnx.Rngs(0))
    model.eval()  # the user's mode, put back afterwards
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.0)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    with pytest.raises(ValueError, match=r"^lr_find: the model draws random numbers"):
        lr_find(model, optimizer, tiny_batches(16, 4), num_steps=5)
    rngs = nnx.Rngs(dropout=1)
    seen = []

    def train_step(model, optimizer, batch, *, rngs):
        seen.append((model.dropout.deterministic, model.norm.use_running_average))
        return classification_train_step(model, optimizer, batch, rngs=rngs)

    result = lr_find(
        model, optimizer, tiny_batches(16, 4), num_steps=5, rngs=rngs, train_step=train_step
    )
    assert len(result.lrs) == 5
    assert seen[0] == (False, False)  # traced in training mode
    assert model.dropout.deterministic  # and left in evaluation mode, as given
    assert int(rngs.dropout.count[...]) == 0  # the streams are put back too
    np.testing.assert_array_equal(np.asarray(model.norm.mean[...]), 0.0)
