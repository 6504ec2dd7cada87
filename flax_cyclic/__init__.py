"""flax_cyclic: cyclical learning rates for Flax NNX and optax.

Pure, jit-safe schedules (``cyclic_schedule`` and its family) and stateful schedulers with the
braintools / PyTorch interface (``CyclicLR``, ``TriangularLR``, ``OneCycleLR``,
``CosineAnnealingLR``, ``CosineAnnealingWarmRestarts``, ``LinearLR``, ``SequentialLR``,
``ReduceLROnPlateau``), computing PyTorch's numbers with exact integer phase arithmetic.
"""

from flax_cyclic._hyperparams import set_hyperparams as set_hyperparams
from flax_cyclic.averages import WeightAverage as WeightAverage
from flax_cyclic.averages import init_average as init_average
from flax_cyclic.averages import update_average as update_average
from flax_cyclic.batch_stats import update_batch_stats as update_batch_stats
from flax_cyclic.callbacks import Callback as Callback
from flax_cyclic.callbacks import CallbackList as CallbackList
from flax_cyclic.callbacks import EarlyStopping as EarlyStopping
from flax_cyclic.callbacks import LearningRateMonitor as LearningRateMonitor
from flax_cyclic.callbacks import LRSchedulerCallback as LRSchedulerCallback
from flax_cyclic.callbacks import MetricsLogger as MetricsLogger
from flax_cyclic.callbacks import ProgressBar as ProgressBar
from flax_cyclic.callbacks import SnapshotEnsemble as SnapshotEnsemble
from flax_cyclic.callbacks import TerminateOnNaN as TerminateOnNaN
from flax_cyclic.callbacks import WeightAveraging as WeightAveraging
from flax_cyclic.checkpoint import CheckpointedRun as CheckpointedRun
from flax_cyclic.checkpoint import Checkpointer as Checkpointer
from flax_cyclic.checkpoint import CheckpointError as CheckpointError
from flax_cyclic.checkpoint import NonFiniteError as NonFiniteError
from flax_cyclic.event_files import read_scalars as read_scalars
from flax_cyclic.lr_finder import LRFinderResult as LRFinderResult
from flax_cyclic.lr_finder import lr_find as lr_find
from flax_cyclic.plateau import ReduceLROnPlateau as ReduceLROnPlateau
from flax_cyclic.schedulers import CosineAnnealingLR as CosineAnnealingLR
from flax_cyclic.schedulers import CosineAnnealingWarmRestarts as CosineAnnealingWarmRestarts
from flax_cyclic.schedulers import CyclicLR as CyclicLR
from flax_cyclic.schedulers import LinearLR as LinearLR
from flax_cyclic.schedulers import LRScheduler as LRScheduler
from flax_cyclic.schedulers import OneCycleLR as OneCycleLR
from flax_cyclic.schedulers import SequentialLR as SequentialLR
from flax_cyclic.schedulers import TriangularLR as TriangularLR
from flax_cyclic.schedules import cosine_annealing_schedule as cosine_annealing_schedule
from flax_cyclic.schedules import cosine_warm_restarts_schedule as cosine_warm_restarts_schedule
from flax_cyclic.schedules import cyclic_schedule as cyclic_schedule
from flax_cyclic.schedules import linear_schedule as linear_schedule
from flax_cyclic.schedules import onecycle_schedule as onecycle_schedule
from flax_cyclic.schedules import triangular_schedule as triangular_schedule
from flax_cyclic.steps import classification_eval_step as classification_eval_step
from flax_cyclic.steps import classification_train_step as classification_train_step
from flax_cyclic.trainer import History as History
from flax_cyclic.trainer import Trainer as Trainer
from flax_cyclic.writers import create_writer as create_writer

__version__ = "0.1.0"

__all__ = [
    "Callback",
    "CallbackList",
    "CheckpointError",
    "CheckpointedRun",
    "Checkpointer",
    "CosineAnnealingLR",
    "CosineAnnealingWarmRestarts",
    "CyclicLR",
    "EarlyStopping",
    "History",
    "LRFinderResult",
    "LRScheduler",
    "LRSchedulerCallback",
    "LearningRateMonitor",
    "LinearLR",
    "MetricsLogger",
    "NonFiniteError",
    "OneCycleLR",
    "ProgressBar",
    "ReduceLROnPlateau",
    "SequentialLR",
    "SnapshotEnsemble",
    "TerminateOnNaN",
    "Trainer",
    "TriangularLR",
    "WeightAverage",
    "WeightAveraging",
    "__version__",
    "classification_eval_step",
    "classification_train_step",
    "cosine_annealing_schedule",
    "cosine_warm_restarts_schedule",
    "create_writer",
    "cyclic_schedule",
    "init_average",
    "linear_schedule",
    "lr_find",
    "onecycle_schedule",
    "read_scalars",
    "set_hyperparams",
    "triangular_schedule",
    "update_average",
    "update_batch_stats",
]
