"""The callbacks' riders in the Trainer: inside every step, or between dispatches.

A rider ([`Callback.rider`][flax_cyclic.Callback.rider]) is device state that follows the
updates. One that acts at most steps (an EMA of every step) runs inside the compiled step, its
flags given per step: it costs a pass over its state at every step, as its work does. One that
says it acts at few steps (``sparse = True`` on the module: SWA at each cycle's end, a snapshot)
never enters the compiled step: a dispatch ends at its step, and its ``take`` then runs as a
compiled call of its own on the state that step left, before the next dispatch starts. Steps on
which it does nothing cost nothing on the device.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

from flax_cyclic._split_step import SplitStep
from flax_cyclic.callbacks.base import Callback, CallbackList

__all__ = ["Riders"]


class Riders:
    """The riders of one fit, parted into those inside the step and those between dispatches.

    Args:
        loop: The Trainer's callback list.
        split_step: The compiled step.
        steps: Train steps per dispatch (``k``).
    """

    def __init__(self, loop: CallbackList, split_step: SplitStep, steps: int) -> None:
        self._loop, self._split_step, self._steps = loop, split_step, steps
        self.inside: list[Callback] = []
        self.between: list[tuple[Callback, Any]] = []
        self._planned: tuple[int, list[np.ndarray]] | None = None  # (start, flags) of `between`
        self._device_flags: dict[int, Any] = {}

    def start(self) -> None:
        """Asks the callbacks for their riders again, and gives the step those inside it."""
        riders = self._loop.riders()
        self.inside = [c for c, rider in riders if not getattr(rider, "sparse", False)]
        self.between = [(c, rider) for c, rider in riders if getattr(rider, "sparse", False)]
        self._planned = None
        inside = [rider for _, rider in riders if not getattr(rider, "sparse", False)]
        if inside or self._split_step.riders:
            self._split_step.ride(inside)

    def flags(self, start: int, length: int) -> list[np.ndarray]:
        """Each inside rider's flags for the steps from ``start``, padded to ``k`` with zeros."""
        return [
            np.pad(self._asked(callback, start, length), (0, max(self._steps - length, 0)))
            for callback in self.inside
        ]

    def step_flags(self, step: int) -> list[Any]:
        """The inside riders' flags for one step, as device scalars (kept, not sent again)."""
        flags = []
        for callback in self.inside:
            value = int(self._asked(callback, step, 1)[0])
            flag = self._device_flags.get(value)
            if flag is None:
                flag = self._device_flags.setdefault(value, jnp.asarray(np.int32(value)))
            flags.append(flag)
        return flags

    def end(self, start: int, length: int) -> int:
        """The length of a dispatch from ``start``: up to the first step a between rider acts."""
        if not self.between:
            return length
        flags = [self._asked(callback, start, length) for callback, _ in self.between]
        self._planned = (start, flags)
        acting = [int(np.flatnonzero(flag)[0]) for flag in flags if flag.any()]
        return min(acting) + 1 if acting else length

    def take(self, start: int, length: int) -> None:
        """Runs the between riders that act at the dispatch's last step, on the state it left.

        Call it right after the dispatch is started: the call queues behind it on the device,
        before the next dispatch.
        """
        if not self.between:
            return
        if length == 1 and self._steps == 1:  # one step per dispatch: asked here, once
            for callback, rider in self.between:
                flag = self._asked(callback, start, 1)[0]
                if flag:
                    self._split_step.take_between(rider, flag)
            return
        if self._planned is None or self._planned[0] != start:
            self.end(start, length)
        assert self._planned is not None
        for (_, rider), flag in zip(self.between, self._planned[1], strict=True):
            if len(flag) >= length and flag[length - 1]:
                self._split_step.take_between(rider, flag[length - 1])
        self._planned = None

    def _asked(self, callback: Callback, start: int, length: int) -> np.ndarray:
        given = callback.rides_ahead(self._loop, start, length)
        flag = np.asarray(given)
        if flag.shape != (length,) or not np.issubdtype(flag.dtype, np.integer):
            raise ValueError(
                f"Trainer.fit: {callback.state_key}.rides_ahead({start}, {length}) must give "
                f"{length} integers, one per step; it gave {given!r}."
            )
        return flag.astype(np.int32, copy=False)
