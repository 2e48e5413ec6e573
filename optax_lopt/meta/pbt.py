"""Population-based training's pieces: ranking, the running-loss cap, exploit and explore.

Each rule here has its one home: how a non-finite loss ranks (last), what a huge or
non-finite meta-loss counts as in the running (EMA) meta-loss (`RUNNING_LOSS_CAP`), who
copies whom at an exploit (`pbt_parents`) and how a copy is explored (`perturb`).

References:
  Jaderberg et al., "Population Based Training of Neural Networks", arXiv 1711.09846.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from optax_lopt.base import MetaParams

RUNNING_LOSS_CAP = 1e3
"""A meta-loss above this (or non-finite) counts as this in the running (EMA) meta-loss."""


def ranked(values: Any) -> Any:
    """``values`` with every non-finite entry replaced by ``inf``, so that it ranks last."""
    xp = np if isinstance(values, (np.ndarray, np.generic, list, tuple)) else jnp
    values = xp.asarray(values)
    return xp.where(xp.isfinite(values), values, xp.inf)


def finite_argmin(values: Any) -> Any:
    """Index of the smallest finite entry (non-finite entries rank last; ties: first)."""
    xp = np if isinstance(values, (np.ndarray, np.generic, list, tuple)) else jnp
    return xp.argmin(ranked(values))


def cap_loss(loss: Any) -> Any:
    """``min(loss, RUNNING_LOSS_CAP)``, and ``RUNNING_LOSS_CAP`` where ``loss`` is non-finite.

    NumPy in, NumPy out (float64 stays float64); anything else goes through ``jax.numpy``.
    """
    xp = np if isinstance(loss, (np.ndarray, np.generic, float, int)) else jnp
    return xp.where(xp.isfinite(loss), xp.minimum(loss, RUNNING_LOSS_CAP), RUNNING_LOSS_CAP)


def running_loss(previous: Any, loss: Any, step: Any, decay: float) -> Any:
    """The EMA of the capped meta-loss; at ``step == 0`` the capped loss itself.

    Like `cap_loss`: a NumPy (or Python) ``loss`` gives NumPy, anything else ``jax.numpy``.
    """
    xp = np if isinstance(loss, (np.ndarray, np.generic, float, int)) else jnp
    capped = cap_loss(loss)
    return xp.where(step == 0, capped, decay * previous + (1 - decay) * capped)


def take(tree: Any, index: jax.Array) -> Any:
    """``tree[index]`` on the leading axis of every leaf."""
    return jax.tree.map(lambda x: jnp.take(x, index, axis=0), tree)


def where(mask: jax.Array, new: Any, old: Any) -> Any:
    """Per member: ``new`` where ``mask[i]``, else ``old`` (leaves ``[P, ...]``)."""

    def pick(a, b):
        m = mask.reshape(mask.shape + (1,) * (jnp.ndim(a) - 1))
        return jnp.where(m, a, b)

    return jax.tree.map(pick, new, old)


def pbt_parents(ema_loss: jax.Array, num_exploit: int) -> jax.Array:
    """The PBT copy map: ``parent[i]`` is the member ``i`` becomes (itself if it stays).

    The ``num_exploit`` members with the highest running meta-loss copy the ``num_exploit``
    with the lowest: the worst the best, the second worst the second best, and so on. Ties
    are broken by index (stable sort); a non-finite loss ranks last.

    Args:
      ema_loss: ``[P]`` running meta-losses (lower is better).
      num_exploit: how many members are replaced, ``0 <= num_exploit <= P // 2``.

    Returns:
      ``[P]`` int32 indices.
    """
    size = ema_loss.shape[0]
    parent = jnp.arange(size, dtype=jnp.int32)
    if num_exploit == 0:
        return parent
    order = jnp.argsort(ranked(ema_loss), stable=True).astype(jnp.int32)
    best = order[:num_exploit]
    worst = order[::-1][:num_exploit]
    return parent.at[worst].set(best)


def perturb(theta: MetaParams, key: jax.Array, scale: float) -> MetaParams:
    """``theta`` plus Gaussian noise of std ``scale`` times each tensor's root-mean-square.

    Args:
      theta: one member's meta-parameters (no population axis).
      key: a ``jax.random`` key.
      scale: relative size of the noise; 0 returns ``theta`` unchanged.

    Returns:
      The perturbed meta-parameters (all-zero tensors stay zero).
    """
    leaves, treedef = jax.tree.flatten(theta)
    keys = jax.random.split(key, max(len(leaves), 1))
    out = []
    for k, x in zip(keys, leaves, strict=False):
        rms = jnp.sqrt(jnp.mean(jnp.square(x)))
        out.append(x + scale * rms * jax.random.normal(k, jnp.shape(x), jnp.result_type(x)))
    return jax.tree.unflatten(treedef, out)
