"""Momentum read off the dynamics: the convergence fixed point, its modes and their weight.

The paper's method: find the fixed point ``h*`` of the dynamics under zero gradient (where the
optimizer sits once training has converged) starting from states the optimizer visited,
linearise there, and read every eigenmode ``k`` of the state Jacobian as a momentum term with
decay ``beta_k = |lambda_k|`` and learning rate ``alpha_k`` (`interpret.linearize`). The input
derivatives are central differences at the median observed gradient, so rules with a jump at
``g = 0`` are read at the scale they work at. Modes are ranked by their contribution to the
update, the total weight ``|alpha_k| beta_k / (1 - beta_k)`` of their impulse response after
the first step (capped at the horizon), not by eigenvalue size: a slow mode that barely
reaches the update is not the optimizer's momentum.

`heavy_ball_optimum` gives the optimal heavy-ball (Polyak momentum) parameters of a quadratic
with Hessian eigenvalues in ``[low, high]``, to compare a learned optimizer's dominant mode with.

References:
  Maheswaranathan et al., "Reverse engineering learned optimizers reveals known and novel
  mechanisms", arXiv 2011.02159.
  Polyak, "Some methods of speeding up the convergence of iteration methods" (1964).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from interpret import _checks
from interpret import system as _system
from interpret.fixed_points import fixed_points
from interpret.linearize import Linearization, linearize
from interpret.momentum import r_squared
from interpret.problem import GradientStats


@dataclasses.dataclass(frozen=True)
class MomentumModes:
    """The momentum modes of the linearisation at the convergence fixed point.

    Attributes:
      betas: ``|lambda_k|`` of each mode, ranked by contribution (largest first); a complex
        conjugate pair (an oscillating mode) is one entry.
      alphas: the real part of each mode's learning rate ``alpha_k`` (twice it for a pair).
      contributions: ``|alpha_k| * min(beta_k / (1 - beta_k), horizon)``, same order.
      direct: ``-dG/dg`` at the fixed point: the part of the update with no memory.
      fraction: each mode's share of the total (direct term included), same order.
      impulse_r2: how well the linear model predicts the response of the full optimizer to one
        gradient of the median observed size followed by zeros (1: exact).
      fixed_point_residual: ``1/2 ||F(h*, g*) - h*||^2`` at the fixed point found.
      input: the ``g*`` of that fixed point: 0 (the convergence fixed point), or the 5%
        quantile of the observed ``|g|`` where the Jacobians at 0 are not finite (an update
        normalised by a state that vanishes without gradients, such as a second moment).
      linearization: the underlying `interpret.Linearization`.
    """

    betas: np.ndarray
    alphas: np.ndarray
    contributions: np.ndarray
    direct: float
    fraction: np.ndarray
    impulse_r2: float
    fixed_point_residual: float
    linearization: Linearization
    input: float = 0.0


def momentum_modes(
    tx: optax.GradientTransformation | _system.ScalarSystem,
    stats: GradientStats,
    visited: Any = None,
    *,
    step: int = 0,
    horizon: int = 200,
    num_starts: int = 16,
) -> MomentumModes:
    """Finds the convergence fixed point from ``visited`` states and reads its modes.

    Where the Jacobians at ``g* = 0`` are not finite, the modes are read at the fixed point
    of a small constant gradient instead (`MomentumModes.input` says which).

    Args:
      tx: an optax transformation (or a `ScalarSystem`).
      stats: the observed gradients' `interpret.GradientStats` (the difference step).
      visited: states the optimizer visited, ``(M, size)`` (e.g. the last states of a
        `interpret.Recording`); ``num_starts`` of them, evenly spaced, start the search.
      step: exogenous time of the fixed point.
      horizon: cap on a mode's time-scale in its contribution (the task's number of steps).
      num_starts: how many visited states to start from.

    Returns:
      A `MomentumModes`.
    """
    system = _system.as_system(tx)
    horizon = _checks.positive_int("horizon", horizon)
    starts = _starts(visited, system.size, num_starts)
    g_star, fps, lin = _finite_linearization(system, stats, starts, step)
    # one entry per complex-conjugate pair: the pair's two terms add up to twice the real part
    keep = lin.eigenvalues.imag >= -1e-12
    pair = np.where(np.abs(lin.eigenvalues.imag) > 1e-12, 2.0, 1.0)[keep]
    betas = np.abs(lin.eigenvalues)[keep]
    alphas = pair * np.real(lin.alphas[keep])
    # the impulse response after the first step: sum_{n >= 1} beta^n, capped at the horizon
    memory = np.where(betas < 1, np.minimum(betas / np.maximum(1 - betas, 1e-12), horizon), horizon)
    contributions = pair * np.abs(lin.alphas[keep]) * memory
    order = np.argsort(-contributions, kind="stable")
    total = float(np.sum(contributions) + abs(lin.learning_rate))
    fraction = contributions[order] / total if total > 0 else np.zeros(len(order))
    return MomentumModes(
        betas=betas[order],
        alphas=alphas[order],
        contributions=contributions[order],
        direct=float(lin.learning_rate),
        fraction=fraction,
        impulse_r2=_impulse_r2(system, lin, g_star, stats.scale, horizon, step),
        fixed_point_residual=float(fps.residuals[0]),
        linearization=lin,
        input=float(g_star),
    )


def _starts(visited: Any, size: int, num_starts: int) -> np.ndarray | None:
    """Up to ``num_starts`` evenly spaced finite rows of ``visited`` (None: no such rows)."""
    if visited is None or not size:
        return None
    visited = np.asarray(visited, np.float64).reshape(-1, size)
    visited = visited[np.isfinite(visited).all(axis=1)]
    if not len(visited):
        return None
    pick = np.linspace(0, len(visited) - 1, min(num_starts, len(visited))).astype(int)
    return visited[pick]


def _finite_linearization(system, stats: GradientStats, starts, step: int):
    """``(g*, fixed points, linearisation)`` at ``g* = 0``, or at ``stats.low`` if not finite."""
    for g_star in (0.0, stats.low):
        fps = fixed_points(system, [g_star], step=step, starts=starts)
        lin = linearize(system, fps.states[0], g_star, step=step, input_step=stats.scale)
        if np.all(np.isfinite(lin.alphas)) and np.isfinite(lin.learning_rate):
            break
    return g_star, fps, lin


def _impulse_r2(
    system, lin: Linearization, g_star: float, scale: float, horizon: int, step: int
) -> float:
    """r2 of the linear impulse response against the optimizer's own, from ``h*`` under ``g*``."""
    n = min(horizon, 100)
    pulse = np.full(n, g_star)
    pulse[0] += scale
    h = jnp.asarray(lin.state, system.dtype)
    _, u = jax.jit(system.run)(jnp.asarray(pulse, system.dtype), h, system.clock_at(step))
    response = (np.asarray(u, np.float64) - lin.update) / scale
    predicted = np.empty(n)
    predicted[0] = -lin.learning_rate
    lam, alphas = lin.eigenvalues, lin.alphas
    for t in range(1, n):
        predicted[t] = -float(np.real(np.sum(alphas * lam**t)))
    return r_squared(response, predicted)


@dataclasses.dataclass(frozen=True)
class HeavyBall:
    """Optimal heavy-ball parameters of a quadratic with eigenvalues in ``[low, high]``.

    Attributes:
      beta: ``((sqrt(k) - 1) / (sqrt(k) + 1))^2`` with ``k = high / low``.
      alpha: ``4 / (sqrt(high) + sqrt(low))^2`` (optax's ``sgd(alpha, momentum=beta)``).
    """

    beta: float
    alpha: float


def heavy_ball_optimum(low: float, high: float) -> HeavyBall:
    """The heavy-ball parameters that minimise the worst-case rate on ``[low, high]``.

    References:
      Polyak, "Some methods of speeding up the convergence of iteration methods" (1964).
    """
    if not (0 < low <= high and math.isfinite(high)):
        raise ValueError(f"low, high: expected 0 < low <= high < inf, got {low!r}, {high!r}.")
    k = math.sqrt(high / low)
    return HeavyBall(((k - 1) / (k + 1)) ** 2, 4 / (math.sqrt(high) + math.sqrt(low)) ** 2)
