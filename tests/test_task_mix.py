"""Tests of optax_lopt.tasks.mixes and examples/meta_train.py's --task_mix flag."""

from __future__ import annotations

import json
import shlex

import chex
import jax
import pytest
from _examples import load_example

import optax_lopt
import optax_lopt.tasks
from optax_lopt.meta import Mixture

_MIX = (
    '[{"family": "quadratic", "kwargs": {"dim": 3, "num_steps": 10}, "reparameterize": true},'
    ' {"family": "rosenbrock", "kwargs": {"num_steps": 10}, "weight": 3}]'
)


def test_general_preset_builds_every_family():
    components = optax_lopt.tasks.task_mix("general")
    assert components == optax_lopt.tasks.GENERAL_MIX
    names = [c.name for c in components]
    assert len(set(names)) == len(names)
    built = {c.name: c.build() for c in components}
    assert isinstance(built["rosenbrock"], optax_lopt.tasks.Rosenbrock)
    digits = built["digits_mlp_aug"]
    assert isinstance(digits, optax_lopt.tasks.Reparameterized)
    assert digits.scale_range == (0.3, 3.0)
    assert isinstance(digits.base, optax_lopt.tasks.DigitsMLP)


def test_parse_json_list_and_round_trip():
    components = optax_lopt.tasks.parse_mix(_MIX)
    assert [c.name for c in components] == ["quadratic_aug", "rosenbrock"]
    assert components[0].build() == optax_lopt.tasks.family(
        "quadratic", reparameterize=True, dim=3, num_steps=10
    )
    assert components[1].weight == 3.0
    again = optax_lopt.tasks.parse_mix(json.dumps([c.to_json() for c in components]))
    assert again == components


@pytest.mark.parametrize(
    "spec, match",
    [
        ("nope", "name"),
        ("[", "spec"),
        ("[]", "spec"),
        ('[{"family": "quadratic", "colour": 1}]', "spec"),
        ('[{"family": "cubic"}]', "family"),
        ('[{"family": "quadratic", "weight": -1}]', "weight"),
        ('[{"family": "quadratic", "reparameterize": [3, 1]}]', "reparameterize"),
        ('[{"family": "quadratic"}, {"family": "quadratic"}]', "distinct"),
        ('[{"family": "quadratic", "weight": 0}]', "not all zero"),
    ],
)
def test_bad_mix_names_the_problem(spec, match):
    with pytest.raises(ValueError, match=match):
        optax_lopt.tasks.parse_mix(spec)


def test_task_mix_flag_builds_a_weighted_mixture():
    example = load_example("meta_train")
    config = example.Config(task_mix=_MIX, estimator="pes", num_tasks=2, truncation_length=3)
    lopt = example.build_lopt(config)
    est = example.build_estimator(config, lopt)
    assert isinstance(est, Mixture)
    assert est.names == ("quadratic_aug", "rosenbrock")
    chex.assert_trees_all_close(est.weights, (0.25, 0.75))
    assert [e.num_tasks for e in est.estimators] == [2, 2]
    assert [e.truncation_length for e in est.estimators] == [3, 3]
    assert est.estimators[1].family == optax_lopt.tasks.Rosenbrock(num_steps=10)
    flags = dict(a[2:].split("=", 1) for a in shlex.split(example.command(config))[2:])
    assert flags["task_mix"] == _MIX
    assert "task" not in flags  # unused with --task_mix
    assert "task_mix" not in example.command(example.Config())
    with pytest.raises(ValueError, match="task_mix"):
        example.build_estimator(example.Config(task_mix="[{}]"), lopt)


def test_task_mix_run_reports_every_component(tmp_path):
    example = load_example("meta_train")
    config = example.Config(
        task_mix=_MIX,
        architecture="MLPLOpt",
        architecture_config='{"timescales": [1, 10]}',
        estimator="pes",
        num_outer_steps=2,
        num_tasks=2,
        truncation_length=3,
        workdir=str(tmp_path),
        progress=False,
    )
    lopt, theta, records = example.run(config)
    assert lopt.timescales == (1, 10)
    assert len(records) == 2
    for name in ("quadratic_aug", "rosenbrock"):
        assert all(jax.numpy.isfinite(r[f"{name}/meta_loss"]) for r in records)
    metadata = optax_lopt.serialization.read_config(tmp_path / "final")["metadata"]
    assert metadata["meta_train_config"]["task_mix"] == _MIX
    with pytest.raises(ValueError, match="num_devices"):
        example.run(example.Config(task_mix=_MIX, num_devices=1, workdir=str(tmp_path / "x")))


def test_general_wide_preset_adds_the_generated_supervised_families():
    components = optax_lopt.tasks.task_mix("general_wide")
    assert components[: len(optax_lopt.tasks.GENERAL_MIX)] == optax_lopt.tasks.GENERAL_MIX
    built = {c.name: c.build() for c in components}
    assert built["separable_softmax"] == optax_lopt.tasks.GaussianSoftmax(
        separation=8.0, batch_size=32, num_steps=300
    )
    assert isinstance(built["teacher_aug"].base, optax_lopt.tasks.TeacherRegression)
    assert built["softmax_aug"].scale_range == (0.3, 3.0)
