"""The base of the callbacks that write to a ``MetricWriter``: one place for their rules.

The writer's check, ``log_every_steps`` and when it is due (the one periodic rule,
``flax_cyclic._cadence.every``), writing on process 0 only, and flushing on every way out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax

from flax_cyclic import _checks
from flax_cyclic._cadence import every
from flax_cyclic.callbacks.base import Callback, Loop, MetricWriter, flush_writer

__all__ = ["WritingCallback"]


class WritingCallback(Callback):
    """A callback that writes scalars every ``log_every_steps`` steps through ``writer``.

    Args:
        writer: Anything with CLU's ``write_scalars(step, scalars)``; ``None`` where the
            subclass allows it (``required=False``).
        log_every_steps: Write at every step that is a multiple of this.
        required: Whether ``writer`` may be ``None``.
        hint: The end of the error for a bad ``writer``.

    Raises:
        TypeError: If ``writer`` lacks ``write_scalars`` (or is ``None`` where required).
        ValueError: If ``log_every_steps`` is not a positive integer.
    """

    def __init__(
        self,
        writer: MetricWriter | None,
        *,
        log_every_steps: int,
        required: bool = True,
        hint: str = "",
    ) -> None:
        owner = type(self).__name__
        if (writer is not None or required) and not callable(
            getattr(writer, "write_scalars", None)
        ):
            raise TypeError(
                f"{owner}: `writer` must have CLU's MetricWriter interface "
                f"(write_scalars(step, scalars)), got {type(writer).__name__}.{hint}"
            )
        self.writer = writer
        self.log_every_steps = _checks.integer(
            owner, "log_every_steps", log_every_steps, minimum=1, hint="e.g. 100."
        )

    def due(self, done: int) -> bool:
        """Whether a write is due once ``done`` steps (or updates) are complete."""
        return every(done, self.log_every_steps)

    @property
    def writes_here(self) -> bool:
        """Whether this process writes: process 0, with a writer."""
        return self.writer is not None and jax.process_index() == 0

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        """Writes ``scalars`` at ``step`` on process 0; nothing elsewhere."""
        if self.writes_here:
            assert self.writer is not None
            self.writer.write_scalars(step, scalars)

    def on_train_end(self, loop: Loop) -> None:
        """Flushes the writer."""
        flush_writer(self.writer)

    def on_exception(self, loop: Loop, exception: BaseException) -> None:
        """Flushes the writer, so that nothing logged before the error is lost."""
        flush_writer(self.writer)
