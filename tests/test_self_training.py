"""Self-training: a population of learned optimizers that train themselves (arXiv 2101.07367)."""

from __future__ import annotations

import dataclasses
import inspect
import math
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _examples import load_example

import optax_lopt
from optax_lopt.meta import PES, SelfTrainer, outer_loop, pbt, read_metrics
from optax_lopt.meta import feedback as st_feedback
from optax_lopt.meta.base import GradientEstimator
from optax_lopt.tasks import mixes
from optax_lopt.tasks.quadratic import Quadratic

self_train = load_example("self_train")


class _Bowl(GradientEstimator):
    """Meta-loss ``0.5 * |theta|^2`` with its exact gradient ``theta``; counts its calls."""

    def init(self, theta, key):
        del theta, key
        return {"calls": jnp.zeros((), jnp.int32)}

    def meta_gradient(self, theta, state, key):
        del key
        loss = 0.5 * sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(theta))
        return theta, {"calls": state["calls"] + 1}, {"meta_loss": loss}


def _sgdm_population(learning_rates, logits=None):
    logits = [0.0] * len(learning_rates) if logits is None else logits
    return {
        "log_learning_rate": jnp.log(jnp.asarray(learning_rates, jnp.float32)),
        "momentum_logit": jnp.asarray(logits, jnp.float32),
    }


def _random_mlp():
    # One momentum and 4 hidden units: small features and network, so it compiles fast.
    return optax_lopt.MLPLOpt(
        hidden_sizes=(4,), momentum_decays=(0.9,), step_mult=1e-2, skip_init="random"
    )


def _tiny_pes(lopt):
    family = Quadratic(dim=3, num_steps=12)
    return PES(lopt, family, num_tasks=2, truncation_length=4, sigma=0.01)


def test_population_members_are_independent_random_draws():
    lopt = _random_mlp()
    trainer = SelfTrainer(_Bowl(), lopt, population_size=3, seed=5, progress=False)
    state = trainer.init_state()
    chex.assert_shape(state.ema_loss, (3,))
    chex.assert_shape(state.theta["skip"]["w"], (3, lopt.num_inputs, 2))
    skips = np.asarray(state.theta["skip"]["w"])
    for i in range(3):
        for j in range(i + 1, 3):
            assert not np.allclose(skips[i], skips[j])
    # Random skip readout: not Adam's one-hot direction, and LeCun-scaled.
    default = optax_lopt.MLPLOpt(hidden_sizes=(4,)).init(jax.random.key(0))["skip"]["w"]
    assert np.count_nonzero(np.asarray(default)) == 1
    assert np.count_nonzero(skips) == skips.size
    assert abs(np.std(skips) - 1 / math.sqrt(lopt.num_inputs)) < 0.15
    # Same seed, same population; another seed, another population.
    again = SelfTrainer(_Bowl(), lopt, population_size=3, seed=5, progress=False).init_state()
    chex.assert_trees_all_close(again.theta, state.theta)
    other = SelfTrainer(_Bowl(), lopt, population_size=3, seed=6, progress=False).init_state()
    assert not np.allclose(other.theta["skip"]["w"], skips)


def test_mlp_lopt_random_skip_init_keeps_default_draws_and_config():
    default = optax_lopt.MLPLOpt(hidden_sizes=(4,))
    rand = dataclasses.replace(default, skip_init="random")
    a, b = default.init(jax.random.key(1)), rand.init(jax.random.key(1))
    chex.assert_trees_all_close(a["mlp"], b["mlp"])
    chex.assert_trees_all_close(a["time"], b["time"])
    assert rand.config()["skip_init"] == "random"
    with pytest.raises(ValueError, match="skip_init"):
        optax_lopt.MLPLOpt(skip_init="zeros")


@pytest.mark.parametrize("rule", ["self", "best"])
def test_rule_picks_which_learned_optimizer_updates_each_member(rule):
    lopt = optax_lopt.LearnableSGDM()
    learning_rates = [0.1, 0.5, 0.01]  # member 1 has the lowest meta-loss 0.5 * log(lr)^2
    theta = _sgdm_population(learning_rates)
    trainer = SelfTrainer(
        _Bowl(), lopt, population_size=3, rule=rule, theta=theta, exploit_every=100
    )
    state0 = trainer.init_state()
    state1, metrics = trainer.step(state0)
    losses = 0.5 * np.log(learning_rates) ** 2
    chex.assert_trees_all_close(metrics["meta_loss"], losses, rtol=1e-6)
    expected_who = [0, 1, 2] if rule == "self" else [1, 1, 1]
    np.testing.assert_array_equal(metrics["optimizer_of"], expected_who)
    assert int(metrics["best"]) == 1
    for i, j in enumerate(expected_who):
        # Known answer: SGD-momentum's first step is -lr_j * g_i with g_i = theta_i.
        lr = learning_rates[j]
        member = jax.tree.map(lambda x, i=i: x[i], state0.theta)
        got = jax.tree.map(lambda x, i=i: x[i], state1.theta)
        chex.assert_trees_all_close(got, jax.tree.map(lambda t, lr=lr: (1 - lr) * t, member))
    chex.assert_trees_all_close(state1.estimator_state["calls"], jnp.ones(3, jnp.int32))


def test_best_rule_applies_the_best_members_mlp_transform_and_nothing_else():
    lopt = _random_mlp()
    trainer = SelfTrainer(_Bowl(), lopt, population_size=3, rule="best", seed=2)
    state0 = trainer.init_state()
    state1, metrics = trainer.step(state0)
    best = int(metrics["best"])
    member = lambda tree, i: jax.tree.map(lambda x: x[i], tree)  # noqa: E731
    tx = lopt.transform(member(state0.theta, best))
    for i in range(3):
        theta_i = member(state0.theta, i)
        updates, opt_state = tx.update(theta_i, tx.init(theta_i), theta_i)
        chex.assert_trees_all_close(
            member(state1.theta, i), optax.apply_updates(theta_i, updates), atol=1e-6
        )
        chex.assert_trees_all_close(member(state1.opt_state, i), opt_state, atol=1e-6)


def test_pbt_parents_known_answer():
    ema = jnp.asarray([0.5, 0.1, 0.9, 0.3, jnp.nan, 0.2])
    np.testing.assert_array_equal(pbt.pbt_parents(ema, 2), [0, 1, 5, 3, 1, 5])
    np.testing.assert_array_equal(pbt.pbt_parents(ema, 0), np.arange(6))


def test_perturb_noise_is_relative_to_each_tensors_rms():
    theta = {"big": 10.0 * jnp.ones((4000,)), "small": 0.1 * jnp.ones((4000,))}
    out = pbt.perturb(theta, jax.random.key(0), 0.05)
    assert abs(float(jnp.std(out["big"] - theta["big"])) - 0.5) < 0.05
    assert abs(float(jnp.std(out["small"] - theta["small"])) - 0.005) < 0.0005
    chex.assert_trees_all_close(pbt.perturb(theta, jax.random.key(0), 0.0), theta)


def _exploit_every_step(lopt, theta, **kwargs):
    """Three SGD-momentum members on the bowl, rule "self", one copied at every step."""
    return SelfTrainer(
        _Bowl(),
        lopt,
        population_size=3,
        rule="self",
        theta=theta,
        exploit_every=1,
        exploit_fraction=1 / 3,
        **kwargs,
    )


@pytest.mark.parametrize("scale", [0.0, 0.1])
def test_pbt_copies_the_best_over_the_worst_and_perturbs(scale):
    lopt = optax_lopt.LearnableSGDM()
    theta = _sgdm_population([0.1, 0.5, 0.01], logits=[0.3, -0.2, 0.1])
    trainer = _exploit_every_step(lopt, theta, perturb_scale=scale)
    state, metrics = trainer.step(trainer.init_state())
    assert bool(metrics["exploit"]) and int(state.num_exploits) == 1
    np.testing.assert_array_equal(metrics["parent"], [0, 1, 1])  # worst (2) copies best (1)
    copy = jax.tree.map(lambda x: x[2], state.theta)
    best = jax.tree.map(lambda x: x[1], state.theta)
    if scale == 0.0:
        chex.assert_trees_all_close(copy, best)
    else:
        assert not np.allclose(copy["momentum_logit"], best["momentum_logit"])
        chex.assert_trees_all_close(copy, best, atol=0.6)
    chex.assert_trees_all_close(
        jax.tree.map(lambda x: x[2], state.opt_state),
        jax.tree.map(lambda x: x[1], state.opt_state),
    )
    assert float(state.ema_loss[2]) == float(state.ema_loss[1])
    state2, metrics2 = trainer.step(state)
    assert bool(metrics2["exploit"])  # exploit_every=1: every step
    # Not an exploit step: nobody is copied.
    trainer_rare = SelfTrainer(_Bowl(), lopt, population_size=3, theta=theta, exploit_every=5)
    _, metrics3 = trainer_rare.step(trainer_rare.init_state())
    assert not bool(metrics3["exploit"])
    np.testing.assert_array_equal(metrics3["parent"], [0, 1, 2])


def test_step_gain_scales_the_learned_update_and_is_explored_at_copies():
    lopt = optax_lopt.LearnableSGDM()
    learning_rates = [0.1, 0.5, 0.01]
    theta = _sgdm_population(learning_rates)
    trainer = _exploit_every_step(
        lopt, theta, perturb_scale=0.0, initial_step_gain=2.0, step_gain_factor=1.5, seed=3
    )
    state0 = trainer.init_state()
    chex.assert_trees_all_close(state0.step_gain, jnp.full(3, 2.0))
    state1, metrics = trainer.step(state0)
    chex.assert_trees_all_close(metrics["step_gain"], jnp.full(3, 2.0))
    # Known answer for the members that stay: SGD's first step times the gain, -2 lr g.
    for i in (0, 1):
        lr = learning_rates[i]
        member = jax.tree.map(lambda x, i=i: x[i], state0.theta)
        got = jax.tree.map(lambda x, i=i: x[i], state1.theta)
        chex.assert_trees_all_close(got, jax.tree.map(lambda t, lr=lr: (1 - 2 * lr) * t, member))
    # The worst (2) copied the best (1) and its gain, times 1.5 or 1 / 1.5; the others kept 2.
    np.testing.assert_array_equal(metrics["parent"], [0, 1, 1])
    gains = np.asarray(state1.step_gain)
    np.testing.assert_allclose(gains[:2], [2.0, 2.0])
    assert np.isclose(gains[2], 3.0) or np.isclose(gains[2], 2.0 / 1.5), gains
    # Over many copies both directions occur.
    state = state1
    seen = set()
    for _ in range(12):
        state, _ = trainer.step(state)
        seen.update(np.round(np.log(np.asarray(state.step_gain)) / np.log(1.5), 6).tolist())
    assert any(v > np.log(2.0) / np.log(1.5) + 0.5 for v in seen)
    assert any(v < np.log(2.0) / np.log(1.5) - 0.5 for v in seen)
    # The default factor 1 never changes the gain.
    plain = SelfTrainer(_Bowl(), lopt, population_size=3, theta=theta, exploit_every=1)
    state = plain.init_state()
    for _ in range(3):
        state, _ = plain.step(state)
    chex.assert_trees_all_close(state.step_gain, jnp.ones(3))


_ALLOWED_OPTAX = {
    # Plumbing, not optimizers: the learned optimizers and the trainer use these.
    "apply_updates",
    "safe_increment",
    "with_extra_args_support",
    "GradientTransformation",
    "GradientTransformationExtraArgs",
    # Losses of the inner tasks.
    "sigmoid_binary_cross_entropy",
    "softmax_cross_entropy_with_integer_labels",
}


def _forbid_hand_designed(monkeypatch):
    """Replaces every optax function (optimizers, clipping, schedules, chains) by a raiser."""
    patched = []

    def raiser(name):
        def _raise(*args, **kwargs):
            raise AssertionError(f"hand-designed optax.{name} used during self-training")

        return _raise

    for module, prefix in ((optax, ""), (optax.contrib, "contrib.")):
        for name in dir(module):
            value = getattr(module, name)
            if name.startswith("_") or name in _ALLOWED_OPTAX or inspect.isclass(value):
                continue
            if callable(value):
                monkeypatch.setattr(module, name, raiser(prefix + name))
                patched.append(prefix + name)
    return patched


def test_no_hand_designed_optimizer_anywhere_in_a_self_training_run(monkeypatch, tmp_path):
    lopt = _random_mlp()
    est = _tiny_pes(lopt)
    patched = _forbid_hand_designed(monkeypatch)
    for name in ("adam", "sgd", "rmsprop", "adamw", "lion", "scale_by_adam", "chain"):
        assert name in patched
    assert "clip_by_global_norm" in patched and "contrib.reduce_on_plateau" in patched
    with pytest.raises(AssertionError, match="optax.adam"):
        optax.adam(1e-3)  # the guard is live
    trainer = SelfTrainer(
        est, lopt, population_size=2, exploit_every=1, workdir=tmp_path, progress=False
    )
    best = trainer.train(2)
    assert int(trainer.state.step) == 2
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(best))
    assert not hasattr(trainer, "meta_optimizer")


def test_checkpoint_resume_equals_uninterrupted_run_and_metrics_jsonl(tmp_path):
    # A cheap architecture (three trainers compile here); PES state, PBT and the learned
    # optimizers' states all cross the checkpoint.
    lopt = optax_lopt.LearnableSGDM()
    est = _tiny_pes(lopt)
    theta = _sgdm_population([0.05, 0.1, 0.02], logits=[0.0, 1.0, -1.0])
    kwargs = dict(
        population_size=3,
        rule="best",
        exploit_every=2,
        perturb_scale=0.1,
        seed=3,
        progress=False,
        theta=theta,
    )
    whole = SelfTrainer(est, lopt, **kwargs)
    whole.train(4)
    first = SelfTrainer(
        est, lopt, workdir=tmp_path, checkpoint_every=2, async_checkpointing=False, **kwargs
    )
    first.train(2)
    resumed = SelfTrainer(est, lopt, workdir=tmp_path, async_checkpointing=False, **kwargs)
    best = resumed.train(4)
    chex.assert_trees_all_close(resumed.state, whole.state)
    chex.assert_trees_all_close(best, whole.best_theta())

    records = read_metrics(tmp_path)
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    for r in records:
        for k in ("meta_loss", "ema_meta_loss", "grad_norm", "skipped", "optimizer_of", "parent"):
            assert len(r[k]) == 3, k
        assert r["best"] == int(np.argmin(r["ema_meta_loss"]))
        assert r["best_ema_meta_loss"] == min(r["ema_meta_loss"])
        assert r["exploit"] == (r["step"] % 2 == 0)
        if not r["exploit"]:
            assert r["parent"] == [0, 1, 2]
        assert r["optimizer_of"] == [r["best"]] * 3
    lopt_loaded, theta = optax_lopt.load(os.path.join(tmp_path, outer_loop.FINAL_DIRNAME))
    assert lopt_loaded == lopt
    chex.assert_trees_all_close(theta, best)
    with pytest.raises(ValueError, match="rule"):
        SelfTrainer(est, lopt, workdir=tmp_path, **{**kwargs, "rule": "self"}).restore()


def test_self_training_lowers_the_meta_loss_on_a_quadratic():
    # Learnable SGD-momentum from a random (too small) learning rate: the best member's
    # learning rate updates everyone's, so gains compound (the feedback loop in miniature).
    lopt = optax_lopt.LearnableSGDM()
    rng = np.random.default_rng(0)
    theta = _sgdm_population(10 ** rng.uniform(-2, -1.5, 4), logits=rng.normal(1, 0.5, 4))
    est = PES(lopt, Quadratic(dim=4, num_steps=20), num_tasks=4, truncation_length=10)
    records = []
    trainer = SelfTrainer(
        est,
        lopt,
        population_size=4,
        rule="best",
        theta=theta,
        exploit_every=5,
        progress=False,
        on_step=lambda step, record: records.append(record),
    )
    trainer.train(40)
    first = records[1]["best_ema_meta_loss"]
    last = records[-1]["best_ema_meta_loss"]
    assert last < 0.7 * first, (first, last)
    assert sum(r["skipped"].count(True) for r in records) == 0


def test_bad_arguments_are_named():
    lopt = _random_mlp()
    good = dict(estimator=_Bowl(), lopt=lopt)
    cases = [
        ({"estimator": object()}, "estimator"),
        ({"lopt": "MLPLOpt"}, "lopt"),
        ({"lopt": optax_lopt.MLPLOpt()}, "skip_init"),
        ({"population_size": 1}, "population_size"),
        ({"rule": "worst"}, "rule"),
        ({"exploit_every": 0}, "exploit_every"),
        ({"exploit_fraction": 0.75}, "exploit_fraction"),
        ({"perturb_scale": -0.1}, "perturb_scale"),
        ({"initial_step_gain": 0.0}, "initial_step_gain"),
        ({"step_gain_factor": 0.5}, "step_gain_factor"),
        ({"step_gain_factor": float("nan")}, "step_gain_factor"),
        ({"ema_decay": 1.0}, "ema_decay"),
        ({"seed": 1.5}, "seed"),
        ({"theta": {"w": jnp.zeros((3, 2))}, "population_size": 2}, "theta"),
    ]
    for override, name in cases:
        kwargs = {**good, **override}
        with pytest.raises(ValueError, match=name):
            SelfTrainer(kwargs.pop("estimator"), kwargs.pop("lopt"), **kwargs)
    trainer = SelfTrainer(_Bowl(), lopt, population_size=2)
    with pytest.raises(ValueError, match="num_outer_steps"):
        trainer.train(-1)


# The example's run() at the smallest sizes that still exercise every part of it.
_TINY_EXAMPLE = dict(
    population_size=2,
    num_tasks=1,
    truncation_length=4,
    horizon=8,
    hidden_size=4,
    two_moons_points=16,
    num_eval_instances=2,
    momentum_decays="0.9",
)


@pytest.mark.slow
def test_example_self_train_runs_and_writes_metrics_figure_and_weights(tmp_path):
    config = self_train.Config(
        workdir=str(tmp_path),
        num_outer_steps=2,
        exploit_every=1,
        figure=str(tmp_path / "population.png"),
        **_TINY_EXAMPLE,
    )
    summary = self_train.run(config)
    assert os.path.exists(tmp_path / "population.png")
    assert len(read_metrics(tmp_path)) == 2
    assert set(summary["held_out"]) == {"linear_regression", "two_moons"}
    assert math.isfinite(summary["meta_objective"])
    lopt, _ = optax_lopt.load(os.path.join(tmp_path, outer_loop.FINAL_DIRNAME))
    assert lopt.skip_init == "random"


def test_self_training_mix_preset_and_its_aux_quadratic():
    mix = mixes.self_training_mix(8, 16, aux_quadratic_dim=5, aux_quadratic_noise=0.2)
    families = [c.build() for c in mix]
    assert len(families) == 3 and families[2].dim == 5 and families[2].noise_scale == 0.2
    assert families[1].num_points == 16 and families[0].num_steps == 8
    assert len(mixes.self_training_mix(8, 16)) == 2
    assert mixes.task_mix("self_training") == mixes.self_training_mix()
    config = self_train.Config(aux_quadratic_dim=5, **_TINY_EXAMPLE)
    est = self_train.build_estimator(config, self_train.build_lopt(config), 1)
    assert est.names == ("linear_regression", "two_moons", "aux_quadratic")
    # Three families x 1 task x 2 particles x 4 steps x 2 members x 1 outer step.
    assert self_train.inner_steps(dataclasses.replace(config, num_outer_steps=1)) == 48


@pytest.mark.slow
def test_example_aux_quadratic_is_trained_on_but_not_evaluated(tmp_path):
    config = self_train.Config(
        workdir=str(tmp_path), num_outer_steps=1, aux_quadratic_dim=5, figure="", **_TINY_EXAMPLE
    )
    summary = self_train.run(config)
    assert set(summary["held_out"]) == {"linear_regression", "two_moons"}
    assert summary["inner_steps"] == 48


def test_probe_meta_optimizers_known_first_steps_and_ordering():
    lopt = optax_lopt.LearnableSGDM()
    learning_rates = [0.01, 0.1, 0.5]
    snapshots = _sgdm_population(learning_rates)
    losses = st_feedback.probe_meta_optimizers(
        _Bowl(), lopt, snapshots, num_steps=6, num_trainees=2, seed=1
    )
    chex.assert_shape(losses, (3, 2, 6))
    theta0 = lopt.init(jax.random.fold_in(jax.random.fold_in(jax.random.key(1), 0), 0))
    loss0 = 0.5 * sum(float(jnp.sum(jnp.square(x))) for x in jax.tree.leaves(theta0))
    # Same trainees for every snapshot; SGD-momentum's first step is -lr * theta on the bowl.
    np.testing.assert_allclose(losses[:, 0, 0], loss0, rtol=1e-6)
    np.testing.assert_allclose(
        losses[:, 0, 1], [loss0 * (1 - lr) ** 2 for lr in learning_rates], rtol=1e-5
    )
    final = losses[:, :, -1].mean(axis=1)
    assert final[0] > final[1] > final[2], final
    # A plain optax transformation as the reference: SGD 0.1, the same first step.
    ref = st_feedback.probe_meta_optimizers(
        _Bowl(), lopt, meta_optimizer=optax.sgd(0.1), num_steps=2, num_trainees=2, seed=1
    )
    chex.assert_shape(ref, (1, 2, 2))
    np.testing.assert_allclose(ref[0, 0, 1], loss0 * 0.81, rtol=1e-5)
    with pytest.raises(ValueError, match="optimizer_thetas"):
        st_feedback.probe_meta_optimizers(_Bowl(), lopt)
    with pytest.raises(ValueError, match="num_steps"):
        st_feedback.probe_meta_optimizers(_Bowl(), lopt, snapshots, num_steps=0)


class _PoisonedBowl(_Bowl):
    """`_Bowl`, but the meta-gradient is NaN for a member whose learning rate exceeds 0.3."""

    def meta_gradient(self, theta, state, key):
        grads, state, metrics = super().meta_gradient(theta, state, key)
        bad = jnp.exp(theta["log_learning_rate"]) > 0.3
        grads = jax.tree.map(lambda g: jnp.where(bad, jnp.nan, g), grads)
        return grads, state, metrics


def test_a_member_with_a_non_finite_meta_gradient_is_skipped_alone():
    lopt = optax_lopt.LearnableSGDM()
    theta = _sgdm_population([0.1, 0.5, 0.01])
    trainer = SelfTrainer(_PoisonedBowl(), lopt, population_size=3, theta=theta, exploit_every=5)
    state, metrics = trainer.step(trainer.init_state())
    np.testing.assert_array_equal(metrics["skipped"], [False, True, False])
    np.testing.assert_array_equal(state.num_skipped, [0, 1, 0])
    chex.assert_trees_all_close(
        jax.tree.map(lambda x: x[1], state.theta), jax.tree.map(lambda x: x[1], theta)
    )
    chex.assert_trees_all_close(
        jax.tree.map(lambda x: x[1], state.opt_state),
        jax.tree.map(lambda x: x[1], trainer.init_state().opt_state),
    )
    # The others took their first SGD-momentum step, -lr_i * g_i (rule "self").
    for i, lr in ((0, 0.1), (2, 0.01)):
        got = jax.tree.map(lambda x, i=i: x[i], state.theta)
        want = jax.tree.map(lambda x, i=i, lr=lr: x[i] * (1 - lr), theta)
        chex.assert_trees_all_close(got, want, rtol=1e-5)
