"""Tests of the shipped general-purpose learned optimizer, ``optax_lopt.pretrained("general")``.

It was meta-trained on a mix of families (``optax_lopt.tasks.GENERAL_WIDE_MIX``) over horizons of
at most 1,000 steps; these tests run it far longer, on problems it never saw
(``optax_lopt.convergence``; ``benchmarks/long_runs.py`` prints the same figures).
"""

from __future__ import annotations

import dataclasses
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
from optax_lopt import convergence, evaluation
from optax_lopt.architectures import _features as F

_PARAMS = {"w": jnp.linspace(-1.0, 1.0, 6).reshape(2, 3), "b": jnp.ones(3)}
_GRADS = {"w": jnp.linspace(0.3, -2.0, 6).reshape(2, 3), "b": jnp.array([1.0, -2.0, 3.0])}


def _negate(tree):
    return jax.tree.map(lambda x: -x, tree)


def test_antisymmetric_update_is_odd_in_the_gradient():
    def up_and_down(lopt):
        tx = lopt.transform(lopt.init(jax.random.key(0)))
        # A second step, so the momenta and second moments are not those of one gradient.
        _, state = tx.update(_GRADS, tx.init(_PARAMS), _PARAMS)
        up, _ = tx.update(_GRADS, state, _PARAMS)
        down, _ = tx.update(_negate(_GRADS), tx.init(_PARAMS), _PARAMS)
        _, down_state = tx.update(_negate(_GRADS), tx.init(_PARAMS), _PARAMS)
        down, _ = tx.update(_negate(_GRADS), down_state, _PARAMS)
        return up, down

    up, down = jax.jit(up_and_down, static_argnums=0)(
        optax_lopt.MLPLOpt(hidden_sizes=(4,), antisymmetric=True, output_scale=1.0)
    )
    chex.assert_trees_all_close(up, _negate(down), atol=1e-9)
    # The plain network is not odd: the antisymmetrisation is what makes it so.
    up, down = jax.jit(up_and_down, static_argnums=0)(
        optax_lopt.MLPLOpt(hidden_sizes=(4,), output_scale=1.0)
    )
    assert float(jnp.max(jnp.abs(up["w"] + down["w"]))) > 1e-5


def test_antisymmetric_untrained_is_adam():
    lopt = optax_lopt.MLPLOpt(
        hidden_sizes=(4,), antisymmetric=True, output_scale=0.0, step_mult=3e-3
    )
    tx, adam = lopt.transform(lopt.init(jax.random.key(1))), optax.adam(3e-3)
    state, adam_state = tx.init(_PARAMS), adam.init(_PARAMS)
    for k in range(5):
        grads = jax.tree.map(lambda g, k=k: g * (1.0 + 0.3 * k), _GRADS)
        got, state = tx.update(grads, state, _PARAMS)
        want, adam_state = adam.update(grads, adam_state, _PARAMS)
        chex.assert_trees_all_close(got, want, rtol=1e-4)


def test_step_embedding_saturates_past_the_largest_timescale():
    lopt = optax_lopt.MLPLOpt(hidden_sizes=(4,), timescales=(1.0, 10.0), output_scale=1.0)
    tx = lopt.transform(lopt.init(jax.random.key(2)))
    _, state = tx.update(_GRADS, tx.init(_PARAMS), _PARAMS)
    late, _ = tx.update(_GRADS, state._replace(count=jnp.asarray(10**5, jnp.int32)), _PARAMS)
    later, _ = tx.update(_GRADS, state._replace(count=jnp.asarray(10**6, jnp.int32)), _PARAMS)
    chex.assert_trees_all_close(late, later)
    early, _ = tx.update(_GRADS, state._replace(count=jnp.asarray(2, jnp.int32)), _PARAMS)
    assert float(jnp.max(jnp.abs(early["w"] - late["w"]))) > 1e-6


@pytest.mark.parametrize(
    "kwargs, match",
    [({"antisymmetric": "yes"}, "antisymmetric"), ({"timescales": ()}, "timescales")],
)
def test_bad_options_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        optax_lopt.MLPLOpt(**kwargs)


def test_loads_as_mlp_lopt_with_its_command_and_evaluation():
    lopt, theta = optax_lopt.load_pretrained("general")
    assert isinstance(lopt, optax_lopt.MLPLOpt)
    tx = optax_lopt.pretrained("general")
    assert isinstance(tx, optax.GradientTransformationExtraArgs)
    params = {"w": jnp.linspace(-1.0, 1.0, 6).reshape(2, 3), "b": jnp.zeros(3)}
    grads = {"w": jnp.linspace(0.5, -2.0, 6).reshape(2, 3), "b": jnp.ones(3)}
    updates, _ = tx.update(grads, tx.init(params), params)
    chex.assert_trees_all_equal_shapes_and_dtypes(updates, params)
    chex.assert_tree_all_finite(updates)
    metadata = optax_lopt.pretrained_metadata("general")
    flags = _meta_train_flags(metadata["command"])
    assert flags["task_mix"] == "general_wide"
    assert "task" not in flags  # --task_mix overrides --task, so the command does not carry it
    assert flags["architecture"] == "MLPLOpt"
    first = metadata["evaluation"][0]
    assert first["family"] == "digits_conv" and first["num_instances"] >= 128
    assert {"adam", "learned"} <= set(first["objectives"])


def _meta_train_flags(command: str) -> dict[str, str]:
    argv = shlex.split(command)
    assert argv[:2] == ["python", "examples/meta_train.py"]
    return dict(a[2:].split("=", 1) for a in argv[2:])


def test_metadata_chains_the_two_phases_and_records_the_fields_set_after():
    lopt, _ = optax_lopt.load_pretrained("general")
    metadata = optax_lopt.pretrained_metadata("general")
    phase2 = _meta_train_flags(metadata["command"])
    phase1 = _meta_train_flags(metadata["init_from"]["command"])
    # Phase 2 starts from phase 1's final weights, whose hash it recorded.
    assert phase2["init_from"] == phase1["workdir"] + "/final"
    assert len(metadata["init_from_weights_sha256"]) == 64
    # Phase 1 had the default (agreement) rule; the secant rule came in phase 2.
    assert "adaptation_rule" not in json.loads(phase1["architecture_config"])
    assert optax_lopt.MLPLOpt().adaptation_rule == "agreement"
    # The configuration shipped is the one phase 2 meta-trained plus the fields set on it
    # afterwards, which config_changes lists with the values they replaced.
    changes = metadata["config_changes"]
    assert changes["fields"] == {"adaptation_steepening": 0.69}
    assert changes["from"] == {"adaptation_steepening": None}
    shipped = json.loads(json.dumps(dataclasses.asdict(lopt)))  # tuples as JSON lists
    trained = json.loads(phase2["architecture_config"])
    for field, value in {**trained, **changes["fields"]}.items():
        assert shipped[field] == value, field
    for field, value in changes["from"].items():
        assert getattr(optax_lopt.MLPLOpt(), field) == value, field
    assert not set(changes["fields"]) & set(trained)


def test_adaptation_rate_is_the_documented_one_and_needs_step_adaptation():
    lopt, theta = optax_lopt.load_pretrained("general")
    chex.assert_trees_all_close(
        lopt.adaptation_rate(theta), lopt.step_adaptation * jnp.exp(theta["adaptation"])
    )
    with pytest.raises(ValueError, match="step_adaptation"):
        optax_lopt.MLPLOpt().adaptation_rate(theta)


@pytest.fixture(scope="module")
def long_runs():
    return convergence.long_run_errors(optax_lopt.pretrained("general"))


@pytest.mark.parametrize("problem", list(convergence.PROBLEMS))
def test_30000_step_runs_end_within_1e_3_of_the_minimum(long_runs, problem):
    errors = long_runs[problem]
    assert errors["finite"]
    assert errors["final_error"] <= 1e-3, errors
    # It stays there: every one of the last 1,000 iterates is within the tolerance too.
    assert errors["late_error"] <= 1e-3, errors


def test_step_under_a_constant_gradient_shrinks_past_the_training_horizon():
    lopt, theta = optax_lopt.load_pretrained("general")
    assert lopt.anneal_after == 1000
    assert lopt.adaptation_rule == "secant"
    steps = convergence.constant_gradient_steps(lopt.transform(theta), at=(500, 1000, 10_000))
    # Under a constant gradient the secant sees no curvature along any step, so the step
    # size is not adapted: up to the horizon it is the network's own; ten times later, a
    # tenth of it.
    fixed = dataclasses.replace(
        lopt,
        step_adaptation=None,
        loss_bound=None,
        adaptation_shortening_decay=None,
        adaptation_steepening=None,
        anneal_after=None,
    )
    unadapted = convergence.constant_gradient_steps(fixed.transform(theta), at=(1000, 10_000))
    assert 0.01 < unadapted[1000] < 0.05
    np.testing.assert_allclose(unadapted[10_000], unadapted[1000], rtol=0.05)
    np.testing.assert_allclose(steps[1000], unadapted[1000], rtol=0.02)
    np.testing.assert_allclose(steps[500], steps[1000], rtol=0.05)
    np.testing.assert_allclose(steps[10_000], 0.1 * steps[1000], rtol=0.02)


def test_lowers_the_loss_on_digits_conv_it_never_saw():
    family = optax_lopt.tasks.family(
        "digits_conv", channels=(4, 8), num_layers=1, batch_sizes=(32,)
    )
    keys = jax.random.split(jax.random.key(4321), 3)  # neither the train nor the test split
    run = jax.jit(
        lambda k: evaluation.run_on_instances(
            optax_lopt.pretrained("general"), family, k, num_steps=40
        )
    )
    losses = np.asarray(run(keys))
    assert np.all(np.isfinite(losses))
    assert np.all(losses[:, -1] < 0.6 * losses[:, 0]), losses[:, [0, -1]]


@pytest.mark.parametrize("hidden_sizes", [(8,), (6, 5)])
def test_odd_update_equals_the_two_network_evaluations_it_replaces(hidden_sizes):
    # One small leaf (the concatenated, dot-form group) and one of SOLO_SIZE entries (the
    # multiply-add form), a per-step first-layer bias as MLPLOpt passes it.
    lopt = optax_lopt.MLPLOpt(hidden_sizes=hidden_sizes, output_scale=1.0)
    theta = lopt.init(jax.random.key(3))
    k = lopt.num_inputs
    odd = (1, 2, 4, 6, 8, 9)
    keys = jax.random.split(jax.random.key(4), 2)
    features = [
        list(jax.random.normal(keys[0], (k, 5))),
        list(jax.random.normal(keys[1], (k, F.SOLO_SIZE))),
    ]
    bias = jnp.linspace(-0.5, 0.5, hidden_sizes[0])

    def shared(th):
        return F.mlp_updates(features, th, bias, 0.01, 0.3, odd)

    def twice(th):
        flipped = [[-f if i in odd else f for i, f in enumerate(fs)] for fs in features]
        up = F.mlp_updates(features, th, bias, 0.01, 0.3)
        down = F.mlp_updates(flipped, th, bias, 0.01, 0.3)
        return [0.5 * (a - b) for a, b in zip(up, down, strict=True)]

    chex.assert_trees_all_close(jax.jit(shared)(theta), jax.jit(twice)(theta), rtol=1e-5, atol=1e-7)

    def loss(fn):
        return lambda th: sum(jnp.sum(jnp.sin(100.0 * u)) for u in fn(th))

    got, want = jax.jit(jax.grad(loss(shared)))(theta), jax.jit(jax.grad(loss(twice)))(theta)
    chex.assert_trees_all_close(got, want, rtol=1e-4, atol=1e-4)  # entries up to ~30
    assert float(jnp.max(jnp.abs(want["mlp"][0]["w"]))) > 1e-3  # the check is not vacuous
