"""Per-tensor step-size adaptation from the agreement of successive steps.

A learned optimizer that reads only scale-free features (gradients over their RMS, Adam-style
ratios) takes steps of about the same size on every problem: it cannot tell a quadratic that
rewards steps a hundred times larger from an MLP that diverges at three times its step. This
module gives it a per-tensor multiplicative step scale ``exp(s)`` that it adapts as it trains,
from the cosine ``c`` between the new gradient ``g_t`` and the previous step ``u_{t-1}``:

    s_t = clip((1 - decay) * s_{t-1} - rate * c_t, -limit, limit)

When successive steps agree (the gradient still points where the last step went against it,
``c < 0``) the steps were too short and ``s`` grows; when they oscillate (``c > 0``) ``s``
shrinks. ``-c`` is, up to a positive factor, the hypergradient of the loss with respect to
the log step size, so this is hypergradient descent on ``log`` of a per-tensor learning rate,
normalised so the adaptation speed does not depend on the gradient's scale. The decay pulls
``s`` back toward 0, so the scale a tensor settles at is bounded by ``rate / decay`` times the
mean agreement, and a run of agreeing steps early in training does not fix a large step for
ever. With ``granularity="coordinate"`` every entry has its own ``s`` and ``c`` is the sign of
``g_t * u_{t-1}`` entry by entry (as in delta-bar-delta and Rprop): one more params-shaped
array of state, and steps that lengthen along the flat directions of an ill-conditioned
problem while its steep ones oscillate. ``c`` is even in the sign of the gradient (both
``g`` and ``u`` flip), so an optimizer whose update is odd in the gradient stays odd.

The rule itself (the cosine, the sign agreement, the clipped update of ``s``) is
``interpret.step_scale``'s, which also wraps any optax transformation in it; this module holds
the learned optimizer's state and a rate that may be a traced meta-parameter.

References:
  Baydin, Cornish, Martinez Rubio, Schmidt, Wood, "Online Learning Rate Adaptation with
  Hypergradient Descent", arXiv 1703.04782.
  Riedmiller, Braun, "A direct adaptive method for faster backpropagation learning: the RPROP
  algorithm", ICNN 1993 (the per-entry sign rule).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from interpret.step_scale import cosine, next_log_scale, sign_agreement
from optax_lopt import _numerics


class StepAdaptationState(NamedTuple):
    """Per-tensor step scales and the step each was last applied to.

    Attributes:
      log_scales: per parameter leaf, a float32 scalar ``s`` (granularity ``"tensor"``) or a
        float32 array of the leaf's shape (``"coordinate"``); the step is scaled by ``exp(s)``.
      previous_updates: a params-shaped tree, the last (scaled) update, non-finite entries as 0.
    """

    log_scales: Any
    previous_updates: Any


def init(params: Any, granularity: str = "tensor") -> StepAdaptationState:
    """Scales of 1 (``s = 0``) and zero previous updates (so the first agreement is 0)."""
    shape = (lambda p: ()) if granularity == "tensor" else jnp.shape
    return StepAdaptationState(
        log_scales=jax.tree.map(lambda p: jnp.zeros(shape(p), jnp.float32), params),
        previous_updates=jax.tree.map(_numerics.zeros_for, params),
    )


def adapt(
    state: StepAdaptationState,
    grads: Any,
    updates: Any,
    rate: jax.Array,
    decay: float,
    limit: float,
    granularity: str = "tensor",
) -> tuple[Any, StepAdaptationState]:
    """Scales each leaf of ``updates`` by its adapted ``exp(s)``; returns them and the new state.

    Args:
      state: the adaptation state of the previous step.
      grads: this step's (cleaned) gradients, the tree of ``updates``.
      updates: the optimizer's unscaled updates.
      rate: how far one fully agreeing step moves ``s`` (a scalar, may be traced).
      decay: the pull of ``s`` toward 0 per step, in ``[0, 1)``.
      limit: ``|s|`` is clipped to this, so a scale stays within ``exp(+/- limit)``.
      granularity: ``"tensor"`` (one scale per leaf, the cosine) or ``"coordinate"`` (one
        per entry, the sign of ``g * u``); the one ``init`` was given.
    """
    agreement = cosine if granularity == "tensor" else sign_agreement

    def new_scale(s, g, previous):
        return next_log_scale(s, agreement(g, previous), rate, decay, limit)

    log_scales = jax.tree.map(new_scale, state.log_scales, grads, state.previous_updates)
    scaled = jax.tree.map(lambda u, s: u * jnp.exp(s).astype(u.dtype), updates, log_scales)
    kept = jax.tree.map(lambda u: jnp.where(jnp.isfinite(u), u, 0.0).astype(u.dtype), scaled)
    return scaled, StepAdaptationState(log_scales, kept)
