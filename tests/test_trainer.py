"""Tests of the meta-trainer against estimators whose meta-gradient is known in closed form."""

from __future__ import annotations

import io
import json
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _examples import load_example

import optax_lopt
from optax_lopt.meta import MetaTrainer, read_metrics
from optax_lopt.meta.base import GradientEstimator
from optax_lopt.meta.metrics_log import summarize

LOPT = optax_lopt.LearnableSGDM(learning_rate=0.01, momentum=0.9)
TARGET = {"log_learning_rate": jnp.asarray(-1.0), "momentum_logit": jnp.asarray(0.5)}


class QuadraticEstimator(GradientEstimator):
    """meta_loss(theta) = 0.5 |theta - TARGET|^2, gradient theta - TARGET (+ optional noise).

    The state counts calls; on call ``nan_at`` (0-based) the gradient is NaN, and when
    ``poison_state`` is set the returned state is NaN too.
    """

    num_tasks = 4

    def __init__(self, nan_at=None, noise=0.0, scale=1.0, poison_state=False):
        self.nan_at = nan_at
        self.noise = noise
        self.scale = scale
        self.poison_state = poison_state

    def init(self, theta, key):
        del theta
        return {
            "count": jnp.zeros((), jnp.int32),
            "offsets": jax.random.normal(key, (self.num_tasks,)),
        }

    def meta_gradient(self, theta, state, key):
        diff = jax.tree.map(lambda t, c: t - c, theta, TARGET)
        loss = 0.5 * sum(jnp.sum(d**2) for d in jax.tree.leaves(diff))
        keys = jax.random.split(key, len(jax.tree.leaves(diff)))
        noise = jax.tree.unflatten(
            jax.tree.structure(diff),
            [self.noise * jax.random.normal(k, ()) for k in keys],
        )
        grad = jax.tree.map(lambda d, n: self.scale * d + n, diff, noise)
        offsets = state["offsets"]
        if self.nan_at is not None:
            hit = state["count"] == self.nan_at
            grad = jax.tree.map(lambda g: jnp.where(hit, jnp.nan, g), grad)
            if self.poison_state:
                offsets = jnp.where(hit, jnp.nan, offsets)
        new_state = {"count": state["count"] + 1, "offsets": offsets}
        return grad, new_state, {"meta_loss": loss, "count": state["count"]}


def _closed_form(num_applied, lr):
    theta0 = LOPT.init(jax.random.key(0))
    return jax.tree.map(lambda t0, c: c + (1 - lr) ** num_applied * (t0 - c), theta0, TARGET)


def test_sgd_meta_optimizer_matches_closed_form(tmp_path):
    lr, n = 0.1, 5
    trainer = MetaTrainer(QuadraticEstimator(), optax.sgd(lr), lopt=LOPT, workdir=tmp_path)
    theta = trainer.train(n)
    chex.assert_trees_all_close(theta, _closed_form(n, lr), rtol=1e-5, atol=1e-6)
    records = read_metrics(tmp_path)
    assert [r["step"] for r in records] == list(range(1, n + 1))
    losses = [r["meta_loss"] for r in records]
    assert all(np.diff(losses) < 0)
    assert not any(r["skipped"] for r in records)
    # The final weights are written with optax_lopt.save and load back.
    lopt, loaded = optax_lopt.load(tmp_path / "final")
    assert lopt == LOPT
    chex.assert_trees_all_close(loaded, theta)


def test_every_metrics_line_is_strict_json(tmp_path):
    trainer = MetaTrainer(QuadraticEstimator(nan_at=1), optax.sgd(0.1), lopt=LOPT, workdir=tmp_path)
    trainer.train(3)
    with open(tmp_path / "metrics.jsonl") as f:
        lines = f.read().splitlines()
    assert len(lines) == 3
    for line in lines:
        record = json.loads(line, parse_constant=lambda c: pytest.fail(f"non-JSON {c}"))
        assert {"step", "meta_loss", "grad_norm", "skipped", "num_skipped"} <= set(record)
    assert json.loads(lines[1])["grad_norm"] is None  # NaN written as null


def test_non_finite_meta_gradient_is_skipped_and_counted(tmp_path):
    lr, n = 0.1, 6
    trainer = MetaTrainer(QuadraticEstimator(nan_at=2), optax.adam(lr), lopt=LOPT, workdir=tmp_path)
    theta = trainer.train(n)
    assert int(trainer.state.num_skipped) == 1
    assert int(trainer.state.num_resets) == 0
    # Adam's step counter only moved on the applied steps.
    assert int(trainer.state.opt_state[0].count) == n - 1
    # Same theta as n - 1 clean Adam steps: the NaN step changed nothing.
    clean = MetaTrainer(QuadraticEstimator(), optax.adam(lr), lopt=LOPT).train(n - 1)
    chex.assert_trees_all_close(theta, clean, rtol=1e-6)
    records = read_metrics(tmp_path)
    assert [r["skipped"] for r in records] == [False, False, True, False, False, False]
    assert records[-1]["num_skipped"] == 1
    assert all(np.isfinite(v) for v in jax.tree.leaves(theta))


def test_non_finite_estimator_state_is_restarted():
    trainer = MetaTrainer(
        QuadraticEstimator(nan_at=1, poison_state=True), optax.sgd(0.1), lopt=LOPT
    )
    trainer.train(3)
    state = trainer.state
    assert int(state.num_skipped) == 1
    assert int(state.num_resets) == 1
    assert np.all(np.isfinite(state.estimator_state["offsets"]))
    # The restarted estimator counts from zero again: one call since the reset.
    assert int(state.estimator_state["count"]) == 1


def test_clipping_bounds_the_step():
    clip, lr = 0.5, 1.0
    estimator = QuadraticEstimator(scale=100.0)  # gradient norm far above clip
    trainer = MetaTrainer(estimator, optax.sgd(lr), lopt=LOPT, clip_norm=clip)
    state0 = trainer.init_state()
    state1, metrics = trainer.step(state0)
    delta = jax.tree.map(lambda a, b: a - b, state1.theta, state0.theta)
    np.testing.assert_allclose(float(optax.tree.norm(delta)), lr * clip, rtol=1e-5)
    diff = jax.tree.map(lambda t, c: t - c, state0.theta, TARGET)
    expected = jax.tree.map(lambda d: -lr * clip * d / optax.tree.norm(diff), diff)
    chex.assert_trees_all_close(delta, expected, rtol=1e-5)
    np.testing.assert_allclose(
        float(metrics["grad_norm"]), 100.0 * float(optax.tree.norm(diff)), rtol=1e-5
    )


def test_same_seed_same_theta_other_seed_other_theta():
    def run(seed):
        estimator = QuadraticEstimator(noise=0.3)
        return MetaTrainer(estimator, optax.adam(0.05), lopt=LOPT, seed=seed).train(5)

    a, b, c = run(3), run(3), run(4)
    chex.assert_trees_all_equal(a, b)
    assert not np.allclose(a["log_learning_rate"], c["log_learning_rate"])


def test_outer_step_compiles_once():
    estimator = QuadraticEstimator(noise=0.1)
    estimator.meta_gradient = chex.assert_max_traces(estimator.meta_gradient, n=1)
    trainer = MetaTrainer(estimator, optax.adam(0.1), lopt=LOPT)
    trainer.train(6)
    assert int(trainer.state.step) == 6


def test_meta_loss_reaches_meta_optimizer_as_value():
    # reduce_on_plateau needs `value`; with a rising loss it must cut the scale.
    meta_opt = optax.chain(
        optax.sgd(0.1), optax.contrib.reduce_on_plateau(patience=1, factor=0.5, cooldown=0)
    )
    estimator = QuadraticEstimator(scale=-1.0)  # ascends: the loss rises every step
    trainer = MetaTrainer(estimator, meta_opt, lopt=LOPT)
    trainer.train(5)
    assert float(trainer.state.opt_state[1].scale) < 1.0


def test_progress_bar_draws_to_stream():
    stream = io.StringIO()
    trainer = MetaTrainer(
        QuadraticEstimator(), optax.sgd(0.1), lopt=LOPT, progress=True, progress_stream=stream
    )
    trainer.train(3)
    out = stream.getvalue()
    assert "3/3" in out and "meta_loss" in out and out.endswith("\n")
    silent = io.StringIO()  # not a terminal: no bar by default
    MetaTrainer(QuadraticEstimator(), optax.sgd(0.1), lopt=LOPT, progress_stream=silent).train(2)
    assert silent.getvalue() == ""


def test_on_step_sees_every_record():
    seen = []
    trainer = MetaTrainer(
        QuadraticEstimator(), optax.sgd(0.1), lopt=LOPT, on_step=lambda s, r: seen.append(r)
    )
    trainer.train(3)
    assert [r["step"] for r in seen] == [1, 2, 3]
    assert [r["count"] for r in seen] == [0, 1, 2]


def test_initial_theta_overrides_lopt_init():
    theta0 = {"log_learning_rate": jnp.asarray(2.0), "momentum_logit": jnp.asarray(-3.0)}
    trainer = MetaTrainer(QuadraticEstimator(), optax.sgd(0.0), theta=theta0)
    chex.assert_trees_all_close(trainer.train(2), theta0)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"clip_norm": -1.0}, "clip_norm"),
        ({"clip_norm": math.inf}, "clip_norm"),
        ({"checkpoint_every": 0}, "checkpoint_every"),
        ({"seed": 1.5}, "seed"),
        ({"lopt": "MLPLOpt"}, "lopt"),
        ({"lopt": None}, "lopt"),
    ],
)
def test_bad_arguments_are_named(kwargs, name):
    base = {"lopt": LOPT}
    base.update(kwargs)
    with pytest.raises(ValueError, match=name):
        MetaTrainer(QuadraticEstimator(), optax.sgd(0.1), **base)


def test_bad_estimator_optimizer_and_steps():
    with pytest.raises(ValueError, match="estimator"):
        MetaTrainer(object(), optax.sgd(0.1), lopt=LOPT)
    with pytest.raises(ValueError, match="meta_optimizer"):
        MetaTrainer(QuadraticEstimator(), optax.sgd, lopt=LOPT)
    trainer = MetaTrainer(QuadraticEstimator(), optax.sgd(0.1), lopt=LOPT)
    with pytest.raises(ValueError, match="num_outer_steps"):
        trainer.train(-1)


@pytest.mark.slow
def test_example_defaults_cut_the_meta_loss(tmp_path):
    # The acceptance run of examples/meta_train.py: linear_regression, MLPLOpt, PES,
    # 300 outer steps must cut the meta-loss by at least 30%.
    example = load_example("meta_train")
    config = example.Config(workdir=str(tmp_path), progress=False)
    lopt, theta, records = example.run(config)
    summary = summarize(records)
    assert summary["steps"] == 300
    assert summary["reduction"] >= 0.3, summary
    loaded_lopt, loaded = optax_lopt.load(tmp_path / "final")
    assert loaded_lopt == lopt
    chex.assert_trees_all_close(loaded, theta)


def test_update_that_would_overflow_theta_is_skipped():
    # A finite but enormous meta-gradient whose SGD step overflows float32: not applied.
    trainer = MetaTrainer(QuadraticEstimator(scale=1e38), optax.sgd(1e3), lopt=LOPT)
    theta = trainer.train(2)
    assert int(trainer.state.num_skipped) == 2
    chex.assert_trees_all_close(theta, LOPT.init(jax.random.key(0)))


def test_finite_gradient_whose_norm_overflows_is_skipped_not_clipped_to_zero():
    # Every entry is finite (about 1e38) but the float32 global norm is inf: the clip would
    # scale it to exactly zero. The step must count as skipped, with Adam's counter unmoved.
    estimator = QuadraticEstimator(scale=5e37)
    trainer = MetaTrainer(estimator, optax.adam(0.1), lopt=LOPT, clip_norm=1.0)
    state0 = trainer.init_state()
    grad, _, _ = estimator.meta_gradient(state0.theta, state0.estimator_state, jax.random.key(0))
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grad))
    state, metrics = trainer.step(state0)
    assert not np.isfinite(float(metrics["grad_norm"]))
    assert bool(metrics["skipped"]) and int(state.num_skipped) == 1
    assert int(state.opt_state[0].count) == 0
    chex.assert_trees_all_close(state.theta, state0.theta)


def test_example_passes_each_estimator_only_its_knobs():
    example = load_example("meta_train")
    lopt = optax_lopt.LearnableAdam()
    config = example.Config(
        estimator="full_bptt", meta_loss="final", num_tasks=4, truncation_length=7, sigma=0.5
    )
    est = example.build_estimator(config, lopt)
    assert (est.meta_loss, est.num_tasks) == ("final", 4)
    assert not hasattr(est, "truncation_length") and not hasattr(est, "sigma")
    config = example.Config(estimator="pes", meta_loss="log_mean_normalized", sigma=0.5)
    est = example.build_estimator(config, lopt)
    assert (est.meta_loss, est.sigma, est.truncation_length) == ("log_mean_normalized", 0.5, 20)
