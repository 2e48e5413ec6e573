"""Random linear regression (a rotated, ill-conditioned quadratic): a paper task."""

from __future__ import annotations

import dataclasses

import chex
import jax
import jax.numpy as jnp

from optax_lopt import _checks
from optax_lopt.tasks.base import TaskFamily, set_checked


@dataclasses.dataclass(frozen=True)
class LinearRegression(TaskFamily):
    """``f(x) = 1/2 (x - x*)^T H (x - x*)`` with ``H = Q diag(lambda) Q^T``.

    Distribution per instance: ``Q`` a Haar-random orthogonal ``dim x dim`` matrix (QR of a
    standard normal matrix, signs fixed by the diagonal of R), eigenvalues ``lambda``
    independent and log-uniform in ``eigenvalue_range``, optimum ``x* ~ N(0, I)`` and start
    point ``x0 ~ N(0, I)``. Deterministic loss (full batch); ``Task.init`` returns ``x0`` and
    ignores its key. Defaults (dimension 5, eigenvalues in [1e-3, 1], 200 steps) are the
    configuration released with the paper.

    Args:
      dim: dimension of ``x``.
      eigenvalue_range: ``(low, high)`` for the log-uniform eigenvalues.
      num_steps: default inner horizon.

    References:
      Maheswaranathan et al., "Reverse engineering learned optimizers reveals known and novel
      mechanisms", arXiv 2011.02159.
    """

    dim: int = 5
    eigenvalue_range: tuple[float, float] = (1e-3, 1.0)
    num_steps: int = 200

    def __post_init__(self) -> None:
        set_checked(self, "dim")
        set_checked(self, "eigenvalue_range", _checks.value_range)
        set_checked(self, "num_steps")

    def sample_data(self, key: chex.PRNGKey) -> dict[str, jax.Array]:
        kq, kl, ks, kx = jax.random.split(key, 4)
        q, r = jnp.linalg.qr(jax.random.normal(kq, (self.dim, self.dim)))
        q = q * jnp.sign(jnp.diag(r))[None, :]
        low, high = self.eigenvalue_range
        eig = jnp.exp(
            jax.random.uniform(kl, (self.dim,), minval=jnp.log(low), maxval=jnp.log(high))
        )
        return {
            "hessian": (q * eig[None, :]) @ q.T,
            "x_star": jax.random.normal(ks, (self.dim,)),
            "x0": jax.random.normal(kx, (self.dim,)),
        }

    def init_params(self, data, key):
        del key
        return data["x0"]

    def loss_fn(self, data, params, key):
        del key
        diff = params - data["x_star"]
        return 0.5 * diff @ (data["hessian"] @ diff)
