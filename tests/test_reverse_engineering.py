"""optax_lopt.reverse_engineering: a task family's interpret.Problem and a shipped
optimizer's tuned baseline."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import interpret
import optax_lopt
from optax_lopt import baselines
from optax_lopt.reverse_engineering import make_problem, pretrained_baseline


def test_problem_samples_and_scores_the_family():
    problem, hessian_range = make_problem("linear_regression", num_steps=12)
    family = optax_lopt.tasks.family("linear_regression", num_steps=12)
    assert problem.num_steps == 12 and problem.name == "linear_regression"
    assert tuple(hessian_range) == tuple(family.eigenvalue_range)
    key = jax.random.key(3)
    params, data = problem.sample(key)
    k_task, k_init = jax.random.split(key)
    task = family.sample(k_task)
    chex.assert_trees_all_close(params, task.init(k_init))
    chex.assert_trees_all_close(data, task.data)
    loss = problem.loss(params, data, jax.random.key(0))
    chex.assert_trees_all_close(loss, family.loss_fn(task.data, params, jax.random.key(0)))
    assert (
        make_problem("rosenbrock")[0].num_steps == optax_lopt.tasks.family("rosenbrock").num_steps
    )
    assert make_problem("two_moons")[1] is None


def test_pretrained_baseline_is_the_metadata_best():
    row = optax_lopt.pretrained_metadata("rosenbrock")["evaluation"][0]
    assert row["family"] == "rosenbrock" and not row.get("family_kwargs")
    best = row["best_baseline"]
    want = baselines.make(best, **row["baseline_hyperparams"][best])
    got = pretrained_baseline("rosenbrock", "rosenbrock")
    params = {"x": jnp.asarray([1.5, -0.5])}
    grads = {"x": jnp.asarray([2.0, -3.0])}
    chex.assert_trees_all_close(
        got.update(grads, got.init(params), params)[0],
        want.update(grads, want.init(params), params)[0],
    )
    # No evaluation on another family: no baseline.
    assert pretrained_baseline("rosenbrock", "quadratic") is None


def test_unknown_family_is_refused():
    with pytest.raises(ValueError):
        make_problem("no_such_family")


@pytest.mark.slow
def test_the_analysis_finds_the_general_optimizers_secant_rule_and_its_coupling():
    # `general` RMS-normalises its features, adapts each tensor's step toward the secant's
    # line minimum (with its fast start) at a known rate, and reads whole tensors: the
    # one-coordinate fit must name that input map and rule, find a rate near the shipped one
    # and fit its updates closely, and the coupling probe must call it not component-wise.
    lopt, theta = optax_lopt.load_pretrained("general")
    shipped_rate = float(lopt.adaptation_rate(theta))
    tx = optax_lopt.pretrained("general")
    problem, _ = make_problem("digits_mlp")
    recording = interpret.record(tx, problem, num_instances=8, coordinates=16, seed=0)
    g = recording.gradients[:, np.isfinite(recording.gradients).all(0)][:, :128]
    d = interpret.distill(tx, gradients=g, schedule_steps=problem.num_steps, ablate=False)
    assert d.spec.adaptation_rule == "secant", d.description
    assert d.spec.input_map == "normalise", d.description
    assert shipped_rate / 1.5 < d.spec.adaptation[0] < shipped_rate * 1.5, (d.spec, shipped_rate)
    assert d.r2 > 0.95, d.r2
    c = interpret.coupling(tx, g)
    assert not c.component_wise and c.r2 < 0.5, c
    assert interpret.coupling(optax.adam(1e-3), g).component_wise
