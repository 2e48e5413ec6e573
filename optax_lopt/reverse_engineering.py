"""What `interpret.reverse_engineer` needs from ``optax_lopt``: a task's problem, a baseline.

`interpret` never imports ``optax_lopt`` (it works on a plain ``optax.sgd``), so the two
pieces that tie a report to this library live here: `make_problem` turns a task family into
an `interpret.Problem`, and `pretrained_baseline` reads a shipped optimizer's best tuned
baseline from its metadata. ``examples/reverse_engineer.py`` and
``benchmarks/reverse_engineering.py`` both use them. Importing this module imports
`interpret` (and matplotlib), which ``import optax_lopt`` does not.
"""

from __future__ import annotations

import jax
import optax

import interpret
from optax_lopt import baselines, tasks
from optax_lopt.pretrained import pretrained_metadata

__all__ = ["make_problem", "pretrained_baseline"]


def make_problem(
    task: str, num_steps: int | None = None
) -> tuple[interpret.Problem, tuple[float, float] | None]:
    """The `interpret.Problem` of an ``optax_lopt`` task family, and its Hessian range.

    Each instance is a fresh task of the family (``family.sample``) with its initial
    parameters, both drawn from the instance's key.

    Args:
      task: a name in ``optax_lopt.tasks.family_names()``.
      num_steps: the horizon (None: the family's ``num_steps``).

    Returns:
      ``(problem, hessian_range)``: the problem, named ``task``, and the eigenvalue range of
      the family's Hessian where the family states one (``linear_regression``; for the
      heavy-ball comparison), else None.
    """
    family = tasks.family(task) if num_steps is None else tasks.family(task, num_steps=num_steps)

    def sample(key):
        k_task, k_init = jax.random.split(key)
        instance = family.sample(k_task)
        return instance.init(k_init), instance.data

    problem = interpret.Problem(
        sample, lambda p, d, k: family.loss_fn(d, p, k), family.num_steps, name=task
    )
    return problem, getattr(family, "eigenvalue_range", None)


def pretrained_baseline(name: str, task: str) -> optax.GradientTransformation | None:
    """The best tuned baseline recorded for shipped optimizer ``name`` on family ``task``.

    Args:
      name: a name in ``optax_lopt.pretrained_names()``.
      task: the family (at its default settings) the baseline was tuned on.

    Returns:
      The ``optax_lopt.baselines`` transformation at its tuned hyperparameters, or None when
      the metadata holds no evaluation on ``task`` at its default settings.
    """
    for row in pretrained_metadata(name).get("evaluation", []):
        if row.get("family") == task and not row.get("family_kwargs"):
            best = row["best_baseline"]
            return baselines.make(best, **row["baseline_hyperparams"][best])
    return None
