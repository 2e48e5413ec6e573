"""The interface every meta-gradient estimator implements.

An estimator owns a batch of ``num_tasks`` inner-training runs (task instances, their params,
the learned optimizer's inner state, the step each run is at) that persists across outer
steps: each call of :meth:`GradientEstimator.meta_gradient` advances every run by one
truncation and returns an estimate of the gradient of the meta-loss with respect to
``theta``. The meta-trainer only ever sees this interface.

References:
  Vicol, Metz, Sohl-Dickstein, "Unbiased Gradient Estimation in Unrolled Computation Graphs
  with Persistent Evolution Strategies", ICML 2021.
  Metz et al., "Understanding and correcting pathologies in the training of learned
  optimizers", arXiv 1810.10180.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, ClassVar

import chex

from optax_lopt import _checks
from optax_lopt.base import LearnedOptimizer, MetaParams
from optax_lopt.meta.meta_losses import LOSS_CLIP, MetaLoss
from optax_lopt.tasks.base import TaskFamily

EstimatorState = Any
"""A pytree of arrays: the persistent inner runs (and, for PES, noise accumulators)."""


class GradientEstimator(abc.ABC):
    """Estimates d(meta-loss)/d(theta) from truncated inner unrolls of a task batch."""

    @abc.abstractmethod
    def init(self, theta: MetaParams, key: chex.PRNGKey) -> EstimatorState:
        """Samples the task batch and starts its inner runs (staggered starting steps)."""

    @abc.abstractmethod
    def meta_gradient(
        self, theta: MetaParams, state: EstimatorState, key: chex.PRNGKey
    ) -> tuple[MetaParams, EstimatorState, dict[str, chex.Array]]:
        """Advances every inner run by one truncation; returns (gradient, state, metrics).

        The gradient has theta's structure. ``metrics`` holds scalars and contains at least
        ``"meta_loss"``. The method is a pure function of its arguments and jittable.
        """


@dataclasses.dataclass(frozen=True)
class TaskBatchEstimator(GradientEstimator):
    """The fields every task-batch estimator declares, here once, checked once.

    Subclasses add `TruncatedEstimator`'s ``truncation_length`` and `PerturbedEstimator`'s
    ``sigma`` where they use them, so which estimator takes which field is a query
    (`optax_lopt.meta.estimator_fields`), not prose.

    Args:
      lopt: the learned optimizer.
      family: the task family.
      num_tasks: tasks trained in parallel.
      horizon: trajectory length before a task resets (None: ``family.num_steps``).
      meta_loss: a name in ``optax_lopt.meta.META_LOSS_NAMES``.
      loss_clip: per-step normalised losses above this count as this.

    Raises:
      ValueError: naming the field, for a value of the wrong kind or out of range.
    """

    lopt: LearnedOptimizer
    family: TaskFamily
    num_tasks: int = 8
    horizon: int | None = None
    meta_loss: str = "mean_normalized"
    loss_clip: float = LOSS_CLIP

    def __post_init__(self) -> None:
        _checks.learned_optimizer("lopt", self.lopt)
        _checks.task_family("family", self.family)
        normal = {"num_tasks": _checks.positive_int("num_tasks", self.num_tasks)}
        if self.horizon is not None:
            normal["horizon"] = _checks.positive_int("horizon", self.horizon)
        if hasattr(self, "truncation_length"):
            normal["truncation_length"] = _checks.positive_int(
                "truncation_length", self.truncation_length
            )
        if hasattr(self, "sigma"):
            normal["sigma"] = _checks.positive("sigma", self.sigma)
        for name, value in normal.items():  # NumPy scalars become Python numbers
            object.__setattr__(self, name, value)
        MetaLoss(self.meta_loss, self.loss_clip)


@dataclasses.dataclass(frozen=True)
class TruncatedEstimator(TaskBatchEstimator):
    """A task-batch estimator over truncations of persistent runs.

    Args:
      truncation_length: inner steps per call of ``meta_gradient``.
    """

    truncation_length: int = 50


@dataclasses.dataclass(frozen=True)
class PerturbedEstimator(TaskBatchEstimator):
    """A task-batch estimator that perturbs ``theta`` (the ES family).

    Args:
      sigma: standard deviation of the perturbations.
    """

    sigma: float = 0.01

    NUM_PARTICLES: ClassVar[int] = 2
    """Inner runs per task (``theta + eps`` and ``theta - eps``): one call costs
    ``NUM_PARTICLES * num_tasks`` times the steps it unrolls."""
