"""Persistent Evolution Strategies: unbiased ES over truncated, persistent unrolls."""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp

from optax_lopt.base import MetaParams
from optax_lopt.meta import _common
from optax_lopt.meta.base import PerturbedEstimator, TruncatedEstimator
from optax_lopt.meta.meta_losses import MetaLoss
from optax_lopt.meta.unroll import UnrollState, init_state, unroll


class PESState(NamedTuple):
    """Persistent PES state.

    Attributes:
      runs: the antithetic runs, two particles per task (``+eps`` and ``-eps``).
      accumulator: per task, the sum of the perturbations applied since its current
        trajectory started; theta's structure with leading dimension ``num_tasks``.
    """

    runs: UnrollState
    accumulator: Any


@dataclasses.dataclass(frozen=True)
class PES(TruncatedEstimator, PerturbedEstimator):
    """Persistent Evolution Strategies (Vicol, Metz, Sohl-Dickstein, ICML 2021).

    Each task keeps two persistent runs, one trained with ``theta + eps`` and one with
    ``theta - eps``, where a fresh ``eps_i ~ N(0, sigma^2 I)`` is drawn per task and
    truncation, and an accumulator ``xi_i`` of the perturbations its trajectory has seen.
    The estimate for one truncation is

        g = mean_i [(xi_i + eps_i) dL_i^pre + eps_i dL_i^post] / (2 sigma^2),

    with ``dL = L^+ - L^-`` split at the task's first reset within the truncation: the steps
    before it belong to the old trajectory (which saw every perturbation since it began), the
    steps after it to trajectories that started during this truncation (which saw only
    ``eps_i``). The accumulator becomes ``xi_i + eps_i`` without a reset, ``eps_i`` after a
    reset inside the truncation, and 0 after a reset at its last step. Summed over the
    truncations of a trajectory, the estimates are unbiased for the gradient of the smoothed
    meta-loss of the whole trajectory; truncated ES is not.

    Fields not listed here are documented once, on its base classes: `TaskBatchEstimator`
    (``lopt``, ``family``, ``num_tasks``, ``horizon``, ``meta_loss``, ``loss_clip``),
    `TruncatedEstimator` (``truncation_length``) and `PerturbedEstimator` (``sigma``).

    Args:
      num_tasks: tasks (antithetic pairs) trained in parallel.

    References:
      Vicol, Metz, Sohl-Dickstein, "Unbiased Gradient Estimation in Unrolled Computation
      Graphs with Persistent Evolution Strategies", ICML 2021 (arXiv 2112.13835).
    """

    def init(self, theta: MetaParams, key: chex.PRNGKey) -> PESState:
        runs = init_state(
            self.lopt,
            self.family,
            theta,
            key,
            num_tasks=self.num_tasks,
            horizon=_common.horizon_of(self),
            num_particles=self.NUM_PARTICLES,
        )
        accumulator = jax.tree.map(
            lambda t: jnp.zeros((self.num_tasks,) + jnp.shape(t), jnp.result_type(t, jnp.float32)),
            theta,
        )
        return PESState(runs, accumulator)

    def meta_gradient(self, theta, state, key):
        ml = MetaLoss(self.meta_loss, self.loss_clip)
        k_noise, k_unroll = jax.random.split(key)
        noise = _common.sample_noise(theta, k_noise, self.num_tasks, self.sigma)
        runs, trajectory = unroll(
            self.lopt,
            self.family,
            _common.antithetic(theta, noise),
            state.runs,
            k_unroll,
            num_steps=self.truncation_length,
            horizon=_common.horizon_of(self),
            meta_loss=ml,
            theta_per_particle=True,
        )
        first = (trajectory.segment == 0)[..., None]  # [T, N, 1]
        pre = ml.reduce(trajectory.values, first)  # [N, 2]
        post = ml.reduce(trajectory.values, ~first)
        scale = 1.0 / (2 * self.sigma**2)
        d_pre = (pre[:, 0] - pre[:, 1]) * scale
        d_post = (post[:, 0] - post[:, 1]) * scale
        total = jax.tree.map(lambda a, e: a + e, state.accumulator, noise)
        grad = jax.tree.map(
            lambda a, b: a + b,
            _common.weighted_mean(total, d_pre),
            _common.weighted_mean(noise, d_post),
        )
        grad, bad = _common.zero_nonfinite(grad)

        reset_any = jnp.any(trajectory.reset, axis=0)
        reset_last = trajectory.reset[-1]

        def next_accumulator(a, e):
            shape = (-1,) + (1,) * (a.ndim - 1)
            fresh = jnp.where(reset_last.reshape(shape), jnp.zeros_like(e), e)
            return jnp.where(reset_any.reshape(shape), fresh, a + e)

        accumulator = jax.tree.map(next_accumulator, state.accumulator, noise)
        metrics = {"meta_loss": jnp.mean(pre + post), "gradient_nonfinite_fraction": bad}
        metrics.update(_common.trajectory_metrics(trajectory))
        return grad, PESState(runs, accumulator), metrics
