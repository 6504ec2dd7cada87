"""The run's checkpoints: resume from the newest, save the run as it stands, say why not.

A checkpoint holds everything a decision needs (the callbacks' state, the data position, the
epoch's train metrics so far, whether a callback stopped the run), so a resume at any saved step
replays nothing and skips nothing (docs/concepts.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from flax_cyclic import _logging
from flax_cyclic._checkpoint_items import resumable
from flax_cyclic._errors import CheckpointError, NonFiniteError
from flax_cyclic._loop.data import data_state
from flax_cyclic._loop.run import REPLAY, History, Resumed, Run
from flax_cyclic._metrics import local_copy

__all__ = ["RunCheckpoints", "metrics_from_json", "metrics_to_json"]

logger = _logging.logger

_TRAINER_KEYS = ("step", "epoch", "position", "data_state")


class RunCheckpoints:
    """The checkpoint side of the Trainer's runs, over its [`Checkpointer`] (or none).

    Args:
        checkpointer: The [`Checkpointer`][flax_cyclic.Checkpointer], or ``None``: no resume,
            no saves.
        loop: The Trainer's callback list: the model, optimizer, callbacks, step and epoch.
        rngs: The Trainer's ``nnx.Rngs``, saved as extra state, or ``None``.
    """

    def __init__(self, checkpointer: Any, loop: Any, rngs: Any) -> None:
        self.checkpointer = checkpointer
        self._loop = loop
        self._rngs = rngs
        self._saved_step: int | None = None
        # The train metrics of the steps since the last good save, for a divergence's error.
        self._unsaved: list[tuple[int, Any]] = []
        # The last evaluation's step and means: a save at that step is ranked by them.
        self._last_eval: tuple[int, dict[str, float]] | None = None

    def start(self) -> None:
        """Forgets the previous run's bookkeeping (``fit`` may be called again)."""
        self._unsaved, self._last_eval = [], None

    def trained(self, step: int, metrics: Any) -> None:
        """Notes a train step's metrics, kept until the next good save."""
        if self.checkpointer is not None:
            self._unsaved.append((step, metrics))

    def evaluated(self, step: int, means: dict[str, float]) -> None:
        """Notes an evaluation's means: a save at ``step`` is ranked by them."""
        self._last_eval = (step, means)

    def finish(self, run: Run) -> None:
        """The final save (unless this very step is saved), then waits for every save."""
        if self.checkpointer is None:
            return
        if self._saved_step != self._loop.step:
            self.save(run)
        self.checkpointer.wait()

    def wait(self) -> None:
        """Waits for a save in flight (on the way out of an error: nothing complete is lost)."""
        if self.checkpointer is not None:
            self.checkpointer.wait()

    def resume(self, history: History) -> Resumed:
        """Restores the newest checkpoint into the run; returns where the run stands."""
        self._saved_step = None
        if self.checkpointer is None:
            return Resumed()
        restored = self.checkpointer.restore(
            model=self._loop.model, optimizer=self._loop.optimizer, extra=self._extra_to_resume()
        )
        if restored is None:
            logger.info("No checkpoint in %s: starting fresh.", self.checkpointer.directory)
            return Resumed()
        try:
            self._loop.load_state_dict(restored.callbacks)
            trainer = {key: restored.trainer[key] for key in _TRAINER_KEYS}
            epoch_metrics = metrics_from_json(restored.trainer.get("epoch_metrics"))
        except (ValueError, TypeError, KeyError) as error:
            raise CheckpointError(
                f"The checkpoint at step {restored.step} in {self.checkpointer.directory} does "
                f"not fit this run: {_reason(error)}"
            ) from error
        if trainer["step"] != restored.step:
            raise CheckpointError(
                f"The checkpoint at step {restored.step} in {self.checkpointer.directory} says "
                f"the trainer had completed {trainer['step']} steps: it was edited or mixed "
                "with another run's files. Remove that step directory to resume from the one "
                "before, or use a new checkpoint directory."
            )
        self._loop.step, self._loop.epoch = trainer["step"], trainer["epoch"]
        self._saved_step = restored.step
        history.resumed_from = restored.step
        logger.info(
            "Resumed from the checkpoint at step %d in %s (epoch %d, %d batches into it).",
            restored.step,
            self.checkpointer.directory,
            trainer["epoch"],
            trainer["position"],
        )
        return Resumed(
            resumed=True,
            position=trainer["position"],
            data_state=trainer["data_state"],
            epoch_metrics=epoch_metrics,
            stopped=self._still_stopped(restored.trainer),
        )

    def _still_stopped(self, trainer: Mapping[str, Any]) -> bool:
        """Whether a run a callback stopped is still complete: that callback is still in it."""
        if not trainer.get("stopped", False):
            return False
        stopped_by = trainer.get("stopped_by")
        keys = [callback.state_key for callback in self._loop.callbacks]
        if stopped_by is None or stopped_by in keys:
            self._loop.stopped_by = stopped_by
            return True
        logger.warning(
            "The run in %s was stopped at step %d by %s, which is not in this run: training on.",
            self.checkpointer.directory if self.checkpointer else "?",
            trainer["step"],
            stopped_by,
        )
        return False

    def save(self, run: Run) -> None:
        """Saves the run as it stands after the current step."""
        try:
            self._save_checked(run)
        except NonFiniteError as error:
            raise self._diverged(error) from error
        self._saved_step = self._loop.step
        self._unsaved = []

    def _save_checked(self, run: Run) -> None:
        assert self.checkpointer is not None
        position = run.position
        if position and run.data_state is None:
            run.data_state = data_state(run.batches)
        saved_data = None if run.data_state is REPLAY else run.data_state
        self.checkpointer.save(
            self._loop.step,
            model=self._loop.model,
            optimizer=self._loop.optimizer,
            callbacks=self._loop.state_dict(),
            trainer={
                "step": self._loop.step,
                "epoch": self._loop.epoch,
                "position": position,
                "data_state": saved_data if position else None,
                # The epoch's train metrics so far: a resumed epoch's mean covers all its steps.
                "epoch_metrics": metrics_to_json(run.epoch_metrics) if position else None,
                "stopped": bool(self._loop.stop_training),
                "stopped_by": self._loop.stopped_by if self._loop.stop_training else None,
            },
            metrics=self._evaluated_here(),
            extra=self._extra(),
        )

    def _extra(self) -> dict[str, Any] | None:
        """What the Trainer owns beside the model and optimizer: ``rngs``, callbacks' riders.

        Read after ``self._loop.model``, which brings the training state up to date.
        """
        extra = {} if self._rngs is None else {"rngs": self._rngs}
        extra |= self._loop.rider_states()
        return extra or None

    def _extra_to_resume(self) -> dict[str, Any] | None:
        """``_extra()``, with the riders as the newest checkpoint holds them (``resumable``)."""
        rngs = {} if self._rngs is None else {"rngs": self._rngs}
        return resumable(self.checkpointer, rngs, self._loop.rider_states())

    def _evaluated_here(self) -> dict[str, float] | None:
        """The last evaluation's metrics, by logged name, if it evaluated this very state."""
        if self._last_eval is None or self._last_eval[0] != self._loop.step:
            return None
        return {f"eval/{name}": value for name, value in self._last_eval[1].items()}

    def _diverged(self, error: NonFiniteError) -> NonFiniteError:
        """The error for a save refused as non-finite, naming the first non-finite step."""
        first = None
        host = jax.device_get([metrics for _, metrics in self._unsaved])  # one transfer
        for (step, _), metrics in zip(self._unsaved, host, strict=True):
            bad = {name: float(v) for name, v in metrics.items() if not np.all(np.isfinite(v))}
            if bad:
                first = (step, bad)
                break
        if first is None:
            seen = "no train metric was non-finite since the last checkpoint"
        else:
            step, bad = first
            shown = ", ".join(f"{name}={value}" for name, value in bad.items())
            seen = f"the metrics were first non-finite at train step {step} ({shown})"
        latest = self.checkpointer.latest_step() if self.checkpointer else None
        kept = (
            f"the newest checkpoint, step {latest}, is good and a resume starts there"
            if latest is not None
            else "there is no earlier checkpoint"
        )
        return NonFiniteError(
            f"Trainer.fit: training diverged: {seen}. {error} So {kept}. Lower the learning "
            "rate (e.g. max_lr), clip the gradients (optax.clip_by_global_norm), or add "
            "TerminateOnNaN() to stop at the first non-finite loss."
        )

    def say_complete(self, num_epochs: int | None, num_steps: int | None, resumed: Resumed) -> None:
        """Says why this ``fit`` trains nothing, and how to train on."""
        length = f"num_steps={num_steps}" if num_steps is not None else f"num_epochs={num_epochs}"
        done = f"step {self._loop.step}, epoch {self._loop.epoch}"
        if self.checkpointer is None or not resumed.resumed:
            logger.warning(
                "Trainer.fit: nothing to train: this trainer has completed %s, and %s counts "
                "from the start of the run. Raise %s to train longer.",
                done,
                length,
                length.split("=")[0],
            )
        elif resumed.stopped:
            logger.warning(
                "The run in %s stopped early at step %d (%s set stop_training): it is complete "
                "and is not trained further. To train on from here, run it without that "
                "callback (or with one on another metric, e.g. another monitor); to start over, "
                "use a new checkpoint directory.",
                self.checkpointer.directory,
                self._loop.step,
                self._loop.stopped_by or "a callback",
            )
        else:
            logger.warning(
                "The run in %s is complete at step %d (%s): nothing left to train. Raise %s "
                "to train longer, or use a new checkpoint directory to start over.",
                self.checkpointer.directory,
                self._loop.step,
                length,
                length.split("=")[0],
            )


def metrics_to_json(metrics: list[Mapping[str, Any]]) -> dict[str, Any] | None:
    """An epoch's per-step train metrics as JSON: values as floats, and their dtypes."""
    if not metrics:
        return None
    host = [{name: np.asarray(local_copy(v)) for name, v in m.items()} for m in metrics]
    return {
        "values": {name: [float(m[name]) for m in host] for name in host[0]},
        "dtypes": {name: str(value.dtype) for name, value in host[0].items()},
    }


def metrics_from_json(saved: Any) -> list[Mapping[str, Any]]:
    """Inverse of ``_metrics_to_json``: the same values in the same dtypes (exact)."""
    if not saved:
        return []
    values, dtypes = saved["values"], saved["dtypes"]
    length = len(next(iter(values.values())))
    return [
        {name: np.asarray(values[name][i], dtype=dtypes[name]) for name in values}
        for i in range(length)
    ]


def _reason(error: BaseException) -> str:
    if isinstance(error, KeyError):
        return f"its saved state has no entry {error.args[0]!r}."
    return str(error)
