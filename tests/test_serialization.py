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
    with pytest.raises(ValueError, match=r"theta\.msgpack.* is truncated, corrupt"):
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


# --- Bad paths and bad files: a ValueError that names the file and says what is wrong. ---


def _rewrite_config(path, update=None, remove=()):
    config_path = path / serialization.CONFIG_FILE
    config = json.loads(config_path.read_text())
    config.update(update or {})
    for key in remove:
        del config[key]
    config_path.write_text(json.dumps(config))


@pytest.mark.parametrize("bad", [None, 3, b"/tmp/x", ""])
def test_load_refuses_what_is_not_a_path(bad):
    with pytest.raises(ValueError, match=r"^path: expected a non-empty str or os.PathLike path"):
        optax_lopt.load(bad)


def test_missing_files_are_both_file_not_found_and_value_errors(saved, tmp_path):
    for target in (tmp_path / "nothing", saved):
        if target == saved:
            os.remove(saved / serialization.WEIGHTS_FILE)
        with pytest.raises(serialization.SavedOptimizerNotFoundError) as info:
            optax_lopt.load(target)
        assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, ValueError)
        assert str(target) in str(info.value)


def test_config_of_random_bytes(saved):
    config_path = saved / serialization.CONFIG_FILE
    config_path.write_bytes(np.random.default_rng(0).bytes(200) + b"\xff")
    with pytest.raises(ValueError, match="is not UTF-8 text") as info:
        optax_lopt.load(saved)
    assert str(config_path) in str(info.value)


@pytest.mark.parametrize("content", ["[1, 2]", '"config"', "3", "null"])
def test_config_that_is_json_but_not_an_object(saved, content):
    (saved / serialization.CONFIG_FILE).write_text(content)
    with pytest.raises(ValueError, match=r"config\.json': expected a JSON object, got"):
        optax_lopt.load(saved)


def test_config_without_format_version(saved):
    _rewrite_config(saved, remove=["format_version"])
    with pytest.raises(ValueError, match=r"config\.json' has no 'format_version' field"):
        optax_lopt.load(saved)


@pytest.mark.parametrize("version", ["1", 1.5, True])
def test_format_version_must_be_the_integer(saved, version):
    _rewrite_config(saved, {"format_version": version})
    with pytest.raises(ValueError, match=f"has format_version {version!r}"):
        optax_lopt.load(saved)


@pytest.mark.parametrize(
    "update, match",
    [
        ({"architecture": 3}, r"field 'architecture' expected a JSON string, got 3"),
        ({"config": [1]}, r"field 'config' expected a JSON object, got \[1\]"),
        ({"metadata": "x"}, r"field 'metadata' expected a JSON object"),
        ({"config": {"hidden_size": 4, "no_such": 1}}, r"does not describe an architecture"),
        ({"config": {"hidden_size": -4}}, r"does not describe an architecture: hidden_size"),
    ],
)
def test_config_fields_are_checked(saved, update, match):
    _rewrite_config(saved, update)
    with pytest.raises(ValueError, match=match) as info:
        optax_lopt.load(saved)
    assert str(saved / serialization.CONFIG_FILE) in str(info.value)


def test_corrupt_weights_of_the_same_length(saved):
    weights = saved / serialization.WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0x01  # One bit of one array: msgpack itself would not notice.
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="SHA-256 differs") as info:
        optax_lopt.load(saved)
    assert str(weights) in str(info.value)


def test_weights_from_another_save_are_refused(saved, tmp_path):
    lopt = optax_lopt.ComponentwiseRNN(hidden_size=4)
    optax_lopt.save(tmp_path / "other", lopt, lopt.init(jax.random.key(1)))
    other = (tmp_path / "other" / serialization.WEIGHTS_FILE).read_bytes()
    (saved / serialization.WEIGHTS_FILE).write_bytes(other)
    with pytest.raises(ValueError, match="not the one saved"):
        optax_lopt.load(saved)


@pytest.mark.parametrize("data", [b"\x01", b"\x93\x01\x02\x03", b"\xc1", b""])
def test_garbage_weights_without_a_recorded_digest(saved, data):
    _rewrite_config(saved, remove=["weights_sha256"])  # As configs written before it was.
    (saved / serialization.WEIGHTS_FILE).write_bytes(data)
    with pytest.raises(ValueError, match=r"theta\.msgpack' is truncated or corrupt"):
        optax_lopt.load(saved)


def test_config_without_digest_still_loads(saved):
    _rewrite_config(saved, remove=["weights_sha256"])
    lopt, theta = optax_lopt.load(saved)
    assert lopt == optax_lopt.ComponentwiseRNN(hidden_size=4)
    chex.assert_trees_all_equal(theta, lopt.init(jax.random.key(0)))


# --- save refuses a theta that is not lopt's, and directories it did not write. ---


def test_save_refuses_theta_of_another_configuration(tmp_path):
    lopt = optax_lopt.ComponentwiseRNN(hidden_size=4)
    theta = optax_lopt.ComponentwiseRNN(hidden_size=5).init(jax.random.key(0))
    with pytest.raises(ValueError, match=r"^theta\['cell'\]\['b'\]: expected shape \(12,\)"):
        optax_lopt.save(tmp_path / "opt", lopt, theta)
    assert not (tmp_path / "opt").exists()


def test_save_refuses_theta_of_another_architecture(tmp_path):
    lopt = optax_lopt.ComponentwiseRNN(hidden_size=4)
    theta = optax_lopt.LearnableSGDM().init(jax.random.key(0))
    with pytest.raises(ValueError, match=r"tree structure of ComponentwiseRNN.init\(key\)"):
        optax_lopt.save(tmp_path / "opt", lopt, theta)


def test_save_names_the_first_missing_or_extra_leaf(tmp_path):
    lopt = optax_lopt.LearnableSGDM()
    theta = lopt.init(jax.random.key(0))
    missing = {k: v for k, v in theta.items() if k != "log_learning_rate"}
    with pytest.raises(ValueError, match=r"missing leaf theta\['log_learning_rate'\]"):
        optax_lopt.save(tmp_path / "opt", lopt, missing)
    with pytest.raises(ValueError, match=r"unexpected leaf theta\['zz'\]"):
        optax_lopt.save(tmp_path / "opt", lopt, {**theta, "zz": np.zeros(())})


def test_save_refuses_another_dtype(tmp_path):
    lopt = optax_lopt.LearnableSGDM()
    theta = {k: np.asarray(v, np.float64) for k, v in lopt.init(jax.random.key(0)).items()}
    with pytest.raises(ValueError, match=r"expected shape \(\) and dtype float32.*float64"):
        optax_lopt.save(tmp_path / "opt", lopt, theta)


def test_save_refuses_a_foreign_non_empty_directory(tmp_path):
    lopt = optax_lopt.ComponentwiseRNN(hidden_size=4)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"non-empty directory that save\(\) did not write") as e:
        optax_lopt.save(tmp_path, lopt, lopt.init(jax.random.key(0)))
    assert "'notes.txt'" in str(e.value)
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"]


def test_save_refuses_a_config_it_did_not_write(tmp_path):
    lopt = optax_lopt.ComponentwiseRNN(hidden_size=4)
    (tmp_path / serialization.CONFIG_FILE).write_text('{"learning_rate": 1}')
    with pytest.raises(ValueError, match="Refusing to overwrite"):
        optax_lopt.save(tmp_path, lopt, lopt.init(jax.random.key(0)))
    assert (tmp_path / serialization.CONFIG_FILE).read_text() == '{"learning_rate": 1}'


def test_save_refuses_an_existing_file(tmp_path):
    lopt = optax_lopt.ComponentwiseRNN(hidden_size=4)
    (tmp_path / "opt").write_text("x")
    with pytest.raises(ValueError, match="got the existing file"):
        optax_lopt.save(tmp_path / "opt", lopt, lopt.init(jax.random.key(0)))


def test_save_overwrites_an_earlier_save(saved):
    lopt = optax_lopt.ComponentwiseRNN(hidden_size=6, cell="lstm")
    theta = lopt.init(jax.random.key(3))
    optax_lopt.save(saved, lopt, theta, metadata={"run": 2})
    loaded, loaded_theta = optax_lopt.load(saved)
    assert loaded == lopt
    chex.assert_trees_all_equal(loaded_theta, theta)
    assert sorted(os.listdir(saved)) == sorted(serialization._OWN_FILES)


def test_save_completes_an_interrupted_save(saved):
    os.remove(saved / serialization.CONFIG_FILE)  # As a crash between the two renames leaves it.
    (saved / f"{serialization.CONFIG_FILE}.tmp-123").write_text("{")
    with pytest.raises(serialization.SavedOptimizerNotFoundError, match="interrupted"):
        optax_lopt.load(saved)
    lopt = optax_lopt.ComponentwiseRNN(hidden_size=4)
    optax_lopt.save(saved, lopt, lopt.init(jax.random.key(0)))
    assert optax_lopt.load(saved)[0] == lopt


def test_save_refuses_metadata_that_is_not_json(tmp_path):
    lopt = optax_lopt.ComponentwiseRNN(hidden_size=4)
    theta = lopt.init(jax.random.key(0))
    with pytest.raises(ValueError, match="metadata: expected JSON-serialisable values"):
        optax_lopt.save(tmp_path / "opt", lopt, theta, metadata={"f": object()})
    with pytest.raises(ValueError, match=r"metadata: expected a dict or None, got \['a'\]"):
        optax_lopt.save(tmp_path / "opt", lopt, theta, metadata=["a"])
    assert not (tmp_path / "opt").exists()
