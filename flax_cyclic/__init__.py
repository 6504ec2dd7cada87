"""flax_cyclic: cyclical learning rates for Flax NNX and optax.

Pure, jit-safe schedules (``cyclic_schedule``) and stateful schedulers with the braintools /
PyTorch interface (``CyclicLR``), computing PyTorch's numbers with exact integer phase arithmetic.
"""

from flax_cyclic.callbacks import Callback as Callback
from flax_cyclic.callbacks import CallbackList as CallbackList
from flax_cyclic.callbacks import LRSchedulerCallback as LRSchedulerCallback
from flax_cyclic.callbacks import MetricsLogger as MetricsLogger
from flax_cyclic.callbacks import ProgressBar as ProgressBar
from flax_cyclic.checkpoint import Checkpointer as Checkpointer
from flax_cyclic.checkpoint import CheckpointError as CheckpointError
from flax_cyclic.metrics import create_writer as create_writer
from flax_cyclic.schedulers import CyclicLR as CyclicLR
from flax_cyclic.schedulers import LRScheduler as LRScheduler
from flax_cyclic.schedules import cyclic_schedule as cyclic_schedule
from flax_cyclic.trainer import History as History
from flax_cyclic.trainer import Trainer as Trainer

__version__ = "0.1.0"

__all__ = [
    "Callback",
    "CallbackList",
    "CheckpointError",
    "Checkpointer",
    "CyclicLR",
    "History",
    "LRScheduler",
    "LRSchedulerCallback",
    "MetricsLogger",
    "ProgressBar",
    "Trainer",
    "__version__",
    "create_writer",
    "cyclic_schedule",
]
