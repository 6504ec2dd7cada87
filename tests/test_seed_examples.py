"""Every example of braintools' CyclicLR reference page, ported to `flax_cyclic`.

The optimizer lines become optax + `nnx.Optimizer`; the numbers each example claims are checked
(with the page's triangular2 peaks corrected: 0.00055 and 0.000325, not 0.0055 and 0.00325).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import flax_cyclic
from flax_cyclic import CyclicLR


class Model(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.backbone = nnx.Linear(4, 8, rngs=rngs)
        self.head = nnx.Linear(8, 1, rngs=rngs)

    def __call__(self, x):
        return self.head(jax.nn.relu(self.backbone(x)))


@nnx.jit
def train_step(model, optimizer, x, y):
    def loss_fn(model):
        return jnp.mean((model(x) - y) ** 2)

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss


def data_loader(num_batches: int, seed: int = 0):
    key = jax.random.key(seed)
    w = jnp.arange(1.0, 5.0)
    for i in range(num_batches):
        x = jax.random.normal(jax.random.fold_in(key, i), (16, 4))
        yield x, (x @ w)[:, None]


def test_basic_triangular():
    model = Model(nnx.Rngs(0))
    scheduler = flax_cyclic.CyclicLR(
        base_lr=0.001,
        max_lr=0.006,
        step_size_up=2000,  # 2000 iterations to go from base to max
        mode="triangular",
    )
    optimizer = nnx.Optimizer(
        model, optax.sgd(learning_rate=scheduler, momentum=0.9), wrt=nnx.Param
    )
    losses = [float(train_step(model, optimizer, x, y)) for x, y in data_loader(30)]
    assert losses[-1] < losses[0]
    assert int(optimizer.step[...]) == 30
    # The optimizer's count drives the scheduler inside the jitted step.
    assert math.isclose(float(scheduler(1000)), 0.0035, rel_tol=1e-6)
    assert math.isclose(float(scheduler(2000)), 0.006, rel_tol=1e-6)


def test_triangular2_amplitude_decay():
    scheduler = flax_cyclic.CyclicLR(
        base_lr=0.0001,
        max_lr=0.001,
        step_size_up=1000,
        step_size_down=1000,
        mode="triangular2",  # Amplitude decay
    )
    # First cycle peaks at 0.001, the second at 0.00055, the third at 0.000325.
    peaks = []
    for step in (1000, 3000, 5000):
        scheduler.step(epoch=step)
        peaks.append(scheduler.get_last_lr()[0])
    assert peaks == pytest.approx([0.001, 0.00055, 0.000325], rel=1e-15)
    np.testing.assert_allclose([float(scheduler(t)) for t in (1000, 3000, 5000)], peaks, rtol=1e-7)


def test_exponential_range_decay():
    scheduler = flax_cyclic.CyclicLR(
        base_lr=0.0001,
        max_lr=0.01,
        step_size_up=500,
        mode="exp_range",
        gamma=0.99994,  # Gradual decay
    )
    for peak in (500, 10_500):
        scheduler.step(epoch=peak)
        expected = 0.0001 + 0.0099 * 0.99994**peak
        assert math.isclose(scheduler.get_last_lr()[0], expected, rel_tol=1e-15)


def test_asymmetric_cycles():
    scheduler = flax_cyclic.CyclicLR(
        base_lr=0.0001,
        max_lr=0.001,
        step_size_up=500,  # Quick ramp up
        step_size_down=1500,  # Slow ramp down
    )
    values = {}
    for step in (0, 250, 500, 1250, 2000, 2500):
        scheduler.step(epoch=step)
        values[step] = scheduler.get_last_lr()[0]
    assert values == pytest.approx(
        {0: 0.0001, 250: 0.00055, 500: 0.001, 1250: 0.00055, 2000: 0.0001, 2500: 0.001},
        rel=1e-15,
    )


def test_asymmetric_cycles_do_not_stick_at_base_lr_like_braintools():
    # braintools' x = |t / up - 2 cycle + 1| assumes up == down: with up=2, down=6 its LR stays
    # at base_lr from the first peak's far side on. Ours follows PyTorch's vector.
    scheduler = CyclicLR(1.0, 5.0, step_size_up=2, step_size_down=6)
    lrs = []
    for _ in range(9):
        lrs.append(scheduler.get_last_lr()[0])
        scheduler.step()
    assert lrs == pytest.approx([1, 3, 5, 13 / 3, 11 / 3, 3, 7 / 3, 5 / 3, 1], rel=1e-15)


def test_custom_scaling_function():
    def custom_scale(x):
        """Custom scaling: faster decay initially."""
        return 1 / (1 + 0.0005 * x)

    scheduler = flax_cyclic.CyclicLR(
        base_lr=0.001,
        max_lr=0.1,
        step_size_up=1000,
        scale_fn=custom_scale,
        scale_mode="iterations",
    )
    scheduler.step(epoch=1000)
    assert math.isclose(scheduler.get_last_lr()[0], 0.001 + 0.099 / 1.5, rel_tol=1e-15)
    assert math.isclose(float(jax.jit(scheduler)(1000)), 0.001 + 0.099 / 1.5, rel_tol=1e-6)


def test_lr_range_test_implementation():
    def lr_range_test(model, data_loader, max_lr=10, num_iter=100):
        scheduler = flax_cyclic.CyclicLR(
            base_lr=1e-7, max_lr=max_lr, step_size_up=num_iter, mode="triangular"
        )
        optimizer = nnx.Optimizer(
            model, optax.sgd(learning_rate=scheduler, momentum=0.9), wrt=nnx.Param
        )
        lrs, losses = [], []
        for i, (x, y) in enumerate(data_loader):
            if i >= num_iter:
                break
            loss = train_step(model, optimizer, x, y)
            lrs.append(scheduler.get_lr()[0])
            losses.append(float(loss))
            scheduler.step()
        return lrs, losses

    # The page passes the scheduler to optax and steps it too. The values agree here (one step
    # per update from step 0), but nothing checks that they do: the scheduler warns, once.
    with pytest.warns(UserWarning, match="CyclicLR: optax evaluates this scheduler") as caught:
        lrs, losses = lr_range_test(Model(nnx.Rngs(0)), data_loader(40), max_lr=1.0, num_iter=20)
    assert len(caught) == 1
    assert len(lrs) == len(losses) == 20
    assert lrs == pytest.approx([1e-7 + (1.0 - 1e-7) * i / 20 for i in range(20)], rel=1e-15)
    assert min(losses) < losses[0]


def test_super_convergence():
    epochs, train_loader = 2, list(data_loader(25))
    scheduler = flax_cyclic.CyclicLR(
        base_lr=0.08,  # Relatively high base_lr
        max_lr=0.8,  # Very high max_lr
        step_size_up=epochs * len(train_loader) // 2,
        step_size_down=epochs * len(train_loader) // 2,
        mode="triangular",
    )
    # Combine with strong regularization: SGD with momentum 0.95 and weight decay 1e-4.
    tx = optax.chain(optax.add_decayed_weights(1e-4), optax.sgd(scheduler, momentum=0.95))
    model = Model(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    for _ in range(epochs):
        for x, y in train_loader:
            train_step(model, optimizer, x, y)
    assert (scheduler.step_size_up, scheduler.step_size_down) == (25, 25)
    assert int(optimizer.step[...]) == 50
    assert float(scheduler(25)) == pytest.approx(0.8, rel=1e-6)


def test_multiple_parameter_groups():
    scheduler = flax_cyclic.CyclicLR(
        base_lr=[0.0001, 0.001],  # Lower for pretrained layers
        max_lr=[0.001, 0.01],  # Higher for new layers
        step_size_up=1000,
    )
    model = Model(nnx.Rngs(0))
    # One optax transformation per group; optax.multi_transform routes parameters by label.
    tx = optax.multi_transform(
        {
            "pretrained": optax.sgd(scheduler.as_schedule(0)),
            "new": optax.sgd(scheduler.as_schedule(1)),
        },
        lambda params: jax.tree_util.tree_map_with_path(
            lambda path, _: "pretrained" if "backbone" in jax.tree_util.keystr(path) else "new",
            params,
        ),
    )
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    before = jax.tree.map(jnp.copy, nnx.state(model, nnx.Param))
    x, y = next(data_loader(1))
    grads = nnx.grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
    optimizer.update(model, grads)
    after = nnx.state(model, nnx.Param)
    # At step 0 each group moves by its own base_lr times its gradient.
    for layer, lr in (("backbone", 0.0001), ("head", 0.001)):
        expected = before[layer]["kernel"][...] - lr * grads[layer]["kernel"][...]
        np.testing.assert_allclose(after[layer]["kernel"][...], expected, rtol=1e-6)
    scheduler.step(epoch=1000)
    assert scheduler.get_last_lr() == pytest.approx([0.001, 0.01], rel=1e-15)


def test_monitoring_cycles(capsys):
    scheduler = flax_cyclic.CyclicLR(
        base_lr=0.001, max_lr=0.01, step_size_up=100, step_size_down=100
    )
    for iteration in range(1000):
        # train_step(...) would run here
        scheduler.step()
        if iteration % 50 == 0:
            cycle = iteration // (scheduler.step_size_up + scheduler.step_size_down)
            lr = scheduler.get_lr()[0]
            print(f"Iter {iteration}, Cycle {cycle}, LR: {lr:.6f}")
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 20
    assert lines[:5] == [
        "Iter 0, Cycle 0, LR: 0.001090",
        "Iter 50, Cycle 0, LR: 0.005590",
        "Iter 100, Cycle 0, LR: 0.009910",
        "Iter 150, Cycle 0, LR: 0.005410",
        "Iter 200, Cycle 1, LR: 0.001090",
    ]
    # The scheduler also reports the cycle (from 1) and the position within it directly.
    assert (scheduler.last_epoch, scheduler.cycle, scheduler.cycle_position) == (1000, 6, 0.0)
