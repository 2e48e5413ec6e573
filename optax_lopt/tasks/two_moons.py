"""Two-moons classification with a small tanh MLP: a paper task."""

from __future__ import annotations

import dataclasses

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from optax_lopt import _checks
from optax_lopt.tasks.base import TaskFamily, set_checked


class _TanhMLP(nn.Module):
    hidden_sizes: tuple[int, ...]

    @nn.compact
    def __call__(self, x):
        for width in self.hidden_sizes:
            x = jnp.tanh(nn.Dense(width)(x))
        return nn.Dense(1)(x)[..., 0]


def make_moons(key: chex.PRNGKey, num_points: int, noise: float) -> tuple[jax.Array, jax.Array]:
    """Draws two interleaved half circles, as scikit-learn's ``make_moons``, in JAX.

    Half the points (``num_points // 2``, label 0) lie on ``(cos t, sin t)``, the rest (label 1)
    on ``(1 - cos t, 1/2 - sin t)``, with angles ``t ~ U[0, pi]`` drawn independently per point
    and isotropic Gaussian noise of standard deviation ``noise`` added to every coordinate.

    Args:
      key: a ``jax.random`` key.
      num_points: total number of points.
      noise: noise standard deviation.

    Returns:
      ``(inputs, labels)`` of shapes ``[num_points, 2]`` and ``[num_points]`` (float 0/1).
    """
    kt, kn = jax.random.split(key)
    n_outer = num_points // 2
    t = jax.random.uniform(kt, (num_points,), minval=0.0, maxval=jnp.pi)
    labels = (jnp.arange(num_points) >= n_outer).astype(jnp.float32)
    outer = jnp.stack([jnp.cos(t), jnp.sin(t)], axis=-1)
    inner = jnp.stack([1.0 - jnp.cos(t), 0.5 - jnp.sin(t)], axis=-1)
    points = jnp.where(labels[:, None] > 0, inner, outer)
    return points + noise * jax.random.normal(kn, points.shape), labels


@dataclasses.dataclass(frozen=True)
class TwoMoons(TaskFamily):
    """Logistic regression on two moons with a flax MLP (two tanh hidden layers of 32).

    Distribution per instance: a fresh draw of ``num_points`` points from :func:`make_moons`
    with ``noise``; the network's initial weights come from the ``Task.init`` key (flax's
    default initialisers: LeCun-normal kernels, zero biases). Full batch: the loss is
    ``mean(sigmoid cross-entropy) + l2 * ||theta||_2``, where ``||theta||_2`` is the Euclidean
    norm (not squared) of all network weights and biases. ``validation_loss`` is the same
    objective on a second, independent draw of points stored with the instance.

    Args:
      num_points: points per instance.
      noise: standard deviation of the noise added to the points.
      hidden_sizes: widths of the tanh hidden layers.
      l2: weight of the norm penalty.
      num_steps: default inner horizon.

    References:
      Maheswaranathan et al., "Reverse engineering learned optimizers reveals known and novel
      mechanisms", arXiv 2011.02159.
    """

    num_points: int = 1024
    noise: float = 0.1
    hidden_sizes: tuple[int, ...] = (32, 32)
    l2: float = 5e-3
    num_steps: int = 200

    def __post_init__(self) -> None:
        set_checked(self, "num_points")
        set_checked(self, "noise", _checks.non_negative)
        set_checked(self, "hidden_sizes", _checks.positive_ints)
        set_checked(self, "l2", _checks.non_negative)
        set_checked(self, "num_steps")

    @property
    def _net(self) -> _TanhMLP:
        return _TanhMLP(self.hidden_sizes)

    def sample_data(self, key: chex.PRNGKey) -> dict[str, jax.Array]:
        ktrain, kvalid = jax.random.split(key)
        x, y = make_moons(ktrain, self.num_points, self.noise)
        vx, vy = make_moons(kvalid, self.num_points, self.noise)
        return {"inputs": x, "labels": y, "valid_inputs": vx, "valid_labels": vy}

    def init_params(self, data, key):
        return self._net.init(key, data["inputs"][:1])["params"]

    def _objective(self, params, inputs, labels):
        logits = self._net.apply({"params": params}, inputs)
        data_loss = jnp.mean(optax.sigmoid_binary_cross_entropy(logits, labels))
        sq = sum(jnp.sum(jnp.square(p)) for p in jax.tree.leaves(params))
        # sqrt with a safe gradient at exactly zero weights.
        norm = jnp.sqrt(jnp.maximum(sq, 1e-30))
        return data_loss + self.l2 * norm

    def loss_fn(self, data, params, key):
        del key
        return self._objective(params, data["inputs"], data["labels"])

    def validation_loss_fn(self, data, params, key):
        del key
        return self._objective(params, data["valid_inputs"], data["valid_labels"])
