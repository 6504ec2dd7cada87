"""A scheduler driven by a metric: reduce the learning rate when it stops improving.

[`ReduceLROnPlateau`][flax_cyclic.ReduceLROnPlateau] is not a schedule of the step: its
``step(metric)`` takes the monitored value of each evaluation, and its learning rates are
state (saved with the counters in ``state_dict()``), not a formula of ``last_epoch``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NoReturn

import jax

from flax_cyclic import _checks, _improvement
from flax_cyclic._policies import LR_HINT, in_unit_interval
from flax_cyclic.schedulers import LRScheduler

__all__ = ["ReduceLROnPlateau"]

THRESHOLD_MODES = ("rel", "abs")


class ReduceLROnPlateau(LRScheduler):
    """Reduces the learning rate when a metric stops improving: PyTorch's ``ReduceLROnPlateau``.

    Call ``step(metric)`` after each evaluation with the monitored value (e.g. the validation
    loss). A value is an improvement if it beats the best so far by more than the threshold:

    ```text
    mode='min', threshold_mode='rel':  metric < best * (1 - threshold)
    mode='min', threshold_mode='abs':  metric < best - threshold
    mode='max', threshold_mode='rel':  metric > best * (1 + threshold)
    mode='max', threshold_mode='abs':  metric > best + threshold
    ```

    As in PyTorch, ``'rel'`` scales ``best`` itself: for a negative ``best`` the margin lies
    on the other side of it, and a slightly worse metric counts as an improvement (with
    ``mode='min'``, ``best=-1`` and ``threshold=0.1``, anything below -0.9). Use ``'abs'`` for
    a metric that can be negative.

    The first metric always improves on the start (``best`` starts at +inf for ``'min'``,
    -inf for ``'max'``). After more than ``patience`` evaluations in a row without an
    improvement, each group's learning rate becomes ``max(lr * factor, min_lr)``; a reduction
    by ``eps`` or less is skipped. Then ``cooldown`` evaluations pass in which bad evaluations
    are not counted. These are PyTorch's rules and numbers.

    ``step(metric)`` refuses a missing or non-finite metric: a NaN loss is a diverged run, not a
    plateau. ``last_epoch`` counts the ``step(metric)`` calls. ``requires_metric`` is True: the
    LR callback feeds the metric at each evaluation
    (``LRSchedulerCallback(..., monitor='eval/loss')``). There is no pure schedule of the step:
    [`as_schedule`][flax_cyclic.ReduceLROnPlateau.as_schedule] and calling the scheduler raise
    a ``TypeError``, so inject the learning rate with ``optax.inject_hyperparams`` and write
    ``get_last_lr()`` into the optimizer.

    Args:
        base_lr: The learning rate to start with; a number or a list per parameter group.
        mode: ``'min'`` (a lower metric is better, e.g. a loss), ``'max'`` (e.g. accuracy), or
            ``'auto'``: inferred from the monitored metric's name (loss / error -> ``'min'``;
            accuracy, acc, auc, f1, precision, recall -> ``'max'``) when
            ``LRSchedulerCallback(scheduler, monitor=...)`` calls
            [`resolve_mode`][flax_cyclic.ReduceLROnPlateau.resolve_mode]. Stepping it by hand
            needs ``'min'`` or ``'max'``.
        factor: Each reduction multiplies the learning rate by it; in [0, 1).
        patience: Evaluations without improvement tolerated before a reduction; an integer
            >= 0 (0: reduce after the first bad one).
        threshold: How much better than ``best`` a metric must be to count as an improvement:
            a fraction of ``best`` (``'rel'``, in [0, 1)) or an amount (``'abs'``, >= 0).
        threshold_mode: ``'rel'`` or ``'abs'``.
        cooldown: Evaluations after a reduction during which bad ones are not counted; an
            integer >= 0.
        min_lr: The lowest learning rate; a number or a list per group.
        eps: A reduction of the learning rate by ``eps`` or less is skipped; >= 0.
        last_epoch: The number of ``step(metric)`` calls to count from; an integer >= 0.

    Raises:
        TypeError: For an argument of the wrong type, naming the argument.
        ValueError: For an out-of-range argument (``factor >= 1``, a negative ``patience``,
            a relative ``threshold >= 1``, an unknown ``mode``, ...), naming the argument.

    Examples:
        >>> from flax_cyclic import ReduceLROnPlateau
        >>> scheduler = ReduceLROnPlateau(base_lr=1.0, mode="min", factor=0.5, patience=1)
        >>> lrs = []
        >>> for val_loss in [1.0, 0.9, 0.95, 0.97, 0.96, 0.5]:
        ...     scheduler.step(val_loss)
        ...     lrs.append(scheduler.get_last_lr()[0])
        >>> lrs
        [1.0, 1.0, 1.0, 0.5, 0.5, 0.5]
        >>> scheduler.best, scheduler.last_epoch
        (0.5, 6)
    """

    def __init__(
        self,
        base_lr: float | list[float],
        mode: str = "auto",
        factor: float = 0.1,
        patience: int = 10,
        threshold: float = 1e-4,
        threshold_mode: str = "rel",
        cooldown: int = 0,
        min_lr: float | list[float] = 0,
        eps: float = 1e-8,
        last_epoch: int = 0,
    ) -> None:
        owner = type(self).__name__
        groups = _checks.per_group(
            owner, {"base_lr": base_lr, "min_lr": min_lr}, {"base_lr": LR_HINT, "min_lr": LR_HINT}
        )
        self._base_lrs, self._min_lrs = groups["base_lr"], groups["min_lr"]
        self._mode = _checks.choice(owner, "mode", mode, _improvement.MODES)
        self._auto = self._mode == "auto"  # resolved from the monitor's name, once
        self._threshold_mode = _checks.choice(
            owner, "threshold_mode", threshold_mode, THRESHOLD_MODES
        )
        self._factor = in_unit_interval(
            owner,
            "factor",
            factor,
            "[0, 1)",
            hint="Each reduction multiplies the learning rate by factor, e.g. 0.1 or 0.5.",
        )
        self._patience = _count(
            owner,
            "patience",
            patience,
            "It counts the evaluations without improvement tolerated before a reduction, e.g. 10 "
            "(0: reduce after the first bad one).",
        )
        self._threshold = _check_threshold(owner, threshold, self._threshold_mode)
        self._cooldown = _count(
            owner,
            "cooldown",
            cooldown,
            "It counts the evaluations after a reduction in which bad ones are not counted, e.g. "
            "0 (none) or 2.",
        )
        self._eps = _checks.real(
            owner, "eps", eps, hint="A reduction smaller than eps is skipped, e.g. 1e-8."
        )
        self._lrs = list(self._base_lrs)
        self._best: float | None = None  # PyTorch's +-inf: any finite metric improves on it
        self._num_bad_epochs = 0
        self._cooldown_counter = 0
        self._start(len(self._base_lrs), (), None, last_epoch)

    # -- stepping ---------------------------------------------------------------------------

    @property
    def requires_metric(self) -> bool:
        """True: ``step()`` takes the monitored metric.

        The LR callback feeds it at each evaluation
        (``LRSchedulerCallback(..., monitor='eval/loss')``).
        """
        return True

    def resolve_mode(self, metric_name: str) -> None:
        """Infers ``mode='auto'`` from the monitored metric's name; checks nothing otherwise.

        ``LRSchedulerCallback(scheduler, monitor=...)`` calls it with its monitor. An explicit
        ``'min'`` or ``'max'`` stays as given.

        Args:
            metric_name: The metric as it is logged, e.g. ``'eval/loss'``.

        Raises:
            ValueError: If the name says neither direction (pass ``mode='min'`` or ``'max'``),
                or if the mode was inferred before from a name of the other direction.

        Examples:
            >>> scheduler = ReduceLROnPlateau(0.1)
            >>> scheduler.resolve_mode("eval/accuracy")
            >>> scheduler.mode
            'max'
        """
        owner = f"{type(self).__name__}.resolve_mode"
        if not self._auto:
            return
        mode = _improvement.infer_mode(owner, "mode", metric_name)
        if self._mode not in ("auto", mode):
            raise ValueError(
                f"{owner}: the mode was resolved to {self._mode!r} before (or restored so), but "
                f"{metric_name!r} means {mode!r}; drive one scheduler by one metric, or pass "
                "mode='min' or mode='max'."
            )
        self._mode = mode

    def step(self, metric: float | None = None) -> None:
        """Takes the monitored value of one evaluation; reduces the learning rate on a plateau.

        Args:
            metric: The monitored value (a Python or NumPy number, or a 0-d array), finite.

        Raises:
            TypeError: If ``metric`` is missing or not a real number.
            ValueError: If ``metric`` is NaN or infinite (a diverged run, not a plateau), or
                the mode is still ``'auto'``.
        """
        current = self._check_metric(metric)
        if self._mode == "auto":
            raise ValueError(
                f"{type(self).__name__}.step: mode='auto' is not resolved: the scheduler does not "
                "know which metric it is given. Pass mode='min' (e.g. a loss) or mode='max' (e.g. "
                "an accuracy), or drive it through LRSchedulerCallback(scheduler, "
                "monitor='eval/<name>'), which infers the mode from the name."
            )
        best, bad, cooldown = self._best, self._num_bad_epochs, self._cooldown_counter
        if _improvement.is_improvement(
            current,
            best,
            self._mode,
            delta=self._threshold,
            relative=self._threshold_mode == "rel",
        ):
            best, bad = current, 0
        else:
            bad += 1
        if cooldown > 0:
            cooldown -= 1
            bad = 0  # bad evaluations in a cooldown are not counted
        lrs = self._lrs
        if bad > self._patience:
            lrs = self._reduced(lrs)
            cooldown, bad = self._cooldown, 0
        self._lrs, self._best = lrs, best
        self._num_bad_epochs, self._cooldown_counter = bad, cooldown
        self._move_to(self._last_epoch + 1)

    def _check_metric(self, metric: Any) -> float:
        owner = f"{type(self).__name__}.step"
        if metric is None:
            raise TypeError(
                f"{owner}: `metric` is missing: pass the monitored value of this evaluation, "
                "e.g. scheduler.step(val_loss). The learning rate follows that metric, not the "
                "step count."
            )
        if not _checks.is_real_scalar(metric):
            raise TypeError(
                f"{owner}: `metric` must be a real number, got metric={metric!r} "
                f"({type(metric).__name__}). Pass the monitored value, e.g. a float or a 0-d "
                "array."
            )
        value = float(metric)
        if not math.isfinite(value):
            raise ValueError(
                f"{owner}: `metric` must be finite, got metric={value!r}. A non-finite metric "
                "is a diverged run, not a plateau: stop the run (e.g. with TerminateOnNaN) "
                "instead of lowering the learning rate."
            )
        return value

    def _reduced(self, lrs: list[float]) -> list[float]:
        """Each group's ``max(lr * factor, min_lr)``, unless that lowers it by ``eps`` or less."""
        reduced = []
        for old, floor in zip(lrs, self._min_lrs, strict=True):
            new = max(old * self._factor, floor)
            reduced.append(new if old - new > self._eps else old)
        return reduced

    def _values_at(self, step: int) -> tuple[list[float], list[float] | None]:
        """The current learning rates: state, whatever the step."""
        return list(self._lrs), None

    # -- no pure schedule -------------------------------------------------------------------

    def as_schedule(self, group: int = 0) -> NoReturn:
        """Raises a ``TypeError``: the learning rate is not a function of the step.

        Raises:
            TypeError: Always; the message says what to do instead.
        """
        raise self._no_schedule("as_schedule")

    def as_momentum_schedule(self, group: int = 0) -> NoReturn:
        """Raises a ``TypeError``: there is no schedule, and the momentum is not cycled.

        Raises:
            TypeError: Always.
        """
        raise self._no_schedule("as_momentum_schedule")

    def __call__(self, count: int | jax.Array) -> jax.Array:
        """Raises a ``TypeError``: the scheduler is not an ``optax.Schedule``."""
        raise self._no_schedule("__call__")

    def _no_schedule(self, method: str) -> TypeError:
        return TypeError(
            f"{type(self).__name__}.{method}: there is no schedule of the step: the learning "
            "rate depends on the metrics passed to step(metric), not on the step count, so it "
            "cannot be an optax schedule. Inject the learning rate with "
            "optax.inject_hyperparams and write get_last_lr() into the optimizer after each "
            "step(metric), e.g. with LRSchedulerCallback(scheduler, monitor='eval/loss')."
        )

    # -- configuration and counters (read-only) --------------------------------------------------

    @property
    def base_lrs(self) -> tuple[float, ...]:
        """The learning rate of each group before any reduction."""
        return self._base_lrs

    @property
    def min_lrs(self) -> tuple[float, ...]:
        """The lowest learning rate of each group."""
        return self._min_lrs

    @property
    def mode(self) -> str:
        """``'min'`` or ``'max'``; ``'auto'`` until ``resolve_mode`` or a restored state."""
        return self._mode

    @property
    def factor(self) -> float:
        """Each reduction multiplies the learning rate by it."""
        return self._factor

    @property
    def patience(self) -> int:
        """Evaluations without improvement tolerated before a reduction."""
        return self._patience

    @property
    def threshold(self) -> float:
        """The margin an improvement must beat ``best`` by."""
        return self._threshold

    @property
    def threshold_mode(self) -> str:
        """``'rel'`` (a fraction of ``best``) or ``'abs'`` (an amount)."""
        return self._threshold_mode

    @property
    def cooldown(self) -> int:
        """Evaluations after a reduction during which bad ones are not counted."""
        return self._cooldown

    @property
    def eps(self) -> float:
        """A reduction by ``eps`` or less is skipped."""
        return self._eps

    @property
    def best(self) -> float | None:
        """The best metric so far; ``None`` before the first ``step(metric)``."""
        return self._best

    @property
    def num_bad_epochs(self) -> int:
        """Evaluations in a row without improvement (outside a cooldown)."""
        return self._num_bad_epochs

    @property
    def cooldown_counter(self) -> int:
        """Evaluations of cooldown left."""
        return self._cooldown_counter

    @property
    def in_cooldown(self) -> bool:
        """Whether a cooldown is running."""
        return self._cooldown_counter > 0

    @property
    def preview_steps(self) -> int:
        """0: the learning rates follow the metrics, so there is no plan to draw."""
        return 0

    # -- state ------------------------------------------------------------------------------------

    def _config(self) -> dict[str, Any]:
        return {
            "base_lrs": list(self._base_lrs),
            "mode": self._mode,
            "factor": self._factor,
            "patience": self._patience,
            "threshold": self._threshold,
            "threshold_mode": self._threshold_mode,
            "cooldown": self._cooldown,
            "min_lrs": list(self._min_lrs),
            "eps": self._eps,
        }

    def load_state_dict(self, state: Mapping[str, Any], *, strict: bool = True) -> None:
        """Restores a saved state; an unresolved ``mode='auto'`` takes the saved mode.

        The saved mode is the one the run resolved from its monitor's name; a later
        [`resolve_mode`][flax_cyclic.ReduceLROnPlateau.resolve_mode] with a name of the other
        direction is refused. Otherwise as
        [`LRScheduler.load_state_dict`][flax_cyclic.LRScheduler.load_state_dict].
        """
        config = state.get("config") if isinstance(state, Mapping) else None
        saved = config.get("mode") if isinstance(config, Mapping) else None
        unresolved = self._mode == "auto" and saved in ("min", "max")
        if unresolved:
            self._mode = str(saved)
        try:
            super().load_state_dict(state, strict=strict)
        except Exception:
            if unresolved:
                self._mode = "auto"  # on an error, nothing changes
            raise

    _EXTRA_STATE_KEYS = ("best", "num_bad_epochs", "cooldown_counter", "lrs")

    def _extra_state(self) -> dict[str, Any]:
        # best is None before the first metric: +-inf is not JSON.
        return {
            "best": self.best,
            "num_bad_epochs": self._num_bad_epochs,
            "cooldown_counter": self._cooldown_counter,
            "lrs": list(self._lrs),
        }

    def _restore(self, state: Mapping[str, Any], last_epoch: int, *, strict: bool) -> None:
        owner = f"{type(self).__name__}.load_state_dict"
        best = state["best"]
        if best is not None and not (_checks.is_real_scalar(best) and math.isfinite(float(best))):
            raise TypeError(
                f"{owner}: `best` must be a finite number or None (no metric yet), got "
                f"best={best!r}."
            )
        hint = "Restore a state made by state_dict(), unedited."
        bad = _checks.integer(
            owner, "num_bad_epochs", state["num_bad_epochs"], minimum=0, maximum=None, hint=hint
        )
        cooldown = _checks.integer(
            owner, "cooldown_counter", state["cooldown_counter"], minimum=0, maximum=None, hint=hint
        )
        lrs = state["lrs"]
        if not isinstance(lrs, (list, tuple)) or len(lrs) != self.num_groups:
            raise ValueError(
                f"{owner}: `lrs` must be a list of {self.num_groups} learning rate(s), one per "
                f"parameter group, got lrs={lrs!r}. {hint}"
            )
        lrs = [_checks.real(owner, f"lrs[{i}]", lr, hint=hint) for i, lr in enumerate(lrs)]
        self._lrs, self._num_bad_epochs, self._cooldown_counter = lrs, bad, cooldown
        self._best = None if best is None else float(best)
        self._move_to(last_epoch)


def _count(owner: str, name: str, value: Any, hint: str) -> int:
    """A number of evaluations: an integer >= 0."""
    return _checks.integer(owner, name, value, minimum=0, maximum=None, hint=hint)


def _check_threshold(owner: str, threshold: Any, threshold_mode: str) -> float:
    """``threshold`` >= 0, and below 1 as a fraction of ``best`` (``'rel'``)."""
    if threshold_mode == "abs":
        return _checks.real(
            owner,
            "threshold",
            threshold,
            hint="With threshold_mode='abs' it is the amount an improvement must beat best by.",
        )
    return in_unit_interval(
        owner,
        "threshold",
        threshold,
        "[0, 1)",
        hint="With threshold_mode='rel' it is the fraction of best an improvement must beat "
        "best by, e.g. 1e-4; use threshold_mode='abs' for an amount.",
    )
