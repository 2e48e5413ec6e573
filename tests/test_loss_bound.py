"""The loss bound on step-size adaptation (`architectures/_loss_bound.py`) and MLPLOpt's option."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optax_lopt
from optax_lopt.architectures import _loss_bound

G = {"a": jnp.asarray([1.0, 1.0]), "b": jnp.asarray([2.0])}
U = {"a": jnp.asarray([-2.0, -2.0]), "b": jnp.asarray([-1.0])}  # predicted decrease 6


def _cut(value, s_a, s_b, bound=1.0):
    scales = {"a": jnp.float32(s_a), "b": jnp.float32(s_b)}
    return _loss_bound.cut_lengthening(U, G, scales, value, bound)


def _times(factor_a, factor_b):
    return {"a": U["a"] * factor_a, "b": U["b"] * factor_b}


def test_without_a_loss_nothing_is_cut():
    chex.assert_trees_all_close(_cut(None, 3.0, 3.0), U)


def test_a_decrease_within_the_bound_is_not_cut():
    chex.assert_trees_all_close(_cut(6.0, 3.0, 3.0), U)
    chex.assert_trees_all_close(_cut(2.0, 3.0, 3.0, bound=3.0), U)


def test_lengthened_steps_are_cut_to_the_bound():
    # loss 1.5, decrease 6: factor 0.25; both tensors were lengthened more than 4-fold.
    out = _cut(1.5, np.log(8.0), np.log(5.0))
    chex.assert_trees_all_close(out, _times(0.25, 0.25), rtol=1e-6)
    decrease = -sum(float(jnp.vdot(G[k], out[k])) for k in G)
    np.testing.assert_allclose(decrease, 1.5, rtol=1e-6)


def test_no_tensor_is_cut_below_the_networks_own_step():
    # "a" was lengthened only 2-fold (floor 0.5); "b" was shortened (s < 0): never cut.
    out = _cut(1.5, np.log(2.0), -1.0)
    chex.assert_trees_all_close(out, _times(0.5, 1.0), rtol=1e-6)


@pytest.mark.parametrize("value", [-1.0, 0.0, np.nan, np.inf])
def test_a_negative_or_non_finite_loss_cuts_all_lengthening(value):
    out = _cut(value, np.log(4.0), np.log(2.0))
    chex.assert_trees_all_close(out, _times(0.25, 0.5), rtol=1e-6)


def test_an_uphill_step_gets_no_lengthening():
    # -g . u = -6 < 0: whatever the loss, each tensor falls back to the network's own step
    # (a lengthened 4-fold keeps 1/4, b shortened keeps all of it).
    uphill = jax.tree.map(jnp.negative, U)
    scales = {"a": jnp.float32(np.log(4.0)), "b": jnp.float32(-1.0)}
    out = _loss_bound.cut_lengthening(uphill, G, scales, 100.0, 1.0)
    chex.assert_trees_all_close(out, {"a": uphill["a"] * 0.25, "b": uphill["b"]}, rtol=1e-6)


def _bounded_pair(loss_bound):
    lopt = optax_lopt.MLPLOpt(
        step_mult=0.01, step_adaptation=0.5, adaptation_rule="secant", loss_bound=loss_bound
    )
    return lopt.transform(lopt.init(jax.random.key(0)))


def test_mlp_lopt_applies_the_bound_only_with_a_loss():
    # Gradient steps on sum(w^2) lengthen the scale; then a tiny loss cuts the lengthening.
    bounded, free = _bounded_pair(1.0), _bounded_pair(None)
    params = {"w": jnp.full(4, 3.0)}
    s_bounded, s_free = bounded.init(params), free.init(params)
    for _ in range(6):
        g = {"w": 2.0 * params["w"]}
        u, s_free = free.update(g, s_free, params)
        u_none, s_bounded = bounded.update(g, s_bounded, params)  # no value: no cut
        chex.assert_trees_all_close(u_none, u)
        params = jax.tree.map(jnp.add, params, u)
    assert float(s_free.step_adaptation.log_scales["w"]) > 1.0
    g = {"w": 2.0 * params["w"]}
    u_free, s_free = free.update(g, s_free, params, value=1e-6)
    u_cut, _ = bounded.update(g, s_bounded, params, value=1e-6)
    s = float(s_free.step_adaptation.log_scales["w"])  # the scale this update used
    chex.assert_trees_all_close(u_cut, jax.tree.map(lambda x: x * np.exp(-s), u_free), rtol=1e-4)
