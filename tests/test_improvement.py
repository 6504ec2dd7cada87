"""The one improvement rule (flax_cyclic/_improvement.py) that EarlyStopping, ReduceLROnPlateau
and the Checkpointer's best-k share: the mode from the name, min_delta, non-finite values."""

from __future__ import annotations

import math
import re

import pytest

from flax_cyclic._improvement import (
    CHANGE_WORDS,
    infer_mode,
    is_improvement,
    rank,
    resolve_mode,
)


@pytest.mark.parametrize(
    ("metric", "mode"),
    [
        ("eval/loss", "min"),
        ("train/loss", "min"),
        ("eval/nll_loss", "min"),
        ("eval/top1_error", "min"),
        ("eval/error_rate", "min"),
        ("eval/accuracy", "max"),
        ("eval/top1_accuracy", "max"),
        ("eval/acc", "max"),
        ("eval/val_acc", "max"),
        ("eval/auc", "max"),
        ("eval/macro-f1", "max"),
        ("eval/precision", "max"),
        ("eval/Recall", "max"),
        ("loss", "min"),
    ],
)
def test_the_mode_comes_from_the_last_component_of_the_name(metric, mode):
    assert infer_mode("X", "mode", metric) == mode
    assert resolve_mode("X", "mode", "auto", metric) == mode


@pytest.mark.parametrize("metric", ["eval/perplexity", "eval/loss_acc", "accuracy/total", "eval/"])
def test_a_name_of_neither_or_both_directions_asks_for_the_mode(metric):
    with pytest.raises(ValueError, match=r"^Checkpointer: `best_mode`='auto' cannot tell") as error:
        infer_mode("Checkpointer", "best_mode", metric)
    assert repr(metric) in str(error.value)
    assert "pass best_mode='min' or best_mode='max'" in str(error.value)


# The rule over a table of names: a mode, or the error that gives both readings of the name.
NAMES = [
    ("loss", "min"),
    ("eval/loss", "min"),
    ("accuracy", "max"),
    ("val_acc", "max"),
    ("top1_accuracy", "max"),
    ("error_rate", "min"),
    ("f1", "max"),
    ("eval/macro-f1", "max"),
    ("train/nll_loss", "min"),
    # A max word and a min word.
    ("eval/loss_acc", ("'loss' reads as 'min'", "'acc' as 'max'")),
    ("eval/accuracy_error", ("'error' reads as 'min'", "'accuracy' as 'max'")),
    # A word of a change or a negation, in the last component or anywhere in the name.
    ("eval/acc_drop", ("'acc' reads as 'max'", "'drop' may reverse it to 'min'")),
    ("eval/loss_reduction", ("'loss' reads as 'min'", "'reduction' may reverse it to 'max'")),
    ("eval/accuracy_gain", ("'accuracy' reads as 'max'", "'gain' may reverse it to 'min'")),
    ("eval/loss-decrease", ("'loss' reads as 'min'", "'decrease' may reverse it to 'max'")),
    ("eval/error_increase", ("'error' reads as 'min'", "'increase' may reverse it to 'max'")),
    ("eval/f1_improvement", ("'f1' reads as 'max'", "'improvement' may reverse it to 'min'")),
    ("eval/loss_delta", ("'loss' reads as 'min'", "'delta' may reverse it to 'max'")),
    ("eval/auc_diff", ("'auc' reads as 'max'", "'diff' may reverse it to 'min'")),
    ("eval/recall_change", ("'recall' reads as 'max'", "'change' may reverse it to 'min'")),
    ("eval/neg_loss", ("'loss' reads as 'min'", "'neg' may reverse it to 'max'")),
    ("delta/loss", ("'loss' reads as 'min'", "'delta' may reverse it to 'max'")),
]


@pytest.mark.parametrize(("metric", "expected"), NAMES)
def test_the_mode_of_a_table_of_names(metric, expected):
    if isinstance(expected, str):
        assert infer_mode("EarlyStopping", "mode", metric) == expected
        return
    start = f"EarlyStopping: `mode`='auto' cannot tell from the name {metric!r} whether it should"
    with pytest.raises(ValueError, match="^" + re.escape(start)) as error:
        infer_mode("EarlyStopping", "mode", metric)
    message = str(error.value)
    for reading in expected:  # both readings of the name
        assert reading in message
    assert message.endswith("pass mode='min' or mode='max'.")


def test_every_change_word_asks_for_the_mode():
    for word in CHANGE_WORDS:
        with pytest.raises(ValueError, match=f"{word!r} may reverse it to 'min'"):
            infer_mode("X", "mode", f"eval/accuracy_{word}")


def test_an_explicit_mode_is_kept_and_an_unknown_one_refused():
    assert resolve_mode("X", "mode", "max", "eval/loss") == "max"
    with pytest.raises(ValueError, match=r"^X: `mode` must be one of 'auto', 'min', 'max'"):
        resolve_mode("X", "mode", "lowest", "eval/loss")


@pytest.mark.parametrize(
    ("value", "best", "mode", "delta", "relative", "expected"),
    [
        (0.9, None, "min", 0.0, False, True),  # the first finite value always improves
        (0.9, 1.0, "min", 0.0, False, True),
        (1.0, 1.0, "min", 0.0, False, False),  # a tie is not an improvement
        (0.95, 1.0, "min", 0.05, False, False),  # not by more than min_delta
        (0.94, 1.0, "min", 0.05, False, True),
        (1.06, 1.0, "max", 0.05, False, True),
        (1.05, 1.0, "max", 0.05, False, False),
        (0.89, 1.0, "min", 0.1, True, True),  # PyTorch's rel: < best * (1 - delta)
        (0.9, 1.0, "min", 0.1, True, False),
        (1.11, 1.0, "max", 0.1, True, True),  # > best * (1 + delta)
        (-0.95, -1.0, "min", 0.1, True, True),  # PyTorch's rel with a negative best
    ],
)
def test_improvement_by_more_than_delta(value, best, mode, delta, relative, expected):
    assert is_improvement(value, best, mode, delta=delta, relative=relative) is expected


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("mode", ["min", "max"])
def test_a_non_finite_value_never_improves(value, mode):
    assert not is_improvement(value, None, mode)
    assert not is_improvement(value, 1.0, mode)


@pytest.mark.parametrize("mode", ["min", "max"])
def test_non_finite_values_rank_below_every_finite_one(mode):
    values = [0.3, math.nan, 0.1, math.inf, -math.inf, 0.2]
    ranked = sorted(values, key=lambda value: rank(value, mode))
    finite = [0.3, 0.2, 0.1] if mode == "min" else [0.1, 0.2, 0.3]
    assert ranked[-3:] == finite  # best last
    assert all(not math.isfinite(value) for value in ranked[:3])
