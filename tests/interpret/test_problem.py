"""interpret.Problem / record: known losses, instances that do not depend on the call."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import interpret
from interpret.report import held_out_objectives, meta_objective


def _sample(key):
    k_curv, k_init = jax.random.split(key)
    curvature = 10.0 ** jax.random.uniform(k_curv, (4,), minval=-1.0, maxval=0.0)
    return jax.random.normal(k_init, (4,)), curvature


def _loss(params, curvature, key):
    del key
    return 0.5 * jnp.sum(curvature * params**2)


PROBLEM = interpret.Problem(_sample, _loss, 12, name="quadratic")


def test_record_matches_the_closed_form_of_gradient_descent():
    lr = 0.3
    rec = interpret.record(optax.sgd(lr), PROBLEM, num_instances=3, coordinates=4, seed=5)
    assert rec.losses.shape == (3, 13) and rec.gradients.shape == (12, 12)
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(5), i))(jnp.arange(3))
    for i, key in enumerate(keys):
        k_sample, _ = jax.random.split(key)  # record's split: (instance, minibatches)
        x0, c = (np.asarray(a, np.float64) for a in _sample(k_sample))
        t = np.arange(13)[:, None]
        expected = 0.5 * np.sum(c * (x0 * (1 - lr * c) ** t) ** 2, axis=1)
        np.testing.assert_allclose(rec.losses[i], expected, rtol=1e-4)
        np.testing.assert_allclose(rec.gradients[0, 4 * i : 4 * i + 4], c * x0, rtol=1e-5)


def test_instances_are_the_same_whichever_call_draws_them():
    tx = optax.adam(0.1)
    all_five = interpret.record(tx, PROBLEM, num_instances=5, coordinates=2, seed=1)
    last_two = interpret.record(tx, PROBLEM, num_instances=2, coordinates=2, seed=1,
                                first_instance=3)  # fmt: skip
    part = all_five.instances(3, 5)
    np.testing.assert_allclose(part.losses, last_two.losses, rtol=1e-6)
    np.testing.assert_allclose(part.gradients, last_two.gradients, rtol=1e-6)
    np.testing.assert_allclose(part.states, last_two.states, rtol=1e-6)
    held = held_out_objectives(PROBLEM, {"adam": tx}, 2, 1, first_instance=3)
    np.testing.assert_allclose(held["adam"], meta_objective(last_two.losses), rtol=1e-6)


def test_meta_objective_known_value_and_divergence_cap():
    losses = np.array([[2.0, 1.0, 0.5, 9.0], [1.0, np.nan, 1e6, 0.0]])
    # ratios over the first three steps: (1, 0.5, 0.25) and (1, cap, cap)
    np.testing.assert_allclose(meta_objective(losses), (1.75 + 1 + 2e3) / 6)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="first_instance"):
        interpret.record(optax.sgd(0.1), PROBLEM, first_instance=-1)
    rec = interpret.record(optax.sgd(0.1), PROBLEM, num_instances=2, coordinates=1)
    with pytest.raises(ValueError, match="start, stop"):
        rec.instances(1, 3)
