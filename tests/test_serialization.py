"""save/load: bit-exact round trips and errors that say what is wrong."""

from __future__ import annotations

import json
import os

import chex
import jax
import numpy as np
import pytest

import optax_lopt
from optax_lopt import serialization


def test_round_trip_is_bit_exact(case, tmp_path):
    lopt, theta, _ = case
    optax_lopt.save(tmp_path / "opt", lopt, theta, metadata={"command": "python x.py"})
    loaded_lopt, loaded_theta = optax_lopt.load(tmp_path / "opt")
    assert loaded_lopt == lopt
    chex.assert_trees_all_equal_structs(loaded_theta, theta)
    for a, b in zip(jax.tree.leaves(loaded_theta), jax.tree.leaves(theta), strict=True):
        assert np.asarray(a).dtype == np.asarray(b).dtype
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
    assert serialization.read_config(tmp_path / "opt")["metadata"]["command"] == "python x.py"


@pytest.fixture
def saved(tmp_path):
    lopt = optax_lopt.ComponentwiseRNN(hidden_size=4)
    path = tmp_path / "opt"
    optax_lopt.save(path, lopt, lopt.init(jax.random.key(0)))
    return path


def test_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="path"):
        optax_lopt.load(tmp_path / "nothing")


def test_missing_weights(saved):
    os.remove(saved / serialization.WEIGHTS_FILE)
    with pytest.raises(FileNotFoundError, match="no weights file"):
        optax_lopt.load(saved)


def test_truncated_weights(saved):
    weights = saved / serialization.WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:-40])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        optax_lopt.load(saved)


def test_wrong_version(saved):
    config_path = saved / serialization.CONFIG_FILE
    config = json.loads(config_path.read_text())
    config["format_version"] = 99
    config_path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match="format_version 99"):
        optax_lopt.load(saved)


def test_shape_mismatch(saved):
    config_path = saved / serialization.CONFIG_FILE
    config = json.loads(config_path.read_text())
    config["config"]["hidden_size"] = 5
    config_path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match="expected shape"):
        optax_lopt.load(saved)


def test_unknown_architecture(saved):
    config_path = saved / serialization.CONFIG_FILE
    config = json.loads(config_path.read_text())
    config["architecture"] = "NoSuchOptimizer"
    config_path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match="architecture"):
        optax_lopt.load(saved)


def test_save_rejects_non_optimizers(tmp_path):
    with pytest.raises(TypeError, match="lopt"):
        optax_lopt.save(tmp_path / "x", "adam", {})
