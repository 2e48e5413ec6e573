"""`muladd_dense` and `muladd_mlp`: multiply-add layers and their hand-written derivative rules.

Known answer: the plain multiply-add form differentiated by JAX itself. The rules must agree
with it in value, reverse mode (every argument, and the weights alone, where the inputs'
tangents are symbolic zeros), forward mode (``jax.jacfwd``, which `interpret` uses) and
under ``vmap``; per-coordinate biases must work as scalar ones do.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import pytest

import optax_lopt
from optax_lopt import meta, tasks
from optax_lopt.architectures import _features as F
from optax_lopt.architectures._dense import _muladd, muladd_dense, muladd_mlp, relu_chain

FAN_IN, FAN_OUT, SIZE = 5, 7, 64


def _args(per_coordinate_bias: bool):
    keys = jax.random.split(jax.random.key(0), FAN_IN + 2)
    inputs = tuple(jax.random.normal(k, (SIZE,)) for k in keys[:FAN_IN])
    w = jax.random.normal(keys[FAN_IN], (FAN_IN, FAN_OUT))
    shape = (FAN_OUT, SIZE) if per_coordinate_bias else (FAN_OUT,)
    biases = tuple(jax.random.normal(keys[-1], shape))
    return inputs, w, biases


def _loss(layer):
    # a nonlinear read-out, so every output's cotangent differs
    return lambda x, w, b: sum(jnp.sum(jnp.tanh(o) * (j + 1)) for j, o in enumerate(layer(x, w, b)))


@pytest.mark.parametrize("per_coordinate_bias", [False, True])
def test_value_and_reverse_mode_match_plain_autodiff(per_coordinate_bias):
    args = _args(per_coordinate_bias)
    chex.assert_trees_all_close(muladd_dense(*args), tuple(_muladd(*args)), rtol=1e-6)
    for argnums in ((0, 1, 2), (1,), (0,), (2,)):
        ours = jax.jit(jax.grad(_loss(muladd_dense), argnums))(*args)
        plain = jax.jit(jax.grad(_loss(_muladd), argnums))(*args)
        chex.assert_trees_all_close(ours, plain, rtol=1e-5, atol=1e-5)


def test_forward_mode_matches_plain_autodiff():
    inputs, w, biases = _args(False)

    def jac(layer):
        return jax.jacfwd(lambda x, w: jnp.stack(layer(x, w, biases)), (0, 1))(inputs, w)

    chex.assert_trees_all_close(jac(muladd_dense), jac(_muladd), rtol=1e-5, atol=1e-6)


def test_vmapped_gradient_matches_per_example_gradient():
    inputs, w, biases = _args(False)
    batch = jnp.stack([w, 2 * w, -w])
    grad = jax.grad(_loss(muladd_dense), 1)
    batched = jax.vmap(lambda w: grad(inputs, w, biases))(batch)
    for i in range(3):
        chex.assert_trees_all_close(batched[i], grad(inputs, batch[i], biases), rtol=1e-6)


def test_second_order_derivative_matches_plain_autodiff():
    inputs, w, biases = _args(False)

    def hess(layer):
        return jax.hessian(lambda w: _loss(layer)(inputs, w, biases))(w)

    chex.assert_trees_all_close(hess(muladd_dense), hess(_muladd), rtol=1e-4, atol=1e-5)


def test_elementwise_mlp_gradient_matches_dot_form():
    # the dot form (one-entry inputs) and the multiply-add form are the same function
    keys = jax.random.split(jax.random.key(1), 3)
    layers = F.init_mlp(keys[0], 4, (8,), 2, 1.0)
    x = [jax.random.normal(k, (3, 5)) for k in jax.random.split(keys[1], 4)]

    def loss(layers, x):
        return sum(jnp.sum(jnp.tanh(o)) for o in F.elementwise_mlp(x, layers))

    ours = jax.grad(loss)(layers, x)
    one_entry = [
        jax.grad(loss)(layers, [xi.reshape(-1)[k : k + 1] for xi in x]) for k in range(x[0].size)
    ]
    chex.assert_trees_all_close(
        ours, jax.tree.map(lambda *g: sum(g), *one_entry), rtol=1e-4, atol=1e-5
    )


def _mlp_args(per_coordinate_bias: bool):
    """Two layers (5 -> 7 -> 3) on 64 coordinates, inputs that cross 0 (so the masks matter)."""
    keys = jax.random.split(jax.random.key(2), FAN_IN + 4)
    inputs = tuple(jax.random.normal(k, (SIZE,)) for k in keys[:FAN_IN])
    weights = (
        jax.random.normal(keys[FAN_IN], (FAN_IN, FAN_OUT)),
        jax.random.normal(keys[FAN_IN + 1], (FAN_OUT, 3)),
    )
    first = (FAN_OUT, SIZE) if per_coordinate_bias else (FAN_OUT,)
    biases = (
        tuple(jax.random.normal(keys[FAN_IN + 2], first)),
        tuple(jax.random.normal(keys[FAN_IN + 3], (3,))),
    )
    return inputs, weights, biases


def _mlp_loss(mlp, relu_inputs):
    return lambda x, w, b: sum(
        jnp.sum(jnp.tanh(o) * (j + 1)) for j, o in enumerate(mlp(x, w, b, relu_inputs))
    )


@pytest.mark.parametrize("relu_inputs", [False, True])
@pytest.mark.parametrize("per_coordinate_bias", [False, True])
def test_mlp_value_and_reverse_mode_match_plain_autodiff(per_coordinate_bias, relu_inputs):
    args = _mlp_args(per_coordinate_bias)
    chex.assert_trees_all_close(
        muladd_mlp(*args, relu_inputs), relu_chain(*args, relu_inputs), rtol=1e-6
    )
    for argnums in ((0, 1, 2), (1,), (0,), (2,)):
        ours = jax.jit(jax.grad(_mlp_loss(muladd_mlp, relu_inputs), argnums))(*args)
        plain = jax.jit(jax.grad(_mlp_loss(relu_chain, relu_inputs), argnums))(*args)
        chex.assert_trees_all_close(ours, plain, rtol=1e-5, atol=1e-5)


def test_mlp_forward_mode_and_second_order_match_plain_autodiff():
    inputs, weights, biases = _mlp_args(False)

    def jac(mlp):
        return jax.jacfwd(lambda x, w: jnp.stack(mlp(x, w, biases, False)), (0, 1))(inputs, weights)

    def hess(mlp):
        return jax.hessian(lambda w: _mlp_loss(mlp, False)(inputs, w, biases))(weights)

    chex.assert_trees_all_close(jac(muladd_mlp), jac(relu_chain), rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(hess(muladd_mlp), hess(relu_chain), rtol=1e-4, atol=1e-5)


def test_mlp_vmapped_gradient_matches_per_example_gradient():
    inputs, weights, biases = _mlp_args(True)
    grad = jax.grad(_mlp_loss(muladd_mlp, False), 1)
    scales = jnp.array([1.0, 2.0, -1.0])
    batched = jax.vmap(lambda c: grad(inputs, jax.tree.map(lambda w: c * w, weights), biases))(
        scales
    )
    for i in range(3):
        one = grad(inputs, jax.tree.map(lambda w, c=scales[i]: c * w, weights), biases)
        chex.assert_trees_all_close(jax.tree.map(lambda b, i=i: b[i], batched), one, rtol=1e-6)


@pytest.mark.parametrize("antisymmetric", [False, True])
def test_truncated_bptt_through_mlp_lopt_matches_plain_autodiff(monkeypatch, antisymmetric):
    # The rule sits under the whole meta-gradient: swapping in the plain multiply-add MLP
    # (JAX's own derivative) must give the same truncated-BPTT gradient.
    lopt = optax_lopt.MLPLOpt(antisymmetric=antisymmetric)
    theta = lopt.init(jax.random.key(3))
    est = meta.TruncatedBPTT(
        lopt, tasks.family("quadratic", dim=6), num_tasks=2, truncation_length=4
    )
    state = est.init(theta, jax.random.key(4))

    def gradient():
        return jax.jit(est.meta_gradient)(theta, state, jax.random.key(5))[0]

    ours = gradient()
    monkeypatch.setattr(F, "muladd_mlp", relu_chain)
    plain = gradient()
    assert max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(ours)) > 0
    chex.assert_trees_all_close(ours, plain, rtol=1e-4, atol=1e-7)
