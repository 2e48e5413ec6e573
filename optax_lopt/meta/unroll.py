"""The inner-unroll engine shared by every gradient estimator.

A batch of ``N`` task instances is trained in parallel (``jax.vmap``) by the learned optimizer
``lopt.transform(theta)``, ``lax.scan`` over inner steps. Each task carries ``P`` *particles*:
copies of the inner run that share the task instance, its minibatches and its step counter
but may use different meta-parameters (``P = 2`` for the antithetic pairs of evolution
strategies, ``P = 1`` otherwise). Runs persist across truncations in an `UnrollState`:

- initial steps are staggered (uniform in ``[0, horizon)``) so tasks do not all reset together;
  a staggered run starts from fresh params and simply has a shorter first trajectory;
- when a task reaches its horizon, or any of its particles sees a non-finite loss or gets
  non-finite params, all its particles restart on a fresh instance drawn from the family
  (fresh params, fresh optimizer state, step 0). The check is one ``lax.cond`` per step
  over the whole batch, so steps without a reset cost nothing extra.

The per-step losses become meta-loss values through a
:class:`~optax_lopt.meta.meta_losses.MetaLoss`; the returned `Trajectory` records which
segment (before or after a reset) every step belongs to, which PES needs.

References:
  Vicol, Metz, Sohl-Dickstein, "Unbiased Gradient Estimation in Unrolled Computation Graphs
  with Persistent Evolution Strategies", ICML 2021 (arXiv 2112.13835).
  Metz et al., "Understanding and correcting pathologies in the training of learned
  optimizers", arXiv 1810.10180.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from optax_lopt.base import LearnedOptimizer, MetaParams
from optax_lopt.meta.meta_losses import MetaLoss
from optax_lopt.tasks.base import Task, TaskFamily


class UnrollState(NamedTuple):
    """Persistent inner runs of ``N`` tasks with ``P`` particles each.

    Attributes:
      task: the `Task` batch; data leaves have leading dimension ``N``.
      params: inner params, leaves ``[N, P, ...]``.
      opt_state: the learned optimizer's state, leaves ``[N, P, ...]``.
      step: ``[N]`` int32, inner steps taken in each task's current trajectory.
      initial_loss: ``[N, P]`` float32, the training loss at the trajectory's initial params
        (the normaliser of the meta-losses).
    """

    task: Task
    params: Any
    opt_state: Any
    step: jax.Array
    initial_loss: jax.Array


class Trajectory(NamedTuple):
    """What one truncation of ``T`` steps recorded.

    Attributes:
      values: ``[T, N, P]`` per-step meta-loss values (finite, clipped).
      losses: ``[T, N, P]`` raw training losses before each update.
      nonfinite: ``[T, N, P]`` whether that loss was NaN or infinite.
      segment: ``[T, N]`` int32, resets of the task earlier in this truncation (0: the
        trajectory the truncation started on).
      reset: ``[T, N]`` whether the task reset right after step ``t``.
    """

    values: jax.Array
    losses: jax.Array
    nonfinite: jax.Array
    segment: jax.Array
    reset: jax.Array


def _broadcast(tree: Any, num_tasks: int, num_particles: int) -> Any:
    return jax.tree.map(
        lambda x: jnp.broadcast_to(x[:, None], (num_tasks, num_particles) + x.shape[1:]), tree
    )


def _fresh_runs(
    lopt: LearnedOptimizer,
    family: TaskFamily,
    theta: MetaParams,
    key: chex.PRNGKey,
    num_tasks: int,
    num_particles: int,
    theta_per_particle: bool,
):
    """Fresh tasks, params, optimizer states and initial losses for the whole batch."""
    k_task, k_init, k_loss = jax.random.split(key, 3)
    task = jax.vmap(family.sample)(jax.random.split(k_task, num_tasks))
    params = jax.vmap(lambda t, k: t.init(k))(task, jax.random.split(k_init, num_tasks))
    loss = jax.vmap(lambda t, p, k: t.loss(p, k))(task, params, jax.random.split(k_loss, num_tasks))
    loss = jnp.where(jnp.isfinite(loss), loss, 1.0).astype(jnp.float32)
    params = _broadcast(params, num_tasks, num_particles)
    theta_axis = 0 if theta_per_particle else None

    def opt_init(th, p):
        return lopt.transform(th).init(p)

    opt_state = jax.vmap(jax.vmap(opt_init, (theta_axis, 0)), (theta_axis, 0))(theta, params)
    initial_loss = jnp.broadcast_to(loss[:, None], (num_tasks, num_particles))
    return task, params, opt_state, jax.lax.stop_gradient(initial_loss)


def init_state(
    lopt: LearnedOptimizer,
    family: TaskFamily,
    theta: MetaParams,
    key: chex.PRNGKey,
    *,
    num_tasks: int,
    horizon: int,
    num_particles: int = 1,
    stagger: bool = True,
) -> UnrollState:
    """Samples ``num_tasks`` instances and starts their runs.

    Args:
      lopt: the learned optimizer (its ``transform(theta).init`` builds optimizer states).
      family: the task family.
      theta: meta-parameters (unbatched) used to build the optimizer states.
      key: a ``jax.random`` key.
      num_tasks: ``N``.
      horizon: inner steps after which a task resets.
      num_particles: ``P``, copies of each run (2 for antithetic pairs).
      stagger: draw each task's starting step uniformly in ``[0, horizon)`` (else 0).

    Returns:
      An `UnrollState`.
    """
    k_runs, k_step = jax.random.split(key)
    task, params, opt_state, initial_loss = _fresh_runs(
        lopt, family, theta, k_runs, num_tasks, num_particles, False
    )
    if stagger:
        step = jax.random.randint(k_step, (num_tasks,), 0, horizon, dtype=jnp.int32)
    else:
        step = jnp.zeros((num_tasks,), jnp.int32)
    return UnrollState(task, params, opt_state, step, initial_loss)


def broadcast_particles(state: UnrollState, num_particles: int) -> UnrollState:
    """Copies a one-particle state into ``num_particles`` identical particles."""

    def copy(x):
        return jnp.broadcast_to(x[:, :1], x.shape[:1] + (num_particles,) + x.shape[2:])

    return state._replace(
        params=jax.tree.map(copy, state.params),
        opt_state=jax.tree.map(copy, state.opt_state),
        initial_loss=copy(state.initial_loss),
    )


def select_particle(state: UnrollState, index: int) -> UnrollState:
    """Keeps particle ``index`` of every task (as a one-particle state)."""

    def pick(x):
        return x[:, index : index + 1]

    return state._replace(
        params=jax.tree.map(pick, state.params),
        opt_state=jax.tree.map(pick, state.opt_state),
        initial_loss=pick(state.initial_loss),
    )


def unroll(
    lopt: LearnedOptimizer,
    family: TaskFamily,
    theta: MetaParams,
    state: UnrollState,
    key: chex.PRNGKey,
    *,
    num_steps: int,
    horizon: int,
    meta_loss: MetaLoss,
    theta_per_particle: bool = False,
    remat: bool = False,
) -> tuple[UnrollState, Trajectory]:
    """Advances every run by ``num_steps`` inner steps (one ``lax.scan``).

    Each step, for every task and particle: loss and gradient at the current params (the
    task's minibatch is shared by the particles), ``lopt.transform(theta).update(grads,
    opt_state, params, value=loss)``, ``optax.apply_updates``. Then tasks at ``horizon`` (or
    with a non-finite loss or non-finite new params) reset, so the returned state is finite.

    Args:
      lopt: the learned optimizer.
      family: the family fresh instances are drawn from on reset.
      theta: meta-parameters; unbatched, or with leaves ``[N, P, ...]`` when
        ``theta_per_particle``.
      state: the runs to advance.
      key: a ``jax.random`` key for minibatches and resets.
      num_steps: ``T``, steps in this truncation.
      horizon: trajectory length after which a task resets.
      meta_loss: turns per-step losses into meta-loss values.
      theta_per_particle: whether ``theta`` carries ``[N, P]`` leading axes.
      remat: rematerialise each step in the backward pass (``jax.checkpoint``): memory
        linear in ``T`` for one step's activations instead of all of them.

    Returns:
      ``(new_state, trajectory)``.
    """
    num_tasks, num_particles = state.initial_loss.shape
    step_tasks = _step_all_tasks(lopt, meta_loss, theta_per_particle)
    reset = _reset_fn(lopt, family, theta, num_tasks, num_particles, theta_per_particle)
    body = _scan_body(step_tasks, reset, theta, key, horizon, num_tasks)
    if remat:
        body = jax.checkpoint(body)
    carry = (*state, jnp.zeros((num_tasks,), jnp.int32))
    carry, trajectory = jax.lax.scan(body, carry, jnp.arange(num_steps))
    return UnrollState(*carry[:5]), trajectory


def _step_all_tasks(lopt: LearnedOptimizer, meta_loss: MetaLoss, theta_per_particle: bool):
    """One inner step of every task and particle, vmapped over ``[N, P]``.

    The returned function maps ``(theta, task, params, opt_state, initial_loss, loss_keys,
    valid_keys)`` to ``(params, opt_state, loss, value)``; the particles of a task share its
    keys (and so its minibatches).
    """
    theta_axis = 0 if theta_per_particle else None
    needs_validation = meta_loss.needs_validation

    def particle_step(th, task, params, opt_state, initial_loss, loss_key, valid_key):
        tx = lopt.transform(th)
        loss, grads = jax.value_and_grad(task.loss)(params, loss_key)
        valid = task.validation_loss(params, valid_key) if needs_validation else None
        updates, opt_state = tx.update(grads, opt_state, params, value=loss)
        params = optax.apply_updates(params, updates)
        value = meta_loss.step_value(loss, initial_loss, valid)
        return params, opt_state, loss, value

    over_particles = jax.vmap(particle_step, (theta_axis, None, 0, 0, 0, None, None))
    return jax.vmap(over_particles, (theta_axis, 0, 0, 0, 0, 0, 0))


def _reset_fn(
    lopt: LearnedOptimizer,
    family: TaskFamily,
    theta: MetaParams,
    num_tasks: int,
    num_particles: int,
    theta_per_particle: bool,
):
    """The ``lax.cond`` branch that restarts the ``done`` tasks on fresh instances."""

    def reset(done, reset_key, task, params, opt_state, step, initial_loss):
        fresh = _fresh_runs(
            lopt, family, theta, reset_key, num_tasks, num_particles, theta_per_particle
        )

        def pick(new, old):
            mask = done.reshape(done.shape + (1,) * (old.ndim - 1))
            return jnp.where(mask, new, old)

        task, params, opt_state, initial_loss = jax.tree.map(
            pick, fresh, (task, params, opt_state, initial_loss)
        )
        return task, params, opt_state, jnp.where(done, 0, step), initial_loss

    return reset


def _keep(done, reset_key, *runs):
    """The ``lax.cond`` branch of steps without a reset: the runs unchanged."""
    del done, reset_key
    return runs


def _end_of_step(step, loss, params, horizon: int, num_tasks: int):
    """The step counter after a step, its non-finite losses, and the tasks that must reset.

    A task resets at ``horizon``, or when any particle's loss or new params are not finite.
    """
    nonfinite = ~jnp.isfinite(loss)
    params_ok = [
        jnp.all(jnp.isfinite(p).reshape(num_tasks, -1), axis=1) for p in jax.tree.leaves(params)
    ]
    step = step + 1
    done = (step >= horizon) | jnp.any(nonfinite, axis=1) | ~jnp.all(jnp.stack(params_ok), axis=0)
    return step, nonfinite, done


def _scan_body(step_tasks, reset, theta, key, horizon: int, num_tasks: int):
    """The ``lax.scan`` body of `unroll`: step ``t`` of every run, then the resets."""

    def body(carry, t):
        task, params, opt_state, step, initial_loss, resets = carry
        k_loss, k_valid, k_reset = jax.random.split(jax.random.fold_in(key, t), 3)
        params, opt_state, loss, value = step_tasks(
            theta,
            task,
            params,
            opt_state,
            initial_loss,
            jax.random.split(k_loss, num_tasks),
            jax.random.split(k_valid, num_tasks),
        )
        step, nonfinite, done = _end_of_step(step, loss, params, horizon, num_tasks)
        runs = jax.lax.cond(
            jnp.any(done),
            reset,
            _keep,
            done,
            k_reset,
            task,
            params,
            opt_state,
            step,
            initial_loss,
        )
        out = Trajectory(value, loss, nonfinite, resets, done)
        return (*runs, resets + done.astype(jnp.int32)), out

    return body
