"""The variational hybrid: reparameterisation and ES gradients combined by inverse variance."""

from __future__ import annotations

import dataclasses

import chex
import jax
import jax.numpy as jnp

from optax_lopt.base import LearnedOptimizer, MetaParams
from optax_lopt.meta import _common
from optax_lopt.meta.base import GradientEstimator
from optax_lopt.meta.meta_losses import MetaLoss
from optax_lopt.meta.unroll import (
    UnrollState,
    broadcast_particles,
    init_state,
    select_particle,
    unroll,
)
from optax_lopt.tasks.base import TaskFamily


def _mean_and_variance(samples: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean over axis 0 and the variance of that mean (unbiased sample variance / n)."""
    n = samples.shape[0]
    mean = jnp.mean(samples, axis=0)
    var = jnp.sum(jnp.square(samples - mean), axis=0) / (n - 1)
    return mean, var / n


@dataclasses.dataclass(frozen=True)
class Hybrid(GradientEstimator):
    """Per-coordinate inverse-variance combination of two estimates of one smoothed gradient.

    Both estimate the gradient of the Gaussian-smoothed truncation meta-loss
    ``E_eps L(theta + eps)``, ``eps ~ N(0, sigma^2 I)``, from the same antithetic runs (one
    pair per task, both started from the task's persistent state, as in `TruncatedES`):

    - reparameterisation: ``r_i = (grad L(theta + eps_i) + grad L(theta - eps_i)) / 2`` by
      backpropagation through the truncation;
    - ES: ``e_i = eps_i (L(theta + eps_i) - L(theta - eps_i)) / (2 sigma^2)``.

    With means ``r, e`` over the ``num_tasks`` samples and per-coordinate variances of those
    means ``v_r, v_e`` (sample variances / ``num_tasks``), the estimate is
    ``(r / v_r + e / v_e) / (1 / v_r + 1 / v_e)``. A coordinate whose reparameterisation
    samples are not all finite (exploding backpropagation) uses ES alone. Needs
    ``num_tasks >= 2``.

    Args:
      lopt: the learned optimizer.
      family: the task family.
      num_tasks: tasks (antithetic pairs) trained in parallel, at least 2.
      truncation_length: inner steps per call.
      horizon: trajectory length before a task resets (None: ``family.num_steps``).
      sigma: standard deviation of the perturbations.
      meta_loss: a name in ``optax_lopt.meta.meta_losses.META_LOSS_NAMES``.
      loss_clip: per-step normalised losses above this count as this.
      remat: rematerialise each inner step in the backward pass.

    References:
      Metz et al., "Understanding and correcting pathologies in the training of learned
      optimizers", arXiv 1810.10180.
      Parmas et al., "PIPPS: Flexible Model-Based Policy Search Robust to the Curse of Chaos",
      arXiv 1902.01240.
    """

    lopt: LearnedOptimizer
    family: TaskFamily
    num_tasks: int = 8
    truncation_length: int = 50
    horizon: int | None = None
    sigma: float = 0.01
    meta_loss: str = "mean_normalized"
    loss_clip: float = 1e3
    remat: bool = False

    def __post_init__(self) -> None:
        _common.check_config(self)
        if self.num_tasks < 2:
            raise ValueError(
                f"num_tasks: expected at least 2 (variances are estimated across tasks), "
                f"got {self.num_tasks!r}."
            )

    def init(self, theta: MetaParams, key: chex.PRNGKey) -> UnrollState:
        return init_state(
            self.lopt,
            self.family,
            theta,
            key,
            num_tasks=self.num_tasks,
            horizon=_common.horizon_of(self),
        )

    def gradient_components(self, theta, state, key):
        """Like :meth:`meta_gradient`, with both parts of the estimate.

        Returns:
          ``(components, new_state, metrics)`` where ``components`` maps
          ``"reparameterization"``, ``"es"`` and ``"hybrid"`` to gradients shaped like
          ``theta`` (non-finite entries not yet zeroed).
        """
        ml = MetaLoss(self.meta_loss, self.loss_clip)
        k_noise, k_unroll = jax.random.split(key)
        noise = _common.sample_noise(theta, k_noise, self.num_tasks, self.sigma)

        def objective(thetas):
            new_state, trajectory = unroll(
                self.lopt,
                self.family,
                thetas,
                broadcast_particles(state, 2),
                k_unroll,
                num_steps=self.truncation_length,
                horizon=_common.horizon_of(self),
                meta_loss=ml,
                theta_per_particle=True,
                remat=self.remat,
            )
            losses = ml.reduce(trajectory.values)  # [N, 2]
            return jnp.sum(losses), (losses, new_state, trajectory)

        thetas = _common.antithetic(theta, noise)
        (_, (losses, new_state, trajectory)), per_run = jax.value_and_grad(objective, has_aux=True)(
            thetas
        )
        diff = (losses[:, 0] - losses[:, 1]) / (2 * self.sigma**2)

        def combine(r_runs, e):
            r_samples = jnp.mean(r_runs, axis=1)  # [N, ...]
            e_samples = diff.reshape((-1,) + (1,) * (e.ndim - 1)) * e
            finite = jnp.all(jnp.isfinite(r_samples), axis=0)
            r_samples = jnp.where(finite, r_samples, 0.0)
            r_mean, r_var = _mean_and_variance(r_samples)
            e_mean, e_var = _mean_and_variance(e_samples)
            tiny = jnp.finfo(r_var.dtype).tiny
            w_r = jnp.where(finite, 1.0 / jnp.maximum(r_var, tiny), 0.0)
            w_e = 1.0 / jnp.maximum(e_var, tiny)
            hybrid = (w_r * r_mean + w_e * e_mean) / (w_r + w_e)
            r_out = jnp.where(finite, r_mean, jnp.nan)
            return r_out, e_mean, hybrid, jnp.mean(w_r / (w_r + w_e))

        parts = jax.tree.map(combine, per_run, noise)
        treedef = jax.tree.structure(theta)
        leaves = treedef.flatten_up_to(parts)
        components = {
            name: jax.tree.unflatten(treedef, [leaf[i] for leaf in leaves])
            for i, name in enumerate(("reparameterization", "es", "hybrid"))
        }
        weight = jnp.mean(jnp.stack([leaf[3] for leaf in leaves]))
        metrics = {"meta_loss": jnp.mean(losses), "reparameterization_weight": weight}
        metrics.update(_common.trajectory_metrics(trajectory))
        return components, select_particle(new_state, 0), metrics

    def meta_gradient(self, theta, state, key):
        components, new_state, metrics = self.gradient_components(theta, state, key)
        grad, bad = _common.clean_gradient(components["hybrid"])
        metrics["gradient_nonfinite_fraction"] = bad
        return grad, new_state, metrics
