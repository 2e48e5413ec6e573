"""The two-dimensional Rosenbrock function: a paper task."""

from __future__ import annotations

import dataclasses

import chex
import jax
import jax.numpy as jnp

from optax_lopt.tasks.base import TaskFamily, set_checked


@dataclasses.dataclass(frozen=True)
class Rosenbrock(TaskFamily):
    """``f(x, y) = (1 - x)^2 + 100 (y - x^2)^2``, minimum 0 at ``(1, 1)``.

    Distribution per instance: the start point only, ``x ~ U[-2, 2]`` and ``y ~ U[-1, 3]``
    independently. Params are the array ``[x, y]``; the loss is deterministic and
    ``Task.init`` ignores its key.

    Args:
      num_steps: default inner horizon.

    References:
      Rosenbrock, "An automatic method for finding the greatest or least value of a function",
      The Computer Journal (1960).
      Maheswaranathan et al., arXiv 2011.02159.
    """

    num_steps: int = 200

    def __post_init__(self) -> None:
        set_checked(self, "num_steps")

    def sample_data(self, key: chex.PRNGKey) -> dict[str, jax.Array]:
        start = jax.random.uniform(
            key, (2,), minval=jnp.array([-2.0, -1.0]), maxval=jnp.array([2.0, 3.0])
        )
        return {"x0": start}

    def init_params(self, data, key):
        del key
        return data["x0"]

    def loss_fn(self, data, params, key):
        del data, key
        x, y = params[0], params[1]
        return (1.0 - x) ** 2 + 100.0 * (y - x**2) ** 2
