"""The default train and eval steps (flax_cyclic/steps.py): the batch formats they read."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import raises_exactly, tiny_batches, tiny_setup

from flax_cyclic import Trainer


@pytest.mark.parametrize(
    ("batch", "described"),
    [
        ((np.ones((4, 8), np.float32),), "a tuple of 1 elements."),
        ({"x": np.ones((4, 8), np.float32), "y": np.zeros(4, np.int32)}, None),
        (np.ones((4, 8), np.float32), "one array of shape (4, 8)."),
    ],
)
def test_a_batch_the_default_steps_cannot_read_is_named(batch, described):
    model, optimizer = tiny_setup()
    trainer = Trainer(model, optimizer, progress=False)
    if described is None:
        described = "a mapping without ['image', 'label'] (its keys are ['x', 'y'])."
    with raises_exactly(ValueError, FORMATS + described):
        trainer.fit([batch], num_steps=1)
    with raises_exactly(ValueError, FORMATS + described):
        trainer.evaluate([batch])


def test_the_default_steps_read_both_batch_formats():
    model, optimizer = tiny_setup()
    (x, y), *_ = tiny_batches(16, 1)
    history = Trainer(model, optimizer, progress=False).fit(
        [(x, y), {"image": x, "label": y}], num_steps=2
    )
    assert history.train[-1]["step"] == 2


FORMATS = (
    "The default train and eval steps take an (inputs, labels) pair, or a mapping with 'image' "
    "and 'label' (as the MNIST example's pipeline makes); for other batches, pass your own "
    "train_step / eval_step; got "
)
