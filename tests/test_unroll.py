"""Tests for the inner-unroll engine and the meta-losses."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_lopt
from optax_lopt import tasks
from optax_lopt.meta import meta_losses
from optax_lopt.meta import unroll as unroll_lib

LR, BETA = 0.1, 0.5
LOPT = optax_lopt.LearnableSGDM(learning_rate=LR, momentum=BETA)
THETA = LOPT.init(jax.random.key(0))
MEAN = meta_losses.MetaLoss("mean_normalized")


@functools.partial(jax.jit, static_argnames=("family", "num_steps", "horizon", "ml", "per"))
def _unroll(theta, state, key, family, num_steps, horizon, ml=MEAN, per=False):
    return unroll_lib.unroll(
        LOPT,
        family,
        theta,
        state,
        key,
        num_steps=num_steps,
        horizon=horizon,
        meta_loss=ml,
        theta_per_particle=per,
    )


@functools.partial(
    jax.jit, static_argnames=("family", "num_tasks", "horizon", "num_particles", "stagger")
)
def _init(family, num_tasks, horizon, num_particles=1, stagger=False, seed=1):
    return unroll_lib.init_state(
        LOPT,
        family,
        THETA,
        jax.random.key(seed),
        num_tasks=num_tasks,
        horizon=horizon,
        num_particles=num_particles,
        stagger=stagger,
    )


def test_unroll_matches_optax_sgd_with_momentum():
    family = tasks.Quadratic(dim=4)
    state = _init(family, num_tasks=3, horizon=100)
    new_state, traj = _unroll(THETA, state, jax.random.key(2), family, 6, 100)
    chex.assert_shape(traj.values, (6, 3, 1))
    tx = optax.sgd(LR, momentum=BETA)
    for i in range(3):
        task = jax.tree.map(lambda x, i=i: x[i], state.task)
        params = state.params[i, 0]
        opt_state = tx.init(params)
        losses = []
        for _ in range(6):
            loss, grads = jax.value_and_grad(task.loss)(params, None)
            losses.append(loss)
            updates, opt_state = tx.update(grads, opt_state)
            params = optax.apply_updates(params, updates)
        chex.assert_trees_all_close(new_state.params[i, 0], params, rtol=1e-5, atol=1e-6)
        chex.assert_trees_all_close(traj.losses[:, i, 0], jnp.stack(losses), rtol=1e-5)
        chex.assert_trees_all_close(traj.values[:, i, 0], jnp.stack(losses) / losses[0], rtol=1e-5)
    chex.assert_trees_all_equal(new_state.step, jnp.full((3,), 6, jnp.int32))
    assert not np.any(traj.reset)


def test_resets_at_horizon_draw_fresh_tasks():
    family = tasks.Quadratic(dim=4)
    state = _init(family, num_tasks=2, horizon=3)
    new_state, traj = _unroll(THETA, state, jax.random.key(2), family, 7, 3)
    reset = np.asarray(traj.reset[:, 0])
    np.testing.assert_array_equal(reset, [0, 0, 1, 0, 0, 1, 0])
    np.testing.assert_array_equal(np.asarray(traj.segment[:, 0]), [0, 0, 0, 1, 1, 1, 2])
    np.testing.assert_array_equal(np.asarray(new_state.step), [1, 1])
    # The first value of every trajectory is f_0 / f_0 = 1.
    np.testing.assert_allclose(np.asarray(traj.values[jnp.array([0, 3, 6]), :, 0]), 1.0, rtol=1e-6)
    # A fresh instance was drawn: different curvature than at the start.
    assert not np.allclose(new_state.task.data["curvature"], state.task.data["curvature"])


def test_staggered_starts_and_shapes():
    family = tasks.Quadratic(dim=4)
    state = _init(family, num_tasks=64, horizon=20, num_particles=2, stagger=True)
    steps = np.asarray(state.step)
    assert steps.min() >= 0 and steps.max() < 20 and len(set(steps)) > 10
    chex.assert_shape(state.params, (64, 2, 4))
    chex.assert_shape(state.initial_loss, (64, 2))
    chex.assert_trees_all_equal(state.params[:, 0], state.params[:, 1])


def test_particles_share_task_and_minibatches():
    family = tasks.Quadratic(dim=4, noise_scale=1.0)
    state = _init(family, num_tasks=2, horizon=5, num_particles=2)
    thetas = jax.tree.map(lambda t: jnp.broadcast_to(t, (2, 2)), THETA)
    new_state, traj = _unroll(thetas, state, jax.random.key(3), family, 8, 5, per=True)
    chex.assert_trees_all_equal(traj.losses[:, :, 0], traj.losses[:, :, 1])
    chex.assert_trees_all_equal(new_state.params[:, 0], new_state.params[:, 1])
    # Different meta-parameters per particle give different runs on the same data.
    thetas = {**thetas, "log_learning_rate": thetas["log_learning_rate"].at[:, 1].add(-1.0)}
    _, traj = _unroll(thetas, state, jax.random.key(3), family, 8, 5, per=True)
    assert not np.allclose(traj.losses[1:, :, 0], traj.losses[1:, :, 1])


def test_divergence_resets_and_never_poisons_state():
    family = tasks.Quadratic(dim=4, curvature_range=(1.0, 1.0))
    state = _init(family, num_tasks=2, horizon=1000)
    theta = {**THETA, "log_learning_rate": jnp.asarray(jnp.log(1e4), jnp.float32)}
    new_state, traj = _unroll(theta, state, jax.random.key(2), family, 30, 1000)
    assert np.any(traj.nonfinite)
    assert np.any(traj.reset)
    assert np.all(np.isfinite(traj.values))
    assert np.all(np.asarray(traj.values) <= MEAN.clip)
    for leaf in jax.tree.leaves(new_state):
        assert np.all(np.isfinite(leaf))


def test_unroll_traces_once():
    family = tasks.Quadratic(dim=4)
    state = _init(family, num_tasks=2, horizon=4)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def run(theta, state, key):
        return unroll_lib.unroll(
            LOPT, family, theta, state, key, num_steps=5, horizon=4, meta_loss=MEAN
        )

    for i in range(3):
        state, _ = run(THETA, state, jax.random.key(i))


def test_validation_meta_loss_uses_validation_loss():
    family = tasks.TwoMoons(num_points=32, hidden_sizes=(4,))
    state = _init(family, num_tasks=2, horizon=50)
    ml = meta_losses.MetaLoss("validation")
    _, traj = _unroll(THETA, state, jax.random.key(2), family, 2, 50, ml=ml)
    task = jax.tree.map(lambda x: x[0], state.task)
    params = jax.tree.map(lambda x: x[0, 0], state.params)
    expected = task.validation_loss(params, None) / state.initial_loss[0, 0]
    np.testing.assert_allclose(traj.values[0, 0, 0], expected, rtol=1e-5)


def test_meta_loss_reductions():
    values = jnp.array([[1.0], [0.5], [0.25], [0.2]])
    mask = jnp.array([[True], [True], [False], [False]])
    mean = meta_losses.meta_loss("mean_normalized")
    np.testing.assert_allclose(mean.reduce(values), [1.95 / 4])
    np.testing.assert_allclose(mean.reduce(values, mask) + mean.reduce(values, ~mask), [1.95 / 4])
    log_mean = meta_losses.meta_loss("log_mean_normalized")
    np.testing.assert_allclose(log_mean.reduce(values), [np.log(1.95 / 4)], rtol=1e-6)
    np.testing.assert_allclose(log_mean.reduce(values, mask), [0.5 * np.log(0.75)], rtol=1e-6)
    final = meta_losses.meta_loss("final")
    np.testing.assert_allclose(final.reduce(values), [0.2])
    np.testing.assert_allclose(final.reduce(values, mask), [0.0])
    v = mean.step_value(jnp.array([2.0, jnp.nan, 1e9]), jnp.array([4.0, 1.0, 1.0]))
    np.testing.assert_allclose(v, [0.5, 1e3, 1e3])
    with pytest.raises(ValueError, match="meta_loss"):
        meta_losses.meta_loss("median")
    with pytest.raises(ValueError, match="clip"):
        meta_losses.MetaLoss("final", clip=0.0)
