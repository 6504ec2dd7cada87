"""Metrics read on the host (flax_cyclic/_metrics.py): each metric is one scalar, refused
otherwise, naming the metric, its shape and the fix, on every path that reads metrics."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import count_compilations, tiny_batches, tiny_setup

from flax_cyclic import Trainer, _metrics
from flax_cyclic._metrics import check_scalar_metrics, host_column, mean_metrics
from flax_cyclic.steps import classification_eval_step, classification_train_step

SCALARS = {
    "python float": 0.5,
    "python int": 3,
    "numpy scalar": np.float32(0.5),
    "numpy 0-d array": np.asarray(0.5),
    "jax scalar": jnp.float32(0.5),
    "shape only": jax.ShapeDtypeStruct((), jnp.float32),  # no data: only the shape is read
}


@pytest.mark.parametrize("value", SCALARS.values(), ids=SCALARS.keys())
def test_scalars_pass(value):
    check_scalar_metrics("X", {"loss": value})


NOT_SCALARS = {
    "per-class jax": (jnp.zeros(10), "(10,)"),
    "one element": (np.zeros(1), "(1,)"),
    "matrix": (np.zeros((2, 3)), "(2, 3)"),
    "list": ([0.1, 0.2], "(2,)"),
    "shape only": (jax.ShapeDtypeStruct((10,), jnp.float32), "(10,)"),
}


@pytest.mark.parametrize(("value", "shape"), NOT_SCALARS.values(), ids=NOT_SCALARS.keys())
def test_a_metric_that_is_not_a_scalar_is_refused_by_name_shape_and_fix(value, shape):
    with pytest.raises(TypeError) as error:
        check_scalar_metrics("Trainer.fit", {"loss": 0.5, "accuracy": value})
    message = str(error.value)
    assert message.startswith(
        f"Trainer.fit: metrics must be scalars, but 'accuracy' has shape {shape}."
    )
    assert "'accuracy/0'" in message  # one scalar per element
    assert "reduce it in the step" in message


def test_stacked_metrics_are_checked_per_step():
    check_scalar_metrics("X", {"loss": jnp.zeros(8)}, stacked=True)  # 8 steps of a scalar
    with pytest.raises(
        TypeError, match=r"^X: metrics must be scalars, but 'acc' has shape \(10,\)"
    ):
        check_scalar_metrics("X", {"loss": jnp.zeros(8), "acc": jnp.zeros((8, 10))}, stacked=True)


def test_every_metric_that_is_not_a_scalar_is_named():
    metrics = {"loss": 0.5, "accuracy": np.zeros(10), "recall": np.zeros(3)}
    with pytest.raises(TypeError, match=r"'accuracy' has shape \(10,\), 'recall' has shape \(3,\)"):
        check_scalar_metrics("X", metrics)


def test_means_of_scalars_are_floats():
    means = mean_metrics([{"loss": np.float32(1.0)}, {"loss": jnp.float32(2.0)}])
    assert means == {"loss": 1.5}
    assert type(means["loss"]) is float


def test_means_refuse_a_vector_metric_instead_of_averaging_its_elements():
    steps = [{"loss": 1.0, "accuracy": np.asarray([1.0, 0.0])}] * 2
    with pytest.raises(TypeError, match=r"^X: metrics must be scalars, but 'accuracy' has shape"):
        mean_metrics(steps, owner="X")
    with pytest.raises(TypeError, match=r"^flax_cyclic: metrics must be scalars"):
        mean_metrics(steps)


def _per_class(metrics, logits_fn, labels):
    """`metrics` with the accuracy of each of the 3 classes, as one vector."""
    predicted = jnp.argmax(logits_fn(), axis=-1)
    hits = (predicted == labels)[:, None] & (labels[:, None] == jnp.arange(3))
    counts = jnp.maximum((labels[:, None] == jnp.arange(3)).sum(0), 1)
    return {**metrics, "per_class": hits.sum(0) / counts}


def test_the_trainer_refuses_an_eval_step_with_a_vector_metric():
    def eval_step(model, batch):
        inputs, labels = batch
        return _per_class(classification_eval_step(model, batch), lambda: model(inputs), labels)

    model, optimizer = tiny_setup(0.01)
    trainer = Trainer(model, optimizer, eval_step=eval_step, progress=False)
    expected = re.escape(": metrics must be scalars, but 'per_class' has shape (3,).")
    with pytest.raises(TypeError, match=expected):
        trainer.fit(tiny_batches(16, 2), num_epochs=1, eval_data=tiny_batches(16, 2, seed=1))


def test_the_trainer_refuses_a_train_step_with_a_vector_metric():
    def train_step(model, optimizer, batch):
        inputs, labels = batch
        metrics = classification_train_step(model, optimizer, batch)
        return _per_class(metrics, lambda: model(inputs), labels)

    model, optimizer = tiny_setup(0.01)
    trainer = Trainer(model, optimizer, train_step=train_step, progress=False)
    expected = re.escape(": metrics must be scalars, but 'per_class' has shape (3,).")
    with pytest.raises(TypeError, match=expected):
        trainer.fit(tiny_batches(16, 2), num_epochs=1)


# -- reading many device scalars: stacked per chunk on the device, each value bit for bit -------


def _device_scalars(count: int, dtype=jnp.float32) -> list:
    step = jax.jit(lambda i: (jnp.sin(i * 0.37) * 1e3).astype(dtype))  # as a step's outputs
    return [step(jnp.float32(i)) for i in range(count)]


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.int32, jnp.bfloat16])
def test_a_column_of_device_scalars_is_read_bit_for_bit(dtype):
    values = _device_scalars(2 * _metrics._CHUNK + 7, dtype)  # two chunks and a rest
    expected = np.asarray([np.asarray(value) for value in values])
    got = host_column(values)
    assert got.dtype == expected.dtype
    assert got.tobytes() == expected.tobytes()
    metrics = [{"loss": value} for value in values]
    assert mean_metrics(metrics) == {"loss": float(np.mean(expected))}


def test_a_column_of_mixed_values_is_read_as_numpy_reads_it():
    values = _device_scalars(_metrics._CHUNK + 3)
    values[5] = np.float32(2.5)  # a host value within the first chunk
    values[-1] = 7.0
    expected = np.asarray([np.asarray(value) for value in values])
    assert host_column(values).tobytes() == expected.tobytes()


def test_reading_columns_compiles_once_per_dtype():
    values = _device_scalars(3 * _metrics._CHUNK)
    host_column(values[: _metrics._CHUNK])
    with count_compilations() as compiled:
        host_column([*values[: 2 * _metrics._CHUNK], 0.5])
    assert compiled == []


def test_a_column_on_several_devices_is_read_value_by_value():
    code = textwrap.dedent(
        """
        import jax, jax.numpy as jnp, numpy as np
        from flax_cyclic._metrics import host_column, _CHUNK
        devices = jax.devices()
        assert len(devices) == 2
        values = [jax.device_put(jnp.float32(i), devices[i % 2]) for i in range(_CHUNK + 1)]
        assert host_column(values).tolist() == list(range(_CHUNK + 1))
        print("ok")
        """
    )
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.stdout.strip() == "ok", done.stderr[-2000:]
