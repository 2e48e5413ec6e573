"""Meta-training: inner unrolls, gradient estimators, the meta-trainer."""

from optax_lopt.meta.base import (
    EstimatorState,
    GradientEstimator,
    PerturbedEstimator,
    TaskBatchEstimator,
    TruncatedEstimator,
)
from optax_lopt.meta.checkpoint import Checkpointer
from optax_lopt.meta.es import ES
from optax_lopt.meta.estimators import estimator, estimator_fields, estimator_names
from optax_lopt.meta.feedback import probe_meta_optimizers
from optax_lopt.meta.full_bptt import FullBPTT, WholeUnrollState
from optax_lopt.meta.hybrid import Hybrid
from optax_lopt.meta.meta_losses import META_LOSS_NAMES, MetaLoss, meta_loss
from optax_lopt.meta.meta_training_recipe import MetaTrainingRecipe
from optax_lopt.meta.metrics_log import read_metrics
from optax_lopt.meta.mixture_estimator import Mixture
from optax_lopt.meta.outer_loop import MetaStep, SettingMismatchError, meta_step
from optax_lopt.meta.pes import PES, PESState
from optax_lopt.meta.self_training import PopulationState, SelfTrainer
from optax_lopt.meta.self_training_recipe import SelfTrainingRecipe
from optax_lopt.meta.sharding import TASK_AXIS, task_mesh, task_shardings
from optax_lopt.meta.trainer import MetaTrainer, TrainState
from optax_lopt.meta.truncated_bptt import TruncatedBPTT
from optax_lopt.meta.truncated_es import TruncatedES
from optax_lopt.meta.unroll import Trajectory, UnrollState
from optax_lopt.plotting import plot_population

__all__: list[str] = [
    # estimators, unrolls, meta-losses
    "ES",
    "EstimatorState",
    "FullBPTT",
    "GradientEstimator",
    "Hybrid",
    "META_LOSS_NAMES",
    "MetaLoss",
    "Mixture",
    "PES",
    "PESState",
    "PerturbedEstimator",
    "TaskBatchEstimator",
    "Trajectory",
    "TruncatedBPTT",
    "TruncatedES",
    "TruncatedEstimator",
    "UnrollState",
    "WholeUnrollState",
    "estimator",
    "estimator_fields",
    "estimator_names",
    "meta_step",
    "meta_loss",
    # meta-trainer, checkpoints, sharding
    "Checkpointer",
    "MetaStep",
    "MetaTrainer",
    "MetaTrainingRecipe",
    "PopulationState",
    "SelfTrainer",
    "SelfTrainingRecipe",
    "SettingMismatchError",
    "TASK_AXIS",
    "TrainState",
    "plot_population",
    "probe_meta_optimizers",
    "read_metrics",
    "task_mesh",
    "task_shardings",
]
