"""How good a learned optimizer is at meta-training learned optimizers: the feedback probe.

Self-training works by a positive feedback loop: as the population's optimizers improve on
the tasks, they also get better at the meta-problem of training optimizers, which speeds up
their own training ("Training Learned Optimizers with Randomly Initialized Learned
Optimizers", arXiv 2101.07367). `probe_meta_optimizers` measures the second half of that loop
directly: each given learned optimizer (e.g. the population's best member saved at several
outer steps) meta-trains the same fresh, randomly initialised trainees for a few outer steps
on the same meta-gradient estimator, and their meta-losses are returned. A snapshot from later
in self-training that drives the trainees' meta-loss down faster than an earlier one is a
better meta-optimizer: the loop, measured.

Every snapshot sees the same trainees, the same estimator draws and the same keys, so the
differences between rows come from the meta-optimizers alone. Each trainee's outer step is
the trainers' own `optax_lopt.meta.outer_loop.meta_step` (so its skip rule too), scanned.

References:
  Metz, Freeman, Maheswaranathan, Sohl-Dickstein, "Training Learned Optimizers with Randomly
  Initialized Learned Optimizers", arXiv 2101.07367.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_lopt import _checks
from optax_lopt.base import LearnedOptimizer, MetaParams
from optax_lopt.meta import outer_loop


def probe_meta_optimizers(
    estimator: Any,
    lopt: LearnedOptimizer,
    optimizer_thetas: MetaParams | None = None,
    *,
    meta_optimizer: optax.GradientTransformation | None = None,
    num_steps: int = 40,
    num_trainees: int = 4,
    seed: int = 0,
) -> np.ndarray:
    """Meta-losses of fresh trainees meta-trained by each given optimizer.

    With ``keys = optax_lopt.meta.outer_loop.seed_keys(seed)``, the keys of the trainers' own
    runs, trainee ``k`` starts at ``lopt.init(fold_in(keys.theta, k))`` with estimator state
    ``estimator.init(theta_k, fold_in(keys.estimator, k))``, draws outer step ``t``'s key as
    ``fold_in(fold_in(keys.step, k), t)``, and for ``num_steps`` outer steps gets
    ``theta_k <- theta_k + optimizer.update(g_k, s_k, theta_k, value=meta_loss_k)``, where the
    optimizer is ``lopt.transform(optimizer_thetas[s])`` for snapshot ``s`` (or
    ``meta_optimizer``, a plain optax transformation, as a reference).

    Args:
      estimator: a `GradientEstimator` for ``lopt`` (``init``, ``meta_gradient`` returning a
        ``"meta_loss"`` metric).
      lopt: the architecture of both the snapshots and the trainees.
      optimizer_thetas: snapshots stacked on a leading axis ``[S, ...]``; exactly one of this
        and ``meta_optimizer`` must be given.
      meta_optimizer: an optax transformation to probe instead (then ``S = 1``).
      num_steps: outer steps per trainee (>= 1).
      num_trainees: fresh trainees per snapshot (>= 1).
      seed: the seed of the trainees, their estimator states and the outer steps (the key
        streams of `optax_lopt.meta.outer_loop.seed_keys`).

    Returns:
      ``[S, num_trainees, num_steps]`` meta-losses, the one of outer step ``t`` measured before
      that step's update.

    Raises:
      ValueError: for a missing or doubled optimizer, or a non-positive count.
    """
    if (optimizer_thetas is None) == (meta_optimizer is None):
        raise ValueError(
            "optimizer_thetas: expected exactly one of optimizer_thetas and meta_optimizer, got "
            f"{'both' if meta_optimizer is not None else 'neither'}."
        )
    num_steps = _checks.positive_int("num_steps", num_steps)
    num_trainees = _checks.positive_int("num_trainees", num_trainees)
    outer_loop.check_estimator(estimator)
    seeded = outer_loop.seed_keys(seed)
    keys = tuple(
        _trainee_keys(stream, num_trainees)
        for stream in (seeded.theta, seeded.estimator, seeded.step)
    )

    def one_optimizer(tx):
        def trainee(trainee_key, estimator_key, step_key):
            return _trainee_losses(
                estimator, lopt, tx, trainee_key, estimator_key, step_key, num_steps
            )

        return jax.vmap(trainee)(*keys)

    if meta_optimizer is not None:
        losses = jax.jit(lambda: one_optimizer(meta_optimizer)[None])()
    else:
        losses = jax.jit(jax.vmap(lambda th: one_optimizer(lopt.transform(th))))(optimizer_thetas)
    return np.asarray(losses)


def _trainee_keys(stream: jax.Array, num_trainees: int) -> jax.Array:
    """``[num_trainees]`` keys ``fold_in(stream, k)`` of one `seed_keys` stream."""
    return jax.vmap(lambda k: jax.random.fold_in(stream, k))(jnp.arange(num_trainees))


def _trainee_losses(
    estimator: Any,
    lopt: LearnedOptimizer,
    tx: optax.GradientTransformation,
    trainee_key: jax.Array,
    estimator_key: jax.Array,
    step_key: jax.Array,
    num_steps: int,
) -> jax.Array:
    """``[num_steps]`` meta-losses of one fresh trainee meta-trained by ``tx``."""
    update = outer_loop.optax_update(tx)
    theta = lopt.init(trainee_key)
    carry = (theta, tx.init(theta), estimator.init(theta, estimator_key))

    def body(carry, t):
        out = outer_loop.meta_step(estimator, update, *carry, jax.random.fold_in(step_key, t))
        return (out.theta, out.opt_state, out.estimator_state), out.metrics["meta_loss"]

    _, losses = jax.lax.scan(body, carry, jnp.arange(num_steps))
    return losses
