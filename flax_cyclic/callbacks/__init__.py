"""Training-loop callbacks."""

from flax_cyclic.callbacks.averaging import WeightAveraging as WeightAveraging
from flax_cyclic.callbacks.base import Callback as Callback
from flax_cyclic.callbacks.base import CallbackList as CallbackList
from flax_cyclic.callbacks.ensemble import SnapshotEnsemble as SnapshotEnsemble
from flax_cyclic.callbacks.lr import LRSchedulerCallback as LRSchedulerCallback
from flax_cyclic.callbacks.metrics_logger import MetricsLogger as MetricsLogger
from flax_cyclic.callbacks.monitor import LearningRateMonitor as LearningRateMonitor
from flax_cyclic.callbacks.progress import ProgressBar as ProgressBar
from flax_cyclic.callbacks.stopping import EarlyStopping as EarlyStopping
from flax_cyclic.callbacks.stopping import TerminateOnNaN as TerminateOnNaN

__all__ = [
    "Callback",
    "CallbackList",
    "EarlyStopping",
    "LRSchedulerCallback",
    "LearningRateMonitor",
    "MetricsLogger",
    "ProgressBar",
    "SnapshotEnsemble",
    "TerminateOnNaN",
    "WeightAveraging",
]
