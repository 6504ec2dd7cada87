"""The learning-rate range test (Smith, 2017, Section 3.3): pick ``base_lr`` and ``max_lr``.

[`lr_find`][flax_cyclic.lr_find] trains for a short while with a learning rate ramped up from
tiny to huge, records the loss of every step, and stops once the loss diverges. The loss-vs-LR
curve shows where training starts to make progress and where it breaks down;
[`LRFinderResult`][flax_cyclic.LRFinderResult] reads suggestions off it. The model and the
optimizer are put back exactly as they were.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import jax
import numpy as np
from flax import nnx

from flax_cyclic import _checks, _figures
from flax_cyclic._hyperparams import accumulation_state
from flax_cyclic._policies import RampPolicy
from flax_cyclic.callbacks.base import CallbackList, check_optimizer
from flax_cyclic.callbacks.lr import LRSchedulerCallback
from flax_cyclic.schedulers import LRScheduler
from flax_cyclic.steps import classification_train_step

__all__ = ["LRFinderResult", "lr_find"]

RAMP_MODES = ("exponential", "linear")


_LR_HINT = "Learning rates are finite numbers > 0, e.g. 1e-7 and 10."
_END = object()  # the end of the batches


class RangeTestLR(LRScheduler):
    """The ramp of the range test as a scheduler, so that the LR callback can drive it.

    Args:
        start_lr: The learning rate at step 0.
        end_lr: The learning rate at step ``num_steps - 1`` (and after).
        num_steps: Length of the ramp.
        mode: ``'exponential'`` or ``'linear'``.
    """

    _policy: RampPolicy

    def __init__(self, start_lr: float, end_lr: float, num_steps: int, mode: str) -> None:
        self._start_lr, self._end_lr = start_lr, end_lr
        super().__init__(RampPolicy(num_steps, mode), [(start_lr, end_lr)])

    @property
    def base_lrs(self) -> tuple[float, ...]:
        """The starting learning rate."""
        return (self._start_lr,)

    @property
    def preview_steps(self) -> int:
        """The whole ramp."""
        return self._policy.num_steps

    def _config(self) -> dict[str, Any]:
        return {"start_lr": self._start_lr, "end_lr": self._end_lr, **self._policy.config()}


@dataclasses.dataclass(frozen=True)
class LRFinderResult:
    """What [`lr_find`][flax_cyclic.lr_find] measured, and the learning rates it suggests.

    The suggestions read the smoothed loss up to its minimum (past it, training diverges),
    leaving out the first tenth of the points (at most 10), where the average of a few losses
    is still noisy:

    - ``steepest``: where the smoothed loss falls fastest per unit of log-LR, a good constant
      learning rate;
    - ``valley``: the middle of the longest stretch over which the smoothed loss keeps falling
      (fastai's "valley" rule), robust to a noisy start;
    - ``minimum / 10``: a tenth of the learning rate at the lowest smoothed loss, the classic
      conservative pick.

    Attributes:
        lrs: The learning rate of each step run.
        losses: The loss of each step, as the train step returned it.
        smoothed_losses: The debiased exponential moving average of ``losses``.
        stop_reason: ``'completed'`` (all steps ran), ``'diverged'`` (the smoothed loss rose
            above ``diverge_threshold`` times its minimum), ``'non-finite loss'`` or
            ``'data exhausted'``.
        smoothing: The smoothing factor used (0: none).
        diverge_threshold: The divergence factor used.
    """

    lrs: tuple[float, ...]
    losses: tuple[float, ...]
    smoothed_losses: tuple[float, ...]
    stop_reason: str
    smoothing: float
    diverge_threshold: float

    @property
    def _descent(self) -> range:
        """The indices the suggestions read: after the noisy start, up to the lowest loss."""
        skip = min(10, len(self.lrs) // 10)
        lowest = skip + int(np.argmin(self.smoothed_losses[skip:]))
        return range(skip, lowest + 1)

    @property
    def minimum(self) -> float:
        """The learning rate at the lowest smoothed loss."""
        return self.lrs[self._descent[-1]]

    @property
    def steepest(self) -> float | None:
        """Where the smoothed loss falls fastest in log-LR; ``None`` if it never fell."""
        window = self._descent
        if len(window) < 2:
            return None
        lrs = np.log(np.asarray(self.lrs))[window.start : window.stop]
        slopes = np.gradient(np.asarray(self.smoothed_losses[window.start : window.stop]), lrs)
        return self.lrs[window.start + int(np.argmin(slopes))]

    @property
    def valley(self) -> float | None:
        """The middle of the longest run of falling smoothed loss; ``None`` if it never fell."""
        window = self._descent
        smoothed = self.smoothed_losses
        best_start, best_length, start = window.start, 0, window.start
        for i in window[1:]:
            if smoothed[i] >= smoothed[i - 1]:
                start = i
            elif i - start > best_length:
                best_start, best_length = start, i - start
        if best_length == 0:
            return None
        return self.lrs[best_start + (best_length + 1) // 2]

    @property
    def suggestions(self) -> dict[str, float | None]:
        """``{'steepest': ..., 'valley': ..., 'minimum/10': ...}``."""
        return {
            "steepest": self.steepest,
            "valley": self.valley,
            "minimum/10": self.minimum / 10,
        }

    @property
    def recommended(self) -> tuple[float, float]:
        """``(base_lr, max_lr)`` for [`CyclicLR`][flax_cyclic.CyclicLR].

        ``max_lr`` is the valley: well into the range where the loss falls, below the
        minimum, where training gets unstable. ``base_lr`` is a quarter of it, Smith's rule of
        thumb (a third to a quarter of ``max_lr``).

        Raises:
            ValueError: If the loss never fell, so there is nothing to recommend.
        """
        max_lr = self.valley
        if max_lr is None:
            raise ValueError(
                f"LRFinderResult: the smoothed loss never fell (stop_reason="
                f"{self.stop_reason!r}, {len(self.lrs)} steps from lr={self.lrs[0]:g}), so "
                "there is no range to recommend. Start lower (start_lr), run more steps, or "
                "check the model and the data."
            )
        return max_lr / 4, max_lr

    def plot(
        self, path: str | os.PathLike | None = None, *, title: str | None = None
    ) -> np.ndarray:
        """Plots the loss against the learning rate (log scale) with the suggestions marked.

        Args:
            path: If given, the figure is also saved there as a PNG.
            title: The figure's title.

        Returns:
            The picture as an RGB ``uint8`` array of shape ``(height, width, 3)``.

        Raises:
            ImportError: If matplotlib is not installed.
        """
        canvas = _figures.figure("LRFinderResult.plot")
        axes = canvas.add_subplot()
        axes.plot(self.lrs, self.losses, color="0.75", linewidth=1, label="loss")
        axes.plot(self.lrs, self.smoothed_losses, color="C0", linewidth=1.8, label="smoothed")
        markers = {**self.suggestions, "minimum": self.minimum}
        for (name, lr), color in zip(markers.items(), ("C1", "C2", "C3", "C4"), strict=True):
            if lr is not None:
                axes.axvline(
                    lr, color=color, linestyle="--", linewidth=1, label=f"{name}: {lr:.3g}"
                )
        axes.set_xscale("log")
        axes.set_xlabel("learning rate")
        axes.set_ylabel("loss")
        # Past the minimum the loss explodes; show the range up to twice the early loss.
        smoothed = np.asarray(self.smoothed_losses)
        low = min(float(np.min(self.losses)), float(smoothed.min()))
        high = max(2 * float(np.max(smoothed[: max(1, len(smoothed) // 2)])), low + 1e-12)
        axes.set_ylim(low - 0.05 * (high - low), high)
        axes.set_title(title or f"LR range test ({self.stop_reason}, {len(self.lrs)} steps)")
        axes.grid(alpha=0.3, which="both")
        axes.legend(loc="upper left", fontsize="small")
        return _figures.render(canvas, path)


def lr_find(
    model: nnx.Module,
    optimizer: nnx.Optimizer,
    train_data: Iterable[Any],
    *,
    train_step: Callable[[nnx.Module, nnx.Optimizer, Any], Any] | None = None,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_steps: int = 100,
    mode: str = "exponential",
    smoothing: float = 0.98,
    diverge_threshold: float = 4.0,
    learning_rate: str = "learning_rate",
) -> LRFinderResult:
    r"""Runs the LR range test: trains with a rising learning rate and records the loss.

    Step ``i`` (from 0) trains with ``start_lr * (end_lr / start_lr) ** (i / (num_steps - 1))``
    (``mode='exponential'``) or ``start_lr + (end_lr - start_lr) * i / (num_steps - 1)``
    (``'linear'``), written into the optimizer's injected ``learning_rate`` (every group gets
    the same value) by an [`LRSchedulerCallback`][flax_cyclic.LRSchedulerCallback]. The loss
    ``loss_i`` of step ``i`` is smoothed with a debiased exponential moving average (``beta`` is
    ``smoothing``, ``a_{-1} = 0``): ``a_i = beta * a_{i-1} + (1 - beta) * loss_i`` and
    ``s_i = a_i / (1 - beta**(i + 1))``. The test stops early once ``s_i`` exceeds
    ``diverge_threshold`` times its minimum so far, or a loss is not finite.

    Whatever happens, the model and the optimizer are restored to their state before the
    test (parameters, optimizer state and step count, RNG counters, injected
    hyperparameters).

    Args:
        model: The NNX model.
        optimizer: Its ``nnx.Optimizer``; the transformation must be built with
            ``optax.inject_hyperparams`` (as for
            [`LRSchedulerCallback`][flax_cyclic.LRSchedulerCallback]).
        train_data: Batches; iterated again from the start if it runs out before
            ``num_steps`` (a one-shot iterator ends the test instead).
        train_step: ``train_step(model, optimizer, batch) -> metrics``, a mapping with
            ``'loss'`` or the loss itself; compiled with ``nnx.jit``. Defaults to
            ``flax_cyclic.trainer.classification_train_step``.
        start_lr: The first learning rate; > 0 and below ``end_lr``.
        end_lr: The last learning rate.
        num_steps: The number of steps of the ramp; at least 2.
        mode: ``'exponential'`` (default) or ``'linear'``.
        smoothing: The moving average's ``beta``, in [0, 1); 0 turns smoothing off.
        diverge_threshold: Stop once the smoothed loss exceeds this multiple of its minimum;
            > 1.
        learning_rate: The name of the injected learning rate.

    Returns:
        An [`LRFinderResult`][flax_cyclic.LRFinderResult] with the learning rates, losses and
            suggestions.

    Raises:
        TypeError: If ``optimizer`` is not an ``nnx.Optimizer``, or the train step returns no
            loss.
        ValueError: For invalid arguments, an optimizer without an injected learning rate,
            or a loss that is not finite at the first step.

    Examples:
        >>> import jax.numpy as jnp, optax
        >>> from flax import nnx
        >>> from flax_cyclic import lr_find
        >>> model = nnx.Linear(4, 3, rngs=nnx.Rngs(0))
        >>> optimizer = nnx.Optimizer(
        ...     model, optax.inject_hyperparams(optax.sgd)(learning_rate=0.0), wrt=nnx.Param)
        >>> batches = [(jnp.ones((8, 4)) * i, jnp.arange(8) % 3) for i in range(4)]
        >>> result = lr_find(model, optimizer, batches, start_lr=1e-4, end_lr=10.0, num_steps=30)
        >>> len(result.lrs) <= 30, result.lrs[0]
        (True, 0.0001)
        >>> int(optimizer.step.get_value())  # untouched
        0
    """
    owner = "lr_find"
    start_lr, end_lr, num_steps, mode, smoothing, diverge_threshold = _checked_arguments(
        start_lr, end_lr, num_steps, mode, smoothing, diverge_threshold
    )
    check_optimizer(owner, optimizer)
    if accumulation_state(optimizer.opt_state) is not None:
        raise ValueError(
            f"{owner}: the optimizer accumulates gradients with optax.MultiSteps; run the range "
            "test on the optimizer without it (the test needs one update per batch)."
        )
    if train_step is None:
        train_step = classification_train_step
    step_fn = nnx.jit(train_step)

    saved = _snapshot(model, optimizer)
    callback = LRSchedulerCallback(
        RangeTestLR(start_lr, end_lr, num_steps, mode), learning_rate=learning_rate, momentum=None
    )
    loop = CallbackList([callback], model=model, optimizer=optimizer)
    try:
        try:
            loop.on_train_begin()
        except ValueError as error:
            raise ValueError(f"{owner}: {error}") from error
        lrs, losses, smoothed, stop_reason = _sweep(
            loop, callback, step_fn, _batches(train_data), num_steps, smoothing, diverge_threshold
        )
    finally:
        _restore(model, optimizer, saved)
    if not lrs:
        raise ValueError(f"{owner}: `train_data` yielded no batches; pass the training batches.")
    return LRFinderResult(
        lrs=tuple(lrs),
        losses=tuple(losses),
        smoothed_losses=tuple(smoothed),
        stop_reason=stop_reason,
        smoothing=smoothing,
        diverge_threshold=diverge_threshold,
    )


def _checked_arguments(
    start_lr: Any,
    end_lr: Any,
    num_steps: Any,
    mode: Any,
    smoothing: Any,
    diverge_threshold: Any,
) -> tuple[float, float, int, str, float, float]:
    """``lr_find``'s numeric arguments, checked."""
    owner = "lr_find"
    start_lr = _checks.real(owner, "start_lr", start_lr, positive=True, hint=_LR_HINT)
    end_lr = _checks.real(owner, "end_lr", end_lr, positive=True, hint=_LR_HINT)
    if start_lr >= end_lr:
        raise ValueError(
            f"{owner}: `start_lr` must be below `end_lr`, got start_lr={start_lr!r} and "
            f"end_lr={end_lr!r}. The test ramps the learning rate up, e.g. from 1e-7 to 10."
        )
    num_steps = _checks.integer(
        owner,
        "num_steps",
        num_steps,
        minimum=2,
        hint="The ramp needs at least 2 steps; 100 is typical.",
    )
    mode = _checks.choice(owner, "mode", mode, RAMP_MODES)
    smoothing = _checks.real(
        owner, "smoothing", smoothing, hint="Use a factor in [0, 1), e.g. 0.98; 0 turns it off."
    )
    if smoothing >= 1:
        raise ValueError(
            f"{owner}: `smoothing` must be in [0, 1), got smoothing={smoothing!r}; "
            "e.g. 0.98, or 0 for none."
        )
    diverge_threshold = _checks.real(
        owner, "diverge_threshold", diverge_threshold, hint="Use a factor > 1, e.g. 4."
    )
    if diverge_threshold <= 1:
        raise ValueError(
            f"{owner}: `diverge_threshold` must be > 1, got diverge_threshold="
            f"{diverge_threshold!r}: the test stops once the smoothed loss exceeds this "
            "multiple of its minimum, e.g. 4."
        )
    return start_lr, end_lr, num_steps, mode, smoothing, diverge_threshold


def _sweep(
    loop: CallbackList,
    callback: LRSchedulerCallback,
    step_fn: Callable[..., Any],
    batches: Iterator[Any],
    num_steps: int,
    smoothing: float,
    diverge_threshold: float,
) -> tuple[list[float], list[float], list[float], str]:
    """Trains one batch per learning rate of the ramp; returns the curve and why it stopped."""
    lrs: list[float] = []
    losses: list[float] = []
    smoothed: list[float] = []
    average, best = 0.0, math.inf
    for i in range(num_steps):
        batch = next(batches, _END)
        if batch is _END:
            return lrs, losses, smoothed, "data exhausted"
        lr = callback.scheduler.get_last_lr()[0]
        loss = _loss_of(step_fn(loop.model, loop.optimizer, batch))
        if not math.isfinite(loss):
            if i == 0:
                raise ValueError(
                    f"lr_find: the loss of the first step (lr={lr:g}) is {loss}: the model, "
                    "the data or the train step is broken, or start_lr is far too large."
                )
            return lrs, losses, smoothed, "non-finite loss"
        average = smoothing * average + (1 - smoothing) * loss
        value = average / (1 - smoothing ** (i + 1))
        lrs.append(lr)
        losses.append(loss)
        smoothed.append(value)
        best = min(best, value)
        if value > diverge_threshold * best:
            return lrs, losses, smoothed, "diverged"
        loop.on_step_end({})
    return lrs, losses, smoothed, "completed"


def _batches(train_data: Iterable[Any]) -> Iterator[Any]:
    """The batches, from the start again whenever a re-iterable source runs out."""
    first = iter(train_data)
    if first is train_data:  # a one-shot iterator
        return first
    return itertools.chain(first, _repeat(train_data))


def _repeat(train_data: Iterable[Any]) -> Iterator[Any]:
    while True:
        empty = True
        for batch in train_data:
            empty = False
            yield batch
        if empty:
            return


def _loss_of(metrics: Any) -> float:
    """The loss in a train step's output, as a Python float (one device read)."""
    loss = metrics.get("loss") if isinstance(metrics, Mapping) else metrics
    if loss is None or np.ndim(loss) != 0:
        described = (
            f"a mapping with keys {sorted(metrics)}"
            if isinstance(metrics, Mapping)
            else f"{type(metrics).__name__} {metrics!r}"[:200]
        )
        raise TypeError(
            f"lr_find: the train step must return the loss, as a scalar or in a mapping under "
            f"'loss'; it returned {described}."
        )
    return float(jax.device_get(loss))


def _snapshot(model: nnx.Module, optimizer: nnx.Optimizer) -> tuple[Any, Any]:
    """Copies of the model's and the optimizer's state (copies: a step may donate buffers)."""
    return tuple(
        jax.tree.map(lambda leaf: leaf.copy() if hasattr(leaf, "copy") else leaf, nnx.state(obj))
        for obj in (model, optimizer)
    )


def _restore(model: nnx.Module, optimizer: nnx.Optimizer, saved: tuple[Any, Any]) -> None:
    nnx.update(model, saved[0])
    nnx.update(optimizer, saved[1])
