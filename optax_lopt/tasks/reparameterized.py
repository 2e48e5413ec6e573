"""Task augmentation: reparameterise every parameter tensor by a random scale."""

from __future__ import annotations

import dataclasses
import math

import chex
import jax
import jax.numpy as jnp

from optax_lopt import _checks
from optax_lopt.tasks.base import TaskFamily, set_checked


@dataclasses.dataclass(frozen=True)
class Reparameterized(TaskFamily):
    """Widens any family by rescaling each parameter tensor by a random factor.

    Distribution per instance: a base instance from ``base``, and for each leaf of its params
    pytree one scale ``s`` log-uniform in ``scale_range``. The optimizer sees ``p' = p / s``
    (so ``Task.init`` returns the base init divided by ``s``) and the loss is
    ``base.loss(p' * s)``: the same function, with gradients multiplied by ``s`` and
    curvatures by ``s^2``. Optimizers that are not scale-invariant must adapt to it.

    Args:
      base: the family to augment.
      scale_range: ``(low, high)`` for the log-uniform per-tensor scales.

    References:
      Metz et al., "Tasks, stability, architecture, and compute: Training more effective
      learned optimizers, and using them to train themselves", arXiv 2009.11243 (task
      augmentation).
    """

    base: TaskFamily
    scale_range: tuple[float, float] = (1e-2, 1e2)

    def __post_init__(self) -> None:
        _checks.task_family("base", self.base)
        set_checked(self, "scale_range", _checks.value_range)

    @property
    def num_steps(self) -> int:  # type: ignore[override]
        """The base family's default horizon."""
        return self.base.num_steps

    def sample_data(self, key: chex.PRNGKey):
        kbase, kscale = jax.random.split(key)
        base_data = self.base.sample_data(kbase)
        shapes = jax.eval_shape(self.base.init_params, base_data, kbase)
        leaves, treedef = jax.tree.flatten(shapes)
        low, high = self.scale_range
        log_scales = jax.random.uniform(
            kscale, (len(leaves),), minval=math.log(low), maxval=math.log(high)
        )
        scales = jax.tree.unflatten(treedef, list(jnp.exp(log_scales)))
        return {"base": base_data, "scales": scales}

    def init_params(self, data, key):
        params = self.base.init_params(data["base"], key)
        return jax.tree.map(lambda p, s: (p / s).astype(p.dtype), params, data["scales"])

    def _unscale(self, data, params):
        return jax.tree.map(lambda p, s: (p * s).astype(p.dtype), params, data["scales"])

    def loss_fn(self, data, params, key):
        return self.base.loss_fn(data["base"], self._unscale(data, params), key)

    def validation_loss_fn(self, data, params, key):
        return self.base.validation_loss_fn(data["base"], self._unscale(data, params), key)


def reparameterize(
    base: TaskFamily, scale_range: tuple[float, float] = (1e-2, 1e2)
) -> Reparameterized:
    """Returns ``base`` augmented by random per-tensor scales (see `Reparameterized`)."""
    return Reparameterized(base, scale_range)
