"""Learning-rate adaptation: the effective learning rate at the fixed point of each ``|g*|``.

An optimizer adapts its learning rate when the slope of its update function depends on the
gradients it has seen. For each constant gradient magnitude ``|g*|`` the fixed point ``h*`` is
found and the effective learning rate ``-du/dg`` at ``g = 0`` from ``h*`` is taken (the slope
of the update function around zero at that fixed point, as in the paper). RMSProp and Adam give
``lr ~ 1/|g*|`` (exponent 1 in the fitted power law ``lr ~ |g*|^-exponent``); momentum SGD
gives a constant (exponent 0).

The recovery time measures the adaptation's memory: from the fixed point of the smallest
magnitude, a burst of ``burst_steps`` steps of the largest magnitude is applied, then the small
magnitude again; the recovery time is the number of steps after the burst until the effective
learning rate is back to ``recovery_fraction`` of its value before the burst (0 when it never
dropped below that, inf when it does not come back within ``max_recovery_steps``).

References:
  Maheswaranathan et al., "Reverse engineering learned optimizers reveals known and novel
  mechanisms", arXiv 2011.02159.
  Tieleman, Hinton, "Lecture 6.5 - RMSProp" (2012); Kingma, Ba, "Adam: A Method for
  Stochastic Optimization", arXiv 1412.6980.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from interpret import _checks
from interpret import system as _system
from interpret.fixed_points import FixedPoints, fixed_points
from interpret.momentum import r_squared


@dataclasses.dataclass(frozen=True)
class LRAdaptation:
    """Effective learning rate versus gradient magnitude, and recovery after a burst.

    Attributes:
      gradients: the magnitudes ``|g*|``, ascending, shape ``(N,)``.
      learning_rates: ``-du/dg`` at ``g = 0`` from the fixed point of each, shape ``(N,)``.
      exponent: ``p`` of the least-squares power law ``lr ~ |g*|^-p`` (0: no adaptation,
        1: ``lr ~ 1/|g*|``), fitted on the positive finite learning rates only; NaN when
        fewer than two are positive (an optimizer whose update grows with ``g`` near its fixed
        points has no power law to fit; ``learning_rates`` still holds the signed slopes).
      r2: goodness of that power law in log space (NaN with the exponent).
      recovery_time: steps to recover after a burst (see module docstring).
      recovery_curve: effective learning rate at each step after the burst, normalised by its
        value before the burst, shape ``(max_recovery_steps,)``.
      fixed_points: the `FixedPoints` used.
      burst_steps: length of the burst.
      recovery_fraction: the fraction of the pre-burst learning rate that counts as recovered.
    """

    gradients: np.ndarray
    learning_rates: np.ndarray
    exponent: float
    r2: float
    recovery_time: float
    recovery_curve: np.ndarray
    fixed_points: FixedPoints
    burst_steps: int = 10
    recovery_fraction: float = 0.5


def lr_adaptation(
    tx: optax.GradientTransformation | _system.ScalarSystem,
    gradients: Any = (1e-3, 1e-2, 1e-1, 1.0, 10.0),
    *,
    step: int = 0,
    burst_steps: int = 10,
    max_recovery_steps: int = 5000,
    recovery_fraction: float = 0.5,
    input_step: float | None = None,
    **fixed_point_kwargs: Any,
) -> LRAdaptation:
    """Effective learning rate at the fixed point of each constant gradient magnitude.

    Args:
      tx: an optax transformation (or a `ScalarSystem`).
      gradients: positive magnitudes ``|g*|`` (at least two).
      step: exogenous time of the fixed points.
      burst_steps: length of the burst of the largest magnitude.
      max_recovery_steps: steps simulated after the burst.
      recovery_fraction: fraction of the pre-burst learning rate that counts as recovered.
      input_step: when given, the effective learning rate is the secant slope
        ``-(u(s | h*) - u(-s | h*)) / 2s`` at this step instead of the derivative at
        ``g = 0``, which is zero for rules with a jump there (sign-like inputs); use the median
        observed gradient (`interpret.GradientStats.scale`).
      **fixed_point_kwargs: passed to `interpret.fixed_points`.

    Returns:
      An `LRAdaptation`.
    """
    system = _system.as_system(tx)
    mags, burst_steps, max_recovery_steps = _check_arguments(
        gradients, burst_steps, max_recovery_steps, recovery_fraction
    )
    fps = fixed_points(system, mags, step=step, **fixed_point_kwargs)
    clock = system.clock_at(step)
    _checks.optional_positive("input_step", input_step)
    slope = _slope_fn(system, input_step)
    lrs = np.asarray(
        jax.jit(jax.vmap(slope, in_axes=(0, None)))(jnp.asarray(fps.states, system.dtype), clock),
        np.float64,
    )
    exponent, r2 = _power_law(mags, lrs)
    h0 = jnp.asarray(fps.states[0], system.dtype)
    curve = _recovery_curve(system, slope, h0, clock, mags, burst_steps, max_recovery_steps)
    return LRAdaptation(
        gradients=mags,
        learning_rates=lrs,
        exponent=exponent,
        r2=r2,
        recovery_time=_recovery_time(curve, recovery_fraction),
        recovery_curve=curve,
        fixed_points=fps,
        burst_steps=burst_steps,
        recovery_fraction=float(recovery_fraction),
    )


def _check_arguments(gradients, burst_steps, max_recovery_steps, recovery_fraction):
    """The sorted magnitudes and the checked step counts, or a ValueError naming the argument."""
    mags = np.sort(_checks.magnitudes("gradients", gradients, minimum_size=2))
    burst_steps = _checks.positive_int("burst_steps", burst_steps)
    max_recovery_steps = _checks.positive_int("max_recovery_steps", max_recovery_steps)
    _checks.in_unit_interval("recovery_fraction", recovery_fraction)
    return mags, burst_steps, max_recovery_steps


def _slope_fn(system: _system.ScalarSystem, input_step: float | None):
    """``slope(h, clock)``: the effective learning rate ``-du/dg`` around ``g = 0`` from ``h``.

    The derivative at 0, or with ``input_step`` the secant slope over ``[-input_step,
    input_step]``.
    """

    def slope(h, clock):
        if input_step is not None:
            s = jnp.asarray(input_step, system.dtype)
            return -(system.update(h, s, clock) - system.update(h, -s, clock)) / (2 * s)
        return -jax.grad(lambda g: system.update(h, g, clock))(jnp.zeros((), system.dtype))

    return slope


def _power_law(mags: np.ndarray, lrs: np.ndarray) -> tuple[float, float]:
    """``(exponent, r2)`` of ``lr ~ |g*|^-exponent`` on the positive finite rates (else NaN)."""
    good = np.isfinite(lrs) & (lrs > 0)
    if good.sum() < 2:
        return float("nan"), float("nan")
    x, y = np.log(mags[good]), np.log(lrs[good])
    coeffs = np.polyfit(x, y, 1)
    return float(-coeffs[0]), r_squared(y, np.polyval(coeffs, x))


def _recovery_curve(system, slope, h0, clock, mags, burst_steps, max_recovery_steps):
    """The effective learning rate after a burst, relative to its value at ``h0``.

    From ``h0``: ``burst_steps`` steps of the largest magnitude, then ``max_recovery_steps``
    of the smallest; one value per step after the burst, shape ``(max_recovery_steps,)``.
    """

    @jax.jit
    def recovery(h0, clock):
        inputs = jnp.concatenate(
            [
                jnp.full((burst_steps,), mags[-1], system.dtype),
                jnp.full((max_recovery_steps,), mags[0], system.dtype),
            ]
        )

        def body(carry, g):
            h, clock = carry
            new_h, _, new_clock = system.step(h, g, clock)
            return (new_h, new_clock), slope(new_h, new_clock)

        _, curve = jax.lax.scan(body, (h0, clock), inputs)
        return slope(h0, clock), curve[burst_steps - 1 : -1]

    base, curve = recovery(h0, clock)
    return np.asarray(curve, np.float64) / float(base)


def _recovery_time(curve: np.ndarray, fraction: float) -> float:
    """Steps until ``curve`` is back to ``fraction`` after first dropping below it.

    0 when it never drops below, inf when it does not come back.
    """
    if np.all(curve >= fraction):
        return 0.0
    first_low = int(np.argmax(curve < fraction))
    back = np.nonzero(curve[first_low:] >= fraction)[0]
    return float(first_low + back[0]) if back.size else float("inf")
