"""The values a callback plans for a dispatch (Callback.hyperparams_ahead), checked first."""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest
from flax import nnx
from helpers import tiny_batches, tiny_setup

from flax_cyclic import Callback, Trainer
from flax_cyclic.callbacks._planned import check_planned


class Plans(Callback):
    """Plans the learning rate of every step of a dispatch: `values(steps)`.

    Between dispatches, the learning rate holds 0.05 (written at on_train_begin), the value
    the valid plans give: what one step per dispatch would apply next.
    """

    def __init__(self, values):
        self.values = values

    def on_train_begin(self, loop):
        loop.optimizer.opt_state.hyperparams["learning_rate"].set_value(np.float32(0.05))

    def hyperparams_ahead(self, loop, start, steps):
        variable = loop.optimizer_object.opt_state.hyperparams["learning_rate"]
        return [(variable, self.values(steps))]


def _fit(values, steps=8):
    """Trains `steps` steps at 4 per dispatch with `Plans(values)`; returns the model, optimizer."""
    model, optimizer = tiny_setup()
    trainer = Trainer(
        model, optimizer, callbacks=[Plans(values)], progress=False, steps_per_dispatch=4
    )
    trainer.fit(tiny_batches(16, steps), num_steps=steps)
    return model, optimizer


def _params(model):
    return jax.tree.map(np.array, nnx.state(model, nnx.Param))


WHERE = "'learning_rate' at the root of the optimizer state"


@pytest.mark.parametrize(
    ("values", "error", "match"),
    [
        (
            lambda steps: np.full(steps, -0.05, np.float32),
            ValueError,
            r"^Plans\.hyperparams_ahead: learning_rate=\[-0\.05.*\] at the root of the optimizer "
            r"state is not a finite number >= 0 \(the hyperparameter is float32\)",
        ),
        (
            lambda steps: np.array([0.05, math.nan, 0.05, 0.05], np.float32),
            ValueError,
            r"^Plans\.hyperparams_ahead: learning_rate=\[0\.05.*, nan, .*\] at the root of the "
            r"optimizer state is not a finite number >= 0",
        ),
        (
            lambda steps: np.full(steps - 1, 0.05, np.float32),
            ValueError,
            rf"^Plans\.hyperparams_ahead: planned values of shape \(3,\) for {WHERE}, but the "
            r"dispatch runs 4 train steps: give a one-dimensional array of exactly 4 values",
        ),
        (
            lambda steps: [0.05] * (steps + 1),
            ValueError,
            rf"^Plans\.hyperparams_ahead: planned values of shape \(5,\) for {WHERE}, but the "
            r"dispatch runs 4 train steps",
        ),
        (
            lambda steps: np.full((steps, 1), 0.05, np.float32),
            ValueError,
            rf"^Plans\.hyperparams_ahead: planned values of shape \(4, 1\) for {WHERE}",
        ),
        (
            lambda steps: 0.05,
            ValueError,
            rf"^Plans\.hyperparams_ahead: planned values of shape \(\) for {WHERE}",
        ),
        (
            lambda steps: [True] * steps,
            TypeError,
            rf"^Plans\.hyperparams_ahead: the values planned for {WHERE} must be real numbers, "
            r"got list of dtype bool",
        ),
        (
            lambda steps: [0.05, [0.05], 0.05, 0.05],
            ValueError,
            rf"^Plans\.hyperparams_ahead: the values planned for {WHERE} are not an array",
        ),
    ],
    ids=["negative", "nan", "too_few", "list_too_long", "2d", "a_number", "bool", "ragged"],
)
def test_planned_values_are_refused_before_any_update(values, error, match):
    model, optimizer = tiny_setup()
    before = _params(model)
    trainer = Trainer(
        model, optimizer, callbacks=[Plans(values)], progress=False, steps_per_dispatch=4
    )
    with pytest.raises(error, match=match):
        trainer.fit(tiny_batches(16, 8), num_steps=8)
    assert int(optimizer.step[...]) == 0
    jax.tree.map(np.testing.assert_array_equal, _params(model), before)


def test_planned_values_too_small_for_the_dtype_name_it():
    _, optimizer = tiny_setup()
    hyperparams = optimizer.opt_state.hyperparams
    hyperparams["learning_rate"].set_value(np.float16(0.0))  # a float16 hyperparameter
    with pytest.raises(
        ValueError,
        match=r"^Plans\.hyperparams_ahead: learning_rate=\[1e-09, .*\] at the root of the "
        r"optimizer state becomes \[0\.0, .*\] in float16",
    ):
        check_planned("Plans", hyperparams["learning_rate"], [1e-9] * 4, 4, optimizer)


@pytest.mark.parametrize(
    "values",
    [
        lambda steps: [0.05] * steps,
        lambda steps: tuple([0.05] * steps),
        lambda steps: jax.numpy.full(steps, 0.05),
        lambda steps: np.full(steps, 0.05),  # float64: converted to float32, as written ones are
    ],
    ids=["list", "tuple", "jax_array", "float64"],
)
def test_a_sequence_of_one_value_per_step_trains_as_the_array_in_the_dtype(values):
    expected, _ = _fit(lambda steps: np.full(steps, np.float32(0.05), np.float32))
    model, optimizer = _fit(values)
    jax.tree.map(np.testing.assert_array_equal, _params(model), _params(expected))
    assert int(optimizer.step[...]) == 8


def test_checked_values_come_back_in_the_variable_dtype():
    _, optimizer = tiny_setup()
    variable = optimizer.opt_state.hyperparams["learning_rate"]
    checked = check_planned("Plans", variable, [0.1, 0.2], 2, optimizer)
    assert checked.dtype == np.float32
    assert checked.shape == (2,)
    np.testing.assert_array_equal(checked, np.array([0.1, 0.2], np.float32))


def test_a_variable_the_optimizer_does_not_inject_is_named_as_such():
    _, optimizer = tiny_setup()
    stray = nnx.Variable(np.float32(0.0))
    with pytest.raises(
        ValueError,
        match=r"^Plans\.hyperparams_ahead: planned values of shape \(3,\) for a variable that is "
        r"not an injected hyperparameter of the loop's optimizer",
    ):
        check_planned("Plans", stray, [0.1] * 3, 2, optimizer)
    with pytest.raises(ValueError, match=r"cannot be applied as given: \[-0\.1, -0\.1\]"):
        check_planned("Plans", stray, [-0.1] * 2, 2, optimizer)
