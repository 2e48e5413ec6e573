"""Property-based tests of the optimizer contract, for every architecture (hypothesis).

Random pytrees (nested dicts, lists and tuples), leaf shapes and dtypes (float32, bfloat16,
float16), and gradient sequences with NaN, +/-inf and spikes at random leaves, positions and
steps: the updates stay finite, in the params' shapes and dtypes, and the state stays finite
with the shapes and dtypes it started with. The spike rule of ``test_outliers.py`` is checked
on random spike sizes, positions and steps.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _cases import CASES, perturbed_theta
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import optax_lopt

DTYPES = ("float32", "bfloat16", "float16")
SETTINGS = settings(
    max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)

# Few distinct shapes (scalars, vectors, matrices, a size-1 axis, rank 3), so that eager jax
# reuses its compiled kernels across examples and architectures.
_shapes = st.sampled_from([(), (3,), (1, 3), (2, 1, 3)])
_leaves = st.tuples(_shapes, st.sampled_from(DTYPES))
_trees = st.recursive(
    _leaves,
    lambda children: st.one_of(
        st.dictionaries(st.sampled_from("abcd"), children, min_size=1, max_size=3),
        st.lists(children, min_size=1, max_size=2),
        st.lists(children, min_size=1, max_size=2).map(tuple),
    ),
    max_leaves=4,
)
_faults = st.tuples(
    st.sampled_from(["none", "nan", "inf", "-inf", "spike", "whole-spike"]),
    st.integers(0, 10**6),  # which leaf and entry (taken modulo the sizes)
    st.floats(6.0, 30.0),  # log10 of the spike
)


def _is_spec(x):
    return isinstance(x, tuple) and len(x) == 2 and isinstance(x[1], str)


def _params(spec, seed):
    specs, treedef = jax.tree.flatten(spec, is_leaf=_is_spec)
    rng = np.random.default_rng(seed)
    leaves = [jnp.asarray(rng.normal(size=shape), dtype) for shape, dtype in specs]
    return jax.tree.unflatten(treedef, leaves)


def _gradients(params, seed, fault):
    kind, where, log_spike = fault
    leaves, treedef = jax.tree.flatten(params)
    rng = np.random.default_rng(seed)
    out = [rng.normal(size=p.shape).astype(np.float32) for p in leaves]
    if kind != "none" and leaves:
        i = where % len(leaves)
        flat = out[i].reshape(-1)
        value = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf}.get(kind, 10.0**log_spike)
        if kind == "whole-spike":
            flat[:] = value
        else:
            flat[where % flat.size] = value
        out[i] = flat.reshape(out[i].shape)
    # In the params' dtype: a 1e30 spike is inf in float16 and bfloat16 keeps it.
    cast = [jnp.asarray(g).astype(p.dtype) for g, p in zip(out, leaves, strict=True)]
    return jax.tree.unflatten(treedef, cast)


def _avals(tree):
    return jax.tree.map(lambda x: (jnp.shape(x), jnp.asarray(x).dtype), tree)


@functools.cache
def _tx(case_name):
    name, kwargs = CASES[case_name]
    lopt = optax_lopt.architecture(name)(**kwargs)
    return lopt.transform(perturbed_theta(lopt))


@pytest.mark.parametrize("case_name", sorted(optax_lopt.architecture_names()))
@SETTINGS
@given(spec=_trees, faults=st.lists(_faults, min_size=1, max_size=2), seed=st.integers(0, 99))
def test_state_stays_finite_and_shape_stable(case_name, spec, faults, seed):
    tx = _tx(case_name)
    params = _params(spec, seed)
    state0 = tx.init(params)
    state = state0
    for step, fault in enumerate(faults):
        grads = _gradients(params, seed + step, fault)
        updates, state = tx.update(grads, state, params, value=jnp.float32(1.0 + step))
        assert _avals(updates) == _avals(params)
        assert _avals(state) == _avals(state0)
        for leaf in jax.tree.leaves((updates, state)):
            assert bool(jnp.all(jnp.isfinite(jnp.asarray(leaf, jnp.float32)))), (fault, leaf)


# ----------------------------------------------------------------------------- spike rule

DIM, BATCH, WINDOW, NUM_STEPS = 100, 32, 20, 90
GUARDED = {
    "MLPLOpt": ("MLPLOpt", {}),
    "FactoredMLPLOpt": ("FactoredMLPLOpt", {}),
    "HierarchicalLOpt": ("HierarchicalLOpt", {}),
    "ComponentwiseRNN-gru": ("ComponentwiseRNN", {"hidden_size": 16}),
}


@functools.cache
def _spike_runner(label):
    name, kwargs = GUARDED[label]
    lopt = optax_lopt.architecture(name)(**kwargs)
    theta = perturbed_theta(lopt, scale=0.5 if name == "ComponentwiseRNN" else 0.1)
    tx = lopt.transform(theta)
    bound = None
    if name == "ComponentwiseRNN":
        r = theta["readout"]
        bound = lopt.output_scale * float(jnp.sum(jnp.abs(r["w"])) + jnp.abs(r["b"]))
    k_true, k_steps = jax.random.split(jax.random.key(0))
    w_true = jax.random.normal(k_true, (DIM,))

    @jax.jit
    def run(spike, position, whole, spike_step):
        def step(carry, inputs):
            w, state = carry
            t, key = inputs
            kx, kn = jax.random.split(key)
            x = jax.random.normal(kx, (BATCH, DIM))
            y = x @ w_true + 0.1 * jax.random.normal(kn, (BATCH,))
            g = jax.grad(lambda w: 0.5 * jnp.mean((x @ w - y) ** 2))(w)
            mask = jnp.logical_or(whole, jnp.arange(DIM) == position)
            g = jnp.where(jnp.logical_and(t == spike_step, mask), spike, g)
            u, state = tx.update(g, state, w)
            return (w + u, state), jnp.max(jnp.abs(u))

        w0 = jnp.zeros((DIM,))
        inputs = (jnp.arange(NUM_STEPS), jax.random.split(k_steps, NUM_STEPS))
        return jax.lax.scan(step, (w0, tx.init(w0)), inputs)[1]

    return run, bound


@pytest.mark.parametrize("label", sorted(GUARDED))
@settings(max_examples=5, deadline=None, derandomize=True)
@given(
    log_spike=st.floats(6.0, 30.0),
    sign=st.sampled_from([-1.0, 1.0]),
    position=st.integers(0, DIM - 1),
    whole=st.booleans(),
    spike_step=st.integers(40, NUM_STEPS - WINDOW - 1),
)
def test_spike_rule_holds_for_random_spikes(label, log_spike, sign, position, whole, spike_step):
    run, bound = _spike_runner(label)
    spike = jnp.float32(sign * 10.0**log_spike)
    steps = np.asarray(run(spike, position, whole, spike_step))
    plain = np.asarray(run(jnp.float32(0.0), position, False, NUM_STEPS))
    assert np.isfinite(steps).all()
    t = spike_step
    limit = 10 * steps[:t].max() if bound is None else max(10 * steps[:t].max(), bound)
    assert steps[t:].max() <= limit
    after = steps[t + WINDOW]
    before = steps[t - 5 : t].mean()
    assert 0.5 * before <= after <= 2 * before, (before, after)
    assert 0.5 * plain[t + WINDOW] <= after <= 2 * plain[t + WINDOW]
