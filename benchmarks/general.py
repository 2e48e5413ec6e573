"""Benchmark: ``pretrained("general")`` on problems it never saw, against default and tuned Adam.

The problems are ``optax_lopt.tasks.unseen_suite()`` (bundled scikit-learn data: logistic and
softmax regression, MLP classifiers and regressors, an autoencoder, a small convnet; and
ill-conditioned quadratics and chained Rosenbrock functions), none of them a family of the mix
``general`` was meta-trained on. Each runs at horizons of 300 and 1,000 steps, and 5,000 where
steps are cheap (`HORIZONS`). Per problem and horizon four optimizers are scored by the
meta-objective ``mean_t f_t / f_0`` (`optax_lopt.evaluation.objective`, lower is better) on
``--num_test`` held-out "test" instances:

- ``general``: the learned optimizer of ``--lopt`` (a shipped name or a weights directory);
- ``adam 1e-3``: ``optax.adam(1e-3)``, the default;
- ``tuned adam``: Adam with the learning rate of ``--learning_rates`` that scores best on
  ``--num_tune`` separate "tune" instances;
- ``tuned warmup-cosine``: Adam under ``optax.warmup_cosine_decay_schedule`` (linear warm-up
  over ``--warmup_fraction`` of the horizon, cosine decay to 0 at the horizon), its peak
  learning rate tuned the same way.

The learned optimizer and constant-rate Adam do not know the horizon, so one run of a
problem's longest horizon gives every shorter horizon as a prefix of the same loss curves: one
compilation per problem instead of one per horizon (the warm-up-cosine schedule depends on the
horizon and runs once per horizon). Every learning rate runs in one jitted call vmapped over
rates and instances (`optax_lopt.evaluation.run_on_instances`). The baselines' results are
cached as JSON in ``--cache_dir``, keyed by everything that determines them, so evaluating a
new ``--lopt`` reruns only the learned optimizer.

A run diverges on an instance when a loss up to the horizon is not finite or the loss at the
horizon exceeds the initial loss; a diverged ``general`` counts as losing to both Adams and is
flagged ``!`` in the table. Prints the table, then one JSON object as the last line: per
problem and horizon the objectives, and the counts of (problem, horizon) pairs where
``general`` beats tuned Adam, is within 10% of it, beats default Adam, and diverged, and the
geometric mean of ``general / tuned Adam`` over the pairs (README's and the results page's
"ratio"). Targets
(issue 17): beats tuned Adam on at least half, within 10% on all, at every horizon; never
diverges; beats default Adam everywhere.

Run: ``python benchmarks/general.py`` (``--quick``: four problems at 300 steps, fewer
instances; ``--help`` for flags).

References:
  Metz et al., "Tasks, stability, architecture, and compute: Training more effective learned
  optimizers, and using them to train themselves", arXiv 2009.11243.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

import optax_lopt
from optax_lopt import evaluation, tasks

SHORT, MEDIUM, LONG = (300,), (300, 1000), (300, 1000, 5000)
HORIZONS = {
    "logistic_breast_cancer": LONG,
    "softmax_iris": LONG,
    "softmax_wine": LONG,
    "softmax_digits": MEDIUM,
    "mlp_wine_32": LONG,
    "mlp_breast_cancer_64x64": MEDIUM,
    "mlp_breast_cancer_16x16x16": MEDIUM,
    "mlp_diabetes_32x32": MEDIUM,
    "mlp_diabetes_128": MEDIUM,
    "autoencoder_digits": MEDIUM,
    "convnet_digits": SHORT,
    "quadratic_cond1e2": LONG,
    "quadratic_cond1e4": LONG,
    "rosenbrock_10d": LONG,
    "rosenbrock_30d": LONG,
}
"""Problem -> horizons: 5,000 steps only where a step is cheap, the convnet at 300 only."""

QUICK_PROBLEMS = ("logistic_breast_cancer", "softmax_iris", "quadratic_cond1e2", "rosenbrock_10d")
LEARNING_RATES = tuple(float(10.0 ** (e / 2)) for e in range(-8, 3))
"""1e-4 to 10 in half-decades (11 values): wide enough that no problem's best rate is an end."""
DEFAULT_ADAM_LR = 1e-3
COLUMNS = ("general", "adam_default", "adam_tuned", "warmup_cosine_tuned")

_LOPT = flags.DEFINE_string("lopt", "general", "Shipped optimizer name or weights directory.")
_PROBLEMS = flags.DEFINE_list("problems", list(HORIZONS), "Problems of the suite to run.")
_QUICK = flags.DEFINE_bool("quick", False, "Four problems, 300 steps, 4 test / 2 tune instances.")
_NUM_TEST = flags.DEFINE_integer("num_test", 8, "Held-out instances per problem and optimizer.")
_NUM_TUNE = flags.DEFINE_integer("num_tune", 4, "Tuning instances per learning rate.")
_LEARNING_RATES = flags.DEFINE_list(
    "learning_rates", [f"{r:g}" for r in LEARNING_RATES], "Learning-rate grid of both Adams."
)
_WARMUP = flags.DEFINE_float("warmup_fraction", 0.05, "Warm-up length / horizon (schedule).")
_CACHE_DIR = flags.DEFINE_string(
    "cache_dir", "/tmp/optax_lopt_tuning/general_unseen", "Where baseline results are cached."
)


def load_lopt(spec: str) -> optax.GradientTransformation:
    """The optimizer ``--lopt`` names: a shipped name or a directory written by ``save``."""
    if os.path.isdir(spec):
        lopt, theta = optax_lopt.load(spec)
        return lopt.transform(theta)
    return optax_lopt.pretrained(spec)


def curves(make_tx, family, keys, rates, num_steps: int) -> np.ndarray:
    """Loss curves ``[len(rates), len(keys), num_steps + 1]`` of ``make_tx(rate)``, one call."""

    @jax.jit
    def run(rates):
        return jax.vmap(lambda r: evaluation.run_on_instances(make_tx(r), family, keys, num_steps))(
            rates
        )

    return np.asarray(run(jnp.asarray(rates, jnp.float32)))


def _objectives(losses: np.ndarray, horizon: int) -> np.ndarray:
    """Meta-objective of each ``[..., T + 1]`` curve cut at ``horizon`` steps: ``[...]``."""
    cut = losses[..., : horizon + 1]
    flat = np.asarray(evaluation.objective(jnp.asarray(cut.reshape(-1, horizon + 1))))
    return flat.reshape(cut.shape[:-1])


def _diverged(losses: np.ndarray, horizon: int) -> np.ndarray:
    """Per curve: a non-finite loss up to ``horizon``, or a final loss above the initial."""
    cut = losses[..., : horizon + 1]
    with np.errstate(invalid="ignore"):
        return ~np.all(np.isfinite(cut), axis=-1) | (cut[..., -1] > cut[..., 0])


def _summary(losses: np.ndarray, horizon: int, **extra) -> dict:
    """Mean objective, its s.e.m. and the diverged count of ``[N, T + 1]`` test curves."""
    obj = _objectives(losses, horizon)
    return {
        "objective": float(obj.mean()),
        "sem": float(obj.std(ddof=1) / np.sqrt(len(obj))) if len(obj) > 1 else 0.0,
        "diverged": int(_diverged(losses, horizon).sum()),
        **extra,
    }


def _tuned(losses: np.ndarray, rates, num_tune: int, horizon: int) -> dict:
    """Picks the rate with the best mean objective on the tune curves; test summary of it."""
    scores = _objectives(losses[:, :num_tune], horizon).mean(axis=1)
    best = int(np.argmin(scores))
    return _summary(
        losses[best, num_tune:], horizon, learning_rate=rates[best], tune_score=float(scores[best])
    )


def _keys(num_tune: int, num_test: int) -> jax.Array:
    tune = evaluation.instance_keys("tune", num_tune)
    return jnp.concatenate([tune, evaluation.instance_keys("test", num_test)])


def warmup_cosine(horizon: int, warmup_fraction: float):
    """``rate -> optax.adam`` under a warm-up + cosine schedule peaking at ``rate``."""
    unit = optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=1.0,
        warmup_steps=max(1, round(warmup_fraction * horizon)),
        decay_steps=horizon,
        end_value=0.0,
    )
    return lambda rate: optax.adam(lambda count: rate * unit(count))


def baselines(family, horizons, rates, num_tune: int, num_test: int, warmup: float) -> dict:
    """Per horizon: default Adam, tuned Adam and tuned warm-up-cosine Adam on test instances.

    Constant-rate Adam runs the longest horizon once, every rate of ``rates`` plus the
    default on tune and test instances together; shorter horizons are prefixes. The schedule
    runs once per horizon.
    """
    keys = _keys(num_tune, num_test)
    all_rates = sorted(set(rates) | {DEFAULT_ADAM_LR})
    adam = curves(optax.adam, family, keys, all_rates, max(horizons))
    grid = [all_rates.index(r) for r in rates]
    out = {}
    for h in horizons:
        schedule = curves(warmup_cosine(h, warmup), family, keys, rates, h)
        out[str(h)] = {
            "adam_default": _summary(adam[all_rates.index(DEFAULT_ADAM_LR), num_tune:], h),
            "adam_tuned": _tuned(adam[grid], list(rates), num_tune, h),
            "warmup_cosine_tuned": _tuned(schedule, list(rates), num_tune, h),
        }
    return out


def cached_baselines(name, family, horizons, rates, num_tune, num_test, warmup, cache_dir):
    """`baselines`, read from / written to a JSON file in ``cache_dir`` when one is given."""
    description = {
        "version": 1,
        "family": repr(family),
        "horizons": list(horizons),
        "learning_rates": list(rates),
        "default_lr": DEFAULT_ADAM_LR,
        "num_tune": num_tune,
        "num_test": num_test,
        "warmup_fraction": warmup,
    }
    digest = hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:16]
    path = os.path.join(cache_dir, f"{name}-{digest}.json") if cache_dir else None
    if path and os.path.isfile(path):
        with open(path) as f:
            return json.load(f)["results"]
    results = baselines(family, horizons, rates, num_tune, num_test, warmup)
    if path:
        os.makedirs(cache_dir, exist_ok=True)
        with open(f"{path}.tmp", "w") as f:
            json.dump({"description": description, "results": results}, f, indent=1)
        os.replace(f"{path}.tmp", path)
    return results


def run_problem(name, family, tx, horizons, config) -> list[dict]:
    """One problem: the learned optimizer and the (cached) baselines, a row per horizon."""
    start = time.time()
    base = cached_baselines(
        name,
        family,
        horizons,
        config["learning_rates"],
        config["num_tune"],
        config["num_test"],
        config["warmup_fraction"],
        config["cache_dir"],
    )
    keys = evaluation.instance_keys("test", config["num_test"])
    losses = curves(lambda _: tx, family, keys, [0.0], max(horizons))[0]
    rows = []
    for h in horizons:
        results = {"general": _summary(losses, h), **base[str(h)]}
        general, tuned = results["general"], results["adam_tuned"]
        rows.append(
            {
                "problem": name,
                "horizon": h,
                "objectives": {k: results[k]["objective"] for k in COLUMNS},
                "results": results,
                "general_vs_tuned_adam": general["objective"] / tuned["objective"] - 1.0,
            }
        )
    rows[-1]["seconds"] = time.time() - start
    return rows


def _verdicts(row: dict) -> dict[str, bool]:
    """Whether ``general`` beats / is within 10% of tuned Adam, beats default Adam, diverged."""
    res = row["results"]
    diverged = res["general"]["diverged"] > 0
    general = res["general"]["objective"]
    tuned, default = res["adam_tuned"]["objective"], res["adam_default"]["objective"]
    return {
        "beats_tuned_adam": not diverged and general < tuned,
        "within_10pct_of_tuned_adam": not diverged and general <= 1.1 * tuned,
        "beats_default_adam": not diverged and general < default,
        "beats_tuned_warmup_cosine": not diverged
        and general < res["warmup_cosine_tuned"]["objective"],
        "diverged": diverged,
    }


def counts(rows: list[dict]) -> dict[str, int]:
    """Number of rows for which each of `_verdicts` holds, plus ``num_problems``."""
    verdicts = [_verdicts(r) for r in rows]
    out = {k: sum(v[k] for v in verdicts) for k in verdicts[0]} if verdicts else {}
    return {**out, "num_problems": len(rows)}


def geometric_mean_ratio(rows: list[dict]) -> float:
    """The geometric mean of ``general / tuned Adam`` over ``rows`` (inf if one is not finite)."""
    ratios = np.asarray(
        [r["objectives"]["general"] / r["objectives"]["adam_tuned"] for r in rows], np.float64
    )
    if not ratios.size:
        return float("nan")
    if not np.all(np.isfinite(ratios) & (ratios > 0)):
        return float("inf")
    return float(np.exp(np.mean(np.log(ratios))))


def _cell(result: dict, rate: bool = False) -> str:
    text = f"{result['objective']:.4f}" + ("!" if result["diverged"] else "")
    return f"{text} ({result['learning_rate']:.0e})" if rate else text


def print_table(rows: list[dict]) -> None:
    """The human table: one line per problem and horizon."""
    head = (
        "problem",
        "T",
        "general",
        "adam 1e-3",
        "tuned adam (lr)",
        "warmup-cos (lr)",
        "vs tuned",
    )
    widths = (27, 5, 10, 10, 18, 18, 9)
    print(
        " ".join(
            f"{h:>{w}}" if i else f"{h:<{w}}"
            for i, (h, w) in enumerate(zip(head, widths, strict=True))
        )
    )
    for r in rows:
        res = r["results"]
        cells = (
            r["problem"],
            str(r["horizon"]),
            _cell(res["general"]),
            _cell(res["adam_default"]),
            _cell(res["adam_tuned"], True),
            _cell(res["warmup_cosine_tuned"], True),
            f"{100 * r['general_vs_tuned_adam']:+.1f}%",
        )
        print(
            " ".join(
                f"{c:>{w}}" if i else f"{c:<{w}}"
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            )
        )


def _config() -> dict:
    quick = _QUICK.value
    problems = list(QUICK_PROBLEMS) if quick else _PROBLEMS.value
    unknown = sorted(set(problems) - set(HORIZONS))
    if unknown:
        raise app.UsageError(f"--problems: unknown {unknown}; valid: {sorted(HORIZONS)}.")
    try:
        rates = [float(r) for r in _LEARNING_RATES.value]
    except ValueError as err:
        raise app.UsageError(f"--learning_rates: expected numbers, got {err}.") from err
    return {
        "lopt": _LOPT.value,
        "quick": quick,
        "problems": problems,
        "num_test": 4 if quick else _NUM_TEST.value,
        "num_tune": 2 if quick else _NUM_TUNE.value,
        "learning_rates": rates,
        "default_lr": DEFAULT_ADAM_LR,
        "warmup_fraction": _WARMUP.value,
        "cache_dir": _CACHE_DIR.value,
    }


def main(argv: list[str]) -> None:
    del argv
    start = time.time()
    config = _config()
    tx = load_lopt(config["lopt"])
    suite = tasks.unseen_suite()
    rows = []
    for name in config["problems"]:
        horizons = SHORT if config["quick"] else HORIZONS[name]
        rows.extend(run_problem(name, suite[name], tx, horizons, config))
        print(f"{name}: {rows[-1]['seconds']:.0f} s", file=sys.stderr, flush=True)
    print_table(rows)
    ratio = geometric_mean_ratio(rows)
    print(f"geometric mean of general / tuned Adam over {len(rows)} pairs: {ratio:.3f}")
    by_horizon = {str(h): counts([r for r in rows if r["horizon"] == h]) for h in LONG}
    summary = {
        "counts": counts(rows),
        "geometric_mean_vs_tuned_adam": ratio,
        "counts_by_horizon": {h: c for h, c in by_horizon.items() if c["num_problems"]},
        "results": rows,
        "config": config,
        "machine": {
            "platform": f"{platform.machine()} {os.cpu_count()} CPUs",
            "load_average": list(os.getloadavg()),
            "jax": jax.__version__,
            "backend": jax.default_backend(),
        },
        "seconds": time.time() - start,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    app.run(main)
