"""JSON states made exact before writing: what converts, what is refused and where."""

from __future__ import annotations

import enum
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flax_cyclic._json_state import NotJson, to_json


class Level(enum.IntEnum):
    HIGH = 3


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (np.float32(0.1), float(np.float32(0.1))),
        (jnp.float32(2.5), 2.5),
        (jnp.bfloat16(1.5), 1.5),
        (np.array(3), 3),
        (np.int64(2**40), 2**40),
        (np.uint8(255), 255),
        (np.bool_(True), True),
        (jnp.array(False), False),
        (np.float64(1.25), 1.25),
        (np.str_("x"), "x"),
        (Level.HIGH, 3),
        ((1, (2, np.int32(3))), [1, [2, 3]]),
        ({"a": [None, "b", -math.inf]}, {"a": [None, "b", -math.inf]}),
    ],
)
def test_exact_values_become_python_values_that_read_back_equal(value, expected):
    converted = to_json(value)
    assert converted == expected
    assert type(converted) is type(expected)
    assert json.loads(json.dumps(converted)) == expected


def test_nan_is_kept_as_python_json_writes_and_reads_it():
    assert math.isnan(json.loads(json.dumps(to_json({"x": np.float32("nan")})))["x"])


@pytest.mark.parametrize(
    ("value", "path", "what"),
    [
        (np.ones(3), "", "a value of type numpy.ndarray (shape (3,), dtype float64)"),
        ({"a": [0, {"b": np.zeros(0)}]}, "['a'][1]['b']", "a value of type numpy.ndarray"),
        ({"k": jnp.ones((2, 2))}, "['k']", "a value of type jax.Array (shape (2, 2)"),
        ({"k": jax.random.key(0)}, "['k']", "a value of type jax.Array (shape (), dtype key"),
        ({"z": np.complex64(1)}, "['z']", "a value of type numpy.complex64 (shape ()"),
        ({"t": {1: "a"}}, "['t']", "the key 1 of type int (JSON keys are strings)"),
        ([range(2)], "[0]", "a value of type range"),
        ({"b": b"x"}, "['b']", "a value of type bytes"),
    ],
)
def test_what_json_cannot_hold_exactly_is_refused_with_its_path(value, path, what):
    with pytest.raises(NotJson) as raised:
        to_json(value)
    assert raised.value.path == path
    assert raised.value.what.startswith(what)
    assert isinstance(raised.value, TypeError)
