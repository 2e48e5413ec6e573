import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import interpret


def test_adam_system_matches_optax_step_by_step():
    tx = optax.adam(0.05, b1=0.8, b2=0.95)
    system = interpret.scalar_system(tx)
    assert system.size == 2 and len(system.initial_clock) == 1
    g = jax.random.normal(jax.random.key(0), (20,))
    hs, us = system.run(g)
    state = tx.init(jnp.zeros(()))
    for t in range(20):
        h, _ = system.flatten(state)
        chex.assert_trees_all_close(hs[t], h, atol=1e-7)
        u, state = tx.update(g[t], state, jnp.zeros(()))
        chex.assert_trees_all_close(us[t], u, atol=1e-7)


def test_flatten_unflatten_roundtrip_and_clock():
    tx = optax.chain(optax.clip(1.0), optax.adam(optax.linear_schedule(0.1, 0.0, 10)))
    system = interpret.scalar_system(tx)
    clock = system.clock_at(7)
    assert [int(c) for c in clock] == [7, 7]
    h = jnp.array([0.3, 0.4])
    back_h, back_clock = system.flatten(system.unflatten(h, clock))
    chex.assert_trees_all_close(back_h, h)
    chex.assert_trees_all_close(back_clock, clock)


def test_stateless_sgd_has_empty_state():
    system = interpret.scalar_system(optax.sgd(0.3))
    assert system.size == 0
    h, u, _ = system.step(system.initial_state, 2.0)
    chex.assert_shape(h, (0,))
    np.testing.assert_allclose(u, -0.6, rtol=1e-6)
    np.testing.assert_allclose(interpret.effective_learning_rate(system, h, 1.0), 0.3, rtol=1e-6)


def test_non_componentwise_transform_is_probed_on_one_scalar():
    # The global norm of a single scalar parameter is |g|: clipping by it is clipping |g|.
    system = interpret.scalar_system(optax.chain(optax.clip_by_global_norm(2.0), optax.sgd(1.0)))
    np.testing.assert_allclose(system.update(system.initial_state, 5.0), -2.0, rtol=1e-6)
    np.testing.assert_allclose(system.update(system.initial_state, -1.0), 1.0, rtol=1e-6)


def test_value_is_passed_only_to_extra_args_transforms():
    seen = []

    def update_fn(updates, state, params=None, *, value=None, **extra):
        seen.append(value)
        return updates, state

    tx = optax.GradientTransformationExtraArgs(lambda p: optax.EmptyState(), update_fn)
    system = interpret.scalar_system(tx, value=3.0)
    system.step(system.initial_state, 1.0)
    assert seen == [3.0]


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="tx"):
        interpret.scalar_system("adam")
    with pytest.raises(ValueError, match="dtype"):
        interpret.scalar_system(optax.sgd(0.1), dtype=jnp.int32)
    with pytest.raises(ValueError, match="step"):
        interpret.scalar_system(optax.adam(0.1)).clock_at(-1)
    with pytest.raises(ValueError, match="states"):
        interpret.update_function(optax.adam(0.1), [1.0], jnp.zeros(3))
    with pytest.raises(ValueError, match="gradients"):
        interpret.update_function(optax.adam(0.1), [jnp.nan])


def test_update_function_of_momentum_sgd():
    tx = optax.sgd(0.2, momentum=0.5)
    uf = interpret.update_function(tx, [-1.0, 0.0, 2.0], [[0.0], [4.0]])
    # u = -lr * (beta * m + g)
    expected = -0.2 * (0.5 * np.array([[0.0], [4.0]]) + np.array([-1.0, 0.0, 2.0]))
    chex.assert_trees_all_close(uf.updates, expected, atol=1e-6)
    chex.assert_trees_all_close(uf.effective_learning_rates, np.full((2, 3), 0.2), atol=1e-6)
