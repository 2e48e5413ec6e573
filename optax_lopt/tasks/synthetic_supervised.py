"""Generated supervised problems: softmax regression on Gaussian classes, MLP regression of a
random teacher network.

Training families for a general-purpose optimizer, with the shapes of problems users bring
(a linear classifier whose loss goes to zero on separable data, a regression MLP trained full
batch) but on data drawn per instance from code, so they share nothing with the bundled data
sets of the held-out suite (``optax_lopt.tasks.unseen``). As there, the output layer starts at
zero, so every instance starts from the same prediction: uniform class probabilities, or a
prediction of 0 for standardised targets.
"""

from __future__ import annotations

import dataclasses

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from optax_lopt import _checks
from optax_lopt.tasks.base import TaskFamily, set_checked


class _ZeroOutputMLP(nn.Module):
    """An MLP (``activation`` between layers) whose output layer starts at zero."""

    hidden: tuple[int, ...]
    outputs: int
    activation: str = "relu"

    @nn.compact
    def __call__(self, x):
        act = getattr(nn, self.activation)
        for width in self.hidden:
            x = act(nn.Dense(width)(x))
        return nn.Dense(self.outputs, kernel_init=nn.initializers.zeros_init())(x)


def _minibatch(x: jax.Array, y: jax.Array, batch_size: int | None, key: chex.PRNGKey):
    if batch_size is None:
        return x, y
    index = jax.random.randint(key, (batch_size,), 0, x.shape[0])
    return x[index], y[index]


@dataclasses.dataclass(frozen=True)
class GaussianSoftmax(TaskFamily):
    """Softmax regression (a linear classifier) on Gaussian classes with uneven feature scales.

    Distribution per instance: ``num_classes`` class means drawn ``N(0, separation**2 / dim)``
    per coordinate, ``num_points`` points ``mean[y] + N(0, I)`` with balanced labels, then
    every feature multiplied by a scale log-uniform in ``[1 / feature_spread,
    feature_spread]`` (so the Hessian's conditioning varies between instances). With a large
    ``separation`` the classes are nearly separable and the loss keeps falling as the weights
    grow. The weights start at zero (initial loss ``log(num_classes)``). Loss: mean
    cross-entropy over all points, or over ``batch_size`` drawn with replacement from the
    loss key; validation: a second draw from the same classes.

    Args:
      dim: number of features.
      num_classes: number of classes.
      num_points: training points per instance.
      separation: scale of the class means relative to the unit noise.
      feature_spread: features are scaled by up to this factor either way.
      batch_size: minibatch size, or None for full batch.
      num_steps: default inner horizon.
    """

    dim: int = 16
    num_classes: int = 3
    num_points: int = 256
    separation: float = 4.0
    feature_spread: float = 3.0
    batch_size: int | None = None
    num_steps: int = 200

    def __post_init__(self) -> None:
        for name in ("dim", "num_classes", "num_points", "num_steps"):
            set_checked(self, name)
        set_checked(self, "separation", _checks.positive)
        set_checked(self, "feature_spread", _checks.at_least, bound=1.0)
        if self.batch_size is not None:
            set_checked(self, "batch_size")

    @property
    def _net(self) -> _ZeroOutputMLP:
        return _ZeroOutputMLP((), self.num_classes)

    def _draw(self, key, means, scales):
        k_noise, k_perm = jax.random.split(key)
        labels = jax.random.permutation(k_perm, jnp.arange(self.num_points) % self.num_classes)
        x = means[labels] + jax.random.normal(k_noise, (self.num_points, self.dim))
        return x * scales, labels

    def sample_data(self, key: chex.PRNGKey) -> dict[str, jax.Array]:
        k_means, k_scales, k_train, k_valid = jax.random.split(key, 4)
        means = jax.random.normal(k_means, (self.num_classes, self.dim))
        means = means * self.separation / jnp.sqrt(self.dim)
        log_spread = jnp.log(self.feature_spread)
        scales = jnp.exp(jax.random.uniform(k_scales, (self.dim,), minval=-1.0) * log_spread)
        x, y = self._draw(k_train, means, scales)
        vx, vy = self._draw(k_valid, means, scales)
        return {"inputs": x, "labels": y, "valid_inputs": vx, "valid_labels": vy}

    def init_params(self, data, key):
        return self._net.init(key, data["inputs"][:1])["params"]

    def _objective(self, params, x, y):
        logits = self._net.apply({"params": params}, x)
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))

    def loss_fn(self, data, params, key):
        x, y = _minibatch(data["inputs"], data["labels"], self.batch_size, key)
        return self._objective(params, x, y)

    def validation_loss_fn(self, data, params, key):
        del key
        return self._objective(params, data["valid_inputs"], data["valid_labels"])


@dataclasses.dataclass(frozen=True)
class TeacherRegression(TaskFamily):
    """A ReLU MLP regressing the output of a random tanh teacher network, full batch.

    Distribution per instance: inputs ``N(0, I)`` in ``dim`` dimensions, targets a random
    one-hidden-layer tanh network of ``teacher_width`` units (flax default initialisers) plus
    ``noise`` times unit Gaussian noise, standardised with the training points' mean and
    standard deviation, so predicting 0 gives a loss near 1; the student's hidden layers from
    the ``Task.init`` key, its output layer at zero. Loss: mean squared error over all
    ``num_points`` points (or ``batch_size`` of them); validation: fresh inputs through the
    same teacher.

    Args:
      dim: input dimension.
      hidden: the student's hidden-layer widths.
      teacher_width: hidden units of the teacher.
      num_points: training points per instance.
      noise: target noise relative to the teacher's output scale of about 1.
      batch_size: minibatch size, or None for full batch.
      num_steps: default inner horizon.
    """

    dim: int = 10
    hidden: tuple[int, ...] = (32, 32)
    teacher_width: int = 16
    num_points: int = 256
    noise: float = 0.1
    batch_size: int | None = None
    num_steps: int = 200

    def __post_init__(self) -> None:
        for name in ("dim", "teacher_width", "num_points", "num_steps"):
            set_checked(self, name)
        set_checked(self, "hidden", _checks.positive_ints)
        set_checked(self, "noise", _checks.non_negative)
        if self.batch_size is not None:
            set_checked(self, "batch_size")

    def _draw(self, key, teacher, teacher_params):
        k_x, k_noise = jax.random.split(key)
        x = jax.random.normal(k_x, (self.num_points, self.dim))
        y = teacher.apply({"params": teacher_params}, x)[:, 0]
        return x, y + self.noise * jax.random.normal(k_noise, y.shape)

    def sample_data(self, key: chex.PRNGKey) -> dict[str, jax.Array]:
        k_teacher, k_train, k_valid = jax.random.split(key, 3)
        teacher = nn.Sequential([nn.Dense(self.teacher_width), nn.tanh, nn.Dense(1)])
        teacher_params = teacher.init(k_teacher, jnp.zeros((1, self.dim)))["params"]
        x, y = self._draw(k_train, teacher, teacher_params)
        vx, vy = self._draw(k_valid, teacher, teacher_params)
        mean, std = jnp.mean(y), jnp.maximum(jnp.std(y), 1e-6)
        return {
            "inputs": x,
            "targets": (y - mean) / std,
            "valid_inputs": vx,
            "valid_targets": (vy - mean) / std,
        }

    @property
    def _net(self) -> _ZeroOutputMLP:
        return _ZeroOutputMLP(self.hidden, 1)

    def init_params(self, data, key):
        return self._net.init(key, data["inputs"][:1])["params"]

    def _objective(self, params, x, y):
        return jnp.mean(jnp.square(self._net.apply({"params": params}, x)[:, 0] - y))

    def loss_fn(self, data, params, key):
        x, y = _minibatch(data["inputs"], data["targets"], self.batch_size, key)
        return self._objective(params, x, y)

    def validation_loss_fn(self, data, params, key):
        del key
        return self._objective(params, data["valid_inputs"], data["valid_targets"])
