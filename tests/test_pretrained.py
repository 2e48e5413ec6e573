"""Tests of the shipped paper optimizers (`optax_lopt.pretrained`)."""

from __future__ import annotations

import json
import shlex

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_lopt
import optax_lopt.tasks
from optax_lopt import evaluation

# "general" (an MLPLOpt trained on a mix of families) has its own tests: test_general.py.
NAMES = tuple(n for n in optax_lopt.pretrained_names() if n != "general")
# Family settings each shipped optimizer must make progress on within a few steps: its own
# family and one at another size or horizon.
SETTINGS = {
    "linear_regression": [{}, {"dim": 20}],
    "rosenbrock": [{}, {"num_steps": 400}],
    "two_moons": [{"num_points": 256}, {"num_points": 256, "hidden_sizes": (64, 64)}],
}


def test_paper_optimizers_are_shipped():
    assert {"linear_regression", "rosenbrock", "two_moons"} <= set(NAMES)
    assert set(NAMES) <= set(SETTINGS)


@pytest.mark.parametrize("name", NAMES)
def test_pretrained_is_the_loaded_transform(name):
    lopt, theta = optax_lopt.load_pretrained(name)
    assert isinstance(lopt, optax_lopt.ComponentwiseRNN)
    tx = optax_lopt.pretrained(name)
    assert isinstance(tx, optax.GradientTransformationExtraArgs)
    params = {"w": jnp.linspace(-1.0, 1.0, 6).reshape(2, 3)}
    grads = {"w": jnp.linspace(0.5, -2.0, 6).reshape(2, 3)}
    got, _ = tx.update(grads, tx.init(params), params, value=jnp.asarray(1.0))
    ref_tx = lopt.transform(theta)
    want, _ = ref_tx.update(grads, ref_tx.init(params), params, value=jnp.asarray(1.0))
    chex.assert_trees_all_close(got, want)
    chex.assert_tree_all_finite(got)


@pytest.mark.parametrize("name", NAMES)
def test_metadata_records_the_reproducing_command(name):
    lopt, _ = optax_lopt.load_pretrained(name)
    metadata = optax_lopt.pretrained_metadata(name)
    argv = shlex.split(metadata["command"])
    assert argv[:2] == ["python", "examples/meta_train.py"]
    flags = dict(a[2:].split("=", 1) for a in argv[2:])
    assert flags["task"] == name
    assert flags["architecture"] == type(lopt).__name__
    # The recorded architecture arguments rebuild exactly the shipped architecture.
    rebuilt = optax_lopt.from_config(
        flags["architecture"], {**lopt.config(), **json.loads(flags["architecture_config"])}
    )
    assert rebuilt == lopt
    assert metadata["meta_train_config"]["task"] == name
    # The held-out evaluation shipped with the weights: the default family comes first.
    first = metadata["evaluation"][0]
    assert first["family"] == name and first["family_kwargs"] == {}
    assert first["num_instances"] >= 128
    # Issue target, as measured when shipped: at least 20% below the best tuned baseline.
    assert first["relative_to_best"] <= -0.2, first["objectives"]
    assert first["objectives"]["learned"] < min(
        v for k, v in first["objectives"].items() if k != "learned"
    )


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("setting", [0, 1])
def test_lowers_the_loss_on_unseen_instances(name, setting):
    kwargs = SETTINGS[name][setting]
    family = optax_lopt.tasks.family(name, **kwargs)
    keys = jax.random.split(jax.random.key(1234), 4)  # neither the train nor the test split
    losses = np.asarray(
        evaluation.run_on_instances(optax_lopt.pretrained(name), family, keys, num_steps=60)
    )
    assert np.all(np.isfinite(losses))
    assert np.all(losses[:, -1] < 0.5 * losses[:, 0]), losses[:, [0, -1]]


def test_unknown_name_lists_the_shipped_ones():
    with pytest.raises(ValueError, match="name") as info:
        optax_lopt.pretrained("no_such_task")
    for name in NAMES:
        assert name in str(info.value)
    with pytest.raises(ValueError, match="name"):
        optax_lopt.load_pretrained(3)
    with pytest.raises(ValueError, match="name"):
        optax_lopt.pretrained_metadata("../linear_regression")


@pytest.mark.parametrize(
    "typed, name",
    [
        ("Rosenbrock", "rosenbrock"),
        ("linear-regression", "linear_regression"),
        (" TWO_MOONS ", "two_moons"),
        ("Linear Regression", "linear_regression"),
    ],
)
def test_names_are_accepted_in_any_case_and_with_dashes(typed, name):
    assert optax_lopt.pretrained_metadata(typed) == optax_lopt.pretrained_metadata(name)
    lopt, theta = optax_lopt.load_pretrained(typed)
    want_lopt, want_theta = optax_lopt.load_pretrained(name)
    assert lopt == want_lopt
    chex.assert_trees_all_equal(theta, want_theta)
    assert isinstance(optax_lopt.pretrained(typed), optax.GradientTransformationExtraArgs)


@pytest.mark.parametrize(
    "fn", [optax_lopt.pretrained, optax_lopt.load_pretrained, optax_lopt.pretrained_metadata]
)
def test_a_misspelt_name_gets_the_close_one_suggested(fn):
    with pytest.raises(ValueError, match=r"got 'rosenbrok'\. Did you mean 'rosenbrock'\?$") as e:
        fn("rosenbrok")
    assert all(repr(n) in str(e.value) for n in optax_lopt.pretrained_names())
    with pytest.raises(ValueError, match=r"got 'adam'\.$"):  # Nothing close: no suggestion.
        fn("adam")
    with pytest.raises(ValueError, match=r"\(a str\), got None \(NoneType\)"):
        fn(None)
