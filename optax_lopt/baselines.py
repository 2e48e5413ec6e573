"""Tuned hand-designed baselines: SGD with momentum, RMSProp and Adam.

`tune` grid-searches one optimizer's hyperparameters on tuning instances of a task family and
scores each setting by the same meta-objective as meta-training and evaluation (the mean over
the horizon of loss / initial loss, see `optax_lopt.evaluation`). The learning-rate grid
spans 1e-4 to 10 in quarter-decade steps by default; the other hyperparameters' grids are
below. All learning rates of one setting run in a single jitted, vmapped call. Results can be
cached as JSON keyed by everything that determines them.

References:
  Maheswaranathan et al., "Reverse engineering learned optimizers reveals known and novel
  mechanisms", arXiv 2011.02159 (baselines tuned over learning rate and momentum/decays).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_lopt import _checks
from optax_lopt.evaluation import (
    EvaluationResult,
    evaluate,
    instance_keys,
    objective,
    run_on_instances,
)
from optax_lopt.tasks.base import TaskFamily

LEARNING_RATES = tuple(float(10.0 ** (e / 4)) for e in range(-16, 5))
"""1e-4 to 10 in quarter-decade steps (21 values)."""


def _sgdm(learning_rate, momentum):
    return optax.sgd(learning_rate, momentum=momentum)


def _rmsprop(learning_rate, decay):
    return optax.rmsprop(learning_rate, decay=decay)


def _adam(learning_rate, b1, b2):
    return optax.adam(learning_rate, b1=b1, b2=b2)


OPTIMIZERS: dict[str, tuple[Callable[..., optax.GradientTransformation], dict[str, tuple]]] = {
    "sgdm": (_sgdm, {"momentum": (0.0, 0.5, 0.9, 0.99)}),
    "rmsprop": (_rmsprop, {"decay": (0.9, 0.99, 0.999)}),
    "adam": (_adam, {"b1": (0.5, 0.9, 0.99), "b2": (0.99, 0.999)}),
}
"""Baseline name -> (optax factory, default grids of its non-learning-rate hyperparameters)."""


@dataclasses.dataclass(frozen=True)
class TuningResult:
    """The outcome of :func:`tune`.

    Attributes:
      optimizer: baseline name ("sgdm", "rmsprop" or "adam").
      hyperparams: the best setting, learning rate included.
      score: its mean meta-objective on the tuning instances (lower is better).
      table: every setting tried with its score.
    """

    optimizer: str
    hyperparams: dict[str, float]
    score: float
    table: tuple[tuple[dict[str, float], float], ...]

    def transform(self) -> optax.GradientTransformation:
        """The tuned optimizer as an optax transformation."""
        return make(self.optimizer, **self.hyperparams)


def make(optimizer: str, **hyperparams: float) -> optax.GradientTransformation:
    """Builds baseline ``optimizer`` with the given hyperparameters.

    Args:
      optimizer: one of `OPTIMIZERS` ("sgdm", "rmsprop", "adam").
      **hyperparams: ``learning_rate`` (a positive number) and the optimizer's other
        hyperparameters (finite numbers), exactly those.

    Returns:
      An ``optax.GradientTransformation``.

    Raises:
      ValueError: unknown ``optimizer``, missing or unknown hyperparameters, or a value that
        is not a number (the message names it).
    """
    _check_optimizer(optimizer)
    expected = ["learning_rate", *sorted(OPTIMIZERS[optimizer][1])]
    if sorted(hyperparams) != sorted(expected):
        raise ValueError(
            f"hyperparams: expected {expected} for {optimizer!r}, got {sorted(hyperparams)}."
        )
    values = {
        name: (_checks.positive if name == "learning_rate" else _checks.finite)(name, value)
        for name, value in hyperparams.items()
    }
    return OPTIMIZERS[optimizer][0](**values)


def _check_optimizer(optimizer: Any, name: str = "optimizer") -> str:
    return _checks.one_of(name, optimizer, OPTIMIZERS)


def _numbers(name: str, values: Any, check: Callable[[str, Any], float]) -> tuple[float, ...]:
    """``values`` (a non-empty sequence, not a string) checked one by one as ``name[i]``."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
        raise ValueError(
            f"{name}: expected a non-empty sequence of numbers, got {values!r} "
            f"({type(values).__name__})."
        )
    return tuple(check(f"{name}[{i}]", v) for i, v in enumerate(values))


def tune(
    family: TaskFamily,
    optimizer: str,
    learning_rates: Sequence[float] = LEARNING_RATES,
    grid: dict[str, Sequence[float]] | None = None,
    num_instances: int = 16,
    num_steps: int | None = None,
    cache_dir: str | None = None,
) -> TuningResult:
    """Grid-searches ``optimizer`` on ``num_instances`` tuning instances of ``family``.

    Args:
      family: the task family (instances come from the "tune" split).
      optimizer: "sgdm", "rmsprop" or "adam".
      learning_rates: learning rates to try (default `LEARNING_RATES`).
      grid: the other hyperparameters' values (defaults in `OPTIMIZERS`).
      num_instances: tuning instances per setting.
      num_steps: horizon; the family's default if None.
      cache_dir: if given, results are read from / written to a JSON file there.

    Returns:
      A `TuningResult`.

    Raises:
      ValueError: an argument is not what is documented here (the message names it).
    """
    _checks.task_family("family", family)
    factory, default_grid = OPTIMIZERS[_check_optimizer(optimizer)]
    grid = _check_grid(grid, default_grid, optimizer)
    learning_rates = _numbers("learning_rates", learning_rates, _checks.positive)
    num_instances = _checks.positive_int("num_instances", num_instances)
    num_steps = _checks.optional(_checks.positive_int, "num_steps", num_steps)
    description = {
        "family": repr(family),
        "optimizer": optimizer,
        "learning_rates": learning_rates,
        "grid": {k: list(vs) for k, vs in sorted(grid.items())},
        "num_instances": num_instances,
        "num_steps": num_steps,
    }
    cache_path = _cache_path(cache_dir, description)
    if cache_path and os.path.isfile(cache_path):
        return _from_json(cache_path)

    keys = instance_keys("tune", num_instances)
    table = _grid_scores(factory, family, keys, num_steps, learning_rates, grid)
    best, score = min(table, key=lambda row: row[1])
    result = TuningResult(optimizer, best, score, tuple(table))
    if cache_path:
        _to_json(cache_path, result, description)
    return result


def _check_grid(grid: Any, default_grid: dict[str, tuple], optimizer: str) -> dict[str, tuple]:
    """``grid`` (None: ``default_grid``) with exactly the default's keys, values checked."""
    if grid is not None and not isinstance(grid, Mapping):
        raise ValueError(f"grid: expected a dict or None, got {type(grid).__name__}.")
    grid = dict(default_grid if grid is None else grid)
    if set(grid) != set(default_grid):
        raise ValueError(
            f"grid: expected keys {sorted(default_grid)} for {optimizer}, got {sorted(grid)}."
        )
    return {k: _numbers(f"grid[{k!r}]", v, _checks.finite) for k, v in grid.items()}


def _grid_scores(
    factory: Callable[..., optax.GradientTransformation],
    family: TaskFamily,
    keys: jax.Array,
    num_steps: int | None,
    learning_rates: tuple[float, ...],
    grid: dict[str, tuple[float, ...]],
) -> list[tuple[dict[str, float], float]]:
    """Every setting of ``grid`` x ``learning_rates`` with its mean meta-objective.

    All learning rates of one setting of the other hyperparameters run in one jitted,
    vmapped call.
    """
    names = sorted(grid)
    table: list[tuple[dict[str, float], float]] = []
    for values in itertools.product(*(grid[n] for n in names)):
        others = dict(zip(names, values, strict=True))

        @jax.jit
        def scores(lrs, others=others):
            def score(rate):
                losses = run_on_instances(factory(rate, **others), family, keys, num_steps)
                return jnp.mean(objective(losses))

            return jax.vmap(score)(lrs)

        for lr, s in zip(
            learning_rates, np.asarray(scores(jnp.asarray(learning_rates))), strict=True
        ):
            table.append(({"learning_rate": lr, **others}, float(s)))
    return table


@dataclasses.dataclass(frozen=True)
class Comparison:
    """The outcome of :func:`compare`: candidates and tuned baselines on the same instances.

    Attributes:
      results: label -> `EvaluationResult`, baselines under their names ("sgdm", ...).
      hyperparams: baseline name -> its tuned hyperparameters.
      best_baseline: the baseline with the lowest held-out meta-objective.
    """

    results: dict[str, EvaluationResult]
    hyperparams: dict[str, dict[str, float]]
    best_baseline: str

    def relative_to_best(self, label: str) -> float:
        """``label``'s meta-objective relative to the best baseline's (-0.2: 20% lower)."""
        return self.results[label].objective / self.results[self.best_baseline].objective - 1.0


def compare(
    candidates: Mapping[str, optax.GradientTransformation],
    family: TaskFamily,
    optimizers: Sequence[str] = tuple(OPTIMIZERS),
    learning_rates: Sequence[float] = LEARNING_RATES,
    grids: Mapping[str, dict[str, Sequence[float]]] | None = None,
    num_instances: int = 128,
    num_tuning_instances: int = 16,
    num_steps: int | None = None,
    cache_dir: str | None = None,
) -> Comparison:
    """Tunes each baseline on ``family``, then evaluates them and the candidates held out.

    Baselines are tuned with :func:`tune` on the "tune" split; every optimizer then runs on
    the same ``num_instances`` held-out ("test") instances with
    `optax_lopt.evaluation.evaluate`, so all are scored by the same meta-objective.

    Args:
      candidates: label -> optax transformation to compare (e.g. a learned optimizer).
      family: the task family.
      optimizers: baseline names to tune (default: all of `OPTIMIZERS`).
      learning_rates: the learning-rate grid of every baseline.
      grids: baseline name -> its other hyperparameters' grid (defaults in `OPTIMIZERS`).
      num_instances: held-out instances per optimizer.
      num_tuning_instances: tuning instances per hyperparameter setting.
      num_steps: horizon; the family's default if None.
      cache_dir: where tuning results are cached as JSON (no cache when None).

    Returns:
      A `Comparison`.

    Raises:
      ValueError: if a candidate's label is also a baseline's name, or ``optimizers`` is
        empty or names an unknown baseline.
    """
    optimizers = _check_optimizers(optimizers)
    _checks.transforms("candidates", candidates)
    _checks.task_family("family", family)
    num_instances = _checks.positive_int("num_instances", num_instances)
    num_tuning_instances = _checks.positive_int("num_tuning_instances", num_tuning_instances)
    clash = sorted(set(candidates) & set(optimizers))
    if clash:
        raise ValueError(f"candidates: labels {clash} clash with the baselines' names.")
    tuned = {
        name: tune(
            family,
            name,
            learning_rates=learning_rates,
            grid=None if grids is None else grids.get(name),
            num_instances=num_tuning_instances,
            num_steps=num_steps,
            cache_dir=cache_dir,
        )
        for name in optimizers
    }
    transforms = {name: result.transform() for name, result in tuned.items()}
    transforms.update(candidates)
    results = evaluate(transforms, family, num_instances=num_instances, num_steps=num_steps)
    best = min(optimizers, key=lambda name: results[name].objective)
    return Comparison(results, {name: r.hyperparams for name, r in tuned.items()}, best)


def _check_optimizers(optimizers: Any) -> tuple[str, ...]:
    """A non-empty sequence of baseline names, each one of `OPTIMIZERS`."""
    if isinstance(optimizers, str) or not isinstance(optimizers, Sequence) or not optimizers:
        raise ValueError(
            f"optimizers: expected a non-empty sequence of baseline names from "
            f"{sorted(OPTIMIZERS)}, got {optimizers!r}."
        )
    return tuple(_check_optimizer(o, f"optimizers[{i}]") for i, o in enumerate(optimizers))


def _cache_path(cache_dir: str | None, description: dict[str, Any]) -> str | None:
    if cache_dir is None:
        return None
    digest = hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:16]
    return os.path.join(cache_dir, f"tuning-{description['optimizer']}-{digest}.json")


def _to_json(path: str, result: TuningResult, description: dict[str, Any]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    payload = {
        "description": description,
        "optimizer": result.optimizer,
        "hyperparams": result.hyperparams,
        "score": result.score,
        "table": [{"hyperparams": h, "score": s} for h, s in result.table],
    }
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=1)
    os.replace(tmp, path)


def _from_json(path: str) -> TuningResult:
    with open(path) as f:
        payload = json.load(f)
    table = tuple((row["hyperparams"], row["score"]) for row in payload["table"])
    return TuningResult(payload["optimizer"], payload["hyperparams"], payload["score"], table)
