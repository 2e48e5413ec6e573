"""Step-size adaptation by agreement: the step grows while the gradient keeps opposing the last
update, and shrinks when it turns.

`adapt_step_by_agreement` wraps any optax transformation ``inner`` and multiplies its update by
``exp(s)``, with, each step,

    s <- clip((1 - decay) * s - rate * a_t, -limit, limit),   a_t = sign(g_t * u_{t-1}),

``g_t`` the gradient and ``u_{t-1}`` the previous (final) update: a descent step that the next
gradient confirms has ``g_t * u_{t-1} < 0``, so ``s`` grows; an overshoot flips the sign and
``s`` shrinks. This is Rprop's sign rule, and hypergradient descent on the log step size; the
decay pulls ``s`` back to 0 when the evidence stops. The rule's pieces (`cosine`,
`sign_agreement`, `next_log_scale`) live here once; ``optax_lopt``'s ``MLPLOpt(step_adaptation=
...)`` builds its meta-learned adaptation from them. `interpret.distill` fits it (the
mechanism "step adaptation") because a learned optimizer can carry such a state: seen from one
coordinate, as the one-coordinate system sees every optimizer, a rule that compares whole
tensors (a cosine) is this sign rule, so the per-coordinate form is what the chain uses unless
asked for ``granularity="tensor"``.

References:
  Riedmiller, Braun, "A direct adaptive method for faster backpropagation learning: the RPROP
  algorithm", ICNN 1993.
  Baydin et al., "Online Learning Rate Adaptation with Hypergradient Descent",
  arXiv 1703.04782.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from interpret import _checks

GRANULARITIES = ("tensor", "coordinate")
"""Where the agreement is measured: per tensor (a cosine) or per entry (a sign)."""

DEFAULT_LIMIT = math.log(100.0)
"""Default bound on ``abs(s)``: the step moves at most 100-fold either way."""


class AgreementState(NamedTuple):
    """State of `adapt_step_by_agreement`.

    Attributes:
      inner: the wrapped transformation's state.
      log_scale: ``s`` per leaf (the leaf's shape per coordinate, a scalar per tensor).
      previous: the previous final update per leaf.
    """

    inner: Any
    log_scale: Any
    previous: Any


def adapt_step_by_agreement(
    inner: optax.GradientTransformation,
    rate: float,
    decay: float = 0.0,
    limit: float = DEFAULT_LIMIT,
    granularity: str = "coordinate",
) -> optax.GradientTransformation:
    """``inner``'s update times ``exp(s)``, ``s`` adapted by agreement (module docstring).

    Args:
      inner: the transformation whose step is adapted.
      rate: how far one step of agreement moves ``s``, positive.
      decay: the pull of ``s`` back to 0 per step, in [0, 1).
      limit: the bound on ``abs(s)``, positive.
      granularity: ``"coordinate"`` (``sign(g * u)`` per entry) or ``"tensor"`` (the cosine of
        a tensor's gradient and previous update).

    Returns:
      An ``optax.GradientTransformation``; a non-finite gradient is no evidence (agreement 0
      for that entry, or for the whole tensor with ``"tensor"``) and is passed to ``inner`` as
      it came.
    """
    rate = _checks.positive("rate", rate)
    limit = _checks.positive("limit", limit)
    decay = _checks.in_unit_interval("decay", decay, allow_zero=True)
    _checks.one_of("granularity", granularity, GRANULARITIES)
    agreement = sign_agreement if granularity == "coordinate" else cosine
    inner = optax.with_extra_args_support(inner)

    def init_fn(params):
        shape = jnp.shape if granularity == "coordinate" else (lambda p: ())
        return AgreementState(
            inner.init(params),
            jax.tree.map(lambda p: jnp.zeros(shape(p), jnp.float32), params),
            jax.tree.map(lambda p: jnp.zeros(jnp.shape(p), jnp.float32), params),
        )

    def update_fn(updates, state, params=None, **extra_args):
        inner_updates, inner_state = inner.update(updates, state.inner, params, **extra_args)

        def one(g, u, s, previous):
            s = next_log_scale(s, agreement(g, previous), rate, decay, limit)
            out = (u * jnp.exp(s)).astype(jnp.asarray(u).dtype)
            return out, s, jnp.where(jnp.isfinite(out), out, 0.0).astype(jnp.float32)

        triples = jax.tree.map(one, updates, inner_updates, state.log_scale, state.previous)
        outer = jax.tree.structure(updates)
        new_updates, log_scale, previous = jax.tree.transpose(
            outer, jax.tree.structure((0, 0, 0)), triples
        )
        return new_updates, AgreementState(inner_state, log_scale, previous)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def next_log_scale(s: Any, agreement: Any, rate: Any, decay: float, limit: float) -> jax.Array:
    """``clip((1 - decay) s - rate * agreement, -limit, limit)``; a non-finite agreement counts
    as 0, so a non-finite gradient never reaches the scale. ``rate`` may be traced."""
    agreement = jnp.where(jnp.isfinite(agreement), agreement, 0.0)
    return jnp.clip((1.0 - decay) * s - rate * agreement, -limit, limit)


def sign_agreement(g: jax.Array, previous: jax.Array) -> jax.Array:
    """Entry by entry, ``sign(g) * sign(previous)`` in float32 (0 where either is 0; the
    product of the signs, since the product of tiny values underflows)."""
    return jnp.sign(g.astype(jnp.float32)) * jnp.sign(previous.astype(jnp.float32))


def cosine(a: jax.Array, b: jax.Array) -> jax.Array:
    """``<a, b> / (|a| |b|)`` in float32, within ``[-1, 1]``; 0 when either is zero.

    Each vector is first divided by its largest magnitude: near a minimum the gradient can be
    small enough (about 1e-19) that its squares underflow in float32 while its products with
    the previous step do not, and the unscaled ratio would be huge instead of a cosine. The
    norms are where-guarded, so the derivative at a zero vector is 0 rather than NaN (a
    meta-gradient flows through this).
    """

    def unit_max(x):
        x = x.astype(jnp.float32).ravel()
        peak = jnp.max(jnp.abs(x))
        return x / jnp.where(peak > 0, peak, 1.0)

    def safe_norm(x):
        square = jnp.sum(jnp.square(x))
        return jnp.sqrt(jnp.where(square > 0, square, 1.0)), square > 0

    a, b = unit_max(a), unit_max(b)
    (norm_a, a_nonzero), (norm_b, b_nonzero) = safe_norm(a), safe_norm(b)
    ratio = jnp.sum(a * b) / (norm_a * norm_b)
    return jnp.where(a_nonzero & b_nonzero, jnp.clip(ratio, -1.0, 1.0), 0.0)


def agreement_log_scales(
    g: np.ndarray, u: np.ndarray, rate: float, decay: float, limit: float = DEFAULT_LIMIT
) -> np.ndarray:
    """The ``s_t`` the coordinate rule would hold at each step, given the updates ``u`` taken.

    A host-side (NumPy) replay for fitting: `interpret.distill` uses it to try a rate and a
    decay against an optimizer's recorded updates without running the rule itself.

    Args:
      g: gradients, ``(T, K)`` (``K`` coordinates).
      u: the updates that followed them, ``(T, K)``; step ``t`` compares ``g_t`` with
        ``u_{t-1}`` (nothing before the first step).
      rate: the rule's rate.
      decay: the rule's decay.
      limit: the rule's bound on ``abs(s)``.

    Returns:
      ``(T, K)`` log scales (the factor of step ``t`` is ``exp(s_t)``).
    """
    g, u, previous, rate, decay, limit = _checks.replay_arguments(g, u, rate, decay, limit)
    a = np.sign(g) * np.sign(previous)
    s, out = np.zeros(g.shape[1:]), np.empty(g.shape, np.float64)
    for t in range(len(g)):
        s = np.clip((1 - decay) * s - rate * a[t], -limit, limit)
        out[t] = s
    return out
