"""Scoring a distilled optimizer, and the adaptive-scaling piece distilled chains use.

`advantage_kept` measures, on one task, how much of an optimizer's advantage over a tuned Adam a
distilled chain keeps; `interpret.report` and the benchmarks measure the same on held-out
instances against the best tuned baseline. `scale_by_power_rms` divides by a power of the
root-mean-square gradient: RMSProp's normalisation when the power is 1.

References:
  Maheswaranathan et al., "Reverse engineering learned optimizers reveals known and novel
  mechanisms", arXiv 2011.02159.
  Kingma, Ba, "Adam: A Method for Stochastic Optimization", arXiv 1412.6980.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from interpret import _checks


class AdaptiveScaleState(NamedTuple):
    """State of `scale_by_power_rms`: step count and average of squared gradients."""

    count: jax.Array
    nu: Any


def scale_by_power_rms(
    exponent: float, decay: float, eps: float = 1e-12
) -> optax.GradientTransformation:
    """Scales gradients by ``(v_hat + eps)^(-exponent / 2)``, ``v`` an EMA of ``g^2``.

    ``exponent = 1`` is RMSProp's normalisation (with bias correction, as in Adam).

    Args:
      exponent: power ``p`` of the root-mean-square to divide by.
      decay: decay of the moving average, in (0, 1).
      eps: added to ``v_hat`` before the power.

    Returns:
      An ``optax.GradientTransformation``.

    References:
      Kingma, Ba, "Adam: A Method for Stochastic Optimization", arXiv 1412.6980.
    """
    _checks.in_unit_interval("decay", decay)

    def init_fn(params):
        return AdaptiveScaleState(jnp.zeros((), jnp.int32), jax.tree.map(jnp.zeros_like, params))

    def update_fn(updates, state, params=None):
        del params
        clean = jax.tree.map(lambda g: jnp.where(jnp.isfinite(g), g, 0.0), updates)
        nu = jax.tree.map(lambda v, g: decay * v + (1 - decay) * g * g, state.nu, clean)
        count = optax.safe_increment(state.count)
        correction = 1 - decay ** count.astype(jnp.float32)
        scaled = jax.tree.map(
            lambda g, v: (g * (v / correction + eps) ** (-exponent / 2)).astype(g.dtype),
            clean,
            nu,
        )
        return scaled, AdaptiveScaleState(count, nu)

    return optax.GradientTransformation(init_fn, update_fn)


@dataclasses.dataclass(frozen=True)
class AdvantageKept:
    """How much of an optimizer's advantage over tuned Adam a distilled one keeps.

    Attributes:
      original_loss: final loss of the original (mean of the last 10% of steps).
      distilled_loss: same, for the distilled chain.
      adam_loss: same, for the best Adam of the grid.
      adam_learning_rate: that Adam's learning rate.
      fraction: ``(adam_loss - distilled_loss) / (adam_loss - original_loss)``; nan when the
        original is not better than tuned Adam.
    """

    original_loss: float
    distilled_loss: float
    adam_loss: float
    adam_learning_rate: float
    fraction: float


def _tail_loss(tx, loss_fn, params, num_steps):
    def body(carry, _):
        params, state = carry
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, state = tx.update(grads, state, params)
        return (optax.apply_updates(params, updates), state), loss

    _, losses = jax.lax.scan(body, (params, tx.init(params)), None, length=num_steps)
    tail = losses[-max(1, num_steps // 10) :]
    value = jnp.mean(tail)
    return jnp.where(jnp.isfinite(value), value, jnp.inf)


def advantage_kept(
    original: optax.GradientTransformation,
    distilled: optax.GradientTransformation,
    loss_fn: Callable[[Any], jax.Array],
    params: Any,
    num_steps: int,
    *,
    adam_learning_rates: Sequence[float] = tuple(np.logspace(-4, 0, 9)),
) -> AdvantageKept:
    """Compares an optimizer, its distillation and the best Adam of a grid on one task.

    Args:
      original: the optimizer that was distilled.
      distilled: the distilled chain (``Distilled.tx``).
      loss_fn: ``params -> scalar loss``.
      params: initial parameters.
      num_steps: steps per run.
      adam_learning_rates: the grid over which Adam is tuned.

    Returns:
      An `AdvantageKept`.
    """
    _checks.gradient_transformation(original, "original")
    _checks.gradient_transformation(distilled, "distilled")
    grid = _checks.vector("adam_learning_rates", adam_learning_rates)
    num_steps = _checks.positive_int("num_steps", num_steps)
    adam = np.asarray(
        jax.jit(jax.vmap(lambda lr: _tail_loss(optax.adam(lr), loss_fn, params, num_steps)))(
            jnp.asarray(grid, jnp.float32)
        ),
        np.float64,
    )
    best = int(np.argmin(adam))
    orig = float(jax.jit(lambda p: _tail_loss(original, loss_fn, p, num_steps))(params))
    dist = float(jax.jit(lambda p: _tail_loss(distilled, loss_fn, p, num_steps))(params))
    gap = adam[best] - orig
    fraction = (adam[best] - dist) / gap if gap > 0 and math.isfinite(dist) else float("nan")
    return AdvantageKept(
        original_loss=orig,
        distilled_loss=dist,
        adam_loss=float(adam[best]),
        adam_learning_rate=float(grid[best]),
        fraction=float(fraction),
    )
