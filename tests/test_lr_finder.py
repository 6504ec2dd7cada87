"""The LR range test on problems whose answer is known, with the model restored afterwards."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import matplotlib.image
import numpy as np
import optax
import pytest
from flax import nnx
from helpers import count_compilations, tiny_batches

from flax_cyclic import LRFinderResult, lr_find

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
    np.testing.assert_allclose(lrs, expected, rtol=1e-13)


def test_stops_just_past_the_analytic_divergence(quadratic_result):
    result = quadratic_result
    assert result.stop_reason == "diverged"
    # The loss explodes once lr > 2/L; the smoothed loss crosses 4x its minimum a few steps
    # later (each step multiplies the lr by 1.072).
    assert DIVERGENT_LR < result.lrs[-1] < 2 * DIVERGENT_LR
    assert result.smoothed_losses[-1] > 4 * min(result.smoothed_losses)
    assert all(
        v <= 4 * min(result.smoothed_losses[: i + 1])
        for i, v in enumerate(result.smoothed_losses[:-1])
    )


def test_every_suggestion_is_below_the_divergent_lr(quadratic_result):
    suggestions = quadratic_result.suggestions
    assert set(suggestions) == {"steepest", "valley", "minimum/10"}
    assert all(0 < lr < DIVERGENT_LR for lr in suggestions.values())
    base_lr, max_lr = quadratic_result.recommended
    assert max_lr == suggestions["valley"]
    assert base_lr == max_lr / 4
    assert max_lr < DIVERGENT_LR
    # The loss does fall over the recommended range.
    smoothed = dict(zip(quadratic_result.lrs, quadratic_result.smoothed_losses, strict=True))
    assert smoothed[max_lr] < smoothed[quadratic_result.lrs[0]]


def test_smoothing_is_a_debiased_moving_average(quadratic_result):
    beta, average = 0.98, 0.0
    for i, (loss, smoothed) in enumerate(
        zip(quadratic_result.losses, quadratic_result.smoothed_losses, strict=True)
    ):
        average = beta * average + (1 - beta) * loss
        assert smoothed == pytest.approx(average / (1 - beta ** (i + 1)), rel=1e-12)


def test_the_loss_of_each_step_is_the_loss_at_its_lr():
    # One step of gradient descent from w = 0 on 0.5 * L * |w - 1|^2 with lr: loss = 0.5 L n.
    # The second step starts from w = lr0 * L: its loss reveals the first step's lr.
    model, optimizer = _quadratic()
    ones = [jnp.ones(16)]
    result = lr_find(
        model, optimizer, ones, train_step=quadratic_step, start_lr=0.01, end_lr=0.1, num_steps=3
    )
    assert result.lrs == pytest.approx((0.01, math.sqrt(0.001), 0.1), rel=1e-15)
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
    np.testing.assert_allclose(result.lrs, np.linspace(0.001, 0.4, 20), rtol=1e-14)
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


def test_nothing_to_recommend_when_the_loss_never_falls():
    result = LRFinderResult(
        lrs=(1.0, 2.0, 3.0, 4.0),
        losses=(1.0, 2.0, 3.0, 3.5),
        smoothed_losses=(1.0, 2.0, 3.0, 3.5),
        stop_reason="completed",
        smoothing=0.0,
        diverge_threshold=4.0,
    )
    assert result.steepest is None
    assert result.valley is None
    with pytest.raises(ValueError, match="the smoothed loss never fell"):
        _ = result.recommended


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
