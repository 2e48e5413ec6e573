"""Truncated backpropagation through time over persistent inner runs."""

from __future__ import annotations

import dataclasses

import chex
import jax
import jax.numpy as jnp

from optax_lopt.base import MetaParams
from optax_lopt.meta import _common
from optax_lopt.meta.base import TruncatedEstimator
from optax_lopt.meta.meta_losses import MetaLoss
from optax_lopt.meta.unroll import UnrollState, unroll


@dataclasses.dataclass(frozen=True)
class TruncatedBPTT(TruncatedEstimator):
    """Gradient of each truncation's meta-loss, backpropagated through that truncation only.

    Every call advances ``num_tasks`` persistent runs by ``truncation_length`` steps and
    differentiates the mean (over tasks) truncation meta-loss with respect to ``theta``; the
    runs' state at the start of the truncation is a constant. Cheap and low-variance, but
    biased: effects of ``theta`` that outlast a truncation are ignored (short-horizon bias).

    Fields not listed here are documented once, on its base classes: `TaskBatchEstimator`
    (``lopt``, ``family``, ``num_tasks``, ``horizon``, ``meta_loss``, ``loss_clip``) and
    `TruncatedEstimator` (``truncation_length``).

    Args:
      remat: rematerialise each inner step in the backward pass.

    References:
      Werbos, "Backpropagation through time: what it does and how to do it" (1990).
      Wu et al., "Understanding Short-Horizon Bias in Stochastic Meta-Optimization",
      arXiv 1803.02021.
    """

    remat: bool = False

    def init(self, theta: MetaParams, key: chex.PRNGKey) -> UnrollState:
        return _common.init_runs(self, theta, key)

    def meta_gradient(self, theta, state, key):
        ml = MetaLoss(self.meta_loss, self.loss_clip)

        def objective(th):
            new_state, trajectory = unroll(
                self.lopt,
                self.family,
                th,
                state,
                key,
                num_steps=self.truncation_length,
                horizon=_common.horizon_of(self),
                meta_loss=ml,
                remat=self.remat,
            )
            return jnp.mean(ml.reduce(trajectory.values)), (new_state, trajectory)

        (value, (new_state, trajectory)), grad = jax.value_and_grad(objective, has_aux=True)(theta)
        grad, bad = _common.zero_nonfinite(grad)
        metrics = {"meta_loss": value, "gradient_nonfinite_fraction": bad}
        metrics.update(_common.trajectory_metrics(trajectory))
        return grad, new_state, metrics
