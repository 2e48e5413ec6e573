"""The optax contract of docs/guides/use.md, run against every registered architecture."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest


def _params(seed: int = 0, dtype=jnp.float32):
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    return {
        "dense": {
            "w": jax.random.normal(k1, (4, 3), dtype),
            "b": jnp.zeros((3,), dtype),
        },
        "blocks": [jax.random.normal(k2, (5,), dtype), (jax.random.normal(k3, (2, 2), dtype),)],
        "scale": jnp.asarray(1.5, dtype),
    }


def _grads(params, seed: int = 1):
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree.unflatten(
        treedef, [jax.random.normal(k, p.shape, p.dtype) for p, k in zip(leaves, keys, strict=True)]
    )


def _shapes_dtypes(tree):
    return jax.tree.map(lambda x: (jnp.shape(x), jnp.asarray(x).dtype), tree)


def _run(tx, params, num_steps, value=1.0, seed=1):
    state = tx.init(params)
    updates = None
    for i in range(num_steps):
        updates, state = tx.update(_grads(params, seed + i), state, params, value=value)
    return updates, state


def test_updates_are_nonzero_and_finite(case):
    _, _, tx = case
    params = _params()
    updates, state = _run(tx, params, 3)
    chex.assert_tree_all_finite((updates, state))
    assert any(float(jnp.abs(u).max()) > 0 for u in jax.tree.leaves(updates))


def test_inside_chain_value_reaches(case):
    _, _, tx = case
    params = _params()
    grads = _grads(params)
    chained = optax.chain(optax.identity(), tx)
    for value in (0.5, 3.0):
        direct, _ = tx.update(grads, tx.init(params), params, value=value)
        through, _ = chained.update(grads, chained.init(params), params, value=value)
        chex.assert_trees_all_close(direct, through)


def test_value_is_optional_and_means_zero(case):
    _, _, tx = case
    params = _params()
    grads = _grads(params)
    without, s1 = tx.update(grads, tx.init(params), params)
    with_zero, s2 = tx.update(grads, tx.init(params), params, value=0.0)
    chex.assert_trees_all_close((without, s1), (with_zero, s2))


def test_unknown_extra_args_are_ignored(case):
    _, _, tx = case
    params = _params()
    grads = _grads(params)
    plain = tx.update(grads, tx.init(params), params, value=2.0)
    extra = tx.update(grads, tx.init(params), params, value=2.0, foo=1, bar="x", batch_stats={})
    chex.assert_trees_all_close(plain, extra)


def test_multi_steps_averages_gradients(case):
    _, _, tx = case
    params = _params()
    g1, g2 = _grads(params, 1), _grads(params, 2)
    multi = optax.MultiSteps(tx, every_k_schedule=2)
    state = multi.init(params)
    first, state = multi.update(g1, state, params, value=1.0)
    second, state = multi.update(g2, state, params, value=1.0)
    chex.assert_trees_all_close(first, jax.tree.map(jnp.zeros_like, first))
    mean = jax.tree.map(lambda a, b: (a + b) / 2, g1, g2)
    expected, _ = tx.update(mean, tx.init(params), params, value=1.0)
    chex.assert_trees_all_close(second, expected, rtol=1e-5, atol=1e-6)


def test_apply_if_finite_skips_nonfinite_steps(case):
    _, _, tx = case
    params = _params()
    safe = optax.apply_if_finite(tx, max_consecutive_errors=5)
    state = safe.init(params)
    _, state = safe.update(_grads(params, 1), state, params, value=1.0)
    bad = jax.tree.map(
        lambda g: g.at[..., 0].set(jnp.nan) if g.ndim else jnp.nan, _grads(params, 2)
    )
    updates, bad_state = safe.update(bad, state, params, value=1.0)
    chex.assert_trees_all_close(updates, jax.tree.map(jnp.zeros_like, updates))
    chex.assert_trees_all_close(bad_state.inner_state, state.inner_state)
    assert int(bad_state.notfinite_count) == 1


def test_inject_hyperparams_scales_updates(case):
    _, _, tx = case
    params = _params()
    grads = _grads(params)
    injected = optax.inject_hyperparams(
        lambda learning_rate: optax.chain(tx, optax.scale(learning_rate))
    )(learning_rate=0.5)
    state = injected.init(params)
    half, _ = injected.update(grads, state, params, value=1.0)
    state.hyperparams["learning_rate"] = jnp.asarray(2.0)
    double, _ = injected.update(grads, state, params, value=1.0)
    base, _ = tx.update(grads, tx.init(params), params, value=1.0)
    chex.assert_trees_all_close(half, jax.tree.map(lambda u: 0.5 * u, base), rtol=1e-5)
    chex.assert_trees_all_close(double, jax.tree.map(lambda u: 2.0 * u, base), rtol=1e-5)


def test_tree_map_params_reaches_per_parameter_state(case):
    _, _, tx = case
    params = _params()
    state = tx.init(params)
    marked = optax.tree.map_params(
        tx, lambda x: jnp.full_like(x, 7.0), state, transform_non_params=lambda x: x
    )
    chex.assert_trees_all_equal_structs(marked, state)
    sevens = [x for x in jax.tree.leaves(marked) if x.size and bool(jnp.all(x == 7.0))]
    assert sevens, "no per-parameter state leaf was mapped"


def test_jit_does_not_retrace(case):
    _, _, tx = case
    params = _params()
    chex.clear_trace_counter()

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(grads, state, params, value):
        return tx.update(grads, state, params, value=value)

    state = tx.init(params)
    for i in range(3):
        _, state = step(_grads(params, i), state, params, jnp.float32(i))


def test_init_accepts_shape_dtype_structs(case):
    _, _, tx = case
    params = _params()
    specs = jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, p.dtype), params)
    from_specs = tx.init(specs)
    chex.assert_trees_all_equal_shapes_and_dtypes(from_specs, tx.init(params))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_dtypes_are_kept(case, dtype):
    _, _, tx = case
    with jax.enable_x64(dtype == "float64"):
        params = _params(dtype=jnp.dtype(dtype))
        state0 = tx.init(params)
        step = jax.jit(lambda g, s, p: tx.update(g, s, p, value=1.0))
        state = state0
        for i in range(3):
            updates, state = step(_grads(params, i), state, params)
        chex.assert_trees_all_equal_dtypes(updates, params)
        assert _shapes_dtypes(state) == _shapes_dtypes(state0)
        chex.assert_tree_all_finite(updates)


@pytest.mark.parametrize(
    "params",
    [
        jnp.asarray(2.0),
        {},
        [],
        {"a": [jnp.ones(2), (jnp.ones((1, 3)), {"b": jnp.ones(())})]},
    ],
    ids=["scalar", "empty-dict", "empty-list", "nested"],
)
def test_tree_shapes(case, params):
    _, _, tx = case
    grads = jax.tree.map(lambda p: 0.3 * jnp.ones_like(p), params)
    state = tx.init(params)
    updates, new_state = jax.jit(lambda g, s, p: tx.update(g, s, p, value=1.0))(
        grads, state, params
    )
    chex.assert_trees_all_equal_shapes_and_dtypes(updates, params)
    assert _shapes_dtypes(new_state) == _shapes_dtypes(state)


def test_vmap_over_param_batches(case):
    _, _, tx = case
    batch = [_params(seed) for seed in range(3)]
    grads = [_grads(p, 10 + i) for i, p in enumerate(batch)]
    stack = lambda trees: jax.tree.map(lambda *x: jnp.stack(x), *trees)
    states = jax.vmap(tx.init)(stack(batch))
    updates, _ = jax.vmap(lambda g, s, p: tx.update(g, s, p, value=1.0))(
        stack(grads), states, stack(batch)
    )
    for i, (p, g) in enumerate(zip(batch, grads, strict=True)):
        single, _ = tx.update(g, tx.init(p), p, value=1.0)
        chex.assert_trees_all_close(jax.tree.map(lambda u, i=i: u[i], updates), single, atol=1e-6)


def test_state_does_not_alias_params_and_donation_works(case):
    _, _, tx = case
    params = _params()
    state = tx.init(params)
    param_buffers = {p.unsafe_buffer_pointer() for p in jax.tree.leaves(params)}
    for leaf in jax.tree.leaves(state):
        assert leaf.unsafe_buffer_pointer() not in param_buffers

    @jax.jit
    def train_step(params, state, grads):
        updates, state = tx.update(grads, state, params, value=1.0)
        return optax.apply_updates(params, updates), state

    donating = jax.jit(train_step, donate_argnums=(0, 1))
    expected = params
    expected_state = state
    for i in range(3):
        expected, expected_state = train_step(expected, expected_state, _grads(params, i))
    donated_params = jax.tree.map(jnp.copy, params)
    donated_state = jax.tree.map(jnp.copy, state)
    for i in range(3):
        donated_params, donated_state = donating(donated_params, donated_state, _grads(params, i))
    chex.assert_trees_all_close(donated_params, expected)


def test_nonfinite_gradients_do_not_poison_state(case):
    _, _, tx = case
    params = _params()
    step = jax.jit(lambda g, s, p, v: tx.update(g, s, p, value=v))
    state = tx.init(params)
    _, state = step(_grads(params, 1), state, params, 1.0)

    def poison(g):
        if g.ndim == 0:
            return jnp.asarray(jnp.inf, g.dtype)
        return g.at[..., 0].set(jnp.nan).at[..., -1].set(-jnp.inf)

    updates, state = step(jax.tree.map(poison, _grads(params, 2)), state, params, jnp.nan)
    chex.assert_tree_all_finite((updates, state))
    updates, state = step(_grads(params, 3), state, params, 1.0)
    chex.assert_tree_all_finite((updates, state))


def test_huge_gradients_give_finite_updates(case):
    _, _, tx = case
    params = _params()
    huge = jax.tree.map(lambda g: 1e30 * jnp.sign(g), _grads(params))
    state = tx.init(params)
    for _ in range(3):
        updates, state = tx.update(huge, state, params, value=1e30)
    chex.assert_tree_all_finite((updates, state))
    assert np.isfinite(sum(float(jnp.abs(u).sum()) for u in jax.tree.leaves(updates)))


@pytest.mark.parametrize(
    "bad, path, words",
    [
        (lambda g: {**g, "scale": jnp.ones((2,))}, "['scale']", "shape"),
        (
            lambda g: {**g, "dense": {"w": g["dense"]["w"].T, "b": g["dense"]["b"]}},
            "['w']",
            "shape",
        ),
        (lambda g: {k: v for k, v in g.items() if k != "scale"}, "['scale']", "structure"),
        (lambda g: {**g, "extra": jnp.ones(())}, "['extra']", "structure"),
    ],
    ids=["leaf-shape", "transposed", "missing-leaf", "extra-leaf"],
)
def test_mismatched_gradients_name_the_first_bad_leaf(case, bad, path, words):
    _, _, tx = case
    params = _params()
    state = tx.init(params)
    grads = bad(_grads(params))
    with pytest.raises(ValueError, match="updates") as info:
        tx.update(grads, state, params, value=1.0)
    message = str(info.value)
    assert path in message and words in message and "state" in message, message
    # Without params the state is what the gradients are checked against.
    with pytest.raises(ValueError, match="state"):
        tx.update(grads, state, value=1.0)


def test_gradients_matching_the_state_but_not_params_name_params(case):
    _, _, tx = case
    params = _params()
    state = tx.init(params)
    other = {**params, "scale": jnp.ones((3,))}
    with pytest.raises(ValueError, match="updates") as info:
        tx.update(_grads(params), state, other, value=1.0)
    assert "['scale']" in str(info.value) and "params" in str(info.value)
