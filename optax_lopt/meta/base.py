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
from typing import Any

import chex

from optax_lopt.base import MetaParams

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
