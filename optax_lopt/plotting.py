"""Figures: loss curves of evaluated optimizers and the records of meta-training runs.

The one home of the package's plotting, kept out of the code that produces what it draws.
`plot_loss_curves` and `plot_panels` draw `optax_lopt.evaluation.evaluate`'s results (also
importable from `optax_lopt.evaluation`); `plot_population` draws a self-training run's
``metrics.jsonl`` records (also ``optax_lopt.meta.plot_population``). matplotlib is imported
only when a figure is drawn, with the ``Agg`` backend.

References:
  Maheswaranathan et al., "Reverse engineering learned optimizers reveals known and novel
  mechanisms", arXiv 2011.02159 (Figure 1: loss curves, mean and spread over instances).
  Metz, Freeman, Maheswaranathan, Sohl-Dickstein, "Training Learned Optimizers with
  Randomly Initialized Learned Optimizers", arXiv 2101.07367.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from optax_lopt.evaluation import EvaluationResult

# ----------------------------------------------------------------- evaluation


def _draw_panel(
    ax: Any, results: Mapping[str, EvaluationResult], title: str, colors: Mapping[str, str]
) -> None:
    for name, result in results.items():
        steps = np.arange(len(result.mean_curve))
        lower = np.maximum(result.mean_curve - result.sem_curve, 1e-12)
        color = colors[name]
        ax.plot(steps, result.mean_curve, color=color, label=f"{name} ({result.objective:.3g})")
        ax.fill_between(steps, lower, result.mean_curve + result.sem_curve, color=color, alpha=0.25)
    ax.set_yscale("log")
    # A diverging baseline would stretch the axis over many decades: cap it above the start.
    starts = [float(r.mean_curve[0]) for r in results.values()]
    starts = [s for s in starts if np.isfinite(s) and s > 0]
    if starts:
        ax.set_ylim(top=10.0 * max(starts))
    ax.set_xlabel("step")
    ax.set_title(title)
    ax.legend(fontsize=8)


def plot_loss_curves(results: Mapping[str, EvaluationResult], path: str, title: str = "") -> None:
    """Writes a PNG of mean loss +/- s.e.m. per optimizer, log scale, as in the paper's Fig. 1.

    Args:
      results: label -> `EvaluationResult` (from `optax_lopt.evaluation.evaluate`).
      path: output PNG path.
      title: figure title (e.g. the task name).
    """
    plot_panels({title: results}, path)


def plot_panels(panels: Mapping[str, Mapping[str, EvaluationResult]], path: str) -> None:
    """Writes one PNG with a loss-curve panel per task, side by side, like the paper's Fig. 1.

    Each panel shows every optimizer's mean training loss +/- s.e.m. over the held-out
    instances on a log scale; the legend gives each optimizer's meta-objective.

    Args:
      panels: panel title (e.g. the task name) -> label -> `EvaluationResult`.
      path: output PNG path.

    Raises:
      ValueError: if ``panels`` is empty.
    """
    if not panels:
        raise ValueError("panels: expected at least one panel, got none.")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.5), dpi=100)
    axes = np.atleast_1d(axes)
    labels = list(dict.fromkeys(name for results in panels.values() for name in results))
    colors = {name: f"C{i % 10}" for i, name in enumerate(labels)}  # one colour per optimizer
    for ax, (title, results) in zip(axes, panels.items(), strict=True):
        _draw_panel(ax, results, title, colors)
    axes[0].set_ylabel("training loss (mean ± s.e.m.)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ----------------------------------------------------------------- meta-training runs


def plot_population(
    records: Sequence[dict[str, Any]],
    path: str,
    title: str = "",
    key: str = "ema_meta_loss",
    references: Mapping[str, Sequence[float]] | None = None,
    feedback: Mapping[int, float] | None = None,
    feedback_references: Mapping[str, float] | None = None,
) -> None:
    """Writes a PNG of the population's meta-loss, its step gains and the feedback probe.

    Left: every member's meta-loss over outer steps (thin), the best (bold), PBT events (grey
    lines) and optional reference curves (dashed, e.g. the same architecture meta-trained by
    Adam on the same budget). Right, if the records hold ``"step_gain"``: the best member's
    gain on its own meta-update and the population's range; a gain that rises as the
    meta-loss falls is the feedback loop of arXiv 2101.07367 made visible: the better the
    optimizers get, the larger the steps they can take on themselves. Last, if ``feedback``
    is given: how well the best member saved at each outer step meta-trains fresh random
    learned optimizers (`optax_lopt.meta.probe_meta_optimizers`; lower is better), the loop's
    other half: the population becomes a better meta-optimizer as it trains itself.

    Args:
      records: the metrics records (``read_metrics(workdir)`` or ``on_step`` records).
      path: output PNG path.
      title: figure title.
      key: which per-member series to draw (``"ema_meta_loss"`` or ``"meta_loss"``).
      references: optional ``{label: values}``, one value per outer step (step ``1..n``).
      feedback: optional ``{outer step: probe meta-loss}`` of the snapshots.
      feedback_references: optional ``{label: probe meta-loss}`` drawn as horizontal lines
        in the feedback panel (e.g. Adam as the meta-optimizer).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not records:
        raise ValueError("records: expected at least one metrics record, got none.")
    has_gain = all("step_gain" in r for r in records)
    num_panels = 1 + int(has_gain) + int(bool(feedback))
    fig, axes = plt.subplots(1, num_panels, figsize=(5 * num_panels, 3.8), dpi=100, squeeze=False)
    axes = list(axes[0])
    _loss_panel(axes[0], records, key, title, references)
    if has_gain:
        _gain_panel(axes[1], records)
    if feedback:
        _feedback_panel(axes[-1], feedback, feedback_references)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _loss_panel(ax, records, key, title, references) -> None:
    """Every member's meta-loss (thin), the best (bold), PBT events, reference curves."""
    steps = np.asarray([r["step"] for r in records])
    values = np.asarray([[np.nan if v is None else v for v in r[key]] for r in records], np.float64)
    for i in range(values.shape[1]):
        ax.plot(steps, values[:, i], lw=0.6, alpha=0.5, color="tab:blue")
    ax.plot(steps, np.nanmin(values, axis=1), lw=2.0, color="black", label="best member")
    for s in (r["step"] for r in records if r.get("exploit")):
        ax.axvline(s, color="0.85", lw=0.5, zorder=0)
    for (label, curve), color in zip(
        (references or {}).items(), ("tab:red", "tab:orange", "tab:green"), strict=False
    ):
        curve = np.asarray(curve, np.float64)
        ax.plot(np.arange(1, len(curve) + 1), curve, ls="--", lw=1.5, color=color, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("outer step")
    ax.set_ylabel(f"meta-loss ({key.replace('_', ' ')})")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)


def _gain_panel(ax, records) -> None:
    """The best member's step gain and the population's range."""
    steps = np.asarray([r["step"] for r in records])
    gains = np.asarray([r["step_gain"] for r in records], np.float64)
    best_index = np.asarray([r["best"] for r in records])
    ax.fill_between(
        steps,
        gains.min(axis=1),
        gains.max(axis=1),
        color="tab:blue",
        alpha=0.2,
        label="population range",
    )
    ax.plot(
        steps,
        gains[np.arange(len(steps)), best_index],
        color="black",
        lw=2.0,
        label="best member",
    )
    ax.set_yscale("log")
    ax.set_xlabel("outer step")
    ax.set_ylabel("step gain on own meta-update")
    ax.set_title("Gain selected by PBT", fontsize=10)
    ax.legend(fontsize=8)


def _feedback_panel(ax, feedback, feedback_references) -> None:
    """The feedback probe's score of each snapshot, with horizontal reference lines."""
    at = sorted(feedback)
    ax.plot(at, [feedback[t] for t in at], "o-", color="black", label="best member at step")
    for (label, value), color in zip(
        (feedback_references or {}).items(), ("tab:red", "tab:orange"), strict=False
    ):
        ax.axhline(value, ls="--", lw=1.2, color=color, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("outer step of the snapshot")
    ax.set_ylabel("meta-loss of fresh trainees")
    ax.set_title("Snapshots as meta-optimizers", fontsize=10)
    ax.legend(fontsize=8)
