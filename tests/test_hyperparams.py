"""Finding and writing injected hyperparameters in any optax state (flax_cyclic/_hyperparams.py)."""

from __future__ import annotations

import numpy as np
import optax
import pytest
from flax import nnx
from helpers import tiny_mlp

from flax_cyclic._hyperparams import (
    accumulation_every_k,
    accumulation_state,
    find_injected_hyperparams,
)


def _opt_state(tx):
    return nnx.Optimizer(tiny_mlp(), tx, wrt=nnx.Param).opt_state


def test_finds_the_one_state_of_a_plain_optimizer():
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1, momentum=0.9)
    (found,) = find_injected_hyperparams(_opt_state(tx))
    assert found.label is None
    assert found.where == "the root of the optimizer state"
    assert sorted(found.variables) == ["learning_rate", "momentum"]
    assert found.variables["learning_rate"].get_value() == np.float32(0.1)
    assert found.dtypes["learning_rate"] == np.float32


def test_an_optimizer_without_injection_has_none():
    assert find_injected_hyperparams(_opt_state(optax.sgd(0.1))) == []


def _labels(params):
    return nnx.map_state(lambda path, _: "biases" if path[-1] == "bias" else "kernels", params)


def test_multi_transform_groups_come_in_sorted_label_order():
    tx = optax.multi_transform(
        {
            "kernels": optax.inject_hyperparams(optax.sgd)(learning_rate=0.1),
            "biases": optax.inject_hyperparams(optax.adam)(learning_rate=0.01),
        },
        _labels,
    )
    found = find_injected_hyperparams(_opt_state(tx))
    assert [state.label for state in found] == ["biases", "kernels"]
    assert found[0].where.startswith("group 'biases' (")
    assert "b1" in found[0].variables
    assert "b1" not in found[1].variables


def test_write_replaces_the_value_and_keeps_its_dtype():
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1, momentum=0.9)
    opt_state = _opt_state(tx)
    (found,) = find_injected_hyperparams(opt_state)
    found.write("learning_rate", 0.25)
    value = opt_state.hyperparams["learning_rate"].get_value()
    assert value == np.float32(0.25)
    assert value.dtype == np.float32
    assert isinstance(value, np.ndarray)  # a host value: no device scatter, no retrace


@pytest.mark.parametrize(
    "wrap",
    [lambda tx: tx, lambda tx: tx.gradient_transformation()],
    ids=["MultiSteps", "its gradient_transformation"],
)
def test_accumulation_every_k_reads_a_constant_k(wrap):
    multi_steps = optax.MultiSteps(optax.sgd(0.1), every_k_schedule=4)
    assert accumulation_every_k(wrap(multi_steps)) == 4


def test_accumulation_every_k_is_none_when_it_cannot_be_read():
    assert accumulation_every_k(optax.sgd(0.1)) is None
    varying = optax.MultiSteps(optax.sgd(0.1), every_k_schedule=lambda step: 2 + step % 2)
    assert accumulation_every_k(varying) is None


def test_accumulation_state_is_the_multisteps_state_only():
    multi_steps = optax.MultiSteps(optax.sgd(0.1), every_k_schedule=2)
    assert isinstance(accumulation_state(_opt_state(multi_steps)), optax.MultiStepsState)
    assert accumulation_state(_opt_state(optax.sgd(0.1))) is None
