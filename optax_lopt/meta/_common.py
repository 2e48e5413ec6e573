"""Noise, inner-run start and meta-gradient clean-up shared by the gradient estimators.

The estimators' shared fields and their checks live in `optax_lopt.meta.base`."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from optax_lopt.base import MetaParams
from optax_lopt.meta.unroll import Trajectory, UnrollState, init_state


def horizon_of(est: Any) -> int:
    """The estimator's horizon, or its family's ``num_steps`` when None."""
    return est.family.num_steps if est.horizon is None else est.horizon


def init_runs(est: Any, theta: MetaParams, key: jax.Array) -> UnrollState:
    """Starts the persistent inner runs of a truncated estimator (``num_tasks``, staggered)."""
    return init_state(
        est.lopt, est.family, theta, key, num_tasks=est.num_tasks, horizon=horizon_of(est)
    )


def sample_noise(theta: MetaParams, key: jax.Array, num: int, sigma: float) -> MetaParams:
    """``num`` draws of ``N(0, sigma^2 I)`` shaped like ``theta`` (leaves ``[num, ...]``)."""
    leaves, treedef = jax.tree.flatten(theta)
    keys = jax.random.split(key, len(leaves))
    noise = [
        sigma * jax.random.normal(k, (num,) + jnp.shape(x), jnp.result_type(x, jnp.float32))
        for k, x in zip(keys, leaves, strict=True)
    ]
    return jax.tree.unflatten(treedef, noise)


def antithetic(theta: MetaParams, noise: MetaParams) -> MetaParams:
    """``theta + noise`` and ``theta - noise`` stacked: leaves ``[num, 2, ...]``."""
    return jax.tree.map(lambda t, e: jnp.stack([t + e, t - e], axis=1), theta, noise)


def weighted_mean(noise: MetaParams, weights: jax.Array) -> MetaParams:
    """``mean_i weights_i * noise_i`` over the leading axis."""
    return jax.tree.map(
        lambda e: jnp.mean(weights.reshape(weights.shape + (1,) * (e.ndim - 1)) * e, axis=0),
        noise,
    )


def zero_nonfinite(grad: MetaParams) -> tuple[MetaParams, jax.Array]:
    """Zeroes a meta-gradient's non-finite entries; returns it and the fraction zeroed.

    (Not `optax_lopt._numerics.clean_gradient`, which cleans one inner gradient leaf.)
    """
    leaves = jax.tree.leaves(grad)
    bad = sum(jnp.sum(~jnp.isfinite(g)) for g in leaves)
    size = sum(g.size for g in leaves)
    clean = jax.tree.map(lambda g: jnp.where(jnp.isfinite(g), g, jnp.zeros_like(g)), grad)
    return clean, jnp.asarray(bad, jnp.float32) / max(size, 1)


def trajectory_metrics(trajectory: Trajectory) -> dict[str, jax.Array]:
    """Scalars every estimator reports about its unroll."""
    losses = trajectory.losses
    finite = jnp.isfinite(losses)
    count = jnp.maximum(jnp.sum(finite), 1)
    return {
        "inner_loss": jnp.sum(jnp.where(finite, losses, 0.0)) / count,
        "nonfinite_fraction": jnp.mean(trajectory.nonfinite.astype(jnp.float32)),
        "reset_fraction": jnp.mean(jnp.any(trajectory.reset, axis=0).astype(jnp.float32)),
    }
