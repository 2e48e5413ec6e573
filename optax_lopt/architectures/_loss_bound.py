"""A bound on how far step-size adaptation may lengthen a step, from the loss's own value.

Step-size adaptation (``_step_adaptation``) lengthens steps while the loss looks locally
linear along them. On a classifier whose training loss is close to 0 it always does: the
loss keeps falling along the step (the logits can grow for ever), so the adapted step grows to
its limit, the logits become huge, and the next minibatch with one misclassified example
costs a loss larger than the initial one. The loss's value says what the gradient cannot: a
loss bounded below by 0 cannot fall by more than its value, so a step whose first-order
predicted decrease ``-g . u`` is many times the loss is overshooting whatever the curvature
looks like. With ``bound`` set, the lengthening part of every tensor's adapted scale is cut,
by one factor for the whole update, until

    -g . u <= bound * max(loss, 0).

A step that is not a descent step at all (``-g . u <= 0``: the momenta carrying it uphill,
past a minimum) gets no lengthening whatever the loss: lengthening it can only overshoot
further. Without this, a coordinate that converges much later than the rest of its tensor
can be pushed round a minimum at the tensor's lengthened scale for thousands of steps.

Only the lengthening is cut: a tensor's step is never made shorter than the network's own
(unadapted) step, so a loss whose minimum is below 0, or a negative loss, gets at worst the
optimizer without adaptation rather than a step that shrinks to nothing. Without a loss
(``value=None``) nothing is cut; a non-finite loss cuts the whole lengthening for that step.

References:
  Polyak, "Introduction to Optimization", 1987 (the step that the loss value and a lower
  bound allow, used here as a cap rather than as the step).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def cut_lengthening(
    updates: Any, grads: Any, log_scales: Any, value: jax.Array | None, bound: float
) -> Any:
    """``updates`` with the adaptation's lengthening cut to the loss bound (module docstring).

    Args:
      updates: the adapted updates, each leaf ``exp(s)`` times the network's own step (times
        any positive factor common to all leaves).
      grads: the (cleaned) gradients the updates were computed from, the same tree.
      log_scales: the adaptation's ``s`` per leaf (scalars or leaf-shaped arrays).
      value: the loss at these gradients, or ``None``.
      bound: the largest allowed ratio of predicted decrease to loss, positive.

    Returns:
      The updates, each leaf multiplied by ``max(c, min(1, exp(-s)))`` where ``c`` is
      ``min(1, bound * max(loss, 0) / (-g . u))``, and 0 when ``-g . u <= 0`` (an uphill or
      flat step keeps only the network's own step).
    """
    if value is None:
        return updates
    decrease = -sum(
        jnp.sum(jnp.where(jnp.isfinite(u), g.astype(jnp.float32) * u.astype(jnp.float32), 0.0))
        for g, u in zip(jax.tree.leaves(grads), jax.tree.leaves(updates), strict=True)
    )
    loss = jnp.asarray(value, jnp.float32)
    allowed = bound * jnp.maximum(jnp.where(jnp.isfinite(loss), loss, 0.0), 0.0)
    # min(1, allowed / decrease) for a descent step; an uphill or flat one gets no lengthening.
    descent = decrease > 0
    factor = jnp.where(descent, jnp.minimum(1.0, allowed / jnp.where(descent, decrease, 1.0)), 0.0)

    def cut(u, s):
        return u * jnp.maximum(factor, jnp.minimum(1.0, jnp.exp(-s))).astype(u.dtype)

    return jax.tree.map(cut, updates, log_scales)
