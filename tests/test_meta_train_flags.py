"""Tests of examples/meta_train.py's reproduction flags: architecture config, cosine decay,
and the command recorded with the final weights."""

from __future__ import annotations

import dataclasses
import shlex

import chex
import jax
import jax.numpy as jnp
import optax
import pytest
from _examples import load_example

import optax_lopt


def test_architecture_config_reaches_the_constructor():
    example = load_example("meta_train")
    config = example.Config(
        architecture="ComponentwiseRNN",
        architecture_config='{"hidden_size": 7, "preprocessing": "log1p-sign"}',
    )
    assert example.build_lopt(config) == optax_lopt.ComponentwiseRNN(
        hidden_size=7, preprocessing="log1p-sign"
    )


@pytest.mark.parametrize(
    "text, match",
    [("[1, 2]", "JSON object"), ("{bad", "JSON object"), ('{"nope": 1}', "nope")],
)
def test_bad_architecture_config_names_the_flag(text, match):
    example = load_example("meta_train")
    config = example.Config(architecture="ComponentwiseRNN", architecture_config=text)
    with pytest.raises(ValueError, match="architecture_config") as info:
        example.build_lopt(config)
    assert match in str(info.value)


def test_cosine_decay_follows_optax_schedule():
    # Adam's first step has magnitude lr_t per coordinate (sign-like), so the step sizes
    # read back the schedule: lr at step 0, alpha * lr at the end.
    example = load_example("meta_train")
    config = example.Config(
        meta_learning_rate=0.1, meta_lr_decay="cosine", meta_lr_alpha=0.2, num_outer_steps=10
    )
    tx = example.build_meta_optimizer(config)
    params = jnp.zeros(3)
    state = tx.init(params)
    sizes = []
    for _ in range(11):
        updates, state = tx.update(jnp.ones(3), state, params)
        sizes.append(float(-updates[0]))
    expected = optax.cosine_decay_schedule(0.1, 10, alpha=0.2)
    chex.assert_trees_all_close(
        jnp.asarray(sizes), jnp.asarray([expected(t) for t in range(11)]), rtol=1e-4
    )
    assert sizes[-1] == pytest.approx(0.02, rel=1e-4)
    constant = example.build_meta_optimizer(example.Config(meta_learning_rate=0.1))
    updates, _ = constant.update(jnp.ones(3), constant.init(params), params)
    chex.assert_trees_all_close(updates, -0.1 * jnp.ones(3), rtol=1e-4)


def test_bad_decay_settings_raise():
    example = load_example("meta_train")
    with pytest.raises(ValueError, match="meta_lr_decay"):
        example.build_meta_optimizer(example.Config(meta_lr_decay="linear"))
    with pytest.raises(ValueError, match="meta_lr_alpha"):
        example.build_meta_optimizer(example.Config(meta_lr_decay="cosine", meta_lr_alpha=2.0))


def test_command_round_trips_every_weight_relevant_setting():
    example = load_example("meta_train")
    config = example.Config(
        task="rosenbrock",
        architecture="ComponentwiseRNN",
        architecture_config='{"hidden_size": 64, "preprocessing": "log1p-sign"}',
        estimator="truncated_bptt",
        num_outer_steps=17,
        num_tasks=4,
        truncation_length=9,
        meta_lr_decay="cosine",
        meta_lr_alpha=0.1,
        workdir="/tmp/some dir",
    )
    argv = shlex.split(example.command(config))
    assert argv[:2] == ["python", "examples/meta_train.py"]
    flags = dict(a[2:].split("=", 1) for a in argv[2:])
    assert flags["architecture_config"] == config.architecture_config
    assert flags["workdir"] == "/tmp/some dir"
    for name in ("task", "estimator", "num_outer_steps", "num_tasks", "truncation_length"):
        assert flags[name] == str(getattr(config, name))
    assert flags["meta_lr_decay"] == "cosine" and float(flags["meta_lr_alpha"]) == 0.1
    assert "horizon" not in flags  # None: the task's default


def test_final_weights_record_the_command(tmp_path):
    example = load_example("meta_train")
    config = example.Config(
        task="rosenbrock",
        architecture="ComponentwiseRNN",
        architecture_config='{"hidden_size": 4}',
        estimator="truncated_bptt",
        num_outer_steps=3,
        num_tasks=2,
        truncation_length=5,
        meta_lr_decay="cosine",
        workdir=str(tmp_path),
        progress=False,
    )
    lopt, theta, records = example.run(config)
    assert len(records) == 3 and lopt.hidden_size == 4
    loaded_lopt, loaded = optax_lopt.load(tmp_path / "final")
    assert loaded_lopt == lopt
    chex.assert_trees_all_close(loaded, theta)
    metadata = optax_lopt.serialization.read_config(tmp_path / "final")["metadata"]
    assert metadata["command"] == example.command(config)
    assert metadata["meta_train_config"]["architecture_config"] == '{"hidden_size": 4}'


def _tiny(tmp_path, **overrides):
    example = load_example("meta_train")
    settings = dict(
        task="rosenbrock",
        architecture="LearnableSGDM",
        estimator="truncated_bptt",
        num_outer_steps=2,
        num_tasks=2,
        truncation_length=3,
        workdir=str(tmp_path),
        progress=False,
    )
    return example.Config(**{**settings, **overrides})


@pytest.mark.parametrize("flag, value", [("task", "rosenbrok"), ("estimator", "pess")])
def test_bad_flag_values_name_the_flag_and_list_the_valid_values(tmp_path, flag, value):
    example = load_example("meta_train")
    with pytest.raises(ValueError, match=f"--{flag}") as info:
        example.run(_tiny(tmp_path, **{flag: value}))
    assert ("rosenbrock" if flag == "task" else "'pes'") in str(info.value)


def test_help_lists_the_valid_values():
    from absl import flags

    example = load_example("meta_train")
    values = flags.FlagValues()
    example.define_flags(example.Config, flag_values=values)
    text = values.get_help()
    for name in ("linear_regression", "rosenbrock", "truncated_bptt", "hybrid", "MLPLOpt"):
        assert name in text, name
    assert values["estimator"].default == example.Config().estimator


def test_resume_with_another_flag_names_the_flag(tmp_path, capsys):
    example = load_example("meta_train")
    example.run(_tiny(tmp_path))
    for flag, value in (("estimator", "truncated_es"), ("architecture", "LearnableAdam")):
        with pytest.raises(ValueError, match=f"--{flag}") as info:
            example.run(_tiny(tmp_path, num_outer_steps=3, **{flag: value}))
        assert len(str(info.value).splitlines()) == 1, str(info.value)
    capsys.readouterr()
    example.run(_tiny(tmp_path, num_outer_steps=3, progress=True))  # the same flags resume
    assert "from the checkpoint at step 2." in capsys.readouterr().err


def test_init_from_starts_the_run_at_the_saved_weights(tmp_path):
    # With a meta learning rate of 0 the run ends where it starts: at the saved weights,
    # not at the fresh init a run without --init_from ends at.
    example = load_example("meta_train")
    lopt = optax_lopt.LearnableSGDM()
    start = jax.tree.map(lambda x: x + 0.25, lopt.init(jax.random.key(7)))
    optax_lopt.save(tmp_path / "start", lopt, start)
    fresh = _tiny(tmp_path / "fresh", meta_learning_rate=0.0)
    _, fresh_theta, _ = example.run(fresh)
    config = dataclasses.replace(
        fresh, workdir=str(tmp_path / "phase2"), init_from=str(tmp_path / "start")
    )
    _, theta, records = example.run(config)
    assert len(records) == 2
    chex.assert_trees_all_close(theta, start)
    with pytest.raises(AssertionError):
        chex.assert_trees_all_close(fresh_theta, start)
    metadata = optax_lopt.serialization.read_config(tmp_path / "phase2" / "final")["metadata"]
    sha = optax_lopt.serialization.read_config(tmp_path / "start")["weights_sha256"]
    assert metadata["init_from_weights_sha256"] == sha
    assert f"--init_from={tmp_path / 'start'}" in metadata["command"]


def test_init_from_weights_of_another_architecture_names_the_flag(tmp_path):
    example = load_example("meta_train")
    optax_lopt.save(
        tmp_path / "adam",
        optax_lopt.LearnableAdam(),
        optax_lopt.LearnableAdam().init(jax.random.key(0)),
    )
    config = _tiny(tmp_path / "run", init_from=str(tmp_path / "adam"))
    with pytest.raises(ValueError, match="init_from") as info:
        example.run(config)
    assert "LearnableAdam" in str(info.value) and "LearnableSGDM" in str(info.value)
