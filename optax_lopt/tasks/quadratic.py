"""A 10-d random diagonal quadratic: the fast family for tests and benchmarks."""

from __future__ import annotations

import dataclasses

import chex
import jax
import jax.numpy as jnp

from optax_lopt import _checks
from optax_lopt.tasks.base import TaskFamily, set_checked


@dataclasses.dataclass(frozen=True)
class Quadratic(TaskFamily):
    """Random axis-aligned quadratics ``f(x) = 1/2 sum_i a_i (x_i - c_i)^2``.

    Distribution per instance: curvatures ``a_i`` log-uniform in ``curvature_range``
    (independent per coordinate), centre ``c ~ N(0, I)`` and start point ``x0 ~ N(0, I)``, all
    of dimension ``dim``. The start point is part of the instance, so ``Task.init`` ignores its
    key. With ``noise_scale > 0`` the loss adds ``noise_scale * <z, x>``, ``z ~ N(0, I)`` drawn
    from the loss key: an unbiased stochastic gradient of the same quadratic.

    Args:
      dim: dimension of ``x``.
      curvature_range: ``(low, high)`` for the log-uniform curvatures.
      noise_scale: standard deviation of the additive gradient noise.
      num_steps: default inner horizon.

    References:
      Wu, Ren, Liao, Grosse, "Understanding Short-Horizon Bias in Stochastic Meta-Optimization",
      arXiv 1803.02021 (noisy quadratics as a model problem).
    """

    dim: int = 10
    curvature_range: tuple[float, float] = (1e-2, 1.0)
    noise_scale: float = 0.0
    num_steps: int = 100

    def __post_init__(self) -> None:
        set_checked(self, "dim")
        set_checked(self, "curvature_range", _checks.value_range)
        set_checked(self, "noise_scale", _checks.non_negative)
        set_checked(self, "num_steps")

    def sample_data(self, key: chex.PRNGKey) -> dict[str, jax.Array]:
        ka, kc, kx = jax.random.split(key, 3)
        low, high = self.curvature_range
        log_a = jax.random.uniform(ka, (self.dim,), minval=jnp.log(low), maxval=jnp.log(high))
        return {
            "curvature": jnp.exp(log_a),
            "center": jax.random.normal(kc, (self.dim,)),
            "x0": jax.random.normal(kx, (self.dim,)),
        }

    def init_params(self, data, key):
        del key
        return data["x0"]

    def loss_fn(self, data, params, key):
        diff = params - data["center"]
        loss = 0.5 * jnp.sum(data["curvature"] * diff * diff)
        if self.noise_scale > 0:
            z = jax.random.normal(key, params.shape, params.dtype)
            loss = loss + self.noise_scale * jnp.sum(z * params)
        return loss
