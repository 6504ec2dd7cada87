"""The learning-rate range test (Smith, 2017, Section 3.3): pick ``base_lr`` and ``max_lr``.

[`lr_find`][flax_cyclic.lr_find] trains for a short while with a learning rate ramped up from
tiny to huge, records the loss of every step, and stops once the loss diverges. The loss-vs-LR
curve shows where training starts to make progress and where it breaks down;
[`LRFinderResult`][flax_cyclic.LRFinderResult] reads suggestions off it, recommends a
``(base_lr, max_lr)`` pair, and saves itself as JSON. The model and the optimizer are put back
exactly as they were.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import math
import os
import pathlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx

from flax_cyclic import _checks, _figures, _modes
from flax_cyclic._hyperparams import nested_accumulation_state
from flax_cyclic._policies import RampPolicy
from flax_cyclic.callbacks.base import CallbackList, check_optimizer
from flax_cyclic.callbacks.lr import LRSchedulerCallback
from flax_cyclic.schedulers import LRScheduler
from flax_cyclic.steps import classification_train_step

__all__ = ["LRFinderResult", "lr_find"]

RAMP_MODES = ("exponential", "linear")
STOP_REASONS = ("completed", "diverged", "non-finite loss", "data exhausted")

#: ``smoothing=None`` gives the moving average a time constant of this fraction of the sweep.
SWEEP_FRACTION = 20
#: The largest default smoothing factor (long sweeps).
MAX_DEFAULT_SMOOTHING = 0.98

_FORMAT = "flax_cyclic.LRFinderResult"
_FIELDS = ("lrs", "losses", "smoothed_losses", "stop_reason", "smoothing", "diverge_threshold")
_LR_HINT = "Learning rates are finite numbers > 0, e.g. 1e-7 and 10."
_END = object()  # the end of the batches


def _default_smoothing(num_steps: int) -> float:
    """``smoothing=None``: ``1 - 20 / num_steps`` clipped to ``[0, 0.98]``."""
    return min(MAX_DEFAULT_SMOOTHING, max(0.0, 1 - SWEEP_FRACTION / num_steps))


class _Average:
    """The causal debiased exponential moving average, one loss at a time."""

    def __init__(self, beta: float) -> None:
        self.beta, self._sum, self._count = beta, 0.0, 0

    def add(self, loss: float) -> float:
        """Takes ``loss_i``; returns ``s_i``."""
        self._sum = self.beta * self._sum + (1 - self.beta) * loss
        self._count += 1
        return self._sum / (1 - self.beta**self._count)


def _causal(values: Iterable[float], beta: float) -> np.ndarray:
    """The causal debiased moving average of ``values`` (the one the divergence rule reads)."""
    average = _Average(beta)
    return np.array([average.add(float(value)) for value in values], dtype=np.float64)


def _zero_phase(losses: Sequence[float], beta: float, diverge_threshold: float) -> np.ndarray:
    """The losses clipped at the divergence level, averaged forward, then backward."""
    level = diverge_threshold * np.minimum.accumulate(_causal(losses, beta))
    clipped = np.minimum(np.asarray(losses, dtype=np.float64), level)
    return _causal(_causal(clipped, beta)[::-1], beta)[::-1]


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

    Every suggestion reads ``smoothed_losses``, the zero-phase average of the loss (a valley
    stays where it is), from the end of the noisy start (the first tenth of the points, at
    most 10) up to its lowest point; past it, training is breaking down:

    - ``steepest``: where the smoothed loss falls fastest per unit of log-LR (fastai's "steep").
      A safe constant learning rate, well inside the stable range; slow for a cycle's top.
    - ``valley``: the middle of the longest stretch over which the smoothed loss keeps
      falling (after fastai's "valley"). A constant learning rate that trains fast; the least
      stable suggestion, since a bump on a long, nearly flat start cuts the stretch short.
    - ``minimum``: the learning rate at the lowest smoothed loss, where the loss stops
      falling: the top of a cycle (``max_lr``), too high for a constant learning rate.
    - ``minimum/10``: a tenth of it, the classic cautious constant learning rate (fastai's
      "minimum"); for a first try, or for an optimizer other than the one tested.

    ``recommended`` is ``(base_lr, max_lr)`` for [`CyclicLR`][flax_cyclic.CyclicLR]:
    ``max_lr = minimum`` (Smith, 2017, Section 3.3: where the loss stops falling) and
    ``base_lr = minimum / 10``, where the loss still falls steadily; ``onecycle_max_lr`` is
    the same ``max_lr``, for [`OneCycleLR`][flax_cyclic.OneCycleLR].

    Attributes:
        lrs: The learning rate of each step run.
        losses: The loss of each step, as the train step returned it.
        smoothed_losses: The zero-phase average of ``losses``: each loss clipped at the
            divergence level (``diverge_threshold`` times the lowest ``causal_losses`` so far),
            the debiased moving average run forward, then again backward over the result.
        stop_reason: ``'completed'`` (all steps ran), ``'diverged'`` (the causal average rose
            above ``diverge_threshold`` times its minimum), ``'non-finite loss'`` or
            ``'data exhausted'``.
        smoothing: The moving average's factor ``beta`` (0: none).
        diverge_threshold: The divergence factor used.

    Examples:
        >>> from flax_cyclic import LRFinderResult
        >>> result = LRFinderResult(
        ...     lrs=(0.01, 0.1, 1.0), losses=(2.0, 1.0, 3.0), smoothed_losses=(2.0, 1.0, 3.0),
        ...     stop_reason="completed", smoothing=0.0, diverge_threshold=4.0)
        >>> result.minimum, result.recommended, result.onecycle_max_lr
        (0.1, (0.01, 0.1), 0.1)
    """

    lrs: tuple[float, ...]
    losses: tuple[float, ...]
    smoothed_losses: tuple[float, ...]
    stop_reason: str
    smoothing: float
    diverge_threshold: float

    @property
    def causal_losses(self) -> tuple[float, ...]:
        """The causal debiased moving average of ``losses``, which the divergence rule reads.

        It lags the loss by about ``smoothing / (1 - smoothing)`` steps.
        """
        return tuple(float(value) for value in _causal(self.losses, self.smoothing))

    @property
    def _descent(self) -> range:
        """The indices the suggestions read: after the noisy start, up to the lowest loss."""
        skip = min(10, len(self.lrs) // 10)
        lowest = skip + int(np.argmin(self.smoothed_losses[skip:]))
        return range(skip, lowest + 1)

    @property
    def minimum(self) -> float:
        """The learning rate at the lowest smoothed loss (the edge of the stable range)."""
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
        """``{'steepest': ..., 'valley': ..., 'minimum': ..., 'minimum/10': ...}``."""
        return {
            "steepest": self.steepest,
            "valley": self.valley,
            "minimum": self.minimum,
            "minimum/10": self.minimum / 10,
        }

    @property
    def recommended(self) -> tuple[float, float]:
        """``(base_lr, max_lr)`` for [`CyclicLR`][flax_cyclic.CyclicLR]: ``(minimum/10, minimum)``.

        ``max_lr`` is the learning rate at the lowest smoothed loss, where the loss stops
        falling (Smith's upper bound); ``base_lr`` a tenth of it, where the loss still falls
        steadily (the classic one-order-of-magnitude-lower pick). A cycle spends most of its
        time between the two, and only briefly at the top.

        Raises:
            ValueError: If the loss never fell, so there is nothing to recommend.
        """
        max_lr = self.onecycle_max_lr
        return max_lr / 10, max_lr

    @property
    def onecycle_max_lr(self) -> float:
        """``max_lr`` for [`OneCycleLR`][flax_cyclic.OneCycleLR]: ``minimum``, as recommended.

        Raises:
            ValueError: If the loss never fell, so there is nothing to recommend.
        """
        if len(self._descent) < 2:
            raise ValueError(
                f"LRFinderResult: the smoothed loss never fell (stop_reason="
                f"{self.stop_reason!r}, {len(self.lrs)} steps from lr={self.lrs[0]:g}), so "
                "there is no range to recommend. Start lower (start_lr), run more steps, or "
                "check the model and the data."
            )
        return self.minimum

    def save(self, path: str | os.PathLike) -> None:
        """Writes the result to ``path`` as JSON, for [`load`][flax_cyclic.LRFinderResult.load].

        The file holds every field, and for a human reader the recommended pair,
        ``onecycle_max_lr`` and the suggestions (``null`` where there is none).

        Args:
            path: The file to write, e.g. ``workdir / 'lr_find.json'``.

        Examples:
            >>> import os, tempfile
            >>> from flax_cyclic import LRFinderResult
            >>> result = LRFinderResult(
            ...     lrs=(0.01, 0.1, 1.0), losses=(2.0, 1.0, 3.0), smoothed_losses=(2.0, 1.0, 3.0),
            ...     stop_reason="completed", smoothing=0.0, diverge_threshold=4.0)
            >>> with tempfile.TemporaryDirectory() as directory:
            ...     path = os.path.join(directory, "lr_find.json")
            ...     result.save(path)
            ...     loaded = LRFinderResult.load(path)
            >>> loaded == result, loaded.recommended
            (True, (0.01, 0.1))
        """
        try:
            base_lr, max_lr = self.recommended
            recommended: dict[str, float] | None = {"base_lr": base_lr, "max_lr": max_lr}
        except ValueError:
            recommended, max_lr = None, None
        document = {
            "format": _FORMAT,
            "recommended": recommended,
            "onecycle_max_lr": max_lr,
            "suggestions": self.suggestions,
            **{name: getattr(self, name) for name in _FIELDS},
        }
        # One line per entry: the summary reads at a glance, the curves stay one line each.
        lines = [f"  {json.dumps(key)}: {json.dumps(value)}" for key, value in document.items()]
        text = "{\n" + ",\n".join(lines) + "\n}\n"
        pathlib.Path(path).write_text(text, encoding="utf-8")

    @classmethod
    def load(cls, path: str | os.PathLike) -> LRFinderResult:
        """Reads a result that [`save`][flax_cyclic.LRFinderResult.save] wrote.

        Args:
            path: The JSON file.

        Returns:
            A result equal to the one saved.

        Raises:
            FileNotFoundError: If there is no file at ``path``.
            ValueError: If the file is not JSON written by ``save``.
        """
        text = pathlib.Path(path).read_text(encoding="utf-8")
        where = f"LRFinderResult.load: {os.fspath(path)!r}"
        fix = "pass a file written by LRFinderResult.save, e.g. lr_find.json."
        try:
            document = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{where} is not JSON ({error}); {fix}") from None
        if not isinstance(document, dict) or document.get("format") != _FORMAT:
            raise ValueError(f'{where} is not an LR range test (no "format": {_FORMAT!r}); {fix}')
        missing = [name for name in _FIELDS if name not in document]
        if missing:
            raise ValueError(f"{where} lacks {', '.join(missing)}; {fix}")
        try:
            return _result_of(document)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{where} is damaged: {error}; {fix}") from None

    def plot(
        self, path: str | os.PathLike | None = None, *, title: str | None = None
    ) -> np.ndarray:
        """Plots the loss against the learning rate (log scale), the suggestions and the pair.

        The raw and the smoothed loss are drawn, every suggestion as a dashed line, and the
        recommended ``(base_lr, max_lr)`` as a shaded band (unless the loss never fell).

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
        if len(self._descent) > 1:
            base_lr, max_lr = self.recommended
            label = f"recommended: {base_lr:.3g} to {max_lr:.3g}"
            axes.axvspan(base_lr, max_lr, color="C2", alpha=0.18, linewidth=0, label=label)
        colors = ("C1", "C3", "C4", "C5")
        for (name, lr), color in zip(self.suggestions.items(), colors, strict=True):
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


def _result_of(document: Mapping[str, Any]) -> LRFinderResult:
    """The result in a document that ``LRFinderResult.save`` wrote, checked."""
    curves = {}
    for name in ("lrs", "losses", "smoothed_losses"):
        values = document[name]
        if not isinstance(values, list) or not all(
            _checks.is_real_scalar(value) for value in values
        ):
            raise ValueError(f"{name} is not a list of numbers")
        curves[name] = tuple(float(value) for value in values)
    lengths = [len(values) for values in curves.values()]
    if min(lengths) == 0 or len(set(lengths)) > 1:
        raise ValueError(
            f"lrs, losses and smoothed_losses must be as long as each other and not empty, "
            f"got lengths {lengths}"
        )
    if document["stop_reason"] not in STOP_REASONS:
        raise ValueError(f"stop_reason={document['stop_reason']!r} is not one of {STOP_REASONS}")
    for name in ("smoothing", "diverge_threshold"):
        if not _checks.is_real_scalar(document[name]):
            raise ValueError(f"{name}={document[name]!r} is not a number")
    return LRFinderResult(
        lrs=curves["lrs"],
        losses=curves["losses"],
        smoothed_losses=curves["smoothed_losses"],
        stop_reason=document["stop_reason"],
        smoothing=float(document["smoothing"]),
        diverge_threshold=float(document["diverge_threshold"]),
    )


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
    smoothing: float | None = None,
    diverge_threshold: float = 4.0,
    learning_rate: str = "learning_rate",
    rngs: nnx.Rngs | None = None,
) -> LRFinderResult:
    r"""Runs the LR range test: trains with a rising learning rate and records the loss.

    Step ``i`` (from 0) trains with ``start_lr * (end_lr / start_lr) ** (i / (num_steps - 1))``
    (``mode='exponential'``) or ``start_lr + (end_lr - start_lr) * i / (num_steps - 1)``
    (``'linear'``), written into the optimizer's injected ``learning_rate`` (every group gets
    the same value) by an [`LRSchedulerCallback`][flax_cyclic.LRSchedulerCallback].

    The loss ``loss_i`` of step ``i`` goes into a causal debiased exponential moving average
    (``beta`` is ``smoothing``, ``a_{-1} = 0``): ``a_i = beta * a_{i-1} + (1 - beta) * loss_i``
    and ``s_i = a_i / (1 - beta**(i + 1))``. It lags the loss by about ``beta / (1 - beta)``
    steps; the default ``beta = 1 - 20 / num_steps`` (clipped to ``[0, 0.98]``) keeps the lag
    under a twentieth of the sweep. The test stops once ``s_i`` exceeds ``diverge_threshold``
    times its minimum so far (``'diverged'``), or a loss is not finite (``'non-finite loss'``).
    The curve the suggestions read, ``smoothed_losses``, is zero-phase instead: the same
    average run forward, then backward over the result, so that a valley stays where it is
    (each loss is clipped at ``diverge_threshold`` times the lowest ``s`` so far first, so that
    the explosion that ends the test does not spill back into the valley).

    The model trains in training mode (NNX's ``model.train()``: ``nnx.Dropout`` active,
    ``nnx.BatchNorm`` on batch statistics), as it will in the run the test prepares.
    Whatever happens, the model and the optimizer are restored to their state before the
    test (parameters, optimizer state and step count, RNG counters, injected
    hyperparameters, and the model's mode), and so are ``rngs``.

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
            ``None`` (the default): ``1 - 20 / num_steps`` clipped to ``[0, 0.98]``.
        diverge_threshold: Stop once the causal average exceeds this multiple of its
            minimum; > 1.
        learning_rate: The name of the injected learning rate.
        rngs: An ``nnx.Rngs`` for a model called as ``model(x, rngs=rngs)``, passed as
            ``train_step(model, optimizer, batch, rngs=rngs)`` (as the
            [`Trainer`][flax_cyclic.Trainer]'s ``rngs``).

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
        >>> result = lr_find(model, optimizer, batches, start_lr=1e-4, end_lr=10.0, num_steps=40)
        >>> len(result.lrs) <= 40, result.lrs[0], result.smoothing  # 1 - 20 / 40
        (True, 0.0001, 0.5)
        >>> int(optimizer.step.get_value())  # untouched
        0
    """
    owner = "lr_find"
    start_lr, end_lr, num_steps, mode, smoothing, diverge_threshold = _checked_arguments(
        start_lr, end_lr, num_steps, mode, smoothing, diverge_threshold
    )
    check_optimizer(owner, optimizer)
    if nested_accumulation_state(optimizer.opt_state) is not None:
        raise ValueError(
            f"{owner}: the optimizer accumulates gradients with optax.MultiSteps; run the range "
            "test on the optimizer without it (the test needs one update per batch)."
        )
    run_step = _compiled_step(train_step, model, rngs)
    objects = (model, optimizer) if rngs is None else (model, optimizer, rngs)
    saved = _snapshot(*objects)
    callback = LRSchedulerCallback(
        RangeTestLR(start_lr, end_lr, num_steps, mode), learning_rate=learning_rate, momentum=None
    )
    loop = CallbackList([callback], model=model, optimizer=optimizer)
    try:
        try:
            loop.on_train_begin()
        except ValueError as error:
            raise ValueError(f"{owner}: {error}") from error
        with _modes.mode(model, training=True):
            lrs, losses, stop_reason = _sweep(
                loop, callback, run_step, _batches(train_data), num_steps, smoothing,
                diverge_threshold,
            )  # fmt: skip
    finally:
        _restore(objects, saved)
    if not lrs:
        raise ValueError(f"{owner}: `train_data` yielded no batches; pass the training batches.")
    return LRFinderResult(
        lrs=tuple(lrs),
        losses=tuple(losses),
        smoothed_losses=tuple(float(v) for v in _zero_phase(losses, smoothing, diverge_threshold)),
        stop_reason=stop_reason,
        smoothing=smoothing,
        diverge_threshold=diverge_threshold,
    )


def _compiled_step(
    train_step: Callable[..., Any] | None, model: nnx.Module, rngs: Any
) -> Callable[..., Any]:
    """The train step (the default one if ``None``) under ``nnx.jit``, given ``rngs=`` if any."""
    owner = "lr_find"
    if train_step is None:
        train_step = classification_train_step
    if rngs is None:
        return nnx.jit(train_step)
    if not isinstance(rngs, nnx.Rngs):
        raise TypeError(f"{owner}: `rngs` must be an nnx.Rngs, got {type(rngs).__name__}.")
    _modes.check_takes_rngs(owner, train_step, "train_step")
    if train_step is classification_train_step:
        _modes.check_takes_rngs(owner, model, "the model (by the default step)")
    return functools.partial(nnx.jit(train_step), rngs=rngs)


def _checked_arguments(
    start_lr: Any,
    end_lr: Any,
    num_steps: Any,
    mode: Any,
    smoothing: Any,
    diverge_threshold: Any,
) -> tuple[float, float, int, str, float, float]:
    """``lr_find``'s numeric arguments, checked; ``smoothing=None`` resolved."""
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
    if smoothing is None:
        smoothing = _default_smoothing(num_steps)
    smoothing = _checks.real(
        owner,
        "smoothing",
        smoothing,
        hint="Use a factor in [0, 1), e.g. 0.9; 0 turns it off, None scales it to the sweep.",
    )
    if smoothing >= 1:
        raise ValueError(
            f"{owner}: `smoothing` must be in [0, 1), got smoothing={smoothing!r}; e.g. 0.9, "
            "0 for none, or None (the default) for 1 - 20 / num_steps."
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
) -> tuple[list[float], list[float], str]:
    """Trains one batch per learning rate of the ramp; returns the curve and why it stopped."""
    lrs: list[float] = []
    losses: list[float] = []
    average, best = _Average(smoothing), math.inf
    for i in range(num_steps):
        batch = next(batches, _END)
        if batch is _END:
            return lrs, losses, "data exhausted"
        lr = callback.applied_values["lr"][0]  # as the optimizer's dtype holds it
        try:
            loss = _loss_of(step_fn(loop.model, loop.optimizer, batch))
        except ValueError as error:
            clearer = _modes.needs_rngs("lr_find", error)
            if clearer is not None:
                raise clearer from error
            raise
        if not math.isfinite(loss):
            if i == 0:
                raise ValueError(
                    f"lr_find: the loss of the first step (lr={lr:g}) is {loss}: the model, "
                    "the data or the train step is broken, or start_lr is far too large."
                )
            return lrs, losses, "non-finite loss"
        lrs.append(lr)
        losses.append(loss)
        value = average.add(loss)
        best = min(best, value)
        if value > diverge_threshold * best:
            return lrs, losses, "diverged"
        loop.on_step_end({})
    return lrs, losses, "completed"


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


def _snapshot(*objects: Any) -> tuple[Any, ...]:
    """Copies of the objects' states (copies: a step may donate buffers)."""
    return tuple(
        jax.tree.map(lambda leaf: leaf.copy() if hasattr(leaf, "copy") else leaf, nnx.state(obj))
        for obj in objects
    )


def _restore(objects: tuple[Any, ...], saved: tuple[Any, ...]) -> None:
    for obj, state in zip(objects, saved, strict=True):
        nnx.update(obj, state)
