"""Antithetic evolution strategies on one truncation of persistent inner runs."""

from __future__ import annotations

import dataclasses

import chex
import jax
import jax.numpy as jnp

from optax_lopt.base import MetaParams
from optax_lopt.meta import _common
from optax_lopt.meta.base import PerturbedEstimator, TruncatedEstimator
from optax_lopt.meta.meta_losses import MetaLoss
from optax_lopt.meta.unroll import (
    UnrollState,
    broadcast_particles,
    select_particle,
    unroll,
)


@dataclasses.dataclass(frozen=True)
class TruncatedES(TruncatedEstimator, PerturbedEstimator):
    """Antithetic ES on each truncation, starting both perturbations from the shared state.

    Every call draws ``eps_i ~ N(0, sigma^2 I)`` per task, advances copies of the task's run
    with ``theta + eps_i`` and ``theta - eps_i`` (same minibatches) by ``truncation_length``
    steps, and returns ``mean_i eps_i (L_i^+ - L_i^-) / (2 sigma^2)``. The run then continues
    from the ``theta + eps_i`` copy. Like truncated BPTT it only sees the effect of ``theta``
    within one truncation, so it is biased for long horizons (compare `PES`).

    Fields not listed here are documented once, on its base classes: `TaskBatchEstimator`
    (``lopt``, ``family``, ``num_tasks``, ``horizon``, ``meta_loss``, ``loss_clip``),
    `TruncatedEstimator` (``truncation_length``) and `PerturbedEstimator` (``sigma``).

    Args:
      num_tasks: tasks (antithetic pairs) trained in parallel.

    References:
      Metz et al., "Understanding and correcting pathologies in the training of learned
      optimizers", arXiv 1810.10180.
      Vicol, Metz, Sohl-Dickstein, "Unbiased Gradient Estimation in Unrolled Computation
      Graphs with Persistent Evolution Strategies", ICML 2021 (arXiv 2112.13835).
    """

    def init(self, theta: MetaParams, key: chex.PRNGKey) -> UnrollState:
        return _common.init_runs(self, theta, key)

    def meta_gradient(self, theta, state, key):
        ml = MetaLoss(self.meta_loss, self.loss_clip)
        k_noise, k_unroll = jax.random.split(key)
        noise = _common.sample_noise(theta, k_noise, self.num_tasks, self.sigma)
        new_state, trajectory = unroll(
            self.lopt,
            self.family,
            _common.antithetic(theta, noise),
            broadcast_particles(state, self.NUM_PARTICLES),
            k_unroll,
            num_steps=self.truncation_length,
            horizon=_common.horizon_of(self),
            meta_loss=ml,
            theta_per_particle=True,
        )
        losses = ml.reduce(trajectory.values)  # [N, 2]
        diff = (losses[:, 0] - losses[:, 1]) / (2 * self.sigma**2)
        grad, bad = _common.zero_nonfinite(_common.weighted_mean(noise, diff))
        metrics = {"meta_loss": jnp.mean(losses), "gradient_nonfinite_fraction": bad}
        metrics.update(_common.trajectory_metrics(trajectory))
        return grad, select_particle(new_state, 0), metrics
