"""The ``flax_cyclic`` logger, and the handler it prints with where the application has none.

The library says what a run does (started fresh, resumed from which step, complete, stopped
early, preempted) through the standard ``logging`` logger ``flax_cyclic``. Python shows only
warnings by default, and raising the root logger to INFO floods the terminal with Orbax and
absl lines, so, as PyTorch Lightning does, the library prints its own lines where the
application configured no logging: then the ``flax_cyclic`` logger gets a handler that writes
``flax_cyclic: <message>`` to standard error on process 0 only, the level INFO (unless the
application set one on it) and ``propagate = False`` (nothing is printed twice).

"Configured" is decided once, at the library's first message, not at import: an application
that imports the library and configures logging in its ``main`` keeps its configuration
(level, format, files) for the library's lines too. It means a handler on the ``flax_cyclic``
logger, a root level other than WARNING, or a root handler other than the one
``logging.basicConfig()`` makes with its defaults: absl adds exactly that one by itself when
Orbax or grain is imported (``absl.logging`` calls ``logging.basicConfig()`` at its first log
when the root logger has no handler), so it cannot tell that an application asked for it.
Silencing: ``logging.getLogger("flax_cyclic").setLevel(logging.WARNING)``, before or after the
first message.

One Orbax warning is dropped on import, as the library says the same thing better: Orbax's
"Metadata file does not exist: <step>/_CHECKPOINT_METADATA" (through absl, the ``absl`` logger),
printed for a step directory without its metadata, as a kill can leave one. The
[`Checkpointer`][flax_cyclic.Checkpointer] then skips that step as damaged, moves it aside and
says so. Only that record of that logger is dropped; Orbax's other warnings pass.
"""

from __future__ import annotations

import logging
import sys
import threading

__all__ = ["logger"]

NAME = "flax_cyclic"
FORMAT = f"{NAME}: %(message)s"

_lock = threading.Lock()
_decided = False


def _on_process_zero(record: logging.LogRecord) -> bool:
    """Passes a record on process 0 only (``jax.process_index()``), so it is printed once."""
    import jax  # imported lazily: this module sits below every other one

    return jax.process_index() == 0


def _configured(base: logging.Logger) -> bool:
    """Whether the application configured logging for ``base`` (see the module's docstring)."""
    root = logging.getLogger()
    if base.handlers or not root.handlers:
        return bool(base.handlers)
    return root.level != logging.WARNING or not all(map(_is_basic_default, root.handlers))


def _is_basic_default(handler: logging.Handler) -> bool:
    """Whether ``handler`` is the one a bare ``logging.basicConfig()`` adds to the root logger."""
    return (
        type(handler) is logging.StreamHandler
        and handler.stream is sys.stderr
        and handler.level == logging.NOTSET
        and not handler.filters
        and handler.formatter is not None
        and handler.formatter._fmt == logging.BASIC_FORMAT
    )


def _print_if_unconfigured(base: logging.Logger) -> None:
    """Once, at the first message: ``base`` prints by itself where logging is not configured."""
    global _decided
    with _lock:
        if _decided:
            return
        _decided = True
        if _configured(base):
            return
        handler = logging.StreamHandler()  # standard error
        handler.setFormatter(logging.Formatter(FORMAT))
        handler.addFilter(_on_process_zero)
        base.addHandler(handler)
        base.propagate = False
        if base.level == logging.NOTSET:  # a level the application set stays
            base.setLevel(logging.INFO)


class _Logger(logging.LoggerAdapter[logging.Logger]):
    """The ``flax_cyclic`` logger, which decides how it prints at its first message."""

    def isEnabledFor(self, level: int) -> bool:
        if not _decided:
            _print_if_unconfigured(self.logger)
        return self.logger.isEnabledFor(level)


#: What the library logs through: ``logging.getLogger("flax_cyclic")`` with the check above.
logger = _Logger(logging.getLogger(NAME))

#: Orbax's message (``orbax.checkpoint._src.metadata.checkpoint``) for a missing metadata file.
_NO_METADATA = "Metadata file does not exist: %s"
_STEP_METADATA = "_CHECKPOINT_METADATA"


def _orbax_noise(record: logging.LogRecord) -> bool:
    """False for Orbax's warning about a step without ``_CHECKPOINT_METADATA`` (see above)."""
    if record.msg != _NO_METADATA or not isinstance(record.args, tuple) or not record.args:
        return True
    return not str(record.args[0]).endswith(_STEP_METADATA)


def _hide_orbax_noise() -> None:
    """Adds the filter to absl's logger, once (a reload of this module adds no second one)."""
    absl = logging.getLogger("absl")
    if not any(getattr(f, "__name__", "") == _orbax_noise.__name__ for f in absl.filters):
        absl.addFilter(_orbax_noise)


_hide_orbax_noise()
