"""Finding and writing injected hyperparameters in any optax state (flax_cyclic/_hyperparams.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen, nnx
from flax.training import train_state
from helpers import count_compilations, raises_exactly, tiny_batches, tiny_mlp

from flax_cyclic import CyclicLR, _hyperparams, set_hyperparams
from flax_cyclic._hyperparams import (
    accumulation_counters,
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
    assert sorted(found.values) == ["learning_rate", "momentum"]
    assert found.values["learning_rate"].get_value() == np.float32(0.1)
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
    assert "b1" in found[0].values
    assert "b1" not in found[1].values


def test_write_replaces_the_value_and_keeps_its_dtype():
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1, momentum=0.9)
    opt_state = _opt_state(tx)
    (found,) = find_injected_hyperparams(opt_state)
    found.write("learning_rate", 0.25)
    value = opt_state.hyperparams["learning_rate"].get_value()
    assert value == np.float32(0.25)
    assert value.dtype == np.float32
    assert isinstance(value, np.ndarray)  # a host value: no device scatter, no retrace


@pytest.mark.parametrize("fast", [True, False], ids=["slot", "set_raw_value"])
def test_write_on_host_is_what_split_and_a_compiled_step_see(monkeypatch, fast):
    if not fast:  # a Flax that keeps values elsewhere: the checked path
        monkeypatch.setattr(_hyperparams, "_STORES_RAW_VALUE", False)
    else:  # the installed Flax keeps them in the slot the fast path writes
        assert _hyperparams._STORES_RAW_VALUE
    model = tiny_mlp()
    optimizer = nnx.Optimizer(model, optax.inject_hyperparams(optax.sgd)(0.1), wrt=nnx.Param)
    variable = optimizer.opt_state.hyperparams["learning_rate"]
    written = np.array(0.375, np.float32)
    _hyperparams.write_on_host(variable, written)
    assert variable.get_raw_value() is written
    assert variable.get_value() == np.float32(0.375)
    _, state = nnx.split(optimizer)
    assert state["opt_state"]["hyperparams"]["learning_rate"].get_value() is written

    @nnx.jit
    def read(optimizer):
        return optimizer.opt_state.hyperparams["learning_rate"][...] * 2

    assert float(read(optimizer)) == 0.75


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


# -- set_hyperparams: the pure write, on any optax state --


class LinenMLP(linen.Module):
    @linen.compact
    def __call__(self, x):
        return linen.Dense(3)(linen.relu(linen.Dense(16)(x)))


def _linen_state(tx):
    model = LinenMLP()
    params = model.init(jax.random.key(0), np.zeros((1, 8), np.float32))["params"]
    state = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=tx)
    # Committed to the device, as the step's outputs are: else the second step compiles again
    # (for the step counter init made uncommitted), with or without set_hyperparams.
    return jax.device_put(state, jax.devices()[0])


def _loss(params, apply_fn, batch):
    x, y = batch
    return optax.softmax_cross_entropy_with_integer_labels(
        apply_fn({"params": params}, x), y
    ).mean()


def test_a_linen_train_state_trains_with_the_schedulers_lr_at_every_update():
    state = _linen_state(optax.inject_hyperparams(optax.sgd)(learning_rate=0.0))
    scheduler = CyclicLR(0.01, 0.1, step_size_up=4)

    @jax.jit
    def train_step(state, batch):
        grads = jax.grad(_loss)(state.params, state.apply_fn, batch)
        return state.apply_gradients(grads=grads), grads

    with count_compilations() as compiled:
        for k, batch in enumerate(tiny_batches(count=10)):
            lr = scheduler.get_last_lr()
            opt_state = set_hyperparams(state.opt_state, learning_rate=lr)
            new, grads = train_step(state.replace(opt_state=opt_state), batch)
            # SGD: params_{k+1} = params_k - lr_k * grads_k, with the scheduler's lr_k
            # (checked on the host, so that the check compiles nothing).
            before, after, grads = jax.device_get((state.params, new.params, grads))
            for a, b, g in zip(*map(jax.tree.leaves, (before, after, grads)), strict=True):
                np.testing.assert_allclose(b, a - np.float32(lr[0]) * g, rtol=1e-6, atol=1e-7)
            state = new
            scheduler.step()
            if k == 0:
                first = len(compiled)
    assert len(compiled) == first  # nothing compiled after the first step
    lr = state.opt_state.hyperparams["learning_rate"]
    assert lr.dtype == np.float32
    assert not lr.weak_type


def test_a_plain_optax_chain_takes_lr_and_momentum_and_keeps_dtype_and_placement():
    params = {"w": jnp.ones(3, jnp.float32)}
    tx = optax.chain(
        optax.clip_by_global_norm(1.0),
        optax.inject_hyperparams(optax.sgd)(learning_rate=0.1, momentum=0.9),
    )
    opt_state = tx.init(params)
    new = set_hyperparams(opt_state, learning_rate=0.025, momentum=0.5)
    hyperparams = new[1].hyperparams
    assert float(hyperparams["learning_rate"]) == np.float32(0.025)
    assert float(hyperparams["momentum"]) == np.float32(0.5)
    old = opt_state[1].hyperparams["learning_rate"]
    for name in ("learning_rate", "momentum"):
        value = hyperparams[name]
        assert isinstance(value, jax.Array)
        assert (value.dtype, value.weak_type, value.sharding) == (
            old.dtype,
            False,
            old.sharding,
        )
    # Pure: the input is unchanged.
    assert float(opt_state[1].hyperparams["learning_rate"]) == np.float32(0.1)
    updates, _ = tx.update({"w": jnp.ones(3)}, new, params)
    np.testing.assert_allclose(updates["w"], -0.025 / np.sqrt(3), rtol=1e-6)


def test_a_float16_hyperparameter_stays_float16_on_the_host():
    params = {"w": np.ones(3, np.float16)}
    opt_state = optax.inject_hyperparams(optax.sgd)(learning_rate=jnp.float16(0.5)).init(params)
    host = jax.device_get(opt_state)
    new = set_hyperparams(host, learning_rate=0.25)
    value = new.hyperparams["learning_rate"]
    assert isinstance(value, np.ndarray)
    assert value.dtype == np.float16
    assert value == 0.25


def test_groups_are_matched_by_multi_transform_label():
    tx = optax.multi_transform(
        {
            "kernels": optax.inject_hyperparams(optax.sgd)(learning_rate=0.0, momentum=0.9),
            "biases": optax.inject_hyperparams(optax.adam)(learning_rate=0.0),
        },
        {"kernel": "kernels", "bias": "biases"},
    )
    opt_state = tx.init({"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)})
    new = set_hyperparams(opt_state, learning_rate=[0.1, 0.2], groups=["biases", "kernels"])
    values = {s.label: s.values for s in find_injected_hyperparams(new)}
    assert float(values["biases"]["learning_rate"]) == np.float32(0.1)
    assert float(values["kernels"]["learning_rate"]) == np.float32(0.2)
    # One number goes to every group; momentum goes to SGD's 'momentum' and Adam's 'b1'.
    new = set_hyperparams(new, momentum=0.8)
    values = {s.label: s.values for s in find_injected_hyperparams(new)}
    assert float(values["kernels"]["momentum"]) == np.float32(0.8)
    assert float(values["biases"]["b1"]) == np.float32(0.8)
    # With groups, only those groups are written.
    new = set_hyperparams(new, learning_rate=0.5, groups=["kernels"])
    values = {s.label: s.values for s in find_injected_hyperparams(new)}
    assert float(values["kernels"]["learning_rate"]) == np.float32(0.5)
    assert float(values["biases"]["learning_rate"]) == np.float32(0.1)


def test_an_nnx_optimizers_state_gets_new_variables_and_the_old_ones_are_kept():
    optimizer = nnx.Optimizer(
        tiny_mlp(), optax.inject_hyperparams(optax.sgd)(learning_rate=0.1), wrt=nnx.Param
    )
    new = set_hyperparams(optimizer.opt_state, learning_rate=0.3)
    variable = new.hyperparams["learning_rate"]
    assert isinstance(variable, nnx.Variable)
    assert variable.get_value() == np.float32(0.3)
    assert optimizer.opt_state.hyperparams["learning_rate"].get_value() == np.float32(0.1)


def test_inside_jit_a_traced_value_is_written():
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.0)
    opt_state = tx.init({"w": jnp.ones(2)})

    @jax.jit
    def write(opt_state, lr):
        return set_hyperparams(opt_state, learning_rate=lr * 2)

    value = write(opt_state, jnp.float32(0.25)).hyperparams["learning_rate"]
    assert float(value) == 0.5
    assert value.dtype == jnp.float32


def _two_groups():
    tx = optax.multi_transform(
        {
            "a": optax.inject_hyperparams(optax.sgd)(learning_rate=0.0),
            "b": optax.inject_hyperparams(optax.sgd)(learning_rate=0.0),
        },
        {"x": "a", "y": "b"},
    )
    return tx.init({"x": jnp.ones(1), "y": jnp.ones(1)})


@pytest.mark.parametrize(
    ("state", "kwargs", "error", "message"),
    [
        (
            _two_groups,
            {},
            ValueError,
            "set_hyperparams: nothing to set: give learning_rate=..., momentum=... or another "
            "injected hyperparameter by name, e.g. weight_decay=1e-4.",
        ),
        (
            lambda: optax.sgd(0.1).init({"w": jnp.ones(1)}),
            {"learning_rate": 0.1},
            ValueError,
            "set_hyperparams: the optimizer state has no optax.inject_hyperparams state to set. "
            "Build the transformation with it, e.g. optax.inject_hyperparams(optax.sgd)"
            "(learning_rate=0.1, momentum=0.9).",
        ),
        (
            _two_groups,
            {"learning_rate": 0.1, "groups": ["c"]},
            ValueError,
            "set_hyperparams: no multi_transform group is labelled ['c']; the optimizer's labels "
            "are ['a', 'b'].",
        ),
        (
            _two_groups,
            {"learning_rate": [0.1, 0.2, 0.3]},
            ValueError,
            "set_hyperparams: 3 values, one per parameter group, but the optimizer has 2 "
            "injected hyperparameter states (a, b). Give one value per state, or name the "
            "groups by their multi_transform labels (groups=[...]).",
        ),
        (
            _two_groups,
            {"learning_rate": [0.1, 0.2], "groups": ["a"]},
            ValueError,
            "set_hyperparams: `learning_rate` has 2 values but groups=['a'] names 1; give one "
            "value per label, or one number for all.",
        ),
        (
            _two_groups,
            {"momentum": 0.9, "groups": ["a"]},
            ValueError,
            "set_hyperparams: the optimizer state does not inject every value given: group 'a' "
            "(PartitionState.inner_states['a']MaskedState.inner_state) has neither 'momentum' "
            "nor 'b1' (it injects ['learning_rate']). Inject it, e.g. "
            "optax.inject_hyperparams(optax.sgd)(learning_rate=0.1, momentum=0.9), or leave "
            "the value out.",
        ),
        (
            _two_groups,
            {"learning_rate": "0.1"},
            TypeError,
            "set_hyperparams: `learning_rate` must be a number or a sequence of numbers (one "
            "per group), got learning_rate='0.1' (str).",
        ),
        (
            _two_groups,
            {"learning_rate": True},
            TypeError,
            "set_hyperparams: `learning_rate` must be a real number, got learning_rate=True "
            "(bool).",
        ),
        (
            _two_groups,
            {"learning_rate": np.ones(2)},
            TypeError,
            "set_hyperparams: the new 'learning_rate' at group 'a' "
            "(PartitionState.inner_states['a']MaskedState.inner_state) has shape (2,), but the "
            "injected value has shape (); give a value of that shape (a number for a scalar).",
        ),
    ],
    ids=[
        "nothing",
        "no injection",
        "unknown label",
        "too many values",
        "values for groups",
        "missing name",
        "string",
        "bool",
        "shape",
    ],
)
def test_set_hyperparams_refuses_with_the_fix(state, kwargs, error, message):
    with raises_exactly(error, message):
        set_hyperparams(state(), **kwargs)


def test_a_hyperparameter_injected_as_a_schedule_is_refused_not_silently_overwritten():
    tx = optax.inject_hyperparams(optax.sgd)(
        learning_rate=optax.linear_schedule(0.1, 0.01, 10), momentum=0.9
    )
    opt_state = tx.init({"w": jnp.ones(2)})
    (found,) = find_injected_hyperparams(opt_state)
    assert found.scheduled == {"learning_rate"}
    # A number injected beside the schedule is still set.
    assert float(set_hyperparams(opt_state, momentum=0.5).hyperparams["momentum"]) == 0.5
    with raises_exactly(
        ValueError,
        "set_hyperparams: 'learning_rate' at the root of the optimizer state is injected as a "
        "schedule: optax recomputes it inside every update, so a value set here would be "
        "overwritten and never used. Inject a number instead, e.g. "
        "optax.inject_hyperparams(optax.sgd)(learning_rate=0.0), and set it before each update.",
    ):
        set_hyperparams(opt_state, learning_rate=0.5)


# -- values the optimizer would not apply as given --


def _sgd_state(**hyperparams):
    return optax.inject_hyperparams(optax.sgd)(**hyperparams).init({"w": jnp.ones(2)})


def test_an_integer_hyperparameter_is_refused_not_truncated():
    opt_state = _sgd_state(learning_rate=0, momentum=0.9)  # an int32 learning rate
    with pytest.raises(
        ValueError,
        match=r"^set_hyperparams: 'learning_rate' at the root of the optimizer state is int32: "
        r"an integer hyperparameter truncates",
    ) as raised:
        set_hyperparams(opt_state, learning_rate=0.05)
    assert "learning_rate=0.0" in str(raised.value)
    with pytest.raises(ValueError, match=r"^set_hyperparams: 'momentum' .* is int32"):
        set_hyperparams(_sgd_state(learning_rate=0.1, momentum=1), momentum=0.9)
    # Inside jax.jit too: the dtype is known when the step is traced.
    with pytest.raises(ValueError, match=r"^set_hyperparams: 'learning_rate' .* is int32"):
        jax.jit(lambda state, lr: set_hyperparams(state, learning_rate=lr))(opt_state, 0.05)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -0.1])
def test_a_non_finite_or_negative_value_is_refused(value):
    with pytest.raises(
        ValueError, match=r"^set_hyperparams: learning_rate=.* is not a finite number >= 0 "
    ) as raised:
        set_hyperparams(_sgd_state(learning_rate=0.0), learning_rate=value)
    assert "float32" in str(raised.value)


@pytest.mark.parametrize(
    ("dtype", "value", "becomes"),
    [(jnp.float32, 1e300, "inf"), (jnp.float16, 1e-9, "0"), (jnp.bfloat16, 1e39, "inf")],
)
def test_a_value_the_dtype_turns_into_zero_or_infinity_is_refused(dtype, value, becomes):
    opt_state = _sgd_state(learning_rate=dtype(0.0))
    with pytest.raises(ValueError, match=rf"^set_hyperparams: learning_rate=.* becomes {becomes}"):
        set_hyperparams(opt_state, learning_rate=value)
    held = set_hyperparams(opt_state, learning_rate=1e-4).hyperparams["learning_rate"]
    assert held.dtype == dtype
    assert float(held) == float(np.asarray(1e-4, dtype))  # rounded, as applied


def test_every_injected_state_of_a_chained_group_is_written():
    inject = optax.inject_hyperparams
    tx = optax.multi_transform(
        {
            "a": optax.chain(inject(optax.adam)(learning_rate=0.0), inject(optax.sgd)(0.0)),
            "b": inject(optax.sgd)(learning_rate=0.0),
        },
        {"x": "a", "y": "b"},
    )
    opt_state = tx.init({"x": jnp.ones(1), "y": jnp.ones(1)})
    new = set_hyperparams(opt_state, learning_rate=[0.1, 0.2], groups=["a", "b"])
    written = [(s.label, float(s.values["learning_rate"])) for s in find_injected_hyperparams(new)]
    assert written == [("a", np.float32(0.1)), ("a", np.float32(0.1)), ("b", np.float32(0.2))]


def test_a_group_of_an_optimizer_and_injected_weight_decay_takes_the_learning_rate():
    inject = optax.inject_hyperparams
    group = optax.chain(
        inject(optax.adam)(learning_rate=0.0), inject(optax.add_decayed_weights)(1e-4)
    )
    tx = optax.multi_transform({"a": group}, {"x": "a"})
    opt_state = tx.init({"x": jnp.ones(1)})
    new = set_hyperparams(opt_state, learning_rate=0.1, momentum=0.8, groups=["a"])
    adam, decay = find_injected_hyperparams(new)
    assert float(adam.values["learning_rate"]) == np.float32(0.1)
    assert float(adam.values["b1"]) == np.float32(0.8)
    assert float(decay.values["weight_decay"]) == np.float32(1e-4)
    # Missing in every state of the group: still an error.
    with pytest.raises(ValueError, match=r"^set_hyperparams: the optimizer state does not"):
        set_hyperparams(opt_state, decay=0.5, groups=["a"])


def test_accumulation_counters_find_multisteps_at_the_root_and_nested():
    inner = optax.inject_hyperparams(optax.sgd)(learning_rate=0.0)
    root = optax.MultiSteps(inner, every_k_schedule=2)
    nested = optax.chain(optax.clip_by_global_norm(1.0), root.gradient_transformation())
    ((where_root, _),) = accumulation_counters(_opt_state(root))
    ((where_nested, count),) = accumulation_counters(_opt_state(nested))
    assert where_root == "the root of the optimizer state"
    assert where_nested == "[1]"
    assert int(count.get_value()) == 0
    assert accumulation_counters(_opt_state(inner)) == []
