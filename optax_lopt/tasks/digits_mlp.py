"""An MLP on scikit-learn's digits, widths and batch size sampled per instance."""

from __future__ import annotations

import dataclasses

import flax.linen as nn

from optax_lopt import _checks
from optax_lopt.tasks import _digits
from optax_lopt.tasks.base import set_checked


class _MaskedMLP(nn.Module):
    width: int
    num_layers: int

    @nn.compact
    def __call__(self, x, masks):
        x = x.reshape(x.shape[0], -1)
        for i in range(self.num_layers):
            x = nn.relu(nn.Dense(self.width)(x)) * masks[i]
        return nn.Dense(_digits.NUM_CLASSES)(x)


@dataclasses.dataclass(frozen=True)
class DigitsMLP(_digits.MaskedDigitsFamily):
    """ReLU MLP classifying scikit-learn's bundled 8x8 digits (no download).

    Data: the 1797 images (pixels scaled to [0, 1]) shuffled once with seed 0; 80% train, 20%
    validation. Distribution per instance: each of the ``num_layers`` hidden widths uniform
    over ``widths``, the batch size uniform over ``batch_sizes``; initial weights from the
    ``Task.init`` key (flax defaults). To keep instances vmappable every network has
    ``max(widths)`` units per layer and units beyond the sampled width are masked to zero (so
    their weights get zero gradient), and every minibatch draws ``max(batch_sizes)`` training
    indices (uniform, with replacement, from the loss key) of which the first ``batch_size``
    count. Loss: mean softmax cross-entropy. Validation loss: on the whole validation split.

    Args:
      widths: candidate hidden widths.
      num_layers: number of hidden layers.
      batch_sizes: candidate batch sizes.
      num_steps: default inner horizon.

    References:
      Metz et al., "Understanding and correcting pathologies in the training of learned
      optimizers", arXiv 1810.10180.
    """

    widths: tuple[int, ...] = (16, 32, 64)
    num_layers: int = 2
    batch_sizes: tuple[int, ...] = (32, 64, 128)
    num_steps: int = 200

    def __post_init__(self) -> None:
        set_checked(self, "widths", _checks.positive_ints)
        set_checked(self, "num_layers")
        set_checked(self, "batch_sizes", _checks.positive_ints)
        set_checked(self, "num_steps")

    @property
    def _width_choices(self) -> tuple[int, ...]:
        return self.widths

    @property
    def _net(self) -> _MaskedMLP:
        return _MaskedMLP(max(self.widths), self.num_layers)
