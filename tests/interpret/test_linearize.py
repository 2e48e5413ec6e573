import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import interpret


def test_momentum_sgd_modes_over_random_constants():
    rng = np.random.default_rng(1)
    for beta, lr in zip(rng.uniform(0.05, 0.99, 12), rng.uniform(1e-3, 1.0, 12), strict=True):
        tx = optax.sgd(float(lr), momentum=float(beta))
        g = float(rng.normal())
        lin = interpret.linearize(tx, [g / (1 - beta)], g)
        np.testing.assert_allclose(lin.eigenvalues.real, [beta], rtol=1e-5)
        np.testing.assert_allclose(lin.betas.real, [beta], rtol=1e-5)
        np.testing.assert_allclose(lin.alphas.real, [lr], rtol=1e-4)
        np.testing.assert_allclose(lin.learning_rate, lr, rtol=1e-5)
        np.testing.assert_allclose(lin.timescales, [-1 / np.log(beta)], rtol=1e-4)
        np.testing.assert_allclose(lin.next_state, [g / (1 - beta)], rtol=1e-5)


def test_adam_eigenvalues_are_its_decay_rates():
    tx = optax.adam(0.01, b1=0.7, b2=0.95)
    fp = interpret.fixed_points(tx, [0.5])
    lin = interpret.linearize(tx, fp.states[0], 0.5, step=50)
    np.testing.assert_allclose(np.sort(lin.eigenvalues.real), [0.7, 0.95], rtol=1e-5)
    np.testing.assert_allclose(lin.eigenvalues.imag, 0.0, atol=1e-8)


def test_linearized_optimizer_is_exact_for_linear_momentum():
    tx = optax.sgd(0.1, momentum=0.8)
    ltx = interpret.linearized_optimizer(interpret.linearize(tx, [3.0], 1.0))
    params = {"a": jnp.ones(3)}
    s1, s2 = tx.init(params), ltx.init(params)
    for t in range(6):
        g = {"a": jnp.arange(3.0) - t}
        u1, s1 = tx.update(g, s1)
        u2, s2 = ltx.update(g, s2)
        chex.assert_trees_all_close(u1, u2, atol=1e-5)


def test_linearized_gru_tracks_small_inputs_and_ignores_nan(gru_fixed_points):
    _, system, fp = gru_fixed_points
    h0 = fp.states[4]  # g* = 0
    lin = interpret.linearize(system, h0, 0.0)
    assert np.all(np.abs(lin.eigenvalues) < 1.0)  # a stable fixed point
    np.testing.assert_allclose(lin.next_state, h0, atol=1e-4)
    ltx = interpret.linearized_optimizer(lin)
    g = 1e-3 * jax.random.normal(jax.random.key(0), (40,))
    _, u_true = system.run(g, h=jnp.asarray(h0, jnp.float32))
    state = interpret.LinearizedState(jnp.zeros((8,)))  # start at the fixed point too
    us = []
    for gi in g:
        u, state = ltx.update(gi, state)
        us.append(u)
    us = np.array(us)
    np.testing.assert_allclose(us, u_true, atol=0.02 * np.abs(u_true).max())
    assert np.abs(us - u_true).max() < 0.1 * np.abs(us).max()
    u, state = ltx.update(jnp.nan, state)
    assert np.all(np.isfinite(state.delta))


def test_linearize_bad_inputs():
    with pytest.raises(ValueError, match="state"):
        interpret.linearize(optax.adam(0.1), np.zeros(3))
    with pytest.raises(ValueError, match="input"):
        interpret.linearize(optax.adam(0.1), None, [1.0, 2.0])
    with pytest.raises(ValueError, match="linearization"):
        interpret.linearized_optimizer(None)


def test_a_jacobian_that_is_not_finite_gives_nan_modes_instead_of_raising():
    # h' = sqrt(h^2 + g^2): at h = g = 0 its derivative in h is 0 / 0.
    def init(params):
        return jnp.zeros_like(params)

    def update(grads, state, params=None):
        del params
        new = jnp.sqrt(state**2 + grads**2)
        return -0.1 * grads, new

    lin = interpret.linearize(optax.GradientTransformation(init, update), state=[0.0], input=0.0)
    assert not np.isfinite(lin.state_jacobian).all()
    assert np.isnan(lin.eigenvalues).all() and np.isnan(lin.alphas).all()
    # Away from that point the same rule linearises normally.
    lin = interpret.linearize(optax.GradientTransformation(init, update), state=[1.0], input=0.5)
    assert np.isfinite(lin.eigenvalues).all()


def test_linearizing_one_system_twice_compiles_once():
    system = interpret.scalar_system(optax.sgd(0.1, momentum=0.6))
    jacobians = sys.modules["interpret.linearize"]._jacobians
    jacobians.clear_cache()
    for g, input_step in ((0.0, None), (0.3, 1e-3), (-1.0, 1e-2)):
        lin = interpret.linearize(system, np.array([g / 0.4]), g, input_step=input_step)
        np.testing.assert_allclose(lin.eigenvalues.real, [0.6], rtol=1e-5)
        np.testing.assert_allclose(lin.learning_rate, 0.1, rtol=1e-4)
    assert jacobians._cache_size() == 2  # one program with central differences, one without
