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


def test_numpy_integers_are_accepted_like_ints(tmp_path):
    a = np.asarray(jax.random.key_data(evaluation.instance_keys("tune", np.int64(3))))
    b = np.asarray(jax.random.key_data(evaluation.instance_keys("tune", 3)))
    np.testing.assert_array_equal(a, b)
    family = tasks.family("rosenbrock", num_steps=5)
    losses = evaluation.run_on_instances(
        optax.sgd(1e-3), family, evaluation.instance_keys("test", 2), num_steps=np.int32(4)
    )
    chex.assert_shape(losses, (2, 5))
    # The tuning cache is JSON: NumPy integers used to reach json.dumps and fail there.
    result = baselines.tune(
        family,
        "sgdm",
        learning_rates=(np.float32(1e-3),),
        grid={"momentum": (np.float64(0.0),)},
        num_instances=np.int64(2),
        num_steps=np.int64(3),
        cache_dir=str(tmp_path),
    )
    assert result.hyperparams == {"learning_rate": float(np.float32(1e-3)), "momentum": 0.0}
    assert type(result.hyperparams["learning_rate"]) is float


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: evaluation.instance_keys("test", 0), r"^num_instances: expected a positive"),
        (lambda: evaluation.instance_keys("test", True), r"^num_instances: expected a positive"),
        (lambda: evaluation.instance_keys("train", 2), r"^split: expected one of 'test', 'tune'"),
        (
            lambda: evaluation.run_on_instances("adam", tasks.Rosenbrock(), None),
            r"^tx: expected an optax.GradientTransformation, got str",
        ),
        (
            lambda: evaluation.run_on_instances(optax.sgd(1.0), "rosenbrock", None),
            r"^family: expected a TaskFamily, got str",
        ),
        (
            lambda: evaluation.evaluate({"a": optax.sgd(1.0)}, tasks.Rosenbrock(), num_steps="5"),
            r"^num_steps: expected a positive integer, got '5'",
        ),
        (
            lambda: evaluation.evaluate({"a": optax.adam}, tasks.Rosenbrock()),
            r"^optimizers\['a'\]: expected an optax.GradientTransformation, got function",
        ),
        (
            lambda: evaluation.evaluate([optax.sgd(1.0)], tasks.Rosenbrock()),
            r"^optimizers: expected a mapping label -> optax transformation, got list",
        ),
    ],
)
def test_evaluation_names_the_bad_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"optimizer": "lion"}, r"^optimizer: expected one of 'sgdm', 'rmsprop', 'adam'; got"),
        ({"learning_rates": 0.1}, r"^learning_rates: expected a non-empty sequence of numbers"),
        ({"learning_rates": ()}, r"^learning_rates: expected a non-empty sequence of numbers"),
        ({"learning_rates": (0.1, "1e-2")}, r"^learning_rates\[1\]: expected a finite positive"),
        ({"learning_rates": (float("nan"),)}, r"^learning_rates\[0\]: expected a finite positive"),
        ({"grid": {"momentum": 0.9}}, r"^grid\['momentum'\]: expected a non-empty sequence"),
        ({"grid": {"momentum": ("0.9",)}}, r"^grid\['momentum'\]\[0\]: expected a finite number"),
        ({"num_instances": 2.0}, r"^num_instances: expected a positive integer, got 2.0"),
        ({"num_steps": 0}, r"^num_steps: expected a positive integer, got 0"),
        ({"family": "rosenbrock"}, r"^family: expected a TaskFamily, got str"),
    ],
)
def test_tune_names_the_bad_argument(kwargs, match):
    args = {"family": tasks.Rosenbrock(), "optimizer": "sgdm", **kwargs}
    with pytest.raises(ValueError, match=match):
        baselines.tune(**args)


def test_make_checks_hyperparameters():
    tx = baselines.make("sgdm", learning_rate=np.float32(0.5), momentum=0.0)
    updates, _ = tx.update(jnp.ones(2), tx.init(jnp.zeros(2)))
    np.testing.assert_allclose(updates, -0.5)
    with pytest.raises(ValueError, match=r"^hyperparams: expected \['learning_rate', 'b1', 'b2'\]"):
        baselines.make("adam", learning_rate=1e-3)
    with pytest.raises(ValueError, match=r"^momentum: expected a finite number, got '0.9'"):
        baselines.make("sgdm", learning_rate=0.1, momentum="0.9")
    with pytest.raises(ValueError, match=r"^learning_rate: expected a finite positive number"):
        baselines.make("rmsprop", learning_rate=-1.0, decay=0.9)


def test_compare_names_the_bad_argument():
    family = tasks.Rosenbrock()
    with pytest.raises(ValueError, match=r"^optimizers: expected a non-empty sequence"):
        baselines.compare({}, family, optimizers="sgdm")
    with pytest.raises(ValueError, match=r"^optimizers\[1\]: expected one of 'sgdm'"):
        baselines.compare({}, family, optimizers=("sgdm", "lion"))
    with pytest.raises(ValueError, match=r"^candidates\['x'\]: expected an optax"):
        baselines.compare({"x": "adam"}, family, optimizers=("sgdm",))
    with pytest.raises(ValueError, match=r"^num_tuning_instances: expected a positive integer"):
        baselines.compare({}, family, optimizers=("sgdm",), num_tuning_instances=0)
