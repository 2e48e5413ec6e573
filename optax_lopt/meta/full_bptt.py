"""Backpropagation through whole inner trajectories, with rematerialisation."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp

from optax_lopt.base import MetaParams
from optax_lopt.meta import _common
from optax_lopt.meta.base import TaskBatchEstimator
from optax_lopt.meta.meta_losses import MetaLoss
from optax_lopt.meta.unroll import init_state, unroll


class WholeUnrollState(NamedTuple):
    """State of the whole-unroll estimators: only a call counter (runs start fresh)."""

    iteration: jax.Array


@dataclasses.dataclass(frozen=True)
class FullBPTT(TaskBatchEstimator):
    """Exact gradient of the meta-loss of complete trajectories.

    Every call draws ``num_tasks`` fresh instances, trains each from its initial params for
    ``horizon`` steps and backpropagates through the whole unroll (each step rematerialised by
    ``jax.checkpoint`` when ``remat``, so memory holds one carry per step rather than every
    intermediate). Unbiased for deterministic tasks, but its variance and cost grow with the
    horizon and it can explode on chaotic inner dynamics.

    Fields not listed here are documented once, on its base class `TaskBatchEstimator`
    (``lopt``, ``family``, ``num_tasks``, ``horizon``, ``meta_loss``, ``loss_clip``).

    Args:
      num_tasks: tasks per call.
      horizon: inner steps per trajectory (None: ``family.num_steps``).
      remat: rematerialise each inner step in the backward pass.

    References:
      Metz et al., "Understanding and correcting pathologies in the training of learned
      optimizers", arXiv 1810.10180.
    """

    remat: bool = True

    def init(self, theta: MetaParams, key: chex.PRNGKey) -> WholeUnrollState:
        del theta, key
        return WholeUnrollState(jnp.zeros((), jnp.int32))

    def meta_gradient(self, theta, state, key):
        ml = MetaLoss(self.meta_loss, self.loss_clip)
        horizon = _common.horizon_of(self)
        k_init, k_unroll = jax.random.split(key)

        def objective(th):
            runs = init_state(
                self.lopt,
                self.family,
                th,
                k_init,
                num_tasks=self.num_tasks,
                horizon=horizon,
                stagger=False,
            )
            _, trajectory = unroll(
                self.lopt,
                self.family,
                th,
                runs,
                k_unroll,
                num_steps=horizon,
                horizon=horizon,
                meta_loss=ml,
                remat=self.remat,
            )
            return jnp.mean(ml.reduce(trajectory.values)), trajectory

        (value, trajectory), grad = jax.value_and_grad(objective, has_aux=True)(theta)
        grad, bad = _common.zero_nonfinite(grad)
        metrics = {"meta_loss": value, "gradient_nonfinite_fraction": bad}
        metrics.update(_common.trajectory_metrics(trajectory))
        return grad, WholeUnrollState(state.iteration + 1), metrics
