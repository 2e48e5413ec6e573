"""What a distilled chain leaves unexplained: which behaviour the found mechanisms miss.

The paper looks for "novel mechanisms": behaviour of a learned optimizer that no known
mechanism accounts for. After `distill` has fitted the best chain of known mechanisms, the
residual ``u - u_fit`` of the recorded updates is what is left. `unexplained` measures how
much of that residual each candidate behaviour explains when it is added to the chain, every
candidate a function of the coordinate's own gradient history (a per-coordinate optimizer sees
nothing else), weighted per step as the schedule is:

- ``gradient magnitude``: ``sign(g_t) * F(|g_t|)``, ``F`` the distribution function of the
  recorded ``|g|`` (so 0.5 at the median), a step that grows with the gradient's size beyond
  what sign, normalisation and clipping give;
- ``sign agreement``: ``sign(g_t)`` where ``g_t`` has the sign of ``g_{t-1}`` (else 0), the
  first step of Rprop's rule;
- ``agreement run``: ``sign(g_t)`` times the number of consecutive steps (at most 10) with the
  same sign, a step that keeps growing while the gradient keeps its sign (Rprop);
- ``magnitude trend``: ``sign(g_t) * log(|g_t| / |g_{t-1}|)``, a response to the gradient
  shrinking or growing.

A candidate that explains a large part of the residual names the behaviour the chain lacks;
when none does, the remainder is a behaviour outside this list too. `residual_locations` then
says where the residual lies (early steps, large or small gradients, sign flips).
"""

from __future__ import annotations

import numpy as np

from interpret.momentum import r_squared

RESIDUAL_FEATURES = ("gradient magnitude", "sign agreement", "agreement run", "magnitude trend")
"""The candidate behaviours `unexplained` scores, in the module docstring's order."""

_MAX_RUN = 10
_NEGLIGIBLE = 1e-6
"""Residual variance share below which there is nothing left to explain."""


def _previous(x: np.ndarray) -> np.ndarray:
    return np.concatenate([x[:1], x[:-1]], axis=0)


def _run_lengths(s: np.ndarray) -> np.ndarray:
    run = np.ones_like(s)
    for t in range(1, len(s)):
        run[t] = np.where(s[t] == s[t - 1], np.minimum(run[t - 1] + 1, _MAX_RUN), 1)
    return run


def candidate_features(gradients: np.ndarray) -> dict[str, np.ndarray]:
    """Each candidate of `RESIDUAL_FEATURES` as a ``(T, K)`` array of ``gradients``."""
    g = np.asarray(gradients, np.float64)
    s = np.sign(g)
    magnitude = np.abs(g)
    rank = np.argsort(np.argsort(magnitude, axis=None), axis=None).reshape(g.shape)
    quantile = (rank + 0.5) / magnitude.size
    log_mag = np.log(np.maximum(magnitude, 1e-30))
    agree = (s * _previous(s) > 0).astype(np.float64)
    agree[0] = 0.0
    trend = log_mag - _previous(log_mag)
    return {
        "gradient magnitude": s * quantile,
        "sign agreement": s * agree,
        "agreement run": s * _run_lengths(s),
        "magnitude trend": s * trend,
    }


def unexplained(gradients: np.ndarray, updates: np.ndarray, fitted: np.ndarray) -> dict[str, float]:
    """Fraction of what ``fitted`` leaves of ``updates`` that each candidate behaviour explains.

    Each step's updates are fitted by least squares on the chain's updates alone, then on the
    chain's updates and the candidate together; the candidate's share is the gain in r2 over
    the variance the chain alone leaves, ``(r2_joint - r2_chain) / (1 - r2_chain)``.

    Args:
      gradients: the ``(T, K)`` gradient sequences the updates answer.
      updates: the optimizer's ``(T, K)`` updates.
      fitted: the distilled chain's ``(T, K)`` updates on the same gradients.

    Returns:
      Candidate -> its share in [0, 1], in `RESIDUAL_FEATURES` order; 0 for a candidate
      that explains nothing, and 0 for every candidate when the chain leaves less than 1e-6
      of the update variance (rounding, which no behaviour explains).
    """
    g, u, f = _checked(gradients, updates, fitted)
    base = _per_step_fit(u, [f])
    left = 1 - r_squared(u, base)
    if not left > _NEGLIGIBLE:  # an exact chain leaves only rounding, which explains nothing
        return dict.fromkeys(RESIDUAL_FEATURES, 0.0)
    out = {}
    for name, x in candidate_features(g).items():
        joint = _per_step_fit(u, [f, x])
        share = (r_squared(u, joint) - (1 - left)) / left
        out[name] = float(min(max(share, 0.0), 1.0)) if np.isfinite(share) else 0.0
    return out


def _per_step_fit(u: np.ndarray, columns: list[np.ndarray]) -> np.ndarray:
    """Least squares of each step's updates on the given columns (own weights per step)."""
    x = np.stack(columns, -1)  # (T, K, C)
    out = np.empty_like(u)
    for t in range(len(u)):
        w, *_ = np.linalg.lstsq(x[t], u[t], rcond=None)
        out[t] = x[t] @ w
    return out


RESIDUAL_LOCATIONS = (
    "first 10% of steps",
    "last half of steps",
    "largest 10% of |g|",
    "smallest 25% of |g|",
    "sign flips",
)
"""Where `residual_locations` looks for what the chain misses."""


def _location_masks(g: np.ndarray) -> dict[str, np.ndarray]:
    t = np.arange(len(g))[:, None] * np.ones_like(g)
    magnitude = np.abs(g)
    flips = np.sign(g) * np.sign(_previous(g)) < 0
    return {
        "first 10% of steps": t < max(1, len(g) // 10),
        "last half of steps": t >= len(g) // 2,
        "largest 10% of |g|": magnitude >= np.quantile(magnitude, 0.9),
        "smallest 25% of |g|": magnitude <= np.quantile(magnitude, 0.25),
        "sign flips": flips,
    }


def residual_locations(
    gradients: np.ndarray, updates: np.ndarray, fitted: np.ndarray
) -> dict[str, tuple[float, float]]:
    """Where the chain's misses lie: per location, its share of the squared residual.

    Args:
      gradients: the ``(T, K)`` gradient sequences the updates answer.
      updates: the optimizer's ``(T, K)`` updates.
      fitted: the distilled chain's ``(T, K)`` updates on the same gradients.

    Returns:
      Location of `RESIDUAL_LOCATIONS` -> ``(share of sum (u - fitted)^2 there, share of the
      entries there)``: a location whose first number is several times its second is where
      the chain goes wrong (early in training, at large gradients, where the gradient flips).
    """
    g, u, f = _checked(gradients, updates, fitted)
    energy = (u - f) ** 2
    total = float(energy.sum())
    out = {}
    for name, mask in _location_masks(g).items():
        share = float(energy[mask].sum() / total) if total > 0 else 0.0
        out[name] = (share, float(mask.mean()))
    return out


def _checked(*arrays) -> tuple[np.ndarray, ...]:
    g, u, f = (np.asarray(x, np.float64) for x in arrays)
    if not (g.shape == u.shape == f.shape and g.ndim == 2):
        raise ValueError(
            "gradients, updates, fitted: expected three (T, K) arrays of one shape, got "
            f"{g.shape}, {u.shape}, {f.shape}."
        )
    return g, u, f
