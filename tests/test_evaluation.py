"""Evaluation harness and baseline tuner: known answers on small problems."""

from __future__ import annotations

import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from optax_lopt import baselines, evaluation, tasks


def test_split_keys_are_disjoint_and_deterministic():
    tune = np.asarray(jax.random.key_data(evaluation.instance_keys("tune", 64)))
    test = np.asarray(jax.random.key_data(evaluation.instance_keys("test", 64)))
    assert not {tuple(k) for k in tune} & {tuple(k) for k in test}
    again = np.asarray(jax.random.key_data(evaluation.instance_keys("test", 64)))
    np.testing.assert_array_equal(test, again)
    with pytest.raises(ValueError, match="split"):
        evaluation.instance_keys("train", 3)


def test_run_matches_a_hand_written_loop():
    family = tasks.family("rosenbrock", num_steps=10)
    key = evaluation.instance_keys("test", 1)
    losses = evaluation.run_on_instances(optax.sgd(1e-3), family, key)
    chex.assert_shape(losses, (1, 11))
    k_task, k_init, _ = jax.random.split(key[0], 3)
    task = family.sample(k_task)
    x = task.init(k_init)
    expected = []
    for _ in range(10):
        loss, g = jax.value_and_grad(task.loss)(x, None)
        expected.append(loss)
        x = x - 1e-3 * g
    expected.append(task.loss(x, None))
    chex.assert_trees_all_close(losses[0], jnp.stack(expected), rtol=1e-5)


def test_objective_of_a_frozen_optimizer_is_one(tmp_path):
    family = tasks.family("linear_regression", num_steps=20)
    results = evaluation.evaluate(
        {"frozen": optax.sgd(0.0), "sgd": optax.sgd(0.5)}, family, num_instances=8
    )
    np.testing.assert_allclose(results["frozen"].objectives, 1.0, rtol=1e-6)
    assert results["sgd"].objective < 0.9
    assert results["sgd"].objective_sem > 0
    chex.assert_shape(results["sgd"].mean_curve, (21,))
    path = os.path.join(tmp_path, "curves.png")
    evaluation.plot_loss_curves(results, path, title="linear regression")
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_tuner_picks_the_fastest_stable_learning_rate(tmp_path):
    """Eigenvalues lie in [1e-3, 1]: lr 1 is stable and fastest, lr 100 diverges."""
    family = tasks.family("linear_regression", num_steps=20)
    result = baselines.tune(
        family,
        "sgdm",
        learning_rates=(1e-3, 1e-1, 1.0, 100.0),
        grid={"momentum": (0.0,)},
        num_instances=4,
        cache_dir=str(tmp_path),
    )
    assert result.hyperparams == {"learning_rate": 1.0, "momentum": 0.0}
    scores = {row[0]["learning_rate"]: row[1] for row in result.table}
    assert scores[100.0] > 500.0  # diverged steps count as the 1e3 clip
    assert scores[1e-3] > scores[1e-1] > scores[1.0]
    cached = baselines.tune(
        family,
        "sgdm",
        learning_rates=(1e-3, 1e-1, 1.0, 100.0),
        grid={"momentum": (0.0,)},
        num_instances=4,
        cache_dir=str(tmp_path),
    )
    assert cached == result
    assert len(os.listdir(tmp_path)) == 1


def test_tuner_rejects_bad_input():
    family = tasks.family("rosenbrock")
    with pytest.raises(ValueError, match="optimizer"):
        baselines.tune(family, "lion")
    with pytest.raises(ValueError, match="grid"):
        baselines.tune(family, "adam", grid={"b1": (0.9,)})
    with pytest.raises(ValueError, match="learning_rates"):
        baselines.tune(family, "sgdm", learning_rates=(0.0,))


def test_compare_scores_candidates_against_the_tuned_baseline():
    family = tasks.family("linear_regression", num_steps=20)
    comparison = baselines.compare(
        {"same_as_tuned": optax.sgd(1.0), "slow": optax.sgd(1e-2)},
        family,
        optimizers=("sgdm",),
        learning_rates=(1e-2, 1.0),
        grids={"sgdm": {"momentum": (0.0,)}},
        num_instances=8,
        num_tuning_instances=4,
    )
    assert comparison.best_baseline == "sgdm"
    assert comparison.hyperparams["sgdm"] == {"learning_rate": 1.0, "momentum": 0.0}
    np.testing.assert_allclose(comparison.relative_to_best("same_as_tuned"), 0.0, atol=1e-6)
    assert comparison.relative_to_best("slow") > 0.5
    with pytest.raises(ValueError, match="candidates"):
        baselines.compare({"sgdm": optax.sgd(1.0)}, family, optimizers=("sgdm",))
    with pytest.raises(ValueError, match="optimizers"):
        baselines.compare({}, family, optimizers=("lion",))


def test_plot_panels_writes_one_png(tmp_path):
    family = tasks.family("rosenbrock", num_steps=10)
    results = evaluation.evaluate({"sgd": optax.sgd(1e-3)}, family, num_instances=4)
    path = os.path.join(tmp_path, "panels.png")
    evaluation.plot_panels({"a": results, "b": results}, path)
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="panels"):
        evaluation.plot_panels({}, path)
