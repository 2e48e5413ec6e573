"""scikit-learn's bundled 8x8 digits: loading, the fixed split, masked minibatches."""

from __future__ import annotations

import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_lopt.tasks.base import TaskFamily

NUM_CLASSES = 10
VALIDATION_FRACTION = 0.2


@functools.lru_cache(maxsize=1)
def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Returns ``(train_x, train_y, valid_x, valid_y)``: pixels in [0, 1], shape [n, 8, 8].

    The 1797 images are shuffled once with numpy seed 0; the last 20% (360) are validation.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)
    labels = digits.target.astype(np.int32)
    order = np.random.default_rng(0).permutation(len(labels))
    images, labels = images[order], labels[order]
    num_valid = int(round(VALIDATION_FRACTION * len(labels)))
    cut = len(labels) - num_valid
    return images[:cut], labels[:cut], images[cut:], labels[cut:]


def sample_width_masks(key, choices: tuple[int, ...], num_layers: int) -> tuple[jax.Array, ...]:
    """Per layer, a mask of length ``max(choices)`` whose first ``w ~ U(choices)`` entries are 1."""
    widths = jax.random.choice(key, jnp.asarray(choices), (num_layers,))
    width_max = max(choices)
    return tuple((jnp.arange(width_max) < widths[i]).astype(jnp.float32) for i in range(num_layers))


def sample_batch_size(key, choices: tuple[int, ...]) -> jax.Array:
    """A batch size drawn uniformly from ``choices`` (int32 scalar)."""
    return jax.random.choice(key, jnp.asarray(choices, jnp.int32))


def train_minibatch_loss(logits_fn, batch_size, max_batch: int, key) -> jax.Array:
    """Mean cross-entropy over a minibatch of ``batch_size`` training images.

    ``max_batch`` indices are drawn uniformly with replacement; only the first ``batch_size``
    count, so instances with different batch sizes share array shapes.
    """
    train_x, train_y, _, _ = digits_split()
    index = jax.random.randint(key, (max_batch,), 0, train_x.shape[0])
    inputs = jnp.asarray(train_x)[index]
    labels = jnp.asarray(train_y)[index]
    weights = (jnp.arange(max_batch) < batch_size).astype(jnp.float32)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits_fn(inputs), labels)
    return jnp.sum(weights * losses) / jnp.sum(weights)


def validation_loss(logits_fn) -> jax.Array:
    """Mean cross-entropy over the whole validation split (360 images)."""
    _, _, valid_x, valid_y = digits_split()
    logits = logits_fn(jnp.asarray(valid_x))
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, jnp.asarray(valid_y)))


class MaskedDigitsFamily(TaskFamily):
    """Shared machinery of the digits families: per-instance masked widths and batch sizes.

    Subclasses are frozen dataclasses with ``num_layers``, ``batch_sizes`` and ``num_steps``
    fields; they provide ``_width_choices`` (the candidate widths or channel counts) and
    ``_net`` (a flax module called as ``net(x, masks)``).
    """

    num_layers: int
    batch_sizes: tuple[int, ...]

    @property
    def _width_choices(self) -> tuple[int, ...]:
        raise NotImplementedError

    @property
    def _net(self) -> nn.Module:
        raise NotImplementedError

    def sample_data(self, key: chex.PRNGKey) -> dict[str, jax.Array]:
        kw, kb = jax.random.split(key)
        return {
            "masks": sample_width_masks(kw, self._width_choices, self.num_layers),
            "batch_size": sample_batch_size(kb, self.batch_sizes),
        }

    def init_params(self, data, key):
        x = jnp.zeros((1, 8, 8), jnp.float32)
        return self._net.init(key, x, data["masks"])["params"]

    def _logits_fn(self, data, params):
        return lambda x: self._net.apply({"params": params}, x, data["masks"])

    def loss_fn(self, data, params, key):
        return train_minibatch_loss(
            self._logits_fn(data, params), data["batch_size"], max(self.batch_sizes), key
        )

    def validation_loss_fn(self, data, params, key):
        del key
        return validation_loss(self._logits_fn(data, params))
