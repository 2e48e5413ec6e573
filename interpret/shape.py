"""The shape of an update function at the scale of the gradients an optimizer sees.

Learned optimizers often have update functions that a derivative at ``g = 0`` misreads: a jump
at zero (a sign-like rule), saturation a little above the typical gradient, ascending pieces.
`update_shape` evaluates ``u(g | h)`` at states ``h`` on magnitudes spanning the recorded
gradient distribution (from a hundredth of its 1% quantile to ten times its 99% quantile) and
describes its odd part ``o(m) = (u(m) - u(-m)) / 2`` with finite differences only:

- ``jump``: ``-o(m_0)`` at a magnitude ``m_0`` a thousand times below the 1% quantile, i.e.
  the step a sign-like rule takes however small the gradient;
- ``sign_fraction``: ``jump / -o(q95)``: 1 for sign-SGD, 0 for any rule continuous at zero;
- ``learning_rate``: the secant slope ``-o(s) / s`` at the median magnitude ``s``;
- ``saturation``: the smallest magnitude where ``|o|`` reaches 90% of its largest value on the
  grid (inf when it keeps growing), and where that falls in the recorded distribution;
- ``kind``: "sign", "linear", "saturating" (clipping inside the recorded range), "ascending"
  (the update does not descend at the median gradient) or "mixed".

References:
  Maheswaranathan et al., "Reverse engineering learned optimizers reveals known and novel
  mechanisms", arXiv 2011.02159 (update functions against gradient histograms).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import optax

from interpret import _checks
from interpret import system as _system
from interpret.momentum import r_squared
from interpret.problem import GradientStats
from interpret.update_function import update_function

_SIGN_FRACTION = 0.5
"""A rule whose jump at zero is at least half its step at the 95% gradient is sign-like."""


@dataclasses.dataclass(frozen=True)
class UpdateShape:
    """The odd part of the update function at one state, at the observed gradient scale.

    Attributes:
      kind: "sign", "linear", "saturating", "ascending" or "mixed" (module docstring).
      jump: the step at vanishing gradient, ``-o(m_0)`` (0 for a continuous rule).
      sign_fraction: ``jump / -o(q95)``.
      learning_rate: secant slope ``-o(s) / s`` at the median observed magnitude ``s``.
      saturation: magnitude where ``|o|`` first reaches 90% of its maximum (inf: never).
      saturation_quantile: fraction of observed ``|g|`` below ``saturation`` (1 when inf).
      linear_r2: goodness of ``o = -lr m`` over the 5%-95% observed range.
      magnitudes: the magnitudes probed, ascending.
      odd_updates: ``o`` at those magnitudes.
    """

    kind: str
    jump: float
    sign_fraction: float
    learning_rate: float
    saturation: float
    saturation_quantile: float
    linear_r2: float
    magnitudes: np.ndarray
    odd_updates: np.ndarray


def update_shape(
    tx: optax.GradientTransformation | _system.ScalarSystem,
    stats: GradientStats,
    state: Any = None,
    *,
    step: int = 0,
) -> UpdateShape:
    """Describes ``u(g | state)`` over the gradient range of ``stats``.

    Args:
      tx: an optax transformation (or a `ScalarSystem`).
      stats: the observed gradients' `interpret.GradientStats`.
      state: the state vector (default: the initial state).
      step: exogenous time.

    Returns:
      An `UpdateShape`.
    """
    return update_shapes(tx, stats, None if state is None else np.asarray(state)[None], step=step)[
        0
    ]


def update_shapes(
    tx: optax.GradientTransformation | _system.ScalarSystem,
    stats: GradientStats,
    states: Any = None,
    *,
    step: int = 0,
) -> list[UpdateShape]:
    """`update_shape` at each of ``states`` ``(S, size)``, evaluated in one compiled call."""
    _checks.instance("stats", stats, GradientStats, "a GradientStats")
    system = _system.as_system(tx)
    q = stats.quantiles
    tiny = q[1] * 1e-3
    mags = np.concatenate([[tiny], np.geomspace(q[1] / 100, q[99] * 10, 61)])
    mags = np.unique(np.concatenate([mags, [stats.scale, q[5], q[95]]]))
    grid = np.concatenate([-mags[::-1], mags])
    uf = update_function(system, grid, states, step=step)
    n = mags.size
    return [_describe(row[n:], row[:n][::-1], mags, stats, tiny) for row in uf.updates]


def _describe(up, down, mags, stats, tiny) -> UpdateShape:
    q = stats.quantiles
    odd = 0.5 * (up - down)
    if not np.all(np.isfinite(odd)):
        nan = float("nan")
        return UpdateShape("mixed", nan, nan, nan, float("inf"), 1.0, nan, mags, odd)
    at = lambda m: float(odd[np.searchsorted(mags, m)])
    jump, step95 = -at(tiny), -at(q[95])
    lr = -at(stats.scale) / stats.scale
    sign_fraction = jump / step95 if step95 > 0 else float("nan")
    biggest = np.max(np.abs(odd))
    reached = np.nonzero(np.abs(odd) >= 0.9 * biggest)[0]
    saturation = float("inf") if reached[0] >= mags.size - 3 else float(mags[reached[0]])
    sat_q = 1.0 if not np.isfinite(saturation) else stats.quantile_of(saturation)
    inside = (mags >= q[5]) & (mags <= q[95])
    linear_r2 = r_squared(odd[inside], -lr * mags[inside])
    if not lr > 0:
        kind = "ascending"
    elif sign_fraction >= _SIGN_FRACTION:
        kind = "sign"
    elif saturation <= q[99]:
        kind = "saturating"
    elif linear_r2 >= 0.9:
        kind = "linear"
    else:
        kind = "mixed"
    return UpdateShape(
        kind=kind,
        jump=jump,
        sign_fraction=float(sign_fraction),
        learning_rate=float(lr),
        saturation=saturation,
        saturation_quantile=float(sat_q),
        linear_r2=float(linear_r2),
        magnitudes=mags,
        odd_updates=odd,
    )
