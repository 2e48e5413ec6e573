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
ever. With ``shortening_decay`` set, ``s < 0`` (a step shorter than the network's own) is
pulled back at that rate instead: the network's own step is the one meta-training chose, and
evidence that shrinks it has to keep coming to keep it short. Under minibatch noise the
evidence is biased toward shrinking (a slope difference dominated by noise reads as an
overshoot as often as not, and overshoots are undone faster than short steps are
lengthened), so with one weak decay the scale drifts far below the network's step on
problems that do not want it.

With ``granularity="coordinate"`` every entry has its own ``s`` and ``c`` is the sign of
``g_t * u_{t-1}`` entry by entry (as in delta-bar-delta and Rprop): one more params-shaped
array of state, and steps that lengthen along the flat directions of an ill-conditioned
problem while its steep ones oscillate. ``c`` is even in the sign of the gradient (both
``g`` and ``u`` flip), so an optimizer whose update is odd in the gradient stays odd.

The agreement rule says whether the last step was too short, not by how much, so ``s``
grows by at most ``rate`` per step and reaching a step a hundred times longer takes hundreds
of steps. ``rule="secant"`` (per tensor only) measures how much: with ``a = g_{t-1} . u_{t-1}``
the loss's slope along the last step where it began and ``b = g_t . u_{t-1}`` where it ended,
a quadratic along that line is minimised at ``m = a / (a - b)`` times the step, and

    s_t = clip((1 - decay) * s_{t-1} + rate * clip(log m, -SECANT_SHRINK, SECANT_GROWTH), ...)

The slope difference ``b - a`` is the curvature along the step (a secant, as in the
Barzilai-Borwein step), so ``s`` moves by ``rate * log m``: a step ten times too short is
lengthened about ``10 ** rate``-fold at once. ``log m`` is clipped harder for growth than for
shrinking (grow slowly, back off fast), and a step that was not a descent step (``a >= 0``)
or that saw no positive curvature (``b <= a``) is no evidence: ``s`` only decays (with
``steepening`` set, a slope that got steeper, ``b < a``, is evidence for a longer step).
The first ``SECANT_EARLY_STEPS`` steps are the exception to slow growth: there ``log m`` may grow as
fast as it may shrink. A run starts with no estimate of its scale at all, and the mean loss
of a short run is mostly decided in its first tens of steps, so a problem that rewards
steps a hundred times the network's own should reach them in a few steps, not ten; past that
window a growth in one step is more often the noise of two minibatches than a scale still
to be found, and the slow bound applies. The first evidence of all, at the second update
(``count == 1``, the slopes at both ends of the first step), is taken whole: ``s`` moves by
``log m`` itself rather than ``rate * log m``, growth bounded only by ``limit``, a line search
along the first step. Smoothing over several steps guards against minibatch noise, and with
one measurement there is nothing to smooth; a ReLU network whose first step already reached
its line minimum gets ``m`` near 1 and keeps its step, a quadratic whose first step was twenty
times too short gets a step at its line minimum at once. ``a``
and ``b`` both scale with the step and flip with the gradient, so ``m`` is unchanged by any
positive factor applied to the update afterwards and the update stays odd in the gradient.

The agreement rule's pieces (the cosine, the sign agreement, the clipped update of ``s``)
are ``interpret.step_scale``'s and the secant rule's (its bounds, its fast start, the clipped
``log m``) are ``interpret.secant_step``'s; each also wraps any optax transformation in its rule.
This module holds the learned optimizer's state and a rate that may be a traced meta-parameter.

References:
  Baydin, Cornish, Martinez Rubio, Schmidt, Wood, "Online Learning Rate Adaptation with
  Hypergradient Descent", arXiv 1703.04782.
  Riedmiller, Braun, "A direct adaptive method for faster backpropagation learning: the RPROP
  algorithm", ICNN 1993 (the per-entry sign rule).
  Barzilai, Borwein, "Two-point step size gradient methods", IMA Journal of Numerical
  Analysis 8, 1988 (the secant estimate of the curvature along a step).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from interpret.secant_step import (
    SECANT_GROWTH,
    finite_slope,
    secant_growth_and_rate,
    secant_log_multiplier,
)
from interpret.step_scale import cosine, next_log_scale, sign_agreement
from optax_lopt import _numerics

RULES = ("agreement", "secant")
"""How ``s`` is adapted: by the agreement of successive steps, or by the secant's line minimum."""


class StepAdaptationState(NamedTuple):
    """Per-tensor step scales and the step each was last applied to.

    Attributes:
      log_scales: per parameter leaf, a float32 scalar ``s`` (granularity ``"tensor"``) or a
        float32 array of the leaf's shape (``"coordinate"``); the step is scaled by ``exp(s)``.
      previous_updates: a params-shaped tree, the last (scaled) update, non-finite entries as 0.
      previous_slopes: with ``rule="secant"``, per leaf the float32 slope ``g . u`` of the last
        update where it was taken; ``()`` with the agreement rule.
    """

    log_scales: Any
    previous_updates: Any
    previous_slopes: Any = ()


def init(params: Any, granularity: str = "tensor", rule: str = "agreement") -> StepAdaptationState:
    """Scales of 1 (``s = 0``) and zero previous updates (so the first step is no evidence)."""
    shape = (lambda p: ()) if granularity == "tensor" else jnp.shape
    scalar = lambda p: jnp.zeros((), jnp.float32)  # noqa: E731
    return StepAdaptationState(
        log_scales=jax.tree.map(lambda p: jnp.zeros(shape(p), jnp.float32), params),
        previous_updates=jax.tree.map(_numerics.zeros_for, params),
        previous_slopes=jax.tree.map(scalar, params) if rule == "secant" else (),
    )


def adapt(
    state: StepAdaptationState,
    grads: Any,
    updates: Any,
    rate: jax.Array,
    decay: float,
    limit: float,
    granularity: str = "tensor",
    rule: str = "agreement",
    count: jax.Array | int | None = None,
    shortening_decay: float | None = None,
    steepening: float = 0.0,
) -> tuple[Any, StepAdaptationState]:
    """Scales each leaf of ``updates`` by its adapted ``exp(s)``; returns them and the new state.

    Args:
      state: the adaptation state of the previous step (``init``'s, same ``rule``).
      grads: this step's (cleaned) gradients, the tree of ``updates``.
      updates: the optimizer's unscaled updates.
      rate: how far one unit of evidence moves ``s`` (a scalar, may be traced): a fully
        agreeing step with the agreement rule, a factor ``e`` of line minimum with the secant.
      decay: the pull of ``s`` toward 0 per step, in ``[0, 1)``.
      limit: ``|s|`` is clipped to this, so a scale stays within ``exp(+/- limit)``.
      granularity: ``"tensor"`` (one scale per leaf, the cosine) or ``"coordinate"`` (one
        per entry, the sign of ``g * u``); the one ``init`` was given.
      rule: ``"agreement"`` or ``"secant"`` (``"tensor"`` granularity only); ``init``'s.
      count: with ``rule="secant"``, the number of updates taken before this one (int32
        scalar, may be traced): below ``SECANT_EARLY_STEPS`` growth is bounded by
        ``SECANT_SHRINK`` instead of ``SECANT_GROWTH``, and at ``SECANT_LINE_SEARCH_COUNT``
        ``s`` moves by the whole ``log m`` (rate 1, growth bounded by ``limit``). ``None``:
        always ``rate`` and ``SECANT_GROWTH``.
      shortening_decay: the pull toward 0 of an ``s`` below 0, in ``[0, 1)``; ``None``:
        ``decay`` on both sides.
      steepening: with ``rule="secant"``, the ``log m`` of a descent step whose slope got
        steeper along it (``interpret.secant_step.secant_log_multiplier``); 0: no evidence.
    """
    pull = _pull(decay, shortening_decay)
    if rule == "secant":
        return _adapt_by_secant(state, grads, updates, rate, pull, limit, count, steepening)
    agreement = cosine if granularity == "tensor" else sign_agreement

    def new_scale(s, g, previous):
        return next_log_scale(s, agreement(g, previous), rate, pull(s), limit)

    log_scales = jax.tree.map(new_scale, state.log_scales, grads, state.previous_updates)
    scaled = _scaled(updates, log_scales)
    return scaled, StepAdaptationState(log_scales, _finite(scaled))


def _pull(decay: float, shortening_decay: float | None):
    """The decay toward 0 as a function of ``s``: ``shortening_decay`` below 0, where set."""
    if shortening_decay is None:
        return lambda s: decay
    return lambda s: jnp.where(s < 0, shortening_decay, decay)


def _adapt_by_secant(state, grads, updates, rate, pull, limit, count, steepening):
    """`adapt` with ``rule="secant"``: ``s`` moves by ``rate * log m`` (module docstring)."""
    growth = SECANT_GROWTH
    if count is not None:
        growth, rate = secant_growth_and_rate(count, rate, limit)

    def new_scale(s, g, previous, slope_before):
        slope_after = finite_slope(g, previous)
        log_m = secant_log_multiplier(slope_before, slope_after, growth, steepening)
        return jnp.clip((1.0 - pull(s)) * s + rate * log_m, -limit, limit)

    log_scales = jax.tree.map(
        new_scale, state.log_scales, grads, state.previous_updates, state.previous_slopes
    )
    scaled = _scaled(updates, log_scales)
    kept = _finite(scaled)
    slopes = jax.tree.map(finite_slope, grads, kept)
    return scaled, StepAdaptationState(log_scales, kept, slopes)


def _scaled(updates: Any, log_scales: Any) -> Any:
    return jax.tree.map(lambda u, s: u * jnp.exp(s).astype(u.dtype), updates, log_scales)


def _finite(tree: Any) -> Any:
    return jax.tree.map(lambda u: jnp.where(jnp.isfinite(u), u, 0.0).astype(u.dtype), tree)
