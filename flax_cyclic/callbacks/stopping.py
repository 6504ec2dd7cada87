"""Callbacks that stop training: at a non-finite loss, or when a metric stops improving."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from flax_cyclic import _checks, _improvement, _logging
from flax_cyclic._errors import NonFiniteError
from flax_cyclic.callbacks.base import Callback, Loop, Monitored

__all__ = ["EarlyStopping", "TerminateOnNaN"]

logger = _logging.logger


class TerminateOnNaN(Callback):
    """Stops training at the first train step whose metrics hold a NaN or an infinity.

    It raises a [`NonFiniteError`][flax_cyclic.NonFiniteError] from ``on_step_end``.

    Cost: it reads the step's metrics on the host after every step, a device synchronisation
    per step that keeps the host from queueing the next steps while the device works (on
    an accelerator this can cost a sizeable share of the throughput of a small model; on a
    CPU little). Without it, a [`Trainer`][flax_cyclic.Trainer] with a
    [`Checkpointer`][flax_cyclic.Checkpointer] still never saves a non-finite state: it
    stops at the next save, naming the first non-finite step.

    The error propagates out of the loop: ``on_exception`` runs, a save in flight completes,
    and the newest checkpoint stays the last good one.

    Args:
        monitor: The metric names to watch; ``None`` watches every metric of the step.

    Examples:
        >>> import numpy as np
        >>> from flax_cyclic import TerminateOnNaN
        >>> callback = TerminateOnNaN(monitor=["loss"])
        >>> callback.on_step_end(None, 7, {"loss": np.float32(np.nan)})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        flax_cyclic.NonFiniteError: TerminateOnNaN: train step 7 gave loss=nan (hooks count ...
    """

    def __init__(self, *, monitor: Sequence[str] | None = None) -> None:
        if isinstance(monitor, str) or (
            monitor is not None and not all(isinstance(name, str) for name in monitor)
        ):
            raise TypeError(
                f"TerminateOnNaN: `monitor` must be a list of metric names or None, got "
                f"monitor={monitor!r}; e.g. monitor=['loss']."
            )
        self.monitor = None if monitor is None else list(monitor)

    def on_step_end(self, loop: Loop, step: int, metrics: Mapping[str, Any]) -> None:
        """Reads the metrics (a device sync) and raises if one of them is not finite."""
        names = list(metrics) if self.monitor is None else self.monitor
        absent = [name for name in names if name not in metrics]
        if absent:
            raise KeyError(
                f"TerminateOnNaN: the train step returned no {absent} (it returned "
                f"{sorted(metrics)}); pass monitor= with names it returns."
            )
        values = jax.device_get({name: metrics[name] for name in names})
        bad = {name: value for name, value in values.items() if not np.all(np.isfinite(value))}
        if bad:
            shown = ", ".join(f"{name}={np.asarray(value).tolist()}" for name, value in bad.items())
            raise NonFiniteError(
                f"TerminateOnNaN: train step {step} gave {shown} (hooks count steps from 0). "
                "Training stopped at once; lower the learning rate (e.g. max_lr) or clip the "
                "gradients (optax.clip_by_global_norm)."
            )


_EARLY_STOPPING_KEYS = ("monitor", "mode", "best", "best_step", "wait", "stopped_step")


class EarlyStopping(Callback):
    """Stops training when a monitored metric has stopped improving.

    At each check it compares the metric with the best value so far: with ``mode='min'`` an
    improvement is a value below ``best - min_delta``, with ``'max'`` one above
    ``best + min_delta``; ``mode='auto'`` takes the direction from the metric's name (loss /
    error -> ``'min'``; accuracy, acc, auc, f1, precision, recall -> ``'max'``), the rule the
    plateau and the checkpointer's best-k share. After ``patience`` checks in a row without one,
    it sets
    ``loop.stop_training``: the [`Trainer`][flax_cyclic.Trainer] ends the run through its normal
    end (the final checkpoint, ``on_train_end``); a hand-written loop checks
    ``callbacks.stop_training``. A metric that is NaN or infinite stops the run at the check
    where it appears: it will not improve any more.

    When: ``monitor='eval/<name>'`` checks after each evaluation, ``'train/<name>'`` at each
    epoch end, on the epoch's train mean (a hand-written loop passes it:
    ``callbacks.on_epoch_end({'loss': mean_loss})``; an epoch end with train steps but no
    metrics is an error, as the check could never happen).

    Its counts are checkpointed (with the configuration they belong to) under the
    ``state_key`` ``'EarlyStopping[<monitor>]'``, so callbacks on different metrics do not
    collide: a resumed run continues counting the patience where it stopped.

    Args:
        monitor: The metric, as it is logged: ``'eval/loss'``, ``'eval/accuracy'``,
            ``'train/loss'``.
        mode: ``'min'`` (the metric should fall), ``'max'`` (it should rise) or ``'auto'``
            (from the metric's name; a name that says neither is an error).
        patience: Checks in a row without improvement after which training stops; 0 stops at
            the first one.
        min_delta: The least change that counts as an improvement (>= 0).
        restore_best: Keep a copy of the model's weights at the best check (on the device, the
            size of the model) and put it back into the model at the end of training. After a
            resume whose best check came before the resume, the copy is not in this process:
            the end of training then says which checkpoint step holds it.

    Attributes:
        best: The best value so far, or ``None`` before the first check.
        best_step: The train step of the best check (steps completed when it was made).
        wait: Checks since the best one.
        stopped_step: The train step at which it stopped the run, or ``None``.

    Raises:
        ValueError: For a ``monitor`` that is not ``'eval/<name>'`` or ``'train/<name>'``, an
            unknown ``mode`` (or ``'auto'`` with a name that says no direction) or a negative
            count.
        TypeError: For arguments of the wrong type.

    Examples:
        >>> from flax_cyclic import CallbackList, EarlyStopping
        >>> stopping = EarlyStopping("eval/loss", patience=2)
        >>> loop = CallbackList([stopping])
        >>> loop.on_train_begin()
        >>> for loss in [0.9, 0.7, 0.71, 0.72]:
        ...     loop.on_eval_end({"loss": loss})
        ...     print(loss, stopping.wait, loop.stop_training)
        0.9 0 False
        0.7 0 False
        0.71 1 False
        0.72 2 True
    """

    #: The layout of ``state_dict()``; a state without ``version`` (0.2 and before) is read too.
    STATE_VERSION = 1

    def __init__(
        self,
        monitor: str = "eval/loss",
        *,
        mode: str = "auto",
        patience: int = 3,
        min_delta: float = 0.0,
        restore_best: bool = False,
    ) -> None:
        owner = type(self).__name__
        self.monitor = Monitored.parse(owner, monitor)
        self.mode = _improvement.resolve_mode(owner, "mode", mode, str(self.monitor))
        self.patience = _checks.integer(
            owner, "patience", patience, minimum=0, maximum=None, hint="e.g. 3."
        )
        self.min_delta = _checks.real(owner, "min_delta", min_delta, hint="e.g. 0.0 or 1e-4.")
        self.restore_best = _checks.flag(owner, "restore_best", restore_best)
        self.best: float | None = None
        self.best_step: int | None = None
        self.wait = 0
        self.stopped_step: int | None = None
        self._best_weights: Any = None  # the model's state at best_step, in this process
        self._epoch_start = 0  # the loop's step when the epoch began
        self._ended = False  # on_train_end ran: an evaluation now is not a check
        self._said_after_end = False
        self._restored_step: int | None = None  # the step whose weights on_train_end put back

    @property
    def state_key(self) -> str:
        """``'EarlyStopping[<monitor>]'``: one per watched metric in a loop."""
        return f"{type(self).__name__}[{self.monitor}]"

    def on_train_begin(self, loop: Loop) -> None:
        """Notes the step the first epoch begins at."""
        self._epoch_start = getattr(loop, "step", 0)
        self._ended, self._restored_step, self._said_after_end = False, None, False

    def on_epoch_begin(self, loop: Loop, epoch: int) -> None:
        """Notes the step the epoch begins at."""
        self._epoch_start = getattr(loop, "step", 0)

    def on_eval_end(self, loop: Loop, metrics: Mapping[str, Any]) -> None:
        """Checks an ``eval/`` metric; not after the end of training.

        An evaluation after ``on_train_end`` (``Trainer.evaluate`` after ``fit``, a final
        test) decides nothing: there is no training left to stop, and its step is where
        training ended, whatever weights the model holds. It is said once, in the log.
        """
        if self.monitor.source != "eval":
            return
        if not self._ended:
            self._check(loop, metrics)
            return
        if self._said_after_end:
            return
        self._said_after_end = True
        weights = (
            ""
            if self._restored_step is None
            else f"; the model holds the weights of step {self._restored_step} (restore_best)"
        )
        logger.info(
            "EarlyStopping: an evaluation after the end of training (at step %d%s) is not a "
            "check: it neither stops nor changes the best step.",
            getattr(loop, "step", 0),
            weights,
        )

    def on_epoch_end(self, loop: Loop, epoch: int, metrics: Mapping[str, Any]) -> None:
        """Checks a ``train/`` metric: the epoch's mean (none for an epoch resumed at its end).

        Raises:
            ValueError: For a ``train/`` monitor, if train steps ran in the epoch but no metrics
                came with its end: the check would never happen.
        """
        step = getattr(loop, "step", 0)
        steps, self._epoch_start = step - self._epoch_start, step
        if self.monitor.source != "train":
            return
        if metrics:
            self._check(loop, metrics)
        elif steps > 0:
            raise ValueError(
                f"{type(self).__name__}: monitor={str(self.monitor)!r} is checked on the "
                f"epoch's train mean, but epoch {epoch} ended after {steps} train step(s) with "
                f"no metrics (reported: {sorted(metrics)}), so it would never act. Pass the "
                "epoch's means, e.g. callbacks.on_epoch_end({'loss': mean_loss}), or monitor an "
                "'eval/<name>' metric."
            )

    def _check(self, loop: Loop, metrics: Mapping[str, Any]) -> None:
        value = self.monitor.value(type(self).__name__, metrics)
        step = getattr(loop, "step", 0)
        if not math.isfinite(value):
            self._stop(loop, f"{self.monitor}={value} at step {step} is not finite")
            return
        if self._improves(value):
            self.best, self.best_step, self.wait = value, step, 0
            if self.restore_best and getattr(loop, "model", None) is not None:
                self._best_weights = jax.tree.map(jnp.copy, nnx.state(loop.model))
            return
        self.wait += 1
        if self.wait >= self.patience:
            self._stop(
                loop,
                f"{self.monitor} has not improved on {self.best:.6g} (step {self.best_step}) for "
                f"{self.wait} check(s) (patience={self.patience})",
            )

    def _improves(self, value: float) -> bool:
        return _improvement.is_improvement(value, self.best, self.mode, delta=self.min_delta)

    def _stop(self, loop: Loop, reason: str) -> None:
        self.stopped_step = getattr(loop, "step", 0)
        loop.stop_training = True
        logger.warning("EarlyStopping: %s; stopping at step %d.", reason, self.stopped_step)

    def on_train_end(self, loop: Loop) -> None:
        """With ``restore_best``, puts the best check's weights back into the model.

        After a resume whose best check came before it, the weights are not in this process:
        the warning says where they are, from the run's checkpointer when the loop has one
        (``loop.checkpointer``, as the [`Trainer`][flax_cyclic.Trainer]'s loop has).
        """
        self._ended = True
        if not self.restore_best or self.best_step is None:
            return
        if self._best_weights is None:
            logger.warning(
                "EarlyStopping(restore_best=True): the best check (%s=%.6g at step %d) came "
                "before this run resumed, so its weights are not in this process; the model "
                "keeps the last step's weights. %s",
                self.monitor,
                self.best,
                self.best_step,
                self._where_best_weights(getattr(loop, "checkpointer", None)),
            )
            return
        nnx.update(loop.model, self._best_weights)
        self._restored_step = self.best_step
        logger.info(
            "EarlyStopping: restored the weights of step %d (%s=%.6g).",
            self.best_step,
            self.monitor,
            self.best,
        )

    def _where_best_weights(self, checkpointer: Any) -> str:
        """How to get the best check's weights back: from the run's checkpointer, if known."""
        step = self.best_step
        restore = f"restore(model=..., optimizer=..., step={step})"
        if checkpointer is None:
            return (
                f"Restore them from your checkpointer's checkpoint of step {step}, if it keeps "
                f"one (all_steps() lists them): checkpointer.{restore}."
            )
        kept = checkpointer.all_steps()
        where = f"the run's checkpointer ({checkpointer.directory})"
        if step in kept:
            return (
                f"Restore them from the checkpoint of step {step} that {where} keeps: "
                f"checkpointer.{restore}."
            )
        rule = f"keeps the newest {checkpointer.max_to_keep}"
        if checkpointer.best_metric is not None:
            best = checkpointer.best_step()
            rule = f"keeps the best {checkpointer.max_to_keep} by {checkpointer.best_metric!r} " + (
                "(none ranked)" if best is None else f"(its best_step() is {best})"
            )
        return (
            f"No checkpoint of step {step} is kept: {where} {rule}; it keeps steps {kept}. "
            f"The weights of step {step} are gone: train again to step {step} to get them; a "
            f"run that must keep them saves into a directory of its own with "
            f"Checkpointer(..., best_metric={str(self.monitor)!r})."
        )

    def state_dict(self) -> dict[str, Any]:
        """The counts, and the monitor and mode they belong to, as JSON-serialisable data."""
        return {
            "version": self.STATE_VERSION,
            "monitor": str(self.monitor),
            "mode": self.mode,
            "best": self.best,
            "best_step": self.best_step,
            "wait": self.wait,
            "stopped_step": self.stopped_step,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restores [`state_dict`][flax_cyclic.EarlyStopping.state_dict]'s output.

        A state saved without a ``version`` (by 0.2 and before) has the same entries and is
        read as version 1.

        Raises:
            ValueError: If the state lacks an entry, has an unknown version, or was saved for
                another monitor or mode.
        """
        owner = f"{type(self).__name__}.load_state_dict"
        version = state.get("version", self.STATE_VERSION)
        if isinstance(version, bool) or version != self.STATE_VERSION:
            raise ValueError(
                f"{owner}: state version {version!r} is not supported; this flax_cyclic reads "
                f"version {self.STATE_VERSION}. Resume with the flax_cyclic release that saved "
                "it, or start the run in a new checkpoint directory."
            )
        missing = [key for key in _EARLY_STOPPING_KEYS if key not in state]
        if missing:
            raise ValueError(
                f"{owner}: the saved state has no {missing} (it has {sorted(state)}). Restore a "
                "state made by EarlyStopping.state_dict()."
            )
        saved = (state["monitor"], state["mode"])
        if saved != (str(self.monitor), self.mode):
            raise ValueError(
                f"{owner}: the state was saved for monitor={saved[0]!r}, mode={saved[1]!r}, but "
                f"this one watches monitor={str(self.monitor)!r}, mode={self.mode!r}: its best "
                "value would not compare. Build it with the saved monitor and mode, or start the "
                "run in a new checkpoint directory."
            )
        self.best = None if state["best"] is None else float(state["best"])
        self.best_step = state["best_step"]
        self.wait = int(state["wait"])
        self.stopped_step = state["stopped_step"]
        self._best_weights = None
