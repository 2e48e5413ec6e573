import sys

import chex
import numpy as np
import optax
import pytest

import interpret


def test_momentum_sgd_fixed_point_and_eigenvalue_over_random_constants():
    rng = np.random.default_rng(0)
    # Each new transform compiles the solver once: 6 draws keep this test to a few seconds;
    # test_linearize checks the eigenvalue over more draws.
    for beta, lr in zip(rng.uniform(0.0, 0.99, 6), rng.uniform(1e-3, 1.0, 6), strict=True):
        tx = optax.sgd(float(lr), momentum=float(beta))
        system = interpret.scalar_system(tx)
        inputs = rng.normal(size=3) * 3
        fp = interpret.fixed_points(system, inputs)
        assert fp.converged.all()
        chex.assert_trees_all_close(fp.states[:, 0], inputs / (1 - beta), rtol=1e-4, atol=1e-5)
        assert np.all(fp.residuals < 1e-8)
        lin = interpret.linearize(system, fp.states[0], inputs[0])
        np.testing.assert_allclose(lin.eigenvalues.real, [beta], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(lin.learning_rate, lr, rtol=1e-5)
        if beta > 0.05:
            np.testing.assert_allclose(lin.alphas.real, [lr], rtol=1e-4)
            np.testing.assert_allclose(lin.timescales, [-1 / np.log(beta)], rtol=1e-4)


def test_adam_fixed_points_are_g_and_g_squared():
    inputs = np.array([-2.0, -0.5, 0.1, 1.0, 3.0])
    fp = interpret.fixed_points(optax.adam(0.01, b1=0.8, b2=0.9), inputs)
    assert fp.converged.all()
    chex.assert_trees_all_close(fp.states, np.stack([inputs, inputs**2], 1), rtol=1e-4)
    for distinct in fp.distinct:  # all starts land on the same point: merged into one
        assert distinct.shape == (1, 2)


def test_gru_fixed_points_have_small_speed_and_are_fixed(gru_fixed_points):
    _, system, fp = gru_fixed_points
    chex.assert_shape(fp.states, (9, 8))
    assert fp.converged.all()
    for g, h in zip(fp.inputs, fp.states, strict=True):
        np.testing.assert_allclose(system.next_state(h, g), h, atol=1e-4)
    # The S-curve: the fixed points move continuously with g*.
    steps = np.linalg.norm(np.diff(fp.states, axis=0), axis=1)
    assert steps.max() < 10 * np.median(steps) + 1e-6


def test_stateless_transform_has_trivial_fixed_points():
    fp = interpret.fixed_points(optax.sgd(0.1), [1.0, 2.0])
    chex.assert_shape(fp.states, (2, 0))
    assert fp.converged.all()


def test_fixed_point_bad_inputs():
    with pytest.raises(ValueError, match="inputs"):
        interpret.fixed_points(optax.adam(0.1), [])
    with pytest.raises(ValueError, match="starts"):
        interpret.fixed_points(optax.adam(0.1), [1.0], starts=np.zeros((2, 3)))
    with pytest.raises(ValueError, match="num_starts"):
        interpret.fixed_points(optax.adam(0.1), [1.0], num_starts=0)


def test_calls_with_other_input_counts_and_starts_share_one_compiled_solver():
    # The report solves one input with visited starts, then several without: the solver pads
    # both to bucket sizes, so the second call reuses the first's program and its padded rows
    # change no answer.
    beta = 0.7
    system = interpret.scalar_system(optax.sgd(0.1, momentum=beta))
    solver = sys.modules["interpret.fixed_points"]._solve_jit
    solver.clear_cache()
    one = interpret.fixed_points(system, [0.5], starts=np.array([[3.0], [-1.0]]))
    several = interpret.fixed_points(system, [-2.0, 0.25, 1.0])
    assert solver._cache_size() == 1
    chex.assert_trees_all_close(one.states[:, 0], np.array([0.5 / (1 - beta)]), rtol=1e-4)
    chex.assert_trees_all_close(
        several.states[:, 0], np.array([-2.0, 0.25, 1.0]) / (1 - beta), rtol=1e-4
    )
    chex.assert_shape(several.states, (3, 1))
    assert one.converged.all() and several.converged.all()
