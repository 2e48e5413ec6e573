"""Step-size adaptation toward the secant's line minimum along the last step.

`adapt_step_by_secant` wraps any optax transformation ``inner`` and multiplies its update by
``exp(s)``. With ``a = g_{t-1} . u_{t-1}`` the loss's slope along the last (final) update where
it began and ``b = g_t . u_{t-1}`` where it ended, a quadratic along that line is minimal at
``m = a / (a - b)`` times the step, and each step

    s <- clip((1 - decay) s + rate * clip(log m, -SECANT_SHRINK, growth), -limit, limit).

The slope difference ``b - a`` is the curvature along the step (a secant, as in the
Barzilai-Borwein step), so a step ten times too short is lengthened about ``10 ** rate``-fold
at once, where the agreement rule (`interpret.adapt_step_by_agreement`) would only say that it
was too short. A step that was not a descent step (``a >= 0``) or saw no positive curvature
(``b <= a``) is no evidence: ``s`` only decays (`secant_log_multiplier`'s ``steepening``
can make a steeper slope, ``b < a``, evidence for a longer step). ``growth`` is
``SECANT_GROWTH`` (grow slowly, back off fast), except at the start of a run, which has no
estimate of its scale yet: in the first ``SECANT_EARLY_STEPS`` updates growth is bounded as
shrinking is, and the first evidence of all (the slopes at both ends of the first step, at
update ``SECANT_LINE_SEARCH_COUNT``) is taken whole, rate 1 and growth bounded by ``limit``
only: a line search along the first step.

Per coordinate (``granularity="coordinate"``, what the one-coordinate system sees) the slopes
are products and ``m = g_{t-1} / (g_{t-1} - g_t)``, Quickprop's secant (whose next step, from
where the last one ended, is ``m - 1`` times it); per tensor they are dot products over the
tensor. ``a`` and ``b`` both scale with the step and flip with the gradient, so ``m`` is
unchanged by any positive factor applied to the update and an update odd in the gradient stays
odd. ``optax_lopt``'s ``MLPLOpt(adaptation_rule="secant")`` builds
its meta-learned adaptation from these pieces (one home for the rule); `interpret.distill`
fits it (the mechanism "step adaptation" with ``rule="secant"``).

References:
  Barzilai, Borwein, "Two-point step size gradient methods", IMA Journal of Numerical
  Analysis 8, 1988 (the secant estimate of the curvature along a step).
  Fahlman, "An empirical study of learning speed in back-propagation networks", CMU-CS-88-162,
  1988 (Quickprop: the per-weight secant step).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from interpret import _checks
from interpret.step_scale import DEFAULT_LIMIT, GRANULARITIES

SECANT_GROWTH = 1.0
"""Bound on ``log m`` when the secant asks for a longer step (``m`` at most ``e``-fold)."""

SECANT_SHRINK = 3.0
"""Bound on ``-log m`` when it asks for a shorter one: overshoots are undone faster."""

SECANT_EARLY_STEPS = 10
"""While fewer updates than this have been taken, growth is bounded by ``SECANT_SHRINK``."""

SECANT_LINE_SEARCH_COUNT = 1
"""The update (updates taken before it) at which ``s`` moves by the whole ``log m``."""


class SecantState(NamedTuple):
    """State of `adapt_step_by_secant`.

    Attributes:
      inner: the wrapped transformation's state.
      count: updates taken (int32 scalar).
      log_scale: ``s`` per leaf (the leaf's shape per coordinate, a scalar per tensor).
      previous: the previous final update per leaf, non-finite entries as 0.
      previous_slope: ``g . u`` of the previous gradient and final update per leaf (entry by
        entry per coordinate).
    """

    inner: Any
    count: jax.Array
    log_scale: Any
    previous: Any
    previous_slope: Any


def secant_log_multiplier(
    slope_before: Any,
    slope_after: Any,
    growth: jax.Array | float = SECANT_GROWTH,
    steepening: float = 0.0,
) -> jax.Array:
    """Clipped ``log`` of the line minimum's multiple of the last step (module docstring).

    Args:
      slope_before: ``a = g_{t-1} . u_{t-1}``, the loss's slope along the step where it began.
      slope_after: ``b = g_t . u_{t-1}``, the slope where it ended.
      growth: the bound on ``log m`` (``SECANT_GROWTH`` by default; may be traced).
      steepening: ``log m`` for a descent step whose slope got steeper along it (``b < a``),
        at most ``growth``; 0 (the default) makes such a step no evidence. Under minibatch
        noise a slope difference dominated by noise reads as a curvature of either sign; the
        positive half gives ``log m < 0`` and the negative half, at 0, none, so ``s`` drifts
        down on problems that want a longer step. A positive value gives that half evidence
        for a longer step.

    Returns:
      ``clip(log(a / (a - b)), -SECANT_SHRINK, growth)``; ``min(steepening, growth)`` when the
      step was a descent step whose slope got steeper (``b < a``); 0 (no evidence) when it
      was not a descent step (``a >= 0``), the slope did not change (``b == a``: a constant
      gradient), or either slope is not finite.
    """
    a = jnp.asarray(slope_before, jnp.float32)
    difference = a - jnp.asarray(slope_after, jnp.float32)  # -(curvature along the step)
    descent = (a < 0) & jnp.isfinite(difference)
    usable = descent & (difference < 0)
    safe_a = jnp.where(usable, a, -1.0)
    safe_difference = jnp.where(usable, difference, -1.0)
    log_m = jnp.clip(jnp.log(safe_a / safe_difference), -SECANT_SHRINK, growth)
    steeper = descent & (difference > 0)
    return jnp.where(usable, log_m, jnp.where(steeper, jnp.minimum(steepening, growth), 0.0))


def secant_growth_and_rate(count: Any, rate: Any, limit: float) -> tuple[jax.Array, jax.Array]:
    """The growth bound and the rate of the update after ``count`` updates (module docstring):
    ``(limit, 1)`` at ``SECANT_LINE_SEARCH_COUNT``, ``(SECANT_SHRINK, rate)`` before
    ``SECANT_EARLY_STEPS``, ``(SECANT_GROWTH, rate)`` after. ``count`` and ``rate`` may be
    traced."""
    growth = jnp.where(count < SECANT_EARLY_STEPS, SECANT_SHRINK, SECANT_GROWTH)
    line_search = count == SECANT_LINE_SEARCH_COUNT
    return jnp.where(line_search, limit, growth), jnp.where(line_search, 1.0, rate)


def finite_slope(g: Any, u: Any, per_tensor: bool = True) -> jax.Array:
    """``g . u`` in float32 over the entries where both are finite (entry by entry unless
    ``per_tensor``)."""
    g, u = (jnp.asarray(x, jnp.float32) for x in (g, u))
    products = jnp.where(jnp.isfinite(g) & jnp.isfinite(u), g * u, 0.0)
    return jnp.sum(products) if per_tensor else products


def adapt_step_by_secant(
    inner: optax.GradientTransformation,
    rate: float,
    decay: float = 0.0,
    limit: float = DEFAULT_LIMIT,
    granularity: str = "coordinate",
    steepening: float = 0.0,
) -> optax.GradientTransformationExtraArgs:
    """``inner``'s update times ``exp(s)``, ``s`` moved toward the secant's line minimum.

    Args:
      inner: the transformation whose step is adapted.
      rate: how far a factor ``e`` of line minimum moves ``s`` past the first evidence,
        positive.
      decay: the pull of ``s`` back to 0 per step, in [0, 1).
      limit: the bound on ``abs(s)``, positive.
      granularity: ``"coordinate"`` (the slopes entry by entry) or ``"tensor"`` (dot products
        over each tensor).
      steepening: ``log m`` when the slope got steeper along the step (`secant_log_multiplier`),
        non-negative; 0: no evidence.

    Returns:
      An ``optax.GradientTransformationExtraArgs``; a non-finite gradient entry is no evidence
      (it is left out of the slopes) and is passed to ``inner`` as it came.
    """
    rate = _checks.positive("rate", rate)
    limit = _checks.positive("limit", limit)
    decay = _checks.in_unit_interval("decay", decay, allow_zero=True)
    steepening = _checks.non_negative("steepening", steepening)
    per_tensor = _checks.one_of("granularity", granularity, GRANULARITIES) == "tensor"
    inner = optax.with_extra_args_support(inner)
    shape = (lambda p: ()) if per_tensor else jnp.shape

    def init_fn(params):
        zeros = lambda p: jnp.zeros(shape(p), jnp.float32)  # noqa: E731
        return SecantState(
            inner.init(params),
            jnp.zeros((), jnp.int32),
            jax.tree.map(zeros, params),
            jax.tree.map(lambda p: jnp.zeros(jnp.shape(p), jnp.float32), params),
            jax.tree.map(zeros, params),
        )

    def update_fn(updates, state, params=None, **extra_args):
        inner_updates, inner_state = inner.update(updates, state.inner, params, **extra_args)
        growth, step_rate = secant_growth_and_rate(state.count, rate, limit)

        def one(g, u, s, previous, slope_before):
            slope_after = finite_slope(g, previous, per_tensor)
            log_m = secant_log_multiplier(slope_before, slope_after, growth, steepening)
            s = jnp.clip((1.0 - decay) * s + step_rate * log_m, -limit, limit)
            out = (u * jnp.exp(s)).astype(jnp.asarray(u).dtype)
            kept = jnp.where(jnp.isfinite(out), out, 0.0).astype(jnp.float32)
            return out, s, kept, finite_slope(g, kept, per_tensor)

        leaves = jax.tree.map(
            one, updates, inner_updates, state.log_scale, state.previous, state.previous_slope
        )
        outer = jax.tree.structure(updates)
        new_updates, log_scale, previous, slope = jax.tree.transpose(
            outer, jax.tree.structure((0, 0, 0, 0)), leaves
        )
        count = optax.safe_increment(state.count)
        return new_updates, SecantState(inner_state, count, log_scale, previous, slope)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def secant_log_scales(
    g: np.ndarray,
    u: np.ndarray,
    rate: float,
    decay: float,
    limit: float = DEFAULT_LIMIT,
    steepening: float = 0.0,
) -> np.ndarray:
    """The ``s_t`` the coordinate rule would hold at each step, given the updates ``u`` taken.

    A host-side (NumPy) replay for fitting, as `interpret.agreement_log_scales` is for the
    agreement rule: `interpret.distill` uses it to try a rate and a decay against recorded
    updates without running the rule itself.

    Args:
      g: gradients, ``(T, K)`` (``K`` coordinates).
      u: the final updates that followed them, ``(T, K)``; step ``t`` compares the slopes of
        ``u_{t-1}`` at ``g_{t-1}`` and ``g_t``.
      rate: the rule's rate.
      decay: the rule's decay.
      limit: the rule's bound on ``abs(s)``.
      steepening: the rule's ``log m`` when the slope got steeper (`secant_log_multiplier`).

    Returns:
      ``(T, K)`` log scales (the factor of step ``t`` is ``exp(s_t)``).
    """
    g, u, previous, rate, decay, limit = _checks.replay_arguments(g, u, rate, decay, limit)
    steepening = _checks.non_negative("steepening", steepening)
    before = np.concatenate([np.zeros_like(u[:1]), g[:-1] * u[:-1]])
    difference = before - g * previous
    usable = (before < 0) & (difference < 0)
    steeper = (before < 0) & (difference > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_m = np.where(usable, np.log(np.where(usable, before / difference, 1.0)), 0.0)
    log_m = np.where(steeper, steepening, log_m)
    s, out = np.zeros(g.shape[1:]), np.empty(g.shape, np.float64)
    for t in range(len(g)):
        if t == SECANT_LINE_SEARCH_COUNT:
            growth, step_rate = limit, 1.0
        else:
            early = t < SECANT_EARLY_STEPS
            growth, step_rate = (SECANT_SHRINK if early else SECANT_GROWTH), rate
        s = np.clip((1 - decay) * s + step_rate * np.clip(log_m[t], -SECANT_SHRINK, growth),
                    -limit, limit)  # fmt: skip
        out[t] = s
    return out
