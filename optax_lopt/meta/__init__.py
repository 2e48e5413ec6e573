"""Meta-training: inner unrolls, gradient estimators, the meta-trainer."""

from optax_lopt.meta.checkpoint import Checkpointer
from optax_lopt.meta.metrics_log import read_metrics
from optax_lopt.meta.sharding import TASK_AXIS, task_mesh, task_shardings
from optax_lopt.meta.trainer import MetaTrainer, TrainState

__all__: list[str] = [
    # meta-trainer, checkpoints, sharding
    "Checkpointer",
    "MetaTrainer",
    "TASK_AXIS",
    "TrainState",
    "read_metrics",
    "task_mesh",
    "task_shardings",
]
