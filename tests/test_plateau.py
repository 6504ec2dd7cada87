"""ReduceLROnPlateau (flax_cyclic/plateau.py): the rules by hand, the checks, the state dict, and
the absence of a pure schedule. PyTorch's numbers: test_family_torch_oracle.py."""

from __future__ import annotations

import json
import math

import jax.numpy as jnp
import numpy as np
import pytest
from helpers import raises_exactly

from flax_cyclic import CyclicLR, LRScheduler, ReduceLROnPlateau

NO_SCHEDULE = (
    "there is no schedule of the step: the learning rate depends on the metrics passed to "
    "step(metric), not on the step count, so it cannot be an optax schedule. Inject the "
    "learning rate with optax.inject_hyperparams and write get_last_lr() into the optimizer "
    "after each step(metric), e.g. with LRSchedulerCallback(scheduler, monitor='eval/loss')."
)


def lrs_after(scheduler: ReduceLROnPlateau, values) -> list[float]:
    """Group 0's learning rate after each step(metric)."""
    out = []
    for value in values:
        scheduler.step(value)
        out.append(scheduler.get_last_lr()[0])
    return out


def test_defaults_and_the_start():
    scheduler = ReduceLROnPlateau(0.1)
    assert (scheduler.mode, scheduler.factor, scheduler.patience) == ("auto", 0.1, 10)
    assert (scheduler.threshold, scheduler.threshold_mode) == (1e-4, "rel")
    assert (scheduler.cooldown, scheduler.min_lrs, scheduler.eps) == (0, (0.0,), 1e-8)
    assert scheduler.get_last_lr() == scheduler.get_lr() == [0.1]
    assert scheduler.get_last_momentum() is None
    assert not scheduler.cycle_momentum
    assert scheduler.best is None  # no metric yet: PyTorch's best is +inf ('min') here
    assert (scheduler.num_bad_epochs, scheduler.cooldown_counter, scheduler.last_epoch) == (0, 0, 0)
    assert scheduler.requires_metric is True
    assert scheduler.preview_steps == 0  # nothing to plan: the LR follows the metrics
    assert isinstance(scheduler, LRScheduler)


def test_requires_metric_is_false_for_the_step_schedulers():
    assert CyclicLR(0.1, 0.5).requires_metric is False
    with pytest.raises(AttributeError):
        ReduceLROnPlateau(0.1).requires_metric = False  # type: ignore[misc]


def test_patience_then_reduction_by_hand():
    # patience=2: the third bad evaluation in a row reduces (num_bad_epochs > patience).
    scheduler = ReduceLROnPlateau(1.0, "min", factor=0.5, patience=2)
    assert lrs_after(scheduler, [1.0, 1.0, 1.0, 1.0, 0.5, 0.6, 0.6, 0.6]) == [
        *[1.0, 1.0, 1.0, 0.5],  # 1.0 improves on +inf, then three ties are bad
        *[0.5, 0.5, 0.5, 0.25],  # 0.5 improves; three worse values
    ]
    assert (scheduler.best, scheduler.num_bad_epochs, scheduler.last_epoch) == (0.5, 0, 8)


@pytest.mark.parametrize(
    ("mode", "threshold_mode", "threshold", "best", "improves", "does_not"),
    [
        ("min", "rel", 0.1, 1.0, 0.89, 0.9),  # < best * (1 - threshold)
        ("min", "abs", 0.1, 1.0, 0.89, 0.9),  # < best - threshold
        ("max", "rel", 0.1, 1.0, 1.11, 1.1),  # > best * (1 + threshold)
        ("max", "abs", 0.1, 1.0, 1.11, 1.1),  # > best + threshold
        # PyTorch's rule with a negative best: best * (1 - threshold) = -0.9 is above best, so a
        # slightly worse value counts as an improvement.
        ("min", "rel", 0.1, -1.0, -0.95, -0.9),
        ("max", "rel", 0.1, -1.0, -1.05, -1.1),
    ],
)
def test_the_four_improvement_rules(mode, threshold_mode, threshold, best, improves, does_not):
    config = dict(mode=mode, threshold_mode=threshold_mode, threshold=threshold, patience=5)
    for value, counted_bad in ((improves, 0), (does_not, 1)):
        scheduler = ReduceLROnPlateau(0.1, **config)
        scheduler.step(best)
        scheduler.step(value)
        assert scheduler.num_bad_epochs == counted_bad, value
        assert scheduler.best == (value if counted_bad == 0 else best)


def test_cooldown_ignores_bad_evaluations():
    scheduler = ReduceLROnPlateau(1.0, "min", factor=0.5, patience=0, cooldown=2)
    seen = []
    for value in [1.0, 2.0, 2.0, 2.0, 2.0]:
        scheduler.step(value)
        seen.append((scheduler.get_last_lr()[0], scheduler.cooldown_counter, scheduler.in_cooldown))
    assert seen == [
        (1.0, 0, False),
        (0.5, 2, True),  # patience 0: the first bad evaluation reduces; cooldown starts
        (0.5, 1, True),  # bad, not counted
        (0.5, 0, False),  # bad, not counted; the cooldown ends
        (0.25, 2, True),  # counted again, and reduced
    ]


def test_min_lr_per_group_and_eps():
    scheduler = ReduceLROnPlateau(
        [1.0, 0.1, 1e-8], "min", factor=0.1, patience=0, min_lr=[0.05, 0.0, 0]
    )
    lrs = []
    for value in [1.0, 1.0, 1.0, 1.0]:
        scheduler.step(value)
        lrs.append(scheduler.get_last_lr())
    assert lrs[0] == [1.0, 0.1, 1e-8]
    assert lrs[1] == [0.1, pytest.approx(0.01), 1e-8]  # 1e-8 - 1e-9 <= eps: skipped
    assert lrs[2] == [0.05, pytest.approx(0.001), 1e-8]  # group 0 floors at its min_lr
    assert lrs[3][0] == 0.05


def test_factor_zero_drops_to_min_lr():
    scheduler = ReduceLROnPlateau(0.1, "min", factor=0.0, patience=0, min_lr=0.001)
    assert lrs_after(scheduler, [1.0, 1.0]) == [0.1, 0.001]


def test_numpy_and_jax_scalars_are_metrics():
    scheduler = ReduceLROnPlateau(0.1, "min", patience=0)
    for value in (np.float32(1.0), jnp.asarray(2.0), np.int64(3), jnp.asarray(4, jnp.int32)):
        scheduler.step(value)
    assert scheduler.best == 1.0
    assert scheduler.last_epoch == 4


@pytest.mark.parametrize(
    ("metric", "error", "message"),
    [
        (
            None,
            TypeError,
            "ReduceLROnPlateau.step: `metric` is missing: pass the monitored value of this "
            "evaluation, e.g. scheduler.step(val_loss). The learning rate follows that metric, "
            "not the step count.",
        ),
        (
            "0.5",
            TypeError,
            "ReduceLROnPlateau.step: `metric` must be a real number, got metric='0.5' (str). "
            "Pass the monitored value, e.g. a float or a 0-d array.",
        ),
        (
            True,
            TypeError,
            "ReduceLROnPlateau.step: `metric` must be a real number, got metric=True (bool). "
            "Pass the monitored value, e.g. a float or a 0-d array.",
        ),
        (
            np.zeros(2),
            TypeError,
            "ReduceLROnPlateau.step: `metric` must be a real number, got "
            "metric=array([0., 0.]) (ndarray). Pass the monitored value, e.g. a float or a 0-d "
            "array.",
        ),
        (
            math.nan,
            ValueError,
            "ReduceLROnPlateau.step: `metric` must be finite, got metric=nan. A non-finite "
            "metric is a diverged run, not a plateau: stop the run (e.g. with TerminateOnNaN) "
            "instead of lowering the learning rate.",
        ),
        (
            jnp.asarray(-jnp.inf),
            ValueError,
            "ReduceLROnPlateau.step: `metric` must be finite, got metric=-inf. A non-finite "
            "metric is a diverged run, not a plateau: stop the run (e.g. with TerminateOnNaN) "
            "instead of lowering the learning rate.",
        ),
    ],
)
def test_step_refuses_a_missing_or_non_finite_metric(metric, error, message):
    scheduler = ReduceLROnPlateau(0.1, "min", patience=0)
    scheduler.step(1.0)
    with raises_exactly(error, message):
        scheduler.step(metric)
    assert (scheduler.last_epoch, scheduler.num_bad_epochs, scheduler.best) == (1, 0, 1.0)


def test_step_without_an_argument_is_refused():
    with raises_exactly(TypeError, "ReduceLROnPlateau.step: `metric` is missing: pass the "
                        "monitored value of this evaluation, e.g. scheduler.step(val_loss). The "
                        "learning rate follows that metric, not the step count."):  # fmt: skip
        ReduceLROnPlateau(0.1, "min").step()


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            dict(mode="mean"),
            ValueError,
            "ReduceLROnPlateau: `mode` must be one of 'auto', 'min', 'max', got mode='mean' (str).",
        ),
        (
            dict(threshold_mode="relative"),
            ValueError,
            "ReduceLROnPlateau: `threshold_mode` must be one of 'rel', 'abs', got "
            "threshold_mode='relative' (str).",
        ),
        (
            dict(factor=1.0),
            ValueError,
            "ReduceLROnPlateau: `factor` must be in [0, 1), got factor=1.0. Each reduction "
            "multiplies the learning rate by factor, e.g. 0.1 or 0.5.",
        ),
        (
            dict(factor=-0.5),
            ValueError,
            "ReduceLROnPlateau: `factor` must be in [0, 1), got factor=-0.5. Each reduction "
            "multiplies the learning rate by factor, e.g. 0.1 or 0.5.",
        ),
        (
            dict(factor="0.1"),
            TypeError,
            "ReduceLROnPlateau: `factor` must be a real number, got factor='0.1' (str). Each "
            "reduction multiplies the learning rate by factor, e.g. 0.1 or 0.5.",
        ),
        (
            dict(patience=-1),
            ValueError,
            "ReduceLROnPlateau: `patience` must be an integer >= 0, got patience=-1 (int). It "
            "counts the evaluations without improvement tolerated before a reduction, e.g. 10 "
            "(0: reduce after the first bad one).",
        ),
        (
            dict(patience=2.0),
            TypeError,
            "ReduceLROnPlateau: `patience` must be an integer, got patience=2.0 (float). It "
            "counts the evaluations without improvement tolerated before a reduction, e.g. 10 "
            "(0: reduce after the first bad one).",
        ),
        (
            dict(threshold=1.0),
            ValueError,
            "ReduceLROnPlateau: `threshold` must be in [0, 1), got threshold=1.0. With "
            "threshold_mode='rel' it is the fraction of best an improvement must beat best by, "
            "e.g. 1e-4; use threshold_mode='abs' for an amount.",
        ),
        (
            dict(threshold=-0.1, threshold_mode="abs"),
            ValueError,
            "ReduceLROnPlateau: `threshold` must be a non-negative finite number, got "
            "threshold=-0.1 (float). With threshold_mode='abs' it is the amount an improvement "
            "must beat best by.",
        ),
        (
            dict(cooldown=-2),
            ValueError,
            "ReduceLROnPlateau: `cooldown` must be an integer >= 0, got cooldown=-2 (int). It "
            "counts the evaluations after a reduction in which bad ones are not counted, e.g. "
            "0 (none) or 2.",
        ),
        (
            dict(min_lr=[0.0, 0.1]),
            ValueError,
            "ReduceLROnPlateau: per-group lists must have the same length, but base_lr has 3, "
            "min_lr has 2 values. Give one value per parameter group, or a single number to use "
            "for every group.",
        ),
        (
            dict(eps=math.inf),
            ValueError,
            "ReduceLROnPlateau: `eps` must be a non-negative finite number, got eps=inf "
            "(float). A reduction smaller than eps is skipped, e.g. 1e-8.",
        ),
        (
            dict(last_epoch=-1),
            ValueError,
            "ReduceLROnPlateau: `last_epoch` must be an integer >= 0, got last_epoch=-1 (int). "
            "Steps count from 0; a scheduler built with last_epoch=N stands at step N.",
        ),
    ],
)
def test_bad_arguments_are_refused_with_the_fix(kwargs, error, message):
    with raises_exactly(error, message):
        ReduceLROnPlateau([0.1, 0.2, 0.3], **kwargs)


def test_threshold_may_exceed_1_in_abs_mode():
    scheduler = ReduceLROnPlateau(0.1, "min", threshold=2.0, threshold_mode="abs", patience=0)
    assert lrs_after(scheduler, [10.0, 8.5, 7.9]) == [0.1, pytest.approx(0.01), pytest.approx(0.01)]
    assert scheduler.best == 7.9


@pytest.mark.parametrize("method", ["as_schedule", "as_momentum_schedule", "__call__"])
def test_there_is_no_pure_schedule(method):
    scheduler = ReduceLROnPlateau(0.1)
    with raises_exactly(TypeError, f"ReduceLROnPlateau.{method}: {NO_SCHEDULE}"):
        if method == "__call__":
            scheduler(3)
        else:
            getattr(scheduler, method)(0)


def test_last_epoch_counts_step_calls_and_assigning_it_keeps_the_lrs():
    scheduler = ReduceLROnPlateau(1.0, "min", patience=0, last_epoch=5)
    lrs_after(scheduler, [1.0, 2.0])
    assert (scheduler.last_epoch, scheduler.get_last_lr()) == (7, [0.1])
    scheduler.last_epoch = 20  # relabels the count, as in PyTorch; the state stays
    assert (scheduler.last_epoch, scheduler.get_last_lr(), scheduler.best) == (20, [0.1], 1.0)


# -- state dict -----------------------------------------------------------------------------------


CONFIG = dict(
    base_lr=[0.1, 0.2], factor=0.5, patience=1, cooldown=1, min_lr=[0.01, 0.0], mode="max"
)
METRICS = [0.5, 0.6, 0.55, 0.55, 0.55, 0.7, 0.6, 0.6, 0.6, 0.6, 0.9, 0.8]


@pytest.mark.parametrize("at", [0, 1, 3, 4, 7, len(METRICS)])
def test_state_round_trips_through_strict_json(at):
    scheduler = ReduceLROnPlateau(**CONFIG)
    lrs_after(scheduler, METRICS[:at])
    state = scheduler.state_dict()
    text = json.dumps(state, allow_nan=False)  # no inf: best is None before the first metric
    assert state["format"] == "flax_cyclic.ReduceLROnPlateau"
    assert set(state) == {
        *("format", "version", "last_epoch", "config"),
        *("best", "num_bad_epochs", "cooldown_counter", "lrs"),
    }
    restored = ReduceLROnPlateau(**CONFIG)
    restored.load_state_dict(json.loads(text))
    assert restored.get_last_lr() == scheduler.get_last_lr()
    assert restored.state_dict() == state
    assert lrs_after(restored, METRICS[at:]) == lrs_after(scheduler, METRICS[at:])


def test_state_holds_the_counters():
    scheduler = ReduceLROnPlateau(**CONFIG)
    assert scheduler.state_dict()["best"] is None
    lrs_after(scheduler, METRICS[:5])  # 0.5, 0.6 better; 0.55, 0.55: reduce; cooldown
    state = scheduler.state_dict()
    assert (state["best"], state["num_bad_epochs"], state["cooldown_counter"]) == (0.6, 0, 0)
    assert state["lrs"] == [0.05, 0.1]
    assert state["last_epoch"] == 5
    assert state["config"] == {
        "base_lrs": [0.1, 0.2],
        "mode": "max",
        "factor": 0.5,
        "patience": 1,
        "threshold": 1e-4,
        "threshold_mode": "rel",
        "cooldown": 1,
        "min_lrs": [0.01, 0.0],
        "eps": 1e-8,
    }


def _saved(**changes):
    scheduler = ReduceLROnPlateau(**CONFIG)
    lrs_after(scheduler, METRICS[:6])
    state = json.loads(json.dumps(scheduler.state_dict()))
    state.update(changes)
    return state


OWNER = "ReduceLROnPlateau.load_state_dict"
HINT = "Restore a state made by state_dict(), unedited."


@pytest.mark.parametrize(
    ("state", "error", "message"),
    [
        (
            {k: v for k, v in _saved().items() if k != "lrs"},
            ValueError,
            f"{OWNER}: `state` is not a ReduceLROnPlateau state dict: missing keys ['lrs'], "
            "unexpected keys [].",
        ),
        (
            _saved(best=math.inf),
            TypeError,
            f"{OWNER}: `best` must be a finite number or None (no metric yet), got best=inf.",
        ),
        (
            _saved(best="0.7"),
            TypeError,
            f"{OWNER}: `best` must be a finite number or None (no metric yet), got best='0.7'.",
        ),
        (
            _saved(num_bad_epochs=-1),
            ValueError,
            f"{OWNER}: `num_bad_epochs` must be an integer >= 0, got num_bad_epochs=-1 (int). "
            f"{HINT}",
        ),
        (
            _saved(cooldown_counter=1.0),
            TypeError,
            f"{OWNER}: `cooldown_counter` must be an integer, got cooldown_counter=1.0 (float). "
            f"{HINT}",
        ),
        (
            _saved(lrs=[0.1]),
            ValueError,
            f"{OWNER}: `lrs` must be a list of 2 learning rate(s), one per parameter group, got "
            f"lrs=[0.1]. {HINT}",
        ),
        (
            _saved(lrs=[0.1, -0.2]),
            ValueError,
            f"{OWNER}: `lrs[1]` must be a non-negative finite number, got lrs[1]=-0.2 (float). "
            f"{HINT}",
        ),
    ],
)
def test_load_refuses_malformed_states_and_changes_nothing(state, error, message):
    scheduler = ReduceLROnPlateau(**CONFIG)
    before = scheduler.state_dict()
    with raises_exactly(error, message):
        scheduler.load_state_dict(state)
    assert scheduler.state_dict() == before


def test_load_with_another_configuration():
    saved = _saved()
    other = ReduceLROnPlateau(**{**CONFIG, "patience": 3})
    with pytest.raises(ValueError, match=r"different configuration \(patience: saved 1, now 3\)"):
        other.load_state_dict(saved)
    assert other.last_epoch == 0
    other.load_state_dict(saved, strict=False)  # the counters and lrs; its own patience
    assert (other.last_epoch, other.get_last_lr(), other.patience) == (6, saved["lrs"], 3)
    assert other.best == saved["best"]


def test_repr_names_the_configuration():
    text = repr(ReduceLROnPlateau(0.1, "min", patience=3))
    assert text.startswith("ReduceLROnPlateau(base_lrs=[0.1], mode='min', factor=0.1, patience=3")
    assert text.endswith("last_epoch=0)")


# -- mode='auto': the one improvement rule, resolved from the monitored metric's name --


def test_auto_mode_on_an_accuracy_reduces_when_it_stops_rising():
    # The old default, mode='min', halved the rate each time the accuracy rose.
    scheduler = ReduceLROnPlateau(1.0, factor=0.5, patience=0)
    scheduler.resolve_mode("eval/top1_accuracy")
    assert scheduler.mode == "max"
    assert lrs_after(scheduler, [0.5, 0.6, 0.7, 0.65]) == [1.0, 1.0, 1.0, 0.5]
    assert scheduler.best == 0.7


def test_auto_mode_on_a_loss_is_min():
    scheduler = ReduceLROnPlateau(1.0, factor=0.5, patience=0)
    scheduler.resolve_mode("train/loss")
    assert scheduler.mode == "min"
    assert lrs_after(scheduler, [1.0, 0.9, 0.95]) == [1.0, 1.0, 0.5]


def test_stepping_an_unresolved_auto_mode_is_refused_and_changes_nothing():
    scheduler = ReduceLROnPlateau(0.1)
    with pytest.raises(ValueError, match=r"^ReduceLROnPlateau.step: mode='auto' is not resolved"):
        scheduler.step(0.5)
    assert (scheduler.last_epoch, scheduler.best) == (0, None)


def test_a_name_that_says_no_direction_asks_for_the_mode():
    with pytest.raises(ValueError, match=r"^ReduceLROnPlateau.resolve_mode: `mode`='auto' cannot"):
        ReduceLROnPlateau(0.1).resolve_mode("eval/perplexity")


def test_a_name_of_a_change_asks_for_the_mode_and_stays_unresolved():
    scheduler = ReduceLROnPlateau(0.1)
    with pytest.raises(
        ValueError,
        match=r"^ReduceLROnPlateau.resolve_mode: `mode`='auto' cannot tell from the name "
        r"'eval/loss_reduction'.*'reduction' may reverse it to 'max'",
    ):
        scheduler.resolve_mode("eval/loss_reduction")
    assert scheduler.mode == "auto"
    explicit = ReduceLROnPlateau(0.1, "max")
    explicit.resolve_mode("eval/loss_reduction")  # an explicit mode is not inferred
    assert explicit.mode == "max"


def test_an_explicit_mode_is_kept_whatever_the_name():
    scheduler = ReduceLROnPlateau(0.1, "min")
    scheduler.resolve_mode("eval/accuracy")
    assert scheduler.mode == "min"


def test_a_resolved_mode_is_saved_and_an_unresolved_one_takes_it_on_load():
    scheduler = ReduceLROnPlateau(0.1, patience=0)
    scheduler.resolve_mode("eval/accuracy")
    scheduler.step(0.5)
    state = json.loads(json.dumps(scheduler.state_dict(), allow_nan=False))
    assert state["config"]["mode"] == "max"
    restored = ReduceLROnPlateau(0.1, patience=0)
    restored.load_state_dict(state)
    assert (restored.mode, restored.best) == ("max", 0.5)
    restored.resolve_mode("eval/accuracy")  # the same direction: fine
    with pytest.raises(ValueError, match=r"^ReduceLROnPlateau.resolve_mode: the mode was resolved"):
        restored.resolve_mode("eval/loss")
    other = ReduceLROnPlateau(0.1, patience=0)
    other.resolve_mode("eval/loss")
    with pytest.raises(ValueError, match=r"mode: saved 'max', now 'min'"):
        other.load_state_dict(state)
    assert other.mode == "min"


def test_a_failed_load_leaves_an_auto_mode_unresolved():
    scheduler = ReduceLROnPlateau(0.1, "max", patience=0)
    state = scheduler.state_dict()
    other = ReduceLROnPlateau(0.1, patience=5)
    with pytest.raises(ValueError, match=r"patience: saved 0, now 5"):
        other.load_state_dict(state)
    assert other.mode == "auto"
