"""Fitting an equivalent momentum optimizer.

The one-coordinate system is driven by a random gradient sequence and its updates are matched
by optax's ``sgd(lr, momentum=beta)``: ``m' = beta m + g``, ``u = -lr m'``, which satisfies the
recursion ``u_t = beta u_(t-1) - lr g_t``. Least squares on that recursion gives ``beta`` and
``lr`` in closed form; the goodness of fit ``r2`` compares the free-running momentum model's
updates (from the same gradients) with the optimizer's.

References:
  Maheswaranathan et al., "Reverse engineering learned optimizers reveals known and novel
  mechanisms", arXiv 2011.02159.
  Polyak, "Some methods of speeding up the convergence of iteration methods" (1964).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np
import optax

from interpret import _checks
from interpret import system as _system


@dataclasses.dataclass(frozen=True)
class MomentumFit:
    """An equivalent ``optax.sgd(learning_rate, momentum=beta)``.

    Attributes:
      beta: momentum decay.
      learning_rate: learning rate.
      r2: coefficient of determination of the momentum model's updates (1 is exact).
      num_steps: length of the probing gradient sequence.
      gradient_scale: standard deviation of the probing gradients.
      relative_to_schedule: whether ``learning_rate`` is a factor on a given schedule.
    """

    beta: float
    learning_rate: float
    r2: float
    num_steps: int
    gradient_scale: float
    relative_to_schedule: bool = False


def momentum_updates(gradients: np.ndarray, beta: float, learning_rate: float) -> np.ndarray:
    """Updates of ``optax.sgd(learning_rate, momentum=beta)`` for a gradient sequence.

    Args:
      gradients: shape ``(T,)``.
      beta: momentum decay.
      learning_rate: learning rate.

    Returns:
      The updates ``-learning_rate * m_t`` with ``m_t = beta m_(t-1) + g_t``, shape ``(T,)``.

    References:
      Polyak, "Some methods of speeding up the convergence of iteration methods" (1964).
    """
    m, out = 0.0, np.empty(len(gradients))
    for t, g in enumerate(gradients):
        m = beta * m + g
        out[t] = -learning_rate * m
    return out


def r_squared(target: np.ndarray, prediction: np.ndarray) -> float:
    """``1 - SSE / SST`` (SST around the target's mean).

    A target that is constant up to float32 resolution gives 1.0 when matched to that
    resolution and -inf otherwise.

    Args:
      target: the measured values.
      prediction: the model's values, same shape.

    Returns:
      The coefficient of determination (1 is exact; negative is worse than the mean).
    """
    target, prediction = np.asarray(target, np.float64), np.asarray(prediction, np.float64)
    sse = float(np.sum((target - prediction) ** 2))
    sst = float(np.sum((target - target.mean()) ** 2))
    if not np.isfinite(sse):
        return float("-inf")
    # A (numerically) constant target: judge the error against float32 resolution.
    floor = 1e-12 * float(np.sum(target**2)) + 1e-300
    if sst <= floor:
        return 1.0 if sse <= floor else float("-inf")
    return 1.0 - sse / sst


def _scheduled_error(g, u, profile, beta):
    x = profile * momentum_updates(g, beta, -1.0)  # s_t * m_t
    c = float(-(x @ u) / max(x @ x, 1e-300))
    return float(np.sum((u + c * x) ** 2)), c


def _fit_scheduled(g, u, profile) -> tuple[float, float]:
    grid = np.linspace(0.0, 0.999, 112)
    errors = [_scheduled_error(g, u, profile, b)[0] for b in grid]
    i = int(np.argmin(errors))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)]
    ratio = (np.sqrt(5) - 1) / 2
    for _ in range(40):
        a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        if _scheduled_error(g, u, profile, a)[0] < _scheduled_error(g, u, profile, b)[0]:
            hi = b
        else:
            lo = a
    beta = 0.5 * (lo + hi)
    return beta, _scheduled_error(g, u, profile, beta)[1]


def fit_momentum(
    tx: optax.GradientTransformation | _system.ScalarSystem,
    *,
    num_steps: int = 200,
    gradient_scale: float = 1.0,
    seed: int = 0,
    learning_rates: Any = None,
) -> MomentumFit:
    """Fits ``optax.sgd(lr, momentum=beta)`` to ``tx``'s updates under random gradients.

    Args:
      tx: an optax transformation (or a `ScalarSystem`).
      num_steps: length of the gradient sequence (from ``tx.init``'s state).
      gradient_scale: standard deviation of the Gaussian gradients.
      seed: seed of the gradient sequence.
      learning_rates: an optional known schedule ``s_t`` (e.g. ``ScheduleFit.learning_rates``);
        the model is then ``u_t = -c * s_t * m_t`` and ``learning_rate`` is the factor ``c``
        (``beta`` by a grid and golden-section search on the squared error).

    Returns:
      A `MomentumFit`.
    """
    system = _system.as_system(tx)
    num_steps = _checks.integer("num_steps", num_steps, minimum=3)
    _checks.positive("gradient_scale", gradient_scale)
    g = gradient_scale * jax.random.normal(jax.random.key(seed), (num_steps,), system.dtype)
    _, u = jax.jit(system.run)(g)
    g, u = np.asarray(g, np.float64), np.asarray(u, np.float64)
    if learning_rates is None:
        previous = np.concatenate([[0.0], u[:-1]])
        design = np.stack([previous, -g], axis=1)
        (beta, lr), *_ = np.linalg.lstsq(design, u, rcond=None)
        r2 = r_squared(u, momentum_updates(g, beta, lr))
    else:
        profile = np.asarray(learning_rates, np.float64).reshape(-1)
        if profile.size == 0 or not np.all(np.isfinite(profile)):
            raise ValueError(
                f"learning_rates: expected a non-empty finite 1-d array, got {profile}."
            )
        profile = np.concatenate([profile, np.full(num_steps, profile[-1])])[:num_steps]
        beta, lr = _fit_scheduled(g, u, profile)
        r2 = r_squared(u, profile * momentum_updates(g, beta, lr))
    return MomentumFit(
        beta=float(beta),
        learning_rate=float(lr),
        r2=r2,
        num_steps=num_steps,
        gradient_scale=float(gradient_scale),
        relative_to_schedule=learning_rates is not None,
    )
