"""Draws docs/images/lr_find.png: the LR range test of the quadratic in docs/lr_find.md.

Usage: ``python docs/tools/plot_lr_find.py [--output DIR]``.
"""

from __future__ import annotations

import argparse
import pathlib

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from flax_cyclic import lr_find

CURVATURE = 4.0


class Quadratic(nnx.Module):
    """The parameters ``w`` of ``0.5 * L * |w - target|^2``."""

    def __init__(self) -> None:
        self.w = nnx.Param(jnp.zeros(16))


def train_step(model: Quadratic, optimizer: nnx.Optimizer, target: jax.Array) -> dict:
    """One step of gradient descent; returns the loss before it."""

    def loss_fn(model: Quadratic) -> jax.Array:
        return 0.5 * CURVATURE * jnp.sum((model.w[...] - target) ** 2)

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return {"loss": loss}


def main(output_dir: str | pathlib.Path) -> pathlib.Path:
    """Runs the range test of docs/lr_find.md and saves its plot as ``lr_find.png``."""
    model = Quadratic()
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.0)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    targets = [1.0 + 0.1 * jax.random.normal(jax.random.key(i), (16,)) for i in range(10)]
    result = lr_find(
        model, optimizer, targets, train_step=train_step, start_lr=1e-4, end_lr=100.0, num_steps=200
    )
    path = pathlib.Path(output_dir) / "lr_find.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    result.plot(
        path, title="LR range test: gradient descent on a quadratic, L = 4 (diverges > 0.5)"
    )
    return path


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=pathlib.Path(__file__).parents[1] / "images")
    print(main(parser.parse_args().output))
