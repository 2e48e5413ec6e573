"""The variational hybrid: reparameterisation and ES gradients combined by inverse variance."""

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


def _combination_weight(r: jax.Array, e: jax.Array) -> jax.Array:
    """Per coordinate, the weight ``w`` in [0, 1] of ``w mean(r) + (1 - w) mean(e)``.

    ``w = (v_e - c) / (v_r + v_e - 2 c)`` from the sample variances ``v_r, v_e`` and the sample
    covariance ``c`` of the per-task samples (axis 0), clipped to [0, 1]: the minimum-variance
    combination of two unbiased estimates, which is inverse-variance weighting when ``c = 0``.
    """
    n = r.shape[0]
    dr = r - jnp.mean(r, axis=0)
    de = e - jnp.mean(e, axis=0)
    v_r = jnp.sum(dr * dr, axis=0) / (n - 1)
    v_e = jnp.sum(de * de, axis=0) / (n - 1)
    c = jnp.sum(dr * de, axis=0) / (n - 1)
    denominator = v_r + v_e - 2.0 * c  # the variance of r - e: >= 0
    tiny = jnp.finfo(denominator.dtype).tiny
    weight = (v_e - c) / jnp.maximum(denominator, tiny)
    # Identical samples (r == e): either estimate will do.
    weight = jnp.where(denominator > tiny, weight, 0.5)
    return jnp.clip(weight, 0.0, 1.0)


@dataclasses.dataclass(frozen=True)
class Hybrid(TruncatedEstimator, PerturbedEstimator):
    """Per-coordinate inverse-variance combination of two estimates of one smoothed gradient.

    Both estimate the gradient of the Gaussian-smoothed truncation meta-loss
    ``E_eps L(theta + eps)``, ``eps ~ N(0, sigma^2 I)``, from the same antithetic runs (one
    pair per task, both started from the task's persistent state, as in `TruncatedES`):

    - reparameterisation: ``r_i = (grad L(theta + eps_i) + grad L(theta - eps_i)) / 2`` by
      backpropagation through the truncation;
    - ES: ``e_i = eps_i (L(theta + eps_i) - L(theta - eps_i)) / (2 sigma^2)``.

    With means ``r, e`` over the ``num_tasks`` samples, per-coordinate sample variances
    ``v_r, v_e`` and covariance ``c``, the estimate is ``w r + (1 - w) e`` with
    ``w = clip((v_e - c) / (v_r + v_e - 2 c), 0, 1)``. For uncorrelated parts (``c = 0``) this
    is the paper's inverse-variance weighting ``(r / v_r + e / v_e) / (1 / v_r + 1 / v_e)``;
    because both parts here come from the same runs they are correlated, and the covariance
    term (with the clipping) keeps the combination's variance at most that of the better
    part, which plain inverse-variance weighting does not guarantee. A coordinate whose
    reparameterisation samples are not all finite (exploding backpropagation) uses ES alone.
    Needs ``num_tasks >= 2``.

    Fields not listed here are documented once, on its base classes: `TaskBatchEstimator`
    (``lopt``, ``family``, ``num_tasks``, ``horizon``, ``meta_loss``, ``loss_clip``),
    `TruncatedEstimator` (``truncation_length``) and `PerturbedEstimator` (``sigma``).

    Args:
      num_tasks: tasks (antithetic pairs) trained in parallel, at least 2.
      remat: rematerialise each inner step in the backward pass.

    References:
      Metz et al., "Understanding and correcting pathologies in the training of learned
      optimizers", arXiv 1810.10180.
      Parmas et al., "PIPPS: Flexible Model-Based Policy Search Robust to the Curse of Chaos",
      arXiv 1902.01240.
    """

    remat: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_tasks < 2:
            raise ValueError(
                f"num_tasks: expected at least 2 (variances are estimated across tasks), "
                f"got {self.num_tasks!r}."
            )

    def init(self, theta: MetaParams, key: chex.PRNGKey) -> UnrollState:
        return _common.init_runs(self, theta, key)

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
                broadcast_particles(state, self.NUM_PARTICLES),
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
            weight = _combination_weight(r_samples, e_samples)
            weight = jnp.where(finite, weight, 0.0)
            r_mean = jnp.mean(r_samples, axis=0)
            e_mean = jnp.mean(e_samples, axis=0)
            hybrid = weight * r_mean + (1.0 - weight) * e_mean
            r_out = jnp.where(finite, r_mean, jnp.nan)
            return r_out, e_mean, hybrid, jnp.mean(weight)

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
        grad, bad = _common.zero_nonfinite(components["hybrid"])
        metrics["gradient_nonfinite_fraction"] = bad
        return grad, new_state, metrics
