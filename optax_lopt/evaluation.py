"""Evaluate any optax transformation on held-out instances of a task family.

`run_on_instances` trains one freshly sampled instance per key with ``tx`` (vmapped over
instances, ``lax.scan`` over steps, the loss passed as ``value=``) and returns the training
loss before every step and after the last one. `evaluate` does this on ``num_instances``
held-out instances (>= 128 by default), whose keys come from `instance_keys` in the
``"test"`` split; tuning uses the ``"tune"`` split. Each split derives its keys from its own
root (``jax.random.key`` of a fixed tag), separate from the user seeds that meta-training
derives its task keys from, so instances of different splits are distinct draws.

The score of a run is the paper's meta-objective, ``mean_t f_t / f_0`` over the horizon
(`optax_lopt.meta.meta_losses.MetaLoss("mean_normalized")`: non-finite or huge values count
as 1e3), so evaluation, tuning and meta-training rank optimizers by the same number. Its figures,
`plot_loss_curves` and `plot_panels`, are in `optax_lopt.plotting` (and importable from here).

References:
  Maheswaranathan et al., "Reverse engineering learned optimizers reveals known and novel
  mechanisms", arXiv 2011.02159 (Figure 1: loss curves, mean and spread over instances).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_lopt import _checks
from optax_lopt.meta.meta_losses import MetaLoss
from optax_lopt.plotting import plot_loss_curves as plot_loss_curves
from optax_lopt.plotting import plot_panels as plot_panels
from optax_lopt.tasks.base import TaskFamily

SPLITS = {"tune": 0x7E57_0001, "test": 0x7E57_0002}
"""Root tags of the key streams for tuning and held-out test instances."""

_OBJECTIVE = MetaLoss("mean_normalized")


def instance_keys(split: str, num_instances: int) -> jax.Array:
    """Keys of the first ``num_instances`` instances of ``split`` ("tune" or "test")."""
    split = _checks.one_of("split", split, sorted(SPLITS))
    num_instances = _checks.positive_int("num_instances", num_instances)
    return jax.random.split(jax.random.key(SPLITS[split]), num_instances)


def run_on_instances(
    tx: optax.GradientTransformation,
    family: TaskFamily,
    keys: jax.Array,
    num_steps: int | None = None,
) -> jax.Array:
    """Trains one instance per key with ``tx``; returns losses ``[num_keys, num_steps + 1]``.

    Column ``t`` is the training loss before step ``t``; the last column is the loss after
    the final step. Jit-compatible; vmapped over keys.

    Args:
      tx: any optax transformation (``value=`` is passed when it takes extra args).
      family: the task family instances are drawn from.
      keys: ``[N]`` keys, one per instance (task data, initial params, minibatches).
      num_steps: horizon; the family's ``num_steps`` by default.

    Raises:
      ValueError: ``tx``, ``family`` or ``num_steps`` is not what is documented here.
    """
    _checks.gradient_transformation("tx", tx)
    _checks.task_family("family", family)
    num_steps = _checks.optional(_checks.positive_int, "num_steps", num_steps)
    num_steps = family.num_steps if num_steps is None else num_steps
    takes_value = isinstance(tx, optax.GradientTransformationExtraArgs)

    def one(key):
        k_task, k_init, k_steps = jax.random.split(key, 3)
        task = family.sample(k_task)
        params = task.init(k_init)
        value_and_grad = jax.value_and_grad(task.loss)

        def step(carry, k):
            params, state = carry
            loss, grads = value_and_grad(params, k)
            if takes_value:
                updates, state = tx.update(grads, state, params, value=loss)
            else:
                updates, state = tx.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), loss

        step_keys = jax.random.split(k_steps, num_steps + 1)
        (params, _), losses = jax.lax.scan(step, (params, tx.init(params)), step_keys[:-1])
        return jnp.concatenate([losses, task.loss(params, step_keys[-1])[None]])

    return jax.vmap(one)(keys)


def objective(losses: jax.Array) -> jax.Array:
    """Per-instance meta-objective ``mean_t f_t / f_0`` of ``[N, T + 1]`` loss curves."""
    values = _OBJECTIVE.step_value(losses[:, :-1].T, losses[:, 0])
    return _OBJECTIVE.reduce(values)


@dataclasses.dataclass(frozen=True)
class EvaluationResult:
    """One optimizer's results on held-out instances.

    Attributes:
      name: the optimizer's label.
      objectives: ``[N]`` meta-objective per instance (lower is better).
      mean_curve: ``[T + 1]`` mean training loss over instances at each step.
      sem_curve: ``[T + 1]`` standard error of that mean.
    """

    name: str
    objectives: np.ndarray
    mean_curve: np.ndarray
    sem_curve: np.ndarray

    @property
    def objective(self) -> float:
        """Mean meta-objective over instances."""
        return float(np.mean(self.objectives))

    @property
    def objective_sem(self) -> float:
        """Standard error of :attr:`objective`."""
        return float(np.std(self.objectives, ddof=1) / math.sqrt(len(self.objectives)))


def evaluate(
    optimizers: Mapping[str, optax.GradientTransformation],
    family: TaskFamily,
    num_instances: int = 128,
    num_steps: int | None = None,
) -> dict[str, EvaluationResult]:
    """Runs each optimizer on the same ``num_instances`` held-out ("test") instances.

    Args:
      optimizers: label -> optax transformation.
      family: the task family.
      num_instances: how many held-out instances (the paper's figures use >= 128).
      num_steps: horizon; the family's default if None.

    Returns:
      label -> `EvaluationResult`.

    Raises:
      ValueError: an optimizer is not an optax transformation, ``family`` is not a
        `TaskFamily`, or ``num_instances`` / ``num_steps`` is not a positive integer.
    """
    _checks.transforms("optimizers", optimizers)
    _checks.task_family("family", family)
    num_steps = _checks.optional(_checks.positive_int, "num_steps", num_steps)
    num_instances = _checks.positive_int("num_instances", num_instances)
    keys = instance_keys("test", num_instances)
    results = {}
    for name, tx in optimizers.items():
        losses = np.asarray(
            jax.jit(lambda k, tx=tx: run_on_instances(tx, family, k, num_steps))(keys)
        )
        finite = np.where(np.isfinite(losses), losses, np.nan)
        results[name] = EvaluationResult(
            name=name,
            objectives=np.asarray(objective(jnp.asarray(losses))),
            mean_curve=np.nanmean(finite, axis=0),
            sem_curve=np.nanstd(finite, axis=0, ddof=1) / math.sqrt(num_instances),
        )
    return results
