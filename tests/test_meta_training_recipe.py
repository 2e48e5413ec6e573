"""optax_lopt.meta.meta_training_recipe: the defaults and builders of a meta-training run,
and the config_flags rules (choices, excluded fields) it relies on."""

from __future__ import annotations

import dataclasses

import chex
import jax
import jax.numpy as jnp
import pytest
from absl import flags

import optax_lopt
from optax_lopt.meta import ES, PES, MetaTrainingRecipe, TruncatedBPTT
from optax_lopt.meta import meta_training_recipe as recipe_lib
from optax_lopt.meta.config_flags import (
    check_choices,
    choices_of,
    config_from_flags,
    define_flags,
)
from optax_lopt.pretrained import weights_dir


def test_defaults_build_pes_on_linear_regression_with_mlp_lopt():
    recipe = MetaTrainingRecipe()
    lopt = recipe_lib.build_lopt(recipe)
    assert lopt == optax_lopt.MLPLOpt()
    family = optax_lopt.tasks.family("linear_regression")
    est = recipe_lib.build_estimator(recipe, lopt)
    assert est == PES(lopt, family, num_tasks=8, truncation_length=20, sigma=0.01)
    assert (recipe.num_outer_steps, recipe.meta_learning_rate, recipe.clip_norm) == (300, 3e-3, 1)


def test_each_estimator_gets_only_the_fields_it_takes():
    recipe = MetaTrainingRecipe(task="rosenbrock", num_tasks=3, truncation_length=7, sigma=0.5)
    lopt = optax_lopt.LearnableSGDM()
    family = optax_lopt.tasks.family("rosenbrock")
    es = recipe_lib.build_estimator(dataclasses.replace(recipe, estimator="es"), lopt)
    assert es == ES(lopt, family, num_tasks=3, sigma=0.5)  # no truncation_length
    bptt = recipe_lib.build_estimator(dataclasses.replace(recipe, estimator="truncated_bptt"), lopt)
    assert bptt == TruncatedBPTT(lopt, family, num_tasks=3, truncation_length=7)  # no sigma


def test_constant_meta_optimizer_is_adam_at_the_learning_rate():
    tx = recipe_lib.build_meta_optimizer(MetaTrainingRecipe(meta_learning_rate=0.25))
    params = jnp.zeros(2)
    updates, _ = tx.update(jnp.asarray([3.0, -0.5]), tx.init(params), params)
    chex.assert_trees_all_close(updates, jnp.asarray([-0.25, 0.25]), rtol=1e-5)


@pytest.mark.parametrize(
    "field, value, listed",
    [("estimator", "pess", "'truncated_bptt'"), ("meta_lr_decay", "linear", "'cosine'")],
)
def test_a_value_outside_the_choices_is_refused_naming_the_flag(field, value, listed):
    with pytest.raises(ValueError, match=f"--{field}") as info:
        MetaTrainingRecipe(**{field: value})
    assert listed in str(info.value) and repr(value) in str(info.value)


def test_architecture_choices_list_every_registered_architecture():
    # Read when asked, so architectures registered after the recipe module count too.
    (choices,) = [
        choices_of(f) for f in dataclasses.fields(MetaTrainingRecipe) if f.name == "architecture"
    ]
    assert choices == optax_lopt.architecture_names() and "MLPLOpt" in choices


def test_excluded_fields_get_no_flag_and_keep_their_default():
    values = flags.FlagValues()
    define_flags(MetaTrainingRecipe, flag_values=values, exclude=("estimator",))
    assert "estimator" not in values and "num_tasks" in values
    values(["prog", "--num_tasks=3", "--task=rosenbrock"])
    recipe = config_from_flags(MetaTrainingRecipe, flag_values=values, exclude=("estimator",))
    assert recipe == MetaTrainingRecipe(num_tasks=3, task="rosenbrock")
    with pytest.raises(flags.IllegalFlagValueError, match="rosenbrok"):
        values(["prog", "--task=rosenbrok"])


def test_check_choices_ignores_fields_without_choices():
    @dataclasses.dataclass(frozen=True)
    class Free:
        name: str = dataclasses.field(default="x", metadata={"choices": None})
        kind: str = dataclasses.field(default="a", metadata={"choices": ("a", "b")})

    check_choices(Free(name="anything"))
    with pytest.raises(ValueError, match="--kind: expected one of 'a', 'b'; got 'c'"):
        check_choices(Free(kind="c"))


def test_initial_theta_is_none_without_init_from():
    lopt = optax_lopt.MLPLOpt()
    assert recipe_lib.build_initial_theta(MetaTrainingRecipe(), lopt) == (None, None)


def test_init_from_a_shipped_name_loads_its_weights_and_hash():
    lopt, theta = optax_lopt.load_pretrained("general")
    got, sha = recipe_lib.build_initial_theta(MetaTrainingRecipe(init_from="General"), lopt)
    chex.assert_trees_all_close(got, theta)
    assert sha == optax_lopt.serialization.read_config(weights_dir("general"))["weights_sha256"]


def test_init_from_a_network_of_other_shapes_names_the_flag_and_the_leaf(tmp_path):
    small = optax_lopt.MLPLOpt(hidden_sizes=(4,))
    optax_lopt.save(tmp_path / "small", small, small.init(jax.random.key(0)))
    recipe = MetaTrainingRecipe(init_from=str(tmp_path / "small"))
    with pytest.raises(ValueError, match="init_from: the weights in .* do not fit") as info:
        recipe_lib.build_initial_theta(recipe, optax_lopt.MLPLOpt())
    assert "theta['mlp']" in str(info.value)


def test_init_from_neither_a_directory_nor_a_shipped_name_says_so(tmp_path):
    recipe = MetaTrainingRecipe(init_from=str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="init_from: expected a directory") as info:
        recipe_lib.build_initial_theta(recipe, optax_lopt.MLPLOpt())
    assert "missing" in str(info.value) and "'general'" in str(info.value)
