"""Fitting gradient clipping: where the update function saturates.

The update function ``u(g | h)``, less its offset ``u(0 | h)`` (momentum's contribution), is
evaluated over gradients spanning many orders of magnitude, averaging both signs. Its slope
near ``g = 0`` is the learning rate ``lr``. If ``|u|`` at the largest
gradients stays well below ``lr |g|`` the update saturates, and the threshold is
``t = max|u| / lr``: exactly the clipping value of ``optax.chain(optax.clip(t),
optax.sgd(lr))``. The shape is "hard" (``lr * clip(g, -t, t)``) or "soft"
(``lr * t * tanh(g / t)``), whichever fits better; "none" when the update never saturates.

References:
  Maheswaranathan et al., "Reverse engineering learned optimizers reveals known and novel
  mechanisms", arXiv 2011.02159.
  Pascanu, Mikolov, Bengio, "On the difficulty of training recurrent neural networks",
  arXiv 1211.5063.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import optax

from interpret import _checks
from interpret import system as _system
from interpret.momentum import r_squared
from interpret.update_function import update_function


@dataclasses.dataclass(frozen=True)
class ClippingFit:
    """An equivalent ``chain(clip(threshold), sgd(learning_rate))`` (hard shape).

    Attributes:
      threshold: gradient magnitude above which the update saturates (inf: never).
      learning_rate: slope ``-du/dg`` near ``g = 0``.
      shape: "hard", "soft" (tanh) or "none".
      r2: goodness of fit of the chosen shape on ``|u|`` (nan for "none").
      saturation: ``|u| / (lr |g|)`` at the largest gradient probed (1: linear); nan when
        the slope near ``g = 0`` is not positive (an ascending update has no descent regime
        to saturate) or some update is not finite, with ``shape`` "none".
      gradients: the positive gradient magnitudes probed.
      updates: ``|u(g) - u(0)|`` at those magnitudes (mean of both signs).
    """

    threshold: float
    learning_rate: float
    shape: str
    r2: float
    saturation: float
    gradients: np.ndarray
    updates: np.ndarray


def fit_clipping(
    tx: optax.GradientTransformation | _system.ScalarSystem,
    *,
    state: Any = None,
    step: int | None = None,
    gradients: Any = None,
    saturation_threshold: float = 0.5,
) -> ClippingFit:
    """Measures whether and where ``tx``'s update saturates with the gradient's size.

    Args:
      tx: an optax transformation (or a `ScalarSystem`).
      state: the state ``h`` of the update function; default `interpret.typical_state` (the
        state after 100 unit Gaussian gradients), because the initial state is often
        degenerate (Adam's zero second moment makes its first step ``-lr * sign(g)``).
      step: exogenous time; default 100 with the default state (the time it was reached at),
        else 0.
      gradients: positive magnitudes to probe (default ``logspace(-4, 4, 161)``); the
        smallest must lie below the threshold, the largest above.
      saturation_threshold: the update counts as saturating when ``|u| / (lr |g|)`` at the
        largest magnitude is below this.

    Returns:
      A `ClippingFit`.
    """
    system = _system.as_system(tx)
    if gradients is None:
        mags = np.logspace(-4, 4, 161)
    else:
        mags = _checks.magnitudes("gradients", gradients)
    _checks.in_unit_interval("saturation_threshold", saturation_threshold)
    mags = np.sort(mags)
    if state is None:
        state = _system.typical_state(system, num_steps=100)
        step = 100 if step is None else step
    step = 0 if step is None else step
    uf = update_function(system, np.concatenate([-mags[::-1], [0.0], mags]), state, step=step)
    n = mags.size
    u = uf.updates[0] - uf.updates[0, n]  # remove the offset u(0 | h), e.g. momentum's
    mag_u = 0.5 * (np.abs(u[n + 1 :]) + np.abs(u[:n][::-1]))
    lr = float(
        0.5 * (uf.effective_learning_rates[0, n + 1] + uf.effective_learning_rates[0, n - 1])
    )
    if not (np.isfinite(lr) and lr > 0) or not np.all(np.isfinite(mag_u)):
        return ClippingFit(float("inf"), lr, "none", float("nan"), float("nan"), mags, mag_u)
    saturation = float(mag_u[-1] / (lr * mags[-1]))
    if saturation >= saturation_threshold:
        return ClippingFit(float("inf"), lr, "none", float("nan"), saturation, mags, mag_u)
    threshold = float(np.max(mag_u) / lr)
    hard = lr * np.minimum(mags, threshold)
    soft = lr * threshold * np.tanh(mags / threshold)
    r2_hard, r2_soft = r_squared(mag_u, hard), r_squared(mag_u, soft)
    shape, r2 = ("hard", r2_hard) if r2_hard >= r2_soft else ("soft", r2_soft)
    return ClippingFit(threshold, lr, shape, r2, saturation, mags, mag_u)
