"""MLPLOpt and the shared per-parameter feature helpers."""

from __future__ import annotations

import json
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_lopt
from optax_lopt.architectures import _features as F


def _quadratic_run(tx, num_steps, dim=6, seed=0):
    target = jax.random.uniform(jax.random.key(seed), (2, dim), minval=-0.1, maxval=0.1)
    params = {"w": jnp.zeros((2, dim)), "b": jnp.zeros(()) + 0.1}
    loss = lambda p: jnp.sum((p["w"] - target) ** 2) + p["b"] ** 2

    @jax.jit
    def step(p, s):
        value, g = jax.value_and_grad(loss)(p)
        u, s = tx.update(g, s, p, value=value)
        return optax.apply_updates(p, u), s

    state = tx.init(params)
    first = float(loss(params))
    for _ in range(num_steps):
        params, state = step(params, state)
    return first, float(loss(params))


def _zero_mlp(theta):
    """Theta with the MLP's output layer zeroed: the update is the skip readout alone."""
    mlp = list(theta["mlp"])
    mlp[-1] = jax.tree.map(jnp.zeros_like, mlp[-1])
    return {**theta, "mlp": mlp}


def test_elementwise_mlp_matches_dense_reference():
    key = jax.random.key(0)
    layers = F.init_mlp(key, 5, (7, 3), 2, output_scale=1.0)
    layers = jax.tree.map(lambda x: x + 0.1, layers)  # non-zero biases too
    x = jax.random.normal(jax.random.key(1), (4, 6, 5))
    bias = jnp.arange(7.0) / 10
    out = jax.jit(lambda x, layers: F.elementwise_mlp([x[..., i] for i in range(5)], layers, bias))(
        x, layers
    )
    h = jax.nn.relu(x @ layers[0]["w"] + layers[0]["b"] + bias)
    h = jax.nn.relu(h @ layers[1]["w"] + layers[1]["b"])
    ref = h @ layers[2]["w"] + layers[2]["b"]
    chex.assert_trees_all_close(jnp.stack(out, -1), ref, rtol=1e-5, atol=1e-5)


def test_normalize_has_unit_rms_and_survives_empty_and_huge():
    x = jnp.asarray([3.0, -4.0])
    y, rms = F.normalize(x)
    chex.assert_trees_all_close(y, x / math.sqrt(12.5), rtol=1e-6)
    chex.assert_trees_all_close(rms, math.sqrt(12.5), rtol=1e-6)
    empty, rms0 = F.normalize(jnp.zeros((0, 3)))
    chex.assert_shape(empty, (0, 3))
    assert float(rms0) < 1e-14
    big, _ = F.normalize(jnp.full((1000,), 1e30))
    chex.assert_tree_all_finite(big)


def test_step_embedding_known_values():
    emb = F.step_embedding(jnp.asarray(10), (1.0, 10.0, 1000.0))
    chex.assert_trees_all_close(emb, jnp.tanh(jnp.asarray([10.0, 1.0, 0.01])), rtol=1e-6)


def test_first_update_is_sign_descent_when_mlp_output_is_zero():
    # Step 1: m_0.9 = 0.1 g, v = 0.001 g^2, so m * rsqrt(v) = 3.16 sign(g); normalised over
    # the tensor that is sign(g), and the skip readout makes it the direction.
    lopt = optax_lopt.MLPLOpt(hidden_sizes=(8,), step_mult=0.01)
    tx = lopt.transform(_zero_mlp(lopt.init(jax.random.key(0))))
    params = {"w": jnp.ones((3, 4)), "s": jnp.asarray(2.0)}
    grads = {"w": jnp.arange(12.0).reshape(3, 4) - 5.5, "s": jnp.asarray(-3.0)}
    updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
    expected = jax.tree.map(lambda g: -0.01 * jnp.sign(g), grads)
    chex.assert_trees_all_close(updates, expected, rtol=1e-4)


def test_magnitude_output_scales_the_step_exponentially():
    lopt = optax_lopt.MLPLOpt(hidden_sizes=(8,), exp_mult=0.5)
    theta = _zero_mlp(lopt.init(jax.random.key(0)))
    doubled = jax.tree.map(lambda x: x, theta)
    doubled["mlp"][-1]["b"] = jnp.asarray([0.0, math.log(2.0) / 0.5])
    params = jnp.linspace(-1.0, 1.0, 7)
    grads = jnp.linspace(0.3, -2.0, 7)
    tx1, tx2 = lopt.transform(theta), lopt.transform(doubled)
    base, _ = jax.jit(tx1.update)(grads, tx1.init(params), params)
    twice, _ = jax.jit(tx2.update)(grads, tx2.init(params), params)
    chex.assert_trees_all_close(twice, 2.0 * base, rtol=1e-5)


def test_updates_are_invariant_to_gradient_scale_without_params():
    lopt = optax_lopt.MLPLOpt(hidden_sizes=(8,))
    tx = lopt.transform(lopt.init(jax.random.key(3)))
    grads = jax.random.normal(jax.random.key(4), (5, 3))
    state_a = state_b = tx.init(grads)
    update = jax.jit(tx.update)
    for i in range(3):
        g = grads * (i + 1)
        ua, state_a = update(g, state_a)
        ub, state_b = update(1000.0 * g, state_b)
    chex.assert_trees_all_close(ua, ub, rtol=1e-3, atol=1e-7)


def test_default_untrained_optimizer_descends_a_quadratic():
    lopt = optax_lopt.MLPLOpt()
    first, last = _quadratic_run(lopt.transform(lopt.init(jax.random.key(0))), 300)
    assert last < 0.05 * first, (first, last)


def test_state_layout_and_config_roundtrip():
    lopt = optax_lopt.MLPLOpt(hidden_sizes=(8, 4), momentum_decays=(0.9, 0.99))
    params = {"a": jnp.ones((3, 2), jnp.bfloat16)}
    state = lopt.transform(lopt.init(jax.random.key(0))).init(params)
    assert len(state.momenta) == 2
    chex.assert_shape(state.second_moment["a"], (3, 2))
    assert state.second_moment["a"].dtype == jnp.float32
    assert optax_lopt.from_config("MLPLOpt", lopt.config()) == lopt
    theta = lopt.init(jax.random.key(0))
    chex.assert_shape(theta["mlp"][0]["w"], (lopt.num_inputs, 8))
    assert lopt.num_inputs == 2 + 2 + 2 + 2  # p, g, m*2, r, g*r, m*r*2


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"hidden_sizes": (0,)}, "hidden_sizes"),
        ({"hidden_sizes": 32}, "hidden_sizes"),
        ({"momentum_decays": (0.9, 1.0)}, "momentum_decays"),
        ({"momentum_decays": ()}, "momentum_decays"),
        ({"second_moment_decay": 0.0}, "second_moment_decay"),
        ({"step_mult": -1.0}, "step_mult"),
        ({"step_mult": float("inf")}, "step_mult"),
        ({"exp_mult": -1.0}, "exp_mult"),
        ({"feature_clip": 0.0}, "feature_clip"),
        ({"feature_clip": float("inf")}, "feature_clip"),
        ({"feature_clip": True}, "feature_clip"),
        ({"feature_clip": "5"}, "feature_clip"),
        ({"hidden_sizes": ()}, "hidden_sizes"),
        ({"hidden_sizes": (True,)}, "hidden_sizes"),
        ({"momentum_decays": (0.5, "0.9")}, "momentum_decays"),
        ({"timescales": (1.0, -3.0)}, "timescales"),
        ({"antisymmetric": 1}, "antisymmetric"),
        ({"skip_init": "zeros"}, "skip_init"),
        ({"spike_clip": 0.0}, "spike_clip"),
        ({"spike_clip": "10"}, "spike_clip"),
        ({"anneal_after": 0}, "anneal_after"),
        ({"anneal_after": 10.5}, "anneal_after"),
        ({"anneal_power": 0.0}, "anneal_power"),
        ({"anneal_power": 1.5}, "anneal_power"),
    ],
)
def test_bad_config_names_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        optax_lopt.MLPLOpt(**kwargs)


def test_lists_in_a_config_are_stored_as_tuples():
    # JSON configs carry lists; the dataclass must stay hashable and compare equal.
    lopt = optax_lopt.MLPLOpt(hidden_sizes=[8], momentum_decays=[0.9], timescales=[1, 10])
    same = optax_lopt.MLPLOpt(hidden_sizes=(8,), momentum_decays=(0.9,), timescales=(1, 10))
    assert lopt == same
    assert lopt.timescales == (1.0, 10.0) and hash(lopt) == hash(same)


def _spike_updates(lopt, spike):
    """Updates after three ordinary steps, then a step whose gradient has one outlier."""
    tx = lopt.transform(lopt.init(jax.random.key(3)))
    params = {"w": jnp.linspace(-1.0, 1.0, 12).reshape(3, 4)}
    grads = {"w": jnp.linspace(0.5, -0.4, 12).reshape(3, 4)}
    state = tx.init(params)
    for _ in range(3):
        _, state = tx.update(grads, state, params)
    spiked = {"w": grads["w"].at[1, 2].set(spike)}
    return tx.update(spiked, state, params)[0]["w"]


def test_feature_clip_bounds_the_step_of_a_gradient_spike():
    # spike_clip=None throughout: this is the feature clip's own effect.
    clipped = optax_lopt.MLPLOpt(
        hidden_sizes=(4,), output_scale=1.0, skip_init="random", feature_clip=2.0, spike_clip=None
    )
    plain = optax_lopt.MLPLOpt(
        hidden_sizes=(4,), output_scale=1.0, skip_init="random", spike_clip=None
    )
    # With the clip, every feature the spike moves saturates: a spike 1000x larger moves the
    # optimizer the same.
    chex.assert_trees_all_close(
        _spike_updates(clipped, 1e3), _spike_updates(clipped, 1e6), atol=1e-5
    )
    # Without it, g / s at the spike is bounded only by sqrt(size / (1 - beta2)) (about 110
    # here, more in larger tensors), and the spiked coordinate's step is several times larger.
    spiked_plain, spiked_clipped = _spike_updates(plain, 1e3), _spike_updates(clipped, 1e3)
    assert abs(float(spiked_plain[1, 2])) > 2 * abs(float(spiked_clipped[1, 2]))
    # Ordinary gradients (features well inside the clip) are unaffected.
    wide = optax_lopt.MLPLOpt(
        hidden_sizes=(4,), output_scale=1.0, skip_init="random", feature_clip=1e4, spike_clip=None
    )
    chex.assert_trees_all_close(_spike_updates(wide, 0.3), _spike_updates(plain, 0.3))
    assert optax_lopt.from_config("MLPLOpt", clipped.config()) == clipped


def test_build_features_clips_all_but_the_parameter_feature():
    p, g = jnp.array([100.0, -1.0, 0.0]), jnp.array([50.0, -0.01, 0.0])
    feats, _ = F.build_features(p, g, [g], [jnp.ones(3)], jnp.asarray(1e-4), limit=3.0)
    for f in feats[1:]:
        assert float(jnp.max(jnp.abs(f))) <= 3.0
    chex.assert_trees_all_close(feats[1], jnp.array([3.0, -1.0, 0.0]), atol=1e-4)
    chex.assert_trees_all_close(feats[0], F.normalize(p)[0])


def test_features_count_and_adam_index():
    assert F.num_features(4, 1) == 12
    assert F.adam_feature_index((0.5, 0.9, 0.99), 1) == 2 + 3 + 2 + 1
    assert F.adam_feature_index((0.99, 0.5), 0) == 2  # 0.99 is nearest 0.9
    assert np.isclose(F.ema(jnp.asarray(1.0), jnp.asarray(3.0), 0.75), 1.5)


@pytest.mark.parametrize("name", ["MLPLOpt", "FactoredMLPLOpt", "HierarchicalLOpt"])
def test_meta_gradient_through_a_short_unroll_is_finite_and_nonzero(name):
    kwargs = {"lstm_hidden_size": 4} if name == "HierarchicalLOpt" else {}
    lopt = optax_lopt.architecture(name)(hidden_sizes=(2,), **kwargs)
    theta = lopt.init(jax.random.key(0))
    target = jnp.linspace(-0.1, 0.1, 6).reshape(2, 3)
    loss = lambda p: jnp.sum((p["w"] - target) ** 2)

    def meta_loss(theta):
        tx = lopt.transform(theta)
        params = {"w": jnp.zeros((2, 3))}

        def body(carry, _):
            p, s = carry
            value, g = jax.value_and_grad(loss)(p)
            u, s = tx.update(g, s, p, value=value)
            return (optax.apply_updates(p, u), s), value

        _, losses = jax.lax.scan(body, (params, tx.init(params)), length=3)
        return jnp.mean(losses)

    grads = jax.jit(jax.grad(meta_loss))(theta)
    chex.assert_tree_all_finite(grads)
    assert float(jnp.abs(grads["skip"]["w"]).sum()) > 0
    assert float(jnp.abs(grads["mlp"][0]["w"]).sum()) > 0


def test_zero_mlp_output_is_exactly_adam():
    # The skip readout alone gives -step_mult * m_hat / sqrt(v_hat + 1e-16): optax.adam with
    # eps=0 and eps_root=1e-16, step after step (time features only reach the zeroed MLP).
    lopt = optax_lopt.MLPLOpt(hidden_sizes=(4,), step_mult=0.05)
    tx = lopt.transform(_zero_mlp(lopt.init(jax.random.key(0))))
    adam = optax.adam(0.05, b1=0.9, b2=0.999, eps=0.0, eps_root=1e-16)
    params = {"w": jnp.linspace(-1.0, 1.0, 6).reshape(2, 3), "b": jnp.asarray([0.3, -0.2])}
    loss = lambda p: jnp.sum(jnp.sin(3.0 * p["w"])) + jnp.sum(p["b"] ** 2)
    update, adam_update = jax.jit(tx.update), jax.jit(adam.update)
    p1, s1, p2, s2 = params, tx.init(params), params, adam.init(params)
    for _ in range(10):
        u1, s1 = update(jax.grad(loss)(p1), s1, p1)
        u2, s2 = adam_update(jax.grad(loss)(p2), s2, p2)
        chex.assert_trees_all_close(u1, u2, rtol=1e-4, atol=1e-7)
        p1, p2 = optax.apply_updates(p1, u1), optax.apply_updates(p2, u2)


def test_numpy_scalars_are_accepted_and_stored_as_python_numbers():
    lopt = optax_lopt.MLPLOpt(
        hidden_sizes=(np.int64(8),), second_moment_decay=np.float64(0.99), spike_clip=np.int32(5)
    )
    assert lopt == optax_lopt.MLPLOpt(hidden_sizes=(8,), second_moment_decay=0.99, spike_clip=5)
    assert type(lopt.hidden_sizes[0]) is int and type(lopt.spike_clip) is float
    json.dumps(lopt.config())


def test_config_without_spike_clip_loads_with_the_guard():
    """A config saved before the guard existed (the shipped "general") gets it by default."""
    config = optax_lopt.MLPLOpt().config()
    del config["spike_clip"]
    assert optax_lopt.from_config("MLPLOpt", config).spike_clip == F.SPIKE_CLIP


def test_one_entry_dot_form_equals_the_multiply_add_form(monkeypatch):
    """`pretrained("general")` on a one-entry parameter: the dot form (used there) and the
    multiply-add form give the same updates and state, to float rounding."""
    tx = optax_lopt.pretrained("general")
    params = {"w": jnp.array([0.3])}
    grads = [{"w": jnp.array([g])} for g in (0.02, -0.5, 1e-4, 3.0)]

    def run():
        state, out = tx.init(params), []
        for g in grads:
            u, state = tx.update(g, state, params)
            out.append(u["w"])
        return jnp.stack(out), state

    dot_updates, dot_state = run()
    monkeypatch.setattr(F, "DOT_MAX_SIZE", 0)
    madd_updates, madd_state = run()
    chex.assert_trees_all_close(dot_updates, madd_updates, rtol=1e-5, atol=1e-9)
    chex.assert_trees_all_close(dot_state, madd_state, rtol=1e-5, atol=1e-9)
    assert float(jnp.max(jnp.abs(dot_updates))) > 0


@pytest.mark.parametrize("power", [0.5, 1.0])
def test_anneal_scales_steps_past_anneal_after_by_the_known_factor(power):
    # Under a constant gradient the plain optimizer keeps its step; the annealed one takes
    # exactly that step times min(1, (after / t) ** power) at update t (counted from 1).
    after, num_steps = 5, 20
    plain = optax_lopt.MLPLOpt(hidden_sizes=(4,), output_scale=1.0)
    annealed = optax_lopt.MLPLOpt(
        hidden_sizes=(4,), output_scale=1.0, anneal_after=after, anneal_power=power
    )
    theta = plain.init(jax.random.key(5))
    params = {"w": jnp.linspace(-1.0, 1.0, 6).reshape(2, 3)}
    grads = {"w": jnp.linspace(0.5, -2.0, 6).reshape(2, 3)}

    def steps(lopt):
        tx = lopt.transform(theta)

        def step(state, _):
            updates, state = tx.update(grads, state, params)
            return state, updates["w"]

        return jax.lax.scan(step, tx.init(params), None, length=num_steps)[1]

    got, want = jax.jit(steps, static_argnums=0)(annealed), steps(plain)
    t = np.arange(1, num_steps + 1)
    factor = np.minimum(1.0, (after / t) ** power)[:, None, None]
    chex.assert_trees_all_close(got, want * factor, rtol=1e-5)
    chex.assert_trees_all_equal(got[:after], want[:after])
    assert float(jnp.max(jnp.abs(got[-1]))) < 0.6 * float(jnp.max(jnp.abs(want[-1])))
