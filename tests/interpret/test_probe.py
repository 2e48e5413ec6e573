from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import interpret


def _loss(p):
    return 0.5 * jnp.sum(p["w"] ** 2 * jnp.arange(1.0, 4.0)) + jnp.sum((p["b"] - 1.0) ** 2)


PARAMS = {"b": jnp.zeros((2, 2)), "w": jnp.ones(3)}


def test_probe_keeps_updates_and_records_adam_moments():
    tx = optax.adam(0.1)
    ptx = interpret.probe(tx, coordinates=[0, 5], buffer_size=8)
    state, ref_state, params = ptx.init(PARAMS), tx.init(PARAMS), PARAMS
    step = jax.jit(ptx.update)
    for _ in range(5):
        grads = jax.grad(_loss)(params)
        updates, state = step(grads, state, params)
        ref_updates, ref_state = tx.update(grads, ref_state, params)
        chex.assert_trees_all_close(updates, ref_updates)
        params = optax.apply_updates(params, updates)
    rec = interpret.records(state)
    np.testing.assert_array_equal(rec.steps, np.arange(5))
    chex.assert_shape(rec.states, (5, 2, 2))
    # Coordinate 5 is w[1] (leaves are b (4 entries) then w); its state after 5 steps is
    # (mu, nu) of adam, which the next record would show: compare the last recorded one with
    # the reference state one step earlier via the moments' recursion.
    mu, nu = ref_state[0].mu["w"][1], ref_state[0].nu["w"][1]
    g_last = rec.gradients[-1, 1]
    np.testing.assert_allclose(0.9 * rec.states[-1, 1, 0] + 0.1 * g_last, mu, rtol=1e-5)
    np.testing.assert_allclose(0.999 * rec.states[-1, 1, 1] + 0.001 * g_last**2, nu, rtol=1e-5)


def test_ring_buffer_keeps_last_steps_in_order_under_scan():
    ptx = interpret.probe(optax.sgd(0.1, momentum=0.9), coordinates=1, buffer_size=3)
    state = ptx.init(jnp.zeros(()))

    def body(state, g):
        _, state = ptx.update(g, state)
        return state, None

    state, _ = jax.lax.scan(body, state, jnp.arange(1.0, 8.0))
    rec = interpret.records(state)
    np.testing.assert_array_equal(rec.steps, [4, 5, 6])
    np.testing.assert_allclose(rec.gradients[:, 0], [5.0, 6.0, 7.0])
    # trace before step t is sum_{k<t} 0.9^(t-1-k) g_k
    traces = [sum(0.9 ** (t - 1 - k) * (k + 1) for k in range(t)) for t in (4, 5, 6)]
    np.testing.assert_allclose(rec.states[:, 0, 0], traces, rtol=1e-5)


def test_probe_inside_chain_and_records_finds_it():
    tx = optax.chain(optax.clip(1.0), interpret.probe(optax.sgd(0.1), coordinates=2))
    state = tx.init(PARAMS)
    _, state = tx.update(jax.grad(_loss)(PARAMS), state, PARAMS)
    rec = interpret.records(state)
    chex.assert_shape(rec.gradients, (1, 2))


def test_rollout_matches_a_plain_training_loop():
    tx = optax.sgd(0.05, momentum=0.5)
    r = interpret.rollout(tx, _loss, PARAMS, 30, coordinates=[4, 6])
    params, state, losses = PARAMS, tx.init(PARAMS), []
    for _ in range(30):
        loss, grads = jax.value_and_grad(_loss)(params)
        losses.append(loss)
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    chex.assert_trees_all_close(r.losses, np.array(losses), rtol=1e-5)
    chex.assert_trees_all_close(r.params, params, rtol=1e-5)
    assert r.coordinates == (4, 6)
    chex.assert_shape(r.states, (30, 2, 1))
    np.testing.assert_allclose(
        r.updates[:, 1], -0.05 * (r.states[:, 1, 0] * 0.5 + r.gradients[:, 1]), rtol=1e-4, atol=1e-7
    )


def test_rollout_passes_value_to_extra_args_transforms():
    def update_fn(updates, state, params=None, *, value=None, **extra):
        return jax.tree.map(lambda g: -0.0 * g + value * 0 - 0.01, updates), state

    tx = optax.GradientTransformationExtraArgs(lambda p: optax.EmptyState(), update_fn)
    r = interpret.rollout(tx, _loss, PARAMS, 3)
    np.testing.assert_allclose(r.updates, -0.01)


def test_probe_bad_inputs():
    with pytest.raises(ValueError, match="coordinates"):
        interpret.probe(optax.sgd(0.1), coordinates=[99]).init(PARAMS)
    with pytest.raises(ValueError, match="buffer_size"):
        interpret.probe(optax.sgd(0.1), buffer_size=0)
    with pytest.raises(ValueError, match="num_steps"):
        interpret.rollout(optax.sgd(0.1), _loss, PARAMS, 0)
    with pytest.raises(ValueError, match="state"):
        interpret.records(optax.sgd(0.1).init(PARAMS))


def test_probe_step_traces_once_under_jit():
    ptx = interpret.probe(optax.adam(0.1), coordinates=3, buffer_size=4)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(params, state):
        grads = jax.grad(_loss)(params)
        updates, state = ptx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    params, state = PARAMS, ptx.init(PARAMS)
    for _ in range(6):
        params, state = step(params, state)
    assert int(state.count) == 6
    assert np.all(np.isfinite(interpret.records(state).states))


def test_probed_states_are_the_scalar_systems_states():
    from conftest import gru_optimizer

    tx = gru_optimizer(4, seed=3)
    r = interpret.rollout(tx, _loss, PARAMS, 12, coordinates=[2, 6])
    system = interpret.scalar_system(tx)
    for k in range(2):
        hs, us = system.run(jnp.asarray(r.gradients[:, k]))
        np.testing.assert_allclose(r.states[:, k], hs, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(r.updates[:, k], us, rtol=1e-5, atol=1e-7)


def test_coordinates_in_any_order_across_leaves_keep_their_order():
    """Records follow the order of ``coordinates``, even unsorted and spread over leaves."""
    tx = optax.sgd(0.1, momentum=0.9)
    coords = [6, 1, 4, 0]  # w[2], b[0, 1], w[0], b[0, 0]
    r = interpret.rollout(tx, _loss, PARAMS, 6, coordinates=coords)
    flat = lambda tree: jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(tree)])  # noqa: E731
    params, state = PARAMS, tx.init(PARAMS)
    for t in range(6):
        grads = jax.grad(_loss)(params)
        np.testing.assert_allclose(r.gradients[t], flat(grads)[np.array(coords)], rtol=1e-6)
        np.testing.assert_allclose(r.states[t, :, 0], flat(state)[np.array(coords)], rtol=1e-6)
        updates, state = tx.update(grads, state, params)
        np.testing.assert_allclose(r.updates[t], flat(updates)[np.array(coords)], rtol=1e-6)
        params = optax.apply_updates(params, updates)


class _ScaledState(NamedTuple):
    scale: Any
    momentum: Any


def _per_tensor_scaled_sgd(decay=0.5):
    """Momentum SGD whose step is scaled by a per-tensor scalar state that counts steps from
    the tensor's size (so each tensor's scale differs)."""

    def init(params):
        return _ScaledState(
            jax.tree.map(lambda p: jnp.asarray(p.size, jnp.float32), params),
            jax.tree.map(jnp.zeros_like, params),
        )

    def update(grads, state, params=None):
        del params
        momentum = jax.tree.map(lambda m, g: decay * m + g, state.momentum, grads)
        scale = jax.tree.map(lambda s: s + 1.0, state.scale)
        updates = jax.tree.map(lambda s, m: -0.01 * s * m, scale, momentum)
        return updates, _ScaledState(scale, momentum)

    return optax.GradientTransformation(init, update)


def test_a_per_tensor_scalar_state_is_part_of_every_coordinates_state():
    tx = _per_tensor_scaled_sgd()
    ptx = interpret.probe(tx, coordinates=[1, 4, 6], buffer_size=4)
    state, params = ptx.init(PARAMS), PARAMS
    for _ in range(3):
        updates, state = ptx.update(jax.grad(_loss)(params), state, params)
        params = optax.apply_updates(params, updates)
    rec = interpret.records(state)
    system = interpret.scalar_system(tx)
    assert system.size == 2  # the scale and the momentum of the one coordinate
    chex.assert_shape(rec.states, (3, 3, system.size))
    # Before step t (0-based) a tensor's scale is its size + t, in every coordinate of it:
    # coordinate 1 lies in b (4 entries), coordinates 4 and 6 in w (3 entries).
    expected = np.array([4.0, 3.0, 3.0])[None] + np.arange(3.0)[:, None]
    np.testing.assert_allclose(rec.states[:, :, 0], expected)
