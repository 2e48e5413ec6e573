"""Numerics shared by the architectures: compute dtypes, clean gradients, cast updates.

Every architecture computes in at least float32 (float64 when the parameters are float64),
whatever the parameters' dtype, and casts updates back to the parameters' dtype. Gradient
entries that are NaN or infinite are treated as zero, so they never reach the optimizer's
state; finite entries are clipped to +/- ``GRADIENT_LIMIT`` so that squaring them (second
moment features) stays finite in float32.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

GRADIENT_LIMIT = 1e18
"""Finite gradient entries are clipped to this magnitude: (1e18)^2 fits in float32."""


def compute_dtype(dtype: Any) -> jnp.dtype:
    """The dtype an architecture computes in for parameters of ``dtype`` (>= float32)."""
    return jnp.promote_types(dtype, jnp.float32)


def clean_gradient(g: jax.Array) -> jax.Array:
    """Casts ``g`` to its compute dtype, zeroes non-finite entries, clips huge ones."""
    g = jnp.asarray(g)
    g = g.astype(compute_dtype(g.dtype))
    g = jnp.where(jnp.isfinite(g), g, jnp.zeros_like(g))
    return jnp.clip(g, -GRADIENT_LIMIT, GRADIENT_LIMIT)


def clean_scalar(value: Any) -> jax.Array:
    """A loss value as a float32 scalar; None and non-finite values become 0."""
    if value is None:
        return jnp.zeros((), jnp.float32)
    value = jnp.asarray(value, jnp.float32)
    if value.shape != ():
        raise ValueError(f"value: expected a scalar loss, got an array of shape {value.shape}.")
    return jnp.where(jnp.isfinite(value), value, 0.0)


def cast_like(updates: Any, reference: Any) -> Any:
    """Casts each update leaf to the dtype of the matching ``reference`` leaf."""
    return jax.tree.map(lambda u, r: jnp.asarray(u).astype(r.dtype), updates, reference)


def zeros_for(p: Any, trailing: tuple[int, ...] = ()) -> jax.Array:
    """Zeros of ``p``'s shape plus ``trailing``, in ``p``'s compute dtype.

    Works on arrays and on ``jax.ShapeDtypeStruct`` alike.
    """
    return jnp.zeros(tuple(p.shape) + trailing, compute_dtype(p.dtype))
