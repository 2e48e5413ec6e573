"""Figures of the paper's analyses, written as PNG files with matplotlib's Agg canvas.

Every function takes results of this package, writes one PNG to ``path`` and returns the path.
They draw on a private ``Figure`` with an Agg canvas, so they never touch pyplot's global state
or the user's backend. matplotlib is imported on the first figure, so importing the package
(``optax_lopt`` imports it for `interpret.step_scale`) does not pay for it.

References:
  Maheswaranathan et al., "Reverse engineering learned optimizers reveals known and novel
  mechanisms", arXiv 2011.02159.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import optax

from interpret import system as _system
from interpret.adaptation import LRAdaptation
from interpret.fixed_points import FixedPoints
from interpret.linearize import Linearization
from interpret.schedule import ScheduleFit
from interpret.update_function import update_function


def _figure(size=(4.8, 3.6)):
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415 (lazy import)
    from matplotlib.figure import Figure  # noqa: PLC0415

    fig = Figure(figsize=size, dpi=90)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(1, 1, 1)


def _save(fig: Any, path: str | os.PathLike) -> str:
    path = os.fspath(path)
    if os.path.dirname(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def plot_update_functions(
    tx: optax.GradientTransformation | _system.ScalarSystem,
    states: Any,
    path: str | os.PathLike,
    *,
    gradients: Any = None,
    labels: Sequence[str] | None = None,
    step: int = 0,
    observed: Any = None,
) -> str:
    """Plots ``u(g | h)`` for several states ``h``, over the histogram of observed gradients.

    Args:
      tx: an optax transformation (or a `ScalarSystem`).
      states: state vectors, shape ``(S, size)``.
      path: the PNG file to write.
      gradients: the gradient grid (default ``linspace(-3, 3, 201)``).
      labels: one legend label per state.
      step: exogenous time.
      observed: gradients the optimizer actually saw (any shape): drawn as a grey histogram
        on a second axis, as in the paper's figures, clipped to the plotted range.

    Returns:
      ``path``.
    """
    g = np.linspace(-3, 3, 201) if gradients is None else gradients
    uf = update_function(tx, g, states, step=step)
    fig, ax = _figure()
    for i, u in enumerate(uf.updates):
        label = labels[i] if labels is not None and i < len(labels) else f"state {i}"
        ax.plot(uf.gradients, u, label=label)
    ax.axhline(0, color="0.7", lw=0.5)
    ax.axvline(0, color="0.7", lw=0.5)
    ax.set_xlabel("gradient g")
    ax.set_ylabel("update u(g | h)")
    ax.set_title("Update functions")
    if observed is not None:
        seen = np.asarray(observed, np.float64).ravel()
        seen = seen[np.isfinite(seen) & (seen >= np.min(g)) & (seen <= np.max(g))]
        # gradients span decades: a symmetric log axis, linear within the median magnitude
        threshold = float(np.median(np.abs(seen[seen != 0]))) if np.any(seen != 0) else 1.0
        ax.set_xscale("symlog", linthresh=threshold)
        top = float(np.max(np.abs(g)))
        edges = np.geomspace(threshold, max(top, threshold * 1.01), 25)
        bins = np.concatenate([-edges[::-1], np.linspace(-threshold, threshold, 9)[1:-1], edges])
        twin = ax.twinx()
        twin.hist(seen, bins=bins, color="0.8", alpha=0.6, label="gradients seen")
        twin.set_ylabel("count of gradients seen")
        twin.set_zorder(ax.get_zorder() - 1)
        ax.patch.set_visible(False)
        handles, names = ax.get_legend_handles_labels()
        h2, n2 = twin.get_legend_handles_labels()
        ax.legend(handles + h2, names + n2, fontsize=7)
    else:
        ax.legend(fontsize=7)
    return _save(fig, path)


def plot_modes(betas: Any, contributions: Any, path: str | os.PathLike, *, direct: float) -> str:
    """Plots each momentum mode's contribution to the update against its decay ``beta``.

    Args:
      betas: the modes' ``beta_k`` (`interpret.MomentumModes.betas`).
      contributions: their contributions (`interpret.MomentumModes.contributions`).
      path: the PNG file to write.
      direct: the memoryless part of the update (drawn at ``beta = 0``).

    Returns:
      ``path``.
    """
    fig, ax = _figure()
    b, c = np.asarray(betas, np.float64), np.asarray(contributions, np.float64)
    ax.bar([0.0], [abs(direct)], width=0.02, color="C1", label="direct term (no memory)")
    ax.scatter(b, c, s=18, color="C0", label="mode k: |alpha_k| beta_k / (1 - beta_k)")
    ax.set_yscale("symlog", linthresh=max(1e-12, float(np.max(np.abs(c), initial=1e-12)) * 1e-3))
    ax.set_xlim(-0.05, 1.05)
    ax.set_xlabel("mode decay beta_k = |lambda_k|")
    ax.set_ylabel("contribution to the update")
    ax.set_title("Momentum modes at the convergence fixed point")
    ax.legend(fontsize=7)
    return _save(fig, path)


def _pca(data: np.ndarray, k: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mean = data.mean(axis=0)
    _, s, vt = np.linalg.svd(data - mean, full_matrices=False)
    var = s**2 / max(np.sum(s**2), 1e-300)
    return mean, vt[:k], var[:k]


def plot_trajectories(
    states: Any,
    path: str | os.PathLike,
    *,
    fixed_points: FixedPoints | None = None,
) -> str:
    """Plots state trajectories in the plane of their first two principal components.

    One-dimensional states are drawn against the step instead.

    Args:
      states: trajectories, shape ``(T, K, size)`` (K coordinates, e.g. ``Rollout.states``)
        or ``(T, size)``.
      path: the PNG file to write.
      fixed_points: drawn as a curve of points coloured by ``g*``, in the same projection.

    Returns:
      ``path``.
    """
    x = np.asarray(states, np.float64)
    if x.ndim == 2:
        x = x[:, None]
    if x.ndim != 3:
        raise ValueError(f"states: expected shape (T, K, size) or (T, size), got {x.shape}.")
    fig, ax = _figure()
    n = x.shape[-1]
    if n == 0:
        ax.text(0.5, 0.5, "stateless optimizer", ha="center", va="center")
        ax.set_axis_off()
        return _save(fig, path)
    if n == 1:
        _plot_scalar_states(ax, x, fixed_points)
    else:
        _plot_projected_states(fig, ax, x, fixed_points)
    return _save(fig, path)


def _plot_scalar_states(ax, x: np.ndarray, fixed_points: FixedPoints | None) -> None:
    """One-dimensional states ``(T, K, 1)`` against the step, fixed points as lines."""
    t, k, _ = x.shape
    for j in range(k):
        ax.plot(np.arange(t), x[:, j, 0], lw=1)
    if fixed_points is not None:
        for g, h in zip(fixed_points.inputs, fixed_points.states[:, 0], strict=True):
            ax.axhline(h, color="k", lw=0.4, ls=":")
            ax.annotate(f"g*={g:.3g}", (t - 1, h), fontsize=6)
    ax.set_xlabel("step")
    ax.set_ylabel("state h")
    ax.set_title("State trajectories")


def _plot_projected_states(fig, ax, x: np.ndarray, fixed_points: FixedPoints | None) -> None:
    """States ``(T, K, n)`` in the plane of the first two principal components."""
    t, k, n = x.shape
    pool = x.reshape(t * k, n)
    if fixed_points is not None:
        pool = np.concatenate([pool, fixed_points.states])
    mean, pcs, var = _pca(pool)
    for j in range(k):
        p = (x[:, j] - mean) @ pcs.T
        ax.plot(p[:, 0], p[:, 1], lw=0.8, alpha=0.8)
        ax.plot(p[0, 0], p[0, 1], "o", ms=3, color="0.3")
    if fixed_points is not None:
        p = (fixed_points.states - mean) @ pcs.T
        sc = ax.scatter(p[:, 0], p[:, 1], c=fixed_points.inputs, cmap="coolwarm", s=14, zorder=3)
        fig.colorbar(sc, ax=ax, label="fixed point input g*")
    ax.set_xlabel(f"PC1 ({100 * var[0]:.0f}% var)")
    ax.set_ylabel(f"PC2 ({100 * var[1]:.0f}% var)")
    ax.set_title("State trajectories and fixed points")


def plot_eigenvalues(
    linearizations: Linearization | Sequence[Linearization],
    path: str | os.PathLike,
    *,
    labels: Sequence[str] | None = None,
) -> str:
    """Plots Jacobian eigenvalues in the complex plane with the unit circle.

    Args:
      linearizations: one or several `Linearization` results.
      path: the PNG file to write.
      labels: one legend label per linearisation.

    Returns:
      ``path``.
    """
    if isinstance(linearizations, Linearization):
        linearizations = [linearizations]
    fig, ax = _figure((4.2, 4.0))
    theta = np.linspace(0, 2 * np.pi, 256)
    ax.plot(np.cos(theta), np.sin(theta), color="0.6", lw=0.8)
    for i, lin in enumerate(linearizations):
        label = labels[i] if labels is not None and i < len(labels) else f"g*={lin.input:.3g}"
        ax.scatter(lin.eigenvalues.real, lin.eigenvalues.imag, s=12, label=label)
    ax.set_aspect("equal")
    ax.set_xlim(-1.1, 1.1)
    ax.set_ylim(-1.1, 1.1)
    ax.set_xlabel("Re(lambda)")
    ax.set_ylabel("Im(lambda)")
    ax.set_title("Jacobian eigenvalues")
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_schedule(fit: ScheduleFit, path: str | os.PathLike) -> str:
    """Plots the effective learning rate over steps, with its interquartile band.

    Args:
      fit: a `ScheduleFit`.
      path: the PNG file to write.

    Returns:
      ``path``.
    """
    fig, ax = _figure()
    steps = np.arange(fit.learning_rates.size)
    lr, half = fit.learning_rates, fit.spread / 2
    ax.fill_between(steps, lr - half, lr + half, alpha=0.3)
    ax.plot(steps, lr, label="median effective learning rate")
    if np.any(half > 0):
        ax.legend(fontsize=7)
    ax.set_xlabel("step")
    ax.set_ylabel("effective learning rate -du/dg")
    ax.set_title(f"Schedule (warm-up {fit.warmup_steps} steps, decay {fit.decay:.3g})")
    return _save(fig, path)


def plot_lr_adaptation(fit: LRAdaptation, path: str | os.PathLike) -> str:
    """Plots the effective learning rate at each fixed point against ``|g*|``.

    Log-log when a power law was fitted; otherwise (``fit.exponent`` NaN) the signed slopes
    on a linear axis with a zero line, so an update that grows with ``g`` is visible.

    Args:
      fit: an `LRAdaptation`.
      path: the PNG file to write.

    Returns:
      ``path``.
    """
    fig, ax = _figure()
    if np.isnan(fit.exponent):
        # No power law (fewer than two positive slopes): show the signed slopes as they are.
        ax.semilogx(fit.gradients, fit.learning_rates, "o-", label="fixed point of |g*|")
        ax.axhline(0.0, color="0.6", lw=0.8)
        ax.set_title("Learning-rate adaptation (no power law)")
    else:
        good = fit.learning_rates > 0
        ax.loglog(fit.gradients[good], fit.learning_rates[good], "o-", label="fixed point of |g*|")
        ax.set_title(f"Learning-rate adaptation (lr ~ |g*|^-{fit.exponent:.2f})")
    ax.set_xlabel("constant gradient |g*|")
    ax.set_ylabel("effective learning rate at fixed point")
    ax.legend(fontsize=7)
    return _save(fig, path)
