"""A small convnet on scikit-learn's digits, channels and batch size sampled per instance."""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax.numpy as jnp

from optax_lopt import _checks
from optax_lopt.tasks import _digits
from optax_lopt.tasks.base import set_checked


class _Conv3x3(nn.Module):
    """A 3x3 "SAME" convolution written as shifted copies and one matmul.

    Same parameters as ``flax.linen.Conv(features, (3, 3))`` (``kernel`` ``[3, 3, in, out]``,
    ``bias``), but vmapping it over a batch of kernels gives a batched matmul rather than a
    grouped convolution, which XLA runs far faster on CPU.
    """

    features: int

    @nn.compact
    def __call__(self, x):
        in_features = x.shape[-1]
        kernel = self.param(
            "kernel", nn.initializers.lecun_normal(), (3, 3, in_features, self.features)
        )
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        height, width = x.shape[1], x.shape[2]
        padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        patches = jnp.concatenate(
            [padded[:, i : i + height, j : j + width, :] for i in range(3) for j in range(3)],
            axis=-1,
        )
        return patches @ kernel.reshape(9 * in_features, self.features) + bias


class _MaskedConvNet(nn.Module):
    channels: int
    num_layers: int

    @nn.compact
    def __call__(self, x, masks):
        x = x[..., None]
        for i in range(self.num_layers):
            x = nn.relu(_Conv3x3(self.channels)(x)) * masks[i]
            x = nn.avg_pool(x, (2, 2), strides=(2, 2), padding="SAME")
        x = x.reshape(x.shape[0], -1)
        return nn.Dense(_digits.NUM_CLASSES)(x)


@dataclasses.dataclass(frozen=True)
class DigitsConv(_digits.MaskedDigitsFamily):
    """3x3 ReLU convnet (each conv followed by 2x2 average pooling, then a linear classifier
    on the flattened features) on scikit-learn's bundled 8x8 digits.

    Data and split as `DigitsMLP`. Distribution per instance: the channel count of each of the
    ``num_layers`` conv layers uniform over ``channels``, the batch size uniform over
    ``batch_sizes``; initial weights from the ``Task.init`` key (flax defaults). Instances stay
    vmappable by masking: every network has ``max(channels)`` channels per layer and channels
    beyond the sampled count are zeroed; minibatches draw ``max(batch_sizes)`` indices of which
    the first ``batch_size`` count. Loss: mean softmax cross-entropy; validation loss on the
    whole validation split.

    Args:
      channels: candidate channel counts.
      num_layers: number of conv layers.
      batch_sizes: candidate batch sizes.
      num_steps: default inner horizon.

    References:
      Metz et al., "Understanding and correcting pathologies in the training of learned
      optimizers", arXiv 1810.10180.
    """

    channels: tuple[int, ...] = (8, 16, 32)
    num_layers: int = 2
    batch_sizes: tuple[int, ...] = (32, 64, 128)
    num_steps: int = 200

    def __post_init__(self) -> None:
        set_checked(self, "channels", _checks.positive_ints)
        set_checked(self, "num_layers")
        set_checked(self, "batch_sizes", _checks.positive_ints)
        set_checked(self, "num_steps")

    @property
    def _width_choices(self) -> tuple[int, ...]:
        return self.channels

    @property
    def _net(self) -> _MaskedConvNet:
        return _MaskedConvNet(max(self.channels), self.num_layers)
