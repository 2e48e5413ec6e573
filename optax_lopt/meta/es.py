"""Antithetic evolution strategies over whole inner trajectories."""

from __future__ import annotations

import dataclasses

import chex
import jax
import jax.numpy as jnp

from optax_lopt.base import MetaParams
from optax_lopt.meta import _common
from optax_lopt.meta.base import PerturbedEstimator
from optax_lopt.meta.full_bptt import WholeUnrollState
from optax_lopt.meta.meta_losses import MetaLoss
from optax_lopt.meta.unroll import init_state, unroll


@dataclasses.dataclass(frozen=True)
class ES(PerturbedEstimator):
    """Antithetic ES gradient of the Gaussian-smoothed meta-loss of complete trajectories.

    Each call draws ``num_tasks`` fresh instances and one ``eps_i ~ N(0, sigma^2 I)`` per
    instance; the pair ``theta +/- eps_i`` trains the same instance on the same minibatches
    from the same initial params for ``horizon`` steps, and

        g = mean_i eps_i (L(theta + eps_i) - L(theta - eps_i)) / (2 sigma^2),

    an unbiased estimate of the gradient of ``E_eps L(theta + eps)``. No backpropagation, so
    the cost is two forward unrolls and chaotic inner dynamics cannot explode the gradient.

    Fields not listed here are documented once, on its base classes: `TaskBatchEstimator`
    (``lopt``, ``family``, ``num_tasks``, ``horizon``, ``meta_loss``, ``loss_clip``) and
    `PerturbedEstimator` (``sigma``).

    Args:
      num_tasks: antithetic pairs (one instance each) per call.
      horizon: inner steps per trajectory (None: ``family.num_steps``).

    References:
      Salimans et al., "Evolution Strategies as a Scalable Alternative to Reinforcement
      Learning", arXiv 1703.03864.
      Metz et al., arXiv 1810.10180.
    """

    def init(self, theta: MetaParams, key: chex.PRNGKey) -> WholeUnrollState:
        del theta, key
        return WholeUnrollState(jnp.zeros((), jnp.int32))

    def meta_gradient(self, theta, state, key):
        ml = MetaLoss(self.meta_loss, self.loss_clip)
        horizon = _common.horizon_of(self)
        k_noise, k_init, k_unroll = jax.random.split(key, 3)
        noise = _common.sample_noise(theta, k_noise, self.num_tasks, self.sigma)
        runs = init_state(
            self.lopt,
            self.family,
            theta,
            k_init,
            num_tasks=self.num_tasks,
            horizon=horizon,
            num_particles=self.NUM_PARTICLES,
            stagger=False,
        )
        _, trajectory = unroll(
            self.lopt,
            self.family,
            _common.antithetic(theta, noise),
            runs,
            k_unroll,
            num_steps=horizon,
            horizon=horizon,
            meta_loss=ml,
            theta_per_particle=True,
        )
        losses = ml.reduce(trajectory.values)  # [N, 2]
        diff = (losses[:, 0] - losses[:, 1]) / (2 * self.sigma**2)
        grad, bad = _common.zero_nonfinite(_common.weighted_mean(noise, diff))
        metrics = {"meta_loss": jnp.mean(losses), "gradient_nonfinite_fraction": bad}
        metrics.update(_common.trajectory_metrics(trajectory))
        return grad, WholeUnrollState(state.iteration + 1), metrics
