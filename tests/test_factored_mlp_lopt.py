"""FactoredMLPLOpt and the Adafactor-style factored second moments."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import optax
import pytest

import optax_lopt
from optax_lopt.architectures import _features as F


def _tree_bytes(tree):
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


def test_factored_moment_is_exact_for_rank_one_squares():
    # g = a b^T has g^2 = a^2 (b^2)^T of rank one, which the row/column factorisation
    # reconstructs exactly: v_hat = (1 - decay) * g^2 after one step from zero.
    a = jnp.asarray([1.0, -2.0, 0.5])
    b = jnp.asarray([3.0, 0.1, -1.0, 2.0])
    g = jnp.outer(a, b)
    fac = F.update_factored(F.init_factored(g), g, decay=0.9)
    chex.assert_shape((fac.row, fac.col), ((3,), (4,)))
    rs = F.factored_rsqrt(fac, g.shape)
    chex.assert_trees_all_close(rs, jax.lax.rsqrt(0.1 * g**2), rtol=1e-4)


def test_factored_moment_batches_leading_axes_and_keeps_vectors_full():
    g = jax.random.normal(jax.random.key(0), (2, 3, 4))
    fac = F.update_factored(F.init_factored(g), g, decay=0.5)
    chex.assert_shape((fac.row, fac.col), ((2, 3), (2, 4)))
    chex.assert_trees_all_close(fac.row, 0.5 * jnp.mean(g**2 + F.SECOND_MOMENT_EPS, -1))
    v = jnp.asarray([1.0, -3.0])
    fac_v = F.update_factored(F.init_factored(v), v, decay=0.5)
    chex.assert_trees_all_close(F.factored_rsqrt(fac_v, v.shape), jax.lax.rsqrt(0.5 * v**2))
    chex.assert_shape(fac_v.col, ())


def test_zero_gradients_give_zero_finite_updates_in_factored_features():
    fac = F.init_factored(jnp.zeros((3, 4)))
    chex.assert_tree_all_finite(F.factored_rsqrt(fac, (3, 4)))


def test_first_update_is_sign_descent_for_rank_one_gradient():
    lopt = optax_lopt.FactoredMLPLOpt(step_mult=0.01)
    theta = lopt.init(jax.random.key(0))
    mlp = list(theta["mlp"])
    mlp[-1] = jax.tree.map(jnp.zeros_like, mlp[-1])
    tx = lopt.transform({**theta, "mlp": mlp})
    g = jnp.outer(jnp.asarray([1.0, -2.0, 0.5]), jnp.asarray([3.0, 0.1, -1.0, 2.0]))
    params = jnp.ones_like(g)
    updates, _ = jax.jit(tx.update)(g, tx.init(params), params)
    chex.assert_trees_all_close(updates, -0.01 * jnp.sign(g), rtol=1e-3)


def test_state_is_under_four_times_params():
    lopt = optax_lopt.FactoredMLPLOpt()
    params = {"w": jnp.zeros((256, 128)), "b": jnp.zeros((128,))}
    state = lopt.transform(lopt.init(jax.random.key(0))).init(params)
    ratio = _tree_bytes(state) / _tree_bytes(params)
    assert 3.0 <= ratio <= 3.1, ratio  # three momenta plus row/column vectors


def test_default_untrained_optimizer_descends_a_quadratic():
    lopt = optax_lopt.FactoredMLPLOpt()
    tx = lopt.transform(lopt.init(jax.random.key(0)))
    target = jax.random.uniform(jax.random.key(1), (3, 5), minval=-0.1, maxval=0.1)
    loss = lambda p: jnp.sum((p - target) ** 2)

    @jax.jit
    def step(p, s):
        u, s = tx.update(jax.grad(loss)(p), s, p)
        return optax.apply_updates(p, u), s

    params = jnp.zeros((3, 5))
    state = tx.init(params)
    first = float(loss(params))
    for _ in range(300):
        params, state = step(params, state)
    assert float(loss(params)) < 0.05 * first


def test_large_and_small_leaves_agree_with_separate_runs():
    # Leaves above SOLO_SIZE run alone, small ones are concatenated: results must not depend
    # on which other leaves are in the tree.
    lopt = optax_lopt.FactoredMLPLOpt(hidden_sizes=(3,))
    theta = jax.tree.map(lambda x: x + 0.1, lopt.init(jax.random.key(2)))
    tx = lopt.transform(theta)
    keys = jax.random.split(jax.random.key(3), 3)
    params = {
        "big": jax.random.normal(keys[0], (F.SOLO_SIZE // 64, 64)),
        "small": jax.random.normal(keys[1], (5, 3)),
        "vec": jax.random.normal(keys[2], (7,)),
    }
    grads = jax.tree.map(lambda p: jnp.sin(3.0 * p), params)
    update = jax.jit(tx.update)
    together, _ = update(grads, tx.init(params), params)
    for name in params:
        alone, _ = update({name: grads[name]}, tx.init({name: params[name]}), {name: params[name]})
        chex.assert_trees_all_close(together[name], alone[name], rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"hidden_sizes": (4, -1)}, "hidden_sizes"),
        ({"factored_decays": (2.0,)}, "factored_decays"),
        ({"momentum_decays": 0.9}, "momentum_decays"),
        ({"step_mult": 0.0}, "step_mult"),
        ({"output_scale": -0.1}, "output_scale"),
        ({"hidden_sizes": ()}, "hidden_sizes"),
        ({"spike_clip": -1.0}, "spike_clip"),
    ],
)
def test_bad_config_names_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        optax_lopt.FactoredMLPLOpt(**kwargs)


def test_no_factored_moments_is_allowed():
    lopt = optax_lopt.FactoredMLPLOpt(factored_decays=())
    assert lopt.num_inputs == 2 + 3
    tx = lopt.transform(lopt.init(jax.random.key(0)))
    updates, _ = tx.update(jnp.ones((2, 2)), tx.init(jnp.ones((2, 2))), jnp.ones((2, 2)))
    chex.assert_tree_all_finite(updates)
