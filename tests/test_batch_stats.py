"""update_batch_stats against a float64 reference pass over the same batches."""

from __future__ import annotations

import numpy as np
import pytest
from flax import nnx

from flax_cyclic import update_batch_stats


class Net(nnx.Module):
    def __init__(self):
        self.first = nnx.Linear(4, 5, rngs=nnx.Rngs(0))
        self.norm1 = nnx.BatchNorm(5, momentum=0.9, rngs=nnx.Rngs(0))
        self.dropout = nnx.Dropout(0.5, rngs=nnx.Rngs(dropout=0))
        self.second = nnx.Linear(5, 3, rngs=nnx.Rngs(1))
        self.norm2 = nnx.BatchNorm(3, rngs=nnx.Rngs(0))

    def __call__(self, x):
        return self.norm2(self.second(self.dropout(nnx.relu(self.norm1(self.first(x))))))


def _reference(model: Net, batches) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each BatchNorm's mean over batches of the batch's mean and biased variance (float64),
    computed by hand with Dropout off and each layer normalising with the batch's statistics."""
    f64 = lambda v: np.asarray(v[...], np.float64)  # noqa: E731
    stats = {1: [], 2: []}
    for x in batches:
        h = np.asarray(x, np.float64) @ f64(model.first.kernel) + f64(model.first.bias)
        m, v = h.mean(0), h.var(0)
        stats[1].append((m, v))
        h = (h - m) / np.sqrt(v + model.norm1.epsilon) * f64(model.norm1.scale) + f64(
            model.norm1.bias
        )
        h = np.maximum(h, 0) @ f64(model.second.kernel) + f64(model.second.bias)
        stats[2].append((h.mean(0), h.var(0)))
    return [tuple(np.mean(s, axis=0) for s in zip(*stats[i], strict=True)) for i in (1, 2)]


def test_the_statistics_are_the_mean_over_batches_of_a_reference_pass():
    model = Net()
    rng = np.random.default_rng(0)
    batches = [
        (rng.normal(size=(16, 4)).astype(np.float32), np.zeros(16, np.int32)) for _ in range(5)
    ]
    expected = _reference(model, [x for x, _ in batches])
    model.train()
    assert update_batch_stats(model, batches) == 5
    for norm, (mean, var) in zip((model.norm1, model.norm2), expected, strict=True):
        np.testing.assert_allclose(norm.mean[...], mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(norm.var[...], var, rtol=1e-5, atol=1e-6)
    # The model's mode and the layers' momentum are as they were; weights untouched.
    assert (model.norm1.momentum, model.norm2.momentum) == (0.9, 0.99)
    assert (model.norm1.use_running_average, model.dropout.deterministic) == (False, False)


def test_inputs_as_arrays_mappings_or_a_forward_of_ones_own():
    model = Net()
    x = np.random.default_rng(1).normal(size=(8, 4)).astype(np.float32)
    update_batch_stats(model, [x])
    by_array = np.asarray(model.norm2.mean[...])
    update_batch_stats(model, [{"image": x, "label": None}])
    np.testing.assert_array_equal(model.norm2.mean[...], by_array)
    update_batch_stats(model, [x], forward=lambda model, batch: model(batch * 2))
    assert not np.array_equal(model.norm2.mean[...], by_array)


def test_no_batches_is_refused_and_a_model_without_batchnorm_reads_nothing():
    with pytest.raises(ValueError, match="`batches` has no batches"):
        update_batch_stats(Net(), [])
    assert update_batch_stats(nnx.Linear(2, 2, rngs=nnx.Rngs(0)), iter(())) == 0
