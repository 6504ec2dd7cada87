"""The library's own exception types, defined below every module that raises them."""

from __future__ import annotations

__all__ = ["CheckpointError", "NonFiniteError"]


class CheckpointError(RuntimeError):
    """A checkpoint cannot be restored into this run, or does not agree with itself."""


class NonFiniteError(FloatingPointError):
    """Training produced a NaN or an infinity: in the metrics, the model or the optimizer state.

    Nothing non-finite is ever written as a checkpoint, so the newest checkpoint on disk is
    still a good one to resume from.
    """


# Shown as flax_cyclic.CheckpointError in tracebacks, where users import them from.
CheckpointError.__module__ = NonFiniteError.__module__ = "flax_cyclic"
