"""optax_lopt.meta.self_training_recipe: the defaults and builders shared by
examples/self_train.py and benchmarks/self_training.py."""

from __future__ import annotations

import dataclasses

import jax
import pytest

import optax_lopt
from optax_lopt.meta import PES, SelfTrainingRecipe
from optax_lopt.meta import self_training_recipe as recipe_lib

_TINY = dict(population_size=2, num_tasks=1, truncation_length=4, horizon=8, two_moons_points=16)


def test_lopt_is_a_randomly_initialised_mlp_lopt():
    assert recipe_lib.build_lopt(SelfTrainingRecipe()) == optax_lopt.MLPLOpt(
        hidden_sizes=(16,), step_mult=5e-3, feature_clip=5.0, skip_init="random"
    )
    lopt = recipe_lib.build_lopt(
        SelfTrainingRecipe(feature_clip=0, antisymmetric=True, momentum_decays="0.5,0.9")
    )
    assert lopt.feature_clip is None and lopt.antisymmetric
    assert lopt.momentum_decays == (0.5, 0.9)


def test_estimator_is_pes_per_family_of_the_mix():
    recipe = SelfTrainingRecipe(aux_quadratic_dim=3, **_TINY)
    lopt = recipe_lib.build_lopt(recipe)
    est = recipe_lib.build_estimator(recipe, lopt)
    assert est.names == ("linear_regression", "two_moons", "aux_quadratic")
    families = [c.build() for c in recipe_lib.training_mix(recipe)]
    want = [PES(lopt, f, num_tasks=1, truncation_length=4, sigma=0.01) for f in families]
    assert list(est.estimators) == want
    wide = recipe_lib.build_estimator(recipe, lopt, num_tasks=6)  # the Adam reference's
    assert [e.num_tasks for e in wide.estimators] == [6, 6, 6]
    assert [f.num_points for f in recipe_lib.evaluated_families(recipe)[1:]] == [16]


def test_inner_steps_counts_members_families_tasks_particles_and_steps():
    assert PES.NUM_PARTICLES == 2
    # 8 members x 2 families x 2 tasks x 2 particles x 20 steps x 150 outer steps.
    assert recipe_lib.inner_steps(SelfTrainingRecipe()) == 192_000
    assert recipe_lib.inner_steps(SelfTrainingRecipe(aux_quadratic_dim=4)) == 288_000


def test_pes_runs_hold_num_particles_per_task():
    recipe = SelfTrainingRecipe(**_TINY)
    est = recipe_lib.build_estimator(recipe, optax_lopt.LearnableSGDM()).estimators[0]
    theta = est.lopt.init(jax.random.key(0))
    state = est.init(theta, jax.random.key(1))
    shapes = {x.shape[:2] for x in jax.tree.leaves(state.runs) if x.ndim >= 2}
    assert (1, PES.NUM_PARTICLES) in shapes


def test_trainer_takes_the_recipe_settings():
    recipe = SelfTrainingRecipe(rule="best", exploit_every=3, seed=4, **_TINY)
    trainer = recipe_lib.build_trainer(recipe, progress=False)
    assert (trainer.population_size, trainer.rule, trainer.exploit_every) == (2, "best", 3)
    assert trainer.lopt == recipe_lib.build_lopt(recipe)
    with pytest.raises(ValueError, match="--rule"):
        dataclasses.replace(recipe, rule="worst")


def test_held_out_of_an_optimizer_that_does_not_move_is_one():
    # An untrained ComponentwiseRNN leaves the parameters where they are: loss / initial = 1.
    recipe = SelfTrainingRecipe(num_eval_instances=2, **_TINY)
    lopt = optax_lopt.ComponentwiseRNN(hidden_size=4)
    scores = recipe_lib.held_out(recipe, lopt, lopt.init(jax.random.key(0)))
    assert set(scores) == {"linear_regression", "two_moons"}
    for value in scores.values():
        assert value == pytest.approx(1.0, abs=1e-6)
